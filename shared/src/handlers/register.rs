//! `POST /register`: a new account. Registration reveals, by its nature, that
//! a username is taken (409); the abuse limits slow down harvesting.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::limit_source;
use crate::clock::Clock;
use crate::http::{ApiError, json_body, json_response, require_method};
use crate::metrics::{self, Event};
use crate::passwords::{PasswordHasher, check_new_password};
use crate::store::{Store, StoreError};
use crate::throttle::{RateLimits, Window};
use crate::users::{User, Username, display_name};

/// What the register function holds between invocations.
pub struct Register {
    pub store: Store,
    pub passwords: PasswordHasher,
    pub limits: RateLimits,
    pub clock: Clock,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    username: String,
    password: String,
    name: String,
}

/// The new user's public fields: never the hash.
#[derive(Serialize)]
struct Created {
    message: &'static str,
    id: String,
    username: String,
    name: String,
    created_at: i64,
}

pub async fn handle(state: &Register, req: Request) -> Response<Body> {
    register(state, req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn register(state: &Register, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    // Every attempt counts against the source's limit, valid or not: this is
    // what slows down harvesting taken usernames.
    let now = state.clock.now();
    let window = Window::register(&state.limits);
    limit_source(&state.store, &window, &req, now).await?;
    let registration: Registration = json_body(&req)?;
    let bad = |message: String| ApiError::BadRequest(message);
    let username = Username::parse(&registration.username).map_err(|e| bad(e.to_string()))?;
    let name = display_name(&registration.name).map_err(bad)?;
    check_new_password(&registration.password, &username).map_err(|e| bad(e.to_string()))?;

    let hash = state
        .passwords
        .hash(registration.password)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "password hashing failed");
            ApiError::Internal
        })?;
    let user = User::new(username, name, hash);
    if let Err(e) = state.store.create(&user).await {
        // The user may be ours all the same: our write committed, its answer
        // was lost, and the SDK's retry then found the user there (409) or
        // got no answer either (503).
        let ours = matches!(
            state.store.get(&user.username).await,
            Ok(Some(found)) if found.id == user.id
        );
        if !ours {
            return Err(match e {
                StoreError::AlreadyExists => ApiError::UsernameTaken,
                e => e.into(),
            });
        }
    }
    crate::runtime::record_user(&user.id);
    tracing::info!(user_id = %user.id, "user registered");
    metrics::count(Event::Registration);
    Ok(json_response(
        StatusCode::CREATED,
        &Created {
            message: "User created",
            id: user.id.to_string(),
            username: user.username.to_string(),
            name: user.name,
            created_at: user.created_at,
        },
    ))
}
