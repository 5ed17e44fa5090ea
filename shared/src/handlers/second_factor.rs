//! The second-factor function: the only one that holds the data key that
//! opens TOTP secrets (unsealed once, at init). `POST /account/second-factor`
//! begins an enrolment (a fresh login; a secret and its `otpauth://` URI),
//! `POST /account/second-factor/confirm` completes it with a code from the
//! app (ten recovery codes, shown once), and `POST /login/second-factor`
//! completes a login that answered `mfa_required`, with a code or a recovery
//! code, answering as a login does.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::{NewSession, SessionSeed, authenticate_caller, limit_source};
use crate::browser::{BrowserPolicy, Delivery, device_delivery, presented_proof};
use crate::clock::Clock;
use crate::devices::DeviceChange;
use crate::http::{ApiError, json_body, json_response, require_method};
use crate::metrics::{self, Event};
use crate::mfa::{ENROLMENT_TTL, Factor, FactorState, MfaTicket, TOTP_ISSUER, mfa_token_hash};
use crate::second_factor::{RecoveryCodes, SecretBox, recovery_code_hash};
use crate::sessions::SessionConfig;
use crate::store::{CodeTry, FactorProof, Store, StoreError};
use crate::throttle::{RateLimits, Window};
use crate::tokens::{TokenIssuer, TokenVerifier};
use crate::totp::{TotpCode, TotpSecret};
use crate::users::User;

pub const LOGIN_SECOND_FACTOR_PATH: &str = "/login/second-factor";
pub const FACTOR_PATH: &str = "/account/second-factor";
pub const CONFIRM_PATH: &str = "/account/second-factor/confirm";
pub const RECOVERY_CODES_PATH: &str = "/account/second-factor/recovery-codes";
pub const VERIFY_PATH: &str = "/account/second-factor/verify";

/// What the second-factor function holds between invocations.
pub struct SecondFactor {
    pub store: Store,
    pub verifier: TokenVerifier,
    pub issuer: TokenIssuer,
    pub sessions: SessionConfig,
    pub limits: RateLimits,
    pub browser: BrowserPolicy,
    /// Opens and seals TOTP secrets: the data key, unsealed at init.
    pub secrets: SecretBox,
    /// How recent a proof of the password an enrolment needs.
    pub fresh_auth: std::time::Duration,
    pub clock: Clock,
}

/// Routes by path; each route answers its own 405s.
pub async fn handle(state: &SecondFactor, req: Request) -> Response<Body> {
    let result = match req.uri().path().trim_end_matches('/') {
        LOGIN_SECOND_FACTOR_PATH => sign_in(state, req).await,
        FACTOR_PATH if req.method() == Method::DELETE => remove(state, req).await,
        FACTOR_PATH => enrol(state, req).await,
        CONFIRM_PATH => confirm(state, req).await,
        RECOVERY_CODES_PATH => new_recovery_codes(state, req).await,
        VERIFY_PATH => step_up(state, req).await,
        _ => Err(ApiError::NotFound),
    };
    result.unwrap_or_else(ApiError::into_response)
}

#[derive(Serialize)]
struct Enrolment {
    message: &'static str,
    /// The secret in base32, for typing into an app.
    secret: String,
    /// The same as an `otpauth://` URI, for the page's QR code.
    otpauth_uri: String,
    /// Seconds left to confirm it with a code.
    expires_in: u64,
}

/// Begins (or begins again) an enrolment: a new secret, sealed, stored as
/// a pending factor that protects nothing until a code from it confirms it.
async fn enrol(state: &SecondFactor, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST, DELETE")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    // An account with a passkey has a second factor already: a code factor
    // beside it is added with its proof, or the password alone would make
    // one (and with it `aal2`).
    if caller.user.has_second_factor() {
        caller.require_second_factor(state.fresh_auth, now)?;
    } else {
        caller.require_fresh(state.fresh_auth, now)?;
    }
    limit_source(&state.store, &Window::login(&state.limits), &req, now).await?;
    let (user, sid) = (caller.user, caller.claims.sid);
    if user.second_factor {
        return Err(ApiError::Conflict(
            "a second factor is set up already; remove it first",
        ));
    }
    let secret = TotpSecret::generate();
    let factor = Factor::pending(user.id, &sid, state.secrets.seal(&user.id, &secret), now);
    match state.store.put_pending_factor(&factor).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(ApiError::Conflict(
                "a second factor is set up already; remove it first",
            ));
        }
        // Stored, its answer lost: read back.
        Err(e) => match state.store.get_factor(&user.id).await {
            Ok(Some(stored)) if stored == factor => {}
            _ => return Err(e.into()),
        },
    }
    tracing::info!(user_id = %user.id, "second factor enrolment begun");
    Ok(json_response(
        StatusCode::CREATED,
        &Enrolment {
            message: "Scan the code or type the secret into an authenticator app, then confirm with a code from it",
            secret: secret.base32().expose().to_owned(),
            otpauth_uri: secret
                .otpauth_uri(TOTP_ISSUER, user.username.as_str())
                .expose()
                .to_owned(),
            expires_in: ENROLMENT_TTL.as_secs(),
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirmation {
    code: String,
}

#[derive(Serialize)]
struct Confirmed {
    message: &'static str,
    /// Ten codes, each good once, shown this once.
    recovery_codes: Vec<String>,
}

/// Completes an enrolment with a code from the app: the factor becomes
/// active (every sign-in asks for it), and its recovery codes are issued.
async fn confirm(state: &SecondFactor, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    let body: Confirmation = json_body(&req)?;
    let code = TotpCode::parse(&body.code)
        .ok_or_else(|| ApiError::BadRequest("code must be the 6 digits the app shows".into()))?;
    limit_source(&state.store, &Window::login(&state.limits), &req, now).await?;
    let (user, sid) = (caller.user, caller.claims.sid);
    // Only the session that began it confirms it: a token of another
    // session (a stolen one) finds no enrolment.
    let no_enrolment =
        ApiError::Conflict("no enrolment of this session waits for a code; begin one");
    let factor = state
        .store
        .get_factor(&user.id)
        .await?
        .filter(|f| {
            f.state == FactorState::Pending
                && !f.enrolment_expired(now)
                && f.session.as_deref() == Some(sid.as_str())
        })
        .ok_or(no_enrolment)?;
    match state
        .store
        .reserve_code_try(&factor, None, false, now)
        .await?
    {
        CodeTry::Reserved => {}
        // Too many wrong codes (racers' included), or begun again meanwhile.
        _ => {
            return Err(ApiError::Conflict(
                "the enrolment changed or had too many wrong codes; begin again",
            ));
        }
    }
    let Some(step) = open(state, &user, &factor)?.verify(&code, now, None) else {
        tracing::info!(user_id = %user.id, "second factor enrolment: wrong code");
        return Err(ApiError::InvalidCode);
    };
    let codes = RecoveryCodes::generate();
    let hashes = codes.hashes(&user.id);
    if let Err(e) = state
        .store
        .confirm_factor(&user, &factor, step, &hashes)
        .await
    {
        // Committed, its answer lost: the factor active with these codes.
        let committed = matches!(
            state.store.get_factor(&user.id).await,
            Ok(Some(stored)) if stored.state == FactorState::Active
                && stored.sealed == factor.sealed
                && stored.recovery == hashes.iter().cloned().collect()
        );
        if !committed {
            return Err(match e {
                StoreError::Conflict => ApiError::Conflict(
                    "the enrolment or the account changed meanwhile; begin again",
                ),
                e => e.into(),
            });
        }
    }
    tracing::info!(user_id = %user.id, "second factor added");
    Ok(json_response(
        StatusCode::OK,
        &Confirmed {
            message: "Second factor added. Keep these recovery codes somewhere safe: each works once, and they are not shown again",
            recovery_codes: codes.codes.iter().map(|c| c.expose().to_owned()).collect(),
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecondStep {
    mfa_token: String,
    /// A code from the app.
    #[serde(default)]
    code: Option<String>,
    /// Or one of the recovery codes.
    #[serde(default)]
    recovery_code: Option<String>,
    #[serde(default)]
    refresh_token_delivery: Delivery,
    #[serde(default)]
    device: Option<String>,
}

/// The second step of a login: the `mfa_token` its password step answered,
/// and a code or a recovery code. Each try is counted on the ticket (three
/// wrong codes void it) and on the factor (a hundred in a row suspend it)
/// before the code is checked; a right one begins the session as a login
/// does, in one transaction that spends the ticket and the code.
async fn sign_in(state: &SecondFactor, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let body: SecondStep = json_body(&req)?;
    let hash = mfa_token_hash(&body.mfa_token).ok_or(ApiError::InvalidMfaToken)?;
    let proof = Typed::from_body(&body.code, &body.recovery_code)?;
    let delivery = body.refresh_token_delivery;
    if delivery == Delivery::Cookie {
        state.browser.check(&req)?;
    }
    let now = state.clock.now();
    limit_source(&state.store, &Window::login(&state.limits), &req, now).await?;
    let presented = presented_proof(&req, body.device, &state.browser)?;

    let ticket = state
        .store
        .get_mfa_ticket(&hash, now)
        .await?
        .filter(|t| t.is_live(now))
        .ok_or(ApiError::InvalidMfaToken)?;
    let (user, factor) = tokio::try_join!(
        state.store.get(&ticket.username),
        state.store.get_factor(&ticket.user_id)
    )?;
    let (Some(user), Some(factor)) = (user.filter(|u| ticket.binds(u)), factor) else {
        return Err(ApiError::InvalidMfaToken);
    };
    if factor.state != FactorState::Active {
        return Err(ApiError::InvalidMfaToken);
    }
    crate::runtime::record_user(&user.id);
    let recovery = matches!(proof, Typed::Recovery(_));
    if !recovery && factor.is_suspended() {
        return Err(ApiError::FactorSuspended);
    }
    match state
        .store
        .reserve_code_try(&factor, Some(&ticket), recovery, now)
        .await?
    {
        CodeTry::Reserved => {}
        CodeTry::TicketVoid => return Err(ApiError::InvalidMfaToken),
        // Suspended by racers meanwhile, or no longer the factor read.
        CodeTry::FactorRefused => {
            let now_suspended = matches!(
                state.store.get_factor(&user.id).await?,
                Some(f) if f.sealed == factor.sealed && f.is_suspended()
            );
            return Err(if now_suspended && !recovery {
                ApiError::FactorSuspended
            } else {
                ApiError::InvalidMfaToken
            });
        }
    }
    let seed = SessionSeed::draw();
    let Some(spent) = check(state, &user, &factor, &proof, now)? else {
        tracing::info!(user_id = %user.id, "second factor: wrong code");
        metrics::count(Event::LoginFailed);
        // The owner hears of it (ASVS 6.3.5: someone got past the first
        // step), at most once an hour. A notice that cannot be written is
        // logged only.
        if let Err(e) = state.store.notice_wrong_code(&user, now).await {
            tracing::warn!(user_id = %user.id, error = %e, "the wrong-code notice was not written");
        }
        return Err(ApiError::InvalidCode);
    };

    let vouching = match &ticket.device {
        Some(hash) => super::presented_device_by_hash(&state.store, hash).await?,
        None => None,
    };
    let new = NewSession::sign(
        seed,
        &state.issuer,
        &state.sessions,
        &user,
        user.session_epoch,
        now,
        super::origin(&req, ticket.method, ticket.device.is_some()),
        crate::sessions::amr::with_second_factor(&ticket.method.amr(), spent.method()),
    )
    .await?;
    let device = DeviceChange {
        issued: &new.device,
        retired: vouching.as_ref(),
    };
    let stored = state
        .store
        .start_session_by_factor(
            &new.session,
            &new.first,
            &user,
            &device,
            &ticket,
            &factor,
            &spent,
            now,
        )
        .await;
    if let Err(e) = stored
        && !state.store.session_stored(&new.session.id).await
    {
        return Err(match e {
            // A racer used the ticket or the code first, or the account
            // changed: say which, as far as a read can tell.
            StoreError::Conflict => lost_sign_in(state, &ticket, &spent, now).await,
            e => e.into(),
        });
    }
    tracing::info!(user_id = %user.id, "login succeeded with a second factor");
    metrics::count(Event::LoginSucceeded);
    let device_delivery = device_delivery(presented.as_ref(), delivery);
    Ok(new
        .into_tokens("Login Success")
        .into_response(delivery, device_delivery))
}

/// What was typed at the second step.
enum Typed {
    Code(TotpCode),
    Recovery(String),
}

impl Typed {
    /// Exactly one of a code and a recovery code.
    fn from_body(code: &Option<String>, recovery_code: &Option<String>) -> Result<Self, ApiError> {
        match (code, recovery_code) {
            (Some(code), None) => Ok(Typed::Code(TotpCode::parse(code).ok_or_else(|| {
                ApiError::BadRequest("code must be the 6 digits the app shows".into())
            })?)),
            (None, Some(code)) => Ok(Typed::Recovery(code.clone())),
            _ => Err(ApiError::BadRequest(
                "send either code or recovery_code".into(),
            )),
        }
    }
}

/// A code or a recovery code in a request's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FactorProofBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

/// A fresh proof of `user`'s active second factor, within a signed-in
/// session: counted on the factor before it is checked (a hundred wrong in
/// a row suspend codes from the app), then checked. Returns the factor as
/// read and the proof, for the act's own transaction to spend.
async fn prove_factor(
    state: &SecondFactor,
    user: &User,
    typed: &Typed,
    now: i64,
) -> Result<(Factor, FactorProof), ApiError> {
    let no_factor = || ApiError::Conflict("no second factor is set up");
    if !user.second_factor {
        return Err(no_factor());
    }
    let factor = state
        .store
        .get_factor(&user.id)
        .await?
        .filter(|f| f.state == FactorState::Active)
        .ok_or_else(no_factor)?;
    let recovery = matches!(typed, Typed::Recovery(_));
    if !recovery && factor.is_suspended() {
        return Err(ApiError::FactorSuspended);
    }
    match state
        .store
        .reserve_code_try(&factor, None, recovery, now)
        .await?
    {
        CodeTry::Reserved => {}
        _ if !recovery => return Err(ApiError::FactorSuspended),
        _ => {
            return Err(ApiError::Conflict(
                "the second factor changed meanwhile; try again",
            ));
        }
    }
    match check(state, user, &factor, typed, now)? {
        Some(spent) => Ok((factor, spent)),
        None => {
            tracing::info!(user_id = %user.id, "second factor proof failed");
            Err(ApiError::InvalidCode)
        }
    }
}

/// What changing the factor takes: a fresh login, and in the body a code
/// or a recovery code, proved (`prove_factor`); the caller, the factor as
/// read and the proof to spend.
async fn fresh_factor_proof(
    state: &SecondFactor,
    req: &Request,
    now: i64,
) -> Result<(User, Factor, FactorProof), ApiError> {
    let caller = authenticate_caller(req, &state.verifier, &state.store, now).await?;
    caller.require_fresh(state.fresh_auth, now)?;
    let body: FactorProofBody = json_body(req)?;
    let typed = Typed::from_body(&body.code, &body.recovery_code)?;
    limit_source(&state.store, &Window::login(&state.limits), req, now).await?;
    let user = caller.user;
    let (factor, spent) = prove_factor(state, &user, &typed, now).await?;
    Ok((user, factor, spent))
}

#[derive(Serialize)]
struct SteppedUp {
    message: &'static str,
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

/// `POST /account/second-factor/verify`: within a fresh login, a code (or
/// a recovery code), counted and spent as a sign-in's. The answer is a new
/// access token of the same session that says so (`acr` `aal2`), for acts
/// that need the second factor (RFC 9470's step up); the session's
/// refreshes carry it on. It renews nothing else: `auth_time` stays the
/// session's latest proof of the first factor (the password's, or a
/// provider's), so a code never stands in for a fresh password, and `aal2`
/// with a recent `auth_time` says both were proved, the code since.
async fn step_up(state: &SecondFactor, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let caller = authenticate_caller(&req, &state.verifier, &state.store, now).await?;
    caller.require_fresh(state.fresh_auth, now)?;
    let body: FactorProofBody = json_body(&req)?;
    let typed = Typed::from_body(&body.code, &body.recovery_code)?;
    limit_source(&state.store, &Window::login(&state.limits), &req, now).await?;
    let (user, sid) = (caller.user, caller.claims.sid);
    let (factor, spent) = prove_factor(state, &user, &typed, now).await?;
    // The session's first factor, and this one now.
    let first: Vec<String> = caller
        .claims
        .amr
        .iter()
        .filter(|m| {
            [
                crate::sessions::amr::PASSWORD,
                crate::sessions::amr::FEDERATED,
            ]
            .contains(&m.as_str())
        })
        .cloned()
        .collect();
    let amr = crate::sessions::amr::with_second_factor(&first, spent.method());
    let auth_time = caller.claims.auth_time;
    let access = super::sign_access_token(&state.issuer, &user, &sid, auth_time, &amr, now).await?;
    let proof = uuid::Uuid::new_v4().to_string();
    if let Err(e) = state
        .store
        .step_up(&sid, &user, &factor, &spent, &amr, auth_time, &proof, now)
        .await
        && !state.store.proof_stored(&sid, &proof).await
    {
        return Err(match e {
            StoreError::Conflict => ApiError::Conflict(
                "the code was used, or the session or the factor changed meanwhile; try again",
            ),
            e => e.into(),
        });
    }
    tracing::info!(user_id = %user.id, "second factor verified in a session");
    Ok(json_response(
        StatusCode::OK,
        &SteppedUp {
            message: "Second factor verified",
            access_token: access.token,
            token_type: "Bearer",
            expires_in: access.expires_in,
        },
    ))
}

/// `DELETE /account/second-factor`: a fresh login and a code (or a
/// recovery code) remove the factor; the owner is told.
async fn remove(state: &SecondFactor, req: Request) -> Result<Response<Body>, ApiError> {
    let now = state.clock.now();
    let (user, factor, spent) = fresh_factor_proof(state, &req, now).await?;
    if let Err(e) = state.store.remove_factor(&user, &factor, &spent, now).await {
        // Committed, its answer lost: the factor and the flag gone.
        let gone = matches!(state.store.get_factor(&user.id).await, Ok(None))
            && matches!(state.store.get(&user.username).await, Ok(Some(u)) if u.id == user.id && !u.second_factor);
        if !gone {
            return Err(match e {
                StoreError::Conflict => ApiError::Conflict(
                    "the code was used or the account changed meanwhile; try again",
                ),
                e => e.into(),
            });
        }
    }
    tracing::info!(audit = "second_factor_removed", user_id = %user.id, "second factor removed");
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"message": "Second factor removed"}),
    ))
}

/// `POST /account/second-factor/recovery-codes`: a fresh login and a code
/// (or a recovery code) replace every recovery code with ten new ones,
/// shown once; the owner is told.
async fn new_recovery_codes(
    state: &SecondFactor,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::POST, "POST")?;
    let now = state.clock.now();
    let (user, factor, spent) = fresh_factor_proof(state, &req, now).await?;
    let codes = RecoveryCodes::generate();
    let hashes = codes.hashes(&user.id);
    if let Err(e) = state
        .store
        .replace_recovery_codes(&user, &factor, &spent, &hashes, now)
        .await
    {
        let committed = matches!(
            state.store.get_factor(&user.id).await,
            Ok(Some(stored)) if stored.recovery == hashes.iter().cloned().collect()
        );
        if !committed {
            return Err(match e {
                StoreError::Conflict => ApiError::Conflict(
                    "the code was used or the factor changed meanwhile; try again",
                ),
                e => e.into(),
            });
        }
    }
    tracing::info!(audit = "recovery_codes_replaced", user_id = %user.id, "recovery codes replaced");
    Ok(json_response(
        StatusCode::OK,
        &Confirmed {
            message: "New recovery codes. Keep them somewhere safe: each works once, they are not shown again, and the old ones no longer work",
            recovery_codes: codes.codes.iter().map(|c| c.expose().to_owned()).collect(),
        },
    ))
}

/// The proof `typed` makes for `user`'s `factor` at `now`, if it is right
/// and unused: a code's step, or a recovery code's hash.
fn check(
    state: &SecondFactor,
    user: &User,
    factor: &Factor,
    typed: &Typed,
    now: i64,
) -> Result<Option<FactorProof>, ApiError> {
    Ok(match typed {
        Typed::Code(code) => open(state, user, factor)?
            .verify(code, now, factor.last_step)
            .map(|step| FactorProof::Code { step }),
        Typed::Recovery(typed) => recovery_code_hash(&user.id, typed)
            .filter(|hash| factor.recovery.contains(hash))
            .map(|hash| FactorProof::Recovery { hash }),
    })
}

/// `factor`'s secret: one that does not open is ours to fix (logged, 500).
fn open(state: &SecondFactor, user: &User, factor: &Factor) -> Result<TotpSecret, ApiError> {
    state.secrets.open(&user.id, &factor.sealed).map_err(|e| {
        tracing::error!(user_id = %user.id, error = %e, "a second factor's secret does not open");
        ApiError::Internal
    })
}

/// Why a second step's write lost: the ticket used (a racer's sign-in), the
/// code's step or the recovery code spent by a racer, or else the account.
async fn lost_sign_in(
    state: &SecondFactor,
    ticket: &MfaTicket,
    spent: &FactorProof,
    now: i64,
) -> ApiError {
    match state.store.get_mfa_ticket(&ticket.hash, now).await {
        Ok(None) => return ApiError::InvalidMfaToken,
        Err(e) => return e.into(),
        Ok(Some(_)) => {}
    }
    match state.store.get_factor(&ticket.user_id).await {
        Ok(Some(factor)) => {
            let used = match spent {
                FactorProof::Code { step } => factor.last_step.is_some_and(|last| last >= *step),
                FactorProof::Recovery { hash } => !factor.recovery.contains(hash),
            };
            if used {
                ApiError::InvalidCode
            } else {
                ApiError::Conflict("the account changed during the login; log in again")
            }
        }
        Ok(None) => ApiError::InvalidMfaToken,
        Err(e) => e.into(),
    }
}
