//! The admin-API Lambda: config, clients and public keys once at init, then the loop.

use auth::clock::Clock;
use auth::config::Environment;
use auth::handlers::admin::{self, Admin};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::permissions::PermissionConfig;
use auth::runtime;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let init = runtime::verifying_from_env().await?;
    let state = Admin {
        store: init.store,
        verifier: init.verifier,
        permissions: PermissionConfig::from_source(&Environment)?,
        passwords: PasswordHasher::new(BcryptCost::from_source(&Environment)?),
        clock: Clock::system(),
    };
    runtime::serve(|req| admin::handle(&state, req)).await
}
