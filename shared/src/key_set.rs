//! The issuer keys as a function holds them (sealed mode, `issuer_keys`):
//! the table's key records, read once at init and again on a bounded
//! schedule, so that a new key is picked up and a revoked one dropped
//! without a deploy, and an unknown `kid` may force a read (at most once per
//! short interval: forged kids cannot drive reads). Verifiers and issuers
//! share one `KeyTable` per process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;

use crate::config::{Source, number};
use crate::issuer_keys::KeyRecord;
use crate::keys::PublicKey;
use crate::store::{Store, StoreError};

/// How often a function re-reads the key set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySettings {
    /// The longest a held key set is used (`JWT_KEYS_REFRESH_SECONDS`,
    /// default 60): the bound after which a revoked key neither signs nor
    /// verifies at any of our functions, and a new one is known everywhere.
    pub refresh: Duration,
    /// The least time between two reads forced by unknown kids
    /// (`JWT_KEYS_UNKNOWN_KID_SECONDS`, default 5).
    pub unknown_kid: Duration,
}

impl KeySettings {
    pub fn from_source(env: &impl Source) -> Result<Self, crate::config::ConfigError> {
        let refresh = number(env, "JWT_KEYS_REFRESH_SECONDS", 60, 1..=900)?;
        let unknown_kid = number(env, "JWT_KEYS_UNKNOWN_KID_SECONDS", 5, 1..=300)?;
        Ok(KeySettings {
            refresh: Duration::from_secs(refresh),
            unknown_kid: Duration::from_secs(unknown_kid),
        })
    }
}

impl Default for KeySettings {
    fn default() -> Self {
        KeySettings {
            refresh: Duration::from_secs(60),
            unknown_kid: Duration::from_secs(5),
        }
    }
}

/// One read of the key set: the records, and the public halves decoded.
pub struct Snapshot {
    pub records: Vec<KeyRecord>,
    decoding: HashMap<String, DecodingKey>,
    public: HashMap<String, PublicKey>,
    /// When it was read, on the monotonic clock: a wall clock stepped back
    /// must not keep a copy past its bound.
    read_at: Instant,
}

impl Snapshot {
    fn new(records: Vec<KeyRecord>) -> Result<Self, StoreError> {
        let mut decoding = HashMap::new();
        let mut public = HashMap::new();
        for record in &records {
            // The store checked the kid against the key on read.
            let key = PublicKey::from_der(&record.public_der, None, &record.kid)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            decoding.insert(record.kid.clone(), key.decoding_key());
            public.insert(record.kid.clone(), key);
        }
        Ok(Snapshot {
            records,
            decoding,
            public,
            read_at: Instant::now(),
        })
    }

    /// `kid`'s record and public key.
    pub fn key(&self, kid: &str) -> Option<(&KeyRecord, &DecodingKey)> {
        let record = self.records.iter().find(|r| r.kid == kid)?;
        Some((record, self.decoding.get(kid)?))
    }

    /// The keys that verify at `now`, as the JWKS publishes them, by kid.
    pub fn verifying_keys(&self, now: i64) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = crate::issuer_keys::verifying_keys(&self.records, now)
            .into_iter()
            .filter_map(|r| self.public.get(&r.kid).cloned())
            .collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        keys
    }
}

/// The key set of one process, read again once it is `refresh` old.
pub struct KeyTable {
    store: Store,
    settings: KeySettings,
    held: tokio::sync::Mutex<Held>,
}

struct Held {
    snapshot: Arc<Snapshot>,
    /// When a kid the copy could not vouch for last forced a read.
    forced_at: Option<Instant>,
}

impl KeyTable {
    /// Reads the key set (at init: a failure stops the function).
    pub async fn load(store: Store, settings: KeySettings) -> Result<Self, StoreError> {
        let snapshot = read(&store).await?;
        Ok(KeyTable {
            store,
            settings,
            held: tokio::sync::Mutex::new(Held {
                snapshot,
                forced_at: None,
            }),
        })
    }

    pub fn settings(&self) -> KeySettings {
        self.settings
    }

    /// The key set: the copy held, or read again once it is `refresh` old.
    /// A read that fails is an error, not the old copy: past the bound,
    /// nothing may sign or verify with a key that may have been revoked
    /// since (the request's own DynamoDB calls would fail alike).
    pub async fn current(&self) -> Result<Arc<Snapshot>, StoreError> {
        let mut held = self.held.lock().await;
        if held.snapshot.read_at.elapsed() >= self.settings.refresh {
            held.snapshot = read(&self.store).await?;
        }
        Ok(held.snapshot.clone())
    }

    /// Reads the key set again for a kid the copy cannot vouch for (one it
    /// does not hold, or holds in a state that refuses the token: it may
    /// have changed since), unless a read was forced less than
    /// `unknown_kid` ago: `None` then. Forged kids drive one read per
    /// interval per process at most.
    pub async fn read_for_unknown_kid(&self) -> Result<Option<Arc<Snapshot>>, StoreError> {
        let mut held = self.held.lock().await;
        if held
            .forced_at
            .is_some_and(|at| at.elapsed() < self.settings.unknown_kid)
        {
            return Ok(None);
        }
        held.forced_at = Some(Instant::now());
        held.snapshot = read(&self.store).await?;
        Ok(Some(held.snapshot.clone()))
    }
}

/// One read of the key set (a strongly consistent query), decoded.
async fn read(store: &Store) -> Result<Arc<Snapshot>, StoreError> {
    Ok(Arc::new(Snapshot::new(store.keys().await?)?))
}
