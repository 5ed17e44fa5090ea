//! `POST /password`: change the password with the current one and a bearer
//! token. Success ends every session of the user, the caller's included, and
//! starts a new one for the caller: the response carries its tokens. The
//! current password is proved as at login: lockout and per-IP window.

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::account::{Account, prove_current_password};
use super::{NewSession, SessionSeed, authenticate_caller, no_longer_valid};
use crate::browser::{Delivery, device_delivery, refresh_cookie};
use crate::devices::DeviceChange;
use crate::http::{ApiError, json_body, require_method};
use crate::metrics::{self, Event};
use crate::passwords::check_new_password;
use crate::sessions::SignIn;
use crate::store::StoreError;
use crate::users::User;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    /// Required of an account with a password. One without (made through
    /// an identity provider) sets its first with a recent sign-in there
    /// instead: its session's `auth_time`, within `FRESH_AUTH_MAX_AGE_SECONDS`.
    #[serde(default, deserialize_with = "crate::http::not_null")]
    current_password: Option<String>,
    new_password: String,
    /// `"cookie"`: the new session's refresh token goes in the cookie. A
    /// request that carries the cookie gets it there in any case.
    #[serde(default)]
    refresh_token_delivery: Delivery,
    /// An API client's device proof (a browser's is its device cookie).
    #[serde(default)]
    device: Option<String>,
}

/// `POST /password` alone (the function routes with `account::handle`).
pub async fn handle(state: &Account, req: Request) -> Response<Body> {
    change_password(state, req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

pub async fn change_password(state: &Account, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let change: PasswordChange = json_body(&req)?;
    // A browser session's new refresh token goes back in the cookie.
    let delivery = if refresh_cookie(&req)?.is_some() {
        Delivery::Cookie
    } else {
        change.refresh_token_delivery
    };
    if delivery == Delivery::Cookie {
        state.browser.check(&req)?;
    }
    let fresh = caller.require_fresh(state.fresh_auth, now);
    let user = caller.user;
    check_new_password(&change.new_password, &user.username)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;

    // A proof of the password, like a login (window, lockout); an account
    // without one, a sign-in at its provider just now.
    let proved = match change.current_password {
        Some(current) if user.has_password() => {
            prove_current_password(state, &req, &user, current, change.device, now).await?
        }
        _ if user.has_password() => {
            return Err(ApiError::BadRequest("current_password is required".into()));
        }
        _ => {
            fresh?;
            super::account::Proved {
                vouching: None,
                presented: None,
            }
        }
    };

    // All the work that can fail without side effects first (the new hash,
    // the new session's access token under the next epoch), then one
    // transaction: the new hash, every old session ended, the caller's new
    // session, the attempt record cleared; on the condition that the user is
    // as read. So a 5xx leaves the password as it was.
    let new_hash = super::hash_new_password(&state.passwords, change.new_password).await?;
    // Drawn here, unlike login's: the new hash's bcrypt lies between the
    // proof and the signature whichever comes first.
    let new = NewSession::sign(
        SessionSeed::draw(),
        &state.issuer,
        &state.sessions,
        &user,
        user.session_epoch + 1,
        now,
        super::origin(&req, SignIn::PasswordChange, proved.vouching.is_some()),
        // A new session with a new lifetime: it claims the password just
        // proved, nothing carried from the caller's (a second factor is
        // proved again at the next sign-in, or by a step up).
        SignIn::PasswordChange.amr(),
    )
    .await?;
    let sid = caller.claims.sid.as_str();
    // Every device proof ends with the epoch; the caller's is reissued.
    let device = DeviceChange {
        issued: &new.device,
        retired: proved.vouching.as_ref(),
    };
    let changed = state
        .store
        .change_password(&user, sid, &new_hash, &new.session, &new.first, &device)
        .await;
    // A failure reported for a write that committed (its answer lost) is a
    // success: the new session is there.
    if let Err(e) = changed
        && !state.store.session_stored(&new.session.id).await
    {
        return Err(match e {
            StoreError::Conflict => lost_to(state, &user, sid).await,
            e => e.into(),
        });
    }
    tracing::info!(user_id = %user.id, "password changed; all sessions ended");
    metrics::count(Event::PasswordChanged);
    let device_delivery = device_delivery(proved.presented.as_ref(), delivery);
    Ok(new
        .into_tokens("Password changed")
        .into_response(delivery, device_delivery))
}

/// The change lost to a concurrent one: another password change (409, try
/// again), or the end of the caller's session (its logout, log out
/// everywhere, a deactivation: the token is no longer valid).
async fn lost_to(state: &Account, read: &User, sid: &str) -> ApiError {
    match state.store.get(&read.username).await {
        Ok(Some(now))
            if now.id == read.id
                && now.active
                && now.session_epoch == read.session_epoch
                && !now.revoked_sessions.contains_key(sid) =>
        {
            ApiError::Conflict("the password was changed by another request; try again")
        }
        Ok(_) => no_longer_valid(),
        Err(e) => e.into(),
    }
}
