//! What every function's `main` shares: logging, and the Lambda loop with
//! panics contained as our JSON 500.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use lambda_http::{Body, Error, Request, Response, service_fn};

use crate::config::{Environment, StoreConfig};
use crate::http::ApiError;
use crate::store::{Store, dynamodb_client};

/// Structured logs; JSON when Lambda's log format says so (`AWS_LAMBDA_LOG_FORMAT`).
pub fn init_logging() {
    lambda_http::tracing::init_default_subscriber();
}

/// The table, from `TABLE_NAME` and the DynamoDB settings, with its client.
pub async fn store_from_env() -> Result<Store, Error> {
    let config = StoreConfig::from_source(&Environment)?;
    Ok(Store::new(
        dynamodb_client(&config).await,
        config.table_name,
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
