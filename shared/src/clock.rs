//! Time as the handlers see it: the system clock in production, a clock the
//! test moves by hand where expiry matters (refresh tokens live for days).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    pub fn system() -> Self {
        Clock(None)
    }

    /// A clock that stands at `start` until `advance` moves it.
    pub fn manual(start: i64) -> Self {
        Clock(Some(Arc::new(AtomicI64::new(start))))
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        match &self.0 {
            Some(manual) => manual.load(Ordering::SeqCst),
            None => system_now(),
        }
    }

    /// Moves a manual clock forward; the system clock cannot be moved.
    pub fn advance(&self, seconds: i64) {
        let manual = self
            .0
            .as_ref()
            .expect("only a manual clock can be advanced");
        manual.fetch_add(seconds, Ordering::SeqCst);
    }
}

pub fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
