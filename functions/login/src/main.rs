//! The login Lambda: config, clients and keys once at init, then the loop.

use auth::browser::BrowserPolicy;
use auth::clock::Clock;
use auth::config::Environment;
use auth::handlers::login::{self, Login};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::runtime;
use auth::sessions::SessionConfig;
use auth::throttle::RateLimits;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let sdk = runtime::aws_from_env()?;
    let tokens = runtime::token_config_from_env()?;
    let store = runtime::store_from_env(&sdk)?;
    let issuer = runtime::issuer_from_env(&sdk, &tokens, &store, None).await?;
    let state = Login {
        store,
        passwords: PasswordHasher::new(BcryptCost::from_source(&Environment)?),
        tokens: issuer,
        sessions: SessionConfig::from_source(&Environment)?,
        limits: RateLimits::from_source(&Environment)?,
        browser: BrowserPolicy::from_source(&Environment)?,
        clock: Clock::system(),
    };
    runtime::serve(|req| login::handle(&state, req)).await
}
