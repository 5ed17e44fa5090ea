//! `POST /login`: username and password in, access token out.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use crate::http::{ApiError, json_body, json_response, require_method};
use crate::passwords::{PasswordError, PasswordHasher};
use crate::store::UserStore;
use crate::tokens::TokenIssuer;
use crate::users::Username;

/// What the login function holds between invocations.
pub struct Login {
    pub users: UserStore,
    pub passwords: PasswordHasher,
    pub tokens: TokenIssuer,
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct LoginSuccess {
    message: &'static str,
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
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

    // One read, then exactly one full bcrypt verification whatever the user's
    // state: unknown users verify against a dummy hash, inactive users against
    // their own, so neither answer nor timing tells them apart from a wrong password.
    let user = state.users.get(&username).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let matches = state
        .passwords
        .verify(credentials.password, hash)
        .await
        .map_err(|e| match e {
            PasswordError::TooLong => ApiError::LoginFailed,
            PasswordError::MalformedHash | PasswordError::Hashing(_) => {
                tracing::error!(error = %e, "password verification failed");
                ApiError::Internal
            }
        })?;
    let user = match user {
        Some(user) if matches && user.active => user,
        _ => {
            tracing::info!("login failed");
            return Err(ApiError::LoginFailed);
        }
    };

    let issued = state.tokens.issue(&user).map_err(|e| {
        tracing::error!(error = %e, "token signing failed");
        ApiError::Internal
    })?;
    tracing::info!(user_id = %user.id, "login succeeded");
    Ok(json_response(
        StatusCode::OK,
        &LoginSuccess {
            message: "Login Success",
            access_token: issued.token,
            token_type: "Bearer",
            expires_in: issued.expires_in,
        },
    ))
}
