//! `POST /register`: a new account. Registration reveals, by its nature, that
//! a username is taken (409); the abuse limits slow down harvesting. A
//! deployment may close it (`SIGN_UP=admins`): then only admins create
//! accounts, with the admin API or `auth-admin`.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::limit_source;
use crate::clock::Clock;
use crate::config::{ConfigError, Source};
use crate::email::Email;
use crate::http::{ApiError, json_body, json_response, require_method};
use crate::metrics::{self, Event};
use crate::passwords::{PasswordHasher, check_new_password};
use crate::store::{Store, StoreError};
use crate::throttle::{RateLimits, Window};
use crate::users::{User, Username, display_name};

/// What the register function holds between invocations.
pub struct Register {
    pub store: Store,
    pub passwords: PasswordHasher,
    pub limits: RateLimits,
    pub sign_up: SignUp,
    pub clock: Clock,
}

/// Who may create accounts: anyone (`SIGN_UP=open`, the default), or only
/// admins (`SIGN_UP=admins`), through `POST /admin/users` or `auth-admin
/// create-user`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignUp {
    Open,
    AdminsOnly,
}

impl SignUp {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        match env.get("SIGN_UP").as_deref().map(str::trim) {
            None | Some("open") => Ok(SignUp::Open),
            Some("admins") => Ok(SignUp::AdminsOnly),
            Some(other) => Err(ConfigError::Invalid {
                var: "SIGN_UP",
                reason: format!("{other:?} is neither \"open\" nor \"admins\""),
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    username: String,
    password: String,
    name: String,
    /// Optional: an address to verify (a verification goes to it). The
    /// tutorial's body, without it, stays valid.
    #[serde(default, deserialize_with = "crate::http::not_null")]
    email: Option<String>,
}

/// The new user's public fields: never the hash.
#[derive(Serialize)]
struct Created {
    message: &'static str,
    id: String,
    username: String,
    name: String,
    created_at: i64,
    /// The address given, waiting for its verification; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    email_pending: Option<String>,
}

/// A new user from a registration's fields: the username's, the name's, the
/// address's and the password policy's checks (400), one bcrypt, one
/// conditional write (409 if the name is taken; with an address, its
/// verification asked for in the same transaction). Registration's and the
/// admin API's. An address claims nothing until verified, so registration
/// never says whether another account has it.
pub(super) async fn new_user(
    store: &Store,
    passwords: &PasswordHasher,
    username: &str,
    name: &str,
    email: Option<&str>,
    password: String,
) -> Result<User, ApiError> {
    let bad = |message: String| ApiError::BadRequest(message);
    let username = Username::parse(username).map_err(|e| bad(e.to_string()))?;
    let name = display_name(name).map_err(bad)?;
    let email = email
        .map(Email::parse)
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    check_new_password(&password, &username).map_err(|e| bad(e.to_string()))?;
    let hash = super::hash_new_password(passwords, password).await?;
    let mut user = User::new(username, name, hash);
    user.email_pending = email;
    if let Err(e) = store.create(&user).await {
        // The user may be ours all the same: our write committed, its answer
        // was lost, and the SDK's retry then found the user there (409) or
        // got no answer either (503). A read-back that fails cannot tell:
        // 503, never a 409 for a name that may be ours.
        match store.get(&user.username).await {
            Ok(Some(found)) if found.id == user.id => {}
            Ok(_) => {
                return Err(match e {
                    StoreError::AlreadyExists => ApiError::UsernameTaken,
                    e => e.into(),
                });
            }
            Err(read) => {
                return Err(match e {
                    StoreError::AlreadyExists => read.into(),
                    e => e.into(),
                });
            }
        }
    }
    Ok(user)
}

pub async fn handle(state: &Register, req: Request) -> Response<Body> {
    register(state, req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn register(state: &Register, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    // Closed: refused before anything is read or counted.
    if state.sign_up == SignUp::AdminsOnly {
        return Err(ApiError::SignUpClosed);
    }
    // Every attempt counts against the source's limit, valid or not: this is
    // what slows down harvesting taken usernames.
    let now = state.clock.now();
    let window = Window::register(&state.limits);
    limit_source(&state.store, &window, &req, now).await?;
    let registration: Registration = json_body(&req)?;
    // An address is mailed so often an hour, whoever gives it (as `PUT
    // /account/email` and reset requests count it).
    if let Some(email) = registration
        .email
        .as_deref()
        .and_then(|e| Email::parse(e).ok())
    {
        let who = crate::outbox::Identifier::Email(email);
        super::recovery::limit_identifier(&state.store, &state.limits, &who, now).await?;
    }
    let user = new_user(
        &state.store,
        &state.passwords,
        &registration.username,
        &registration.name,
        registration.email.as_deref(),
        registration.password,
    )
    .await?;
    crate::runtime::record_user(&user.id);
    tracing::info!(user_id = %user.id, "user registered");
    metrics::count(Event::Registration);
    Ok(json_response(
        StatusCode::CREATED,
        &Created {
            message: "User created",
            id: user.id.to_string(),
            username: user.username.to_string(),
            name: user.name,
            created_at: user.created_at,
            email_pending: user.email_pending.map(|e| e.to_string()),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_up_is_open_unless_closed_to_admins_and_a_bad_value_stops_init() {
        let read = |value: Option<&'static str>| {
            SignUp::from_source(&move |var: &str| {
                assert_eq!(var, "SIGN_UP");
                value.map(str::to_owned)
            })
        };
        assert_eq!(read(None).unwrap(), SignUp::Open);
        assert_eq!(read(Some("open")).unwrap(), SignUp::Open);
        assert_eq!(read(Some("admins")).unwrap(), SignUp::AdminsOnly);
        let err = read(Some("closed")).unwrap_err().to_string();
        assert!(err.contains("SIGN_UP") && err.contains("closed"), "{err}");
    }
}
