//! A user's second factor as kept (`Factor`: one TOTP secret, sealed, its
//! recovery codes' hashes and the count of codes tried), and a login that
//! waits for it (`MfaTicket`): what a correct password buys a user who has
//! one, in place of tokens.
//!
//! The factor's record bounds guessing: each code is reserved on it before
//! it is checked (an atomic count of failures in a row, as the password's
//! attempt record does), only a completed sign-in clears the count, and
//! past `MAX_FACTOR_FAILURES` the factor is suspended until a recovery code
//! or an admin restores it (NIST SP 800-63B 5.2.2). A login's `mfa_token`
//! allows `MAX_TICKET_FAILURES` wrong codes, lives `MFA_TOKEN_TTL`, is used
//! once (a conditional delete in the sign-in's transaction) and stands only
//! while the user is as the password found them: same id, epoch and
//! password, active.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::email::hex_sha256;
use crate::sessions::SignIn;
use crate::tickets::password_fingerprint;
use crate::users::{User, UserId, Username};

/// How long a login waits for its second factor.
pub const MFA_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);
/// Wrong codes one `mfa_token` allows; the next attempt finds it void.
pub const MAX_TICKET_FAILURES: u32 = 3;
/// Wrong codes in a row after which the factor is suspended.
pub const MAX_FACTOR_FAILURES: u32 = 100;
/// How long an enrolment may wait for its first code.
pub const ENROLMENT_TTL: Duration = Duration::from_secs(15 * 60);
/// The owner hears of wrong codes after the first step at most this often.
pub const WRONG_CODE_NOTICE_EVERY: Duration = Duration::from_secs(3600);
/// An `mfa_token`'s random bytes.
const TOKEN_BYTES: usize = 32;
/// The issuer name an authenticator app shows beside the account.
pub const TOTP_ISSUER: &str = "auth-lambda";

/// Whether a factor is being set up or in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorState {
    /// A secret handed out, no code from it seen yet: it protects nothing.
    Pending,
    /// Confirmed by a code: every sign-in asks for it.
    Active,
}

impl FactorState {
    pub fn as_str(self) -> &'static str {
        match self {
            FactorState::Pending => "pending",
            FactorState::Active => "active",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(FactorState::Pending),
            "active" => Some(FactorState::Active),
            _ => None,
        }
    }
}

/// A user's TOTP factor as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Factor {
    pub user_id: UserId,
    pub state: FactorState,
    /// While pending, the session that began the enrolment: only it may
    /// confirm it (a token stolen from another session cannot).
    pub session: Option<String>,
    /// The secret, sealed (`second_factor::SecretBox`).
    pub sealed: Vec<u8>,
    pub created_at: i64,
    /// The step of the last code accepted: no code of it or before is
    /// accepted again.
    pub last_step: Option<i64>,
    /// Codes tried since the last completed sign-in (reserved before each
    /// check, so a success's own try counts until its sign-in clears it).
    pub failures: u32,
    /// The unused recovery codes' hashes.
    pub recovery: BTreeSet<String>,
}

impl Factor {
    /// A pending factor for `user`, begun in session `sid`, holding `sealed`.
    pub fn pending(user: UserId, sid: &str, sealed: Vec<u8>, now: i64) -> Self {
        Factor {
            user_id: user,
            state: FactorState::Pending,
            session: Some(sid.to_owned()),
            sealed,
            created_at: now,
            last_step: None,
            failures: 0,
            recovery: BTreeSet::new(),
        }
    }

    /// Whether codes from its app are refused until a recovery code or an
    /// admin restores it.
    pub fn is_suspended(&self) -> bool {
        self.failures >= MAX_FACTOR_FAILURES
    }

    /// Whether a pending factor is too old to confirm.
    pub fn enrolment_expired(&self, now: i64) -> bool {
        self.state == FactorState::Pending && now - self.created_at > ENROLMENT_TTL.as_secs() as i64
    }
}

// Neither the sealed secret nor the recovery codes' hashes go to a log.
impl std::fmt::Debug for Factor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factor")
            .field("user_id", &self.user_id)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("last_step", &self.last_step)
            .field("failures", &self.failures)
            .field("recovery", &self.recovery.len())
            .finish_non_exhaustive()
    }
}

/// An `mfa_token` just issued: given to the client once, only its hash kept.
pub struct MfaToken(String);

impl MfaToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for MfaToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MfaToken(..)")
    }
}

/// The hash an `mfa_token` is stored under; none for text of another shape.
pub fn mfa_token_hash(raw: &str) -> Option<String> {
    let shaped = raw.len() == TOKEN_BYTES.div_ceil(3) * 4 - 1
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    shaped.then(|| hex_sha256(format!("mfa:{raw}").as_bytes()))
}

/// A login that proved the password and waits for the second factor.
#[derive(Clone, PartialEq, Eq)]
pub struct MfaTicket {
    /// The token's hash: the item's key.
    pub hash: String,
    pub user_id: UserId,
    pub username: Username,
    /// The user's session epoch when the password was proved.
    pub epoch: u64,
    /// A fingerprint of the password hash that was proved.
    pub password: String,
    /// How the first step was proved.
    pub method: SignIn,
    /// The device proof that vouched for the password's attempt, if one
    /// did: the sign-in retires it (and clears its count, not the
    /// username's).
    pub device: Option<String>,
    /// Wrong codes so far (reserved before each check).
    pub failures: u32,
    pub created_at: i64,
    pub expires_at: i64,
}

// Its key (the token's hash) and the password's fingerprint stay out of logs.
impl std::fmt::Debug for MfaTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaTicket")
            .field("user_id", &self.user_id)
            .field("method", &self.method)
            .field("failures", &self.failures)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl MfaTicket {
    /// A ticket for `user`, whose password was just proved at `now`, and
    /// its token.
    pub fn issue(
        user: &User,
        method: SignIn,
        device: Option<String>,
        now: i64,
    ) -> (Self, MfaToken) {
        let mut bytes = [0u8; TOKEN_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the operating system's random source failed");
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let ticket = MfaTicket {
            hash: mfa_token_hash(&token).expect("a token just made has a token's shape"),
            user_id: user.id,
            username: user.username.clone(),
            epoch: user.session_epoch,
            password: password_fingerprint(&user.password_hash),
            method,
            device,
            failures: 0,
            created_at: now,
            expires_at: now + MFA_TOKEN_TTL.as_secs() as i64,
        };
        (ticket, MfaToken(token))
    }

    pub fn is_live(&self, now: i64) -> bool {
        self.expires_at > now && self.failures < MAX_TICKET_FAILURES
    }

    /// Whether `user` (as read now) is still as the password found them.
    pub fn binds(&self, user: &User) -> bool {
        user.id == self.user_id
            && user.active
            && user.second_factor
            && user.session_epoch == self.epoch
            && password_fingerprint(&user.password_hash) == self.password
    }

    /// Seconds the client has left.
    pub fn expires_in(&self, now: i64) -> u64 {
        (self.expires_at - now).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User::new(
            Username::parse("alice").unwrap(),
            "Alice".into(),
            "$2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234".into(),
        )
    }

    #[test]
    fn a_token_is_found_by_its_hash_and_nothing_else_is() {
        let mut alice = user();
        alice.second_factor = true;
        let (ticket, token) = MfaTicket::issue(&alice, SignIn::Password, None, 1_000);
        assert_eq!(mfa_token_hash(token.expose()), Some(ticket.hash.clone()));
        assert_eq!(format!("{token:?}"), "MfaToken(..)");
        assert!(ticket.is_live(1_000 + 299));
        assert!(!ticket.is_live(1_000 + 300));
        assert!(ticket.binds(&alice));
        // Another shape is no token: never looked up.
        assert_eq!(mfa_token_hash("short"), None);
        assert_eq!(mfa_token_hash(&format!("{}!", &token.expose()[1..])), None);
    }

    #[test]
    fn a_ticket_stands_only_while_the_user_is_as_the_password_found_them() {
        let mut alice = user();
        alice.second_factor = true;
        let (ticket, _) = MfaTicket::issue(&alice, SignIn::Password, None, 1_000);
        let changed: [fn(&mut User); 5] = [
            |u| u.session_epoch += 1,
            |u| u.password_hash.push('x'),
            |u| u.active = false,
            |u| u.id = UserId::random(),
            |u| u.second_factor = false,
        ];
        for change in changed {
            let mut now = alice.clone();
            change(&mut now);
            assert!(!ticket.binds(&now));
        }
        let mut spent = ticket.clone();
        spent.failures = MAX_TICKET_FAILURES;
        assert!(!spent.is_live(1_001));
    }

    #[test]
    fn a_factor_is_suspended_at_its_hundredth_failure_in_a_row() {
        let mut factor = Factor::pending(UserId::random(), "sid", vec![1], 0);
        assert!(!format!("{factor:?}").contains("sid"), "{factor:?}");
        factor.failures = MAX_FACTOR_FAILURES - 1;
        assert!(!factor.is_suspended());
        factor.failures += 1;
        assert!(factor.is_suspended());
        assert!(!factor.enrolment_expired(ENROLMENT_TTL.as_secs() as i64));
        assert!(factor.enrolment_expired(ENROLMENT_TTL.as_secs() as i64 + 1));
    }
}
