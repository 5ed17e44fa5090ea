//! The recovery function: a forgotten password. `POST /password/reset`
//! asks for a reset by username or address; `POST /password/reset/confirm`
//! sets a new password with the mailed link's token or code.
//!
//! The request's answer is one fixed 202, whoever asks: its work is the same
//! three writes whether or not an account matches (two rate windows keyed
//! by the source IP and by the identifier's hash, then the job), and the
//! lookup and the sending happen in the mail function, out of the
//! requester's sight (a queue, not a deadline: nothing it answers or takes
//! time over depends on an account, and SES's latency never shows).
//!
//! A confirmation is guessing if it is anything but its owner's: every try
//! counts in the source IP's guess window, a wrong code counts against the
//! ticket (five void the code; the link still works), and nothing here uses
//! the password lockout, so a stranger can never lock the owner out of
//! recovery. The new password passes registration's policy; the reset is
//! one transaction (`Store::reset_password`) and starts no session.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::limit_source;
use crate::clock::Clock;
use crate::email::Email;
use crate::http::{ApiError, json_body, json_response, require_method};
use crate::metrics::{self, Event};
use crate::outbox::{Identifier, MailJob};
use crate::passwords::{PasswordHasher, PolicyViolation, check_new_password, check_password_alone};
use crate::store::{Store, StoreError};
use crate::throttle::{RateLimits, Window};
use crate::tickets::{LinkToken, Proof, Purpose, Ticket};
use crate::users::{User, Username};

pub const RESET_PATH: &str = "/password/reset";
pub const CONFIRM_PATH: &str = "/password/reset/confirm";

/// What the recovery function holds between invocations.
pub struct Recovery {
    pub store: Store,
    pub passwords: PasswordHasher,
    pub limits: RateLimits,
    pub clock: Clock,
}

/// A username or an address: exactly one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    #[serde(default, deserialize_with = "crate::http::not_null")]
    username: Option<String>,
    #[serde(default, deserialize_with = "crate::http::not_null")]
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirmation {
    /// The link's token, or…
    #[serde(default, deserialize_with = "crate::http::not_null")]
    token: Option<String>,
    /// …the code, with the username or address the reset was asked for.
    #[serde(default, deserialize_with = "crate::http::not_null")]
    code: Option<String>,
    #[serde(default, deserialize_with = "crate::http::not_null")]
    username: Option<String>,
    #[serde(default, deserialize_with = "crate::http::not_null")]
    email: Option<String>,
    new_password: String,
}

#[derive(Serialize)]
struct Answer {
    message: &'static str,
}

/// The one answer to every accepted reset request.
pub const RESET_ANSWER: &str = "If an account matches and has a verified email address, a message with a link and a code is on its way to it; both work for 10 minutes.";

pub async fn handle(state: &Recovery, req: Request) -> Response<Body> {
    let result = match req.uri().path().trim_end_matches('/') {
        RESET_PATH => request_reset(state, req).await,
        CONFIRM_PATH => confirm_reset(state, req).await,
        _ => Err(ApiError::NotFound),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// Which identifier a body names: exactly one of `username` and `email`.
fn identifier(username: Option<String>, email: Option<String>) -> Result<Identifier, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    match (username, email) {
        (Some(name), None) => Ok(Identifier::Username(
            Username::parse(&name).map_err(|e| bad(e.to_string()))?,
        )),
        (None, Some(email)) => Ok(Identifier::Email(
            Email::parse(&email).map_err(|e| bad(e.to_string()))?,
        )),
        _ => Err(bad("give either username or email".into())),
    }
}

/// Counts a request that would mail `identifier` in its hourly window
/// (reset requests, addresses given at registration or later, alike);
/// past the limit, 429 with the wait. Keyed on what was sent, never on
/// what exists.
pub(super) async fn limit_identifier(
    store: &Store,
    limits: &RateLimits,
    identifier: &Identifier,
    now: i64,
) -> Result<(), ApiError> {
    let window = Window::reset_identifier(limits);
    if store.hit(&window, &identifier_key(identifier), now).await? > window.limit {
        metrics::count(Event::IpRateLimited);
        return Err(ApiError::TooManyRequests {
            retry_after: window.remaining(now),
        });
    }
    Ok(())
}

/// What a rate window keys an identifier on: a hash, never the identifier.
fn identifier_key(identifier: &Identifier) -> String {
    match identifier {
        Identifier::Username(name) => {
            format!("u-{}", crate::email::hex_sha256(name.as_str().as_bytes()))
        }
        Identifier::Email(email) => format!("e-{}", email.hash()),
    }
}

async fn request_reset(state: &Recovery, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let body: ResetRequest = json_body(&req)?;
    let identifier = identifier(body.username, body.email)?;
    // Two windows whose keys are what was sent, never what exists: the
    // source IP's, and the identifier's (so nobody mails one person a
    // flood from many addresses). The account's own allowance is the mail
    // function's, and silent.
    limit_source(&state.store, &Window::reset(&state.limits), &req, now).await?;
    limit_identifier(&state.store, &state.limits, &identifier, now).await?;
    state
        .store
        .enqueue(&MailJob::Reset { identifier }, now)
        .await?;
    tracing::info!("password reset requested");
    metrics::count(Event::ResetRequested);
    Ok(json_response(
        StatusCode::ACCEPTED,
        &Answer {
            message: RESET_ANSWER,
        },
    ))
}

async fn confirm_reset(state: &Recovery, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let body: Confirmation = json_body(&req)?;
    limit_source(
        &state.store,
        &Window::ticket_guesses(&state.limits),
        &req,
        now,
    )
    .await?;
    let proof = proof(body.token, body.code, body.username, body.email)?;
    // The policy before the lookup, with what needs no account: a weak
    // password's answer must tell nothing of whether an account, an
    // address or a ticket exists, nor a right code from a wrong one.
    let policy = |e: PolicyViolation| ApiError::BadRequest(e.to_string());
    match &proof.who {
        Some(Identifier::Username(name)) => check_new_password(&body.new_password, name),
        _ => check_password_alone(&body.new_password),
    }
    .map_err(policy)?;
    let found = find(&state.store, Purpose::Reset, &proof, now).await?;
    let (user, ticket) = accepted(&state.store, Purpose::Reset, found, &proof).await?;
    // Proved: the rule that needs the username, when it was not given.
    check_new_password(&body.new_password, &user.username).map_err(policy)?;
    let new_hash = super::hash_new_password(&state.passwords, body.new_password).await?;
    match state
        .store
        .reset_password(&user, &ticket, &proof.proof, &new_hash, now)
        .await
    {
        Ok(()) => {}
        // A racer used the ticket, a newer request replaced it, or the
        // password changed meanwhile.
        Err(StoreError::Conflict) => {
            if !reset_committed(&state.store, &user, &new_hash).await {
                return Err(refused());
            }
        }
        // The answer lost: the reset may have committed all the same.
        Err(e) => {
            if !reset_committed(&state.store, &user, &new_hash).await {
                return Err(e.into());
            }
        }
    }
    tracing::info!(user_id = %user.id, "password reset; all sessions ended");
    metrics::count(Event::PasswordReset);
    Ok(json_response(
        StatusCode::OK,
        &Answer {
            message: "Password reset. Every session was signed out; sign in with the new password.",
        },
    ))
}

/// Whether our own reset committed (its answer lost): the new hash is there.
async fn reset_committed(store: &Store, user: &User, new_hash: &str) -> bool {
    matches!(store.get(&user.username).await, Ok(Some(now)) if now.id == user.id && now.password_hash == new_hash)
}

/// A proof as presented, before it is checked, and whom a code is for.
pub(super) struct Presented {
    pub proof: Proof,
    pub who: Option<Identifier>,
}

/// The proof a body presents: a token, or a code with whom it is for.
fn proof(
    token: Option<String>,
    code: Option<String>,
    username: Option<String>,
    email: Option<String>,
) -> Result<Presented, ApiError> {
    match (token, code) {
        (Some(token), None) if username.is_none() && email.is_none() => {
            // A token of the wrong shape is a wrong token.
            let token = LinkToken::parse(token.trim()).ok_or_else(refused)?;
            Ok(Presented {
                proof: Proof::Link(token),
                who: None,
            })
        }
        (None, Some(code)) => Ok(Presented {
            proof: Proof::Code(code.chars().filter(|c| !c.is_whitespace()).collect()),
            who: Some(identifier(username, email)?),
        }),
        _ => Err(ApiError::BadRequest(
            "give either token, or code with username or email".into(),
        )),
    }
}

/// What a proof's lookup found: the user and their live ticket, or
/// nothing (no such user, address or ticket; nobody is told which).
pub(super) type Found = Option<(User, Ticket)>;

/// The user a proof is for and their live ticket of `purpose`. The lookup
/// makes the same reads whether or not the account, its address and its
/// ticket exist (a decoy read stands in for each one missing), so its
/// calls tell nothing either: by code, for whatever name or address; by
/// link, for a forged token naming a known user's id (ids are tokens'
/// `sub`) as for a real one.
pub(super) async fn find(
    store: &Store,
    purpose: Purpose,
    proof: &Presented,
    now: i64,
) -> Result<Found, ApiError> {
    let user = match (&proof.proof, &proof.who) {
        (Proof::Link(token), _) => {
            let Some(ticket) = store.get_ticket(purpose, token.user_id(), now).await? else {
                store.decoy_user_read().await?;
                return Ok(None);
            };
            return Ok(store
                .get(&ticket.username)
                .await?
                .map(|user| (user, ticket)));
        }
        (Proof::Code(_), Some(Identifier::Username(name))) => store.get(name).await?,
        // As many reads whether or not the address is claimed.
        (Proof::Code(_), Some(Identifier::Email(email))) => store.user_by_email(email).await?,
        (Proof::Code(_), None) => return Ok(None),
    };
    let Some(user) = user else {
        store.decoy_ticket_read(purpose).await?;
        return Ok(None);
    };
    Ok(store
        .get_ticket(purpose, user.id, now)
        .await?
        .map(|ticket| (user, ticket)))
}

/// Checks `proof` against what `find` found: anything wrong is
/// `InvalidTicket`. A wrong code costs one conditional write, whether it is
/// counted against a live ticket (five void the code) or there is none to
/// count it against (a decoy that writes nothing).
pub(super) async fn accepted(
    store: &Store,
    purpose: Purpose,
    found: Found,
    proof: &Presented,
) -> Result<(User, Ticket), ApiError> {
    let (user, ticket) = match found {
        Some((user, ticket)) if ticket.accepts(&proof.proof) => (user, ticket),
        found => {
            if let Proof::Code(_) = proof.proof {
                match found {
                    Some((_, ticket)) => {
                        store.count_code_failure(&ticket).await?;
                    }
                    None => store.decoy_code_failure(purpose).await?,
                }
            }
            return Err(refused());
        }
    };
    if !ticket.binds(&user) {
        return Err(refused());
    }
    Ok((user, ticket))
}

pub(super) fn refused() -> ApiError {
    metrics::count(Event::TicketRefused);
    ApiError::InvalidTicket
}
