//! The login Lambda: config, clients and keys once at init, then the loop.

use auth::clock::Clock;
use auth::config::{Environment, TokenConfig};
use auth::handlers::login::{self, Login};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::sessions::SessionConfig;
use auth::tokens::TokenIssuer;
use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    auth::runtime::init_logging();
    let tokens = TokenConfig::from_source(&Environment)?;
    let state = Login {
        store: auth::runtime::store_from_env().await?,
        passwords: PasswordHasher::new(BcryptCost::from_source(&Environment)?),
        tokens: TokenIssuer::new(&tokens)?,
        sessions: SessionConfig::from_source(&Environment)?,
        clock: Clock::system(),
    };
    auth::runtime::serve(|req| login::handle(&state, req)).await
}
