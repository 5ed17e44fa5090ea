//! The register Lambda: config and clients once at init, then the loop.

use auth::clock::Clock;
use auth::config::Environment;
use auth::handlers::register::{self, Register, SignUp};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::runtime;
use auth::throttle::RateLimits;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let sdk = runtime::aws_from_env()?;
    let state = Register {
        store: runtime::store_from_env(&sdk)?,
        passwords: PasswordHasher::new(BcryptCost::from_source(&Environment)?),
        limits: RateLimits::from_source(&Environment)?,
        sign_up: SignUp::from_source(&Environment)?,
        clock: Clock::system(),
    };
    runtime::serve(|req| register::handle(&state, req)).await
}
