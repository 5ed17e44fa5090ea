//! Access tokens: the claims we issue, and the issuer and verifier behind a small
//! interface (`TokenIssuer::issue`, `TokenVerifier::verify`) so that the signing
//! algorithm can change without touching the handlers.

use std::time::Duration;

use crate::clock::system_now as now;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::TokenConfig;
use crate::users::User;

/// The one algorithm we issue and accept.
pub const ALGORITHM: Algorithm = Algorithm::HS256;
/// JOSE `typ` of our access tokens (RFC 9068), checked on verification so that
/// no other kind of JWT signed with the same key passes for an access token.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(5);
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Every registered claim we issue, plus what get-name needs to check the
/// token with one read: the username the user is keyed by, the session id and
/// the session epoch it was issued under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's stable id (a UUID), never reused.
    pub sub: String,
    pub username: String,
    /// The session (one login and its refreshes).
    pub sid: String,
    /// The user's session epoch when the session began.
    pub sep: u64,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

/// Why a token was refused. The client sees the description; all are 401s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet")]
    NotYetValid,
    #[error("the access token is invalid")]
    Invalid,
}

/// A freshly signed access token.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
}

pub struct TokenIssuer {
    key: EncodingKey,
    header: Header,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenIssuer {
    pub fn new(config: &TokenConfig) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut header = Header::new(ALGORITHM);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        Ok(TokenIssuer {
            key: EncodingKey::from_secret(&config.secret)?,
            header,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl: config.access_token_ttl,
        })
    }

    /// Issues an access token of session `sid` at `now` (seconds since the epoch).
    pub fn issue(
        &self,
        user: &User,
        sid: &str,
        now: i64,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let claims = self.claims_for(user, sid, now);
        Ok(IssuedToken {
            token: self.sign(&claims)?,
            expires_in: self.ttl.as_secs(),
        })
    }

    /// How long the access tokens it issues live.
    pub fn lifetime(&self) -> Duration {
        self.ttl
    }

    /// The claims `issue` would sign; tests edit them to forge hostile tokens.
    pub fn claims_for(&self, user: &User, sid: &str, now: i64) -> Claims {
        Claims {
            sub: user.id.to_string(),
            username: user.username.to_string(),
            sid: sid.to_owned(),
            sep: user.session_epoch,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs() as i64,
            jti: Uuid::new_v4().to_string(),
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&self.header, claims, &self.key)
    }
}

pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl TokenVerifier {
    pub fn new(config: &TokenConfig) -> Result<Self, jsonwebtoken::errors::Error> {
        // `Validation::new` pins the algorithm list to exactly ours.
        let mut validation = Validation::new(ALGORITHM);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true; // off by default in jsonwebtoken
        validation.validate_aud = true;
        validation.set_audience(&[&config.audience]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        Ok(TokenVerifier {
            key: DecodingKey::from_secret(&config.secret)?,
            validation,
            ttl: config.access_token_ttl,
        })
    }

    /// The latest time at which a token issued at `now` may still be accepted.
    pub fn last_valid_moment(&self, issued_at: i64) -> i64 {
        issued_at + self.ttl.as_secs() as i64 + LEEWAY.as_secs() as i64
    }

    /// Verifies signature, algorithm, `typ` and every time, issuer and audience rule.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Invalid,
            },
        )?;
        if data.header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(TokenError::Invalid);
        }
        // jsonwebtoken does not look at `iat`: a token minted in the future is forged
        // or comes from a skewed clock; either way we refuse it.
        if data.claims.iat > now() + LEEWAY.as_secs() as i64 {
            return Err(TokenError::NotYetValid);
        }
        if data.claims.sub.is_empty() || data.claims.sid.is_empty() || data.claims.jti.is_empty() {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::Username;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret-of-at-least-32-bytes-0123456789";

    fn config() -> TokenConfig {
        TokenConfig {
            secret: SECRET.to_vec(),
            issuer: "https://auth.test".into(),
            audience: "auth-test-api".into(),
            access_token_ttl: Duration::from_secs(900),
        }
    }

    fn user() -> User {
        User::new(
            Username::parse("alice").unwrap(),
            "Alice".into(),
            "$2b$10$x".into(),
        )
    }

    fn sign_raw(header: &Header, claims: &serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
    }

    fn our_header() -> Header {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        header
    }

    fn valid_claims() -> serde_json::Value {
        let issuer = TokenIssuer::new(&config()).unwrap();
        serde_json::to_value(issuer.claims_for(&user(), "session-1", now())).unwrap()
    }

    fn verify(token: &str) -> Result<Claims, TokenError> {
        TokenVerifier::new(&config()).unwrap().verify(token)
    }

    #[test]
    fn issued_claims_round_trip_through_the_verifier() {
        let issuer = TokenIssuer::new(&config()).unwrap();
        let user = user();
        let issued = issuer.issue(&user, "session-1", now()).unwrap();
        assert_eq!(issued.expires_in, 900);
        let claims = verify(&issued.token).unwrap();
        assert_eq!(claims.sub, user.id.to_string());
        assert_eq!(claims.username, "alice");
        assert_eq!(claims.sid, "session-1");
        assert_eq!(claims.sep, 0);
        assert_eq!(claims.iss, "https://auth.test");
        assert_eq!(claims.aud, "auth-test-api");
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(claims.nbf, claims.iat);
        assert!(Uuid::parse_str(&claims.jti).is_ok());
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    }

    #[test]
    fn every_token_gets_its_own_jti() {
        let issuer = TokenIssuer::new(&config()).unwrap();
        let a = verify(&issuer.issue(&user(), "s", now()).unwrap().token).unwrap();
        let b = verify(&issuer.issue(&user(), "s", now()).unwrap().token).unwrap();
        assert_ne!(a.jti, b.jti);
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let token = sign_raw(
            &our_header(),
            &valid_claims(),
            b"another-secret-of-at-least-32-bytes-000",
        );
        assert_eq!(verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn an_expired_token_is_refused_beyond_the_leeway() {
        let issuer = TokenIssuer::new(&config()).unwrap();
        let long_ago = now() - 900 - LEEWAY.as_secs() as i64 - 5;
        let token = issuer.issue(&user(), "s", long_ago).unwrap().token;
        assert_eq!(verify(&token), Err(TokenError::Expired));
        // Within the leeway it still passes.
        let just_expired = now() - 900 - 1;
        let token = issuer.issue(&user(), "s", just_expired).unwrap().token;
        assert!(verify(&token).is_ok());
    }

    #[test]
    fn a_token_not_yet_valid_is_refused() {
        let mut claims = valid_claims();
        claims["nbf"] = json!(now() + 120);
        let token = sign_raw(&our_header(), &claims, SECRET);
        assert_eq!(verify(&token), Err(TokenError::NotYetValid));
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let mut claims = valid_claims();
        claims["iat"] = json!(now() + 120);
        let token = sign_raw(&our_header(), &claims, SECRET);
        assert_eq!(verify(&token), Err(TokenError::NotYetValid));
    }

    #[test]
    fn wrong_issuer_or_audience_is_refused() {
        for (claim, value) in [("iss", "https://evil.test"), ("aud", "another-api")] {
            let mut claims = valid_claims();
            claims[claim] = json!(value);
            let token = sign_raw(&our_header(), &claims, SECRET);
            assert_eq!(verify(&token), Err(TokenError::Invalid), "{claim}");
        }
    }

    #[test]
    fn each_required_claim_must_be_present() {
        for claim in [
            "exp", "nbf", "iat", "iss", "aud", "sub", "jti", "username", "sid", "sep",
        ] {
            let mut claims = valid_claims();
            claims.as_object_mut().unwrap().remove(claim);
            let token = sign_raw(&our_header(), &claims, SECRET);
            assert_eq!(verify(&token), Err(TokenError::Invalid), "missing {claim}");
        }
    }

    #[test]
    fn the_algorithm_is_pinned() {
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let mut header = our_header();
            header.alg = alg;
            let token = sign_raw(&header, &valid_claims(), SECRET);
            assert_eq!(verify(&token), Err(TokenError::Invalid), "{alg:?}");
        }
    }

    #[test]
    fn an_unsigned_alg_none_token_is_refused() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
        let payload = b64.encode(valid_claims().to_string());
        assert_eq!(
            verify(&format!("{header}.{payload}.")),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify(&format!("{header}.{payload}")),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn the_typ_header_must_be_at_jwt() {
        for typ in [None, Some("JWT"), Some("refresh+jwt")] {
            let mut header = our_header();
            header.typ = typ.map(str::to_owned);
            let token = sign_raw(&header, &valid_claims(), SECRET);
            assert_eq!(verify(&token), Err(TokenError::Invalid), "{typ:?}");
        }
    }

    #[test]
    fn a_tampered_payload_or_signature_is_refused() {
        let token = TokenIssuer::new(&config())
            .unwrap()
            .issue(&user(), "s", now())
            .unwrap()
            .token;
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut flipped = parts.clone();
        let last = flipped[2].pop().unwrap();
        flipped[2].push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(verify(&flipped.join(".")), Err(TokenError::Invalid));

        let mut claims = valid_claims();
        claims["username"] = json!("mallory");
        use base64::Engine as _;
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        assert_eq!(verify(&parts.join(".")), Err(TokenError::Invalid));
    }

    #[test]
    fn garbage_and_oversized_tokens_are_refused() {
        for token in [
            "",
            "abc",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "!!!.###.$$$",
            "e30.e30.e30",
        ] {
            assert_eq!(verify(token), Err(TokenError::Invalid), "{token:?}");
        }
        assert_eq!(verify(&"a".repeat(100_000)), Err(TokenError::Invalid));
    }
}
