//! The logout Lambda: config, clients and keys once at init, then the loop.

use auth::clock::Clock;
use auth::config::{Environment, TokenConfig};
use auth::handlers::logout::{self, Logout};
use auth::tokens::TokenVerifier;
use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    auth::runtime::init_logging();
    let tokens = TokenConfig::from_source(&Environment)?;
    let state = Logout {
        store: auth::runtime::store_from_env().await?,
        tokens: TokenVerifier::new(&tokens)?,
        clock: Clock::system(),
    };
    auth::runtime::serve(|req| logout::handle(&state, req)).await
}
