//! The passkeys function: a signed-in user adds passkeys (WebAuthn
//! discoverable credentials, user verification required), lists, renames
//! and removes them; anyone signs in with one, no username typed.
//!
//! - `POST /account/passkeys/options` begins adding one (a fresh proof: of
//!   the second factor where one is enrolled, else of the password or a
//!   passkey), `POST /account/passkeys` completes it with the browser's
//!   answer and a name; `GET /account/passkeys` lists them; `PATCH` and
//!   `DELETE /account/passkeys/{id}` rename and remove one (removal: fresh,
//!   and only while another way to sign in remains).
//! - `POST /login/passkey/options` begins a sign-in (a challenge for the
//!   browser's passkey autofill or its button), `POST /login/passkey`
//!   completes it, answering exactly as a login does (cookie mode
//!   included). Rate limited per source as every unauthenticated route;
//!   no password lockout (there is nothing to guess). An unknown passkey, a
//!   removed one and one whose answer does not check out answer alike.
//!
//! - With a password step's `mfa_token`, the same two routes are its
//!   second step: a challenge only that account's passkeys may answer,
//!   and the session begun as `/login/second-factor` begins it.
//! - `POST /account/passkeys/verify/options` and `/account/passkeys/verify`:
//!   within a session, one of the account's passkeys again. The answer is a
//!   new access token of the same session whose `auth_time` is now and
//!   whose `acr` is `aal2` (a passkey with user verification proves both),
//!   for the acts that need a fresh proof or the second factor.
//!
//! Each ceremony's state is the library's, kept in the table for a few
//! minutes under the hash of an id the client holds, and taken out by the
//! request that ends it, whatever comes of it: a challenge is answered once.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AuthenticationResult, CredentialID, DiscoverableAuthentication, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Webauthn, WebauthnError,
};

use super::{
    Authenticated, NewSession, SessionSeed, authenticate_caller, limit_source, sign_access_token,
};
use crate::browser::{BrowserPolicy, Delivery, device_delivery, presented_proof};
use crate::clock::Clock;
use crate::devices::DeviceChange;
use crate::http::{ApiError, json_body, json_response, require_method};
use crate::metrics::{self, Event};
use crate::passkeys::{
    CEREMONY_TTL, Ceremony, CeremonyKind, MAX_CREDENTIAL_ID_BYTES, MAX_PASSKEYS, StoredPasskey,
    ceremony_hash, credential_id, passkey_name,
};
use crate::relying_party::discoverable;
use crate::sessions::{SessionConfig, SignIn};
use crate::store::{Store, StoreError};
use crate::throttle::{RateLimits, Window};
use crate::tokens::{TokenIssuer, TokenVerifier};

pub const PASSKEYS_PATH: &str = "/account/passkeys";
pub const REGISTER_OPTIONS_PATH: &str = "/account/passkeys/options";
pub const SIGN_IN_OPTIONS_PATH: &str = "/login/passkey/options";
pub const SIGN_IN_PATH: &str = "/login/passkey";
pub const VERIFY_OPTIONS_PATH: &str = "/account/passkeys/verify/options";
pub const VERIFY_PATH: &str = "/account/passkeys/verify";

/// Past this many sessions proved by a passkey being removed, its removal
/// ends every session of the account (the epoch moves on) instead of each
/// (one transaction holds at most 100 writes).
const MAX_SESSIONS_ENDED_ONE_BY_ONE: usize = 50;

/// What the passkeys function holds between invocations.
pub struct Passkeys {
    pub store: Store,
    pub verifier: TokenVerifier,
    pub issuer: TokenIssuer,
    pub sessions: SessionConfig,
    pub limits: RateLimits,
    pub browser: BrowserPolicy,
    /// The relying party (`relying_party::PasskeyConfig`).
    pub relying_party: Webauthn,
    /// How recent a proof adding or removing a passkey needs.
    pub fresh_auth: std::time::Duration,
    pub clock: Clock,
}

/// Routes by path; each route answers its own 405s.
pub async fn handle(state: &Passkeys, req: Request) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let result = match path.as_str() {
        SIGN_IN_OPTIONS_PATH => sign_in_options(state, req).await,
        SIGN_IN_PATH => sign_in(state, req).await,
        REGISTER_OPTIONS_PATH => register_options(state, req).await,
        VERIFY_OPTIONS_PATH => verify_options(state, req).await,
        VERIFY_PATH => verify(state, req).await,
        PASSKEYS_PATH if req.method() == Method::GET => list(state, req).await,
        PASSKEYS_PATH => register(state, req).await,
        _ => match path
            .strip_prefix(PASSKEYS_PATH)
            .and_then(|p| p.strip_prefix('/'))
        {
            Some(id) if !id.is_empty() && !id.contains('/') => {
                let id = id.to_owned();
                match *req.method() {
                    Method::PATCH => rename(state, req, &id).await,
                    _ => remove(state, req, &id).await,
                }
            }
            _ => Err(ApiError::NotFound),
        },
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// The challenge to hand the browser, and the id that ends the ceremony.
#[derive(Serialize)]
struct Options<T: Serialize> {
    ceremony: String,
    /// Seconds left to answer.
    expires_in: u64,
    /// For `navigator.credentials.create` or `.get`, as WebAuthn's JSON
    /// encodes it (`PublicKeyCredential.parse…OptionsFromJSON`).
    options: T,
}

/// A passkey as its owner sees it.
#[derive(Serialize)]
struct Listed {
    id: String,
    name: String,
    created_at: i64,
    last_used: Option<i64>,
    /// Whether it is synced to the owner's other devices (WebAuthn's BS
    /// flag): else bound to the one device.
    synced: bool,
    backup_eligible: bool,
}

impl From<&StoredPasskey> for Listed {
    fn from(p: &StoredPasskey) -> Self {
        Listed {
            id: p.id.clone(),
            name: p.name.clone(),
            created_at: p.created_at,
            last_used: p.last_used,
            synced: p.backed_up,
            backup_eligible: p.backup_eligible,
        }
    }
}

#[derive(Serialize)]
struct List {
    passkeys: Vec<Listed>,
}

/// A proof recent enough to change how the account signs in: of a second
/// factor where the account has one (a code, or one of its passkeys: a
/// passkey's sign-in or `verify`), else of the password.
fn require_fresh_proof(caller: &Authenticated, state: &Passkeys, now: i64) -> Result<(), ApiError> {
    if caller.user.has_second_factor() {
        caller.require_second_factor(state.fresh_auth, now)
    } else {
        caller.require_fresh(state.fresh_auth, now)
    }
}

async fn register_options(state: &Passkeys, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    require_fresh_proof(&caller, state, now)?;
    let user = &caller.user;
    if user.passkeys.len() >= MAX_PASSKEYS {
        return Err(ApiError::Conflict(
            "this account holds as many passkeys as it may; remove one first",
        ));
    }
    // The browser refuses to make a second passkey on an authenticator
    // that holds one of this account's already.
    let exclude: Vec<CredentialID> = user
        .passkeys
        .iter()
        .filter_map(|id| crate::passkeys::decode_credential_id(id))
        .collect();
    let (options, registration) = state
        .relying_party
        .start_passkey_registration(
            uuid_of(user),
            user.username.as_str(),
            &user.name,
            Some(exclude),
        )
        .map_err(ceremony_error)?;
    let saved = saved_state(&registration)?;
    let (ceremony, id) = Ceremony::begin(
        CeremonyKind::Register,
        Some((user.id, caller.claims.sid.clone())),
        saved,
        now,
    );
    state.store.put_ceremony(&ceremony).await?;
    Ok(json_response(
        StatusCode::OK,
        &Options {
            ceremony: id.expose().to_owned(),
            expires_in: CEREMONY_TTL.as_secs(),
            options: discoverable(&options),
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    ceremony: String,
    credential: RegisterPublicKeyCredential,
    name: String,
}

async fn register(state: &Passkeys, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "GET, POST")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let body: Registration = json_body(&req)?;
    let name = name_of(&body.name)?;
    let hash = ceremony_hash(&body.ceremony).ok_or(ApiError::InvalidCeremony)?;
    if body.credential.raw_id.len() > MAX_CREDENTIAL_ID_BYTES {
        return Err(ApiError::BadRequest(format!(
            "a credential id is at most {MAX_CREDENTIAL_ID_BYTES} bytes"
        )));
    }
    // The proof that began it must still be recent as it ends.
    require_fresh_proof(&caller, state, now)?;
    // Used up now, whatever comes of it.
    let ceremony = state
        .store
        .take_ceremony(&hash, CeremonyKind::Register, now)
        .await?
        .filter(|c| {
            c.user_id == Some(caller.user.id) && c.session.as_deref() == Some(&caller.claims.sid)
        })
        .ok_or(ApiError::InvalidCeremony)?;
    let registration: PasskeyRegistration = serde_json::from_str(&ceremony.state).map_err(|e| {
        tracing::error!(error = %e, "a registration's state does not parse");
        ApiError::Internal
    })?;
    // The browser says whether it made a discoverable credential (not
    // signed: a client that says no is believed, one that says nothing is
    // trusted to have done what was asked).
    if body
        .credential
        .extensions
        .cred_props
        .as_ref()
        .is_some_and(|props| props.rk == Some(false))
    {
        return Err(ApiError::BadRequest(
            "the authenticator made a passkey that cannot sign in without a username; use one that keeps passkeys".into(),
        ));
    }
    let passkey = state
        .relying_party
        .finish_passkey_registration(&body.credential, &registration)
        .map_err(|e| {
            tracing::info!(user_id = %caller.user.id, error = %e, "passkey registration refused");
            ApiError::PasskeyRefused
        })?;
    let stored = StoredPasskey::registered(caller.user.id, name, passkey, now);
    match state
        .store
        .add_passkey(&caller.user, &caller.claims.sid, &stored, now)
        .await
    {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => {
            return Err(ApiError::Conflict("this passkey is registered already"));
        }
        Err(StoreError::Conflict) => {
            return Err(ApiError::Conflict(
                "the account changed meanwhile, or holds as many passkeys as it may; try again",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user_id = %caller.user.id, "passkey added");
    Ok(json_response(StatusCode::CREATED, &Listed::from(&stored)))
}

async fn list(state: &Passkeys, req: Request) -> Result<Response<Body>, ApiError> {
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let passkeys = state.store.passkeys_of(&caller.user).await?;
    Ok(json_response(
        StatusCode::OK,
        &List {
            passkeys: passkeys.iter().map(Listed::from).collect(),
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    name: String,
}

async fn rename(state: &Passkeys, req: Request, id: &str) -> Result<Response<Body>, ApiError> {
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let body: Rename = json_body(&req)?;
    let name = name_of(&body.name)?;
    if !caller.user.passkeys.contains(id)
        || !state.store.rename_passkey(&caller.user, id, &name).await?
    {
        return Err(ApiError::NotFound);
    }
    let renamed = state
        .store
        .get_passkey(id)
        .await?
        .filter(|p| p.user_id == caller.user.id)
        .ok_or(ApiError::NotFound)?;
    Ok(json_response(StatusCode::OK, &Listed::from(&renamed)))
}

async fn remove(state: &Passkeys, req: Request, id: &str) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::DELETE, "PATCH, DELETE")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let sid = caller.claims.sid.as_str();
    let mut user = caller.user.clone();
    if !user.passkeys.contains(id) {
        return Err(ApiError::NotFound);
    }
    require_fresh_proof(&caller, state, now)?;
    another_way_in_remains(&user)?;
    let mut passkey = state
        .store
        .get_passkey(id)
        .await?
        .filter(|p| p.user_id == user.id)
        .ok_or(ApiError::NotFound)?;
    let changed = || ApiError::Conflict("the account changed meanwhile; try again");
    // The sessions this passkey proved end with it (a lost device's, or a
    // thief's), all but the one removing it: ended first, so a removal
    // that fails leaves none of them live on a passkey that is gone. Too
    // many to end one by one, or to list whole: every session ends.
    let mut every_session_ends = false;
    let mut ended = 0;
    for round in 0..2 {
        if !every_session_ends {
            match proved_sessions(state, &user, &passkey, sid, now).await? {
                None => every_session_ends = true,
                Some(proved) if proved.is_empty() => {}
                Some(proved) => {
                    let proved: Vec<&str> = proved.iter().map(String::as_str).collect();
                    let access_until = state.verifier.revoked_until(now);
                    match state
                        .store
                        .revoke_sessions(&proved, &user, access_until, now)
                        .await
                    {
                        Ok(()) => ended = proved.len(),
                        Err(StoreError::Conflict) => return Err(changed()),
                        Err(e) => return Err(e.into()),
                    }
                    // As now written (the list of revoked sessions, or a
                    // new epoch where it overflowed).
                    user = read_again(state, &user, id).await?;
                }
            }
        }
        match state
            .store
            .remove_passkey(&user, sid, &passkey, every_session_ends, now)
            .await
        {
            Ok(()) => break,
            Err(StoreError::Conflict) if round == 0 => {
                // Read both again. A proof with the passkey since the read
                // may have begun a session the list did not hold (and a
                // thief signing in again and again would refuse every
                // removal): every session ends instead.
                user = read_again(state, &user, id).await?;
                another_way_in_remains(&user)?;
                let fresh = state
                    .store
                    .get_passkey(id)
                    .await?
                    .filter(|p| p.user_id == user.id)
                    .ok_or_else(changed)?;
                every_session_ends = every_session_ends || fresh.uses != passkey.uses;
                passkey = fresh;
            }
            Err(StoreError::Conflict) => return Err(changed()),
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(
        user_id = %user.id,
        sessions_ended = ended,
        every_session_ends,
        "passkey removed"
    );
    #[derive(Serialize)]
    struct Removed {
        message: &'static str,
    }
    Ok(json_response(
        StatusCode::OK,
        &Removed {
            message: "Passkey removed",
        },
    ))
}

/// `user` read again, still holding the passkey `id`; else the account
/// changed meanwhile (409).
async fn read_again(
    state: &Passkeys,
    user: &crate::users::User,
    id: &str,
) -> Result<crate::users::User, ApiError> {
    state
        .store
        .get(&user.username)
        .await?
        .filter(|u| u.id == user.id && u.passkeys.contains(id))
        .ok_or(ApiError::Conflict(
            "the account changed meanwhile; try again",
        ))
}

/// Another way to sign in than the passkey being removed remains: the
/// password, an outside identity, or another passkey.
fn another_way_in_remains(user: &crate::users::User) -> Result<(), ApiError> {
    if !user.has_password() && user.identities.is_empty() && user.passkeys.len() <= 1 {
        return Err(ApiError::Conflict(
            "this passkey is the account's only way to sign in: set a password or add another first",
        ));
    }
    Ok(())
}

/// The sessions of `user`'s that `passkey` (as read) proved, but `caller`'s:
/// those the sessions' list shows it proved last, those its item marks as
/// proved within `RECENT_PROOFS` (which the list, an eventually consistent
/// index, may not show yet), and those that proved some passkey before
/// sessions named theirs. `None`: too many to end one by one, or more than
/// a list holds.
async fn proved_sessions(
    state: &Passkeys,
    user: &crate::users::User,
    passkey: &crate::passkeys::StoredPasskey,
    caller: &str,
    now: i64,
) -> Result<Option<Vec<String>>, ApiError> {
    let (sessions, more) = state.store.list_sessions(user, now).await?;
    if more {
        return Ok(None);
    }
    let mut proved: Vec<String> = sessions
        .into_iter()
        .filter(|s| s.id != caller)
        .filter(|s| match &s.passkey {
            Some(theirs) => *theirs == passkey.id,
            None => s
                .amr
                .iter()
                .any(|m| m == crate::sessions::amr::SOFTWARE_KEY),
        })
        .map(|s| s.id)
        .collect();
    for (sid, at) in &passkey.recent {
        if *at >= now - crate::passkeys::RECENT_PROOFS && sid != caller && !proved.contains(sid) {
            proved.push(sid.clone());
        }
    }
    Ok((proved.len() <= MAX_SESSIONS_ENDED_ONE_BY_ONE).then_some(proved))
}

/// What `POST /login/passkey/options` may carry: nothing (a sign-in with a
/// passkey alone), or the `mfa_token` of a password step (its second step).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OptionsBody {
    #[serde(default)]
    mfa_token: Option<String>,
}

async fn sign_in_options(state: &Passkeys, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let body: OptionsBody = if crate::http::body_bytes(&req).is_empty() {
        OptionsBody::default()
    } else {
        json_body(&req)?
    };
    let now = state.clock.now();
    limit_source(&state.store, &Window::login(&state.limits), &req, now).await?;
    if let Some(token) = body.mfa_token {
        return second_step_options(state, &token, now).await;
    }
    let (options, authentication) = state
        .relying_party
        .start_discoverable_authentication()
        .map_err(ceremony_error)?;
    let saved = saved_state(&authentication)?;
    let (ceremony, id) = Ceremony::begin(CeremonyKind::SignIn, None, saved, now);
    state.store.put_ceremony(&ceremony).await?;
    Ok(json_response(
        StatusCode::OK,
        &Options {
            ceremony: id.expose().to_owned(),
            expires_in: CEREMONY_TTL.as_secs(),
            options,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInBody {
    ceremony: String,
    credential: PublicKeyCredential,
    /// A password step's token: this answer is its second step.
    #[serde(default)]
    mfa_token: Option<String>,
    #[serde(default)]
    refresh_token_delivery: Delivery,
    /// A device proof, in body mode (as a login's).
    #[serde(default)]
    device: Option<String>,
}

async fn sign_in(state: &Passkeys, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let body: SignInBody = json_body(&req)?;
    let hash = ceremony_hash(&body.ceremony).ok_or(ApiError::InvalidCeremony)?;
    let delivery = body.refresh_token_delivery;
    if delivery == Delivery::Cookie {
        state.browser.check(&req)?;
    }
    let now = state.clock.now();
    limit_source(&state.store, &Window::login(&state.limits), &req, now).await?;
    if let Some(token) = &body.mfa_token {
        return second_step(state, &req, &body, token, &hash, now).await;
    }
    let presented = presented_proof(&req, body.device, &state.browser)?;
    let ceremony = state
        .store
        .take_ceremony(&hash, CeremonyKind::SignIn, now)
        .await?
        .ok_or(ApiError::InvalidCeremony)?;
    let authentication: DiscoverableAuthentication = serde_json::from_str(&ceremony.state)
        .map_err(|e| {
            tracing::error!(error = %e, "a sign-in's state does not parse");
            ApiError::Internal
        })?;
    let refused = || {
        metrics::count(Event::LoginFailed);
        ApiError::PasskeyRefused
    };
    // Who the authenticator says it is, and which passkey: both must match
    // a passkey we keep, still listed by a live account.
    let (handle, raw_id) = state
        .relying_party
        .identify_discoverable_authentication(&body.credential)
        .map_err(|_| refused())?;
    if raw_id.len() > MAX_CREDENTIAL_ID_BYTES {
        return Err(refused());
    }
    let id = credential_id(raw_id);
    let Some(stored) = state
        .store
        .get_passkey(&id)
        .await?
        .filter(|p| uuid_of_id(p.user_id) == handle)
    else {
        tracing::info!("passkey sign-in refused: unknown passkey");
        return Err(refused());
    };
    let Some(user) = state
        .store
        .get_by_id(stored.user_id)
        .await?
        .filter(|u| u.active && u.passkeys.contains(&id))
    else {
        tracing::info!("passkey sign-in refused: no live account lists it");
        return Err(refused());
    };
    crate::runtime::record_user(&user.id);
    let outcome = state.relying_party.finish_discoverable_authentication_v2(
        &body.credential,
        authentication,
        &stored.passkey,
    );
    let used = checked(state, &user, &stored, outcome, now)
        .await
        .map_err(|()| refused())?;
    // A device proof that vouches for the user marks a known device (no
    // new-device notice), and is spent for a new one, as at a login.
    let vouching = super::presented_device(&state.store, presented.as_ref().map(|p| &p.proof))
        .await?
        .filter(|d| d.vouches_for(&user, now));
    let seed = SessionSeed::draw();
    let new = NewSession::sign(
        seed,
        &state.issuer,
        &state.sessions,
        &user,
        user.session_epoch,
        now,
        super::origin(&req, SignIn::Passkey, vouching.is_some()),
        SignIn::Passkey.amr(),
    )
    .await?;
    let device = DeviceChange {
        issued: &new.device,
        retired: vouching.as_ref(),
    };
    let stored_session = state
        .store
        .start_session_by_passkey(&new.session, &new.first, &user, &device, &used)
        .await;
    if let Err(e) = stored_session
        && !state.store.session_stored(&new.session.id).await
    {
        return Err(match e {
            // Removed meanwhile, a racer's counter first, or the account
            // changed: refused, as for a passkey not kept.
            StoreError::Conflict => refused(),
            e => e.into(),
        });
    }
    tracing::info!(user_id = %user.id, "login succeeded with a passkey");
    metrics::count(Event::LoginSucceeded);
    let device_delivery = device_delivery(presented.as_ref(), delivery);
    Ok(new
        .into_tokens("Login Success")
        .into_response(delivery, device_delivery))
}

/// The ticket `token` names, still live, and its user as the password step
/// found them; else `invalid_mfa_token`, as at `/login/second-factor`.
async fn ticket_and_user(
    state: &Passkeys,
    token: &str,
    now: i64,
) -> Result<(crate::mfa::MfaTicket, crate::users::User), ApiError> {
    let hash = crate::mfa::mfa_token_hash(token).ok_or(ApiError::InvalidMfaToken)?;
    let ticket = state
        .store
        .get_mfa_ticket(&hash, now)
        .await?
        .filter(|t| t.is_live(now))
        .ok_or(ApiError::InvalidMfaToken)?;
    let user = state
        .store
        .get(&ticket.username)
        .await?
        .filter(|u| ticket.binds(u))
        .ok_or(ApiError::InvalidMfaToken)?;
    Ok((ticket, user))
}

/// `POST /login/passkey/options` with an `mfa_token`: a challenge only the
/// account's own passkeys may answer, bound to the ticket.
async fn second_step_options(
    state: &Passkeys,
    token: &str,
    now: i64,
) -> Result<Response<Body>, ApiError> {
    let (ticket, user) = ticket_and_user(state, token, now).await?;
    own_passkeys_challenge(state, &user, CeremonyKind::SecondStep, ticket.hash, now).await
}

/// `POST /login/passkey` with an `mfa_token`: the second step of a sign-in
/// whose password was good, answered with one of the account's passkeys.
/// The session begins as `/login/second-factor` begins it (its `amr` the
/// password's and the passkey's), in one transaction that uses up the
/// ticket and moves the passkey's counter on.
async fn second_step(
    state: &Passkeys,
    req: &Request,
    body: &SignInBody,
    token: &str,
    hash: &str,
    now: i64,
) -> Result<Response<Body>, ApiError> {
    let delivery = body.refresh_token_delivery;
    let presented = presented_proof(req, body.device.clone(), &state.browser)?;
    let (ticket, user) = ticket_and_user(state, token, now).await?;
    // Used up now, whatever comes of it; only with the ticket it was asked for.
    let ceremony = state
        .store
        .take_ceremony(hash, CeremonyKind::SecondStep, now)
        .await?
        .filter(|c| c.user_id == Some(user.id) && c.session.as_deref() == Some(&ticket.hash))
        .ok_or(ApiError::InvalidCeremony)?;
    let authentication: PasskeyAuthentication =
        serde_json::from_str(&ceremony.state).map_err(|e| {
            tracing::error!(error = %e, "a second step's state does not parse");
            ApiError::Internal
        })?;
    crate::runtime::record_user(&user.id);
    let refused = || {
        metrics::count(Event::LoginFailed);
        ApiError::PasskeyRefused
    };
    let raw_id: &[u8] = body.credential.raw_id.as_ref();
    if raw_id.len() > MAX_CREDENTIAL_ID_BYTES {
        return Err(refused());
    }
    let id = credential_id(raw_id);
    let Some(stored) = (match user.passkeys.contains(&id) {
        true => state.store.get_passkey(&id).await?,
        false => None,
    })
    .filter(|p| p.user_id == user.id) else {
        tracing::info!(user_id = %user.id, "passkey second step refused: not the account's passkey");
        return Err(refused());
    };
    let outcome = state
        .relying_party
        .finish_passkey_authentication(&body.credential, &authentication);
    let used = checked(state, &user, &stored, outcome, now)
        .await
        .map_err(|()| refused())?;
    let vouching = match &ticket.device {
        Some(hash) => super::presented_device_by_hash(&state.store, hash).await?,
        None => None,
    };
    let mut amr = ticket.method.amr();
    for method in SignIn::Passkey.amr() {
        amr = crate::sessions::amr::with(&amr, &method);
    }
    let new = NewSession::sign(
        SessionSeed::draw(),
        &state.issuer,
        &state.sessions,
        &user,
        user.session_epoch,
        now,
        super::origin(req, ticket.method, ticket.device.is_some()),
        amr,
    )
    .await?;
    let device = DeviceChange {
        issued: &new.device,
        retired: vouching.as_ref(),
    };
    let stored_session = state
        .store
        .start_session_by_passkey_after(&new.session, &new.first, &user, &device, &used, &ticket)
        .await;
    if let Err(e) = stored_session
        && !state.store.session_stored(&new.session.id).await
    {
        return Err(match e {
            // A racer's second step used the ticket, the passkey was
            // removed or its counter moved first, or the account changed.
            StoreError::Conflict => ApiError::InvalidMfaToken,
            e => e.into(),
        });
    }
    tracing::info!(user_id = %user.id, "login succeeded with a passkey as the second step");
    metrics::count(Event::LoginSucceeded);
    let device_delivery = device_delivery(presented.as_ref(), delivery);
    Ok(new
        .into_tokens("Login Success")
        .into_response(delivery, device_delivery))
}

/// What the library made of an assertion with `user`'s passkey `stored`:
/// the passkey as it is to be stored back, or refused (logged; a counter
/// that went backwards also tells the owner, at most once an hour).
async fn checked(
    state: &Passkeys,
    user: &crate::users::User,
    stored: &StoredPasskey,
    outcome: Result<AuthenticationResult, WebauthnError>,
    now: i64,
) -> Result<StoredPasskey, ()> {
    let cloned = async || {
        // A counter that went backwards: a copy of a key that should have
        // none. Refused; the owner hears of it.
        tracing::warn!(user_id = %user.id, "passkey refused: its counter went backwards");
        if let Err(e) = state.store.notice_cloned_passkey(user, stored, now).await {
            tracing::warn!(user_id = %user.id, error = %e, "the cloned-passkey notice was not written");
        }
    };
    let result = match outcome {
        Ok(result) => result,
        Err(WebauthnError::CredentialPossibleCompromise) => {
            cloned().await;
            return Err(());
        }
        Err(e) => {
            tracing::info!(user_id = %user.id, error = %e, "passkey refused");
            return Err(());
        }
    };
    // The library compared the counter with the one its ceremony began
    // with (a re-authentication's, minutes old); the one read just now
    // decides.
    if result.counter() > 0 && u64::from(result.counter()) <= u64::from(stored.counter) {
        cloned().await;
        return Err(());
    }
    if !result.user_verified() {
        tracing::info!(user_id = %user.id, "passkey refused: no user verification");
        return Err(());
    }
    stored.used(&result, now).ok_or(())
}

/// `POST /account/passkeys/verify/options`: a challenge that only the
/// account's own passkeys can answer, for `verify`.
async fn verify_options(state: &Passkeys, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    limit_source(&state.store, &Window::login(&state.limits), &req, now).await?;
    let sid = caller.claims.sid.clone();
    own_passkeys_challenge(state, &caller.user, CeremonyKind::Verify, sid, now).await
}

/// A challenge only `user`'s own passkeys may answer (the options name
/// them), kept as a ceremony of `kind` bound to `user` and to `bound_to`
/// (the session, or the ticket's hash); 409 for an account with none.
async fn own_passkeys_challenge(
    state: &Passkeys,
    user: &crate::users::User,
    kind: CeremonyKind,
    bound_to: String,
    now: i64,
) -> Result<Response<Body>, ApiError> {
    let passkeys: Vec<_> = state
        .store
        .passkeys_of(user)
        .await?
        .into_iter()
        .map(|p| p.passkey)
        .collect();
    if passkeys.is_empty() {
        return Err(ApiError::Conflict("this account has no passkey to prove"));
    }
    let (options, authentication) = state
        .relying_party
        .start_passkey_authentication(&passkeys)
        .map_err(ceremony_error)?;
    let saved = saved_state(&authentication)?;
    let (ceremony, id) = Ceremony::begin(kind, Some((user.id, bound_to)), saved, now);
    state.store.put_ceremony(&ceremony).await?;
    Ok(json_response(
        StatusCode::OK,
        &Options {
            ceremony: id.expose().to_owned(),
            expires_in: CEREMONY_TTL.as_secs(),
            options,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    ceremony: String,
    credential: PublicKeyCredential,
}

#[derive(Serialize)]
struct Verified {
    message: &'static str,
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

/// `POST /account/passkeys/verify`: the answer to `verify_options`'
/// challenge, in the session that asked for it. As `/reauthenticate` does
/// for the password, and `/account/second-factor/verify` for a code, at
/// once: a passkey that verified its user proves who holds it and that
/// they unlocked it, now. No new session and no new refresh token: the
/// session's refreshes carry the new proof on.
async fn verify(state: &Passkeys, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let body: VerifyBody = json_body(&req)?;
    let hash = ceremony_hash(&body.ceremony).ok_or(ApiError::InvalidCeremony)?;
    limit_source(&state.store, &Window::login(&state.limits), &req, now).await?;
    let (user, sid) = (caller.user, caller.claims.sid);
    // Used up now, whatever comes of it; only by the session that began it.
    let ceremony = state
        .store
        .take_ceremony(&hash, CeremonyKind::Verify, now)
        .await?
        .filter(|c| c.user_id == Some(user.id) && c.session.as_deref() == Some(sid.as_str()))
        .ok_or(ApiError::InvalidCeremony)?;
    let authentication: PasskeyAuthentication =
        serde_json::from_str(&ceremony.state).map_err(|e| {
            tracing::error!(error = %e, "a re-authentication's state does not parse");
            ApiError::Internal
        })?;
    let raw_id: &[u8] = body.credential.raw_id.as_ref();
    if raw_id.len() > MAX_CREDENTIAL_ID_BYTES {
        return Err(ApiError::PasskeyRefused);
    }
    let id = credential_id(raw_id);
    let Some(stored) = (match user.passkeys.contains(&id) {
        true => state.store.get_passkey(&id).await?,
        false => None,
    })
    .filter(|p| p.user_id == user.id) else {
        tracing::info!(user_id = %user.id, "passkey re-authentication refused: not the account's passkey");
        return Err(ApiError::PasskeyRefused);
    };
    let outcome = state
        .relying_party
        .finish_passkey_authentication(&body.credential, &authentication);
    let used = checked(state, &user, &stored, outcome, now)
        .await
        .map_err(|()| ApiError::PasskeyRefused)?;
    let amr = SignIn::Passkey.amr();
    // Sign first: a signer failure writes nothing.
    let access = sign_access_token(&state.issuer, &user, &sid, now, &amr, now).await?;
    let proof = uuid::Uuid::new_v4().to_string();
    if let Err(e) = state
        .store
        .reauthenticate_by_passkey(&sid, &user, &used, &amr, &proof, now)
        .await
        && !state.store.proof_stored(&sid, &proof).await
    {
        return Err(match e {
            // The session ended, the account changed, the passkey was
            // removed or a racer's answer moved its counter first.
            StoreError::Conflict => ApiError::Conflict(
                "the session, the account or the passkey changed meanwhile; try again",
            ),
            e => e.into(),
        });
    }
    tracing::info!(user_id = %user.id, "re-authenticated with a passkey");
    metrics::count(Event::Reauthenticated);
    Ok(json_response(
        StatusCode::OK,
        &Verified {
            message: "Reauthenticated",
            access_token: access.token,
            token_type: "Bearer",
            expires_in: access.expires_in,
        },
    ))
}

/// The library's state of a ceremony, as the table keeps it (JSON): one
/// that does not serialise is a bug of ours.
fn saved_state(state: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_string(state).map_err(|e| {
        tracing::error!(error = %e, "a ceremony's state does not serialise");
        ApiError::Internal
    })
}

/// A passkey's name as given, or why not.
fn name_of(raw: &str) -> Result<String, ApiError> {
    passkey_name(raw).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "name must be 1 to {} characters, none of them control characters",
            crate::passkeys::MAX_NAME_CHARS
        ))
    })
}

/// The user handle a passkey holds: the user id's 16 bytes.
fn uuid_of(user: &crate::users::User) -> uuid::Uuid {
    uuid_of_id(user.id)
}

fn uuid_of_id(id: crate::users::UserId) -> uuid::Uuid {
    uuid::Uuid::parse_str(&id.to_string()).expect("a user id is a UUID")
}

/// The library refusing to begin a ceremony is a misconfiguration or a
/// bug: ours, never the client's.
fn ceremony_error(e: WebauthnError) -> ApiError {
    tracing::error!(error = %e, "a passkey ceremony could not begin");
    ApiError::Internal
}
