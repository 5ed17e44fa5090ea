//! `POST /login`: username and password in; an access token, a refresh token
//! and a new session out.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::{
    NewSession, SessionSeed, limit_source, presented_device, prove_password, reserve_proof,
};
use crate::browser::{BrowserPolicy, Delivery, device_delivery, presented_proof};
use crate::clock::Clock;
use crate::devices::DeviceChange;
use crate::http::{ApiError, json_body, json_response, require_method};
use crate::metrics::{self, Event};
use crate::mfa::{MfaTicket, MfaToken};
use crate::passwords::{PasswordHasher, needs_rehash};
use crate::sessions::{SessionConfig, SignIn};
use crate::store::{Store, StoreError};
use crate::throttle::{RateLimits, Window};
use crate::tokens::TokenIssuer;
use crate::users::{User, Username};

/// What the login function holds between invocations.
pub struct Login {
    pub store: Store,
    pub passwords: PasswordHasher,
    pub tokens: TokenIssuer,
    pub sessions: SessionConfig,
    pub limits: RateLimits,
    /// Who may ask for the refresh cookie.
    pub browser: BrowserPolicy,
    pub clock: Clock,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
    /// `"cookie"`: the refresh token goes in the refresh cookie, not the body.
    #[serde(default)]
    refresh_token_delivery: Delivery,
    /// An API client's device proof from an earlier sign-in (a browser's is
    /// its device cookie).
    #[serde(default)]
    device: Option<String>,
}

pub async fn handle(state: &Login, req: Request) -> Response<Body> {
    login(state, req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn login(state: &Login, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let credentials: Credentials = json_body(&req)?;
    let username =
        Username::parse(&credentials.username).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if credentials.password.is_empty() {
        return Err(ApiError::BadRequest("password must not be empty".into()));
    }
    let delivery = credentials.refresh_token_delivery;
    if delivery == Delivery::Cookie {
        state.browser.check(&req)?;
    }

    let now = state.clock.now();
    let window = Window::login(&state.limits);
    limit_source(&state.store, &window, &req, now).await?;

    // The same calls whoever asks: the user is read while the attempt is
    // reserved on the username's record (kept for unknown usernames too);
    // then, unless locked, exactly one bcrypt verification: unknown users
    // verify against a dummy hash, inactive users against their own. So
    // neither answers, nor the work done, nor the lockout tell an unknown or
    // inactive user from a wrong password.
    //
    // A client that presents a device proof has it read beside the user; a
    // proof that vouches for the user counts the attempt on the device
    // alone, so a lock that strangers built on the username does not stop
    // it (`devices`).
    let presented = presented_proof(&req, credentials.device, &state.browser)?;
    let (user, reservation, vouching) = match &presented {
        None => {
            let (user, reservation) = tokio::try_join!(
                state.store.get(&username),
                state.store.reserve_attempt(&username, None, now)
            )?;
            (user, reservation, None)
        }
        Some(_) => {
            let (user, device) = tokio::try_join!(
                state.store.get(&username),
                presented_device(&state.store, presented.as_ref().map(|p| &p.proof))
            )?;
            let (reservation, vouching) =
                reserve_proof(&state.store, &username, user.as_ref(), device, now).await?;
            (user, reservation, vouching)
        }
    };
    // An account made through a provider, with no password, is proved as an
    // unknown user is: against the dummy hash, which nothing matches.
    let hash = user
        .as_ref()
        .filter(|u| u.has_password())
        .map(|u| u.password_hash.clone());
    let password = credentials.password;
    let seed = SessionSeed::draw();
    let matches = prove_password(&state.passwords, reservation, hash, password.clone()).await?;
    let user = match user {
        Some(user) if matches && user.active => user,
        _ => {
            tracing::info!("login failed");
            metrics::count(Event::LoginFailed);
            return Err(ApiError::LoginFailed);
        }
    };
    crate::runtime::record_user(&user.id);
    if user.second_factor {
        // No tokens yet: a ticket that the second step takes (`mfa`).
        let device = vouching.map(|d| d.hash);
        let (ticket, token) = MfaTicket::issue(&user, SignIn::Password, device, now);
        state.store.put_mfa_ticket(&ticket).await?;
        tracing::info!(user_id = %user.id, "password proved; second factor required");
        return Ok(mfa_required(
            &ticket,
            &token,
            !user.passkeys.is_empty(),
            now,
        ));
    }

    // Sign, then store the session, its refresh token and the cleared attempt
    // record in one transaction that holds only if the user is as read: a
    // failure anywhere leaves the store as it was, but for the counted attempt.
    let new = NewSession::sign(
        seed,
        &state.tokens,
        &state.sessions,
        &user,
        user.session_epoch,
        now,
        super::origin(&req, SignIn::Password, vouching.is_some()),
        SignIn::Password.amr(),
    )
    .await?;
    // The proof that vouched is spent; a new one goes to the client.
    let device = DeviceChange {
        issued: &new.device,
        retired: vouching.as_ref(),
    };
    let stored = state
        .store
        .start_session(&new.session, &new.first, &user, &device)
        .await;
    // A failure reported for a write that committed (its answer lost, the
    // SDK's retry then refused by its own effects) is a success.
    if let Err(e) = stored
        && !state.store.session_stored(&new.session.id).await
    {
        return Err(match e {
            StoreError::Conflict => {
                ApiError::Conflict("the account changed during the login; try again")
            }
            e => e.into(),
        });
    }
    rehash_if_needed(state, &user, password).await;
    tracing::info!(user_id = %user.id, "login succeeded");
    metrics::count(Event::LoginSucceeded);
    let device_delivery = device_delivery(presented.as_ref(), delivery);
    Ok(new
        .into_tokens("Login Success")
        .into_response(delivery, device_delivery))
}

/// What a login that needs a second step says: 401 `mfa_required`, in the
/// one error shape, with the `mfa_token` that `POST /login/second-factor`
/// takes and the factors it accepts (a passkey too, for an account with
/// one: `POST /login/passkey/options` and `/login/passkey` with the token).
pub(crate) fn mfa_required(
    ticket: &MfaTicket,
    token: &MfaToken,
    passkey: bool,
    now: i64,
) -> Response<Body> {
    #[derive(Serialize)]
    struct MfaRequired<'a> {
        error: &'static str,
        message: &'static str,
        mfa_token: &'a str,
        factors: Vec<&'static str>,
        expires_in: u64,
    }
    let mut factors = vec!["totp", "recovery_code"];
    if passkey {
        factors.push("passkey");
    }
    json_response(
        StatusCode::UNAUTHORIZED,
        &MfaRequired {
            error: "mfa_required",
            message: if passkey {
                "a second factor is required: send the mfa_token with a code from the app, or a recovery code, to /login/second-factor, or with a passkey's answer to /login/passkey"
            } else {
                "a second factor is required: send the mfa_token with a code from the app, or a recovery code, to /login/second-factor"
            },
            mfa_token: token.expose(),
            factors,
            expires_in: ticket.expires_in(now),
        },
    )
}

/// A hash made at a lower cost than configured is replaced, now that we have
/// the password. Conditional on the old hash, so a concurrent password change
/// wins; a failure here never fails the login.
async fn rehash_if_needed(state: &Login, user: &User, password: String) {
    if !needs_rehash(&user.password_hash, state.passwords.cost()) {
        return;
    }
    let result = match state.passwords.hash(password).await {
        Ok(new_hash) => state
            .store
            .rehash(user, &new_hash)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(true) => {
            tracing::info!(user_id = %user.id, cost = state.passwords.cost().get(), "password rehashed")
        }
        Ok(false) => {
            tracing::info!(user_id = %user.id, "rehash skipped: password changed meanwhile")
        }
        Err(error) => tracing::warn!(user_id = %user.id, %error, "rehash failed"),
    }
}
