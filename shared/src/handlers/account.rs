//! The password function: the routes where a signed-in user proves their
//! password again. `POST /password` changes it (`change_password`), `POST
//! /reauthenticate` renews the session's proof for sensitive acts
//! (`reauthenticate`), `DELETE /account` deletes the account (`delete_account`),
//! and `/account/email` reads, sets, verifies and removes the address (`email`).
//! Every proof counts against the source's login window and is reserved on
//! the username's attempt record, as at login: a stolen access token buys no
//! more guesses than the login form gives.

use lambda_http::{Body, Request, Response};

use super::{limit_source, presented_device, prove_password, reserve_proof};
use crate::browser::{BrowserPolicy, PresentedDevice, presented_proof};
use crate::clock::Clock;
use crate::devices::Device;
use crate::http::ApiError;
use crate::passwords::PasswordHasher;
use crate::sessions::SessionConfig;
use crate::store::Store;
use crate::throttle::{RateLimits, Window};
use crate::tokens::{TokenIssuer, TokenVerifier};
use crate::users::User;

pub use super::change_password::change_password;
pub use super::delete_account::delete_account;
pub use super::reauthenticate::reauthenticate;

pub const PASSWORD_PATH: &str = "/password";
pub const REAUTHENTICATE_PATH: &str = "/reauthenticate";
pub const ACCOUNT_PATH: &str = "/account";
pub const EMAIL_PATH: &str = "/account/email";
pub const VERIFY_EMAIL_PATH: &str = "/account/email/verify";

/// What the password function holds between invocations.
pub struct Account {
    pub store: Store,
    pub passwords: PasswordHasher,
    pub verifier: TokenVerifier,
    pub issuer: TokenIssuer,
    pub sessions: SessionConfig,
    /// The per-IP login window applies here too.
    pub limits: RateLimits,
    /// Who may use the refresh cookie.
    pub browser: BrowserPolicy,
    /// How recent a proof of the password a change of address needs.
    pub fresh_auth: std::time::Duration,
    pub clock: Clock,
}

/// Routes by path; each route answers its own 405s.
pub async fn handle(state: &Account, req: Request) -> Response<Body> {
    let result = match req.uri().path().trim_end_matches('/') {
        PASSWORD_PATH => change_password(state, req).await,
        REAUTHENTICATE_PATH => reauthenticate(state, req).await,
        ACCOUNT_PATH => delete_account(state, req).await,
        EMAIL_PATH => super::email::email(state, req).await,
        VERIFY_EMAIL_PATH => super::email::verify_email(state, req).await,
        _ => Err(ApiError::NotFound),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// Proves `password` to be `user`'s current one, through the per-IP window
/// and the lockout (the count of the device proof the request presents, if
/// it vouches for `user`; else the username's: `in_body` is an API client's
/// proof); a wrong one is 401 `login_failed`. Returns the device that
/// vouched, whose count a success clears, and how its proof came.
pub(crate) async fn prove_current_password(
    state: &Account,
    req: &Request,
    user: &User,
    password: String,
    in_body: Option<String>,
    now: i64,
) -> Result<Proved, ApiError> {
    let window = Window::login(&state.limits);
    limit_source(&state.store, &window, req, now).await?;
    let presented = presented_proof(req, in_body, &state.browser)?;
    let device = presented_device(&state.store, presented.as_ref().map(|p| &p.proof)).await?;
    let (reservation, vouching) =
        reserve_proof(&state.store, &user.username, Some(user), device, now).await?;
    let matches = prove_password(
        &state.passwords,
        reservation,
        // An account without a password proves none: the dummy hash's work.
        Some(user.password_hash.clone()).filter(|_| user.has_password()),
        password,
    )
    .await?;
    if !matches {
        tracing::info!(user_id = %user.id, "password proof failed");
        return Err(ApiError::LoginFailed);
    }
    Ok(Proved {
        vouching,
        presented,
    })
}

/// A proof of the current password that held.
pub(crate) struct Proved {
    /// The device that vouched for it, if one did.
    pub vouching: Option<Device>,
    /// The device proof the request presented, vouching or not.
    pub presented: Option<PresentedDevice>,
}
