//! The user model: usernames normalised once at the edge, stable user ids, and
//! the record kept per user.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use uuid::Uuid;

use crate::email::Email;
use crate::permissions::Role;

pub const USERNAME_MIN_CHARS: usize = 3;
pub const USERNAME_MAX_CHARS: usize = 32;
pub const NAME_MAX_CHARS: usize = 100;
/// The password hash of an account without a password (one made through an
/// identity provider): not a bcrypt hash, so no password ever matches it.
pub const NO_PASSWORD: &str = "!none";

/// A username in its normalised form, the form users are keyed by.
///
/// Rule: 3 to 32 characters of ASCII letters, digits, `.`, `_` and `-`,
/// compared case-insensitively (stored lower-case). Nothing else is accepted,
/// so no two distinct Unicode spellings can name the same account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Username(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "username must be {USERNAME_MIN_CHARS} to {USERNAME_MAX_CHARS} characters of ASCII letters, digits, '.', '_' or '-'"
)]
pub struct InvalidUsername;

impl Username {
    pub fn parse(raw: &str) -> Result<Self, InvalidUsername> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        // All allowed characters are one byte, so the byte length is the char count.
        if !(USERNAME_MIN_CHARS..=USERNAME_MAX_CHARS).contains(&raw.len())
            || !raw.chars().all(allowed)
        {
            return Err(InvalidUsername);
        }
        Ok(Username(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's stable identity: a random UUID, never reused, carried as `sub`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserId(Uuid);

impl UserId {
    pub fn random() -> Self {
        UserId(Uuid::new_v4())
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Uuid::parse_str(raw).ok().map(UserId)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// An outside identity: who the provider says, in the provider's words.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExternalId {
    pub issuer: String,
    pub subject: String,
}

impl ExternalId {
    /// `<issuer>#<subject>`: an issuer holds no `#` (it has no fragment).
    pub fn key(&self) -> String {
        format!("{}#{}", self.issuer, self.subject)
    }

    pub fn parse(key: &str) -> Option<Self> {
        let (issuer, subject) = key.split_once('#')?;
        (!issuer.is_empty() && !subject.is_empty()).then(|| ExternalId {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
        })
    }
}

/// Checks and trims a display name: 1 to 100 characters after trimming.
pub fn display_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    match name.chars().count() {
        0 => Err("name must not be empty".into()),
        n if n > NAME_MAX_CHARS => Err(format!("name must be at most {NAME_MAX_CHARS} characters")),
        _ => Ok(name.to_owned()),
    }
}

/// One user as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub name: String,
    pub password_hash: String,
    pub active: bool,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    /// Sessions started under another epoch are over: "log out everywhere" and a
    /// password change bump it, which ends every session at once.
    pub session_epoch: u64,
    /// Sessions logged out one by one: session id → the time after which no
    /// access token of that session can be valid anyway (then the entry can go).
    /// Kept on the user item so that checking an access token stays one read.
    pub revoked_sessions: BTreeMap<String, i64>,
    /// What the user may do beyond their own account (`permissions`); none by default.
    pub roles: BTreeSet<Role>,
    /// The verified address: the one resets and notices go to, and the only
    /// kind that is unique across users (its `EMAIL#` claim).
    pub email: Option<Email>,
    /// An address given but not yet proved: it replaces `email` only when
    /// its verification commits.
    pub email_pending: Option<Email>,
    /// The outside identities that sign in as this user (`federation`).
    pub identities: BTreeSet<ExternalId>,
    /// Whether a confirmed second factor guards every sign-in (`mfa`): kept
    /// here, beside the password, so that a login learns it from the read
    /// it makes anyway.
    pub second_factor: bool,
    /// The credential ids of the user's passkeys (`passkeys`), base64url:
    /// each with its `PASSKEY#` item.
    pub passkeys: BTreeSet<String>,
}

impl User {
    /// A new, active user with a fresh id.
    pub fn new(username: Username, name: String, password_hash: String) -> Self {
        User {
            id: UserId::random(),
            username,
            name,
            password_hash,
            active: true,
            created_at: crate::clock::system_now(),
            session_epoch: 0,
            revoked_sessions: BTreeMap::new(),
            roles: BTreeSet::new(),
            email: None,
            email_pending: None,
            identities: BTreeSet::new(),
            second_factor: false,
            passkeys: BTreeSet::new(),
        }
    }

    /// Whether the account has a second factor of ours to prove: a
    /// confirmed code factor, or a passkey (which proves possession and
    /// user verification at once). Acts that need one (`aal2`) are open to
    /// either; a login asks a second step only of the code factor's.
    pub fn has_second_factor(&self) -> bool {
        self.second_factor || !self.passkeys.is_empty()
    }

    /// Whether the account has a password to sign in with.
    pub fn has_password(&self) -> bool {
        self.password_hash != NO_PASSWORD
    }

    /// Whether session `sid`, started under `epoch`, is still live at `now`.
    pub fn session_is_live(&self, sid: &str, epoch: u64, now: i64) -> bool {
        epoch == self.session_epoch
            && self
                .revoked_sessions
                .get(sid)
                .is_none_or(|until| *until < now)
    }
}

// The hash stays out of logs and panic messages.
impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("active", &self.active)
            .field("created_at", &self.created_at)
            .field("session_epoch", &self.session_epoch)
            .field("revoked_sessions", &self.revoked_sessions)
            .field("roles", &self.roles)
            .field("email", &self.email)
            .field("email_pending", &self.email_pending)
            .field("identities", &self.identities)
            .field("second_factor", &self.second_factor)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalised_to_lower_case() {
        assert_eq!(Username::parse("Alice").unwrap().as_str(), "alice");
        assert_eq!(
            Username::parse("ALICE").unwrap(),
            Username::parse("alice").unwrap()
        );
        assert_eq!(
            Username::parse("user.name_1-x").unwrap().as_str(),
            "user.name_1-x"
        );
    }

    #[test]
    fn usernames_outside_the_rule_are_refused() {
        for bad in [
            "",
            "ab",
            &"a".repeat(33),
            " alice",
            "alice ",
            "al ice",
            "alice@example.com",
            "аlice", // Cyrillic а: a look-alike of "alice"
            "ǅemal",
            "ｆｕｌｌwidth",
            "tab\tname",
        ] {
            assert_eq!(Username::parse(bad), Err(InvalidUsername), "{bad:?}");
        }
        assert!(Username::parse(&"a".repeat(32)).is_ok());
        assert!(Username::parse("abc").is_ok());
    }

    #[test]
    fn user_ids_are_uuids_that_round_trip() {
        let id = UserId::random();
        assert_eq!(UserId::parse(&id.to_string()), Some(id));
        assert_ne!(UserId::random(), id);
        assert_eq!(UserId::parse("not-a-uuid"), None);
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(display_name("  Alice Liddell ").unwrap(), "Alice Liddell");
        assert!(display_name("   ").is_err());
        assert!(display_name(&"é".repeat(100)).is_ok());
        assert!(display_name(&"é".repeat(101)).is_err());
    }

    #[test]
    fn a_session_is_live_until_its_epoch_moves_on_or_it_is_revoked() {
        let mut user = User::new(Username::parse("alice").unwrap(), "A".into(), "h".into());
        assert!(user.session_is_live("s1", 0, 100));
        assert!(!user.session_is_live("s1", 1, 100), "another epoch");
        user.revoked_sessions.insert("s1".into(), 200);
        assert!(!user.session_is_live("s1", 0, 100));
        assert!(user.session_is_live("s2", 0, 100));
        user.session_epoch = 1;
        assert!(!user.session_is_live("s2", 0, 100));
        assert!(user.session_is_live("s2", 1, 100));
    }

    #[test]
    fn debug_output_hides_the_password_hash() {
        let user = User::new(
            Username::parse("alice").unwrap(),
            "Alice".into(),
            "$2b$10$secret".into(),
        );
        assert!(!format!("{user:?}").contains("secret"));
    }
}
