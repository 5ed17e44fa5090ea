//! `/account/email`: a user's address. `GET` shows it; `PUT {"email"}`
//! gives a new one, which waits for its verification (the verified one, if
//! any, stays until then); `DELETE` removes both; `POST
//! /account/email/verify` proves it with the mailed link's token (no bearer
//! token needed: any browser) or with the code (the owner's bearer token).
//! Giving or removing an address needs a recent proof of the password
//! (`FRESH_AUTH_MAX_AGE_SECONDS`): a stolen access token alone cannot
//! redirect the account's recovery.
//!
//! Giving an address never says whether another account has it: only a
//! verification, by whoever receives its mail, can learn that (409
//! `email_taken`).

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::account::Account;
use super::recovery::{Presented, accepted, refused};
use super::{authenticate_caller, limit_source, no_longer_valid};
use crate::email::Email;
use crate::http::{ApiError, json_body, json_response, require_method};
use crate::metrics::{self, Event};
use crate::outbox::Identifier;
use crate::store::{StoreError, Verified};
use crate::throttle::Window;
use crate::tickets::{LinkToken, Proof, Purpose};
use crate::users::User;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEmail {
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Verification {
    #[serde(default, deserialize_with = "crate::http::not_null")]
    token: Option<String>,
    #[serde(default, deserialize_with = "crate::http::not_null")]
    code: Option<String>,
}

/// A user's addresses, as every route here answers them.
#[derive(Serialize)]
pub(crate) struct EmailView {
    message: &'static str,
    /// The verified address, or null.
    email: Option<String>,
    email_verified: bool,
    /// An address given but not yet verified, or null.
    email_pending: Option<String>,
}

impl EmailView {
    fn of(user: &User, message: &'static str) -> Self {
        EmailView {
            message,
            email: user.email.as_ref().map(Email::to_string),
            email_verified: user.email.is_some(),
            email_pending: user.email_pending.as_ref().map(Email::to_string),
        }
    }
}

/// `GET`, `PUT` and `DELETE /account/email`.
pub async fn email(state: &Account, req: Request) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    if ![Method::GET, Method::PUT, Method::DELETE].contains(&method) {
        return Err(ApiError::MethodNotAllowed {
            method,
            allow: "GET, PUT, DELETE",
        });
    }
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let user = caller.user.clone();
    if method == Method::GET {
        return Ok(json_response(
            StatusCode::OK,
            &EmailView::of(&user, "Your email address"),
        ));
    }
    caller.require_fresh(state.fresh_auth, now)?;
    if method == Method::DELETE {
        return match state.store.remove_email(&user, now).await {
            Ok(()) => {
                tracing::info!(user_id = %user.id, "email address removed");
                let mut after = user;
                after.email = None;
                after.email_pending = None;
                Ok(json_response(
                    StatusCode::OK,
                    &EmailView::of(&after, "Email address removed"),
                ))
            }
            Err(StoreError::Conflict) => Err(ApiError::Conflict(
                "the address changed meanwhile; read it again",
            )),
            Err(e) => Err(e.into()),
        };
    }
    let body: NewEmail = json_body(&req)?;
    let email = Email::parse(&body.email).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if user.email.as_ref() == Some(&email) {
        return Ok(json_response(
            StatusCode::OK,
            &EmailView::of(&user, "This is your verified address already"),
        ));
    }
    // One address is mailed so often, whichever accounts give it.
    let who = Identifier::Email(email.clone());
    super::recovery::limit_identifier(&state.store, &state.limits, &who, now).await?;
    match state.store.set_pending_email(&user, &email, now).await {
        Ok(true) => {}
        Ok(false) => return Err(no_longer_valid()),
        // The answer may be lost with the write committed: read it back.
        Err(e) => {
            let now_stored = state.store.get(&user.username).await;
            if !matches!(now_stored, Ok(Some(u)) if u.id == user.id && u.email_pending.as_ref() == Some(&email))
            {
                return Err(e.into());
            }
        }
    }
    tracing::info!(user_id = %user.id, "email address given; verification asked for");
    let mut after = user;
    after.email_pending = Some(email);
    Ok(json_response(
        StatusCode::ACCEPTED,
        &EmailView::of(
            &after,
            "A link and a code are on their way to the address; it replaces the verified one (if any) once verified",
        ),
    ))
}

/// `POST /account/email/verify`.
pub async fn verify_email(state: &Account, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let body: Verification = json_body(&req)?;
    limit_source(
        &state.store,
        &Window::ticket_guesses(&state.limits),
        &req,
        now,
    )
    .await?;
    let (found, proof) = match (body.token, body.code) {
        (Some(token), None) => {
            let token = LinkToken::parse(token.trim()).ok_or_else(refused)?;
            let presented = Presented {
                proof: Proof::Link(token),
                who: None,
            };
            let found =
                super::recovery::find(&state.store, Purpose::VerifyEmail, &presented, now).await?;
            (found, presented)
        }
        (None, Some(code)) => {
            let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
            let found = state
                .store
                .get_ticket(Purpose::VerifyEmail, caller.user.id, now)
                .await?
                .map(|ticket| (caller.user, ticket));
            let presented = Presented {
                proof: Proof::Code(code.chars().filter(|c| !c.is_whitespace()).collect()),
                who: None,
            };
            (found, presented)
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give either token (from the link) or code".into(),
            ));
        }
    };
    let (user, ticket) = accepted(&state.store, Purpose::VerifyEmail, found, &proof).await?;
    let outcome = state
        .store
        .verify_email(&user, &ticket, &proof.proof, now)
        .await;
    let committed = |user: &Option<User>| {
        user.as_ref()
            .is_some_and(|u| u.id == ticket.user_id && u.email.as_ref() == Some(&ticket.email))
    };
    match outcome {
        Ok(Verified::Done) => {}
        Ok(Verified::Taken) => return Err(ApiError::EmailTaken),
        Err(e) => {
            // Our own verification may have committed, its answer lost.
            if !committed(&state.store.get(&user.username).await.unwrap_or(None)) {
                return Err(match e {
                    StoreError::Conflict => refused(),
                    e => e.into(),
                });
            }
        }
    }
    tracing::info!(user_id = %user.id, "email address verified");
    metrics::count(Event::EmailVerified);
    let mut after = user;
    after.email = Some(ticket.email.clone());
    after.email_pending = None;
    Ok(json_response(
        StatusCode::OK,
        &EmailView::of(&after, "Email address verified"),
    ))
}
