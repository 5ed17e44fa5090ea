//! `GET /sessions`: the caller's live sessions, newest first: when and how
//! each began, the client it began on, when it was last used, and which one
//! is the caller's. `DELETE /sessions/{id}`: ends one of them (its refresh
//! family and its access tokens, at once), as a logout of that session
//! would. Served by the logout function; bearer token only, no cookie.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use super::logout::{Logout, all_revoked};
use super::{authenticate_caller, no_longer_valid};
use crate::http::{ApiError, json_response};
use crate::metrics::{self, Event};
use crate::sessions::Session;
use crate::store::StoreError;

/// The collection's path; one session is `/sessions/{id}`.
pub const SESSIONS_PATH: &str = "/sessions";

#[derive(Serialize)]
struct Listed {
    sessions: Vec<Shown>,
    /// More sessions are live than the list shows (`MAX_LISTED_SESSIONS`).
    truncated: bool,
}

/// One session as its owner sees it. Times are seconds since the epoch.
#[derive(Serialize)]
struct Shown {
    id: String,
    /// The session of the token that asked.
    current: bool,
    /// How it began: `password` (a login) or `password_change`.
    method: &'static str,
    created_at: i64,
    /// Its latest token issued: login, refresh or re-authentication.
    last_used_at: i64,
    /// When it ends unless refreshed again (its newest refresh token's expiry).
    expires_at: i64,
    /// The `User-Agent` of the client it began on, if it sent one.
    user_agent: Option<String>,
    /// The address it began from, as the API's front door saw it.
    ip: Option<String>,
    /// Whether that client proved an earlier sign-in (a device proof).
    known_device: bool,
}

impl Shown {
    fn of(session: Session, current_sid: &str) -> Self {
        Shown {
            current: session.id == current_sid,
            method: session.origin.method.as_str(),
            created_at: session.created_at,
            last_used_at: session.last_used,
            expires_at: session.expires_at,
            user_agent: session.origin.user_agent,
            ip: session.origin.ip,
            known_device: session.origin.known_device,
            id: session.id,
        }
    }
}

#[derive(Serialize)]
struct Ended {
    message: &'static str,
    ended: &'static str,
}

/// What a sessions path asks for: the list, or one session by id.
enum Target<'a> {
    List,
    One(&'a str),
}

/// 404 for a path that names nothing of ours, 405 for a method the resource
/// does not take (both before the bearer check, as on every route).
fn route<'a>(path: &'a str, method: &Method) -> Result<Target<'a>, ApiError> {
    let rest = path
        .trim_end_matches('/')
        .strip_prefix(SESSIONS_PATH)
        .ok_or(ApiError::NotFound)?;
    match rest.strip_prefix('/') {
        None if rest.is_empty() => match *method {
            Method::GET => Ok(Target::List),
            _ => Err(ApiError::MethodNotAllowed {
                method: method.clone(),
                allow: "GET",
            }),
        },
        Some(id) if !id.is_empty() && !id.contains('/') => match *method {
            Method::DELETE => Ok(Target::One(id)),
            _ => Err(ApiError::MethodNotAllowed {
                method: method.clone(),
                allow: "DELETE",
            }),
        },
        _ => Err(ApiError::NotFound),
    }
}

pub async fn handle(state: &Logout, req: Request) -> Response<Body> {
    sessions(state, &req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn sessions(state: &Logout, req: &Request) -> Result<Response<Body>, ApiError> {
    let target = route(req.uri().path(), req.method())?;
    let now = state.clock.now();
    let caller = authenticate_caller(req, &state.tokens, &state.store, now).await?;
    match target {
        Target::List => {
            let (sessions, truncated) = state.store.list_sessions(&caller.user, now).await?;
            let sid = caller.claims.sid.as_str();
            let sessions = sessions.into_iter().map(|s| Shown::of(s, sid)).collect();
            Ok(json_response(
                StatusCode::OK,
                &Listed {
                    sessions,
                    truncated,
                },
            ))
        }
        Target::One(id) => end(state, &caller, id, now).await,
    }
}

/// Ends session `id` of the caller. Another user's session and one that
/// does not exist are alike: 404. One that has ended already: 200 (a client
/// retrying a request whose answer it lost meets its own success).
async fn end(
    state: &Logout,
    caller: &super::Authenticated,
    id: &str,
    now: i64,
) -> Result<Response<Body>, ApiError> {
    // Ours are UUIDs as they are written (hyphenated, lower case): anything
    // else is no session, and never reaches the store.
    if !uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == id) {
        return Err(ApiError::NotFound);
    }
    let session = state
        .store
        .get_session(id)
        .await?
        .filter(|s| s.user_id == caller.user.id)
        .ok_or(ApiError::NotFound)?;
    if session.is_live(&caller.user, now) {
        let access_until = state.tokens.revoked_until(now);
        let revoked = state
            .store
            .revoke_sessions(&[id], &caller.user, access_until, now)
            .await;
        // Reported failed, but done if the session is marked (its answer lost).
        if let Err(e) = revoked
            && !all_revoked(&state.store, &[id]).await
        {
            return Err(match e {
                StoreError::Conflict => no_longer_valid(),
                e => e.into(),
            });
        }
        tracing::info!(user_id = %caller.user.id, own = session.id == caller.claims.sid, "session ended");
        metrics::count(Event::Logout);
    }
    Ok(json_response(
        StatusCode::OK,
        &Ended {
            message: "Session ended",
            ended: "session",
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sessions_path_names_the_list_or_one_session() {
        assert!(matches!(route("/sessions", &Method::GET), Ok(Target::List)));
        assert!(matches!(
            route("/sessions/", &Method::GET),
            Ok(Target::List)
        ));
        assert!(matches!(
            route("/sessions/abc", &Method::DELETE),
            Ok(Target::One("abc"))
        ));
        let status = |path: &str, method: Method| match route(path, &method) {
            Ok(_) => 200,
            Err(e) => e.status().as_u16(),
        };
        assert_eq!(status("/sessions", Method::DELETE), 405);
        assert_eq!(status("/sessions/abc", Method::GET), 405);
        assert_eq!(status("/sessions/abc/def", Method::DELETE), 404);
        assert_eq!(status("/sessionsx", Method::GET), 404);
        assert_eq!(status("/logout", Method::GET), 404);
    }
}
