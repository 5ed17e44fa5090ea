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
    let init = runtime::verifying_from_env().await?;
    let state = Logout {
        store: init.store,
        tokens: init.verifier,
        browser: BrowserPolicy::from_source(&Environment)?,
        clock: Clock::system(),
    };
    runtime::serve(|req| logout::handle(&state, req)).await
}
