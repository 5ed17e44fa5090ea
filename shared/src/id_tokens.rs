//! An outside identity provider's ID token, validated in full before anything
//! in it is believed (OpenID Connect Core §3.1.3.7, RFC 8725): signed by a
//! key of the provider's published set, with an algorithm on our allow-list
//! that the key's own type agrees with (never `none`, never an HMAC that a
//! public key could be made to key), issued by exactly the provider we asked,
//! for us (audience, and `azp` where it says who it was for), within its
//! lifetime by our clock, and carrying the nonce of the round trip it ends.
//!
//! The provider's keys are cached per instance: an unknown `kid` refetches
//! the set (a provider rotated), at most once a minute, so a stream of forged
//! `kid`s cannot turn every callback into a call to the provider.

use std::time::Duration;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lambda_http::http::{self, Uri};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::providers::{ID_TOKEN_ALGORITHMS, ProviderError, ProviderHttp};

/// How long a fetched key set is used before it is fetched again.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// How long cached keys stand in while their set cannot be read again.
pub const KEYS_MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);
/// The least time between two fetches of a key set: an unknown `kid` within
/// it is refused without a call.
pub const KEYS_MIN_REFETCH: Duration = Duration::from_secs(60);
/// The least time between two tries of a key set never fetched yet.
pub const KEYS_FIRST_RETRY: Duration = Duration::from_secs(5);
/// Clock skew we allow a provider (`exp`, `iat`, `nbf`, `auth_time`).
pub const LEEWAY: Duration = Duration::from_secs(60);
/// How old an ID token may be (its `iat`) when it reaches us: it was issued
/// for this round trip, moments ago.
pub const MAX_TOKEN_AGE: Duration = Duration::from_secs(10 * 60);
/// The largest ID token we look at.
pub const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;

/// Why an ID token is refused. Only logged: the person sees one message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("not a signed JWT we read: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not one we accept from this provider")]
    Algorithm(String),
    #[error("no key of the provider's set matches (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("the provider's key set could not be read: {0}")]
    Keys(String),
    #[error("the signature does not verify")]
    Signature,
    #[error("issued by {0:?}, not the provider asked")]
    Issuer(String),
    #[error("not for this client (aud / azp)")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("issued in the future, or too long ago")]
    IssuedAt,
    #[error("not valid yet (nbf)")]
    NotYetValid,
    #[error("the nonce is not this round trip's")]
    Nonce,
    #[error("the sign-in is older than asked (auth_time)")]
    Stale,
}

/// What we read of an ID token once it is validated.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    #[serde(default)]
    pub auth_time: Option<i64>,
    #[serde(default)]
    pub email: Option<String>,
    /// Only a JSON `true` counts (some providers send strings).
    #[serde(default, deserialize_with = "strict_bool")]
    pub email_verified: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub given_name: Option<String>,
    /// How the provider's user signed in (RFC 8176): a list of strings, or
    /// nothing (anything else counts as nothing).
    #[serde(default, deserialize_with = "strings")]
    pub amr: Vec<String>,
}

fn strings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            })
            .collect::<Option<Vec<String>>>()
            .unwrap_or_default(),
        _ => Vec::new(),
    })
}

fn strict_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(matches!(
        serde_json::Value::deserialize(d)?,
        serde_json::Value::Bool(true)
    ))
}

/// The claims every check needs; the rest are `IdClaims`.
#[derive(Deserialize)]
struct Checked {
    iss: String,
    sub: String,
    aud: Audience,
    #[serde(default)]
    azp: Option<String>,
    exp: i64,
    iat: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    auth_time: Option<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn as_slice(&self) -> &[String] {
        match self {
            Audience::One(one) => std::slice::from_ref(one),
            Audience::Many(many) => many,
        }
    }
}

/// What an ID token must show to end this round trip.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// The provider's algorithms that are on our allow-list.
    pub algorithms: &'a [String],
    /// For a fresh sign-in (`max_age=0`): the earliest `auth_time` accepted.
    pub authenticated_since: Option<i64>,
    pub now: i64,
}

/// Validates `token` against `keys` and `expected`.
pub async fn validate(
    token: &str,
    keys: &KeyCache,
    http: &ProviderHttp,
    expected: &Expected<'_>,
) -> Result<IdClaims, IdTokenError> {
    if token.len() > MAX_ID_TOKEN_BYTES {
        return Err(IdTokenError::Malformed("too large".into()));
    }
    // `decode_header` knows no `none`: such a token fails here.
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    let alg = algorithm_name(header.alg);
    if !expected.algorithms.iter().any(|a| a == alg) || !ID_TOKEN_ALGORITHMS.contains(&alg) {
        return Err(IdTokenError::Algorithm(alg.to_owned()));
    }
    let key = keys
        .key_for(http, header.kid.as_deref(), header.alg, expected.now)
        .await?;

    // The signature, the algorithm and the key's family are jsonwebtoken's
    // to check; the claims are ours (by our clock, and all of them).
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => IdTokenError::Signature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                IdTokenError::Algorithm(alg.to_owned())
            }
            _ => IdTokenError::Malformed(e.to_string()),
        })?;
    // The claims' errors say which rule broke, never a claim's value (an
    // address, a name) into a log line.
    let checked: Checked = serde_json::from_value(data.claims.clone()).map_err(|_| {
        IdTokenError::Malformed("a required claim is missing or of the wrong type".into())
    })?;
    check_claims(&checked, expected)?;
    serde_json::from_value(data.claims)
        .map_err(|_| IdTokenError::Malformed("a profile claim is of the wrong type".into()))
}

fn check_claims(claims: &Checked, expected: &Expected<'_>) -> Result<(), IdTokenError> {
    let leeway = LEEWAY.as_secs() as i64;
    let now = expected.now;
    if claims.iss != expected.issuer {
        return Err(IdTokenError::Issuer(claims.iss.clone()));
    }
    if claims.sub.is_empty() || claims.sub.len() > 255 {
        return Err(IdTokenError::Malformed("sub".into()));
    }
    // Core §3.1.3.7 (3)-(5): we are an audience; with others beside us,
    // `azp` must name us; and an `azp` present names us.
    let audiences = claims.aud.as_slice();
    if !audiences.iter().any(|a| a == expected.client_id)
        || (audiences.len() > 1 && claims.azp.is_none())
        || claims
            .azp
            .as_deref()
            .is_some_and(|azp| azp != expected.client_id)
    {
        return Err(IdTokenError::Audience);
    }
    // Saturating: a provider's huge numbers must not overflow.
    if claims.exp.saturating_add(leeway) <= now {
        return Err(IdTokenError::Expired);
    }
    if claims.iat > now + leeway || claims.iat.saturating_add(MAX_TOKEN_AGE.as_secs() as i64) < now
    {
        return Err(IdTokenError::IssuedAt);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(IdTokenError::NotYetValid);
    }
    let nonce_matches = claims.nonce.as_deref().is_some_and(|n| {
        aws_lc_rs::constant_time::verify_slices_are_equal(n.as_bytes(), expected.nonce.as_bytes())
            .is_ok()
    });
    if !nonce_matches {
        return Err(IdTokenError::Nonce);
    }
    if let Some(since) = expected.authenticated_since {
        // A fresh sign-in was asked (`max_age=0`): `auth_time` is required
        // (Core §3.1.2.1) and no older than the request.
        match claims.auth_time {
            Some(at) if at.saturating_add(leeway) >= since && at <= now + leeway => {}
            _ => return Err(IdTokenError::Stale),
        }
    }
    Ok(())
}

fn algorithm_name(alg: Algorithm) -> &'static str {
    #[allow(unreachable_patterns)] // jsonwebtoken's list may grow
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unknown",
    }
}

/// Whether `jwk` may verify a signature by `alg`: a signing key (by `use`
/// and `key_ops`, where given), its `alg` (where given) this one, and its
/// type the algorithm's (RSA for RS/PS, the named curve for ES). An `oct`
/// (secret) key never verifies anything of a provider's.
fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let common = &jwk.common;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
        || common
            .key_operations
            .as_ref()
            .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
        || common
            .key_algorithm
            .is_some_and(|a| a.to_string() != algorithm_name(alg))
    {
        return false;
    }
    match (&jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        _ => false,
    }
}

/// One provider's key set, as last fetched.
pub struct KeyCache {
    jwks_uri: Uri,
    state: Mutex<Fetched>,
}

#[derive(Default)]
struct Fetched {
    keys: Vec<Jwk>,
    /// When `keys` were fetched.
    at: Option<i64>,
    /// When a fetch was last tried, whatever came of it.
    tried: Option<i64>,
    /// Calls made to the provider for its keys.
    fetches: u64,
}

impl KeyCache {
    pub fn new(jwks_uri: Uri) -> Self {
        KeyCache {
            jwks_uri,
            state: Mutex::new(Fetched::default()),
        }
    }

    /// A cache that holds `keys`, fetched at `now` (tests).
    pub fn holding(jwks_uri: Uri, keys: Vec<Jwk>, now: i64) -> Self {
        KeyCache {
            jwks_uri,
            state: Mutex::new(Fetched {
                keys,
                at: Some(now),
                tried: Some(now),
                fetches: 0,
            }),
        }
    }

    /// How many times the set was fetched.
    pub async fn fetches(&self) -> u64 {
        self.state.lock().await.fetches
    }

    /// The key that verifies a token by `alg` with `kid`: from the cache while
    /// it is young enough; else, or when no cached key matches, from a new
    /// fetch, unless the last was under `KEYS_MIN_REFETCH` ago. A token
    /// without `kid` is verified only where one key alone fits its `alg`.
    /// One fetch at a time: racers wait for it and use its keys.
    async fn key_for(
        &self,
        http: &ProviderHttp,
        kid: Option<&str>,
        alg: Algorithm,
        now: i64,
    ) -> Result<DecodingKey, IdTokenError> {
        let mut state = self.state.lock().await;
        let young = state
            .at
            .is_some_and(|at| now - at < KEYS_MAX_AGE.as_secs() as i64);
        if young && let Some(key) = find(&state.keys, kid, alg) {
            return key;
        }
        // A set never fetched may be tried again sooner: until it is, no
        // sign-in works at all.
        let pause = match state.at {
            Some(_) => KEYS_MIN_REFETCH,
            None => KEYS_FIRST_RETRY,
        };
        let may_fetch = state
            .tried
            .is_none_or(|tried| now - tried >= pause.as_secs() as i64);
        if may_fetch {
            state.fetches += 1;
            state.tried = Some(now);
            match fetch_keys(http, &self.jwks_uri).await {
                Ok(keys) => {
                    state.keys = keys;
                    state.at = Some(now);
                }
                // A failed fetch keeps the keys we have: a provider's blip
                // does not end the sign-ins its known keys still verify.
                Err(e) => {
                    // For a day at most: a key the provider rotated out does
                    // not verify for ever while its set cannot be read.
                    let usable = state
                        .at
                        .is_some_and(|at| now - at < KEYS_MAX_STALE.as_secs() as i64);
                    return match find(&state.keys, kid, alg).filter(|_| usable) {
                        Some(key) => {
                            tracing::warn!(error = %e, "the key set could not be read again: the cached keys are used");
                            key
                        }
                        None => Err(e),
                    };
                }
            }
        }
        find(&state.keys, kid, alg).unwrap_or(Err(IdTokenError::UnknownKey(kid.map(str::to_owned))))
    }
}

fn find(
    keys: &[Jwk],
    kid: Option<&str>,
    alg: Algorithm,
) -> Option<Result<DecodingKey, IdTokenError>> {
    let mut fitting = keys.iter().filter(|k| key_fits(k, alg));
    let jwk = match kid {
        Some(kid) => fitting.find(|k| k.common.key_id.as_deref() == Some(kid))?,
        None => {
            let one = fitting.next()?;
            if fitting.next().is_some() {
                return None;
            }
            one
        }
    };
    Some(DecodingKey::from_jwk(jwk).map_err(|e| IdTokenError::Keys(e.to_string())))
}

/// The provider's key set. Keys we cannot read (another type, a curve we do
/// not know) are skipped: a set may hold keys for others' uses.
async fn fetch_keys(http: &ProviderHttp, uri: &Uri) -> Result<Vec<Jwk>, IdTokenError> {
    let request = http::Request::get(uri.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| IdTokenError::Keys(e.to_string()))?;
    let response = http
        .send(request)
        .await
        .map_err(|e: ProviderError| IdTokenError::Keys(e.to_string()))?;
    if response.status() != http::StatusCode::OK {
        return Err(IdTokenError::Keys(format!(
            "the key set answered {}",
            response.status().as_u16()
        )));
    }
    #[derive(Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(response.body())
        .map_err(|e| IdTokenError::Keys(format!("not a key set: {e}")))?;
    let keys = raw
        .keys
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .collect();
    Ok(keys)
}

/// A key set as JSON, for tests and stand-ins.
pub fn key_set_json(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).expect("a key set serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate_pem_pair, public_key_from_pem};
    use crate::providers::Hosts;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const ISSUER: &str = "https://idp.example";
    const CLIENT: &str = "our-client";
    const NONCE: &str = "the-nonce";
    const NOW: i64 = 1_800_000_000;

    struct Rsa {
        private: EncodingKey,
        public_pem: String,
        jwk: Jwk,
    }

    fn rsa(kid: &str) -> Rsa {
        let (private, public_pem) = generate_pem_pair().unwrap();
        let public = public_key_from_pem(&public_pem, "test").unwrap();
        let mut jwk: Jwk =
            serde_json::from_value(serde_json::to_value(public.jwk()).unwrap()).unwrap();
        jwk.common.key_id = Some(kid.into());
        Rsa {
            private: EncodingKey::from_rsa_der(&pkcs1(&private)),
            public_pem,
            jwk,
        }
    }

    /// The RSAPrivateKey inside a 2048-bit key's PKCS#8 PEM (what
    /// jsonwebtoken signs with).
    fn pkcs1(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(&der[22..24], &[0x04, 0x82], "an OCTET STRING at 22");
        der[26..].to_vec()
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": ISSUER, "sub": "248289761001", "aud": CLIENT, "nonce": NONCE,
            "exp": NOW + 300, "iat": NOW - 5, "auth_time": NOW - 5,
            "email": "a@example.com", "email_verified": true, "name": "Jane Doe",
        })
    }

    fn sign(
        key: &EncodingKey,
        alg: Algorithm,
        kid: Option<&str>,
        claims: &serde_json::Value,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn expected(algorithms: &[String]) -> Expected<'_> {
        Expected {
            issuer: ISSUER,
            client_id: CLIENT,
            nonce: NONCE,
            algorithms,
            authenticated_since: None,
            now: NOW,
        }
    }

    fn rs256() -> Vec<String> {
        vec!["RS256".into()]
    }

    fn cache(keys: Vec<Jwk>) -> KeyCache {
        // Unreachable: these tests must never fetch (a fetch would fail).
        KeyCache::holding("https://127.0.0.1:9/jwks".parse().unwrap(), keys, NOW)
    }

    fn http() -> ProviderHttp {
        ProviderHttp::new(Hosts::Public)
    }

    async fn check(
        token: &str,
        keys: &KeyCache,
        expected: &Expected<'_>,
    ) -> Result<IdClaims, IdTokenError> {
        validate(token, keys, &http(), expected).await
    }

    #[tokio::test]
    async fn a_good_token_gives_its_claims() {
        let key = rsa("k1");
        let keys = cache(vec![key.jwk.clone()]);
        let token = sign(&key.private, Algorithm::RS256, Some("k1"), &claims());
        let got = check(&token, &keys, &expected(&rs256())).await.unwrap();
        assert_eq!(got.sub, "248289761001");
        assert_eq!(got.iss, ISSUER);
        assert!(got.email_verified);
        assert_eq!(got.name.as_deref(), Some("Jane Doe"));
        // Without a kid, the one key that fits is used.
        let token = sign(&key.private, Algorithm::RS256, None, &claims());
        assert!(check(&token, &keys, &expected(&rs256())).await.is_ok());
        assert_eq!(keys.fetches().await, 0);
    }

    #[tokio::test]
    async fn a_token_signed_by_another_key_is_refused() {
        let key = rsa("k1");
        let other = rsa("k1");
        let keys = cache(vec![key.jwk.clone()]);
        let token = sign(&other.private, Algorithm::RS256, Some("k1"), &claims());
        assert_eq!(
            check(&token, &keys, &expected(&rs256())).await,
            Err(IdTokenError::Signature)
        );
    }

    #[tokio::test]
    async fn alg_none_and_hmac_keyed_by_the_public_key_are_refused() {
        let key = rsa("k1");
        let keys = cache(vec![key.jwk.clone()]);
        // HS256 with the provider's public key as the secret: the classic confusion.
        let hmac = sign(
            &EncodingKey::from_secret(key.public_pem.as_bytes()).unwrap(),
            Algorithm::HS256,
            Some("k1"),
            &claims(),
        );
        let all: Vec<String> = ["HS256", "RS256"].map(String::from).to_vec();
        assert_eq!(
            check(&hmac, &keys, &expected(&all)).await,
            Err(IdTokenError::Algorithm("HS256".into())),
            "never an HMAC, even where a provider lists one"
        );
        // An oct key in the provider's set verifies nothing either.
        let oct: Jwk = serde_json::from_value(json!({
            "kty": "oct", "kid": "k1", "k": URL_SAFE_NO_PAD.encode(key.public_pem.as_bytes())
        }))
        .unwrap();
        assert!(!key_fits(&oct, Algorithm::HS256) && !key_fits(&oct, Algorithm::RS256));
        // alg none: unsigned, header and claims only.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        assert!(matches!(
            check(&none, &keys, &expected(&rs256())).await,
            Err(IdTokenError::Malformed(_))
        ));
        // An algorithm the provider does not list, though ours.
        let ps = sign(&key.private, Algorithm::PS256, Some("k1"), &claims());
        assert_eq!(
            check(&ps, &keys, &expected(&rs256())).await,
            Err(IdTokenError::Algorithm("PS256".into()))
        );
    }

    #[tokio::test]
    async fn each_claim_is_checked() {
        let key = rsa("k1");
        let keys = cache(vec![key.jwk.clone()]);
        let leeway = LEEWAY.as_secs() as i64;
        let cases: Vec<(&str, serde_json::Value, IdTokenError)> = vec![
            (
                "iss",
                json!("https://other.example"),
                IdTokenError::Issuer("https://other.example".into()),
            ),
            (
                "iss",
                json!("https://idp.example/"),
                IdTokenError::Issuer("https://idp.example/".into()),
            ),
            ("aud", json!("someone-else"), IdTokenError::Audience),
            ("aud", json!(["someone-else"]), IdTokenError::Audience),
            ("exp", json!(NOW - leeway), IdTokenError::Expired),
            ("iat", json!(NOW + leeway + 1), IdTokenError::IssuedAt),
            (
                "iat",
                json!(NOW - MAX_TOKEN_AGE.as_secs() as i64 - 1),
                IdTokenError::IssuedAt,
            ),
            ("nbf", json!(NOW + leeway + 1), IdTokenError::NotYetValid),
            ("nonce", json!("another-round-trip"), IdTokenError::Nonce),
            ("nonce", json!(null), IdTokenError::Nonce),
        ];
        for (claim, value, error) in cases {
            let mut body = claims();
            body[claim] = value.clone();
            let token = sign(&key.private, Algorithm::RS256, Some("k1"), &body);
            assert_eq!(
                check(&token, &keys, &expected(&rs256())).await,
                Err(error),
                "{claim} = {value}"
            );
        }
        for missing in ["iss", "sub", "aud", "exp", "iat"] {
            let mut body = claims();
            body.as_object_mut().unwrap().remove(missing);
            let token = sign(&key.private, Algorithm::RS256, Some("k1"), &body);
            assert!(
                matches!(
                    check(&token, &keys, &expected(&rs256())).await,
                    Err(IdTokenError::Malformed(_))
                ),
                "without {missing}"
            );
        }
        // Within the leeway, still good.
        let mut body = claims();
        body["exp"] = json!(NOW - leeway + 1);
        let token = sign(&key.private, Algorithm::RS256, Some("k1"), &body);
        assert!(check(&token, &keys, &expected(&rs256())).await.is_ok());
    }

    #[tokio::test]
    async fn azp_must_name_us_when_present_or_when_others_share_the_audience() {
        let key = rsa("k1");
        let keys = cache(vec![key.jwk.clone()]);
        let run = |aud: serde_json::Value, azp: Option<&str>| {
            let mut body = claims();
            body["aud"] = aud;
            if let Some(azp) = azp {
                body["azp"] = json!(azp);
            }
            sign(&key.private, Algorithm::RS256, Some("k1"), &body)
        };
        let ok = [
            run(json!([CLIENT]), None),
            run(json!([CLIENT, "other"]), Some(CLIENT)),
            run(json!(CLIENT), Some(CLIENT)),
        ];
        for token in ok {
            assert!(check(&token, &keys, &expected(&rs256())).await.is_ok());
        }
        let refused = [
            run(json!([CLIENT, "other"]), None),
            run(json!([CLIENT, "other"]), Some("other")),
            run(json!(CLIENT), Some("other")),
        ];
        for token in refused {
            assert_eq!(
                check(&token, &keys, &expected(&rs256())).await,
                Err(IdTokenError::Audience)
            );
        }
    }

    #[tokio::test]
    async fn a_fresh_sign_in_needs_an_auth_time_since_it_was_asked() {
        let key = rsa("k1");
        let keys = cache(vec![key.jwk.clone()]);
        let algorithms = rs256();
        let mut fresh = expected(&algorithms);
        fresh.authenticated_since = Some(NOW - 30);
        let token = sign(&key.private, Algorithm::RS256, Some("k1"), &claims());
        assert!(check(&token, &keys, &fresh).await.is_ok());
        for auth_time in [json!(NOW - 30 - LEEWAY.as_secs() as i64 - 1), json!(null)] {
            let mut body = claims();
            body["auth_time"] = auth_time;
            let token = sign(&key.private, Algorithm::RS256, Some("k1"), &body);
            assert_eq!(check(&token, &keys, &fresh).await, Err(IdTokenError::Stale));
        }
    }

    #[test]
    fn email_verified_is_true_only_as_a_json_true() {
        for (value, verified) in [
            (json!(true), true),
            (json!("true"), false),
            (json!(1), false),
            (json!(false), false),
        ] {
            let mut body = claims();
            body["email_verified"] = value;
            let got: IdClaims = serde_json::from_value(body).unwrap();
            assert_eq!(got.email_verified, verified);
        }
    }

    #[tokio::test]
    async fn keys_are_matched_by_kid_type_curve_and_use() {
        let a = rsa("a");
        let b = rsa("b");
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = ec.public_key().as_ref();
        let ec_jwk: Jwk = serde_json::from_value(json!({
            "kty": "EC", "crv": "P-256", "kid": "e",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }))
        .unwrap();
        let ec_private = EncodingKey::from_ec_der(ec.to_pkcs8v1().unwrap().as_ref());
        let mut encryption = b.jwk.clone();
        encryption.common.key_id = Some("enc".into());
        encryption.common.public_key_use = Some(PublicKeyUse::Encryption);
        let keys = cache(vec![
            a.jwk.clone(),
            b.jwk.clone(),
            ec_jwk.clone(),
            encryption,
        ]);
        let both: Vec<String> = ["RS256", "ES256"].map(String::from).to_vec();
        let exp = expected(&both);
        assert!(
            check(
                &sign(&b.private, Algorithm::RS256, Some("b"), &claims()),
                &keys,
                &exp
            )
            .await
            .is_ok()
        );
        assert!(
            check(
                &sign(&ec_private, Algorithm::ES256, Some("e"), &claims()),
                &keys,
                &exp
            )
            .await
            .is_ok()
        );
        // Two RSA keys fit a token without kid: none is guessed.
        let no_kid = sign(&a.private, Algorithm::RS256, None, &claims());
        assert_eq!(
            check(&no_kid, &keys, &exp).await,
            Err(IdTokenError::UnknownKey(None))
        );
        // An EC key never verifies an RS256 token, whatever its kid.
        let forged = sign(&a.private, Algorithm::RS256, Some("e"), &claims());
        assert_eq!(
            check(&forged, &keys, &exp).await,
            Err(IdTokenError::UnknownKey(Some("e".into())))
        );
        // A key published for encryption signs nothing of the provider's.
        let enc = sign(&b.private, Algorithm::RS256, Some("enc"), &claims());
        assert_eq!(
            check(&enc, &keys, &exp).await,
            Err(IdTokenError::UnknownKey(Some("enc".into())))
        );
        // ES384 needs a P-384 key.
        assert!(!key_fits(&ec_jwk, Algorithm::ES384) && key_fits(&ec_jwk, Algorithm::ES256));
        let mut pinned = a.jwk.clone();
        pinned.common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::RS256);
        assert!(key_fits(&pinned, Algorithm::RS256) && !key_fits(&pinned, Algorithm::PS256));
        // Within the refetch pause, an unknown kid makes no call.
        assert_eq!(keys.fetches().await, 0);
    }

    #[tokio::test]
    async fn an_oversized_token_is_not_read() {
        let keys = cache(vec![]);
        let token = "a".repeat(MAX_ID_TOKEN_BYTES + 1);
        assert!(matches!(
            check(&token, &keys, &expected(&rs256())).await,
            Err(IdTokenError::Malformed(_))
        ));
    }
}
