//! Browser sessions: the refresh token in an `HttpOnly` cookie that no script
//! can read, and the checks on every request that sets or uses that cookie.
//!
//! A browser attaches cookies on its own, so a request that uses one must
//! prove it comes from our page, not from another site (CSRF), in depth:
//! a JSON content type and a JSON object body (which a page on another origin
//! cannot send without a CORS preflight; `json_body` holds this), and an
//! `Origin` (or `Sec-Fetch-Site: same-origin`) that is the API's own origin
//! or one of `CORS_ALLOWED_ORIGINS`. SameSite alone is not enough: other APIs
//! on API Gateway hosts may count as the same site.

use lambda_http::http::{HeaderValue, header};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use crate::config::{ConfigError, Source};
use crate::devices::{DeviceProof, MAX_PROOF_CHARS};
use crate::http::ApiError;

/// The refresh cookie. `__Host-`: only ever set `Secure`, with `Path=/` and no
/// `Domain`, so no other host (a sibling subdomain) can set or shadow it.
pub const REFRESH_COOKIE: &str = "__Host-refresh_token";

/// The device cookie: a browser's proof that it has signed in before
/// (`devices`). `__Host-` and `HttpOnly`, as the refresh cookie.
pub const DEVICE_COOKIE: &str = "__Host-device";

/// How a client wants its refresh token: in the JSON body (the default, for
/// apps that keep it themselves) or in the refresh cookie (browsers).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    #[default]
    Body,
    Cookie,
}

/// Which origins may set or use the refresh cookie.
#[derive(Clone, Debug)]
pub struct BrowserPolicy {
    allowed_origins: Vec<String>,
}

impl BrowserPolicy {
    /// The origin of `JWT_ISSUER` (the API's own) and those of
    /// `CORS_ALLOWED_ORIGINS` (comma-separated, optional).
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let issuer = env
            .get("JWT_ISSUER")
            .ok_or(ConfigError::Missing("JWT_ISSUER"))?;
        let own = origin_of(&issuer).ok_or_else(|| ConfigError::Invalid {
            var: "JWT_ISSUER",
            reason: "must be an http(s) URL".into(),
        })?;
        let mut allowed_origins = vec![own];
        for raw in env
            .get("CORS_ALLOWED_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            let origin = origin_of(raw).ok_or_else(|| ConfigError::Invalid {
                var: "CORS_ALLOWED_ORIGINS",
                reason: format!("{raw:?} is not an http(s) origin"),
            })?;
            allowed_origins.push(origin);
        }
        Ok(BrowserPolicy { allowed_origins })
    }

    pub fn new(allowed_origins: &[&str]) -> Self {
        BrowserPolicy {
            allowed_origins: allowed_origins
                .iter()
                .filter_map(|o| origin_of(o))
                .collect(),
        }
    }

    /// Refuses (403) a request that sets or uses the cookie from anywhere but
    /// an allowed origin. No `Origin` at all passes only with the browser's
    /// own `Sec-Fetch-Site: same-origin`.
    pub fn check(&self, req: &Request) -> Result<(), ApiError> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let allowed = match header("origin") {
            Some(origin) => origin_of(origin).is_some_and(|o| self.allowed_origins.contains(&o)),
            None => header("sec-fetch-site") == Some("same-origin"),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::ForbiddenOrigin)
        }
    }
}

/// The page's origin (`PAGE_URL`, else `JWT_ISSUER`), without a trailing
/// slash: where mailed links and a provider's round trip lead, never a
/// request's Host.
pub fn page_origin(env: &impl Source) -> Result<String, ConfigError> {
    let (var, page) = match env.get("PAGE_URL").filter(|v| !v.trim().is_empty()) {
        Some(page) => ("PAGE_URL", page),
        None => (
            "JWT_ISSUER",
            env.get("JWT_ISSUER")
                .ok_or(ConfigError::Missing("JWT_ISSUER"))?,
        ),
    };
    let page = page.trim().trim_end_matches('/').to_owned();
    let local = page.starts_with("http://localhost") || page.starts_with("http://127.0.0.1");
    if !(page.starts_with("https://") || local) || page.contains(['#', '?', ' ', '"', '<']) {
        return Err(ConfigError::Invalid {
            var,
            reason: "the page's origin must be an https:// URL (http:// only on localhost), with no query or fragment".into(),
        });
    }
    Ok(page)
}

/// `scheme://host[:port]` of an http(s) URL, lower-cased, default port dropped.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}"))
}

/// The refresh cookie's value, if the request carries it. Read as bytes, so
/// another cookie with bytes outside ASCII cannot hide it. Two different
/// values are ambiguous (a sibling domain can plant a cookie of the same
/// name, listed before ours): 400, rather than a guess that could log the
/// browser into someone else's session.
pub fn refresh_cookie(req: &Request) -> Result<Option<String>, ApiError> {
    named_cookie(req, REFRESH_COOKIE).map_err(|Ambiguous| {
        ApiError::BadRequest("more than one refresh cookie; clear this site's cookies".into())
    })
}

/// The device cookie's value, if the request carries it. Two different
/// values are ambiguous, as for the refresh cookie: 400.
pub fn device_cookie(req: &Request) -> Result<Option<String>, ApiError> {
    named_cookie(req, DEVICE_COOKIE).map_err(|Ambiguous| {
        ApiError::BadRequest("more than one device cookie; clear this site's cookies".into())
    })
}

/// The value of cookie `name`, if the request carries it; two different
/// values are ambiguous (`Err`), as for the refresh cookie.
pub fn named_cookie_value(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    named_cookie(req, name).map_err(|Ambiguous| {
        ApiError::BadRequest(format!(
            "more than one {name} cookie; clear this site's cookies"
        ))
    })
}

/// Two different values of one cookie.
struct Ambiguous;

/// The value of cookie `name`, if the request carries it.
fn named_cookie(req: &Request, name: &str) -> Result<Option<String>, Ambiguous> {
    let mut found: Option<String> = None;
    for value in req.headers().get_all(header::COOKIE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for pair in text.split(';') {
            let Some((key, value)) = pair.trim().split_once('=') else {
                continue;
            };
            let value = value.trim();
            if key.trim() != name || value.is_empty() {
                continue;
            }
            match &found {
                Some(other) if other != value => return Err(Ambiguous),
                _ => found = Some(value.to_owned()),
            }
        }
    }
    Ok(found)
}

/// Sets the refresh cookie on `response`, for `max_age` seconds (the token's
/// stored expiry).
pub fn set_refresh_cookie(response: &mut Response<Body>, token: &str, max_age: u64) {
    cookie(response, REFRESH_COOKIE, token, max_age);
}

/// Tells the browser to forget the refresh cookie.
pub fn clear_refresh_cookie(response: &mut Response<Body>) {
    cookie(response, REFRESH_COOKIE, "", 0);
}

/// Sets the device cookie on `response`, for `max_age` seconds.
pub fn set_device_cookie(response: &mut Response<Body>, proof: &str, max_age: u64) {
    cookie(response, DEVICE_COOKIE, proof, max_age);
}

fn cookie(response: &mut Response<Body>, name: &str, value: &str, max_age: u64) {
    let text =
        format!("{name}={value}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=Strict");
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// A device proof a request presents, and how it came: its successor goes
/// back the same way (a proof from the `HttpOnly` cookie never comes back
/// in a body that scripts can read).
pub struct PresentedDevice {
    pub proof: DeviceProof,
    pub came_in: Delivery,
}

/// The device proof a request presents: an API client's in its body
/// (`device`), else a browser's cookie, and the cookie only from an allowed
/// origin (a page elsewhere that its visitors' browsers sent it from could
/// otherwise spend their devices' guesses). An empty or overlong value in
/// the body, or two device cookies, is 400.
pub fn presented_proof(
    req: &Request,
    in_body: Option<String>,
    browser: &BrowserPolicy,
) -> Result<Option<PresentedDevice>, ApiError> {
    if let Some(raw) = in_body {
        if raw.is_empty() || raw.len() > MAX_PROOF_CHARS {
            return Err(ApiError::BadRequest(format!(
                "device must be 1 to {} characters",
                MAX_PROOF_CHARS
            )));
        }
        return Ok(Some(PresentedDevice {
            proof: DeviceProof::presented(raw),
            came_in: Delivery::Body,
        }));
    }
    let cookie = device_cookie(req)?.filter(|raw| raw.len() <= MAX_PROOF_CHARS);
    Ok(cookie
        .filter(|_| browser.check(req).is_ok())
        .map(|raw| PresentedDevice {
            proof: DeviceProof::presented(raw),
            came_in: Delivery::Cookie,
        }))
}

/// Where a sign-in's new device proof goes: in the cookie if the old one
/// came from it or the refresh token goes in a cookie, else in the body.
pub fn device_delivery(presented: Option<&PresentedDevice>, refresh: Delivery) -> Delivery {
    match presented {
        Some(p) if p.came_in == Delivery::Cookie => Delivery::Cookie,
        _ => refresh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut req = Request::new(Body::Empty);
        for (k, v) in headers {
            req.headers_mut().append(
                lambda_http::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        req
    }

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            origin_of("https://Auth.Example.com/path?x"),
            Some("https://auth.example.com".into())
        );
        assert_eq!(
            origin_of("https://auth.example.com:443"),
            Some("https://auth.example.com".into())
        );
        assert_eq!(
            origin_of("http://localhost:9000"),
            Some("http://localhost:9000".into())
        );
        assert_eq!(origin_of("null"), None);
        assert_eq!(origin_of("ftp://x"), None);
        assert_eq!(origin_of("https://user@evil.example"), None);
    }

    #[test]
    fn only_the_apis_own_and_the_listed_origins_may_use_the_cookie() {
        let env = |var: &str| match var {
            "JWT_ISSUER" => Some("https://auth.example.com".to_owned()),
            "CORS_ALLOWED_ORIGINS" => Some("https://app.example.com, http://localhost:5173".into()),
            _ => None,
        };
        let policy = BrowserPolicy::from_source(&env).unwrap();
        for ok in [
            "https://auth.example.com",
            "https://app.example.com",
            "http://localhost:5173",
        ] {
            assert!(policy.check(&request(&[("origin", ok)])).is_ok(), "{ok}");
        }
        for refused in [
            "https://evil.example",
            "https://auth.example.com.evil.example",
            "http://auth.example.com",
            "https://auth.example.com:8443",
            "http://localhost:5174",
            "null",
        ] {
            let err = policy.check(&request(&[("origin", refused)])).unwrap_err();
            assert_eq!(err.status(), 403, "{refused}");
            assert_eq!(err.code(), "origin_not_allowed");
        }
        // No Origin: only the browser's own same-origin marker passes.
        assert!(policy.check(&request(&[])).is_err());
        assert!(
            policy
                .check(&request(&[("sec-fetch-site", "same-site")]))
                .is_err()
        );
        assert!(
            policy
                .check(&request(&[("sec-fetch-site", "same-origin")]))
                .is_ok()
        );
        // An Origin decides even beside a same-origin marker.
        assert!(
            policy
                .check(&request(&[
                    ("origin", "https://evil.example"),
                    ("sec-fetch-site", "same-origin")
                ]))
                .is_err()
        );
    }

    #[test]
    fn the_cookie_is_read_among_others_and_written_with_every_attribute() {
        let req = request(&[("cookie", "a=1; __Host-refresh_token=abc_DEF-123; b=2")]);
        assert_eq!(
            refresh_cookie(&req).unwrap().as_deref(),
            Some("abc_DEF-123")
        );
        assert_eq!(
            refresh_cookie(&request(&[("cookie", "refresh_token=x")])).unwrap(),
            None
        );
        // Planted by a sibling domain beside ours: ambiguous, refused.
        let planted = request(&[(
            "cookie",
            "__Host-refresh_token=evil; __Host-refresh_token=ours",
        )]);
        assert_eq!(refresh_cookie(&planted).unwrap_err().status(), 400);
        // A cookie of bytes outside ASCII does not hide ours.
        let mut noisy = Request::new(Body::Empty);
        noisy.headers_mut().insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"pref=caf\xc3\xa9; __Host-refresh_token=tok").unwrap(),
        );
        assert_eq!(refresh_cookie(&noisy).unwrap().as_deref(), Some("tok"));
        let mut response = Response::new(Body::Empty);
        set_refresh_cookie(&mut response, "tok", 3600);
        clear_refresh_cookie(&mut response);
        let cookies: Vec<&str> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            cookies,
            [
                "__Host-refresh_token=tok; Max-Age=3600; Path=/; Secure; HttpOnly; SameSite=Strict",
                "__Host-refresh_token=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict"
            ]
        );
    }
}
