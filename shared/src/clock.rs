//! Time as the handlers see it: the system clock in production, a clock the
//! test moves by hand where expiry matters (refresh tokens live for days), or
//! the system clock set a little off, as another Lambda instance's may be
//! (the race tests give each racer one).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub struct Clock(Kind);

#[derive(Clone, Debug, Default)]
enum Kind {
    #[default]
    System,
    Manual(Arc<AtomicI64>),
    /// The system clock plus this many milliseconds.
    Skewed(i64),
}

impl Clock {
    pub fn system() -> Self {
        Clock(Kind::System)
    }

    /// A clock that stands at `start` until `advance` moves it.
    pub fn manual(start: i64) -> Self {
        Clock(Kind::Manual(Arc::new(AtomicI64::new(start))))
    }

    /// The system clock, `millis` ahead (behind, if negative): whole
    /// seconds of two such clocks less than a second apart differ by one
    /// some of the time, as two machines' clocks do.
    pub fn skewed(millis: i64) -> Self {
        Clock(Kind::Skewed(millis))
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        match &self.0 {
            Kind::System => system_now(),
            Kind::Manual(manual) => manual.load(Ordering::SeqCst),
            Kind::Skewed(millis) => (system_millis() + millis).div_euclid(1000),
        }
    }

    /// Moves a manual clock forward; the system clock cannot be moved.
    pub fn advance(&self, seconds: i64) {
        let Kind::Manual(manual) = &self.0 else {
            panic!("only a manual clock can be advanced");
        };
        manual.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Another clock, `millis` ahead of this one (behind, if negative), as
    /// another instance's may be: for a manual clock, a manual clock of its
    /// own at this one's reading rounded to whole seconds (it moves apart
    /// from this one); for the system clock, skewed to the millisecond.
    pub fn offset(&self, millis: i64) -> Clock {
        match &self.0 {
            Kind::Manual(_) => Clock::manual(self.now() + (millis as f64 / 1000.0).round() as i64),
            Kind::System => Clock::skewed(millis),
            Kind::Skewed(base) => Clock::skewed(base + millis),
        }
    }
}

pub fn system_now() -> i64 {
    system_millis().div_euclid(1000)
}

fn system_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_reads_the_system_clock_that_far_off() {
        let ahead = Clock::skewed(5_000).now();
        let now = system_now();
        assert!((4..=5).contains(&(ahead - now)), "{ahead} vs {now}");
        let behind = Clock::skewed(-5_000).now();
        assert!((-6..=-5).contains(&(behind - system_now())));
    }

    #[test]
    fn a_manual_clocks_offset_is_a_clock_of_its_own() {
        let clock = Clock::manual(1_000);
        let racer = clock.offset(1_000);
        assert_eq!(racer.now(), 1_001);
        clock.advance(10);
        assert_eq!(racer.now(), 1_001, "the racer's clock moves alone");
        assert_eq!(clock.offset(600).now(), 1_011);
        assert_eq!(clock.offset(400).now(), 1_010);
    }
}
