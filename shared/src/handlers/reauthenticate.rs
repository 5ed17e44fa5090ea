//! `POST /reauthenticate`: the password again, within the session the bearer
//! token belongs to. The answer is a new access token of the same session
//! whose `auth_time` is now, for acts that need a recent proof (the admin
//! API). No new session and no new refresh token: the session's later
//! refreshes carry the new `auth_time` on.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::account::{Account, prove_current_password};
use super::{authenticate_caller, sign_access_token};
use crate::http::{ApiError, json_body, json_response, require_method};
use crate::metrics::{self, Event};
use crate::store::StoreError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Proof {
    password: String,
    /// An API client's device proof (a browser's is its device cookie).
    #[serde(default)]
    device: Option<String>,
}

#[derive(Serialize)]
struct Reauthenticated {
    message: &'static str,
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

pub async fn reauthenticate(state: &Account, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let proof: Proof = json_body(&req)?;
    if proof.password.is_empty() {
        return Err(ApiError::BadRequest("password must not be empty".into()));
    }
    // The latest proof is the password's alone (RFC 9470: `auth_time` and
    // `acr` say the same event): a session that had proved a second factor
    // says `aal1` until it proves one again (`/account/second-factor/verify`).
    let amr = crate::sessions::SignIn::Password.amr();
    let (user, sid) = (caller.user, caller.claims.sid);
    let vouching = prove_current_password(state, &req, &user, proof.password, proof.device, now)
        .await?
        .vouching;

    // Sign first: a signer failure writes nothing. Then the session's new
    // proof and the cleared attempt record, in one transaction that holds
    // only while the session is live and the user as read.
    let access = sign_access_token(&state.issuer, &user, &sid, now, &amr, now).await?;
    // A failure reported for a write that committed (its answer lost, the
    // SDK's retry then refused by its own effects) is a success: read back.
    let proof = uuid::Uuid::new_v4().to_string();
    // A device that vouched has its own count cleared, not the username's.
    let device = vouching.as_ref().map(|d| d.hash.as_str());
    if let Err(e) = state
        .store
        .reauthenticate(&sid, &user, now, &proof, &amr, device)
        .await
        && !state.store.proof_stored(&sid, &proof).await
    {
        return Err(match e {
            // The session ended (logged out, past its end, its item gone)
            // or the account changed meanwhile (a password change, a
            // deactivation): the token is no longer good for this. Or a
            // harmless race (a rehash): try again.
            StoreError::Conflict => {
                let session = state.store.get_session(&sid).await;
                let live = matches!(&session, Ok(Some(s)) if !s.revoked && s.user_id == user.id && s.expires_at > now);
                match authenticate_caller(&req, &state.verifier, &state.store, now).await {
                    Ok(_) if live => ApiError::Conflict("the account changed meanwhile; try again"),
                    Ok(_) => ApiError::InvalidToken("the session has ended; log in again".into()),
                    Err(e) => e,
                }
            }
            e => e.into(),
        });
    }
    tracing::info!(user_id = %user.id, "re-authenticated");
    metrics::count(Event::Reauthenticated);
    Ok(json_response(
        StatusCode::OK,
        &Reauthenticated {
            message: "Reauthenticated",
            access_token: access.token,
            token_type: "Bearer",
            expires_in: access.expires_in,
        },
    ))
}
