//! The passkeys Lambda (add, list, rename and remove passkeys; sign in with
//! one): config, clients, the issuer's key, then the loop. Its relying
//! party (id and origin) comes from configuration, checked at init.

use auth::browser::BrowserPolicy;
use auth::clock::Clock;
use auth::config::Environment;
use auth::handlers::passkeys::{self, Passkeys};
use auth::relying_party::PasskeyConfig;
use auth::runtime;
use auth::sessions::SessionConfig;
use auth::throttle::RateLimits;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let relying_party = PasskeyConfig::from_source(&Environment)?.relying_party()?;
    let init = runtime::verifying_from_env().await?;
    let issuer =
        runtime::issuer_from_env(&init.sdk, &init.tokens, &init.store, init.key_table).await?;
    let state = Passkeys {
        store: init.store,
        verifier: init.verifier,
        issuer,
        sessions: SessionConfig::from_source(&Environment)?,
        limits: RateLimits::from_source(&Environment)?,
        browser: BrowserPolicy::from_source(&Environment)?,
        relying_party,
        fresh_auth: auth::permissions::fresh_auth_max_age(&Environment)?,
        clock: Clock::system(),
    };
    runtime::serve(|req| passkeys::handle(&state, req)).await
}
