//! One rotation run of the issuer keys (`issuer_keys`): read the records,
//! apply the schedule's plan (extensions first, so that no moment goes
//! without a signing key, then the new keys, sealed, then the dead
//! records), and say what was done. The rotation function runs it on a
//! schedule; `auth-admin rotate-keys` runs it at once, and `auth-admin
//! revoke-key` revokes a kid and runs it (a key that signs at once when the
//! revoked one was signing).

use std::time::Duration;

use aws_sdk_kms::Client as KmsClient;

use crate::config::{ConfigError, Source, TokenConfig, number};
use crate::handlers::discovery::JWKS_MAX_AGE;
use crate::issuer_keys::{Schedule, make_key};
use crate::key_set::KeySettings;
use crate::keys::{KeyError, KeySource, signing_key_from};
use crate::store::{Store, StoreError};
use crate::tokens::{LEEWAY, REVOCATION_MARGIN};

/// What a rotation needs: the sealing key and the schedule.
#[derive(Clone, Debug)]
pub struct RotationConfig {
    /// The symmetric KMS key that seals the private halves
    /// (`JWT_SIGNING_KEY=sealed:<key id or ARN>`, as the issuers name it).
    pub sealing_key: String,
    pub schedule: Schedule,
}

impl RotationConfig {
    /// From `JWT_SIGNING_KEY`, `JWT_KEY_PERIOD_SECONDS` (how long a key
    /// signs, default a day), `JWT_KEY_LEAD_SECONDS` (how long it is
    /// published before, default 2 hours: more than the functions' refresh
    /// bound `JWT_KEYS_REFRESH_SECONDS` plus our JWKS's cache lifetime, and
    /// than the hour API Gateway's JWT authorizer may keep a JWKS), and the
    /// access tokens' lifetime (a key verifies that long, plus the leeway
    /// and a margin, after its last signature).
    pub fn from_source(env: &impl Source, tokens: &TokenConfig) -> Result<Self, ConfigError> {
        let sealing_key = match signing_key_from(env)? {
            KeySource::Sealed(id) => id,
            _ => {
                return Err(ConfigError::Invalid {
                    var: "JWT_SIGNING_KEY",
                    reason: "the rotation makes sealed keys: sealed:<sealing key id>".into(),
                });
            }
        };
        let period = number(
            env,
            "JWT_KEY_PERIOD_SECONDS",
            24 * 3600,
            600..=90 * 24 * 3600,
        )?;
        let lead = number(env, "JWT_KEY_LEAD_SECONDS", 2 * 3600, 1..=30 * 24 * 3600)?;
        let refresh = KeySettings::from_source(env)?.refresh;
        let least_lead = refresh + JWKS_MAX_AGE;
        if Duration::from_secs(lead) <= least_lead {
            return Err(ConfigError::Invalid {
                var: "JWT_KEY_LEAD_SECONDS",
                reason: format!(
                    "a key must be published for longer than the refresh bound and the JWKS's cache lifetime ({} s)",
                    least_lead.as_secs()
                ),
            });
        }
        let min_tail = tokens.access_token_ttl + LEEWAY;
        let schedule = Schedule::new(
            Duration::from_secs(period),
            Duration::from_secs(lead),
            min_tail + REVOCATION_MARGIN,
            min_tail,
        )
        .map_err(|reason| ConfigError::Invalid {
            var: "JWT_KEY_LEAD_SECONDS",
            reason,
        })?;
        Ok(RotationConfig {
            sealing_key,
            schedule,
        })
    }
}

/// What a run did, by kid.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotated {
    /// Revoked by this run's event (`Rotation::handle`).
    #[serde(default)]
    pub revoked: Vec<String>,
    pub created: Vec<String>,
    pub extended: Vec<String>,
    pub deleted: Vec<String>,
}

/// What the rotation function is asked: a run (its schedule, the deploy:
/// any event without the fields below), or revocations then a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationEvent {
    /// Kids to revoke now (unknown or already revoked ones are skipped).
    #[serde(default)]
    pub revoke: Vec<String>,
    /// Revoke every key made before this moment (seconds since the epoch):
    /// after an issuer compromise, which exposes the keys it could unseal.
    #[serde(default)]
    pub revoke_made_before: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// One run at `now`. Safe to repeat, and safe beside another run: each
/// step is conditional (an extension never shortens, a key is put once, a
/// record is deleted only once dead), and the worst two runs at once do is
/// make two keys for one window, both published, one signing.
pub async fn rotate(
    store: &Store,
    kms: &KmsClient,
    sealing_key: &str,
    schedule: &Schedule,
    now: i64,
) -> Result<Rotated, RotationError> {
    let keys = store.keys().await?;
    let plan = schedule.plan(&keys, now);
    let mut done = Rotated::default();
    for (kid, until) in plan.extend {
        if store
            .extend_key(&kid, until, schedule.verify_until(until))
            .await?
        {
            done.extended.push(kid);
        }
    }
    for window in plan.create {
        let record = make_key(kms, sealing_key, schedule, now, window).await?;
        store.put_key(&record).await?;
        done.created.push(record.kid);
    }
    for kid in plan.delete {
        if store.delete_key(&kid, now).await? {
            done.deleted.push(kid);
        }
    }
    Ok(done)
}

/// What the rotation function holds between invocations.
pub struct Rotation {
    pub store: Store,
    pub kms: KmsClient,
    pub config: RotationConfig,
}

impl RotationEvent {
    /// The event in a payload: a schedule's or a deploy's (anything that
    /// names no revocation) is a plain run; one that names a revocation
    /// must be one exactly, or it is refused (a revocation misspelt must
    /// not pass for a run that revoked nothing).
    pub fn from_payload(payload: serde_json::Value) -> Result<Self, String> {
        let names_revocation = payload
            .as_object()
            .is_some_and(|fields| fields.keys().any(|k| k.starts_with("revoke")));
        match serde_json::from_value(payload) {
            Ok(event) => Ok(event),
            Err(e) if names_revocation => Err(format!("not a revocation this function knows: {e}")),
            Err(_) => Ok(RotationEvent::default()),
        }
    }
}

/// How many times a run is tried within one invocation, and the pause
/// before each retry: a revocation must not leave the stack without a
/// signing key for want of one more try.
const RUN_ATTEMPTS: usize = 3;
const RUN_RETRY_PAUSE: Duration = Duration::from_secs(2);

impl Rotation {
    /// `event`'s revocations, then a run, at `now`. The revocations are
    /// written first; the run is tried up to three times, and runs even when
    /// a revocation failed (the error is returned after it): a revoked
    /// signing key is replaced at once.
    pub async fn handle(&self, event: &RotationEvent, now: i64) -> Result<Rotated, RotationError> {
        let mut kids = event.revoke.clone();
        if let Some(before) = event.revoke_made_before {
            let records = self.store.keys().await?;
            kids.extend(
                records
                    .into_iter()
                    .filter(|r| r.created_at < before && r.revoked_at.is_none())
                    .map(|r| r.kid),
            );
        }
        let mut revoked = Vec::new();
        let mut failed = None;
        for kid in kids {
            match self.store.revoke_key(&kid, now).await {
                Ok(true) => {
                    tracing::warn!(%kid, "issuer key revoked");
                    revoked.push(kid);
                }
                Ok(false) => {}
                Err(e) => {
                    failed.get_or_insert(RotationError::from(e));
                }
            }
        }
        let mut attempt = 1;
        let mut done = loop {
            match self.run(now).await {
                Ok(done) => break done,
                Err(e) if attempt < RUN_ATTEMPTS && !revoked.is_empty() => {
                    tracing::warn!(error = %e, attempt, "rotation after a revocation failed; trying again");
                    tokio::time::sleep(RUN_RETRY_PAUSE).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        if let Some(e) = failed {
            return Err(e);
        }
        done.revoked = revoked;
        Ok(done)
    }

    /// One run at `now`, logged (kids and counts: nothing secret).
    pub async fn run(&self, now: i64) -> Result<Rotated, RotationError> {
        let result = rotate(
            &self.store,
            &self.kms,
            &self.config.sealing_key,
            &self.config.schedule,
            now,
        )
        .await;
        match &result {
            Ok(done) => tracing::info!(
                created = ?done.created,
                extended = ?done.extended,
                deleted = ?done.deleted,
                "issuer keys rotated"
            ),
            Err(error) => tracing::error!(%error, "issuer key rotation failed"),
        }
        result
    }
}

/// Revokes `kid` from `now` (a compromised issuer), then runs a rotation:
/// if it was the signing key, a new one signs at once. `false`: no such key.
pub async fn revoke(
    store: &Store,
    kms: &KmsClient,
    sealing_key: &str,
    schedule: &Schedule,
    kid: &str,
    now: i64,
) -> Result<Option<Rotated>, RotationError> {
    if !store.revoke_key(kid, now).await? {
        return Ok(None);
    }
    Ok(Some(rotate(store, kms, sealing_key, schedule, now).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Source {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |var: &str| map.get(var).cloned()
    }

    fn tokens() -> TokenConfig {
        TokenConfig {
            issuer: "https://auth.test".into(),
            audience: "api".into(),
            access_token_ttl: Duration::from_secs(900),
        }
    }

    #[test]
    fn the_rotation_defaults_to_daily_keys_published_two_hours_ahead() {
        let config =
            RotationConfig::from_source(&env(&[("JWT_SIGNING_KEY", "sealed:k")]), &tokens())
                .unwrap();
        assert_eq!(config.sealing_key, "k");
        assert_eq!(config.schedule.period, Duration::from_secs(86400));
        assert_eq!(config.schedule.lead, Duration::from_secs(7200));
        assert_eq!(config.schedule.tail, Duration::from_secs(900 + 5 + 30));
    }

    #[test]
    fn a_lead_within_the_refresh_bound_and_the_jwks_cache_or_a_key_that_is_not_sealed_is_refused() {
        let err = RotationConfig::from_source(
            &env(&[
                ("JWT_SIGNING_KEY", "sealed:k"),
                ("JWT_KEY_LEAD_SECONDS", "360"),
            ]),
            &tokens(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "JWT_KEY_LEAD_SECONDS",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            RotationConfig::from_source(
                &env(&[
                    ("JWT_SIGNING_KEY", "sealed:k"),
                    ("JWT_KEY_LEAD_SECONDS", "361")
                ]),
                &tokens()
            )
            .is_ok()
        );
        let err = RotationConfig::from_source(&env(&[("JWT_SIGNING_KEY", "kms:k")]), &tokens())
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "JWT_SIGNING_KEY",
                    ..
                }
            ),
            "{err}"
        );
    }
}
