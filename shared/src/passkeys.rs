//! Passkeys: WebAuthn discoverable credentials, checked by `webauthn-rs`
//! (pinned; pure Rust). What is ours around it:
//!
//! - the relying party (`relying_party::PasskeyConfig`): its id and the
//!   one origin a ceremony may come from, from configuration (the page's
//!   origin, never a request's Host);
//! - a ceremony in flight (`Ceremony`): the library's state for one
//!   registration or sign-in, kept in the table under the hash of an id the
//!   client holds, for `CEREMONY_TTL`, and taken out by the step that ends
//!   it (a conditional delete: used once, whatever the outcome), never in a
//!   cookie or the client's hands (the library's docs warn why: a state the
//!   client keeps is a challenge it can replay);
//! - a passkey as kept (`StoredPasskey`): the library's credential, its
//!   owner, the name the owner gave it, when it was made and last used, and
//!   the flags and counter it last showed;
//! - what a passkey's assertion proves, in RFC 8176's words (`amr`).

use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use webauthn_rs::prelude::{AuthenticationResult, Passkey};

use crate::email::hex_sha256;
use crate::users::UserId;

/// How long a ceremony waits for the browser (and the person) to answer.
pub const CEREMONY_TTL: Duration = Duration::from_secs(5 * 60);
/// Passkeys one account may hold.
pub const MAX_PASSKEYS: usize = 10;
/// Characters of a passkey's name.
pub const MAX_NAME_CHARS: usize = 64;
/// A ceremony id's random bytes.
const CEREMONY_BYTES: usize = 32;

/// Which ceremony a `Ceremony` holds the state of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CeremonyKind {
    /// Adding a passkey to a signed-in account.
    Register,
    /// Signing in with a passkey, no username given.
    SignIn,
    /// Proving a passkey again within a session (re-authentication).
    Verify,
    /// The second step of a sign-in whose password was good.
    SecondStep,
}

impl CeremonyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyKind::Register => "register",
            CeremonyKind::SignIn => "sign_in",
            CeremonyKind::Verify => "verify",
            CeremonyKind::SecondStep => "second_step",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            CeremonyKind::Register,
            CeremonyKind::SignIn,
            CeremonyKind::Verify,
            CeremonyKind::SecondStep,
        ]
        .into_iter()
        .find(|k| k.as_str() == raw)
    }
}

/// A ceremony in flight: the library's state, serialised, kept in the
/// table under the hash of the id its client holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Ceremony {
    /// The id's hash: the item's key.
    pub hash: String,
    pub kind: CeremonyKind,
    /// A registration's or a re-authentication's account, and the
    /// session that began it (a second step's: its ticket's hash).
    pub user_id: Option<UserId>,
    pub session: Option<String>,
    /// The library's state (JSON): the challenge and what it asked for.
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
}

// The state holds the challenge: it stays out of logs, as the key does.
impl std::fmt::Debug for Ceremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ceremony")
            .field("kind", &self.kind)
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A ceremony's id, as given to the client once.
pub struct CeremonyId(String);

impl CeremonyId {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CeremonyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CeremonyId(..)")
    }
}

/// The hash a ceremony is kept under; none for an id of another shape.
pub fn ceremony_hash(raw: &str) -> Option<String> {
    let shaped = raw.len() == CEREMONY_BYTES.div_ceil(3) * 4 - 1
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    shaped.then(|| hex_sha256(format!("ceremony:{raw}").as_bytes()))
}

impl Ceremony {
    /// A new ceremony of `kind` holding `state`, and its id.
    pub fn begin(
        kind: CeremonyKind,
        user: Option<(UserId, String)>,
        state: String,
        now: i64,
    ) -> (Self, CeremonyId) {
        let mut bytes = [0u8; CEREMONY_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the operating system's random source failed");
        let id = URL_SAFE_NO_PAD.encode(bytes);
        let (user_id, session) = user.map_or((None, None), |(u, s)| (Some(u), Some(s)));
        let ceremony = Ceremony {
            hash: ceremony_hash(&id).expect("an id just made has an id's shape"),
            kind,
            user_id,
            session,
            state,
            created_at: now,
            expires_at: now + CEREMONY_TTL.as_secs() as i64,
        };
        (ceremony, CeremonyId(id))
    }

    pub fn is_live(&self, now: i64) -> bool {
        self.expires_at > now
    }
}

/// How long a passkey's item remembers the sessions it proved: far longer
/// than the sessions' index takes to show a new one (eventually
/// consistent, in practice under a second).
pub const RECENT_PROOFS: i64 = 300;

/// The attribute of a passkey's item that marks a session it proved.
pub const PROVED_PREFIX: &str = "proved_";

/// A passkey as kept: the library's credential and what we know of it.
#[derive(Clone, Debug)]
pub struct StoredPasskey {
    /// The credential's id, base64url: the item's key (one account each).
    pub id: String,
    pub user_id: UserId,
    pub name: String,
    pub created_at: i64,
    pub last_used: Option<i64>,
    /// Whether it may be synced to other devices, and whether it is
    /// (WebAuthn's BE and BS flags, as last shown).
    pub backup_eligible: bool,
    pub backed_up: bool,
    /// The signature counter last shown (0: it keeps none, as synced
    /// passkeys do).
    pub counter: u32,
    /// How many times it was proved (a sign-in, a re-authentication): a
    /// removal that read it is refused if a proof came after (and the
    /// session that proof began escaped its ending).
    pub uses: u64,
    /// The sessions it proved within `RECENT_PROOFS` (session id, when),
    /// as read: those a removal ends even where the sessions' index has
    /// not caught up with them yet.
    pub recent: Vec<(String, i64)>,
    pub passkey: Passkey,
}

impl StoredPasskey {
    /// A passkey just registered by `user`, named `name`.
    pub fn registered(user: UserId, name: String, passkey: Passkey, now: i64) -> Self {
        let credential: webauthn_rs::prelude::Credential = passkey.clone().into();
        StoredPasskey {
            id: credential_id(passkey.cred_id()),
            user_id: user,
            name,
            created_at: now,
            last_used: None,
            backup_eligible: credential.backup_eligible,
            backed_up: credential.backup_state,
            counter: credential.counter,
            uses: 0,
            recent: Vec::new(),
            passkey,
        }
    }

    /// After a sign-in whose `result` the library accepted: the counter and
    /// flags it showed, and now as its last use. `None` if the result is
    /// another credential's.
    pub fn used(&self, result: &AuthenticationResult, now: i64) -> Option<Self> {
        let mut passkey = self.passkey.clone();
        passkey.update_credential(result)?;
        Some(StoredPasskey {
            last_used: Some(now),
            backup_eligible: result.backup_eligible(),
            backed_up: result.backup_state(),
            counter: result.counter(),
            passkey,
            ..self.clone()
        })
    }
}

/// The longest credential id WebAuthn allows (Level 3, 5.1: a longer one
/// is refused); the library sets no bound of its own.
pub const MAX_CREDENTIAL_ID_BYTES: usize = 1023;

/// A credential id as kept and shown: base64url, no padding.
pub fn credential_id(raw: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

/// A passkey's name as given: trimmed, 1 to `MAX_NAME_CHARS` characters,
/// no control characters; none otherwise.
pub fn passkey_name(raw: &str) -> Option<String> {
    let name = raw.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && !name.chars().any(char::is_control);
    ok.then(|| name.to_owned())
}

/// A credential id as kept: none for text that is not base64url.
pub fn decode_credential_id(id: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ceremony_is_kept_under_its_ids_hash_only() {
        let (ceremony, id) = Ceremony::begin(CeremonyKind::SignIn, None, "{}".into(), 1_000);
        assert_eq!(ceremony_hash(id.expose()).as_deref(), Some(&*ceremony.hash));
        assert_ne!(ceremony.hash, id.expose());
        assert_eq!(ceremony.expires_at, 1_000 + CEREMONY_TTL.as_secs() as i64);
        assert!(ceremony.is_live(1_299) && !ceremony.is_live(1_300));
        assert_eq!(ceremony_hash("short"), None);
        assert_eq!(ceremony_hash(&("a".repeat(42) + "=")), None);
        assert!(!format!("{ceremony:?} {id:?}").contains(id.expose()));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(passkey_name("  Laptop ").as_deref(), Some("Laptop"));
        assert_eq!(
            passkey_name(&"é".repeat(MAX_NAME_CHARS)).map(|n| n.chars().count()),
            Some(MAX_NAME_CHARS)
        );
        for bad in ["", "   ", "a\u{7}b", &"x".repeat(MAX_NAME_CHARS + 1)] {
            assert_eq!(passkey_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_passkey_proves_two_factors_in_software() {
        let amr = crate::sessions::SignIn::Passkey.amr();
        assert_eq!(amr, ["swk", "user", "mfa"]);
        assert_eq!(
            crate::sessions::amr::acr(&amr),
            Some(crate::sessions::amr::ACR_SECOND_FACTOR)
        );
    }
}
