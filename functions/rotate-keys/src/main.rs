//! The key rotation Lambda (sealed mode): run by its schedule (and at each
//! deploy), it makes, extends and retires the issuer keys (`rotation`); an
//! operator's event `{"revoke": [kid, ...]}` or `{"revoke_made_before":
//! <unix time>}` revokes first (the only role that may seal the keys that
//! replace them). Config and clients once at init, then one run per event;
//! a failed run is an error, which the schedule's retry policy runs again.

use auth::clock::system_now;
use auth::config::Environment;
use auth::rotation::{Rotation, RotationConfig, RotationEvent};
use auth::runtime;
use lambda_http::Error;
use lambda_http::lambda_runtime::{LambdaEvent, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let sdk = runtime::aws_from_env()?;
    let tokens = runtime::token_config_from_env()?;
    let state = Rotation {
        store: runtime::store_from_env(&sdk)?,
        kms: auth::aws::kms_client(&sdk),
        config: RotationConfig::from_source(&Environment, &tokens)?,
    };
    run(service_fn(|event: LambdaEvent<serde_json::Value>| async {
        // A scheduled or deploy-time event names no revocation: a run.
        let event = RotationEvent::from_payload(event.payload)?;
        Ok::<_, Error>(serde_json::to_value(
            state.handle(&event, system_now()).await?,
        )?)
    }))
    .await
}
