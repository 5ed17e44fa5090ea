//! The federation Lambda (sign in through an outside identity provider, and
//! connect one to an account): config, clients, keys and the providers'
//! secrets once at init (the key and the secrets at once), then the loop.
//! No provider is called at init: its discovery document is read at the
//! first round trip, and cached.

use auth::browser::{BrowserPolicy, page_origin};
use auth::clock::Clock;
use auth::config::Environment;
use auth::federation::providers_from_env;
use auth::handlers::federation::{self, Federation};
use auth::handlers::register::SignUp;
use auth::runtime;
use auth::sessions::SessionConfig;
use auth::throttle::RateLimits;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let init = runtime::verifying_from_env().await?;
    let page = page_origin(&Environment)?;
    // The issuer's key (sealed mode: one Decrypt) and the providers'
    // secrets (SSM) are read at once: one round trip less at a cold start.
    let (issuer, providers) = tokio::join!(
        runtime::issuer_from_env(&init.sdk, &init.tokens, &init.store, init.key_table),
        providers_from_env(&init.sdk, &Environment, &init.tokens.issuer),
    );
    let (issuer, (providers, http)) = (issuer?, providers?);
    let state = Federation {
        store: init.store,
        tokens: issuer,
        verifier: init.verifier,
        sessions: SessionConfig::from_source(&Environment)?,
        limits: RateLimits::from_source(&Environment)?,
        browser: BrowserPolicy::from_source(&Environment)?,
        sign_up: SignUp::from_source(&Environment)?,
        fresh_auth: auth::permissions::fresh_auth_max_age(&Environment)?,
        providers,
        http,
        page,
        clock: Clock::system(),
    };
    runtime::serve(|req| federation::handle(&state, req)).await
}
