//! The second-factor Lambda (enrol a TOTP factor, and complete a login with
//! it): config, clients, the issuer's key and the data key that opens TOTP
//! secrets once at init (the two keys at once), then the loop.

use auth::browser::BrowserPolicy;
use auth::clock::{Clock, system_now};
use auth::config::Environment;
use auth::handlers::second_factor::{self, SecondFactor};
use auth::runtime;
use auth::second_factor_key::{DataKeySource, secret_box_from};
use auth::sessions::SessionConfig;
use auth::throttle::RateLimits;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let init = runtime::verifying_from_env().await?;
    let data_key = DataKeySource::from_source(&Environment)?;
    let kms = auth::aws::kms_client(&init.sdk);
    // The issuer's key and the data key (sealed mode: one Decrypt each) at once.
    let (issuer, secrets) = tokio::join!(
        runtime::issuer_from_env(&init.sdk, &init.tokens, &init.store, init.key_table),
        secret_box_from(&data_key, &init.store, &kms, system_now()),
    );
    let (issuer, secrets) = (issuer?, secrets?);
    let state = SecondFactor {
        store: init.store,
        verifier: init.verifier,
        issuer,
        sessions: SessionConfig::from_source(&Environment)?,
        limits: RateLimits::from_source(&Environment)?,
        browser: BrowserPolicy::from_source(&Environment)?,
        secrets,
        fresh_auth: auth::permissions::fresh_auth_max_age(&Environment)?,
        clock: Clock::system(),
    };
    runtime::serve(|req| second_factor::handle(&state, req)).await
}
