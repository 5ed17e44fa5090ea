//! `GET /get_name`: the name of the user the bearer token was issued to, with
//! one DynamoDB read (the user item carries the session state to check).

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use super::authenticate;
use crate::clock::Clock;
use crate::http::{ApiError, json_response, require_method};
use crate::store::Store;
use crate::tokens::TokenVerifier;

/// What the get-name function holds between invocations.
pub struct GetName {
    pub store: Store,
    pub tokens: TokenVerifier,
    pub clock: Clock,
}

#[derive(Serialize)]
struct UserFound {
    message: &'static str,
    name: String,
}

pub async fn handle(state: &GetName, req: Request) -> Response<Body> {
    get_name(state, req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn get_name(state: &GetName, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::GET, "GET")?;
    let caller = authenticate(&req, &state.tokens, &state.store, state.clock.now()).await?;
    Ok(json_response(
        StatusCode::OK,
        &UserFound {
            message: "User found",
            name: caller.user.name,
        },
    ))
}
