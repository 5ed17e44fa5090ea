//! The get-name Lambda: config, clients and public keys once at init, then the loop.

use auth::clock::Clock;
use auth::handlers::get_name::{self, GetName};
use auth::runtime;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let init = runtime::verifying_from_env().await?;
    let state = GetName {
        store: init.store,
        tokens: init.verifier,
        clock: Clock::system(),
    };
    runtime::serve(|req| get_name::handle(&state, req)).await
}
