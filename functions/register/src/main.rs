//! The register Lambda: config and clients once at init, then the loop.

use auth::config::Environment;
use auth::handlers::register::{self, Register};
use auth::passwords::{BcryptCost, PasswordHasher};
use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    auth::runtime::init_logging();
    let state = Register {
        store: auth::runtime::store_from_env().await?,
        passwords: PasswordHasher::new(BcryptCost::from_source(&Environment)?),
    };
    auth::runtime::serve(|req| register::handle(&state, req)).await
}
