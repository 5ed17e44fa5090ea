//! `GET /.well-known/jwks.json` (RFC 7517) and `GET /.well-known/openid-configuration`:
//! the public keys that verify our tokens, and where to find them, so that any
//! standard JWT library (or API Gateway's JWT authorizer) can check our tokens.
//! The discovery document is built once, at init; so is the key set of keys
//! loaded once. The table's keys (sealed mode) are those of the function's
//! copy of the key set, re-read on its schedule: a new key is published
//! and a revoked or retired one withdrawn within its bound.

use std::sync::Arc;

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use crate::clock::system_now;
use crate::config::TokenConfig;
use crate::http::{ApiError, json_text_response, require_method};
use crate::key_set::KeyTable;
use crate::keys::{PublicKey, jwk_set};
use crate::permissions::{PermissionConfig, Role};
use crate::tokens::ACCESS_TOKEN_TYPE;

pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const OPENID_CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";
/// Verifiers may cache both documents this long. A new key must be published at
/// least this long before it signs anything (see the rotation procedure).
pub const CACHE_CONTROL: &str = "public, max-age=300";
/// `CACHE_CONTROL`'s max-age.
pub const JWKS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// What the discovery function holds between invocations.
pub struct Discovery {
    /// The keys loaded once, and their JWK Set.
    keys: Vec<PublicKey>,
    jwks: String,
    /// The table's key set, whose verifying keys join `keys` (sealed mode).
    table: Option<Arc<KeyTable>>,
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
    claims_supported: [&'static str; 14],
    /// The levels tokens say (`acr`): one factor, or a second factor too.
    acr_values_supported: [&'static str; 2],
    access_token_type: &'static str,
}

impl Discovery {
    pub fn new(
        keys: &[PublicKey],
        table: Option<Arc<KeyTable>>,
        tokens: &TokenConfig,
        permissions: &PermissionConfig,
    ) -> Self {
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
                "amr",
                "acr",
                "scope",
                "iss",
                "aud",
                "iat",
                "nbf",
                "exp",
                "jti",
            ],
            acr_values_supported: [
                crate::sessions::amr::ACR_ONE_FACTOR,
                crate::sessions::amr::ACR_SECOND_FACTOR,
            ],
            access_token_type: ACCESS_TOKEN_TYPE,
        };
        Discovery {
            keys: keys.to_vec(),
            jwks: serde_json::to_string(&jwk_set(keys)).unwrap_or_default(),
            table,
            openid_configuration: serde_json::to_string(&document).unwrap_or_default(),
        }
    }

    /// The JWK Set at `now`: the keys loaded once, and the table's that
    /// verify at `now` in the copy held (read again once it is the bound old).
    async fn jwks(&self, now: i64) -> Result<String, ApiError> {
        let Some(table) = &self.table else {
            return Ok(self.jwks.clone());
        };
        let snapshot = table.current().await?;
        let mut keys = self.keys.clone();
        keys.extend(snapshot.verifying_keys(now));
        Ok(serde_json::to_string(&jwk_set(&keys)).unwrap_or_default())
    }
}

pub async fn handle(state: &Discovery, req: Request) -> Response<Body> {
    discovery(state, &req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn discovery(state: &Discovery, req: &Request) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::GET, "GET")?;
    let body = match req.uri().path().trim_end_matches('/') {
        JWKS_PATH => state.jwks(system_now()).await?,
        OPENID_CONFIGURATION_PATH => state.openid_configuration.clone(),
        _ => return Err(ApiError::NotFound),
    };
    let mut response = json_text_response(StatusCode::OK, body);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_max_age_is_the_cache_controls() {
        assert_eq!(
            CACHE_CONTROL,
            format!("public, max-age={}", JWKS_MAX_AGE.as_secs())
        );
    }
}
