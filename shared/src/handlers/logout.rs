//! `POST /logout`: ends the caller's session (its refresh family and access
//! tokens, at once), or with `{"all": true}` every session of the user. The
//! body is optional; a `refresh_token` of another session of the same user in
//! it ends that session too. The function serves the sessions list as well
//! (`sessions`).

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::{authenticate_caller, no_longer_valid};
use crate::browser::{BrowserPolicy, clear_refresh_cookie, refresh_cookie};
use crate::clock::Clock;
use crate::http::{ApiError, body_is_empty, json_body, json_response, require_method};
use crate::metrics::{self, Event};
use crate::sessions::RefreshToken;
use crate::store::{Store, StoreError};
use crate::tokens::TokenVerifier;

/// What the logout function holds between invocations.
pub struct Logout {
    pub store: Store,
    pub tokens: TokenVerifier,
    /// Who may use the refresh cookie.
    pub browser: BrowserPolicy,
    pub clock: Clock,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[serde(default)]
struct LogoutRequest {
    all: bool,
    refresh_token: Option<String>,
}

#[derive(Serialize)]
struct LoggedOut {
    message: &'static str,
    /// "session" or "all".
    ended: &'static str,
}

pub async fn handle(state: &Logout, req: Request) -> Response<Body> {
    if req.uri().path().starts_with(super::sessions::SESSIONS_PATH) {
        return super::sessions::handle(state, req).await;
    }
    // A request carrying the refresh cookie is checked for its origin before
    // anything else, and the cookie is cleared only once the session has
    // ended: no other page can clear it (a 405 or a 401 would otherwise), and
    // a failed logout leaves no live session behind a cleared cookie.
    let cookie = match refresh_cookie(&req) {
        Ok(cookie) => cookie,
        Err(e) => return e.into_response(),
    };
    if cookie.is_some()
        && let Err(e) = state.browser.check(&req)
    {
        return e.into_response();
    }
    let had_cookie = cookie.is_some();
    let mut response = logout(state, req, cookie)
        .await
        .unwrap_or_else(ApiError::into_response);
    if had_cookie && response.status() == StatusCode::OK {
        clear_refresh_cookie(&mut response);
    }
    response
}

async fn logout(
    state: &Logout,
    req: Request,
    cookie: Option<String>,
) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.tokens, &state.store, now).await?;
    let mut request: LogoutRequest = if body_is_empty(&req) && cookie.is_none() {
        LogoutRequest::default()
    } else {
        // With the cookie, a JSON object body ({} will do) is required: a
        // page on another origin cannot send one without a preflight.
        json_body(&req)?
    };
    if let Some(token) = cookie {
        // The cookie names this browser's session when the body names none.
        request.refresh_token.get_or_insert(token);
    }

    let ended = if request.all {
        match state.store.end_all_sessions(&caller.user).await {
            Ok(true) => {}
            Ok(false) => return Err(no_longer_valid()),
            // Reported failed, but done if the epoch moved on (its answer lost).
            Err(e) => match state.store.get(&caller.user.username).await {
                Ok(Some(now))
                    if now.id == caller.user.id
                        && now.session_epoch > caller.user.session_epoch => {}
                _ => return Err(e.into()),
            },
        }
        "all"
    } else {
        let access_until = state.tokens.revoked_until(now);
        let sid = caller.claims.sid.as_str();
        // Another session of the same user, named by its refresh token, ends
        // with this one, in the same write: its refresh family and its access
        // tokens alike.
        let other = match request.refresh_token.filter(|t| t.len() <= 128) {
            Some(raw) => state
                .store
                .get_refresh(&RefreshToken::presented(raw).hash())
                .await?
                .filter(|r| r.user_id == caller.user.id && r.session_id != sid)
                .map(|r| r.session_id),
            None => None,
        };
        // Only a session that is still there (TTL deletes ended ones): a
        // token of a session gone already needs no ending, and must not fail
        // the caller's own logout.
        let other = match other {
            Some(other_sid) => state
                .store
                .get_session(&other_sid)
                .await?
                .filter(|s| s.user_id == caller.user.id)
                .map(|s| s.id),
            None => None,
        };
        let mut sids = vec![sid];
        sids.extend(other.as_deref());
        let revoked = state
            .store
            .revoke_sessions(&sids, &caller.user, access_until, now)
            .await;
        if let Err(e) = revoked
            && !all_revoked(&state.store, &sids).await
        {
            return Err(match e {
                StoreError::Conflict => no_longer_valid(),
                e => e.into(),
            });
        }
        "session"
    };
    tracing::info!(user_id = %caller.user.id, ended, "logged out");
    metrics::count(Event::Logout);
    Ok(json_response(
        StatusCode::OK,
        &LoggedOut {
            message: "Logged out",
            ended,
        },
    ))
}

/// Whether every session of `sids` is marked revoked: after the revocation
/// reported a failure, whether it committed all the same (its answer lost).
/// The session and the user's list are written together, so one tells both.
pub(super) async fn all_revoked(store: &Store, sids: &[&str]) -> bool {
    for sid in sids {
        if !matches!(store.get_session(sid).await, Ok(Some(s)) if s.revoked) {
            return false;
        }
    }
    true
}
