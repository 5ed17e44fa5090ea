//! `GET /get_name`: the name of the user the bearer token was issued to.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use crate::http::{ApiError, bearer_token, json_response, require_method};
use crate::store::UserStore;
use crate::tokens::TokenVerifier;
use crate::users::Username;

/// What the get-name function holds between invocations.
pub struct GetName {
    pub users: UserStore,
    pub tokens: TokenVerifier,
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
    let claims = state.tokens.verify(bearer_token(&req)?)?;
    let revoked = || ApiError::InvalidToken("the access token is no longer valid".into());
    let username = Username::parse(&claims.username).map_err(|_| revoked())?;

    let user = state
        .users
        .get(&username)
        .await?
        .ok_or(ApiError::UserNotFound)?;
    // The username may have been deleted and registered again by someone else:
    // only the user the token was issued to (same id) may read this name.
    if user.id.to_string() != claims.sub || !user.active {
        return Err(revoked());
    }
    Ok(json_response(
        StatusCode::OK,
        &UserFound {
            message: "User found",
            name: user.name,
        },
    ))
}
