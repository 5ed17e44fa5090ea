//! Request handlers, one module per function. Each takes its state and a request
//! and always returns a response: errors become our JSON error shape here.
//! What several handlers share (checking a bearer token against the user item,
//! starting a session) lives below.

pub mod change_password;
pub mod discovery;
pub mod get_name;
pub mod login;
pub mod logout;
pub mod refresh;
pub mod register;

use lambda_http::Request;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Serialize;

use crate::http::{ApiError, bearer_token, json_response};
use crate::keys::SignError;
use crate::passwords::PasswordError;
use crate::sessions::{RefreshRecord, RefreshState, RefreshToken, Session, SessionConfig};
use crate::store::Store;
use crate::tokens::{Claims, TokenIssuer, TokenVerifier};
use crate::users::{User, Username};

/// A request whose bearer token checks out against the current user item.
pub(crate) struct Authenticated {
    pub claims: Claims,
    pub user: User,
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
    let claims = verifier.verify(bearer_token(req)?)?;
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
    pub refresh_token: String,
    pub refresh_expires_in: u64,
}

impl TokenPair {
    pub fn into_response(self) -> Response<Body> {
        json_response(StatusCode::OK, &self)
    }
}

pub(crate) async fn sign_access_token(
    issuer: &TokenIssuer,
    user: &User,
    sid: &str,
    now: i64,
) -> Result<crate::tokens::IssuedToken, ApiError> {
    issuer.issue(user, sid, now).await.map_err(|e| match e {
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

/// Starts a session for `user`: the access token is signed, then the session
/// and its first refresh token are stored in one transaction.
pub(crate) async fn start_session(
    store: &Store,
    issuer: &TokenIssuer,
    config: &SessionConfig,
    user: &User,
    now: i64,
    message: &'static str,
) -> Result<TokenPair, ApiError> {
    let refresh_token = RefreshToken::generate();
    let expires_at = now + config.refresh_ttl.as_secs() as i64;
    let session = Session {
        id: Session::new_id(),
        user_id: user.id,
        username: user.username.clone(),
        epoch: user.session_epoch,
        revoked: false,
        created_at: now,
        expires_at,
    };
    let first = RefreshRecord {
        hash: refresh_token.hash(),
        session_id: session.id.clone(),
        user_id: user.id,
        state: RefreshState::Active,
        created_at: now,
        expires_at,
    };
    // Sign first: if the signer (KMS) fails, nothing has been written.
    let access = sign_access_token(issuer, user, &session.id, now).await?;
    store.start_session(&session, &first).await?;
    Ok(TokenPair {
        message,
        access_token: access.token,
        token_type: "Bearer",
        expires_in: access.expires_in,
        refresh_token: refresh_token.expose().to_owned(),
        refresh_expires_in: config.refresh_ttl.as_secs(),
    })
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
