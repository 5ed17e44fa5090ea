//! The password Lambda (change the password, re-authenticate, delete the
//! account): config, clients and keys once at init, then the loop.

use auth::browser::BrowserPolicy;
use auth::clock::Clock;
use auth::config::Environment;
use auth::handlers::account::{self, Account};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::runtime;
use auth::sessions::SessionConfig;
use auth::throttle::RateLimits;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let init = runtime::verifying_from_env().await?;
    let issuer =
        runtime::issuer_from_env(&init.sdk, &init.tokens, &init.store, init.key_table).await?;
    let state = Account {
        store: init.store,
        passwords: PasswordHasher::new(BcryptCost::from_source(&Environment)?),
        verifier: init.verifier,
        issuer,
        sessions: SessionConfig::from_source(&Environment)?,
        limits: RateLimits::from_source(&Environment)?,
        browser: BrowserPolicy::from_source(&Environment)?,
        fresh_auth: auth::permissions::fresh_auth_max_age(&Environment)?,
        clock: Clock::system(),
    };
    runtime::serve(|req| account::handle(&state, req)).await
}
