//! The get-name Lambda: config, clients and keys once at init, then the loop.

use auth::clock::Clock;
use auth::config::{Environment, TokenConfig};
use auth::handlers::get_name::{self, GetName};
use auth::tokens::TokenVerifier;
use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    auth::runtime::init_logging();
    let tokens = TokenConfig::from_source(&Environment)?;
    let state = GetName {
        store: auth::runtime::store_from_env().await?,
        tokens: TokenVerifier::new(&tokens)?,
        clock: Clock::system(),
    };
    auth::runtime::serve(|req| get_name::handle(&state, req)).await
}
