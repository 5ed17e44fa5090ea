//! Abuse limits: a per-username lockout after repeated failed logins (the
//! Cognito model), and per-source-IP limits on login and registration.
//!
//! Lockout: every proof of a password (login, password change) is counted
//! before bcrypt runs; after 5 attempts with no success, attempts within the
//! lock window get 429; the window is 2^(n-5) seconds after the n-th attempt,
//! capped at 15 minutes. Refused attempts do not count; a success resets. Unknown usernames
//! are counted exactly like known ones, so the lockout says nothing about
//! whether an account exists. Counters live in the table (atomic ADD updates)
//! and expire: every read checks `expires_at`; TTL only tidies up.

use std::time::Duration;

use crate::config::{ConfigError, Source, number};

/// Failures in a row before the lock starts.
pub const FREE_FAILURES: u64 = 5;
/// The longest lock.
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// A failure counter is forgotten this long after its last failure.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// A username's failure record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failures {
    /// Attempts counted since the last success (each reserved before bcrypt).
    pub count: u64,
    /// When the last one was counted.
    pub last: i64,
    /// No attempt is allowed before this.
    pub locked_until: i64,
    pub expires_at: i64,
}

impl Failures {
    /// How long after the last failure attempts are refused.
    pub fn lock_window(count: u64) -> i64 {
        if count < FREE_FAILURES {
            return 0;
        }
        let exponent = (count - FREE_FAILURES).min(20) as u32;
        (1i64 << exponent).min(MAX_LOCK.as_secs() as i64)
    }

    /// Seconds until attempts are allowed again, if locked at `now`. Only a
    /// lock window locks: a record under `FREE_FAILURES` ends its "lock" the
    /// moment it was counted, and a request whose `now` was read before that
    /// second (a concurrent one, or another instance's clock a little behind)
    /// must not take it for a lock.
    pub fn locked_for(&self, now: i64) -> Option<u64> {
        if self.expires_at <= now {
            return None; // forgotten, whatever TTL has not yet deleted
        }
        (self.locked_until > self.last && self.locked_until > now)
            .then(|| (self.locked_until - now) as u64)
    }

    /// The `expires_at` of a record whose last failure is `now`: the longest lock
    /// plus the memory, so a counter never disappears while it still locks.
    pub fn expiry_after(now: i64) -> i64 {
        now + MAX_LOCK.as_secs() as i64 + FAILURE_MEMORY.as_secs() as i64
    }
}

/// Per-source-IP limits (fixed windows).
#[derive(Clone, Debug)]
pub struct RateLimits {
    pub login_per_minute: u64,
    pub register_per_hour: u64,
    /// Reset requests per source IP, and per identifier typed (a username
    /// or an address, counted by its hash): answered 429 alike whether or
    /// not an account matches, since neither depends on one.
    pub reset_per_ip_per_hour: u64,
    pub reset_per_identifier_per_hour: u64,
    /// Messages with a ticket (reset or verification) per account: past it
    /// the mail function sends nothing, silently (the requester's answer
    /// never depends on an account).
    pub tickets_per_account_per_hour: u64,
    /// Guesses at a reset's or a verification's link or code, per source IP.
    pub ticket_guesses_per_ip_per_hour: u64,
}

impl RateLimits {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        Ok(RateLimits {
            login_per_minute: number(env, "LOGIN_LIMIT_PER_IP_PER_MINUTE", 30, 1..=100_000)?,
            register_per_hour: number(env, "REGISTER_LIMIT_PER_IP_PER_HOUR", 20, 1..=100_000)?,
            reset_per_ip_per_hour: number(env, "RESET_LIMIT_PER_IP_PER_HOUR", 20, 1..=100_000)?,
            reset_per_identifier_per_hour: number(
                env,
                "RESET_LIMIT_PER_IDENTIFIER_PER_HOUR",
                5,
                1..=1_000,
            )?,
            tickets_per_account_per_hour: number(
                env,
                "MAIL_TICKETS_PER_ACCOUNT_PER_HOUR",
                5,
                1..=1_000,
            )?,
            ticket_guesses_per_ip_per_hour: number(
                env,
                "TICKET_GUESSES_PER_IP_PER_HOUR",
                30,
                1..=100_000,
            )?,
        })
    }
}

/// One fixed window of a per-IP limit.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub scope: &'static str,
    pub length: i64,
    pub limit: u64,
}

impl Window {
    pub fn login(limits: &RateLimits) -> Self {
        Window {
            scope: "login",
            length: 60,
            limit: limits.login_per_minute,
        }
    }

    pub fn register(limits: &RateLimits) -> Self {
        Window {
            scope: "register",
            length: 3600,
            limit: limits.register_per_hour,
        }
    }

    fn hourly(scope: &'static str, limit: u64) -> Self {
        Window {
            scope,
            length: 3600,
            limit,
        }
    }

    pub fn reset(limits: &RateLimits) -> Self {
        Window::hourly("reset", limits.reset_per_ip_per_hour)
    }

    pub fn reset_identifier(limits: &RateLimits) -> Self {
        Window::hourly("reset_for", limits.reset_per_identifier_per_hour)
    }

    pub fn account_tickets(limits: &RateLimits) -> Self {
        Window::hourly("tickets_for", limits.tickets_per_account_per_hour)
    }

    pub fn ticket_guesses(limits: &RateLimits) -> Self {
        Window::hourly("ticket_guess", limits.ticket_guesses_per_ip_per_hour)
    }

    pub fn start(&self, now: i64) -> i64 {
        now - now.rem_euclid(self.length)
    }

    /// Seconds until the window that contains `now` ends.
    pub fn remaining(&self, now: i64) -> u64 {
        (self.start(now) + self.length - now) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_window_doubles_from_the_fifth_failure_and_caps_at_15_minutes() {
        let windows: Vec<i64> = (1..=16).map(Failures::lock_window).collect();
        assert_eq!(&windows[..4], &[0, 0, 0, 0]);
        assert_eq!(&windows[4..10], &[1, 2, 4, 8, 16, 32]);
        assert_eq!(Failures::lock_window(14), 512);
        assert_eq!(Failures::lock_window(15), 900);
        assert_eq!(Failures::lock_window(1000), 900);
    }

    #[test]
    fn a_record_locks_until_its_window_ends_and_is_forgotten_when_expired() {
        let record = Failures {
            count: 7,
            last: 1_000,
            locked_until: 1_000 + Failures::lock_window(7),
            expires_at: Failures::expiry_after(1_000),
        };
        assert_eq!(record.locked_for(1_000), Some(4));
        assert_eq!(record.locked_for(1_003), Some(1));
        assert_eq!(record.locked_for(1_004), None);
        let four = Failures {
            count: 4,
            locked_until: 1_000,
            ..record
        };
        assert_eq!(four.locked_for(1_000), None);
        // Counted a second after a concurrent request read its clock: not
        // locked for that request either. (Two logins racing a deletion across
        // a second's boundary told it "too many attempts".)
        assert_eq!(four.locked_for(999), None);
        assert_eq!(record.locked_for(999), Some(5), "a real lock still locks");
        let forgotten = Failures {
            count: 30,
            last: 1_000,
            locked_until: 1_900,
            expires_at: 1_000,
        };
        assert_eq!(
            forgotten.locked_for(1_000),
            None,
            "expired records never lock"
        );
    }

    #[test]
    fn windows_are_aligned_and_say_how_long_is_left() {
        let w = Window {
            scope: "login",
            length: 60,
            limit: 3,
        };
        assert_eq!(w.start(125), 120);
        assert_eq!(w.remaining(125), 55);
        assert_eq!(w.remaining(120), 60);
    }
}
