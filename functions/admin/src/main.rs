//! The admin-API Lambda: config, clients and public keys once at init, then the loop.

use auth::clock::Clock;
use auth::config::Environment;
use auth::handlers::admin::{self, Admin};
use auth::permissions::PermissionConfig;
use auth::runtime;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let sdk = runtime::aws_from_env()?;
    let tokens = runtime::token_config_from_env()?;
    let state = Admin {
        store: runtime::store_from_env(&sdk)?,
        verifier: runtime::verifier_from_env(&sdk, &tokens).await?,
        permissions: PermissionConfig::from_source(&Environment)?,
        clock: Clock::system(),
    };
    runtime::serve(|req| admin::handle(&state, req)).await
}
