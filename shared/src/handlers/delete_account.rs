//! `DELETE /account`: users delete their own account with their access token
//! and current password. The user item and the username's attempt record go
//! in one transaction: every session ends at once (tokens are checked against
//! the item, and whoever registers the name next has another id), and the
//! name is free again. Session and refresh items stay until their TTL, dead.
//! An admin's account cannot be deleted this way while it holds the role (no
//! admin locks themselves out): another admin, or `auth-admin`, revokes it.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::account::{Account, prove_current_password};
use super::authenticate_caller;
use crate::browser::{clear_refresh_cookie, refresh_cookie};
use crate::http::{ApiError, json_body, json_response, require_method};
use crate::metrics::{self, Event};
use crate::permissions::Role;
use crate::store::{DeletedBy, StoreError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deletion {
    /// Required of an account with a password. One without (made through
    /// an identity provider) proves itself by a recent sign-in there
    /// instead: its session's `auth_time`, within `FRESH_AUTH_MAX_AGE_SECONDS`.
    #[serde(default, deserialize_with = "crate::http::not_null")]
    password: Option<String>,
    /// An API client's device proof (a browser's is its device cookie).
    #[serde(default)]
    device: Option<String>,
}

#[derive(Serialize)]
struct Deleted {
    message: &'static str,
}

pub async fn delete_account(state: &Account, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::DELETE, "DELETE")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let deletion: Deletion = json_body(&req)?;
    let had_cookie = refresh_cookie(&req)?.is_some();
    let fresh = caller.require_fresh(state.fresh_auth, now);
    if caller.user.roles.contains(&Role::admin()) {
        return Err(ApiError::Forbidden(
            "an admin's account cannot be deleted while it holds the admin role; another admin, or auth-admin, can revoke it first",
        ));
    }
    // An account with a second factor: a proof of it within a fresh login
    // too (before the password's, which counts an attempt).
    if caller.user.has_second_factor() {
        caller.require_second_factor(state.fresh_auth, now)?;
    }
    let (user, sid) = (caller.user, caller.claims.sid);
    match deletion.password {
        Some(password) if user.has_password() && !password.is_empty() => {
            prove_current_password(state, &req, &user, password, deletion.device, now).await?;
        }
        _ if user.has_password() => {
            return Err(ApiError::BadRequest("password must not be empty".into()));
        }
        // No password to prove: a sign-in at the provider, just now.
        _ => fresh?,
    }

    // Only while the account and the session are as just proved: a
    // concurrent password change, deactivation or logout wins.
    let deleted = state
        .store
        .delete_user(&user, DeletedBy::Owner { sid: &sid })
        .await;
    if let Err(e) = deleted {
        deletion_failed(state, &req, &user, e, now).await?;
    }
    tracing::info!(user_id = %user.id, "account deleted");
    metrics::count(Event::AccountDeleted);
    let mut response = json_response(
        StatusCode::OK,
        &Deleted {
            message: "Account deleted",
        },
    );
    if had_cookie {
        clear_refresh_cookie(&mut response);
    }
    Ok(response)
}

/// A deletion reported as failed is a success if the account is gone all the
/// same (its answer lost, or deleted by an admin a moment before). Otherwise
/// the caller's token still standing means a harmless race (a rehash, a
/// failed login's count: 409, try again), and not standing says why (401).
async fn deletion_failed(
    state: &Account,
    req: &Request,
    user: &crate::users::User,
    err: StoreError,
    now: i64,
) -> Result<(), ApiError> {
    match state.store.get(&user.username).await {
        Ok(Some(stored)) if stored.id == user.id => Err(match err {
            StoreError::Conflict => {
                match authenticate_caller(req, &state.verifier, &state.store, now).await {
                    Ok(_) => ApiError::Conflict("the account changed meanwhile; try again"),
                    Err(e) => e,
                }
            }
            e => e.into(),
        }),
        Ok(_) => Ok(()),
        Err(_) => Err(err.into()),
    }
}
