//! Sessions and refresh tokens. A login starts a session (`sid`); the session's
//! refresh tokens form one family, each rotated into the next on use. Refresh
//! tokens are opaque random strings: only their SHA-256 is ever stored.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::{ConfigError, Source};
use crate::users::{UserId, Username};

/// Refresh token lifetime when `REFRESH_TOKEN_TTL_SECONDS` is unset: 30 days.
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long after a rotation the same refresh token may be presented again
/// (a client retrying a refresh whose answer it lost) without counting as reuse.
pub const DEFAULT_REUSE_GRACE: Duration = Duration::from_secs(10);
/// A session's absolute lifetime when `SESSION_MAX_LIFETIME_SECONDS` is unset:
/// 90 days from its login, however often it is refreshed.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long a device proof vouches when `DEVICE_PROOF_TTL_SECONDS` is
/// unset: 90 days (see `devices`).
pub const DEFAULT_DEVICE_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Bytes of randomness in a refresh token: 256 bits.
const REFRESH_TOKEN_BYTES: usize = 32;

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub refresh_ttl: Duration,
    pub reuse_grace: Duration,
    /// No refresh token of a session outlives its login by more than this.
    pub max_lifetime: Duration,
    /// How long a device proof issued at a sign-in vouches for its device.
    pub device_ttl: Duration,
}

impl SessionConfig {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let ttl = crate::config::number(
            env,
            "REFRESH_TOKEN_TTL_SECONDS",
            DEFAULT_REFRESH_TTL.as_secs(),
            60..=365 * 24 * 3600,
        )?;
        let grace = crate::config::number(
            env,
            "REFRESH_REUSE_GRACE_SECONDS",
            DEFAULT_REUSE_GRACE.as_secs(),
            0..=300,
        )?;
        let max = crate::config::number(
            env,
            "SESSION_MAX_LIFETIME_SECONDS",
            DEFAULT_MAX_LIFETIME.as_secs(),
            60..=5 * 365 * 24 * 3600,
        )?;
        let device = crate::config::number(
            env,
            "DEVICE_PROOF_TTL_SECONDS",
            DEFAULT_DEVICE_TTL.as_secs(),
            3600..=400 * 24 * 3600,
        )?;
        Ok(SessionConfig {
            refresh_ttl: Duration::from_secs(ttl),
            reuse_grace: Duration::from_secs(grace),
            max_lifetime: Duration::from_secs(max),
            device_ttl: Duration::from_secs(device),
        })
    }

    /// When a refresh token issued at `now` for a session that began at
    /// `started` expires: its own lifetime, but never past the session's end.
    pub fn refresh_expiry(&self, started: i64, now: i64) -> i64 {
        let own = now + self.refresh_ttl.as_secs() as i64;
        let session_end = started + self.max_lifetime.as_secs() as i64;
        own.min(session_end)
    }
}

/// A refresh token as the client holds it. Never logged, never stored.
pub struct RefreshToken(String);

impl RefreshToken {
    /// 256 bits from the operating system's CSPRNG, base64url (43 characters).
    pub fn generate() -> Self {
        let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the operating system's random source failed");
        RefreshToken(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// What the client presented; anything may come in, only its hash is looked up.
    pub fn presented(raw: String) -> Self {
        RefreshToken(raw)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key the token is stored under: hex SHA-256. A 256-bit random token
    /// needs no salt or slow hash: there is nothing to guess.
    pub fn hash(&self) -> String {
        digest(&SHA256, self.0.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A session: one login and the refresh family descended from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user_id: UserId,
    pub username: Username,
    /// The user's session epoch when the session began.
    pub epoch: u64,
    pub revoked: bool,
    pub created_at: i64,
    /// When the password was last proved in this session: its login, or its
    /// latest re-authentication. Access tokens carry it as `auth_time`.
    pub auth_time: i64,
    /// When the newest refresh token of the family expires.
    pub expires_at: i64,
    /// When it was last used: its latest token issued (its login, a
    /// refresh, a re-authentication).
    pub last_used: i64,
    /// How it began and from where: what its owner sees in the list.
    pub origin: Origin,
    /// How its holder proved who they are (RFC 8176 `amr` values, `amr`),
    /// carried by every access token of the session with the `acr` they
    /// come to.
    pub amr: Vec<String>,
    /// The passkey (its credential id) last proved in the session: its
    /// sign-in's, or a re-authentication's. Removing that passkey ends the
    /// session, unless it is the session that removes it.
    pub passkey: Option<String>,
}

/// The authentication methods a session's tokens name (RFC 8176 `amr`),
/// and the level they come to (`acr`).
pub mod amr {
    /// A password.
    pub const PASSWORD: &str = "pwd";
    /// An outside identity provider's sign-in (as Microsoft Entra names it).
    pub const FEDERATED: &str = "fed";
    /// A code from an authenticator app (TOTP).
    pub const OTP: &str = "otp";
    /// One of the recovery codes (not in RFC 8176's registry: ours).
    pub const RECOVERY_CODE: &str = "recovery_code";
    /// More than one factor.
    pub const MFA: &str = "mfa";
    /// A proof of a key kept in software (a passkey: without attestation
    /// nothing shows it is hardware, `hwk`).
    pub const SOFTWARE_KEY: &str = "swk";
    /// The authenticator verified the person (biometrics or a PIN).
    pub const USER_VERIFIED: &str = "user";

    /// `acr` of a second factor proved (NIST SP 800-63B's AAL2).
    pub const ACR_SECOND_FACTOR: &str = "aal2";
    /// `acr` of one factor.
    pub const ACR_ONE_FACTOR: &str = "aal1";

    /// Whether `amr` holds our own second factor (a code, a recovery code,
    /// or a passkey unlocked by its owner), not only a provider's word
    /// (`mfa` alone).
    pub fn own_second_factor(amr: &[String]) -> bool {
        let has = |method: &str| amr.iter().any(|m| m == method);
        has(OTP) || has(RECOVERY_CODE) || (has(SOFTWARE_KEY) && has(USER_VERIFIED))
    }

    /// Whether `user` still holds a second factor of the kind `amr` proved:
    /// a code (or recovery code) while the code factor is set up, a
    /// passkey while the account has one. A session whose factor was
    /// removed stands at one factor for what asks for two (a guarded
    /// role's scope, `aal2` acts), whatever else the account holds.
    pub fn second_factor_held(amr: &[String], user: &crate::users::User) -> bool {
        let has = |method: &str| amr.iter().any(|m| m == method);
        let code = has(OTP) || has(RECOVERY_CODE);
        let passkey = has(SOFTWARE_KEY) && has(USER_VERIFIED);
        (code && user.second_factor) || (passkey && !user.passkeys.is_empty())
    }

    /// The level `amr` comes to: none for none.
    pub fn acr(amr: &[String]) -> Option<&'static str> {
        if amr.iter().any(|m| m == MFA) {
            Some(ACR_SECOND_FACTOR)
        } else if amr.is_empty() {
            None
        } else {
            Some(ACR_ONE_FACTOR)
        }
    }

    /// `first` (a sign-in's own), with the second factor `second` (`OTP`,
    /// `RECOVERY_CODE`) proved after it.
    pub fn with_second_factor(first: &[String], second: &str) -> Vec<String> {
        with(&with(first, second), MFA)
    }

    /// `amr` and `method`, proved in the same session (a re-authentication).
    pub fn with(amr: &[String], method: &str) -> Vec<String> {
        let mut amr = amr.to_vec();
        if !amr.iter().any(|m| m == method) {
            amr.push(method.to_owned());
        }
        amr
    }
}

impl Session {
    pub fn new_id() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// Whether it is still one of `user`'s sessions at `now`: not ended one
    /// by one, by an epoch bump or by its end of life.
    pub fn is_live(&self, user: &crate::users::User, now: i64) -> bool {
        !self.revoked
            && self.user_id == user.id
            && self.expires_at > now
            && user.session_is_live(&self.id, self.epoch, now)
    }
}

/// The proof a session began with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SignIn {
    /// A login with the password.
    #[default]
    Password,
    /// A password change, which ends every other session and begins this one.
    PasswordChange,
    /// A sign-in through an outside identity provider.
    Provider,
    /// A sign-in with a passkey (user verification included).
    Passkey,
    /// A proof this version does not know (stored by a later one).
    Other,
}

impl SignIn {
    pub fn as_str(self) -> &'static str {
        match self {
            SignIn::Password => "password",
            SignIn::PasswordChange => "password_change",
            SignIn::Provider => "provider",
            SignIn::Passkey => "passkey",
            SignIn::Other => "other",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            SignIn::Password,
            SignIn::PasswordChange,
            SignIn::Provider,
            SignIn::Passkey,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }

    /// The `amr` of a sign-in by this proof alone.
    pub fn amr(self) -> Vec<String> {
        match self {
            SignIn::Password | SignIn::PasswordChange => vec![amr::PASSWORD.to_owned()],
            SignIn::Provider => vec![amr::FEDERATED.to_owned()],
            // Two factors in one: the key, and the person who unlocked it.
            SignIn::Passkey => vec![
                amr::SOFTWARE_KEY.to_owned(),
                amr::USER_VERIFIED.to_owned(),
                amr::MFA.to_owned(),
            ],
            SignIn::Other => Vec::new(),
        }
    }
}

/// Characters of a client's `User-Agent` kept with its session.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// Where and how a session began. Shown to the session's owner only; never
/// logged (an address and a browser's string are personal data).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Origin {
    pub method: SignIn,
    /// The client's `User-Agent`, printable characters only, cut to
    /// `MAX_USER_AGENT_CHARS`; `None` when it sent none.
    pub user_agent: Option<String>,
    /// The client's address as API Gateway saw it.
    pub ip: Option<String>,
    /// Whether a device proof of an earlier sign-in vouched for the client.
    pub known_device: bool,
}

/// A `User-Agent` as it may be shown: printable ASCII only (no control,
/// bidirectional or zero-width characters to disguise it as another), cut
/// to `MAX_USER_AGENT_CHARS` characters.
pub fn clean_user_agent(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_USER_AGENT_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// What became of a refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshState {
    Active,
    /// Traded for the token whose hash is `replaced_by`.
    Rotated {
        at: i64,
        replaced_by: String,
    },
}

/// A stored refresh token: its hash and what it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRecord {
    pub hash: String,
    pub session_id: String,
    pub user_id: UserId,
    pub state: RefreshState,
    pub created_at: i64,
    pub expires_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_256_bit_base64url_and_unique() {
        let a = RefreshToken::generate();
        let b = RefreshToken::generate();
        assert_eq!(a.expose().len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn the_stored_hash_is_sha256_hex_and_not_the_token() {
        let token = RefreshToken::presented("abc".into());
        assert_eq!(
            token.hash(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let fresh = RefreshToken::generate();
        assert!(!fresh.hash().contains(fresh.expose()));
    }

    #[test]
    fn a_user_agent_is_kept_printable_and_short() {
        assert_eq!(
            clean_user_agent(" curl/8.5\r\nX-Evil: 1 "),
            "curl/8.5X-Evil: 1"
        );
        let long = "a".repeat(MAX_USER_AGENT_CHARS + 10);
        assert_eq!(
            clean_user_agent(&long).chars().count(),
            MAX_USER_AGENT_CHARS
        );
        assert_eq!(
            clean_user_agent("Evil\u{202e}ecived sihT\u{200b}"),
            "Evilecived sihT",
            "no bidirectional or zero-width characters"
        );
        assert_eq!(
            SignIn::parse("password_change"),
            Some(SignIn::PasswordChange)
        );
        assert_eq!(SignIn::parse("passkey"), Some(SignIn::Passkey));
        assert_eq!(SignIn::parse("webauthn"), None);
    }

    #[test]
    fn our_second_factor_is_a_code_a_recovery_code_or_an_unlocked_passkey() {
        let amr = |methods: &[&str]| methods.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        for yes in [
            &["pwd", "otp", "mfa"][..],
            &["pwd", "recovery_code"],
            &["swk", "user", "mfa"],
        ] {
            assert!(amr::own_second_factor(&amr(yes)), "{yes:?}");
        }
        // A key not unlocked by its owner, or a verification alone, or a
        // provider's word: not ours.
        for no in [&["swk"][..], &["user"], &["fed", "mfa"], &["pwd"], &[]] {
            assert!(!amr::own_second_factor(&amr(no)), "{no:?}");
        }
    }

    #[test]
    fn a_second_factor_counts_while_the_account_still_holds_its_kind() {
        let amr = |methods: &[&str]| methods.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        let (code, passkey) = (amr(&["pwd", "otp", "mfa"]), amr(&["swk", "user", "mfa"]));
        let mut user = crate::users::User::new(
            Username::parse("held").unwrap(),
            "Held".into(),
            "hash".into(),
        );
        // Neither kind held: neither counts.
        assert!(!amr::second_factor_held(&code, &user));
        assert!(!amr::second_factor_held(&passkey, &user));
        // A passkey held: a passkey's proof counts, a code's does not.
        user.passkeys.insert("AAAAAAAAAAAAAAAAAAAAAA".into());
        assert!(amr::second_factor_held(&passkey, &user));
        assert!(!amr::second_factor_held(&code, &user));
        // A code factor held, the passkeys gone: the reverse.
        user.passkeys.clear();
        user.second_factor = true;
        assert!(amr::second_factor_held(&code, &user));
        assert!(!amr::second_factor_held(&passkey, &user));
        // A provider's word is never ours.
        assert!(!amr::second_factor_held(&amr(&["fed", "mfa"]), &user));
    }

    #[test]
    fn a_refresh_token_never_outlives_its_session() {
        let config = SessionConfig {
            refresh_ttl: Duration::from_secs(100),
            reuse_grace: Duration::ZERO,
            max_lifetime: Duration::from_secs(250),
            device_ttl: DEFAULT_DEVICE_TTL,
        };
        assert_eq!(config.refresh_expiry(1_000, 1_000), 1_100);
        assert_eq!(config.refresh_expiry(1_000, 1_100), 1_200);
        assert_eq!(config.refresh_expiry(1_000, 1_200), 1_250, "capped");
        assert_eq!(config.refresh_expiry(1_000, 1_300), 1_250, "over");
    }

    #[test]
    fn session_config_defaults_to_30_days_and_a_short_grace() {
        let config = SessionConfig::from_source(&|_: &str| None).unwrap();
        assert_eq!(config.refresh_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(config.reuse_grace, Duration::from_secs(10));
        assert_eq!(config.max_lifetime, Duration::from_secs(90 * 24 * 3600));
        assert_eq!(config.device_ttl, Duration::from_secs(90 * 24 * 3600));
        let err = SessionConfig::from_source(&|v: &str| {
            (v == "REFRESH_TOKEN_TTL_SECONDS").then(|| "5".to_owned())
        })
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                var: "REFRESH_TOKEN_TTL_SECONDS",
                ..
            }
        ));
    }
}
