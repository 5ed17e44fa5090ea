//! The mail Lambda: the table's stream hands it new mail jobs (`outbox`);
//! it renders and sends each through SES (`handlers::mail`). Config and
//! clients once at init, then one run per batch; the answer names the first
//! job to run again, if any (`ReportBatchItemFailures`).

use auth::clock::Clock;
use auth::config::Environment;
use auth::handlers::mail::MailWorker;
use auth::mail::{MailConfig, Mailer};
use auth::runtime;
use auth::throttle::RateLimits;
use lambda_http::Error;
use lambda_http::lambda_runtime::{LambdaEvent, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let sdk = runtime::aws_from_env()?;
    let state = MailWorker {
        store: runtime::store_from_env(&sdk)?,
        mailer: Mailer::new(&sdk, MailConfig::from_source(&Environment)?),
        limits: RateLimits::from_source(&Environment)?,
        clock: Clock::system(),
    };
    let state = &state;
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Error>(state.handle_batch(&event.payload).await)
        },
    ))
    .await
}
