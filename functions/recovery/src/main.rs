//! The recovery Lambda (a forgotten password: ask for a reset, then set a
//! new password with the mailed link or code): config and clients once at
//! init, then the loop. It never sends mail: the mail function does.

use auth::clock::Clock;
use auth::config::Environment;
use auth::handlers::recovery::{self, Recovery};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::runtime;
use auth::throttle::RateLimits;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let sdk = runtime::aws_from_env()?;
    let state = Recovery {
        store: runtime::store_from_env(&sdk)?,
        passwords: PasswordHasher::new(BcryptCost::from_source(&Environment)?),
        limits: RateLimits::from_source(&Environment)?,
        clock: Clock::system(),
    };
    runtime::serve(|req| recovery::handle(&state, req)).await
}
