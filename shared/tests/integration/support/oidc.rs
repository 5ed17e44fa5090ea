//! A stand-in OpenID provider on loopback, for the federation tests that a
//! certified provider cannot play: it answers discovery, its key set and
//! its token endpoint as a provider does (PKCE, the redirect URI and the
//! client's secret checked; a code used once), and its ID tokens are what
//! the test orders: its own key's, or forged (another key, `alg` none,
//! HS256 keyed by its public key, another audience, expired, a wrong nonce,
//! another issuer). The happy path against the certified provider is
//! tests/idp and the browser's test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::{TestKey, forge, read_http_request, test_key};

pub const CLIENT_ID: &str = "our-client";
pub const CLIENT_SECRET: &str = "stand-in-secret-0123456789";

/// How the stand-in signs the ID token it hands out for a code.
#[derive(Clone, Debug)]
pub enum Signing {
    /// Its own key, as published.
    Own,
    /// Another RSA key, under its own key's kid.
    OtherKey,
    /// `alg: none`, no signature.
    None,
    /// HS256, keyed by its own public key's PEM.
    Hs256WithPublicKey,
}

/// What a test orders for the ID token of the next code: changes to the
/// claims a good one has (`null` removes a claim), and how it is signed.
#[derive(Clone, Debug)]
pub struct Mint {
    pub subject: String,
    pub claims: Value,
    pub signing: Signing,
}

impl Mint {
    pub fn good(subject: &str) -> Self {
        Mint {
            subject: subject.into(),
            claims: json!({}),
            signing: Signing::Own,
        }
    }

    pub fn with(mut self, claim: &str, value: Value) -> Self {
        self.claims[claim] = value;
        self
    }

    pub fn signed(mut self, signing: Signing) -> Self {
        self.signing = signing;
        self
    }
}

/// A code given out, and what redeeming it must show.
struct Grant {
    challenge: String,
    redirect_uri: String,
    nonce: String,
    mint: Mint,
}

#[derive(Default)]
struct Shared {
    grants: HashMap<String, Grant>,
    /// Calls by path.
    calls: HashMap<String, usize>,
    /// Whether the provider has rotated to its second key (`kid`
    /// `provider-key-2`), which it then signs with and publishes alone.
    rotated: bool,
    /// A `kid` to put in the next tokens' header instead (a forged one).
    forced_kid: Option<String>,
}

pub struct StandIn {
    pub issuer: String,
    shared: Arc<Mutex<Shared>>,
}

/// The provider's key (the tests' third key).
pub fn provider_key() -> &'static TestKey {
    test_key(2)
}

/// The key it rotates to, and each key's `kid`.
fn current_key(rotated: bool) -> (&'static TestKey, &'static str) {
    if rotated {
        (test_key(3), "provider-key-2")
    } else {
        (provider_key(), "provider-key")
    }
}

impl StandIn {
    pub async fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (serving, base) = (shared.clone(), issuer.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (shared, base) = (serving.clone(), base.clone());
                tokio::spawn(async move {
                    while let Some((head, bytes)) = read_http_request(&mut socket).await {
                        let answer = answer(&shared, &base, &head, &bytes).await;
                        if socket.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        StandIn { issuer, shared }
    }

    /// Rotates the provider's signing key: the new one signs and is the only
    /// one published.
    pub fn rotate(&self) {
        self.shared.lock().unwrap().rotated = true;
    }

    /// Its next tokens name `kid` in their header (a key it never had).
    pub fn force_kid(&self, kid: &str) {
        self.shared.lock().unwrap().forced_kid = Some(kid.into());
    }

    /// How many calls `path` had.
    pub fn calls(&self, path: &str) -> usize {
        *self.shared.lock().unwrap().calls.get(path).unwrap_or(&0)
    }

    /// What a person's sign-in at the provider gives for `authorization_url`
    /// (checked as a provider checks it): the callback's query, with a new
    /// code whose ID token is `mint`'s.
    pub fn authorize(&self, authorization_url: &str, mint: Mint) -> String {
        let (endpoint, query) = authorization_url.split_once('?').unwrap();
        assert_eq!(endpoint, format!("{}/auth", self.issuer));
        let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["client_id"], CLIENT_ID);
        assert_eq!(params["code_challenge_method"], "S256");
        assert!(params["scope"].split(' ').any(|s| s == "openid"));
        let code = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
        self.shared.lock().unwrap().grants.insert(
            code.clone(),
            Grant {
                challenge: params["code_challenge"].clone(),
                redirect_uri: params["redirect_uri"].clone(),
                nonce: params["nonce"].clone(),
                mint,
            },
        );
        form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("state", &params["state"])
            .append_pair("iss", &self.issuer)
            .finish()
    }
}

fn respond(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn answer(shared: &Mutex<Shared>, base: &str, head: &str, bytes: &[u8]) -> Vec<u8> {
    let line = head.lines().next().unwrap_or_default().to_owned();
    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
    *shared
        .lock()
        .unwrap()
        .calls
        .entry(path.clone())
        .or_default() += 1;
    match path.as_str() {
        "/.well-known/openid-configuration" => respond(
            "200 OK",
            &json!({
                "issuer": base,
                "authorization_endpoint": format!("{base}/auth"),
                "token_endpoint": format!("{base}/token"),
                "jwks_uri": format!("{base}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "authorization_response_iss_parameter_supported": true,
            })
            .to_string(),
        ),
        "/jwks" => {
            let (key, kid) = current_key(shared.lock().unwrap().rotated);
            let mut jwk = serde_json::to_value(key.public.jwk()).unwrap();
            jwk["kid"] = json!(kid);
            respond("200 OK", &json!({ "keys": [jwk] }).to_string())
        }
        "/token" => token(shared, base, head, bytes).await,
        _ => respond("404 Not Found", "{}"),
    }
}

async fn token(shared: &Mutex<Shared>, base: &str, head: &str, bytes: &[u8]) -> Vec<u8> {
    let refuse = |error: &str| respond("400 Bad Request", &json!({ "error": error }).to_string());
    let expected_auth = format!(
        "basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    )
    .to_ascii_lowercase();
    if super::http_header(head, "authorization").as_deref() != Some(expected_auth.as_str()) {
        return respond("401 Unauthorized", r#"{"error":"invalid_client"}"#);
    }
    let body = &bytes[head.len()..];
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return refuse("unsupported_grant_type");
    }
    // A code is used once, whatever comes of it.
    let Some(grant) = form
        .get("code")
        .and_then(|code| shared.lock().unwrap().grants.remove(code))
    else {
        return refuse("invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    if challenge != grant.challenge || form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return refuse("invalid_grant");
    }
    let now = auth::clock::system_now();
    let mut claims = json!({
        "iss": base, "sub": grant.mint.subject, "aud": CLIENT_ID, "nonce": grant.nonce,
        "iat": now, "exp": now + 300, "auth_time": now,
        "name": "Stand-in Person", "email": format!("{}@standin.example", grant.mint.subject),
        "email_verified": true,
    });
    for (claim, value) in grant.mint.claims.as_object().unwrap() {
        match value {
            Value::Null => {
                claims.as_object_mut().unwrap().remove(claim);
            }
            value => claims[claim] = value.clone(),
        }
    }
    let (key, kid, forced) = {
        let shared = shared.lock().unwrap();
        let (key, kid) = current_key(shared.rotated);
        (key, kid, shared.forced_kid.clone())
    };
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": forced.as_deref().unwrap_or(kid)});
    let id_token = match grant.mint.signing {
        Signing::Own => forge(key, &header, &claims).await,
        Signing::OtherKey => forge(super::stranger_key(), &header, &claims).await,
        Signing::None => format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "provider-key"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        ),
        Signing::Hs256WithPublicKey => {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("provider-key".into());
            let key = EncodingKey::from_secret(provider_key().public_pem.as_bytes()).unwrap();
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        }
    };
    respond(
        "200 OK",
        &json!({"access_token": "opaque", "token_type": "Bearer", "expires_in": 300, "id_token": id_token})
            .to_string(),
    )
}
