//! The key rotation Lambda (sealed mode): run by its schedule (and at each
//! deploy), it makes, extends and retires the issuer keys (`rotation`).
//! Config and clients once at init, then one rotation per event; a failed
//! run is an error, which the schedule's retry policy runs again.

use auth::clock::system_now;
use auth::config::Environment;
use auth::rotation::{Rotation, RotationConfig};
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
    run(service_fn(|_: LambdaEvent<serde_json::Value>| async {
        Ok::<_, Error>(serde_json::to_value(state.run(system_now()).await?)?)
    }))
    .await
}
