//! The discovery Lambda (`/.well-known/jwks.json`, `/.well-known/openid-configuration`):
//! public keys loaded at init (the table's re-read on their schedule), the
//! discovery document built once, then the loop.

use auth::config::Environment;
use auth::handlers::discovery::{self, Discovery};
use auth::permissions::PermissionConfig;
use auth::runtime;
use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let sdk = runtime::aws_from_env()?;
    let tokens = runtime::token_config_from_env()?;
    let permissions = PermissionConfig::from_source(&Environment)?;
    let (keys, table) = runtime::public_keys_from_env(&sdk).await?;
    let state = Discovery::new(&keys, table, &tokens, &permissions);
    runtime::serve(|req| discovery::handle(&state, req)).await
}
