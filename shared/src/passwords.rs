//! Password hashing with bcrypt, without truncation: bcrypt reads at most 72
//! bytes, so a longer password must never hash, and never match its first 72
//! bytes. The work runs on the blocking pool, never on the async executor.
//!
//! The length rule is ours, checked before bcrypt runs, rather than the crate's
//! `non_truncating_*` functions: those count bcrypt's NUL terminator and so refuse
//! a password of exactly 72 bytes, which bcrypt does hash in full.

use tokio::task;

/// bcrypt reads at most this many bytes of a password.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// A bcrypt work factor we accept: at least 10 (OWASP's floor for bcrypt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BcryptCost(u32);

impl BcryptCost {
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
            dummy_hash: format!("$2b${:02}${DUMMY_SALT_AND_DIGEST}", cost.get()),
        }
    }

    pub fn cost(&self) -> BcryptCost {
        self.cost
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
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        task::spawn_blocking(move || verify_blocking(&password, &hash))
            .await
            .map_err(|e| PasswordError::Hashing(e.to_string()))?
    }
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

    #[tokio::test]
    async fn a_malformed_stored_hash_is_an_error_not_a_match() {
        let err = hasher()
            .verify("pw".into(), Some("not-a-hash".into()))
            .await
            .unwrap_err();
        assert!(matches!(err, PasswordError::MalformedHash));
    }
}
