//! One rotation run of the issuer keys (`issuer_keys`): read the records,
//! apply the schedule's plan (extensions first, so that no moment goes
//! without a signing key, then the new keys, sealed, then the dead
//! records), and say what was done. The rotation function runs it on a
//! schedule; `auth-admin rotate-keys` runs it at once, and `auth-admin
//! revoke-key` revokes a kid and runs it (a key that signs at once when the
//! revoked one was signing).

use aws_sdk_kms::Client as KmsClient;

use crate::issuer_keys::{Schedule, make_key};
use crate::keys::KeyError;
use crate::store::{Store, StoreError};

/// What a run did, by kid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rotated {
    pub created: Vec<String>,
    pub extended: Vec<String>,
    pub deleted: Vec<String>,
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
