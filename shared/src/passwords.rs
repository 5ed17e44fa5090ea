//! Password hashing with bcrypt, without truncation: bcrypt reads at most 72
//! bytes, so a longer password must never hash, and never match its first 72
//! bytes. The work runs on the blocking pool, never on the async executor.
//!
//! The length rule is ours, checked before bcrypt runs, rather than the crate's
//! `non_truncating_*` functions: those count bcrypt's NUL terminator and so refuse
//! a password of exactly 72 bytes, which bcrypt does hash in full.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::task;

use crate::config::{ConfigError, Source, number};
use crate::users::Username;

/// bcrypt reads at most this many bytes of a password.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// OWASP ASVS 5.0 (V6.2.1): at least 8 characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The ~20,000 most common passwords, lower-case, from Django's
/// CommonPasswordValidator (scripts/update-common-passwords.sh regenerates
/// data/common-passwords.txt); build.rs leaves out those the length rules
/// refuse anyway.
static COMMON_PASSWORDS_TEXT: &str =
    include_str!(concat!(env!("OUT_DIR"), "/common-passwords.txt"));

fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON_PASSWORDS_TEXT
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    })
}

/// Why a new password is refused. No composition rules (ASVS 5.0 V6.2.5).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    #[error("password must be at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error(
        "password must be at most {MAX_PASSWORD_BYTES} bytes (bcrypt's limit; it is never truncated), got {0} bytes"
    )]
    TooLong(usize),
    #[error("password must not contain NUL characters")]
    ContainsNul,
    #[error("password is too common: it is in a list of the most used passwords")]
    Common,
    #[error("password must not be the same as the username")]
    SameAsUsername,
}

/// The policy a new password must pass (registration, password change).
pub fn check_new_password(password: &str, username: &Username) -> Result<(), PolicyViolation> {
    check_password_alone(password)?;
    if password.to_lowercase() == username.as_str() {
        return Err(PolicyViolation::SameAsUsername);
    }
    Ok(())
}

/// The policy's rules that need no username: what a reset checks before
/// it looks up whose account a proof is for, so that its answer cannot
/// tell whether there is one.
pub fn check_password_alone(password: &str) -> Result<(), PolicyViolation> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PolicyViolation::TooLong(password.len()));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PolicyViolation::TooShort);
    }
    if password.contains('\0') {
        return Err(PolicyViolation::ContainsNul);
    }
    if common_passwords().contains(password.to_lowercase().as_str()) {
        return Err(PolicyViolation::Common);
    }
    Ok(())
}

/// Whether `hash` was made at a lower cost than `cost` (then a successful
/// login rehashes). Hashes we cannot read are left alone.
pub fn needs_rehash(hash: &str, cost: BcryptCost) -> bool {
    hash_cost(hash).is_some_and(|stored| stored < cost.get())
}

/// A bcrypt work factor we accept: at least 10 (OWASP's floor for bcrypt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BcryptCost(u32);

impl BcryptCost {
    /// `BCRYPT_COST`, 12 by default.
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let cost = number(env, "BCRYPT_COST", BcryptCost::DEFAULT.get(), 0..=31)?;
        BcryptCost::new(cost).map_err(|reason| ConfigError::Invalid {
            var: "BCRYPT_COST",
            reason,
        })
    }

    pub const MIN: u32 = 10;
    pub const DEFAULT: BcryptCost = BcryptCost(12);

    pub fn new(cost: u32) -> Result<Self, String> {
        match cost {
            Self::MIN..=31 => Ok(BcryptCost(cost)),
            _ => Err(format!(
                "bcrypt cost must be between {} and 31, got {cost}",
                Self::MIN
            )),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("stored password hash is malformed")]
    MalformedHash,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Hashes and verifies passwords at one configured cost.
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    cost: BcryptCost,
    /// Full verifications done, for the test that proves every login path that
    /// answers alike also works alike.
    verifications: Arc<AtomicU64>,
    /// bcrypt work done by verifications, in units of 2^cost rounds: what a
    /// timing attacker measures, counted rather than timed.
    work: Arc<AtomicU64>,
    /// Time spent waiting for verifications (nanoseconds): what `make bench`
    /// subtracts from a login to see the handler's own work.
    verify_nanos: Arc<AtomicU64>,
    /// Stands in for the hash of a user who does not exist, so that an unknown
    /// username costs one full bcrypt verification, like a wrong password. It is
    /// the hash of nothing in particular: a well-formed string at our cost is
    /// all verify needs to do the full work, and building it costs nothing at init.
    dummy_hash: String,
}

/// Salt and digest of a well-known bcrypt example; only its form matters.
const DUMMY_SALT_AND_DIGEST: &str = "R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";

impl PasswordHasher {
    pub fn new(cost: BcryptCost) -> Self {
        PasswordHasher {
            cost,
            verifications: Arc::default(),
            work: Arc::default(),
            verify_nanos: Arc::default(),
            dummy_hash: format!("$2b${:02}${DUMMY_SALT_AND_DIGEST}", cost.get()),
        }
    }

    pub fn cost(&self) -> BcryptCost {
        self.cost
    }

    /// How many full verifications this hasher (and its clones) has done.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The bcrypt work of this hasher's verifications so far: the sum of
    /// 2^cost over every bcrypt run they made.
    pub fn work(&self) -> u64 {
        self.work.load(Ordering::Relaxed)
    }

    /// The time this hasher (and its clones) has spent in verifications, the
    /// hand-off to the blocking pool included.
    pub fn verify_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.verify_nanos.load(Ordering::Relaxed))
    }

    /// Hashes a new password; refuses one bcrypt would truncate.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        let cost = self.cost.get();
        task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|e| PasswordError::Hashing(e.to_string()))?
            .map_err(|e| PasswordError::Hashing(e.to_string()))
    }

    /// Checks `password` against `hash`, or against the dummy hash when there is
    /// no user, so both paths cost one full verification. A password longer than
    /// 72 bytes never matches; it still pays for a verification, so its timing
    /// says nothing about the account.
    ///
    /// A stored hash of a lower cost than ours (made before `BCRYPT_COST` was
    /// raised; the next login rehashes it) is topped up with dummy work at
    /// the costs in between, so that its verification costs exactly what an
    /// unknown user's does: 2^c + 2^c + 2^(c+1) + … + 2^(C-1) = 2^C. Otherwise
    /// its quicker answer would tell an existing user from an unknown one.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let target = self.cost.get();
        let stored = hash_cost(&hash).unwrap_or(target);
        let padding: Vec<String> = (stored..target).map(|cost| self.dummy_at(cost)).collect();
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let work = self.work.clone();
        let started = std::time::Instant::now();
        let verified = task::spawn_blocking(move || {
            let result = verify_blocking(&password, &hash);
            work.fetch_add(1 << stored.min(40), Ordering::Relaxed);
            let bytes = &password.as_bytes()[..password.len().min(MAX_PASSWORD_BYTES)];
            for dummy in &padding {
                let _ = bcrypt::verify(bytes, dummy);
                work.fetch_add(
                    1 << hash_cost(dummy).unwrap_or(0).min(40),
                    Ordering::Relaxed,
                );
            }
            result
        })
        .await;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.verify_nanos.fetch_add(nanos, Ordering::Relaxed);
        verified.map_err(|e| PasswordError::Hashing(e.to_string()))?
    }

    /// A well-formed hash of nothing at `cost`.
    fn dummy_at(&self, cost: u32) -> String {
        format!("$2b${cost:02}${DUMMY_SALT_AND_DIGEST}")
    }
}

/// The cost of a bcrypt hash, if it is one.
fn hash_cost(hash: &str) -> Option<u32> {
    hash.parse::<bcrypt::HashParts>()
        .ok()
        .map(|parts| parts.get_cost())
}

fn verify_blocking(password: &str, hash: &str) -> Result<bool, PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        // Same work as a real attempt, result discarded: such a password was never hashed.
        let _ = bcrypt::verify(&password.as_bytes()[..MAX_PASSWORD_BYTES], hash);
        return Ok(false);
    }
    bcrypt::verify(password, hash).map_err(|_| PasswordError::MalformedHash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(BcryptCost::new(10).unwrap())
    }

    #[test]
    fn cost_below_10_is_refused() {
        assert!(BcryptCost::new(9).is_err());
        assert!(BcryptCost::new(4).is_err());
        assert!(BcryptCost::new(32).is_err());
        assert_eq!(BcryptCost::new(10).unwrap().get(), 10);
    }

    #[tokio::test]
    async fn hash_then_verify_accepts_the_password_and_rejects_others() {
        let hasher = hasher();
        let hash = hasher
            .hash("correct horse battery staple".into())
            .await
            .unwrap();
        assert!(hash.starts_with("$2b$10$"), "{hash}");
        assert!(
            hasher
                .verify("correct horse battery staple".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("correct horse battery stapl".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!hasher.verify(String::new(), Some(hash)).await.unwrap());
    }

    #[tokio::test]
    async fn hashing_a_password_over_72_bytes_is_refused() {
        let err = hasher().hash("a".repeat(73)).await.unwrap_err();
        assert!(matches!(err, PasswordError::TooLong));
        // Exactly 72 bytes is fine; multi-byte characters count in bytes.
        assert!(hasher().hash("a".repeat(72)).await.is_ok());
        assert!(matches!(
            hasher().hash("é".repeat(37)).await,
            Err(PasswordError::TooLong)
        ));
    }

    #[tokio::test]
    async fn a_password_over_72_bytes_never_matches_its_first_72_bytes() {
        let hasher = hasher();
        let first_72 = "x".repeat(72);
        let hash = hasher.hash(first_72.clone()).await.unwrap();
        assert!(
            hasher
                .verify(first_72.clone(), Some(hash.clone()))
                .await
                .unwrap()
        );
        let longer = format!("{first_72}and more");
        assert!(!hasher.verify(longer, Some(hash)).await.unwrap());
    }

    #[tokio::test]
    async fn the_dummy_hash_is_well_formed_at_the_configured_cost() {
        // A malformed dummy would make verify fail fast (an error, no work done) and
        // reveal unknown usernames by timing. Well-formed means Ok(false).
        for cost in [10, 12] {
            let hasher = PasswordHasher::new(BcryptCost::new(cost).unwrap());
            assert!(hasher.dummy_hash.starts_with(&format!("$2b${cost}$")));
            assert_eq!(hasher.dummy_hash.len(), 60);
        }
        assert!(!hasher().verify("anything".into(), None).await.unwrap());
        let parts = hasher().dummy_hash.parse::<bcrypt::HashParts>();
        assert!(parts.is_ok(), "dummy hash does not parse");
    }

    fn policy(password: &str) -> Result<(), PolicyViolation> {
        check_new_password(password, &Username::parse("alice.smith").unwrap())
    }

    #[test]
    fn the_shipped_list_has_at_least_10000_entries_and_every_one_is_refused() {
        let shipped = include_str!("../data/common-passwords.txt");
        let all: Vec<&str> = shipped.lines().filter(|l| !l.is_empty()).collect();
        assert!(all.len() >= 10_000, "{}", all.len());
        // Every listed password is refused: by the list, or by a length rule first.
        let username = Username::parse("someone-unlisted").unwrap();
        for password in all {
            assert!(
                check_new_password(password, &username).is_err(),
                "{password:?} was accepted"
            );
        }
        assert!(common_passwords().contains("password1"));
    }

    #[test]
    fn new_passwords_follow_the_policy() {
        assert_eq!(policy("short7!"), Err(PolicyViolation::TooShort));
        assert_eq!(
            policy("ééééééé"),
            Err(PolicyViolation::TooShort),
            "7 characters, 14 bytes"
        );
        assert_eq!(policy("éééééééé"), Ok(()), "8 characters count, not bytes");
        assert_eq!(policy(&"a".repeat(73)), Err(PolicyViolation::TooLong(73)));
        assert!(
            policy(&"é".repeat(37))
                .unwrap_err()
                .to_string()
                .contains("72 bytes")
        );
        assert_eq!(
            policy(&"Zq8!".repeat(18)),
            Ok(()),
            "exactly 72 bytes is fine"
        );
        assert_eq!(policy("password123"), Err(PolicyViolation::Common));
        assert_eq!(
            policy("PassWord123"),
            Err(PolicyViolation::Common),
            "case-insensitive"
        );
        assert_eq!(policy("iloveyou"), Err(PolicyViolation::Common));
        assert_eq!(policy("Alice.Smith"), Err(PolicyViolation::SameAsUsername));
        assert_eq!(
            check_password_alone("Alice.Smith"),
            Ok(()),
            "no username: no rule"
        );
        assert_eq!(
            check_password_alone("iloveyou"),
            Err(PolicyViolation::Common)
        );
        assert_eq!(
            policy("nul\0in the middle"),
            Err(PolicyViolation::ContainsNul)
        );
        // No composition rules: a long lower-case passphrase is fine.
        assert_eq!(policy("correct horse battery staple"), Ok(()));
    }

    #[tokio::test]
    async fn hashes_below_the_configured_cost_need_a_rehash() {
        let low = hasher().hash("some password".into()).await.unwrap();
        assert!(needs_rehash(&low, BcryptCost::new(12).unwrap()));
        assert!(!needs_rehash(&low, BcryptCost::new(10).unwrap()));
        assert!(!needs_rehash("garbage", BcryptCost::new(12).unwrap()));
    }

    #[tokio::test]
    async fn a_malformed_stored_hash_is_an_error_not_a_match() {
        let err = hasher()
            .verify("pw".into(), Some("not-a-hash".into()))
            .await
            .unwrap_err();
        assert!(matches!(err, PasswordError::MalformedHash));
    }
}
