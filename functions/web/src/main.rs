//! The page Lambda (`GET /`, `GET /assets/…`): the sign-in page built from
//! `web/` by build.rs and embedded in the binary, so a deploy is one artifact
//! and the page is served at the API's own origin. No AWS call; the one
//! setting read is `JWT_ISSUER`, for `make dev`'s one origin.

use auth::handlers::page::{self, Asset, Site};
use auth::runtime;
use lambda_http::Error;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    runtime::init_logging();
    let issuer = std::env::var("JWT_ISSUER").ok();
    let site = Site::new(ASSETS)?.with_origin(issuer.as_deref());
    runtime::serve(|req| page::handle(&site, req)).await
}
