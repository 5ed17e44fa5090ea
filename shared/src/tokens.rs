//! Access tokens: the claims we issue, signed RS256 by the current key
//! (`keys::Signer`: KMS or a local PEM) and verified with public keys only,
//! looked up by `kid`. `TokenIssuer::issue` and `TokenVerifier::verify` are the
//! whole interface the handlers see.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::system_now as now;
use crate::config::TokenConfig;
use crate::issuer_keys::{signing_key, unseal};
use crate::key_set::KeyTable;
use crate::keys::{KeyError, PublicKey, SignError, Signer};
use crate::permissions::{Role, scope_at};
use crate::users::User;

/// The one algorithm we issue and accept: API Gateway's JWT authorizer takes RSA only.
pub const ALGORITHM: Algorithm = Algorithm::RS256;
/// JOSE `typ` of our access tokens (RFC 9068), checked on verification so that
/// no other kind of JWT signed with the same key passes for an access token.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(5);
/// How long past `now` a revoked session's entry must outlive the access
/// tokens it could have: a request that read its clock at `now` may end a
/// session whose refresh, running beside it, reads a later clock and signs
/// a token that lives that much longer. A function runs 29 s at most.
pub const REVOCATION_MARGIN: Duration = Duration::from_secs(30);

/// Until when a session revoked at `now` must stay listed as revoked, for
/// access tokens that live `ttl`: no token of it can be valid after.
pub fn revoked_until(ttl: Duration, now: i64) -> i64 {
    now + (ttl + LEEWAY + REVOCATION_MARGIN).as_secs() as i64
}

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
    /// When the password was last proved in this session (OIDC's
    /// `auth_time`): a login or a re-authentication; refreshes keep it.
    /// Tokens from before it existed read as 0: never fresh.
    #[serde(default)]
    pub auth_time: i64,
    /// How the session's holder proved who they are (RFC 8176); absent
    /// from tokens of before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// The level `amr` comes to: `aal2` with a second factor, else `aal1`
    /// (`sessions::amr`). A resource that needs the second factor asks for
    /// `aal2` (RFC 9470).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The user's roles, space-separated (`permissions`); absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
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
    /// The key set could not be read again (sealed mode): 503.
    #[error("the keys that verify tokens cannot be read")]
    KeysUnavailable,
}

/// A freshly signed access token.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
}

#[derive(Serialize)]
struct JoseHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

pub struct TokenIssuer {
    keys: IssuerKeys,
    issuer: String,
    audience: String,
    ttl: Duration,
    second_factor_roles: BTreeSet<Role>,
}

/// A signer and the base64url of its JOSE header (the same for every token
/// of that key).
struct HeldSigner {
    signer: Signer,
    encoded_header: String,
}

impl HeldSigner {
    fn new(signer: Signer) -> Arc<Self> {
        let header = JoseHeader {
            alg: "RS256",
            typ: ACCESS_TOKEN_TYPE,
            kid: signer.kid(),
        };
        let encoded_header =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
        Arc::new(HeldSigner {
            signer,
            encoded_header,
        })
    }
}

enum IssuerKeys {
    /// One key for the process's life: KMS (`kms:Sign` per token) or a PEM.
    Fixed(Arc<HeldSigner>),
    /// The table's key set (`issuer_keys`): whichever key signs at the
    /// moment, unsealed once and held in memory.
    Sealed(Sealed),
}

struct Sealed {
    table: Arc<KeyTable>,
    kms: aws_sdk_kms::Client,
    sealing_key: String,
    /// The unsealed keys, by kid: the one signing now, and the next once it
    /// is near. A key leaves at the first issuance after it no longer signs
    /// or is revoked.
    unsealed: tokio::sync::Mutex<Unsealed>,
}

#[derive(Default)]
struct Unsealed {
    signers: HashMap<String, Arc<HeldSigner>>,
    /// When unsealing each kid last failed: it is not tried again at once,
    /// so that a KMS that refuses or throttles is not asked once per
    /// issuance.
    failed: HashMap<String, std::time::Instant>,
}

impl Unsealed {
    fn failed_within(&self, kid: &str, within: Duration) -> bool {
        self.failed.get(kid).is_some_and(|at| at.elapsed() < within)
    }

    /// `record`'s signer, unsealed and held; a failure is remembered.
    async fn unseal(
        &mut self,
        kms: &aws_sdk_kms::Client,
        sealing_key: &str,
        record: &crate::issuer_keys::KeyRecord,
    ) -> Result<Arc<HeldSigner>, KeyError> {
        match unseal(kms, sealing_key, record).await {
            Ok(signer) => {
                let held = HeldSigner::new(signer);
                self.signers.insert(record.kid.clone(), held.clone());
                self.failed.remove(&record.kid);
                Ok(held)
            }
            Err(error) => {
                self.failed
                    .insert(record.kid.clone(), std::time::Instant::now());
                Err(error)
            }
        }
    }
}

/// How long before a key begins to sign an issuer unseals it, so that a
/// KMS outage at the moment of the switch fails no issuance: every
/// re-read within this window tries again.
pub const UNSEAL_AHEAD: Duration = Duration::from_secs(10 * 60);
/// The least time between two attempts to unseal the key that signs now.
pub const UNSEAL_RETRY: Duration = Duration::from_secs(5);

impl Sealed {
    /// The signer for `now`, unsealing it if it is not held yet.
    async fn signer(&self, now: i64) -> Result<Arc<HeldSigner>, SignError> {
        let snapshot = self
            .table
            .current()
            .await
            .map_err(|e| SignError::Unavailable(format!("the key set cannot be read: {e}")))?;
        let record = signing_key(&snapshot.records, now)
            .ok_or_else(|| SignError::Unavailable("no issuer key signs now".into()))?;
        let mut unsealed = self.unsealed.lock().await;
        // Keys that no longer sign (revoked, past their window, gone from
        // the table) are dropped: their private halves leave memory.
        unsealed.signers.retain(|kid, _| {
            snapshot
                .records
                .iter()
                .any(|r| &r.kid == kid && r.revoked_at.is_none() && now < r.sign_until)
        });
        // The key of the moment is tried again within seconds; the next one,
        // which has minutes yet, once per refresh bound.
        let retry = self.table.settings().refresh;
        let retry_now = retry.min(UNSEAL_RETRY);
        let signer = match unsealed.signers.get(&record.kid) {
            Some(held) => held.clone(),
            None if unsealed.failed_within(&record.kid, retry_now) => {
                return Err(SignError::Unavailable(
                    "the issuer key did not unseal; tried again shortly".into(),
                ));
            }
            None => unsealed
                .unseal(&self.kms, &self.sealing_key, record)
                .await
                .map_err(key_to_sign_error)?,
        };
        // The next key, once it is near: unsealed ahead, best effort, and
        // tried at most once per refresh bound.
        let ahead = now + UNSEAL_AHEAD.as_secs() as i64;
        if let Some(next) = signing_key(&snapshot.records, ahead)
            && !unsealed.signers.contains_key(&next.kid)
            && !unsealed.failed_within(&next.kid, retry)
            && let Err(error) = unsealed.unseal(&self.kms, &self.sealing_key, next).await
        {
            tracing::warn!(kid = %next.kid, %error, "the next issuer key does not unseal yet")
        }
        Ok(signer)
    }
}

fn key_to_sign_error(err: KeyError) -> SignError {
    match err {
        KeyError::Unavailable(detail) => SignError::Unavailable(detail),
        other => SignError::Failed(other.to_string()),
    }
}

impl TokenIssuer {
    /// An issuer that signs every token with `signer`.
    pub fn new(signer: Signer, config: &TokenConfig) -> Self {
        TokenIssuer {
            keys: IssuerKeys::Fixed(HeldSigner::new(signer)),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl: config.access_token_ttl,
            second_factor_roles: BTreeSet::new(),
        }
    }

    /// An issuer that signs with the table's key of the moment (sealed
    /// mode), unsealed by `sealing_key` (a symmetric KMS key). At init: the
    /// key that signs at `now` is unsealed here, so that an issuer whose key
    /// will not unseal (no key, wrong context, no permission, KMS down)
    /// stops at init, saying why.
    pub async fn sealed(
        table: Arc<KeyTable>,
        kms: aws_sdk_kms::Client,
        sealing_key: String,
        config: &TokenConfig,
        now: i64,
    ) -> Result<Self, KeyError> {
        let sealed = Sealed {
            table,
            kms,
            sealing_key,
            unsealed: tokio::sync::Mutex::default(),
        };
        sealed.signer(now).await.map_err(|e| match e {
            SignError::Unavailable(detail) => KeyError::Unavailable(detail),
            SignError::Failed(detail) => KeyError::Rejected(detail),
        })?;
        Ok(TokenIssuer {
            keys: IssuerKeys::Sealed(sealed),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl: config.access_token_ttl,
            second_factor_roles: BTreeSet::new(),
        })
    }

    async fn signer(&self, now: i64) -> Result<Arc<HeldSigner>, SignError> {
        match &self.keys {
            IssuerKeys::Fixed(held) => Ok(held.clone()),
            IssuerKeys::Sealed(sealed) => sealed.signer(now).await,
        }
    }

    /// The same issuer, putting a role of `roles` (`SECOND_FACTOR_ROLES`)
    /// into a token's scope only when its session proved a second factor.
    pub fn guarding(mut self, roles: BTreeSet<Role>) -> Self {
        self.second_factor_roles = roles;
        self
    }

    /// The kid that signs at `now`.
    pub async fn kid(&self, now: i64) -> Result<String, SignError> {
        Ok(self.signer(now).await?.signer.kid().to_owned())
    }

    /// Issues an access token of session `sid`, whose holder last proved
    /// who they are at `auth_time`, by `amr`, at `now` (seconds since the
    /// epoch).
    pub async fn issue(
        &self,
        user: &User,
        sid: &str,
        auth_time: i64,
        amr: &[String],
        now: i64,
    ) -> Result<IssuedToken, SignError> {
        let mut claims = self.claims_for(user, sid, auth_time, now);
        claims.amr = amr.to_vec();
        claims.acr = crate::sessions::amr::acr(amr).map(str::to_owned);
        // A guarded role only for a session that proved our own second
        // factor (not a provider's word), one the account still has (a
        // removal leaves sessions be).
        let second = crate::sessions::amr::second_factor_held(amr, user);
        claims.scope = scope_at(&user.roles, &self.second_factor_roles, second);
        Ok(IssuedToken {
            token: self.sign(&claims, now).await?,
            expires_in: self.ttl.as_secs(),
        })
    }

    /// How long the access tokens it issues live.
    pub fn lifetime(&self) -> Duration {
        self.ttl
    }

    /// The claims `issue` would sign; tests edit them to forge hostile tokens.
    pub fn claims_for(&self, user: &User, sid: &str, auth_time: i64, now: i64) -> Claims {
        Claims {
            sub: user.id.to_string(),
            username: user.username.to_string(),
            sid: sid.to_owned(),
            sep: user.session_epoch,
            auth_time,
            amr: Vec::new(),
            acr: None,
            // As for a session without a second factor: `issue` decides.
            scope: scope_at(&user.roles, &self.second_factor_roles, false),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs() as i64,
            jti: Uuid::new_v4().to_string(),
        }
    }

    /// `header.payload.signature`, the signature made by the key that signs
    /// at `now`.
    pub async fn sign(&self, claims: &impl Serialize, now: i64) -> Result<String, SignError> {
        let held = self.signer(now).await?;
        let payload = serde_json::to_vec(claims).map_err(|e| SignError::Failed(e.to_string()))?;
        let signing_input = format!(
            "{}.{}",
            held.encoded_header,
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = held.signer.sign(signing_input.as_bytes()).await?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

pub struct TokenVerifier {
    /// Keys loaded once at init (`kms:` and `pem:` sources).
    keys: HashMap<String, DecodingKey>,
    /// The table's key set (sealed mode), re-read on its schedule.
    table: Option<Arc<KeyTable>>,
    validation: Validation,
    ttl: Duration,
}

impl TokenVerifier {
    /// Accepts tokens signed by any of `keys` (the current key and, during a
    /// rotation, the previous one), chosen by the token's `kid`.
    pub fn new(keys: &[PublicKey], config: &TokenConfig) -> Self {
        // `Validation::new` pins the algorithm list to exactly ours.
        let mut validation = Validation::new(ALGORITHM);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true; // off by default in jsonwebtoken
        validation.validate_aud = true;
        validation.set_audience(&[&config.audience]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        TokenVerifier {
            keys: keys
                .iter()
                .map(|k| (k.kid.clone(), k.decoding_key()))
                .collect(),
            table: None,
            validation,
            ttl: config.access_token_ttl,
        }
    }

    /// Accepts, beside `keys`, the keys the table holds that verify at the
    /// moment (sealed mode): a kid it does not know makes it read the table
    /// again (rate-limited), and it reads it again anyway once its copy is
    /// the refresh bound old.
    pub fn with_table(keys: &[PublicKey], table: Arc<KeyTable>, config: &TokenConfig) -> Self {
        TokenVerifier {
            table: Some(table),
            ..TokenVerifier::new(keys, config)
        }
    }

    /// Until when a session revoked at `now` stays listed as revoked
    /// (`revoked_until`).
    pub fn revoked_until(&self, now: i64) -> i64 {
        revoked_until(self.ttl, now)
    }

    /// Verifies `kid`, signature, algorithm, `typ` and every time, issuer and
    /// audience rule. Keys named in the token (`jku`, `x5u`, `jwk`, `x5c`) are
    /// never followed: a token carrying one is refused outright.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
        {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::Invalid)?;
        let data = match self.keys.get(kid) {
            Some(key) => self.decode(token, key)?,
            None => self.decode_with_table(token, kid).await?,
        };
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

    /// With the table's key `kid`: from the copy held, or, when that copy
    /// cannot vouch for the token (no such kid, or one in a state that
    /// refuses it: the key may have changed since, within the bound), from
    /// the table read again, at most once per interval. A table key accepts
    /// a token only while it verifies, and only one issued inside its
    /// signing window.
    async fn decode_with_table(
        &self,
        token: &str,
        kid: &str,
    ) -> Result<jsonwebtoken::TokenData<Claims>, TokenError> {
        let Some(table) = &self.table else {
            return Err(TokenError::Invalid);
        };
        let unavailable = |e: crate::store::StoreError| {
            tracing::warn!(error = %e, "the key set cannot be read");
            TokenError::KeysUnavailable
        };
        let snapshot = table.current().await.map_err(unavailable)?;
        // None: an unknown kid, or a key whose state refuses the token: the
        // table may have changed since the copy was read.
        if let Some(data) = self.decode_with(&snapshot, token, kid)? {
            return Ok(data);
        }
        match table.read_for_unknown_kid().await.map_err(unavailable)? {
            Some(snapshot) => self
                .decode_with(&snapshot, token, kid)?
                .ok_or(TokenError::Invalid),
            None => Err(TokenError::Invalid),
        }
    }

    /// With `snapshot`'s key `kid`: its signature and claims, then its
    /// window. `None`: the copy cannot vouch for it (no such kid, or the
    /// key's state refuses it), which a newer copy might; an error: no copy
    /// could (a bad signature or claims under the key the kid names: a kid
    /// is its key's thumbprint).
    fn decode_with(
        &self,
        snapshot: &crate::key_set::Snapshot,
        token: &str,
        kid: &str,
    ) -> Result<Option<jsonwebtoken::TokenData<Claims>>, TokenError> {
        let Some((record, key)) = snapshot.key(kid) else {
            return Ok(None);
        };
        let data = self.decode(token, key)?;
        Ok(record
            .accepts(data.claims.iat, now(), LEEWAY.as_secs() as i64)
            .then_some(data))
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
    ) -> Result<jsonwebtoken::TokenData<Claims>, TokenError> {
        jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            _ => TokenError::Invalid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate_pem_pair, public_key_from_pem};
    use crate::users::Username;
    use futures_util::FutureExt as _;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};
    use std::sync::OnceLock;

    /// Key pairs made once per test run: ours (old and new, for rotation) and a stranger's.
    struct Pair {
        private: String,
        public_pem: String,
        public: PublicKey,
    }

    fn pair(slot: usize) -> &'static Pair {
        static PAIRS: OnceLock<Vec<Pair>> = OnceLock::new();
        &PAIRS.get_or_init(|| {
            (0..3)
                .map(|_| {
                    let (private, public_pem) = generate_pem_pair().unwrap();
                    let public = public_key_from_pem(&public_pem, "test").unwrap();
                    Pair {
                        private,
                        public_pem,
                        public,
                    }
                })
                .collect()
        })[slot]
    }

    fn ours() -> &'static Pair {
        pair(0)
    }
    fn next_key() -> &'static Pair {
        pair(1)
    }
    fn stranger() -> &'static Pair {
        pair(2)
    }

    fn config() -> TokenConfig {
        TokenConfig {
            issuer: "https://auth.test".into(),
            audience: "auth-test-api".into(),
            access_token_ttl: Duration::from_secs(900),
        }
    }

    fn issuer(pair: &Pair) -> TokenIssuer {
        TokenIssuer::new(Signer::from_pem(&pair.private, "test").unwrap(), &config())
    }

    fn user() -> User {
        User::new(
            Username::parse("alice").unwrap(),
            "Alice".into(),
            "$2b$10$x".into(),
        )
    }

    fn valid_claims() -> Value {
        serde_json::to_value(issuer(ours()).claims_for(&user(), "session-1", now(), now())).unwrap()
    }

    fn our_header() -> Value {
        json!({"alg": "RS256", "typ": "at+jwt", "kid": ours().public.kid})
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    /// Any header and payload, RS256-signed with `pair`'s private key.
    async fn forge(pair: &Pair, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let signer = Signer::from_pem(&pair.private, "test").unwrap();
        let signature = signer.sign(input.as_bytes()).await.unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn verify(token: &str) -> Result<Claims, TokenError> {
        TokenVerifier::new(&[ours().public.clone()], &config())
            .verify(token)
            .now_or_never()
            .expect("a verifier of fixed keys never waits")
    }

    #[tokio::test]
    async fn issued_claims_round_trip_through_the_verifier() {
        let user = user();
        let issued = issuer(ours())
            .issue(&user, "session-1", now() - 30, &[], now())
            .await
            .unwrap();
        assert_eq!(issued.expires_in, 900);
        let claims = verify(&issued.token).unwrap();
        assert_eq!(claims.sub, user.id.to_string());
        assert_eq!(claims.username, "alice");
        assert_eq!(claims.sid, "session-1");
        assert_eq!(claims.sep, 0);
        assert_eq!(claims.auth_time, claims.iat - 30);
        assert_eq!(claims.scope, None, "no roles, no scope claim");
        assert_eq!(claims.iss, "https://auth.test");
        assert_eq!(claims.aud, "auth-test-api");
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(claims.nbf, claims.iat);
        assert!(Uuid::parse_str(&claims.jti).is_ok());
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(ours().public.kid.as_str()));
    }

    #[tokio::test]
    async fn a_users_roles_travel_as_the_scope_claim() {
        let mut user = user();
        user.roles.insert(crate::permissions::Role::admin());
        user.roles
            .insert(crate::permissions::Role::parse("support").unwrap());
        let aal2: Vec<String> = ["pwd", "otp", "mfa"].map(String::from).to_vec();
        user.second_factor = true;
        let issuer = || issuer(ours()).guarding(BTreeSet::from([Role::admin()]));
        let token = issuer()
            .issue(&user, "s", now(), &aal2, now())
            .await
            .unwrap()
            .token;
        let claims = verify(&token).unwrap();
        assert_eq!(claims.scope.as_deref(), Some("admin support"));
        // admin needs a second factor (the default): without one in the
        // session, the token carries the other roles only.
        for amr in [vec!["pwd".to_owned()], vec![]] {
            let one_factor = issuer()
                .issue(&user, "s", now(), &amr, now())
                .await
                .unwrap()
                .token;
            assert_eq!(
                verify(&one_factor).unwrap().scope.as_deref(),
                Some("support")
            );
        }
        // What API Gateway's authorizer reads: a plain string claim.
        let payload = token.split('.').nth(1).unwrap();
        let json: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(json["scope"], "admin support");
        assert!(json["auth_time"].is_i64());
    }

    #[tokio::test]
    async fn a_passkey_is_the_second_factor_a_guarded_role_asks_for() {
        let mut user = user();
        user.roles.insert(crate::permissions::Role::admin());
        let issuer = || issuer(ours()).guarding(BTreeSet::from([Role::admin()]));
        let passkey: Vec<String> = ["swk", "user", "mfa"].map(String::from).to_vec();
        let scope = async |user: &User| {
            let token = issuer()
                .issue(user, "s", now(), &passkey, now())
                .await
                .unwrap()
                .token;
            verify(&token).unwrap().scope
        };
        // No factor the account holds: the amr alone grants nothing.
        assert_eq!(scope(&user).await, None);
        // A passkey, and no code factor: the account has a second factor.
        user.passkeys.insert("AAAAAAAAAAAAAAAAAAAAAA".into());
        assert!(user.has_second_factor());
        assert_eq!(scope(&user).await.as_deref(), Some("admin"));
        // A session that proved a code, once the code factor is gone: one
        // factor, though the account holds a passkey.
        let code: Vec<String> = ["pwd", "otp", "mfa"].map(String::from).to_vec();
        let token = issuer()
            .issue(&user, "s", now(), &code, now())
            .await
            .unwrap()
            .token;
        assert_eq!(verify(&token).unwrap().scope, None);
    }

    #[tokio::test]
    async fn every_token_gets_its_own_jti() {
        let issuer = issuer(ours());
        let jti = async || {
            let token = issuer
                .issue(&user(), "s", now(), &[], now())
                .await
                .unwrap()
                .token;
            verify(&token).unwrap().jti
        };
        let (a, b) = (jti().await, jti().await);
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_token_signed_by_a_key_of_the_right_shape_but_not_ours_is_invalid() {
        // Claims our kid, signed by a stranger's RSA-2048 key.
        let token = forge(stranger(), &our_header(), &valid_claims()).await;
        assert_eq!(verify(&token), Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn a_kid_naming_no_key_of_ours_is_invalid() {
        let mut header = our_header();
        header["kid"] = json!(stranger().public.kid);
        assert_eq!(
            verify(&forge(stranger(), &header, &valid_claims()).await),
            Err(TokenError::Invalid)
        );
        header["kid"] = json!("no-such-key");
        assert_eq!(
            verify(&forge(ours(), &header, &valid_claims()).await),
            Err(TokenError::Invalid)
        );
        let mut header = our_header();
        header.as_object_mut().unwrap().remove("kid");
        assert_eq!(
            verify(&forge(ours(), &header, &valid_claims()).await),
            Err(TokenError::Invalid)
        );
    }

    #[tokio::test]
    async fn keys_named_in_the_token_are_never_followed() {
        let jwk = serde_json::to_value(stranger().public.jwk()).unwrap();
        for (name, value) in [
            ("jku", json!("https://evil.test/jwks.json")),
            ("x5u", json!("https://evil.test/cert.pem")),
            ("jwk", jwk),
            ("x5c", json!(["MIIB"])),
        ] {
            let mut header = our_header();
            header[name] = value;
            // Even correctly signed by our key: a token naming its own key is refused.
            let token = forge(ours(), &header, &valid_claims()).await;
            assert_eq!(verify(&token), Err(TokenError::Invalid), "{name}");
        }
    }

    #[tokio::test]
    async fn hs256_keyed_with_our_public_key_is_refused() {
        // The classic algorithm confusion: a verifier that takes `alg` from the
        // token would check this HMAC with the public key as the secret.
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(ours().public.kid.clone());
        for secret in [
            ours().public_pem.as_bytes().to_vec(),
            ours().public.kid.clone().into_bytes(),
        ] {
            let key = EncodingKey::from_secret(&secret).unwrap();
            let token = jsonwebtoken::encode(&header, &valid_claims(), &key).unwrap();
            assert_eq!(verify(&token), Err(TokenError::Invalid));
        }
    }

    #[test]
    fn alg_none_with_a_valid_kid_is_refused() {
        let header = json!({"alg": "none", "typ": "at+jwt", "kid": ours().public.kid});
        let unsigned = format!("{}.{}", b64(&header), b64(&valid_claims()));
        assert_eq!(verify(&format!("{unsigned}.")), Err(TokenError::Invalid));
        assert_eq!(verify(&unsigned), Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_beyond_the_leeway() {
        let issuer = issuer(ours());
        let long_ago = now() - 900 - LEEWAY.as_secs() as i64 - 5;
        let token = issuer
            .issue(&user(), "s", long_ago, &[], long_ago)
            .await
            .unwrap()
            .token;
        assert_eq!(verify(&token), Err(TokenError::Expired));
        // Within the leeway it still passes.
        let just_expired = now() - 900 - 1;
        let token = issuer
            .issue(&user(), "s", just_expired, &[], just_expired)
            .await
            .unwrap()
            .token;
        assert!(verify(&token).is_ok());
    }

    #[tokio::test]
    async fn a_token_not_yet_valid_is_refused() {
        let mut claims = valid_claims();
        claims["nbf"] = json!(now() + 120);
        assert_eq!(
            verify(&forge(ours(), &our_header(), &claims).await),
            Err(TokenError::NotYetValid)
        );
    }

    #[tokio::test]
    async fn a_token_issued_in_the_future_is_refused() {
        let mut claims = valid_claims();
        claims["iat"] = json!(now() + 120);
        assert_eq!(
            verify(&forge(ours(), &our_header(), &claims).await),
            Err(TokenError::NotYetValid)
        );
    }

    #[tokio::test]
    async fn wrong_issuer_or_audience_is_refused() {
        for (claim, value) in [("iss", "https://evil.test"), ("aud", "another-api")] {
            let mut claims = valid_claims();
            claims[claim] = json!(value);
            assert_eq!(
                verify(&forge(ours(), &our_header(), &claims).await),
                Err(TokenError::Invalid),
                "{claim}"
            );
        }
    }

    #[tokio::test]
    async fn each_required_claim_must_be_present() {
        for claim in [
            "exp", "nbf", "iat", "iss", "aud", "sub", "jti", "username", "sid", "sep",
        ] {
            let mut claims = valid_claims();
            claims.as_object_mut().unwrap().remove(claim);
            let token = forge(ours(), &our_header(), &claims).await;
            assert_eq!(verify(&token), Err(TokenError::Invalid), "missing {claim}");
        }
    }

    #[tokio::test]
    async fn the_typ_header_must_be_at_jwt() {
        for typ in [None, Some("JWT"), Some("refresh+jwt")] {
            let mut header = our_header();
            match typ {
                Some(typ) => header["typ"] = json!(typ),
                None => {
                    header.as_object_mut().unwrap().remove("typ");
                }
            }
            let token = forge(ours(), &header, &valid_claims()).await;
            assert_eq!(verify(&token), Err(TokenError::Invalid), "{typ:?}");
        }
    }

    #[tokio::test]
    async fn a_tampered_payload_or_signature_is_refused() {
        let token = issuer(ours())
            .issue(&user(), "s", now(), &[], now())
            .await
            .unwrap()
            .token;
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        // A character in the middle: every one of its bits is signature (the
        // last character of a 256-byte signature is partly padding).
        let mut flipped = parts.clone();
        let mut signature: Vec<char> = flipped[2].chars().collect();
        let middle = signature.len() / 2;
        signature[middle] = if signature[middle] == 'A' { 'B' } else { 'A' };
        flipped[2] = signature.into_iter().collect();
        assert_eq!(verify(&flipped.join(".")), Err(TokenError::Invalid));

        let mut claims = valid_claims();
        claims["username"] = json!("mallory");
        parts[1] = b64(&claims);
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

    #[tokio::test]
    async fn rotation_old_tokens_live_on_while_new_ones_use_the_new_key() {
        // Step 1: the verifiers learn the new key beside the current one.
        let during = TokenVerifier::new(
            &[ours().public.clone(), next_key().public.clone()],
            &config(),
        );
        let old_token = issuer(ours())
            .issue(&user(), "s", now(), &[], now())
            .await
            .unwrap()
            .token;
        assert!(during.verify(&old_token).await.is_ok());
        // Step 2: the signer switches; new tokens carry the new kid, old ones still pass.
        let new_token = issuer(next_key())
            .issue(&user(), "s", now(), &[], now())
            .await
            .unwrap()
            .token;
        let header = jsonwebtoken::decode_header(&new_token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(next_key().public.kid.as_str()));
        assert!(during.verify(&new_token).await.is_ok());
        assert!(during.verify(&old_token).await.is_ok());
        // Step 3: once every old token has expired, the old key goes.
        let after = TokenVerifier::new(&[next_key().public.clone()], &config());
        assert!(after.verify(&new_token).await.is_ok());
        assert_eq!(after.verify(&old_token).await, Err(TokenError::Invalid));
    }
}
