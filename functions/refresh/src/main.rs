//! The refresh Lambda: config, clients and keys once at init, then the loop.

use auth::clock::Clock;
use auth::config::{Environment, TokenConfig};
use auth::handlers::refresh::{self, Refresh};
use auth::sessions::SessionConfig;
use auth::tokens::TokenIssuer;
use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    auth::runtime::init_logging();
    let tokens = TokenConfig::from_source(&Environment)?;
    let state = Refresh {
        store: auth::runtime::store_from_env().await?,
        tokens: TokenIssuer::new(&tokens)?,
        sessions: SessionConfig::from_source(&Environment)?,
        clock: Clock::system(),
    };
    auth::runtime::serve(|req| refresh::handle(&state, req)).await
}
