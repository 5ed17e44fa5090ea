//! One-time tickets: the one shape of every short-lived proof we mail (a
//! password reset, an address's verification; later a login waiting for its
//! second factor or a WebAuthn challenge). A ticket is two random secrets
//! given to the person, a link token (256 bits) and a short code (8 digits),
//! of which only hashes are stored; it lives `TICKET_TTL` at most (checked
//! on every read, TTL only tidies up), one per purpose and user (a new one
//! replaces the old, so only the newest works), is used once (consumed by a
//! conditional delete inside the transaction of its effect, so two racers
//! cannot both use it), and is bound to what started it: the user's id,
//! session epoch and password, and the address it went to.
//!
//! Five wrong codes void the code (an atomic count); the link, which nobody
//! can guess, still works, so a stranger's guesses never lock the owner out.

use std::time::Duration;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::email::{Email, hex_sha256};
use crate::users::{User, UserId, Username};

/// How long a ticket is good for at most.
pub const TICKET_TTL: Duration = Duration::from_secs(10 * 60);
/// Wrong codes that void a ticket's code.
pub const MAX_CODE_FAILURES: u32 = 5;
pub const CODE_DIGITS: usize = 8;
const SECRET_BYTES: usize = 32;
const ID_BYTES: usize = 16;
/// A link token's length: base64url of the user's id and the secret.
pub const LINK_TOKEN_CHARS: usize = (ID_BYTES + SECRET_BYTES).div_ceil(3) * 4;

/// What a ticket proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The person may set a new password without the old one.
    Reset,
    /// The person receives mail at the address being added.
    VerifyEmail,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Reset => "reset",
            Purpose::VerifyEmail => "verify_email",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "reset" => Some(Purpose::Reset),
            "verify_email" => Some(Purpose::VerifyEmail),
            _ => None,
        }
    }
}

/// The secrets of a ticket just issued, as mailed. Never logged, never stored.
pub struct Secrets {
    /// Goes in the link's fragment.
    pub link: String,
    /// Typed instead of following the link.
    pub code: String,
}

/// How a person proves a ticket.
pub enum Proof {
    /// The link's token: it names the user itself.
    Link(LinkToken),
    /// The code, for the user the request names.
    Code(String),
}

/// A presented link token: the user's id and the secret, base64url.
pub struct LinkToken {
    user_id: UserId,
    hash: String,
}

impl LinkToken {
    /// `None` for anything that is not a token's shape: the request is
    /// then refused as a wrong token is.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() != LINK_TOKEN_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let id = uuid::Uuid::from_slice(&bytes[..ID_BYTES]).ok()?;
        Some(LinkToken {
            user_id: UserId::parse(&id.to_string())?,
            hash: hex_sha256(raw.as_bytes()),
        })
    }

    pub fn user_id(&self) -> UserId {
        self.user_id
    }
}

/// A ticket as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub purpose: Purpose,
    pub user_id: UserId,
    pub username: Username,
    /// The user's session epoch when it was issued.
    pub epoch: u64,
    /// A fingerprint of the user's password hash when it was issued.
    pub password: String,
    /// The address it was sent to.
    pub email: Email,
    pub link_hash: String,
    pub code_hash: String,
    pub code_failures: u32,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Ticket {
    /// A new ticket for `user`, sent to `email`, and its secrets.
    pub fn issue(purpose: Purpose, user: &User, email: Email, now: i64) -> (Ticket, Secrets) {
        let random = SystemRandom::new();
        let mut bytes = [0u8; ID_BYTES + SECRET_BYTES];
        bytes[..ID_BYTES].copy_from_slice(uuid_bytes(user.id).as_slice());
        random
            .fill(&mut bytes[ID_BYTES..])
            .expect("the operating system's random source failed");
        let link = URL_SAFE_NO_PAD.encode(bytes);
        let code = draw_code(&random);
        let ticket = Ticket {
            purpose,
            user_id: user.id,
            username: user.username.clone(),
            epoch: user.session_epoch,
            password: password_fingerprint(&user.password_hash),
            email,
            link_hash: hex_sha256(link.as_bytes()),
            code_hash: code_hash(purpose, user.id, &code),
            code_failures: 0,
            created_at: now,
            expires_at: now + TICKET_TTL.as_secs() as i64,
        };
        (ticket, Secrets { link, code })
    }

    pub fn is_live(&self, now: i64) -> bool {
        self.expires_at > now
    }

    /// Whether `user` (as read now) is still as the ticket found them: same
    /// id, active, same epoch (no password change, reset, "log out
    /// everywhere" or deactivation since) and same password; and, for a
    /// reset, the address it went to still the verified one (a link in a
    /// mailbox the owner has since replaced or removed is dead).
    pub fn binds(&self, user: &User) -> bool {
        user.id == self.user_id
            && user.active
            && user.session_epoch == self.epoch
            && password_fingerprint(&user.password_hash) == self.password
            && (self.purpose != Purpose::Reset || user.email.as_ref() == Some(&self.email))
    }

    pub fn code_is_void(&self) -> bool {
        self.code_failures >= MAX_CODE_FAILURES
    }

    /// Whether `proof` is this ticket's (a void code never is).
    pub fn accepts(&self, proof: &Proof) -> bool {
        match proof {
            Proof::Link(token) => {
                token.user_id == self.user_id && same(&token.hash, &self.link_hash)
            }
            Proof::Code(code) => {
                !self.code_is_void()
                    && is_code_shaped(code)
                    && same(
                        &code_hash(self.purpose, self.user_id, code),
                        &self.code_hash,
                    )
            }
        }
    }
}

/// Whether `raw` has a code's shape (8 ASCII digits).
pub fn is_code_shaped(raw: &str) -> bool {
    raw.len() == CODE_DIGITS && raw.bytes().all(|b| b.is_ascii_digit())
}

fn same(a: &str, b: &str) -> bool {
    verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

fn uuid_bytes(id: UserId) -> [u8; ID_BYTES] {
    *uuid::Uuid::parse_str(&id.to_string())
        .expect("a user id is a UUID")
        .as_bytes()
}

/// 8 uniform digits: a 32-bit draw below the largest multiple of 10^8
/// (rejection sampling, so no code is likelier than another).
fn draw_code(random: &SystemRandom) -> String {
    const RANGE: u32 = 100_000_000;
    const LIMIT: u32 = u32::MAX - u32::MAX % RANGE;
    loop {
        let mut bytes = [0u8; 4];
        random
            .fill(&mut bytes)
            .expect("the operating system's random source failed");
        let value = u32::from_le_bytes(bytes);
        if value < LIMIT {
            return format!("{:08}", value % RANGE);
        }
    }
}

/// A code's hash, salted by purpose and user: a table read gives no code
/// away without a search per ticket (and a code lives ten minutes).
fn code_hash(purpose: Purpose, user: UserId, code: &str) -> String {
    hex_sha256(format!("{}:{user}:{code}", purpose.as_str()).as_bytes())
}

pub(crate) fn password_fingerprint(hash: &str) -> String {
    hex_sha256(hash.as_bytes())[..32].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        let mut user = User::new(
            Username::parse("alice").unwrap(),
            "Alice".into(),
            "$2b$10$hash".into(),
        );
        user.email = Some(email());
        user
    }

    fn email() -> Email {
        Email::parse("alice@example.com").unwrap()
    }

    #[test]
    fn a_ticket_accepts_its_own_link_and_code_and_nothing_else() {
        let user = user();
        let (ticket, secrets) = Ticket::issue(Purpose::Reset, &user, email(), 1_000);
        assert_eq!(secrets.link.len(), LINK_TOKEN_CHARS);
        assert!(is_code_shaped(&secrets.code));
        assert!(!ticket.link_hash.contains(&secrets.link) && ticket.code_hash != secrets.code);
        let link = LinkToken::parse(&secrets.link).unwrap();
        assert_eq!(link.user_id(), user.id);
        assert!(ticket.accepts(&Proof::Link(link)));
        assert!(ticket.accepts(&Proof::Code(secrets.code.clone())));
        let (other, other_secrets) = Ticket::issue(Purpose::Reset, &user, email(), 1_000);
        assert!(!ticket.accepts(&Proof::Link(LinkToken::parse(&other_secrets.link).unwrap())));
        assert!(!other.accepts(&Proof::Link(LinkToken::parse(&secrets.link).unwrap())));
        let wrong = format!(
            "{:08}",
            (secrets.code.parse::<u32>().unwrap() + 1) % 100_000_000
        );
        assert!(!ticket.accepts(&Proof::Code(wrong)));
        assert!(!ticket.accepts(&Proof::Code(format!("{} ", secrets.code))));
        // A verification's code is not a reset's.
        let mut verify = ticket.clone();
        verify.purpose = Purpose::VerifyEmail;
        assert!(!verify.accepts(&Proof::Code(secrets.code.clone())));
        let mut void = ticket.clone();
        void.code_failures = MAX_CODE_FAILURES;
        assert!(!void.accepts(&Proof::Code(secrets.code)));
        let link = LinkToken::parse(&secrets.link).unwrap();
        assert!(
            void.accepts(&Proof::Link(link)),
            "the link outlives the code"
        );
    }

    #[test]
    fn a_ticket_is_bound_to_the_user_as_it_found_them_and_lives_ten_minutes() {
        let user = user();
        let (ticket, _) = Ticket::issue(Purpose::Reset, &user, email(), 1_000);
        assert!(ticket.binds(&user));
        assert!(ticket.is_live(1_599) && !ticket.is_live(1_600));
        let mut moved = user.clone();
        moved.session_epoch += 1;
        assert!(!ticket.binds(&moved));
        let mut changed = user.clone();
        changed.password_hash = "$2b$10$other".into();
        assert!(!ticket.binds(&changed));
        let mut inactive = user.clone();
        inactive.active = false;
        assert!(!ticket.binds(&inactive));
        // A reset went to the verified address: once it changes, or is
        // removed, the ticket is dead.
        let mut moved_address = user.clone();
        moved_address.email = Some(Email::parse("alice@example.org").unwrap());
        assert!(!ticket.binds(&moved_address));
        let mut no_address = user.clone();
        no_address.email = None;
        assert!(!ticket.binds(&no_address));
        let mut reborn = user.clone();
        reborn.id = UserId::random();
        assert!(!ticket.binds(&reborn));
    }

    #[test]
    fn malformed_link_tokens_are_nobody_s() {
        assert!(LinkToken::parse("").is_none());
        assert!(LinkToken::parse(&"A".repeat(LINK_TOKEN_CHARS - 1)).is_none());
        assert!(LinkToken::parse(&"*".repeat(LINK_TOKEN_CHARS)).is_none());
    }

    #[test]
    fn codes_are_eight_digits_and_spread_over_the_range() {
        let random = SystemRandom::new();
        let codes: Vec<String> = (0..2_000).map(|_| draw_code(&random)).collect();
        assert!(codes.iter().all(|c| is_code_shaped(c)));
        let first_digits: std::collections::BTreeSet<u8> =
            codes.iter().map(|c| c.as_bytes()[0]).collect();
        assert_eq!(first_digits.len(), 10, "every leading digit, zero included");
    }
}
