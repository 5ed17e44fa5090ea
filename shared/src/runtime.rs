//! What every function's `main` shares: logging, config errors at init, and the
//! Lambda loop with panics contained as a JSON 500.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use lambda_http::{Body, Error, Request, Response, service_fn};

use crate::http::ApiError;

/// Structured logs; JSON when Lambda's log format says so (`AWS_LAMBDA_LOG_FORMAT`).
pub fn init_logging() {
    lambda_http::tracing::init_default_subscriber();
}

/// Serves `handler` on the Lambda Runtime API until the process ends. A panic in
/// the handler becomes our JSON 500 rather than API Gateway's own non-JSON one.
pub async fn serve<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response<Body>> + Send,
{
    lambda_http::run(service_fn(|req: Request| {
        let response = AssertUnwindSafe(handler(req)).catch_unwind();
        async move {
            Ok::<_, Error>(response.await.unwrap_or_else(|_| {
                tracing::error!("handler panicked");
                ApiError::Internal.into_response()
            }))
        }
    }))
    .await
}
