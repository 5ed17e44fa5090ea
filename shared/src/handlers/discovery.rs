//! `GET /.well-known/jwks.json` (RFC 7517) and `GET /.well-known/openid-configuration`:
//! the public keys that verify our tokens, and where to find them, so that any
//! standard JWT library (or API Gateway's JWT authorizer) can check our tokens.
//! Both bodies are built once, at init.

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use crate::config::TokenConfig;
use crate::http::{ApiError, json_text_response, require_method};
use crate::keys::{PublicKey, jwk_set};
use crate::permissions::{PermissionConfig, Role};
use crate::tokens::ACCESS_TOKEN_TYPE;

pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const OPENID_CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";
/// Verifiers may cache both documents this long. A new key must be published at
/// least this long before it signs anything (see the rotation procedure).
pub const CACHE_CONTROL: &str = "public, max-age=300";

/// What the discovery function holds between invocations: the two documents.
pub struct Discovery {
    jwks: String,
    openid_configuration: String,
}

#[derive(Serialize)]
struct OpenIdConfiguration<'a> {
    issuer: &'a str,
    jwks_uri: String,
    id_token_signing_alg_values_supported: [&'static str; 1],
    token_endpoint_auth_signing_alg_values_supported: [&'static str; 1],
    subject_types_supported: [&'static str; 1],
    response_types_supported: [&'static str; 1],
    /// One scope per role this deployment knows, of the same name.
    scopes_supported: Vec<&'a str>,
    claims_supported: [&'static str; 12],
    access_token_type: &'static str,
}

impl Discovery {
    pub fn new(keys: &[PublicKey], tokens: &TokenConfig, permissions: &PermissionConfig) -> Self {
        let document = OpenIdConfiguration {
            issuer: &tokens.issuer,
            jwks_uri: format!("{}{JWKS_PATH}", tokens.issuer.trim_end_matches('/')),
            id_token_signing_alg_values_supported: ["RS256"],
            token_endpoint_auth_signing_alg_values_supported: ["RS256"],
            subject_types_supported: ["public"],
            response_types_supported: ["token"],
            scopes_supported: permissions.roles.iter().map(Role::as_str).collect(),
            claims_supported: [
                "sub",
                "username",
                "sid",
                "sep",
                "auth_time",
                "scope",
                "iss",
                "aud",
                "iat",
                "nbf",
                "exp",
                "jti",
            ],
            access_token_type: ACCESS_TOKEN_TYPE,
        };
        Discovery {
            jwks: serde_json::to_string(&jwk_set(keys)).unwrap_or_default(),
            openid_configuration: serde_json::to_string(&document).unwrap_or_default(),
        }
    }
}

pub async fn handle(state: &Discovery, req: Request) -> Response<Body> {
    discovery(state, &req).unwrap_or_else(ApiError::into_response)
}

fn discovery(state: &Discovery, req: &Request) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::GET, "GET")?;
    let body = match req.uri().path().trim_end_matches('/') {
        JWKS_PATH => &state.jwks,
        OPENID_CONFIGURATION_PATH => &state.openid_configuration,
        _ => return Err(ApiError::NotFound),
    };
    let mut response = json_text_response(StatusCode::OK, body.clone());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    Ok(response)
}
