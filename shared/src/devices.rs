//! Device proofs: OWASP's defence against a stranger who keeps an account
//! locked ("Slow Down Online Guessing Attacks with Device Cookies"). A
//! client that has signed in before shows a proof of it, and its password
//! guesses count against that proof alone: a lock that strangers build on
//! the username does not stop it, and its own wrong guesses lock only it.
//!
//! A proof is 256 random bits, stored only as its SHA-256
//! (`DEVICE#<sha256 hex>`), bound to its user and to the user's session
//! epoch when it was issued (so log out everywhere, deactivation, a password
//! change and deletion revoke every proof at once), valid
//! `DEVICE_PROOF_TTL_SECONDS` (90 days), and replaced at each sign-in. A
//! browser keeps it in the `__Host-device` cookie (`HttpOnly`, like the
//! refresh cookie); an API client gets it in the answer and sends it back in
//! the body of its next proof of the password: there it is a bearer secret.

use crate::sessions::RefreshToken;
use crate::throttle::Failures;
use crate::users::{User, UserId, Username};

/// Presented proofs longer than this are refused (ours are 43 characters).
pub const MAX_PROOF_CHARS: usize = 128;

/// How long a proof still vouches after the sign-in it vouched for replaced
/// it: a client whose answer was lost retries with the proof it holds.
pub const RETIRED_PROOF_GRACE_SECONDS: i64 = 60;

/// A device proof as the client holds it: never logged, never stored.
pub struct DeviceProof(RefreshToken);

impl DeviceProof {
    /// 256 bits from the operating system's CSPRNG, base64url.
    pub fn generate() -> Self {
        DeviceProof(RefreshToken::generate())
    }

    pub fn presented(raw: String) -> Self {
        DeviceProof(RefreshToken::presented(raw))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The key it is stored under: hex SHA-256.
    pub fn hash(&self) -> String {
        self.0.hash()
    }
}

/// A device proof's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The proof's hash: the item's key.
    pub hash: String,
    pub user_id: UserId,
    pub username: Username,
    /// The user's session epoch when it was issued: a proof of an earlier
    /// epoch vouches for nothing.
    pub epoch: u64,
    pub created_at: i64,
    pub expires_at: i64,
    /// Its own password attempts since its last success, counted as a
    /// username's are (`store::Store::reserve_device_attempt`).
    pub failures: Option<Failures>,
}

impl Device {
    /// A new proof for `user` under `epoch`, and its record.
    pub fn issue(
        user: &User,
        epoch: u64,
        now: i64,
        ttl: std::time::Duration,
    ) -> (DeviceProof, Device) {
        let proof = DeviceProof::generate();
        let device = Device {
            hash: proof.hash(),
            user_id: user.id,
            username: user.username.clone(),
            epoch,
            created_at: now,
            expires_at: now + ttl.as_secs() as i64,
            failures: None,
        };
        (proof, device)
    }

    /// Whether it vouches for `user` (as just read) at `now`: issued to this
    /// very user (not an earlier owner of the name) in the user's current
    /// session epoch, not expired, and the user active.
    pub fn vouches_for(&self, user: &User, now: i64) -> bool {
        self.user_id == user.id
            && self.epoch == user.session_epoch
            && self.expires_at > now
            && user.active
    }

    /// Seconds it has left at `now`.
    pub fn lifetime(&self, now: i64) -> u64 {
        (self.expires_at - now).max(0) as u64
    }
}

/// What a sign-in does to device proofs: issues `issued` (its proof goes
/// to the client) and retires the proof that vouched for it, if one did:
/// it ends `RETIRED_PROOF_GRACE_SECONDS` after the sign-in, or sooner if it
/// was to end sooner (a replaced proof presented again gains no time; and then the
/// username's attempt record is left alone: a device's success clears only
/// its own count, or a stranger would get fresh guesses on the username).
pub struct DeviceChange<'a> {
    pub issued: &'a Device,
    /// The proof that vouched (as read).
    pub retired: Option<&'a Device>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn user() -> User {
        User::new(
            Username::parse("owner").unwrap(),
            "Owner".into(),
            "$2b$10$x".into(),
        )
    }

    #[test]
    fn a_proof_vouches_only_for_its_user_in_its_epoch_until_it_expires() {
        let owner = user();
        let (proof, device) =
            Device::issue(&owner, owner.session_epoch, 1_000, Duration::from_secs(100));
        assert_eq!(proof.expose().len(), 43);
        assert_eq!(device.hash, proof.hash());
        assert_ne!(device.hash, proof.expose(), "stored hashed");
        assert!(device.vouches_for(&owner, 1_099));
        assert!(!device.vouches_for(&owner, 1_100), "expired");
        let mut later = owner.clone();
        later.session_epoch += 1;
        assert!(
            !device.vouches_for(&later, 1_050),
            "an epoch later: revoked"
        );
        let mut inactive = owner.clone();
        inactive.active = false;
        assert!(!device.vouches_for(&inactive, 1_050));
        let next_owner = user();
        assert!(
            !device.vouches_for(&next_owner, 1_050),
            "another user of the name"
        );
        assert_eq!(device.lifetime(1_040), 60);
    }
}
