//! The integration tests, in one binary: each file a module, all against the
//! DynamoDB Local (and, for e2e, the watch and the local KMS) that `make test`
//! started. One binary links the AWS SDK once, not nine times. (runtime.rs and
//! tls.rs stay binaries of their own: they set process-wide environment.)

mod support;

mod abuse;
mod admin;
mod admin_races;
mod browser;
mod deletion;
mod devices;
mod e2e;
mod faults;
mod federation;
mod handlers;
mod hostile;
mod invariants;
mod issuer_keys;
mod kms;
mod logs;
mod matrix;
mod metrics;
mod mfa;
mod modes;
mod passkeys;
mod permissions;
mod providers;
mod recovery;
mod sealed;
mod second_factor;
mod session_list;
mod sessions;
mod store;
