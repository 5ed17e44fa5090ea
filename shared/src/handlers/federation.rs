//! Sign-in through an outside identity provider (`federation`): `GET
//! /oidc/providers` lists them for the page's buttons; `POST
//! /oidc/{provider}/start` begins a round trip (a sign-in, or connecting the
//! caller's account) and answers the provider's URL, with the round trip's
//! cookie; the provider sends the browser back to `GET
//! /oidc/{provider}/callback`, which ends it: in a session, begun as a
//! password login begins one (the same records, refresh cookie and device
//! cookie), or in a connected identity; then 303 to the page, which gets
//! its access token through `/refresh`. Every way the callback can end is a
//! 303 to the page, with what happened in its fragment: never a URL taken
//! from the request.
//!
//! The callback is the one request that sets the refresh cookie without a
//! JSON body and our Origin (it is the provider's cross-site redirect): it
//! does so only for the round trip its `state` names and the browser's
//! `__Host-oidc` cookie holds, which our page's Origin-checked `start` set.

use std::collections::HashMap;
use std::time::Duration;

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::{Deserialize, Serialize};

use super::{NewSession, SessionSeed, authenticate_caller, limit_source, origin};
use crate::browser::{BrowserPolicy, presented_proof, set_device_cookie, set_refresh_cookie};
use crate::clock::Clock;
use crate::devices::DeviceChange;
use crate::email::Email;
use crate::federation::{
    ExternalId, FederationError, Identity, Intent, Provider, RETURN_PATHS, TRANSACTION_COOKIE,
    TRANSACTION_TTL, Transaction, handle_hash, proposed_name, proposed_username, state_hash,
    with_suffix,
};
use crate::handlers::register::SignUp;
use crate::http::{ApiError, json_body, json_response, require_method};
use crate::id_tokens::IdClaims;
use crate::metrics::{self, Event};
use crate::mfa::MfaTicket;
use crate::providers::ProviderHttp;
use crate::sessions::{SessionConfig, SignIn};
use crate::store::{NewAccountError, Store, StoreError};
use crate::throttle::{RateLimits, Window};
use crate::tokens::{TokenIssuer, TokenVerifier};
use crate::users::{NO_PASSWORD, User};

/// Usernames a first sign-in tries before it gives up (the proposed one,
/// then with random suffixes).
const USERNAME_TRIES: usize = 4;

/// What the federation function holds between invocations.
pub struct Federation {
    pub store: Store,
    pub tokens: TokenIssuer,
    pub verifier: TokenVerifier,
    pub sessions: SessionConfig,
    pub limits: RateLimits,
    pub browser: BrowserPolicy,
    pub sign_up: SignUp,
    /// How recent a password proof connecting a provider needs.
    pub fresh_auth: Duration,
    pub providers: Vec<Provider>,
    pub http: ProviderHttp,
    /// The page's origin: where every callback ends.
    pub page: String,
    pub clock: Clock,
}

pub async fn handle(state: &Federation, req: Request) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["oidc", "providers"] => list(state, &req).unwrap_or_else(ApiError::into_response),
        ["oidc", id, "start"] => start(state, &req, id)
            .await
            .unwrap_or_else(ApiError::into_response),
        ["oidc", id, "callback"] => match require_method(&req, Method::GET, "GET") {
            Ok(()) => callback(state, &req, id).await,
            Err(e) => e.into_response(),
        },
        ["account", "identities"] => identities(state, &req)
            .await
            .unwrap_or_else(ApiError::into_response),
        ["account", "identities", id] => disconnect(state, &req, id)
            .await
            .unwrap_or_else(ApiError::into_response),
        _ => ApiError::NotFound.into_response(),
    }
}

#[derive(Serialize)]
struct ProviderView<'a> {
    id: &'a str,
    name: &'a str,
}

fn list(state: &Federation, req: &Request) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::GET, "GET")?;
    let providers: Vec<ProviderView> = state
        .providers
        .iter()
        .map(|p| ProviderView {
            id: &p.config.id,
            name: p.config.name.trim(),
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "providers": providers }),
    ))
}

fn provider<'a>(state: &'a Federation, id: &str) -> Result<&'a Provider, ApiError> {
    state
        .providers
        .iter()
        .find(|p| p.config.id == id)
        .ok_or(ApiError::NotFound)
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum StartIntent {
    #[default]
    SignIn,
    Connect,
    Reauthenticate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    #[serde(default)]
    intent: StartIntent,
    #[serde(default)]
    return_to: Option<String>,
}

#[derive(Serialize)]
struct Started {
    authorization_url: String,
    expires_in: u64,
}

/// `POST /oidc/{provider}/start`: from our page only (Origin), counted in
/// the source's login window; a connection needs the caller's bearer token
/// and a recent proof of the password.
async fn start(state: &Federation, req: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::POST, "POST")?;
    let provider = provider(state, id)?;
    state.browser.check(req)?;
    let body: Start = json_body(req)?;
    let return_to = body.return_to.as_deref().unwrap_or("/");
    if !RETURN_PATHS.contains(&return_to) {
        return Err(ApiError::BadRequest(format!(
            "return_to must be one of the page's paths: {RETURN_PATHS:?}"
        )));
    }
    let now = state.clock.now();
    let intent = match body.intent {
        StartIntent::SignIn => Intent::SignIn,
        StartIntent::Connect => {
            let caller = authenticate_caller(req, &state.verifier, &state.store, now).await?;
            caller.require_fresh(state.fresh_auth, now)?;
            Intent::Connect {
                user_id: caller.user.id,
                session_id: caller.claims.sid.clone(),
                epoch: caller.user.session_epoch,
            }
        }
        StartIntent::Reauthenticate => {
            let caller = authenticate_caller(req, &state.verifier, &state.store, now).await?;
            // An account with a password proves it (`/reauthenticate`): a
            // provider never stands in for it.
            if caller.user.has_password() {
                return Err(ApiError::BadRequest(
                    "this account proves itself with its password: POST /reauthenticate".into(),
                ));
            }
            if !caller
                .user
                .identities
                .iter()
                .any(|i| i.issuer == provider.config.issuer)
            {
                return Err(ApiError::BadRequest(
                    "no identity of this provider is connected to your account".into(),
                ));
            }
            Intent::Reauthenticate {
                user_id: caller.user.id,
                session_id: caller.claims.sid.clone(),
                epoch: caller.user.session_epoch,
            }
        }
    };
    limit_source(&state.store, &Window::login(&state.limits), req, now).await?;
    let discovered = provider
        .discovered(&state.http, now)
        .await
        .map_err(|e| unavailable(provider, &e))?;
    // The browser's device cookie rides this same-origin request, not the
    // provider's redirect back: its hash goes with the round trip.
    let device_hash = presented_proof(req, None, &state.browser)?.map(|p| p.proof.hash());
    let (tx, secrets) =
        Transaction::begin(&provider.config.id, intent, return_to, device_hash, now);
    state.store.put_transaction(&tx).await?;
    let url = provider.authorization_url(&discovered.metadata, &tx, &secrets);
    let mut response = json_response(
        StatusCode::OK,
        &Started {
            authorization_url: url,
            expires_in: TRANSACTION_TTL.as_secs(),
        },
    );
    transaction_cookie(&mut response, &secrets.handle, TRANSACTION_TTL.as_secs());
    Ok(response)
}

fn unavailable(provider: &Provider, error: &FederationError) -> ApiError {
    tracing::warn!(provider = %provider.config.id, %error, "the provider is unavailable");
    ApiError::Unavailable
}

/// The round trip's cookie: `SameSite=Lax`, so that the provider's
/// redirect back (a cross-site top-level GET) carries it.
fn transaction_cookie(response: &mut Response<Body>, handle: &str, max_age: u64) {
    let text = format!(
        "{TRANSACTION_COOKIE}={handle}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=Lax"
    );
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// How a callback ended, as the page reads it from the fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    SignedIn,
    Connected,
    /// A fresh proof in the caller's session.
    Reauthenticated,
    /// The account has a second factor: the page asks for it, with the
    /// `mfa_token` in the fragment (`POST /login/second-factor`).
    SecondFactorRequired,
    /// The person declined at the provider.
    AccessDenied,
    /// The provider (or our store) was down or slow.
    Unavailable,
    /// The identity signs in to another account.
    IdentityInUse,
    /// No account for the identity, and sign-up is closed.
    SignUpClosed,
    /// Anything else: a round trip that is not this browser's, used,
    /// expired, or a token that does not check out. One answer.
    Failed,
}

impl Outcome {
    fn fragment(self, provider: &str) -> String {
        match self {
            Outcome::SignedIn => String::new(),
            // The token itself is added by the callback.
            Outcome::SecondFactorRequired => "#mfa_required=".into(),
            Outcome::Connected => format!("#connected={provider}"),
            Outcome::Reauthenticated => format!("#reauthenticated={provider}"),
            Outcome::AccessDenied => "#sign_in_error=access_denied".into(),
            Outcome::Unavailable => "#sign_in_error=provider_unavailable".into(),
            Outcome::IdentityInUse => "#sign_in_error=identity_in_use".into(),
            Outcome::SignUpClosed => "#sign_in_error=sign_up_closed".into(),
            Outcome::Failed => "#sign_in_error=sign_in_failed".into(),
        }
    }
}

impl From<StoreError> for Outcome {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Contended => {
                tracing::warn!(error = %e, "federation: the store is unavailable");
                Outcome::Unavailable
            }
            e => {
                tracing::error!(error = %e, "federation: store error");
                Outcome::Failed
            }
        }
    }
}

/// `GET /oidc/{provider}/callback`: always a 303 to the page. The round
/// trip's cookie is cleared whatever happens.
async fn callback(state: &Federation, req: &Request, id: &str) -> Response<Body> {
    let mut cookies = Vec::new();
    let mut taken = false;
    let (outcome, return_to) = match finish(state, req, id, &mut cookies, &mut taken).await {
        Ok((outcome, return_to)) => (outcome, return_to),
        Err(outcome) => (outcome, "/".to_owned()),
    };
    if outcome == Outcome::SignedIn {
        metrics::count(Event::LoginSucceeded);
    } else if !matches!(
        outcome,
        Outcome::Connected | Outcome::Reauthenticated | Outcome::SecondFactorRequired
    ) {
        tracing::info!(provider = %id, outcome = ?outcome, "federated sign-in failed");
        metrics::count(Event::LoginFailed);
    }
    let mut fragment = outcome.fragment(id);
    // The mfa_token, in the fragment only: a fragment goes to no server
    // (nor, with no-referrer, to any page's Referer).
    if let Some(token) = cookies.iter().find_map(|(c, _, _)| match c {
        Cookie::MfaToken(token) => Some(token),
        _ => None,
    }) {
        fragment.push_str(token);
    }
    let location = format!("{}{}{}", state.page, return_to, fragment);
    let mut response = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .header("referrer-policy", "no-referrer")
        .body(Body::Empty)
        .expect("a redirect builds");
    // The round trip's cookie goes with its round trip: a callback that
    // took none (a forged state, another browser's) leaves it be.
    if taken {
        transaction_cookie(&mut response, "", 0);
    }
    for (name, value, max_age) in cookies {
        match name {
            Cookie::Refresh => set_refresh_cookie(&mut response, &value, max_age),
            Cookie::Device => set_device_cookie(&mut response, &value, max_age),
            Cookie::MfaToken(_) => {}
        }
    }
    response
}

/// What a sign-in hands the browser: its cookies, or a second step's token
/// (in the fragment, not a cookie).
enum Cookie {
    Refresh,
    Device,
    MfaToken(String),
}

async fn finish(
    state: &Federation,
    req: &Request,
    id: &str,
    cookies: &mut Vec<(Cookie, String, u64)>,
    taken: &mut bool,
) -> Result<(Outcome, String), Outcome> {
    let provider = provider(state, id).map_err(|_| Outcome::Failed)?;
    let query: HashMap<String, String> = req
        .query_string_parameters()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let now = state.clock.now();
    // The browser's round trip, used up now whatever comes next: a second
    // callback with it (a replay, a racer) finds nothing.
    let handle = crate::browser::named_cookie_value(req, TRANSACTION_COOKIE)
        .map_err(|_| Outcome::Failed)?
        .ok_or_else(|| {
            tracing::info!(
                "callback without the round trip's cookie: another browser's, or expired"
            );
            Outcome::Failed
        })?;
    let sent_state = query.get("state").ok_or_else(|| {
        tracing::info!("callback without a state");
        Outcome::Failed
    })?;
    let tx = state
        .store
        .take_transaction(&handle_hash(&handle), &state_hash(sent_state), now)
        .await?
        .ok_or_else(|| {
            tracing::info!(
                "callback whose state is not its browser's round trip's, or one used or expired"
            );
            Outcome::Failed
        })?;
    *taken = true;
    if tx.provider != provider.config.id || !tx.state_matches(sent_state) {
        tracing::info!("callback whose provider is not its round trip's");
        return Err(Outcome::Failed);
    }
    let return_to = tx.return_to.clone();
    let discovered = provider.discovered(&state.http, now).await.map_err(|e| {
        tracing::warn!(provider = %id, error = %e, "discovery failed at the callback");
        Outcome::Unavailable
    })?;
    // RFC 9207: where the provider names itself in its answer, it must be
    // the one we sent the browser to (a mix-up's answer names another).
    let iss = query.get("iss");
    if (discovered.metadata.iss_parameter || iss.is_some())
        && iss.map(String::as_str) != Some(discovered.metadata.issuer.as_str())
    {
        tracing::info!(provider = %id, "callback whose iss is not the provider's");
        return Err(Outcome::Failed);
    }
    if let Some(error) = query.get("error") {
        let error: String = error
            .chars()
            .filter(char::is_ascii_graphic)
            .take(64)
            .collect();
        tracing::info!(provider = %id, %error, "the provider answered an error");
        return Err(match error.as_str() {
            "access_denied" | "login_required" | "consent_required" | "interaction_required" => {
                Outcome::AccessDenied
            }
            "temporarily_unavailable" | "server_error" => Outcome::Unavailable,
            _ => Outcome::Failed,
        });
    }
    let code = query
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or(Outcome::Failed)?;
    let claims = provider
        .redeem(&state.http, &discovered, code, &tx, now)
        .await
        .map_err(|e| {
            if e.is_unavailable() {
                tracing::warn!(provider = %id, error = %e, "the provider is unavailable");
                Outcome::Unavailable
            } else {
                tracing::warn!(provider = %id, error = %e, "the provider's answer is refused");
                Outcome::Failed
            }
        })?;
    let external = ExternalId {
        issuer: claims.iss.clone(),
        subject: claims.sub.clone(),
    };
    match tx.intent {
        Intent::Connect {
            user_id,
            ref session_id,
            epoch,
        } => {
            connect(state, provider, &external, user_id, session_id, epoch, now).await?;
            Ok((Outcome::Connected, return_to))
        }
        Intent::Reauthenticate {
            user_id,
            ref session_id,
            epoch,
        } => {
            reauthenticate(state, &external, user_id, session_id, epoch, now).await?;
            Ok((Outcome::Reauthenticated, return_to))
        }
        Intent::SignIn => {
            // A provider's sign-in is a first factor, whatever it says of
            // its own, unless the provider is trusted for its MFA and says
            // it did one, for an account with a second factor whose
            // identity at the provider was linked before (not by this
            // sign-in's address): such an account asks for its code here.
            let asserted = provider.config.trust_mfa
                && claims.amr.iter().any(|m| m == crate::sessions::amr::MFA);
            let linked_before = asserted && state.store.get_identity(&external).await?.is_some();
            let user = account_for(state, req, provider, &external, &claims, now).await?;
            let device = tx.device_hash.as_deref();
            let provider_mfa = asserted && linked_before && user.second_factor;
            if user.second_factor && !provider_mfa {
                let token = second_factor_ticket(state, &user, device, now).await?;
                cookies.push((Cookie::MfaToken(token), String::new(), 0));
                return Ok((Outcome::SecondFactorRequired, return_to));
            }
            start_session(state, req, &user, device, provider_mfa, now, cookies).await?;
            Ok((Outcome::SignedIn, return_to))
        }
    }
}

/// Connects `external` to the user who started the round trip, if that
/// user's session is still as it was.
async fn connect(
    state: &Federation,
    provider: &Provider,
    external: &ExternalId,
    user_id: crate::users::UserId,
    session_id: &str,
    epoch: u64,
    now: i64,
) -> Result<(), Outcome> {
    let user = caller_as_it_was(state, user_id, session_id, epoch, now).await?;
    if let Some(linked) = state.store.get_identity(external).await? {
        return if linked.user_id == user.id {
            Ok(())
        } else {
            Err(Outcome::IdentityInUse)
        };
    }
    let identity = link(external, provider, &user, now);
    let name = provider.config.name.trim();
    match state
        .store
        .connect_identity(&user, &identity, Some(session_id), name, now)
        .await
    {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => return Err(Outcome::IdentityInUse),
        Err(StoreError::Conflict) => {
            tracing::info!(user_id = %user.id, "connection refused: the session ended, the account changed, or it holds the most identities");
            return Err(Outcome::Failed);
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(audit = "identity_connected", user_id = %user.id, provider = %provider.config.id, "identity connected");
    Ok(())
}

/// The user who started a round trip (to connect, or to prove itself), if
/// the session that started it still stands as it was.
async fn caller_as_it_was(
    state: &Federation,
    user_id: crate::users::UserId,
    session_id: &str,
    epoch: u64,
    now: i64,
) -> Result<User, Outcome> {
    state
        .store
        .get_by_id(user_id)
        .await?
        .filter(|u| u.active && u.session_is_live(session_id, epoch, now))
        .ok_or(Outcome::Failed)
}

/// The link of `external` to `user`, through `provider`, made `now`.
fn link(external: &ExternalId, provider: &Provider, user: &User, now: i64) -> Identity {
    Identity {
        id: external.clone(),
        provider: provider.config.id.clone(),
        user_id: user.id,
        username: user.username.clone(),
        created_at: now,
    }
}

/// Marks the caller's session proved just now (its `auth_time`), when
/// `external` is an identity of the caller's and the session still stands.
async fn reauthenticate(
    state: &Federation,
    external: &ExternalId,
    user_id: crate::users::UserId,
    session_id: &str,
    epoch: u64,
    now: i64,
) -> Result<(), Outcome> {
    let user = caller_as_it_was(state, user_id, session_id, epoch, now).await?;
    if !user.identities.contains(external) || user.has_password() {
        tracing::info!(user_id = %user.id, "a fresh proof by an identity that is not the caller's, or for an account with a password");
        return Err(Outcome::Failed);
    }
    let proof = uuid::Uuid::new_v4().to_string();
    if let Err(e) = state
        .store
        .reauthenticate(
            session_id,
            &user,
            now,
            &proof,
            &SignIn::Provider.amr(),
            None,
        )
        .await
        && !state.store.proof_stored(session_id, &proof).await
    {
        return Err(e.into());
    }
    tracing::info!(user_id = %user.id, "re-authenticated through a provider");
    metrics::count(Event::Reauthenticated);
    Ok(())
}

#[derive(Serialize)]
struct IdentityView {
    /// The configured provider's id and name, where it is still configured.
    provider: Option<String>,
    name: Option<String>,
    issuer: String,
    connected_at: Option<i64>,
}

#[derive(Serialize)]
struct IdentitiesView {
    has_password: bool,
    identities: Vec<IdentityView>,
    /// A second factor (TOTP) is set up: every sign-in asks for it.
    second_factor: bool,
}

/// `GET /account/identities`: the caller's outside identities, and whether
/// the account has a password (the ways it can sign in).
async fn identities(state: &Federation, req: &Request) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::GET, "GET")?;
    let now = state.clock.now();
    let caller = authenticate_caller(req, &state.verifier, &state.store, now).await?;
    let mut identities = Vec::new();
    for id in &caller.user.identities {
        let link = state.store.get_identity(id).await?;
        let configured = state
            .providers
            .iter()
            .find(|p| p.config.issuer == id.issuer);
        identities.push(IdentityView {
            provider: configured.map(|p| p.config.id.clone()),
            name: configured.map(|p| p.config.name.trim().to_owned()),
            issuer: id.issuer.clone(),
            connected_at: link.map(|l| l.created_at),
        });
    }
    Ok(json_response(
        StatusCode::OK,
        &IdentitiesView {
            has_password: caller.user.has_password(),
            identities,
            second_factor: caller.user.second_factor,
        },
    ))
}

/// `DELETE /account/identities/{provider}`: disconnects the caller's
/// identities of `provider`, after a recent proof, while another way to sign
/// in remains (a password, or another identity): else 409.
async fn disconnect(
    state: &Federation,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    require_method(req, Method::DELETE, "DELETE")?;
    let provider = provider(state, id)?;
    let now = state.clock.now();
    let caller = authenticate_caller(req, &state.verifier, &state.store, now).await?;
    caller.require_fresh(state.fresh_auth, now)?;
    let caller_sid = caller.claims.sid;
    let user = caller.user;
    let ids: Vec<ExternalId> = user
        .identities
        .iter()
        .filter(|i| i.issuer == provider.config.issuer)
        .cloned()
        .collect();
    if ids.is_empty() {
        return Err(ApiError::NotFound);
    }
    // The ways in that remain: identities of providers still configured
    // (one of a provider removed signs in no more).
    let remaining = user
        .identities
        .iter()
        .filter(|i| !ids.contains(i))
        .filter(|i| state.providers.iter().any(|p| p.config.issuer == i.issuer))
        .count();
    if !user.has_password() && remaining == 0 {
        return Err(ApiError::Conflict(
            "this is the account's only way to sign in: set a password or connect another provider first",
        ));
    }
    let name = provider.config.name.trim();
    match state
        .store
        .disconnect_identities(&user, &caller_sid, &ids, name, now)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict) => {
            return Err(ApiError::Conflict(
                "the account changed meanwhile; try again",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(audit = "identity_disconnected", user_id = %user.id, provider = %provider.config.id, "identity disconnected");
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "message": "Disconnected" }),
    ))
}

/// The account `external` signs in to: its link's, else (where the
/// provider is authoritative for the address's domain, and both it and we
/// hold the address verified) the account of that address, else a new one.
async fn account_for(
    state: &Federation,
    req: &Request,
    provider: &Provider,
    external: &ExternalId,
    claims: &IdClaims,
    now: i64,
) -> Result<User, Outcome> {
    if let Some(linked) = state.store.get_identity(external).await? {
        return linked_user(state, &linked).await;
    }
    if let Some(user) = by_verified_address(state, provider, claims).await? {
        let identity = link(external, provider, &user, now);
        let name = provider.config.name.trim();
        match state
            .store
            .connect_identity(&user, &identity, None, name, now)
            .await
        {
            Ok(()) => {
                tracing::info!(audit = "identity_connected", user_id = %user.id, provider = %provider.config.id, by = "verified_address", "identity connected");
                return state
                    .store
                    .get(&user.username)
                    .await?
                    .filter(|u| u.id == user.id)
                    .ok_or(Outcome::Failed);
            }
            Err(StoreError::AlreadyExists) => {
                let linked = state
                    .store
                    .get_identity(external)
                    .await?
                    .ok_or(Outcome::Failed)?;
                return linked_user(state, &linked).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if state.sign_up == SignUp::AdminsOnly {
        return Err(Outcome::SignUpClosed);
    }
    limit_source(&state.store, &Window::register(&state.limits), req, now)
        .await
        .map_err(|_| Outcome::Failed)?;
    let mut username = proposed_username(claims);
    for _ in 0..USERNAME_TRIES {
        let mut user = User::new(
            username.clone(),
            proposed_name(claims, &username),
            NO_PASSWORD.into(),
        );
        user.created_at = now;
        user.identities.insert(external.clone());
        let identity = link(external, provider, &user, now);
        match state.store.create_federated_user(&user, &identity).await {
            Ok(()) => {
                tracing::info!(audit = "account_created", user_id = %user.id, provider = %provider.config.id, "account created through a provider");
                return Ok(user);
            }
            Err(NewAccountError::UsernameTaken) => username = with_suffix(&username),
            Err(NewAccountError::IdentityTaken) => {
                // A racer's first sign-in made the account: it is ours too.
                let linked = state
                    .store
                    .get_identity(external)
                    .await?
                    .ok_or(Outcome::Failed)?;
                return linked_user(state, &linked).await;
            }
            Err(NewAccountError::Store(e)) => return Err(e.into()),
        }
    }
    tracing::error!("no free username for a new account");
    Err(Outcome::Failed)
}

async fn linked_user(state: &Federation, linked: &Identity) -> Result<User, Outcome> {
    let user = state
        .store
        .get(&linked.username)
        .await?
        .filter(|u| u.id == linked.user_id && u.identities.contains(&linked.id));
    match user {
        Some(user) if user.active => Ok(user),
        Some(_) => Err(Outcome::Failed),
        None => {
            tracing::error!(user_id = %linked.user_id, "an identity's link names no user");
            Err(Outcome::Failed)
        }
    }
}

/// The account whose verified address the provider vouches for, where it
/// is configured as authoritative for the address's domain.
async fn by_verified_address(
    state: &Federation,
    provider: &Provider,
    claims: &IdClaims,
) -> Result<Option<User>, Outcome> {
    let domains = &provider.config.link_verified_email_domains;
    if domains.is_empty() || !claims.email_verified {
        return Ok(None);
    }
    let Some(email) = claims.email.as_deref().and_then(|e| Email::parse(e).ok()) else {
        return Ok(None);
    };
    let domain = email.as_str().rsplit('@').next().unwrap_or_default();
    if !domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        return Ok(None);
    }
    // Never an account with powers, and never one that has an identity at
    // this provider already: a mailbox the provider gave someone else (an
    // employee who left) does not take over the old owner's account.
    Ok(state.store.user_by_email(&email).await?.filter(|u| {
        u.active
            && u.email.as_ref() == Some(&email)
            && u.roles.is_empty()
            && !u.identities.iter().any(|i| i.issuer == claims.iss)
    }))
}

/// The login ticket a provider's sign-in of `user` leaves for the second
/// step (bound to the device proof presented at the start, if it vouches),
/// and its token.
async fn second_factor_ticket(
    state: &Federation,
    user: &User,
    device_hash: Option<&str>,
    now: i64,
) -> Result<String, Outcome> {
    crate::runtime::record_user(&user.id);
    let vouching = vouching_device(state, user, device_hash, now).await;
    let (ticket, token) = MfaTicket::issue(user, SignIn::Provider, vouching.map(|d| d.hash), now);
    state.store.put_mfa_ticket(&ticket).await?;
    tracing::info!(user_id = %user.id, "federated sign-in: second factor required");
    Ok(token.expose().to_owned())
}

/// The device proof presented at the start, if it vouches for `user`; one
/// that cannot be read vouches for nothing (logged).
async fn vouching_device(
    state: &Federation,
    user: &User,
    device_hash: Option<&str>,
    now: i64,
) -> Option<crate::devices::Device> {
    let hash = device_hash?;
    state
        .store
        .get_device(hash)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a device record could not be read: it vouches for nothing");
            None
        })
        .filter(|d| d.vouches_for(user, now))
}

/// The session a sign-in begins: the same as a password login's.
async fn start_session(
    state: &Federation,
    req: &Request,
    user: &User,
    device_hash: Option<&str>,
    provider_mfa: bool,
    now: i64,
    cookies: &mut Vec<(Cookie, String, u64)>,
) -> Result<(), Outcome> {
    crate::runtime::record_user(&user.id);
    let mut amr = SignIn::Provider.amr();
    if provider_mfa {
        amr = crate::sessions::amr::with(&amr, crate::sessions::amr::MFA);
    }
    // The device proof presented at the start, if it vouches for this user:
    // a known device (no new-device notice), its proof retired for the new.
    let vouching = vouching_device(state, user, device_hash, now).await;
    let new = NewSession::sign(
        SessionSeed::draw(),
        &state.tokens,
        &state.sessions,
        user,
        user.session_epoch,
        now,
        origin(req, SignIn::Provider, vouching.is_some()),
        amr,
    )
    .await
    .map_err(|e| match e {
        ApiError::Unavailable => Outcome::Unavailable,
        _ => Outcome::Failed,
    })?;
    let device = DeviceChange {
        issued: &new.device,
        retired: vouching.as_ref(),
    };
    if let Err(e) = state
        .store
        .start_session(&new.session, &new.first, user, &device)
        .await
        && !state.store.session_stored(&new.session.id).await
    {
        return Err(e.into());
    }
    tracing::info!(user_id = %user.id, "federated sign-in succeeded");
    let tokens = new.into_tokens("Login Success");
    if let Some(token) = tokens.refresh_token {
        cookies.push((Cookie::Refresh, token, tokens.refresh_expires_in));
    }
    if let (Some(proof), Some(max_age)) = (tokens.device, tokens.device_expires_in) {
        cookies.push((Cookie::Device, proof, max_age));
    }
    Ok(())
}
