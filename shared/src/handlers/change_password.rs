//! `POST /password`: change the password with the current one and a bearer
//! token. Success ends every session of the user, the caller's included, and
//! starts a new one for the caller: the response carries its tokens.

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::{authenticate_caller, start_session, verification_error};
use crate::clock::Clock;
use crate::http::{ApiError, json_body, require_method};
use crate::passwords::{PasswordHasher, check_new_password};
use crate::sessions::SessionConfig;
use crate::store::Store;
use crate::tokens::{TokenIssuer, TokenVerifier};

/// What the password function holds between invocations.
pub struct ChangePassword {
    pub store: Store,
    pub passwords: PasswordHasher,
    pub verifier: TokenVerifier,
    pub issuer: TokenIssuer,
    pub sessions: SessionConfig,
    pub clock: Clock,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

pub async fn handle(state: &ChangePassword, req: Request) -> Response<Body> {
    change_password(state, req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn change_password(state: &ChangePassword, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let change: PasswordChange = json_body(&req)?;
    let mut user = caller.user;
    check_new_password(&change.new_password, &user.username)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;

    let current_ok = state
        .passwords
        .verify(change.current_password, Some(user.password_hash.clone()))
        .await
        .map_err(verification_error)?;
    if !current_ok {
        tracing::info!(user_id = %user.id, "password change refused: wrong current password");
        return Err(ApiError::LoginFailed);
    }
    let new_hash = state
        .passwords
        .hash(change.new_password)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "password hashing failed");
            ApiError::Internal
        })?;
    if !state.store.change_password(&user, &new_hash).await? {
        return Err(ApiError::Conflict(
            "the password was changed by another request; try again",
        ));
    }
    user.password_hash = new_hash;
    user.session_epoch += 1;
    tracing::info!(user_id = %user.id, "password changed; all sessions ended");
    let tokens = start_session(
        &state.store,
        &state.issuer,
        &state.sessions,
        &user,
        now,
        "Password changed",
    )
    .await?;
    Ok(tokens.into_response())
}
