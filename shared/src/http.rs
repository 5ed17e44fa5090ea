//! The HTTP edge: request parsing, and the one place where outcomes become
//! responses. Every error a client can see has the same JSON shape:
//! `{"error": "<stable code>", "message": "<human text>"}`.

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::permissions::Role;
use crate::store::StoreError;
use crate::tokens::TokenError;

/// The realm named in `WWW-Authenticate` challenges.
pub const REALM: &str = "auth";
/// The challenge sent when no credentials were presented.
const BARE_CHALLENGE: &str = "Bearer realm=\"auth\"";
/// Bodies larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// Every way a request can fail, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// A lockout or a rate limit; `Retry-After` says when to come back.
    #[error("too many attempts; try again later")]
    TooManyRequests { retry_after: u64 },
    /// Unknown user, wrong password and inactive user alike.
    #[error("Login Failed")]
    LoginFailed,
    /// No credentials presented: a bare challenge, as RFC 6750 §3.1 asks.
    #[error("{0}")]
    MissingToken(&'static str),
    #[error("{0}")]
    InvalidToken(String),
    /// The token is good but the user lacks the role (RFC 6750 §3.1).
    #[error("this needs the {0} role")]
    InsufficientScope(Role),
    /// The password was proved too long ago for this act (RFC 9470).
    #[error(
        "this needs a proof of the password within the last {max_age} seconds; re-authenticate and try again"
    )]
    StaleAuthentication { max_age: u64 },
    /// The act needs a second factor proved within `max_age` seconds (RFC
    /// 9470: `acr_values="aal2"`): verify a code or a passkey, then retry; or, for an
    /// account without one (`enrolled` false), enrol one first.
    #[error("{}", if *enrolled {
        format!("this needs a proof of the second factor within the last {max_age} seconds; send a code to /account/second-factor/verify, or a passkey's answer to /account/passkeys/verify, and try again")
    } else {
        format!("this needs a second factor, and this account has none: add one (a code factor, POST /account/second-factor, or a passkey, POST /account/passkeys/options), prove it within {max_age} seconds of signing in, and try again")
    })]
    SecondFactorRequired { max_age: u64, enrolled: bool },
    /// Allowed to nobody, whatever their role (an admin deleting themselves).
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("User not found")]
    UserNotFound,
    #[error("no such resource")]
    NotFound,
    /// Refresh token unknown, expired, already used or of an ended session.
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidGrant,
    /// The refresh token was rotated a moment ago by another request (a
    /// retry, another tab): nothing is revoked; its successor carries on.
    #[error("the refresh token was just replaced by another request; use its successor")]
    RefreshSuperseded,
    /// A request that sets or uses the refresh cookie from a foreign origin.
    #[error(
        "requests that set or use the refresh cookie must come from the API's own origin or an allowed one"
    )]
    ForbiddenOrigin,
    #[error("username is already taken")]
    UsernameTaken,
    /// A reset's or a verification's link or code that does not (or no
    /// longer) work, whichever the reason: one answer.
    #[error(
        "the link or code is wrong, expired, already used or replaced by a newer one; ask for a new one"
    )]
    InvalidTicket,
    /// The address is another account's verified address (told only to
    /// whoever proved they receive its mail).
    #[error("that address is already verified by another account")]
    EmailTaken,
    /// `SIGN_UP=admins`: accounts are made by admins only.
    #[error("sign-up is closed here: an admin creates accounts")]
    SignUpClosed,
    #[error("{0}")]
    Conflict(&'static str),
    /// A second factor's code or recovery code that is wrong, or used
    /// already.
    #[error("the code is wrong or was used already")]
    InvalidCode,
    /// An `mfa_token` that is unknown, expired, used, spent by wrong codes,
    /// or whose user changed since: the login starts again.
    #[error("the mfa_token is invalid, expired or used up; log in again")]
    InvalidMfaToken,
    /// Codes from the app are refused after too many wrong ones in a row.
    #[error(
        "the second factor is suspended after too many wrong codes: use a recovery code, or ask an admin"
    )]
    FactorSuspended,
    /// A passkey's answer that is not accepted: unknown, removed, of
    /// another account, from another origin or relying party, without
    /// user verification, with a counter gone backwards, or not signed by
    /// it. One answer.
    #[error("the passkey was not accepted; try again, or sign in another way")]
    PasskeyRefused,
    /// A passkey ceremony that is unknown, expired, used or another's.
    #[error("the passkey ceremony is unknown, expired or used; start again")]
    InvalidCeremony,
    #[error("method {method} is not allowed here; use {allow}")]
    MethodNotAllowed { method: Method, allow: &'static str },
    #[error("the service is temporarily unavailable, try again shortly")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_)
            | ApiError::InvalidTicket
            | ApiError::InvalidCode
            | ApiError::InvalidCeremony => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::LoginFailed
            | ApiError::MissingToken(_)
            | ApiError::InvalidToken(_)
            | ApiError::StaleAuthentication { .. }
            | ApiError::SecondFactorRequired { .. }
            | ApiError::InvalidGrant
            | ApiError::InvalidMfaToken
            | ApiError::PasskeyRefused
            | ApiError::RefreshSuperseded => StatusCode::UNAUTHORIZED,
            ApiError::ForbiddenOrigin
            | ApiError::InsufficientScope(_)
            | ApiError::Forbidden(_)
            | ApiError::FactorSuspended
            | ApiError::SignUpClosed => StatusCode::FORBIDDEN,
            ApiError::UsernameTaken | ApiError::EmailTaken | ApiError::Conflict(_) => {
                StatusCode::CONFLICT
            }
            ApiError::UserNotFound | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "invalid_request",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::LoginFailed => "login_failed",
            ApiError::MissingToken(_) => "missing_token",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::InsufficientScope(_) => "insufficient_scope",
            ApiError::StaleAuthentication { .. } => "insufficient_user_authentication",
            ApiError::SecondFactorRequired { .. } => "insufficient_user_authentication",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::UserNotFound => "user_not_found",
            ApiError::NotFound => "not_found",
            ApiError::InvalidGrant => "invalid_grant",
            ApiError::RefreshSuperseded => "refresh_token_superseded",
            ApiError::ForbiddenOrigin => "origin_not_allowed",
            ApiError::UsernameTaken => "username_taken",
            ApiError::InvalidTicket => "invalid_ticket",
            ApiError::EmailTaken => "email_taken",
            ApiError::SignUpClosed => "sign_up_closed",
            ApiError::Conflict(_) => "conflict",
            ApiError::InvalidCode => "invalid_code",
            ApiError::InvalidMfaToken => "invalid_mfa_token",
            ApiError::FactorSuspended => "factor_suspended",
            ApiError::PasskeyRefused => "passkey_refused",
            ApiError::InvalidCeremony => "invalid_ceremony",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Unavailable => "service_unavailable",
            ApiError::Internal => "internal_error",
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = json_response(
            self.status(),
            &ErrorBody {
                error: self.code(),
                message: self.to_string(),
            },
        );
        let headers = response.headers_mut();
        match &self {
            ApiError::MissingToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(BARE_CHALLENGE),
                );
            }
            ApiError::InvalidToken(description) => {
                // The description is ours (never client text), so it is safe to quote.
                let challenge = format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{description}\""
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::InsufficientScope(role) => {
                // A role name is a scope token: nothing in it needs escaping.
                let challenge = format!(
                    "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", error_description=\"{self}\", scope=\"{role}\""
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::StaleAuthentication { max_age } => {
                let challenge = format!(
                    "Bearer realm=\"{REALM}\", error=\"insufficient_user_authentication\", error_description=\"a more recent proof of the password is required\", max_age={max_age}"
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::SecondFactorRequired { max_age, .. } => {
                let challenge = format!(
                    "Bearer realm=\"{REALM}\", error=\"insufficient_user_authentication\", error_description=\"a more recent proof of the second factor is required\", acr_values=\"{}\", max_age={max_age}",
                    crate::sessions::amr::ACR_SECOND_FACTOR
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::TooManyRequests { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after.max(&1)));
            }
            _ => {}
        }
        response
    }
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::KeysUnavailable => ApiError::Unavailable,
            err => ApiError::InvalidToken(err.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                ApiError::Unavailable
            }
            StoreError::Conflict | StoreError::Contended => {
                ApiError::Conflict("the resource was changed by another request; try again")
            }
            StoreError::AlreadyExists | StoreError::Internal(_) => {
                tracing::error!(error = %err, "database error");
                ApiError::Internal
            }
        }
    }
}

/// A JSON response. Nothing we send may be cached: tokens and user data.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    json_text_response(
        status,
        serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned()),
    )
}

/// A response whose body is JSON text already.
pub fn json_text_response(status: StatusCode, json: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(json));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Refuses any method but `allowed` with 405 and an `Allow` header.
pub fn require_method(req: &Request, allowed: Method, allow: &'static str) -> Result<(), ApiError> {
    if req.method() == allowed {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed {
            method: req.method().clone(),
            allow,
        })
    }
}

/// The body's bytes (API Gateway's base64 already decoded).
pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    }
}

/// Whether the client sent no body at all (or only whitespace).
pub fn body_is_empty(req: &Request) -> bool {
    body_bytes(req).iter().all(u8::is_ascii_whitespace)
}

/// Parses the body as a JSON object into `T`, with a message that says what is
/// wrong. A body must come with a JSON content type (`application/json` or
/// `*/*+json`, parameters allowed): none, or any other, is 415. A browser sends
/// a body without a content type, or with a form's, from any web page and
/// without a CORS preflight (`fetch` with `mode: 'no-cors'`, `sendBeacon`);
/// a JSON content type it cannot send cross-origin unasked. Duplicate keys
/// are refused.
pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let content_type = req.headers().get(header::CONTENT_TYPE);
    let says_json =
        content_type.is_some_and(|value| is_json_media_type(value.to_str().unwrap_or("")));
    if (content_type.is_some() || !body_bytes(req).is_empty()) && !says_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    if req.headers().contains_key(INVALID_BASE64_MARK) {
        return Err(ApiError::BadRequest(
            "request body is not valid base64".into(),
        ));
    }
    let bytes = body_bytes(req);
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(ApiError::BadRequest(
            "request body is empty; expected a JSON object".into(),
        ));
    };
    if *first != b'{' {
        let parses = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        return Err(ApiError::BadRequest(if parses {
            "request body must be a JSON object".into()
        } else {
            "request body is not valid JSON".into()
        }));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::BadRequest(match e.classify() {
            serde_json::error::Category::Data => format!("invalid request body: {e}"),
            _ => format!("request body is not valid JSON: {e}"),
        })
    })
}

/// `application/json`, or a structured-syntax `+json` type, with any parameters.
fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind == "application" && (subtype == "json" || subtype.ends_with("+json") && subtype.len() > 5)
}

/// Set by the runtime on a request whose `isBase64Encoded` body did not decode.
pub const INVALID_BASE64_MARK: &str = "x-auth-invalid-base64-body";

/// API Gateway's id of the request: the `requestId` of its access log line.
pub fn api_request_id(req: &Request) -> String {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.request_id.clone(),
        _ => None,
    }
    .unwrap_or_default()
}

/// The client's address, as API Gateway saw it.
pub fn source_ip(req: &Request) -> String {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.clone(),
        _ => None,
    }
    .unwrap_or_else(|| "unknown".to_owned())
}

/// The bearer token of the `Authorization` header.
pub fn bearer_token(req: &Request) -> Result<&str, ApiError> {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::MissingToken("missing Authorization header"));
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidToken(
            "more than one Authorization header".into(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::InvalidToken("malformed Authorization header".into()))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MissingToken(
            "Authorization header must use the Bearer scheme",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::InvalidToken("the Bearer token is empty".into()));
    }
    Ok(token)
}

/// For an optional field that may be left out but never sent as `null`
/// (`#[serde(default, deserialize_with = "not_null")]`): the contract says
/// it is a string when present, and a `null` is a bad request, not absence.
pub(crate) fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn request(method: &str, body: Body) -> Request {
        let mut req = Request::new(body);
        *req.method_mut() = method.parse().unwrap();
        req
    }

    fn with_auth(values: &[&str]) -> Request {
        let mut req = request("GET", Body::Empty);
        for v in values {
            req.headers_mut()
                .append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        req
    }

    #[derive(Debug, Deserialize)]
    struct Creds {
        #[allow(dead_code)]
        username: String,
    }

    fn json_request(body: Body) -> Request {
        let mut req = request("POST", body);
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        req
    }

    fn body_error(body: Body) -> String {
        match json_body::<Creds>(&json_request(body)).unwrap_err() {
            ApiError::BadRequest(message) => message,
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn error_responses_share_one_json_shape() {
        let response = ApiError::UserNotFound.into_response();
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()["content-type"], "application/json");
        let Body::Text(text) = response.body() else {
            panic!()
        };
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": "user_not_found", "message": "User not found"})
        );
    }

    #[test]
    fn body_errors_say_what_is_wrong() {
        assert!(body_error(Body::Empty).contains("empty"));
        assert!(body_error(Body::Text("  ".into())).contains("empty"));
        assert!(body_error(Body::Text("{nope".into())).contains("not valid JSON"));
        assert!(body_error(Body::Text("[\"alice\"]".into())).contains("JSON object"));
        assert!(
            body_error(Body::Text(r#"{"username": "a", "username": "b"}"#.into()))
                .contains("duplicate field")
        );
        // Deep nesting within the size limit: a clean 400, no stack overflow
        // (serde_json parses iteratively where it must and limits recursion).
        let deep = format!("{}{}", "[".repeat(4_000), "]".repeat(4_000));
        assert!(
            body_error(Body::Text(format!("{{\"username\": {deep}}}"))).contains("invalid type")
        );
        // Deep nesting where a lenient type skips it: skipped, no stack
        // overflow (our request types refuse unknown fields in any case).
        let deep_value = format!("{{\"username\": \"a\", \"x\": {deep}}}");
        assert!(json_body::<Creds>(&json_request(Body::Text(deep_value))).is_ok());
        assert!(body_error(Body::Text("null".into())).contains("JSON object"));
        assert!(body_error(Body::Text("{}".into())).contains("missing field `username`"));
        assert!(body_error(Body::Text(r#"{"username": 5}"#.into())).contains("invalid type"));
        assert!(body_error(Body::Binary(vec![0xff, 0xfe])).contains("not valid JSON"));
    }

    fn media_type_error(content_type: Option<&str>, body: Body) -> Option<u16> {
        let mut req = request("POST", body);
        if let Some(value) = content_type {
            req.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        }
        // Any refusal, with its status: an accepted type must parse the body.
        json_body::<Creds>(&req).err().map(|e| e.status().as_u16())
    }

    #[test]
    fn a_body_without_a_json_content_type_is_415() {
        let body = || Body::Text(r#"{"username": "alice"}"#.into());
        for refused in [
            None,
            Some("text/plain"),
            Some("text/plain;charset=UTF-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            Some("text/json"),
            Some("application/+json"),
            Some(""),
        ] {
            assert_eq!(media_type_error(refused, body()), Some(415), "{refused:?}");
        }
        for accepted in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
            "application/vnd.api+json ; charset=UTF-8",
        ] {
            assert_eq!(media_type_error(Some(accepted), body()), None, "{accepted}");
        }
        // No body needs no content type: the answer is about the missing body.
        assert!(body_error_without_type(Body::Empty).contains("empty"));
    }

    fn body_error_without_type(body: Body) -> String {
        match json_body::<Creds>(&request("POST", body)).unwrap_err() {
            ApiError::BadRequest(message) => message,
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn an_oversized_body_is_413() {
        let big = format!("{{\"username\": \"{}\"}}", "a".repeat(MAX_BODY_BYTES));
        let err = json_body::<Creds>(&json_request(Body::Text(big))).unwrap_err();
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn the_bearer_token_is_taken_from_the_authorization_header() {
        assert_eq!(
            bearer_token(&with_auth(&["Bearer abc.def.ghi"])).unwrap(),
            "abc.def.ghi"
        );
        assert_eq!(bearer_token(&with_auth(&["bearer abc"])).unwrap(), "abc");
        for (values, code) in [
            (&[][..], "missing_token"),
            (&["Basic dXNlcjpwYXNz"][..], "missing_token"),
            (&["Bearer"][..], "invalid_token"),
            (&["Bearer    "][..], "invalid_token"),
            (&["Bearer a", "Bearer b"][..], "invalid_token"),
        ] {
            let err = bearer_token(&with_auth(values)).unwrap_err();
            assert_eq!(err.code(), code, "{values:?}");
            let response = err.into_response();
            assert_eq!(response.status(), 401);
            let challenge = response.headers()["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.starts_with("Bearer realm=\"auth\""),
                "{challenge}"
            );
        }
    }

    #[test]
    fn a_wrong_method_is_405_with_allow() {
        let err =
            require_method(&request("DELETE", Body::Empty), Method::POST, "POST").unwrap_err();
        let response = err.into_response();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()["allow"], "POST");
    }

    #[test]
    fn unavailable_is_503_with_retry_after() {
        let response = ApiError::from(StoreError::Unavailable("x".into())).into_response();
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        let response = ApiError::from(StoreError::Internal("x".into())).into_response();
        assert_eq!(response.status(), 500);
    }
}
