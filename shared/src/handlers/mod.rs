//! Request handlers, one module per function. Each takes its state and a request
//! and always returns a response: errors become our JSON error shape here.

pub mod get_name;
pub mod login;
