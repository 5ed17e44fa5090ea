//! `POST /refresh`: trades a refresh token for a new access token and a new
//! refresh token (rotation). Presenting a token that was already traded is
//! reuse: the whole session (its refresh family and access tokens) is revoked.
//!
//! Grace period (`REFRESH_REUSE_GRACE_SECONDS`, default 10 s): the same token
//! presented again shortly after its rotation (a client retrying a refresh
//! whose answer it lost, another tab at the same moment) is refused (401
//! `refresh_token_superseded`) without revoking the session. The client that
//! got the first answer goes on with its new token; a browser's other tab
//! retries with the cookie the winner set; a body client that lost its answer
//! logs in again. A second live token is never handed out.

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::{TokenPair, cookie_error, sign_access_token};
use crate::browser::{BrowserPolicy, Delivery, refresh_cookie};
use crate::clock::Clock;
use crate::http::{ApiError, json_body, require_method};
use crate::metrics::{self, Event};
use crate::sessions::{RefreshRecord, RefreshState, RefreshToken, SessionConfig};
use crate::store::{Store, StoreError};
use crate::tokens::{TokenIssuer, revoked_until};
use crate::users::User;

/// Refresh tokens we issue are 43 characters; anything much longer is not ours.
const MAX_REFRESH_TOKEN_CHARS: usize = 128;

/// What the refresh function holds between invocations.
pub struct Refresh {
    pub store: Store,
    pub tokens: TokenIssuer,
    pub sessions: SessionConfig,
    /// Who may use the refresh cookie.
    pub browser: BrowserPolicy,
    pub clock: Clock,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    /// When absent, the refresh cookie's token is used (and its successor
    /// goes back in the cookie).
    #[serde(default)]
    refresh_token: Option<String>,
}

pub async fn handle(state: &Refresh, req: Request) -> Response<Body> {
    // The way the token came is the way its successor goes, and decides
    // whether a dead token's answer also clears the cookie.
    let mut delivery = Delivery::Body;
    match refresh(state, req, &mut delivery).await {
        Ok(response) => response,
        Err(e) => cookie_error(e, delivery),
    }
}

async fn refresh(
    state: &Refresh,
    req: Request,
    delivery: &mut Delivery,
) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let request: RefreshRequest = json_body(&req)?;
    let raw = match request.refresh_token {
        Some(token) => token,
        None => match refresh_cookie(&req)? {
            Some(token) => {
                *delivery = Delivery::Cookie;
                state.browser.check(&req)?;
                token
            }
            None => {
                return Err(ApiError::BadRequest(
                    "refresh_token is required, in the body or in the refresh cookie".into(),
                ));
            }
        },
    };
    if raw.is_empty() {
        return Err(ApiError::BadRequest(
            "refresh_token must not be empty".into(),
        ));
    }
    if raw.len() > MAX_REFRESH_TOKEN_CHARS {
        return Err(ApiError::InvalidGrant);
    }
    let presented = RefreshToken::presented(raw);
    let now = state.clock.now();

    let record = state
        .store
        .get_refresh(&presented.hash())
        .await?
        .ok_or(ApiError::InvalidGrant)?;
    // DynamoDB's TTL deletes expired items days late, if at all: check ourselves.
    if record.expires_at <= now {
        return Err(ApiError::InvalidGrant);
    }
    let session = state
        .store
        .get_session(&record.session_id)
        .await?
        .filter(|s| !s.revoked && s.user_id == record.user_id)
        .ok_or(ApiError::InvalidGrant)?;
    let user = state
        .store
        .get(&session.username)
        .await?
        .filter(|u| u.id == session.user_id && u.active && u.session_epoch == session.epoch)
        .ok_or(ApiError::InvalidGrant)?;

    crate::runtime::record_user(&user.id);
    match &record.state {
        RefreshState::Active => {}
        RefreshState::Rotated { at, .. }
            if now - at < state.sessions.reuse_grace.as_secs() as i64 =>
        {
            tracing::info!(user_id = %user.id, "refresh token presented again within the grace period");
            metrics::count(Event::RefreshSuperseded);
            return Err(ApiError::RefreshSuperseded);
        }
        RefreshState::Rotated { .. } => {
            return Err(reuse_detected(state, &record, &user, now).await);
        }
    }

    // The successor never outlives the session's absolute lifetime.
    let expires_at = state.sessions.refresh_expiry(session.created_at, now);
    if expires_at <= now {
        tracing::info!(user_id = %user.id, "refresh refused: the session reached its maximum lifetime");
        return Err(ApiError::InvalidGrant);
    }
    let next = RefreshToken::generate();
    let next_record = RefreshRecord {
        hash: next.hash(),
        session_id: record.session_id.clone(),
        user_id: user.id,
        state: RefreshState::Active,
        created_at: now,
        expires_at,
    };
    // Sign first: if the signer (KMS) fails, the old token stays valid.
    // The successor keeps the session's last proof of the password.
    let access = sign_access_token(
        &state.tokens,
        &user,
        &record.session_id,
        session.auth_time,
        &session.amr,
        now,
    )
    .await?;
    let rotated = state.store.rotate(&record, &next_record, &user).await;
    // A failure reported for a rotation that committed (its answer lost, the
    // SDK's retry then refused) is a success: the successor is stored.
    if let Err(e) = rotated
        && !matches!(
            state.store.get_refresh(&next_record.hash).await,
            Ok(Some(_))
        )
    {
        return Err(match e {
            // Another request rotated it a moment ago (a retry, another tab):
            // superseded, nothing revoked; or the session or the user's epoch
            // ended meanwhile: invalid. A lost race, never a 5xx.
            StoreError::Conflict | StoreError::Contended => {
                let contended = matches!(e, StoreError::Contended);
                match state.store.get_refresh(&record.hash).await {
                    Ok(Some(now)) if matches!(now.state, RefreshState::Rotated { .. }) => {
                        metrics::count(Event::RefreshSuperseded);
                        ApiError::RefreshSuperseded
                    }
                    // Nobody won yet (still active, writes contended): try
                    // again; nothing says the session is over, so a
                    // browser's cookie stays.
                    Ok(Some(_)) if contended => ApiError::Conflict(
                        "the refresh token was in use by another request; try again",
                    ),
                    Ok(_) => ApiError::InvalidGrant,
                    Err(e) => e.into(),
                }
            }
            e => e.into(),
        });
    }
    tracing::info!(user_id = %user.id, "refresh token rotated");
    metrics::count(Event::Refresh);
    Ok(TokenPair {
        message: "Token refreshed",
        access_token: access.token,
        token_type: "Bearer",
        expires_in: access.expires_in,
        refresh_token: Some(next.expose().to_owned()),
        refresh_expires_in: (expires_at - now) as u64,
        device: None,
        device_expires_in: None,
    }
    .into_response(*delivery, Delivery::Body))
}

/// A rotated token came back after the grace period: someone holds a copy.
/// End the session, refresh family and access tokens alike.
async fn reuse_detected(
    state: &Refresh,
    record: &RefreshRecord,
    user: &User,
    now: i64,
) -> ApiError {
    tracing::warn!(user_id = %user.id, "refresh token reuse detected: revoking the session");
    metrics::count(Event::RefreshReuseDetected);
    let access_until = revoked_until(state.tokens.lifetime(), now);
    match state
        .store
        .revoke_sessions(&[&record.session_id], user, access_until, now)
        .await
    {
        Ok(()) | Err(StoreError::Conflict) => ApiError::InvalidGrant,
        Err(e) => e.into(),
    }
}
