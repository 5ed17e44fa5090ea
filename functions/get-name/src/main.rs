//! The get-name Lambda: config, clients and keys once at init, then the loop.

use auth::config::{Environment, StoreConfig, TokenConfig};
use auth::handlers::get_name::{self, GetName};
use auth::store::{UserStore, dynamodb_client};
use auth::tokens::TokenVerifier;
use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    auth::runtime::init_logging();
    let store = StoreConfig::from_source(&Environment)?;
    let tokens = TokenConfig::from_source(&Environment)?;

    let state = GetName {
        users: UserStore::new(dynamodb_client(&store).await, store.table_name),
        tokens: TokenVerifier::new(&tokens)?,
    };
    auth::runtime::serve(|req| get_name::handle(&state, req)).await
}
