//! Request handlers, one module per function. Each takes its state and a request
//! and always returns a response: errors become our JSON error shape here.
//! What several handlers share (checking a bearer token against the user item,
//! starting a session) lives below.

pub mod account;
pub mod admin;
pub mod change_password;
pub mod delete_account;
pub mod discovery;
pub mod email;
pub mod federation;
pub mod get_name;
pub mod login;
pub mod logout;
pub mod mail;
pub mod page;
pub mod passkeys;
pub mod reauthenticate;
pub mod recovery;
pub mod refresh;
pub mod register;
pub mod second_factor;
pub mod sessions;

use std::time::Duration;

use lambda_http::Request;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Serialize;

use crate::browser::{Delivery, clear_refresh_cookie, set_device_cookie, set_refresh_cookie};
use crate::devices::{Device, DeviceProof};
use crate::http::{ApiError, bearer_token, json_response, source_ip};
use crate::keys::SignError;
use crate::metrics::{self, Event};
use crate::passwords::PasswordError;
use crate::passwords::PasswordHasher;
use crate::permissions::{Role, scope_grants};
use crate::sessions::{
    Origin, RefreshRecord, RefreshState, RefreshToken, Session, SessionConfig, SignIn,
    clean_user_agent,
};
use crate::store::{Reservation, Store};
use crate::throttle::Window;
use crate::tokens::{Claims, TokenIssuer, TokenVerifier};
use crate::users::{User, Username};

/// A request whose bearer token checks out against the current user item.
pub(crate) struct Authenticated {
    pub claims: Claims,
    pub user: User,
}

impl Authenticated {
    /// The one way a handler requires a role: the user holds it now (the item
    /// just read, so a revocation bites at once) and the token carries its
    /// scope (as API Gateway's JWT authorizer would require). Else 403
    /// `insufficient_scope`.
    pub fn require_role(&self, role: &Role) -> Result<(), ApiError> {
        if self.user.roles.contains(role) && scope_grants(self.claims.scope.as_deref(), role) {
            Ok(())
        } else {
            Err(ApiError::InsufficientScope(role.clone()))
        }
    }

    /// For sensitive acts: the password was proved in this session at most
    /// `max_age` ago (at `now`). Else 401 `insufficient_user_authentication`
    /// with the `max_age` to meet (RFC 9470): re-authenticate, then retry.
    pub fn require_fresh(&self, max_age: Duration, now: i64) -> Result<(), ApiError> {
        if now - self.claims.auth_time <= max_age.as_secs() as i64 {
            Ok(())
        } else {
            Err(ApiError::StaleAuthentication {
                max_age: max_age.as_secs(),
            })
        }
    }
}

impl Authenticated {
    /// For acts that need the second factor: the account has one, and the
    /// session's latest proof (`auth_time`, `acr`: RFC 9470) was one with it
    /// (`aal2`), at most `max_age` ago. Else 401
    /// `insufficient_user_authentication` naming `acr_values="aal2"` and the
    /// `max_age`: verify a code (or first add a factor), then retry.
    pub fn require_second_factor(&self, max_age: Duration, now: i64) -> Result<(), ApiError> {
        // Our own factor: a trusted provider's word (`mfa`) is not it.
        let second = self.claims.acr.as_deref() == Some(crate::sessions::amr::ACR_SECOND_FACTOR)
            && crate::sessions::amr::second_factor_held(&self.claims.amr, &self.user);
        if second && now - self.claims.auth_time <= max_age.as_secs() as i64 {
            Ok(())
        } else {
            Err(ApiError::SecondFactorRequired {
                max_age: max_age.as_secs(),
                enrolled: self.user.has_second_factor(),
            })
        }
    }

    /// `require_role` and `require_fresh` for a role that may need a second
    /// factor (`guarded`, `SECOND_FACTOR_ROLES`): a holder of such a role
    /// whose session has not proved one (its token then lacks the scope for
    /// that reason alone) gets RFC 9470's challenge rather than a 403.
    pub fn require_role_freshly(
        &self,
        role: &Role,
        guarded: &std::collections::BTreeSet<Role>,
        max_age: Duration,
        now: i64,
    ) -> Result<(), ApiError> {
        if guarded.contains(role) && self.user.roles.contains(role) {
            self.require_second_factor(max_age, now)?;
        }
        self.require_role(role)?;
        self.require_fresh(max_age, now)
    }
}

/// Verifies the bearer token, then reads its user (one read) and checks that the
/// token still stands: same user id (not a re-registered username), active, the
/// session neither logged out nor ended by an epoch bump. A missing user is
/// `UserNotFound`; every other failure is 401 `invalid_token`.
pub(crate) async fn authenticate(
    req: &Request,
    verifier: &TokenVerifier,
    store: &Store,
    now: i64,
) -> Result<Authenticated, ApiError> {
    let claims = verifier.verify(bearer_token(req)?).await?;
    let username = Username::parse(&claims.username).map_err(|_| no_longer_valid())?;
    let user = store.get(&username).await?.ok_or(ApiError::UserNotFound)?;
    if user.id.to_string() != claims.sub
        || !user.active
        || !user.session_is_live(&claims.sid, claims.sep, now)
    {
        return Err(no_longer_valid());
    }
    crate::runtime::record_user(&user.id);
    Ok(Authenticated { claims, user })
}

/// `authenticate` for routes that act on the caller's account: a user who is
/// gone is just a token that is no longer valid.
pub(crate) async fn authenticate_caller(
    req: &Request,
    verifier: &TokenVerifier,
    store: &Store,
    now: i64,
) -> Result<Authenticated, ApiError> {
    authenticate(req, verifier, store, now)
        .await
        .map_err(|e| match e {
            ApiError::UserNotFound => no_longer_valid(),
            e => e,
        })
}

pub(crate) fn no_longer_valid() -> ApiError {
    ApiError::InvalidToken("the access token is no longer valid".into())
}

/// A new access token and refresh token, as every token-issuing route answers.
#[derive(Serialize)]
pub(crate) struct TokenPair {
    pub message: &'static str,
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    /// Left out when it goes in the refresh cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub refresh_expires_in: u64,
    /// A sign-in's new device proof (`devices`); left out when it goes in
    /// the device cookie, and from a refresh's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_expires_in: Option<u64>,
}

impl TokenPair {
    /// The answer, with the refresh token in the body or in the cookie, and
    /// the device proof (if any) in the body or in the device cookie.
    pub fn into_response(
        mut self,
        delivery: Delivery,
        device_delivery: Delivery,
    ) -> Response<Body> {
        let refresh = match delivery {
            Delivery::Cookie => self.refresh_token.take(),
            Delivery::Body => None,
        };
        let device = match device_delivery {
            Delivery::Cookie => self.device.take().zip(self.device_expires_in.take()),
            Delivery::Body => None,
        };
        let mut response = json_response(StatusCode::OK, &self);
        if let Some(token) = refresh {
            set_refresh_cookie(&mut response, &token, self.refresh_expires_in);
        }
        if let Some((proof, max_age)) = device {
            set_device_cookie(&mut response, &proof, max_age);
        }
        response
    }
}

/// An error answer; an `invalid_grant` for a cookie request also clears the
/// cookie (that token will never work again). A superseded token's answer
/// leaves it alone: the winner of the race has set its successor already.
pub(crate) fn cookie_error(err: ApiError, delivery: Delivery) -> Response<Body> {
    let clear = delivery == Delivery::Cookie && matches!(err, ApiError::InvalidGrant);
    let mut response = err.into_response();
    if clear {
        clear_refresh_cookie(&mut response);
    }
    response
}

pub(crate) async fn sign_access_token(
    issuer: &TokenIssuer,
    user: &User,
    sid: &str,
    auth_time: i64,
    amr: &[String],
    now: i64,
) -> Result<crate::tokens::IssuedToken, ApiError> {
    issuer
        .issue(user, sid, auth_time, amr, now)
        .await
        .map_err(|e| match e {
            SignError::Unavailable(detail) => {
                tracing::warn!(%detail, "signing service unavailable");
                ApiError::Unavailable
            }
            SignError::Failed(detail) => {
                tracing::error!(%detail, "token signing failed");
                ApiError::Internal
            }
        })
}

/// Counts the request in its source IP's `window`; past the window's limit,
/// 429 with the wait (login, password change, registration).
/// The hash of a new password (registration, a change, an admin's set): a
/// failure is ours, logged and answered 500.
pub(crate) async fn hash_new_password(
    passwords: &PasswordHasher,
    password: String,
) -> Result<String, ApiError> {
    passwords.hash(password).await.map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        ApiError::Internal
    })
}

pub(crate) async fn limit_source(
    store: &Store,
    window: &Window,
    req: &Request,
    now: i64,
) -> Result<(), ApiError> {
    if store.hit(window, &source_ip(req), now).await? > window.limit {
        metrics::count(Event::IpRateLimited);
        return Err(ApiError::TooManyRequests {
            retry_after: window.remaining(now),
        });
    }
    Ok(())
}

/// Every proof of a password goes through here (login, password change, and
/// any route added later): the attempt has been reserved on the username's
/// attempt record (`Store::reserve_attempt`: one conditional write that counts
/// it and refuses while locked), and only a granted reservation lets bcrypt
/// run, once. Known and unknown usernames alike (`hash` is `None` for a user
/// who does not exist).
pub(crate) async fn prove_password(
    passwords: &PasswordHasher,
    reservation: Reservation,
    hash: Option<String>,
    password: String,
) -> Result<bool, ApiError> {
    if let Reservation::Locked { retry_after } = reservation {
        tracing::info!("password proof refused: locked");
        metrics::count(Event::Lockout);
        return Err(ApiError::TooManyRequests { retry_after });
    }
    passwords
        .verify(password, hash)
        .await
        .map_err(verification_error)
}

/// Where a proof of `username`'s password is counted, and whether it is
/// reserved: on the count of the device proof `device` (as read) if it
/// vouches for `user` (as read), else on the username's attempt record. The
/// device that vouched is returned: a success clears its count, never the
/// username's. Known and unknown usernames alike: a proof vouches for
/// nobody but the user it was issued to.
pub(crate) async fn reserve_proof(
    store: &Store,
    username: &Username,
    user: Option<&User>,
    device: Option<Device>,
    now: i64,
) -> Result<(Reservation, Option<Device>), ApiError> {
    if let Some(device) = device.filter(|d| user.is_some_and(|u| d.vouches_for(u, now)))
        && let Some(reservation) = store.reserve_device_attempt(&device, now).await?
    {
        return Ok((reservation, Some(device)));
    }
    Ok((store.reserve_attempt(username, None, now).await?, None))
}

/// The record of a presented device proof, if any. A record that cannot be
/// read vouches for nothing (logged): the browser cannot clear an `HttpOnly`
/// cookie, so an error here would last as long as the cookie.
pub(crate) async fn presented_device(
    store: &Store,
    proof: Option<&DeviceProof>,
) -> Result<Option<Device>, crate::store::StoreError> {
    let Some(proof) = proof else { return Ok(None) };
    presented_device_by_hash(store, &proof.hash()).await
}

/// The device record under `hash` (one that vouched for a password's
/// attempt), if it is still there; one that cannot be read vouches for
/// nothing (logged), as in `presented_device`.
pub(crate) async fn presented_device_by_hash(
    store: &Store,
    hash: &str,
) -> Result<Option<Device>, crate::store::StoreError> {
    match store.get_device(hash).await {
        Err(crate::store::StoreError::Internal(detail)) => {
            tracing::error!(%detail, "a device record could not be read: it vouches for nothing");
            Ok(None)
        }
        read => read,
    }
}

/// The `auth_time` of a session that began with no recent proof (a
/// provider's sign-in): never within any `max_age`.
pub const NO_RECENT_PROOF: i64 = 0;

/// The random parts of a session that may begin: its id, its first refresh
/// token and that token's hash, and its device proof. A login draws them before the password's
/// proof, for every attempt alike (so the work done tells nothing of the
/// outcome), and throws them away when the proof fails: drawn right after a
/// quarter second of bcrypt, with the thread's caches and TLBs cold, the
/// same work costs ten times more, on the login's path (see
/// docs/performance.md).
pub(crate) struct SessionSeed {
    id: String,
    refresh_token: RefreshToken,
    refresh_hash: String,
    device: DeviceProof,
    device_hash: String,
}

impl SessionSeed {
    pub fn draw() -> Self {
        let refresh_token = RefreshToken::generate();
        let device = DeviceProof::generate();
        SessionSeed {
            id: Session::new_id(),
            refresh_hash: refresh_token.hash(),
            refresh_token,
            device_hash: device.hash(),
            device,
        }
    }
}

/// A session about to begin for `user` (under `epoch`): its access token,
/// signed, and its first refresh token, not yet stored. Signing comes first
/// so that a signer (KMS) failure leaves nothing written.
pub(crate) struct NewSession {
    pub session: Session,
    pub first: RefreshRecord,
    /// The device proof the sign-in issues, under the session's epoch.
    pub device: Device,
    refresh_token: RefreshToken,
    device_proof: DeviceProof,
    access: crate::tokens::IssuedToken,
    refresh_expires_in: u64,
}

impl NewSession {
    /// The session `origin` begins, proved by `amr` (its sign-in's own, and
    /// a second factor's).
    #[allow(clippy::too_many_arguments)]
    pub async fn sign(
        seed: SessionSeed,
        issuer: &TokenIssuer,
        config: &SessionConfig,
        user: &User,
        epoch: u64,
        now: i64,
        origin: Origin,
        amr: Vec<String>,
    ) -> Result<Self, ApiError> {
        let SessionSeed {
            id,
            refresh_token,
            refresh_hash,
            device: device_proof,
            device_hash,
        } = seed;
        let expires_at = config.refresh_expiry(now, now);
        // A password proves the person at this moment. A provider's sign-in
        // may ride a session the provider has held for days: it is no
        // recent proof, until one asked of the provider (`max_age=0`) marks
        // the session (`federation`'s re-authentication).
        // A provider's sign-in never stands in for a password: it is a
        // recent proof only for an account without one, and then only with
        // our second factor proved now (a code; a trusted provider's own
        // `mfa` may be as old as its session).
        let second = crate::sessions::amr::own_second_factor(&amr);
        let auth_time = match origin.method {
            SignIn::Provider if !second || user.has_password() => NO_RECENT_PROOF,
            _ => now,
        };
        let session = Session {
            id,
            user_id: user.id,
            username: user.username.clone(),
            epoch,
            revoked: false,
            created_at: now,
            auth_time,
            expires_at,
            last_used: now,
            origin,
            amr,
            passkey: None,
        };
        let first = RefreshRecord {
            hash: refresh_hash,
            session_id: session.id.clone(),
            user_id: user.id,
            state: RefreshState::Active,
            created_at: now,
            expires_at,
        };
        let mut holder = user.clone();
        holder.session_epoch = epoch;
        let access =
            sign_access_token(issuer, &holder, &session.id, auth_time, &session.amr, now).await?;
        let device = Device {
            hash: device_hash,
            user_id: user.id,
            username: user.username.clone(),
            epoch,
            created_at: now,
            expires_at: now + config.device_ttl.as_secs() as i64,
            failures: None,
        };
        Ok(NewSession {
            session,
            first,
            device,
            refresh_token,
            device_proof,
            access,
            refresh_expires_in: (expires_at - now).max(0) as u64,
        })
    }

    /// The answer, once the session is stored.
    pub fn into_tokens(self, message: &'static str) -> TokenPair {
        TokenPair {
            message,
            access_token: self.access.token,
            token_type: "Bearer",
            expires_in: self.access.expires_in,
            refresh_token: Some(self.refresh_token.expose().to_owned()),
            refresh_expires_in: self.refresh_expires_in,
            device_expires_in: Some(self.device.lifetime(self.session.created_at)),
            device: Some(self.device_proof.expose().to_owned()),
        }
    }
}

/// The origin of a session that `req` begins by `method`: what its owner
/// sees in the sessions list.
pub(crate) fn origin(req: &Request, method: SignIn, known_device: bool) -> Origin {
    let user_agent = req
        .headers()
        .get(lambda_http::http::header::USER_AGENT)
        .map(|v| clean_user_agent(&String::from_utf8_lossy(v.as_bytes())))
        .filter(|ua| !ua.is_empty());
    let ip = Some(source_ip(req)).filter(|ip| ip != "unknown");
    Origin {
        method,
        user_agent,
        ip,
        known_device,
    }
}

/// Maps a password-verification failure: a too-long password is simply wrong,
/// a broken stored hash is our problem.
pub(crate) fn verification_error(err: PasswordError) -> ApiError {
    match err {
        PasswordError::TooLong => ApiError::LoginFailed,
        PasswordError::MalformedHash | PasswordError::Hashing(_) => {
            tracing::error!(error = %err, "password verification failed");
            ApiError::Internal
        }
    }
}
