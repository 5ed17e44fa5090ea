//! The logout Lambda: config, clients and public keys once at init, then the loop.

use auth::browser::BrowserPolicy;
use auth::clock::Clock;
use auth::config::Environment;
use auth::handlers::logout::{self, Logout};
use auth::runtime;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let sdk = runtime::aws_from_env()?;
    let tokens = runtime::token_config_from_env()?;
    let state = Logout {
        store: runtime::store_from_env(&sdk)?,
        tokens: runtime::verifier_from_env(&sdk, &tokens).await?,
        browser: BrowserPolicy::from_source(&Environment)?,
        clock: Clock::system(),
    };
    runtime::serve(|req| logout::handle(&state, req)).await
}
