//! Sign-in through an outside identity provider (OpenID Connect, the
//! authorization code flow with PKCE): the providers we are configured with,
//! the round trip's server-side state (a transaction), the provider's
//! authorization URL and its token endpoint, and the outside identity a
//! completed round trip proves: the pair (issuer, subject), never an address.
//!
//! A transaction is the shape of every short-lived state of ours: a random
//! handle given to the browser (in the `__Host-oidc` cookie, set by a request
//! our Origin check passed), only its hash stored, ten minutes at most, used
//! once (a conditional delete), and bound to what started it: the provider,
//! the intent (a sign-in, or connecting the signed-in user's account) and a
//! `state`, `nonce` and PKCE verifier of its own.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use lambda_http::http::{self, Uri};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::{ConfigError, Source};
use crate::email::hex_sha256;
use crate::id_tokens::{self, Expected, IdClaims, IdTokenError, KeyCache};
use crate::providers::{
    ClientAuth, DiscoveryError, Hosts, ProviderError, ProviderHttp, ProviderMetadata, discover,
};
pub use crate::users::ExternalId;
use crate::users::{USERNAME_MAX_CHARS, USERNAME_MIN_CHARS, UserId, Username};

/// How long a round trip may take, from our start to the provider's callback.
pub const TRANSACTION_TTL: Duration = Duration::from_secs(10 * 60);
/// The cookie that names a browser's round trip. `SameSite=Lax`: the
/// provider's redirect back is a cross-site top-level navigation, which a
/// `Strict` cookie would not ride.
pub const TRANSACTION_COOKIE: &str = "__Host-oidc";
/// How long a provider's discovery document is used before it is read again.
pub const DISCOVERY_MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// Where a round trip may send the browser back to: paths of the page, never
/// a URL from a request.
pub const RETURN_PATHS: &[&str] = &["/"];
/// The most outside identities one account holds (its deletion removes
/// them all in one transaction).
pub const MAX_IDENTITIES: usize = 10;
const RANDOM_BYTES: usize = 32;
const MAX_PROVIDERS: usize = 8;

/// One configured provider, as `OIDC_PROVIDERS` names it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// In our paths (`/oidc/<id>/callback`): lower-case letters, digits, `-`.
    pub id: String,
    /// On the button: "Sign in with <name>".
    pub name: String,
    /// Exactly as the provider's discovery document names it.
    pub issuer: String,
    pub client_id: String,
    /// The SSM parameter (a `SecureString`) that holds the client secret.
    pub client_secret_parameter: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Domains this provider is authoritative for: a first sign-in whose
    /// verified address (the provider's `email_verified`) is in one of them
    /// connects to the account whose verified address it is, if any. Empty
    /// (the default): never linked by address.
    #[serde(default)]
    pub link_verified_email_domains: Vec<String>,
    /// Whether this provider's own multi-factor sign-in (`mfa` in its ID
    /// token's `amr`, RFC 8176) stands for ours: such a sign-in of an
    /// account with a second factor is not asked for it again, and its
    /// session is `aal2`. Off (the default): a provider's sign-in is one
    /// factor, whatever it says. Only for a provider whose MFA you vouch for.
    #[serde(default)]
    pub trust_mfa: bool,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

/// `OIDC_PROVIDERS`: a JSON list of providers (none when unset or empty).
pub fn providers_from_source(env: &impl Source) -> Result<Vec<ProviderConfig>, ConfigError> {
    const VAR: &str = "OIDC_PROVIDERS";
    let invalid = |reason: String| ConfigError::Invalid { var: VAR, reason };
    let raw = env.get(VAR).unwrap_or_default();
    if raw.trim().is_empty() {
        return Ok(Vec::new());
    }
    let providers: Vec<ProviderConfig> =
        serde_json::from_str(&raw).map_err(|e| invalid(format!("not a list of providers: {e}")))?;
    if providers.len() > MAX_PROVIDERS {
        return Err(invalid(format!("at most {MAX_PROVIDERS} providers")));
    }
    for (i, p) in providers.iter().enumerate() {
        let id_ok = (1..=32).contains(&p.id.len())
            && p.id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(invalid(format!(
                "provider id {:?}: 1 to 32 of a-z, 0-9 and -",
                p.id
            )));
        }
        if providers[..i]
            .iter()
            .any(|q| q.id == p.id || q.issuer == p.issuer)
        {
            return Err(invalid(format!("provider {:?} is listed twice", p.id)));
        }
        let name_len = p.name.trim().chars().count();
        if !(1..=40).contains(&name_len) || p.name.chars().any(char::is_control) {
            return Err(invalid(format!(
                "provider {:?}: a name of 1 to 40 characters",
                p.id
            )));
        }
        if !issuer_ok(&p.issuer) {
            return Err(invalid(format!(
                "provider {:?}: the issuer must be an https URL (http only on a loopback address) with no query or fragment",
                p.id
            )));
        }
        if p.client_id.is_empty() || p.client_secret_parameter.is_empty() {
            return Err(invalid(format!(
                "provider {:?}: a client id and the secret's parameter",
                p.id
            )));
        }
        if !p.scopes.iter().any(|s| s == "openid")
            || p.scopes.iter().any(|s| {
                s.is_empty()
                    || !s
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            })
        {
            return Err(invalid(format!(
                "provider {:?}: scopes must include openid",
                p.id
            )));
        }
    }
    Ok(providers)
}

fn issuer_ok(issuer: &str) -> bool {
    let Ok(uri) = issuer.parse::<Uri>() else {
        return false;
    };
    !issuer.contains(['?', '#'])
        && crate::providers::is_provider_url(&uri, Hosts::for_issuer(issuer))
}

/// The configured providers, each with its client secret read from SSM
/// (`GetParameter`, decrypted) at init, and the client their calls go
/// through (loopback allowed only where an issuer is itself on loopback).
/// A secret that cannot be read stops the function at init, naming its
/// provider.
pub async fn providers_from_env(
    sdk: &aws_config::SdkConfig,
    env: &impl Source,
    our_origin: &str,
) -> Result<(Vec<Provider>, ProviderHttp), String> {
    let configs = providers_from_source(env).map_err(|e| e.to_string())?;
    // The role may read the parameters under one path: one elsewhere would
    // be AccessDenied at every cold start, so it is refused here, by name.
    if let Some(path) = env.get("OIDC_PARAMETER_PATH").filter(|p| !p.is_empty())
        && let Some(outside) = configs
            .iter()
            .find(|c| !c.client_secret_parameter.starts_with(&path))
    {
        return Err(format!(
            "OIDC_PROVIDERS is invalid: provider {:?}'s client_secret_parameter is not under OIDC_PARAMETER_PATH ({path})",
            outside.id
        ));
    }
    let hosts = if configs
        .iter()
        .any(|c| Hosts::for_issuer(&c.issuer) == Hosts::AlsoLoopback)
    {
        Hosts::AlsoLoopback
    } else {
        Hosts::Public
    };
    let ssm = ssm_client(sdk);
    let secrets = futures_util::future::try_join_all(configs.iter().map(|c| {
        let ssm = &ssm;
        async move {
            let answer = ssm
                .get_parameter()
                .name(&c.client_secret_parameter)
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "provider {:?}: its client secret ({}) could not be read: {}",
                        c.id,
                        c.client_secret_parameter,
                        crate::aws::describe(&e)
                    )
                })?;
            answer
                .parameter
                .and_then(|p| p.value)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("provider {:?}: its client secret is empty", c.id))
        }
    }))
    .await?;
    let providers = configs
        .into_iter()
        .zip(secrets)
        .map(|(config, secret)| Provider::new(config, secret, our_origin))
        .collect();
    Ok((providers, ProviderHttp::new(hosts)))
}

/// The SSM client on the shared configuration (`AWS_ENDPOINT_URL_SSM` for a
/// local stand-in).
pub fn ssm_client(sdk: &aws_config::SdkConfig) -> aws_sdk_ssm::Client {
    let mut config = aws_sdk_ssm::config::Builder::from(sdk);
    if let Some(url) = crate::aws::endpoint_override("SSM") {
        config = config.endpoint_url(url);
    }
    aws_sdk_ssm::Client::from_conf(config.build())
}

/// A provider at run time: its configuration, its secret (read at init), and
/// what we learnt of it (its discovery document and keys, cached).
pub struct Provider {
    pub config: ProviderConfig,
    client_secret: String,
    /// `<our origin>/oidc/<id>/callback`: one per provider (a mix-up defence).
    pub redirect_uri: String,
    discovered: Mutex<Discovery>,
}

/// What we learnt of a provider, and when we last failed to.
#[derive(Default)]
struct Discovery {
    found: Option<Arc<Discovered>>,
    failed_at: Option<i64>,
}

/// A provider's checked discovery document and its key set's cache.
pub struct Discovered {
    pub metadata: ProviderMetadata,
    pub keys: Arc<KeyCache>,
    at: i64,
}

/// The least time between two tries of a provider never discovered yet:
/// while it is down, a callback fails at once rather than waiting out
/// another call's timeout.
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// Why a round trip could not go on. Logged; the person sees a short code.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("the provider's discovery failed: {0}")]
    Discovery(#[from] DiscoveryError),
    #[error("the token endpoint: {0}")]
    Call(#[from] ProviderError),
    #[error("the token endpoint refused the code: {0}")]
    Refused(String),
    #[error("the token endpoint answered {0}")]
    TokenStatus(u16),
    #[error("the token endpoint's answer is not one: {0}")]
    TokenMalformed(String),
    #[error("the ID token: {0}")]
    IdToken(#[from] IdTokenError),
}

impl FederationError {
    /// Whether the provider was down or slow, rather than anything refused.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            FederationError::Discovery(DiscoveryError::Call(_))
                | FederationError::Call(_)
                | FederationError::IdToken(IdTokenError::Keys(_))
        ) || matches!(self, FederationError::TokenStatus(status) if *status >= 500)
    }
}

impl Provider {
    pub fn new(config: ProviderConfig, client_secret: String, our_origin: &str) -> Self {
        let redirect_uri = format!(
            "{}/oidc/{}/callback",
            our_origin.trim_end_matches('/'),
            config.id
        );
        Provider {
            config,
            client_secret,
            redirect_uri,
            discovered: Mutex::new(Discovery::default()),
        }
    }

    /// The provider's document and keys: cached for `DISCOVERY_MAX_AGE`; a
    /// failed read keeps an older document if there is one, and a provider
    /// never read is not tried again within `DISCOVERY_RETRY`. A document
    /// read again that names the same key set keeps its cached keys.
    pub async fn discovered(
        &self,
        http: &ProviderHttp,
        now: i64,
    ) -> Result<Arc<Discovered>, FederationError> {
        let mut discovery = self.discovered.lock().await;
        if let Some(found) = discovery.found.as_ref()
            && now - found.at < DISCOVERY_MAX_AGE.as_secs() as i64
        {
            return Ok(found.clone());
        }
        if discovery.found.is_none()
            && discovery
                .failed_at
                .is_some_and(|at| now - at < DISCOVERY_RETRY.as_secs() as i64)
        {
            return Err(FederationError::Discovery(DiscoveryError::Call(
                ProviderError::Failed("the provider failed a moment ago".into()),
            )));
        }
        match discover(http, &self.config.issuer).await {
            Ok(metadata) => {
                let keys = match discovery.found.as_ref() {
                    Some(old) if old.metadata.jwks_uri == metadata.jwks_uri => old.keys.clone(),
                    _ => Arc::new(KeyCache::new(metadata.jwks_uri.clone())),
                };
                let found = Arc::new(Discovered {
                    metadata,
                    keys,
                    at: now,
                });
                discovery.found = Some(found.clone());
                discovery.failed_at = None;
                Ok(found)
            }
            Err(e) => {
                discovery.failed_at = Some(now);
                match discovery.found.as_ref() {
                    Some(old) => {
                        tracing::warn!(provider = %self.config.id, error = %e, "discovery failed: the older document is used");
                        // And kept a minute more, before another try.
                        let kept = Arc::new(Discovered {
                            metadata: old.metadata.clone(),
                            keys: old.keys.clone(),
                            at: now - DISCOVERY_MAX_AGE.as_secs() as i64 + 60,
                        });
                        discovery.found = Some(kept.clone());
                        Ok(kept)
                    }
                    None => Err(e.into()),
                }
            }
        }
    }

    /// Where the browser goes to sign in at the provider for `tx`.
    pub fn authorization_url(
        &self,
        metadata: &ProviderMetadata,
        tx: &Transaction,
        secrets: &TransactionSecrets,
    ) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &secrets.state)
            .append_pair("nonce", &secrets.nonce)
            .append_pair("code_challenge", &pkce_challenge(&secrets.verifier))
            .append_pair("code_challenge_method", "S256");
        if tx.fresh {
            // A proof made now, not a session the provider already holds.
            query
                .append_pair("prompt", "login")
                .append_pair("max_age", "0");
        }
        let endpoint = metadata.authorization_endpoint.to_string();
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        format!("{endpoint}{separator}{}", query.finish())
    }

    /// Trades `code` for an ID token at the provider's token endpoint, and
    /// validates it for `tx`.
    pub async fn redeem(
        &self,
        http: &ProviderHttp,
        discovered: &Discovered,
        code: &str,
        tx: &Transaction,
        now: i64,
    ) -> Result<IdClaims, FederationError> {
        let metadata = &discovered.metadata;
        let request = self
            .token_request(metadata, code, tx)
            .map_err(|e| FederationError::TokenMalformed(e.to_string()))?;
        let response = http.send(request).await?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            id_token: Option<String>,
            error: Option<String>,
        }
        let status = response.status().as_u16();
        let answer: Option<TokenAnswer> = serde_json::from_slice(response.body()).ok();
        if status != 200 {
            return Err(match answer.and_then(|a| a.error) {
                Some(error) if status == 400 || status == 401 => FederationError::Refused(
                    error
                        .chars()
                        .filter(char::is_ascii_graphic)
                        .take(64)
                        .collect(),
                ),
                _ => FederationError::TokenStatus(status),
            });
        }
        let id_token = answer
            .and_then(|a| a.id_token)
            .ok_or_else(|| FederationError::TokenMalformed("no id_token".into()))?;
        let expected = Expected {
            issuer: &metadata.issuer,
            client_id: &self.config.client_id,
            nonce: &tx.nonce,
            algorithms: &metadata.algorithms,
            authenticated_since: tx.fresh.then_some(tx.created_at),
            now,
        };
        Ok(id_tokens::validate(&id_token, &discovered.keys, http, &expected).await?)
    }
}

impl Provider {
    /// The token request for `code` (RFC 6749 §4.1.3, with RFC 7636's verifier).
    fn token_request(
        &self,
        metadata: &ProviderMetadata,
        code: &str,
        tx: &Transaction,
    ) -> Result<http::Request<Vec<u8>>, http::Error> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("code_verifier", &tx.verifier);
        let mut request = http::Request::post(metadata.token_endpoint.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        match metadata.client_auth {
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: each part form-encoded, then Basic.
                let encode =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let credentials = format!(
                    "{}:{}",
                    encode(&self.config.client_id),
                    encode(&self.client_secret)
                );
                request = request.header(
                    http::header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(credentials)),
                );
            }
            ClientAuth::Post => {
                form.append_pair("client_id", &self.config.client_id)
                    .append_pair("client_secret", &self.client_secret);
            }
        }
        request.body(form.finish().into_bytes())
    }
}

fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
}

fn random_token() -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What a round trip was started for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Sign in (or sign up) with the provider.
    SignIn,
    /// Connect the provider to the signed-in user's account.
    /// The caller's session and its epoch, which must still stand when the
    /// round trip ends.
    Connect {
        user_id: UserId,
        session_id: String,
        epoch: u64,
    },
    /// A fresh proof, in the caller's session, through an identity of the
    /// caller's (for an account without a password: where others prove
    /// their password again).
    Reauthenticate {
        user_id: UserId,
        session_id: String,
        epoch: u64,
    },
}

/// A round trip as stored (by its handle's hash). `Debug` leaves out its
/// nonce and PKCE verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Transaction {
    pub handle_hash: String,
    pub provider: String,
    pub intent: Intent,
    /// The `state` sent, hashed: a table read must not give it away.
    pub state_hash: String,
    /// The `nonce` sent, as the ID token must carry it.
    pub nonce: String,
    /// The PKCE verifier: sent once, to the token endpoint.
    pub verifier: String,
    pub return_to: String,
    /// Whether the provider was asked for a sign-in made now (`max_age=0`).
    pub fresh: bool,
    /// The hash of the device proof the browser presented at the start (its
    /// device cookie, `SameSite=Strict`, does not ride the provider's
    /// redirect back): a sign-in it vouches for is a known device's, as at
    /// a password login.
    pub device_hash: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A new round trip's secrets: the handle goes in the cookie, `state` and
/// `nonce` to the provider.
pub struct TransactionSecrets {
    pub handle: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl Transaction {
    pub fn begin(
        provider: &str,
        intent: Intent,
        return_to: &str,
        device_hash: Option<String>,
        now: i64,
    ) -> (Transaction, TransactionSecrets) {
        let secrets = TransactionSecrets {
            handle: random_token(),
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
        };
        // A connection or a fresh proof asks for a sign-in made now.
        let fresh = !matches!(intent, Intent::SignIn);
        let tx = Transaction {
            handle_hash: handle_hash(&secrets.handle),
            provider: provider.to_owned(),
            intent,
            state_hash: state_hash(&secrets.state),
            nonce: secrets.nonce.clone(),
            verifier: secrets.verifier.clone(),
            return_to: return_to.to_owned(),
            fresh,
            device_hash,
            created_at: now,
            expires_at: now + TRANSACTION_TTL.as_secs() as i64,
        };
        (tx, secrets)
    }

    /// Whether `state`, as the provider sent it back, is this round trip's.
    pub fn state_matches(&self, state: &str) -> bool {
        verify_slices_are_equal(
            hex_sha256(state.as_bytes()).as_bytes(),
            self.state_hash.as_bytes(),
        )
        .is_ok()
    }

    pub fn is_live(&self, now: i64) -> bool {
        self.expires_at > now
    }
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("provider", &self.provider)
            .field("intent", &self.intent)
            .field("return_to", &self.return_to)
            .field("fresh", &self.fresh)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a round trip's `state` is stored as.
pub fn state_hash(state: &str) -> String {
    hex_sha256(state.as_bytes())
}

/// What a handle is stored under. A 256-bit random handle needs no salt.
pub fn handle_hash(handle: &str) -> String {
    hex_sha256(handle.as_bytes())
}

/// The username a first sign-in proposes, from what the provider says:
/// its `preferred_username`, else the address's local part, else the name,
/// cut to our rule's characters; `user` when nothing is left. The store
/// decides whether it is free (`with_suffix` makes another).
pub fn proposed_username(claims: &IdClaims) -> Username {
    let candidates = [
        claims.preferred_username.as_deref(),
        claims.email.as_deref().and_then(|e| e.split('@').next()),
        claims.name.as_deref(),
        claims.given_name.as_deref(),
    ];
    for raw in candidates.into_iter().flatten() {
        let cleaned: String = raw
            .chars()
            .map(|c| if c == ' ' { '.' } else { c })
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(USERNAME_MAX_CHARS - 9)
            .collect();
        if cleaned.len() >= USERNAME_MIN_CHARS
            && let Ok(name) = Username::parse(&cleaned)
        {
            return name;
        }
    }
    Username::parse("user").expect("a valid username")
}

/// `base` with a random suffix (`-` and 8 hex digits): another try when
/// `base` is taken.
pub fn with_suffix(base: &Username) -> Username {
    let mut bytes = [0u8; 4];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source failed");
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let stem: String = base.as_str().chars().take(USERNAME_MAX_CHARS - 9).collect();
    Username::parse(&format!("{stem}-{suffix}")).expect("a valid username")
}

/// The display name a first sign-in gives the account.
pub fn proposed_name(claims: &IdClaims, username: &Username) -> String {
    claims
        .name
        .as_deref()
        .or(claims.given_name.as_deref())
        .and_then(|n| crate::users::display_name(n).ok())
        .unwrap_or_else(|| username.to_string())
}

/// An outside identity's link to one of our users, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: ExternalId,
    /// The configured provider it came through (its id, when linked).
    pub provider: String,
    pub user_id: UserId,
    pub username: Username,
    pub created_at: i64,
}
