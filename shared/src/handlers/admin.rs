//! The admin API: for callers who hold the `admin` role and proved their
//! password within `FRESH_AUTH_MAX_AGE_SECONDS`, and their second factor in
//! the same session unless `SECOND_FACTOR_ROLES` leaves `admin` out (else
//! RFC 9470's challenge, `acr_values="aal2"`). The collection:
//!
//! - `GET    /admin/users?id={user id}`: find a user by the id the logs name
//!   (one query of a keys-only index: no scan);
//! - `POST   /admin/users` `{"username", "password", "name"}`: create a user
//!   (as registration does; the way in when sign-up is closed);
//!
//! and one resource per user, by username:
//!
//! - `GET    /admin/users/{username}`: look the user up (never the hash);
//! - `PATCH  /admin/users/{username}` `{"active": false}`: deactivate (every
//!   session ends) or activate;
//! - `DELETE /admin/users/{username}`: delete (as the owner's own deletion does);
//! - `PUT | DELETE /admin/users/{username}/roles/{role}`: grant, revoke;
//! - `DELETE /admin/users/{username}/lock`: unlock (forget failed logins);
//! - `DELETE /admin/users/{username}/sessions`: end every session;
//! - `DELETE /admin/users/{username}/second-factor`: remove the second
//!   factor (every session ends, the owner is told), for a person who lost
//!   the device and the recovery codes and proved who they are some other
//!   way (docs/operations.md). Never one's own: that is a code's to do;
//! - `PUT    /admin/users/{username}/password` `{"new_password"}`: set a new
//!   password (the policy's checks; every session and device proof ends,
//!   a lockout too), for a person who lost theirs and proved who they are
//!   some other way (docs/operations.md). Never an admin's: that would make
//!   one admin's stolen session every admin's (`auth-admin` can).
//!
//! Every act of an authenticated caller, done or refused, writes one audit
//! line (actor id, target id, action, outcome) and counts in `AdminActions`.
//! No admin can remove their own `admin` role, deactivate, delete or set the
//! password of themselves (`POST /password` proves the current one);
//! `auth-admin` is the break-glass when admins demote each other.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::{Authenticated, authenticate_caller};
use crate::clock::Clock;
use crate::http::{ApiError, json_body, json_response};
use crate::metrics::{self, Event};
use crate::passwords::{PasswordHasher, check_new_password};
use crate::permissions::{PermissionConfig, Role};
use crate::store::{DeletedBy, RoleGrant, Store, StoreError};
use crate::tokens::TokenVerifier;
use crate::users::{User, UserId, Username};

pub const USERS_PATH: &str = "/admin/users";

/// What the admin function holds between invocations.
pub struct Admin {
    pub store: Store,
    pub verifier: TokenVerifier,
    pub permissions: PermissionConfig,
    /// For a new user's password and a password set: one bcrypt each.
    pub passwords: PasswordHasher,
    pub clock: Clock,
}

/// One act on one user: its role as the path names it (`&str`), then, once
/// the caller is known to be an admin, checked (`Role`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action<R> {
    Lookup,
    FindById,
    Create,
    SetActive,
    Delete,
    Grant(R),
    Revoke(R),
    Unlock,
    RemoveSecondFactor,
    EndSessions,
    SetPassword,
}

impl Action<&str> {
    /// The same act with its role checked: only a role this deployment knows
    /// can be granted; any well-formed one can be revoked.
    fn checked(&self, permissions: &PermissionConfig) -> Result<Action<Role>, ApiError> {
        let bad = |e: String| ApiError::BadRequest(e);
        Ok(match *self {
            Action::Grant(raw) => Action::Grant(permissions.known_role(raw).map_err(bad)?),
            Action::Revoke(raw) => {
                Action::Revoke(Role::parse(raw).map_err(|e| bad(e.to_string()))?)
            }
            Action::Lookup => Action::Lookup,
            Action::FindById => Action::FindById,
            Action::Create => Action::Create,
            Action::SetPassword => Action::SetPassword,
            Action::SetActive => Action::SetActive,
            Action::Delete => Action::Delete,
            Action::Unlock => Action::Unlock,
            Action::RemoveSecondFactor => Action::RemoveSecondFactor,
            Action::EndSessions => Action::EndSessions,
        })
    }
}

impl<R> Action<R> {
    /// The audit line's and the metric's name for it.
    fn name(&self) -> &'static str {
        match self {
            Action::Lookup | Action::FindById => "lookup_user",
            Action::Create => "create_user",
            Action::SetPassword => "set_password",
            Action::SetActive => "set_active",
            Action::Delete => "delete_user",
            Action::Grant(_) => "grant_role",
            Action::Revoke(_) => "revoke_role",
            Action::Unlock => "unlock_user",
            Action::RemoveSecondFactor => "remove_second_factor",
            Action::EndSessions => "end_sessions",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    active: bool,
}

/// `POST /admin/users`: registration's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    name: String,
    /// An address to verify (a verification goes to it).
    #[serde(default, deserialize_with = "crate::http::not_null")]
    email: Option<String>,
}

/// `PUT /admin/users/{username}/password`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    new_password: String,
}

/// A user as the admin API shows them: never the hash or the sessions.
#[derive(Serialize)]
struct UserView {
    id: String,
    username: String,
    name: String,
    active: bool,
    roles: Vec<String>,
    created_at: i64,
    /// The verified address, or null; and one given but not yet verified.
    email: Option<String>,
    email_verified: bool,
    email_pending: Option<String>,
    /// Whether the account has a password (one made through an identity
    /// provider has none until its owner sets one).
    has_password: bool,
    /// The outside identities that sign in as the user.
    identities: Vec<IdentityView>,
    /// Whether a second factor guards the user's sign-ins.
    second_factor: bool,
    /// How many passkeys the user holds (each signs in alone, and is a
    /// second factor).
    passkeys: usize,
    /// Absent only in a creation's answer whose read of it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    locked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locked_until: Option<i64>,
}

/// An outside identity, as the admin API shows it: the provider (its
/// issuer) and who the provider says the person is there.
#[derive(Serialize)]
struct IdentityView {
    issuer: String,
    subject: String,
}

impl UserView {
    /// `user` as shown, with the lock state of their username when known
    /// (`locked_for`: `Some(None)`, not locked).
    fn of(user: User, locked_for: Option<Option<u64>>, now: i64) -> Self {
        let has_password = user.has_password();
        UserView {
            id: user.id.to_string(),
            username: user.username.to_string(),
            name: user.name,
            active: user.active,
            roles: user.roles.iter().map(Role::to_string).collect(),
            created_at: user.created_at,
            email_verified: user.email.is_some(),
            email: user.email.map(|e| e.to_string()),
            email_pending: user.email_pending.map(|e| e.to_string()),
            has_password,
            identities: user
                .identities
                .into_iter()
                .map(|id| IdentityView {
                    issuer: id.issuer,
                    subject: id.subject,
                })
                .collect(),
            second_factor: user.second_factor,
            passkeys: user.passkeys.len(),
            locked: locked_for.map(|l| l.is_some()),
            locked_until: locked_for.flatten().map(|s| now + s as i64),
        }
    }
}

#[derive(Serialize)]
struct Answer {
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserView>,
}

pub async fn handle(state: &Admin, req: Request) -> Response<Body> {
    admin(state, req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn admin(state: &Admin, req: Request) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let (name, action) = route(&path, req.method())?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let mut audit = Audit::default();
    let result = act(state, &req, &caller, name, &action, &mut audit, now).await;
    let outcome = match &result {
        Ok(_) => "done",
        // The write reported a failure and its read-back failed too: the
        // change may be live. Never "failed" about what may have happened.
        Err(_) if audit.unconfirmed => "unconfirmed",
        Err(e) => e.code(),
    };
    let target_id = audit
        .target_id
        .map_or_else(|| "none".to_owned(), |id| id.to_string());
    tracing::info!(
        audit = "admin",
        actor_id = %caller.user.id,
        target_id = %target_id,
        action = action.name(),
        detail = audit.detail,
        outcome,
        "admin act"
    );
    metrics::admin_action(action.name(), outcome);
    result
}

/// What the audit line says of an act beyond its name and outcome: whom it
/// was on (the id, once the user is found; like every log line of ours, it
/// names no username) and what exactly (the role granted or revoked, the
/// activity set).
#[derive(Default)]
struct Audit {
    target_id: Option<UserId>,
    detail: String,
    /// The act's write reported a failure and reading back whether it
    /// happened all the same failed too.
    unconfirmed: bool,
}

/// The username (none for the collection) and the act a request names: 404
/// for a path that names none, 405 for a method the resource does not take
/// (before the bearer check, as on every route). The username and the role
/// are checked after it, so a request without a token gets its 401 first.
fn route<'a>(
    path: &'a str,
    method: &Method,
) -> Result<(Option<&'a str>, Action<&'a str>), ApiError> {
    let rest = path
        .trim_end_matches('/')
        .strip_prefix(USERS_PATH)
        .ok_or(ApiError::NotFound)?;
    let not_allowed = |allow: &'static str| ApiError::MethodNotAllowed {
        method: method.clone(),
        allow,
    };
    if rest.is_empty() {
        return match *method {
            Method::GET => Ok((None, Action::FindById)),
            Method::POST => Ok((None, Action::Create)),
            _ => Err(not_allowed("GET, POST")),
        };
    }
    let rest = rest.strip_prefix('/').ok_or(ApiError::NotFound)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let action = match segments[1..] {
        [] => match *method {
            Method::GET => Action::Lookup,
            Method::PATCH => Action::SetActive,
            Method::DELETE => Action::Delete,
            _ => return Err(not_allowed("GET, PATCH, DELETE")),
        },
        ["roles", role] => match *method {
            Method::PUT => Action::Grant(role),
            Method::DELETE => Action::Revoke(role),
            _ => return Err(not_allowed("PUT, DELETE")),
        },
        ["lock"] if method == Method::DELETE => Action::Unlock,
        ["sessions"] if method == Method::DELETE => Action::EndSessions,
        ["lock"] | ["sessions"] => return Err(not_allowed("DELETE")),
        ["second-factor"] if method == Method::DELETE => Action::RemoveSecondFactor,
        ["second-factor"] => return Err(not_allowed("DELETE")),
        ["password"] if method == Method::PUT => Action::SetPassword,
        ["password"] => return Err(not_allowed("PUT")),
        _ => return Err(ApiError::NotFound),
    };
    Ok((Some(segments[0]), action))
}

/// Whom an act is on: the username in the path, or the id in the query.
enum Subject {
    Name(Username),
    Id(UserId),
}

/// The user id of `GET /admin/users?id=…`: the query's one parameter.
fn id_in_query(req: &Request) -> Result<UserId, ApiError> {
    let bad = || {
        ApiError::BadRequest(
            "find a user with ?id=<user id> (a UUID, as the logs name users); or name them: /admin/users/{username}".into(),
        )
    };
    let raw = req.uri().query().unwrap_or_default();
    let id = raw
        .strip_prefix("id=")
        .filter(|v| !v.contains('&'))
        .ok_or_else(bad)?;
    UserId::parse(id).ok_or_else(bad)
}

async fn act(
    state: &Admin,
    req: &Request,
    caller: &Authenticated,
    name: Option<&str>,
    action: &Action<&str>,
    audit: &mut Audit,
    now: i64,
) -> Result<Response<Body>, ApiError> {
    caller.require_role_freshly(
        &Role::admin(),
        &state.permissions.second_factor_roles,
        state.permissions.fresh_auth_max_age,
        now,
    )?;
    // The user named (or the id asked for) and the act are checked before
    // the body, and all of it before the user is read.
    let subject = match name {
        Some(name) => {
            Subject::Name(Username::parse(name).map_err(|e| ApiError::BadRequest(e.to_string()))?)
        }
        None if *action == Action::Create => return create(state, req, audit, now).await,
        None => Subject::Id(id_in_query(req)?),
    };
    let action = match action.checked(&state.permissions)? {
        Action::FindById => Action::Lookup,
        checked => checked,
    };
    let change: Option<UserChange> = match action {
        Action::SetActive => Some(json_body(req)?),
        _ => None,
    };
    let new_password = match action {
        Action::SetPassword => Some(json_body::<NewPassword>(req)?.new_password),
        _ => None,
    };
    audit.detail = match (&action, &change) {
        (Action::Grant(role) | Action::Revoke(role), _) => format!("role={role}"),
        (_, Some(change)) => format!("active={}", change.active),
        _ => String::new(),
    };
    let store = &state.store;
    let found = match &subject {
        Subject::Name(username) => store.get(username).await?,
        Subject::Id(id) => store.get_by_id(*id).await?,
    };
    let target = found.ok_or(ApiError::UserNotFound)?;
    let username = &target.username.clone();
    audit.target_id = Some(target.id);
    let myself = target.id == caller.user.id;
    let gone = |done: bool| {
        if done {
            Ok(())
        } else {
            Err(ApiError::UserNotFound)
        }
    };
    let active = change.is_some_and(|c| c.active);
    // A write reported failed may have happened (its answer lost): read
    // back, as every writer does.
    let confirm = async |err: StoreError, audit: &mut Audit| {
        confirm(store, &target, &action, active, None, err, audit).await
    };
    let message = match &action {
        Action::Lookup => "User found",
        // Turned into a lookup, and answered by `create`, above.
        Action::FindById | Action::Create => return Err(ApiError::Internal),
        Action::SetPassword => {
            if myself {
                return Err(self_protection());
            }
            // One admin's stolen session must not become every admin's: an
            // admin's password is set only with the table's own credentials.
            if target.roles.contains(&Role::admin()) {
                return Err(ApiError::Forbidden(
                    "an admin's password is not set through the admin API; auth-admin set-password can, with AWS credentials for the table",
                ));
            }
            let Some(password) = new_password else {
                return Err(ApiError::Internal);
            };
            check_new_password(&password, username)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let hash = super::hash_new_password(&state.passwords, password).await?;
            match store.set_password(&target, &hash, now).await {
                Ok(()) => {}
                // The user read is gone, or the name someone else's now.
                Err(StoreError::Conflict) => return Err(ApiError::UserNotFound),
                Err(e) => {
                    self::confirm(store, &target, &action, false, Some(&hash), e, audit).await?
                }
            }
            "Password set; every session ended"
        }
        Action::SetActive => {
            if myself && !active {
                return Err(self_protection());
            }
            let done = match store.set_active(&target, active).await {
                Ok(done) => done,
                Err(e) => confirm(e, audit).await.map(|()| true)?,
            };
            gone(done)?;
            if active {
                "User activated"
            } else {
                "User deactivated; every session ended"
            }
        }
        Action::Delete => {
            if myself {
                return Err(self_protection());
            }
            // A lost condition means the user read is gone (deleted, or the
            // name registered anew): by this act, its first attempt's answer
            // lost, or by another a moment before. Either way, done.
            match store.delete_user(&target, DeletedBy::Operator).await {
                Ok(()) | Err(StoreError::Conflict) => {}
                Err(e) => confirm(e, audit).await?,
            }
            metrics::count(Event::AccountDeleted);
            return Ok(json_response(
                StatusCode::OK,
                &Answer {
                    message: "User deleted",
                    user: None,
                },
            ));
        }
        Action::Grant(role) => {
            let grant = match store.grant_role(&target, role).await {
                Ok(grant) => grant,
                Err(e) => confirm(e, audit).await.map(|()| RoleGrant::Granted)?,
            };
            match grant {
                RoleGrant::Granted => "Role granted",
                RoleGrant::TooManyRoles => return Err(ApiError::Conflict(TOO_MANY_ROLES)),
                RoleGrant::Gone => return Err(ApiError::UserNotFound),
            }
        }
        Action::Revoke(role) => {
            if myself && *role == Role::admin() {
                return Err(self_protection());
            }
            let done = match store.revoke_role(&target, role).await {
                Ok(done) => done,
                Err(e) => confirm(e, audit).await.map(|()| true)?,
            };
            gone(done)?;
            "Role revoked"
        }
        Action::Unlock => {
            if let Err(e) = store.clear_failures(username).await {
                confirm(e, audit).await?;
            }
            "User unlocked"
        }
        Action::RemoveSecondFactor => {
            // One's own goes with a code (`DELETE /account/second-factor`):
            // an admin's stolen session must not strip its own account.
            if myself {
                return Err(self_protection());
            }
            // The code factor, and the passkeys: whatever the person lost.
            if !target.has_second_factor() {
                return Err(ApiError::Conflict("the user has no second factor"));
            }
            let done = match store.remove_factor_by_operator(&target, now).await {
                Ok(done) => done,
                Err(e) => confirm(e, audit).await.map(|()| true)?,
            };
            gone(done)?;
            "Second factor removed; every session ended"
        }
        Action::EndSessions => {
            let done = match store.end_all_sessions(&target).await {
                Ok(done) => done,
                Err(e) => confirm(e, audit).await.map(|()| true)?,
            };
            gone(done)?;
            "Every session of the user ended"
        }
    };
    // The act is done: a failure to read the user back afterwards (throttled,
    // or deleted a moment later) leaves the answer without the user, not
    // turned into an error.
    let lookup = action == Action::Lookup;
    let user = match view(store, username, target.id, now, lookup.then_some(target)).await {
        Ok(user) => Some(user),
        Err(e) if lookup => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "admin act done; the user could not be read back");
            None
        }
    };
    Ok(json_response(StatusCode::OK, &Answer { message, user }))
}

/// `POST /admin/users`: a new user, as registration makes one (the same
/// checks and write; no per-IP window: the caller is an admin), whatever
/// `SIGN_UP` says. The audit line names the new id.
async fn create(
    state: &Admin,
    req: &Request,
    audit: &mut Audit,
    now: i64,
) -> Result<Response<Body>, ApiError> {
    let new: NewUser = json_body(req)?;
    let user = super::register::new_user(
        &state.store,
        &state.passwords,
        &new.username,
        &new.name,
        new.email.as_deref(),
        new.password,
    )
    .await?;
    audit.target_id = Some(user.id);
    // Failed logins counted against the name before it was taken may lock
    // it: say so. The user is created whether or not that read works.
    let locked_for = match state.store.failures(&user.username).await {
        Ok(failures) => Some(failures.and_then(|f| f.locked_for(now))),
        Err(e) => {
            tracing::warn!(error = %e, "user created; its lock state could not be read");
            None
        }
    };
    Ok(json_response(
        StatusCode::CREATED,
        &Answer {
            message: "User created",
            user: Some(UserView::of(user, locked_for, now)),
        },
    ))
}

/// After `action`'s write on `target` (as read; `active` the activity set,
/// `new_hash` the hash set) reported `err`: whether it
/// happened all the same, its answer lost (a timeout, a dropped connection,
/// the SDK's retry then refused or lost too). Read back: live, `Ok`; not,
/// `err`; the read failing too, `err` with the audit saying `unconfirmed`.
/// Only an outage can hide a write: any other error is the error.
async fn confirm(
    store: &Store,
    target: &User,
    action: &Action<Role>,
    active: bool,
    new_hash: Option<&str>,
    err: StoreError,
    audit: &mut Audit,
) -> Result<(), ApiError> {
    if !matches!(err, StoreError::Unavailable(_)) {
        return Err(err.into());
    }
    let live = match action {
        Action::Unlock => store.failures(&target.username).await.map(|f| f.is_none()),
        _ => store.get(&target.username).await.map(|now| {
            let same = now.as_ref().filter(|u| u.id == target.id);
            let ended = |u: &User| u.session_epoch > target.session_epoch;
            match action {
                Action::Delete => same.is_none(),
                Action::SetActive => {
                    same.is_some_and(|u| u.active == active && (active || ended(u)))
                }
                Action::Grant(role) => same.is_some_and(|u| u.roles.contains(role)),
                Action::Revoke(role) => same.is_some_and(|u| !u.roles.contains(role)),
                Action::EndSessions => same.is_some_and(ended),
                Action::RemoveSecondFactor => {
                    same.is_some_and(|u| !u.has_second_factor() && ended(u))
                }
                Action::SetPassword => {
                    same.is_some_and(|u| Some(u.password_hash.as_str()) == new_hash && ended(u))
                }
                Action::Lookup | Action::FindById | Action::Create | Action::Unlock => false,
            }
        }),
    };
    match live {
        Ok(true) => {
            tracing::info!(error = %err, "admin act reported failed, but read back as done");
            Ok(())
        }
        Ok(false) => Err(err.into()),
        Err(read) => {
            tracing::warn!(error = %err, read_back = %read, "admin act unconfirmed: its write and its read-back failed");
            audit.unconfirmed = true;
            Err(err.into())
        }
    }
}

/// Names `MAX_ROLES` (a test checks that it does).
const TOO_MANY_ROLES: &str =
    "the user holds the most roles one user may hold (10); revoke one first";

fn self_protection() -> ApiError {
    ApiError::Forbidden(
        "admins cannot remove their own admin role or second factor, deactivate, delete or set the password of themselves; another admin, or auth-admin, can (POST /password changes one's own)",
    )
}

/// The user as stored now (`read`, or read again after an act), with the
/// lock state of their username.
async fn view(
    store: &Store,
    username: &Username,
    id: UserId,
    now: i64,
    read: Option<User>,
) -> Result<UserView, ApiError> {
    let (user, failures) = match read {
        Some(user) => (Some(user), store.failures(username).await?),
        None => tokio::try_join!(store.get(username), store.failures(username))?,
    };
    let user: User = user.filter(|u| u.id == id).ok_or(ApiError::UserNotFound)?;
    let locked_for = failures.and_then(|f| f.locked_for(now));
    Ok(UserView::of(user, Some(locked_for), now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::MAX_ROLES;

    #[test]
    fn the_too_many_roles_message_names_the_cap() {
        assert!(TOO_MANY_ROLES.contains(&format!("({MAX_ROLES})")));
    }
}
