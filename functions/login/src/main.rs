//! The login Lambda: config, clients and keys once at init, then the loop.

use auth::config::{Environment, StoreConfig, TokenConfig};
use auth::handlers::login::{self, Login};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::store::{UserStore, dynamodb_client};
use auth::tokens::TokenIssuer;
use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    auth::runtime::init_logging();
    let store = StoreConfig::from_source(&Environment)?;
    let tokens = TokenConfig::from_source(&Environment)?;
    let cost = BcryptCost::from_source(&Environment)?;

    let state = Login {
        users: UserStore::new(dynamodb_client(&store).await, store.table_name),
        passwords: PasswordHasher::new(cost),
        tokens: TokenIssuer::new(&tokens)?,
    };
    auth::runtime::serve(|req| login::handle(&state, req)).await
}
