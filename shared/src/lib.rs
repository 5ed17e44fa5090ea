//! The shared library of the auth Lambda functions: configuration, access tokens,
//! passwords, the user model and its DynamoDB store, and the HTTP mapping. Each
//! function crate's `main.rs` only wires these together.

pub mod aws;
pub mod browser;
pub mod clock;
pub mod config;
pub mod devices;
pub mod email;
pub mod federation;
pub mod handlers;
pub mod http;
pub mod id_tokens;
pub mod issuer_keys;
pub mod key_set;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod mfa;
pub mod outbox;
pub mod passkeys;
pub mod passwords;
pub mod permissions;
pub mod providers;
pub mod relying_party;
pub mod rotation;
pub mod runtime;
pub mod second_factor;
pub mod second_factor_key;
pub mod sessions;
pub mod store;
pub mod throttle;
pub mod tickets;
pub mod tokens;
pub mod totp;
pub mod trust;
pub mod users;
