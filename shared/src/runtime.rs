//! What every function's `main` shares: logging, building its clients and keys
//! from the environment once at init, and the Lambda loop with panics contained
//! as our JSON 500.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use lambda_http::{Body, Error, Request, Response, service_fn};

use aws_config::SdkConfig;

use crate::aws::{SdkSettings, sdk_config};
use crate::config::{Environment, StoreConfig, TokenConfig};
use crate::http::ApiError;
use crate::keys::{PublicKey, Signer, load_public_keys, signing_key_from, verification_keys_from};
use crate::store::{Store, dynamodb_client};
use crate::tokens::{TokenIssuer, TokenVerifier};

/// Structured logs; JSON when Lambda's log format says so (`AWS_LAMBDA_LOG_FORMAT`).
pub fn init_logging() {
    lambda_http::tracing::init_default_subscriber();
}

/// The AWS SDK configuration, with the bounds of `SDK_*`: one per process,
/// shared by its DynamoDB and KMS clients.
pub async fn aws_from_env() -> Result<SdkConfig, Error> {
    Ok(sdk_config(&SdkSettings::from_source(&Environment)?).await)
}

/// The table named by `TABLE_NAME`.
pub fn store_from_env(sdk: &SdkConfig) -> Result<Store, Error> {
    let config = StoreConfig::from_source(&Environment)?;
    Ok(Store::new(dynamodb_client(sdk), config.table_name))
}

/// Issuer, audience and lifetime of access tokens.
pub fn token_config_from_env() -> Result<TokenConfig, Error> {
    Ok(TokenConfig::from_source(&Environment)?)
}

/// The token issuer, signing with `JWT_SIGNING_KEY`. No network call.
pub fn issuer_from_env(sdk: &SdkConfig, tokens: &TokenConfig) -> Result<TokenIssuer, Error> {
    let signer = Signer::new(
        &signing_key_from(&Environment)?,
        &aws_sdk_kms::Client::new(sdk),
    )?;
    Ok(TokenIssuer::new(signer, tokens))
}

/// The public keys of `JWT_VERIFICATION_KEYS` (fetched from KMS once, here,
/// for KMS keys).
pub async fn public_keys_from_env(sdk: &SdkConfig) -> Result<Vec<PublicKey>, Error> {
    let sources = verification_keys_from(&Environment)?;
    Ok(load_public_keys(&sources, &aws_sdk_kms::Client::new(sdk)).await?)
}

/// The token verifier, with the public keys of `JWT_VERIFICATION_KEYS`.
pub async fn verifier_from_env(
    sdk: &SdkConfig,
    tokens: &TokenConfig,
) -> Result<TokenVerifier, Error> {
    Ok(TokenVerifier::new(
        &public_keys_from_env(sdk).await?,
        tokens,
    ))
}

/// Serves `handler` on the Lambda Runtime API until the process ends.
pub async fn serve<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response<Body>> + Send,
{
    lambda_http::run(service_fn(|req: Request| {
        let response = contain_panics(handler(req));
        async move { Ok::<_, Error>(response.await) }
    }))
    .await
}

/// Runs a handler future; a panic in it becomes our JSON 500 rather than an
/// `Err`, which API Gateway would answer with its own non-JSON 500.
pub async fn contain_panics(handler: impl Future<Output = Response<Body>>) -> Response<Body> {
    AssertUnwindSafe(handler)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!("handler panicked");
            ApiError::Internal.into_response()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_gives_a_json_500() {
        let response = contain_panics(async { panic!("boom") }).await;
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["content-type"], "application/json");
        let Body::Text(text) = response.body() else {
            panic!("not text")
        };
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(json["error"], "internal_error");
        assert!(
            !text.contains("boom"),
            "the panic message must not leak: {text}"
        );
    }

    #[tokio::test]
    async fn a_normal_response_passes_through() {
        let response = contain_panics(async { ApiError::UserNotFound.into_response() }).await;
        assert_eq!(response.status(), 404);
    }
}
