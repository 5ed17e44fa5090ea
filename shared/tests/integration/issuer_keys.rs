//! Issuer keys sealed at rest (issue 26's first step), against the local
//! KMS (moto) and DynamoDB Local that `make test` started: a key made and
//! sealed by a symmetric KMS key, stored, read back and unsealed, signs
//! tokens its public half verifies; a sealed key that will not unseal
//! (another context, another KMS key, a swapped record) gives a clear error
//! and no signer. Rotation runs, alone, twice at once, and after a revocation.

use crate::support::proxy::{Call, Gate, Proxy};
use crate::support::*;
use auth::issuer_keys::{KeyRecord, Schedule, make_key, signing_key, unseal, verifying_keys};
use auth::keys::{KeyError, PublicKey};
use auth::rotation::{Rotated, revoke, rotate};
use auth::store::Store;
use auth::store::StoreError;
use auth::tokens::{TokenIssuer, TokenVerifier};
use auth::users::{User, Username};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use std::time::Duration;

pub async fn kms() -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&sdk_for(&required_env("KMS_TEST_ENDPOINT"), &sdk_settings()).await)
}

/// A fresh symmetric ENCRYPT_DECRYPT key: the sealing key.
pub async fn sealing_key(kms: &aws_sdk_kms::Client) -> String {
    kms.create_key()
        .key_spec(KeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot create a key on the local KMS: {e:?}"))
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned()
}

fn schedule() -> Schedule {
    let secs = Duration::from_secs;
    Schedule::new(secs(24 * 3600), secs(2 * 3600), secs(905), secs(905)).unwrap()
}

/// `record` as revoked at `at`, with its sealed half still in hand (an
/// issuer's copy read before the revocation).
fn record_revoked(record: &KeyRecord, at: i64) -> KeyRecord {
    KeyRecord {
        revoked_at: Some(at),
        ..record.clone()
    }
}

async fn new_key(kms: &aws_sdk_kms::Client, sealing: &str, now: i64) -> KeyRecord {
    make_key(kms, sealing, &schedule(), now, (now, now + 3600))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_sealed_key_stored_read_back_and_unsealed_signs_tokens_its_public_half_verifies() {
    let (kms, store) = (kms().await, fresh_store().await);
    let sealing = sealing_key(&kms).await;
    let now = auth::clock::system_now();
    let record = new_key(&kms, &sealing, now).await;
    // The private half is not stored in clear: the sealed blob is not a
    // PKCS#8 key, and holds no run of the public modulus either.
    assert!(aws_lc_rs::rsa::KeyPair::from_pkcs8(&record.sealed).is_err());
    store.put_key(&record).await.unwrap();
    assert!(matches!(
        store.put_key(&record).await,
        Err(StoreError::AlreadyExists)
    ));

    let read = store.keys().await.unwrap();
    assert_eq!(read, vec![record.clone()]);
    let current = signing_key(&read, now).unwrap();
    let signer = unseal(&kms, &sealing, current).await.unwrap();
    assert_eq!(signer.kid(), record.kid);
    let issuer = TokenIssuer::new(signer, &token_config());
    let user = User::new(Username::parse("sealed").unwrap(), "S".into(), "h".into());
    let token = issuer
        .issue(&user, "sid", now, &[], now)
        .await
        .unwrap()
        .token;
    let public = PublicKey::from_der(&record.public_der, None, "stored").unwrap();
    assert_eq!(
        public.kid, record.kid,
        "the kid is the public half's thumbprint"
    );
    let claims = TokenVerifier::new(&[public], &token_config())
        .verify(&token)
        .await
        .unwrap();
    assert_eq!(claims.sub, user.id.to_string());
    // A stranger's key does not verify it: the check above is the key's.
    assert!(
        TokenVerifier::new(&[stranger_key().public.clone()], &token_config())
            .verify(&token)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_sealed_key_unseals_only_under_its_own_context_and_sealing_key() {
    let kms = kms().await;
    let sealing = sealing_key(&kms).await;
    let other_sealing = sealing_key(&kms).await;
    let now = auth::clock::system_now();
    let record = new_key(&kms, &sealing, now).await;
    let other = new_key(&kms, &sealing, now).await;

    // The positive control: as sealed, it unseals.
    assert!(unseal(&kms, &sealing, &record).await.is_ok());
    // Another kid in the context (a record whose kid was edited): KMS refuses.
    let renamed = KeyRecord {
        kid: other.kid.clone(),
        ..record.clone()
    };
    let refused = unseal(&kms, &sealing, &renamed).await.err().unwrap();
    assert!(matches!(refused, KeyError::Rejected(_)), "{refused}");
    // Pinned to another sealing key: KMS refuses.
    let refused = unseal(&kms, &other_sealing, &record).await.err().unwrap();
    assert!(matches!(refused, KeyError::Rejected(_)), "{refused}");
    // Another key's sealed half under this record's name and public half:
    // the context names the other kid, so it fails; and were the context
    // right, the public halves would differ. Either way, no signer.
    let swapped = KeyRecord {
        sealed: other.sealed.clone(),
        ..record.clone()
    };
    assert!(unseal(&kms, &sealing, &swapped).await.is_err());
    let mismatched = KeyRecord {
        public_der: record.public_der.clone(),
        ..other.clone()
    };
    let refused = unseal(&kms, &sealing, &mismatched).await.err().unwrap();
    assert!(
        refused.to_string().contains("not the record's own"),
        "{refused}"
    );
}

#[tokio::test]
async fn kms_down_at_unseal_is_unavailable_not_a_bad_key() {
    let kms = kms().await;
    let sealing = sealing_key(&kms).await;
    let record = new_key(&kms, &sealing, auth::clock::system_now()).await;
    // A KMS that does not answer: a closed port.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = aws_sdk_kms::Client::new(&sdk_for(&endpoint, &sdk_settings()).await);
    let failed = unseal(&down, &sealing, &record).await.err().unwrap();
    assert!(matches!(failed, KeyError::Unavailable(_)), "{failed}");
}

#[tokio::test]
async fn key_records_are_extended_revoked_from_their_earliest_moment_and_deleted_when_dead() {
    let (kms, store) = (kms().await, fresh_store().await);
    let sealing = sealing_key(&kms).await;
    let now = auth::clock::system_now();
    let record = new_key(&kms, &sealing, now).await;
    store.put_key(&record).await.unwrap();
    // Extended (missed runs), never shortened.
    assert!(
        store
            .extend_key(&record.kid, now + 7200, now + 8105)
            .await
            .unwrap()
    );
    assert!(
        !store
            .extend_key(&record.kid, now + 60, now + 965)
            .await
            .unwrap()
    );
    let extended = &store.keys().await.unwrap()[0];
    assert_eq!(
        (extended.sign_until, extended.verify_until),
        (now + 7200, now + 8105)
    );
    // Revoked from a moment on: a later revocation does not postpone it, an
    // earlier one brings it forward, and the sealed half is gone for good.
    assert!(store.revoke_key(&record.kid, now + 9).await.unwrap());
    assert!(!store.revoke_key(&record.kid, now + 20).await.unwrap());
    assert!(store.revoke_key(&record.kid, now + 5).await.unwrap());
    let read = store.keys().await.unwrap();
    assert_eq!(
        read[0].revoked_at,
        Some(now + 5),
        "the earliest revocation stands"
    );
    assert!(read[0].sealed.is_empty(), "nothing left to unseal");
    assert!(signing_key(&read, now + 5).is_none());
    let refused = unseal(&kms, &sealing, &record_revoked(&record, now + 5))
        .await
        .err()
        .unwrap();
    assert!(refused.to_string().contains("revoked"), "{refused}");
    assert!(!store.revoke_key("no-such-kid", now).await.unwrap());
    assert!(
        !store
            .extend_key(&record.kid, now + 9000, now + 9905)
            .await
            .unwrap(),
        "a revoked key is never extended"
    );
    // Deleted only once no token of it can be accepted: a tombstone until then.
    assert!(!store.delete_key(&record.kid, now).await.unwrap());
    assert_eq!(store.keys().await.unwrap().len(), 1);
    assert!(store.delete_key(&record.kid, now + 8105).await.unwrap());
    assert!(store.keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_first_rotation_makes_a_key_that_signs_now_and_publishes_the_next_ones_ahead() {
    let (kms, store) = (kms().await, fresh_store().await);
    let sealing = sealing_key(&kms).await;
    let now = auth::clock::system_now();
    let s = schedule();
    let first = rotate(&store, &kms, &sealing, &s, now).await.unwrap();
    assert_eq!(first.created.len(), 3, "{first:?}");
    let keys = store.keys().await.unwrap();
    let signer = signing_key(&keys, now).unwrap();
    assert_eq!(signer.kid, first.created[0]);
    // Every key is in the JWKS from now: the later ones a full lead and
    // more before they sign.
    assert_eq!(verifying_keys(&keys, now).len(), 3);
    for k in keys.iter().filter(|k| k.kid != signer.kid) {
        assert!(k.sign_from >= now + s.lead.as_secs() as i64, "{k:?}");
    }
    assert!(unseal(&kms, &sealing, signer).await.is_ok());
    // Again at once: nothing to do.
    let again = rotate(&store, &kms, &sealing, &s, now).await.unwrap();
    assert_eq!(again, Rotated::default());
    // A day on: one more key, published two periods and a lead ahead.
    let day = 24 * 3600;
    let next = rotate(&store, &kms, &sealing, &s, now + day).await.unwrap();
    assert_eq!(next.created.len(), 1, "{next:?}");
    // And once the first key's last token has died, its record goes.
    let later = rotate(&store, &kms, &sealing, &s, now + day + 905)
        .await
        .unwrap();
    assert_eq!(later.deleted, vec![first.created[0].clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_rotation_runs_at_once_leave_one_key_signing_at_every_moment() {
    let (kms, store) = (kms().await, fresh_store().await);
    let sealing = sealing_key(&kms).await;
    let now = auth::clock::system_now();
    let s = schedule();
    // Forced: each run has read the (empty) key set before either writes,
    // so both plan the same windows and both make their keys.
    let (a, b) = (Proxy::to_dynamodb().await, Proxy::to_dynamodb().await);
    let (a_read, b_read) = (Gate::default(), Gate::default());
    a.announce(Call::Nth("query", 1), &a_read)
        .hold_until(Call::Nth("putitem", 1), &b_read);
    b.announce(Call::Nth("query", 1), &b_read)
        .hold_until(Call::Nth("putitem", 1), &a_read);
    let run = |proxy: &Proxy| {
        let (kms, sealing, endpoint, table) = (
            kms.clone(),
            sealing.clone(),
            proxy.endpoint.clone(),
            store.table().to_owned(),
        );
        racing(async move {
            let store = Store::new(client_for(&endpoint, &sdk_settings()).await, table);
            rotate(&store, &kms, &sealing, &s, now).await.unwrap()
        })
    };
    let runs = race(vec![run(&a), run(&b)]).await;
    assert!(a_read.is_open() && b_read.is_open(), "both runs read first");
    let made: usize = runs.iter().map(|r| r.created.len()).sum();
    assert_eq!(made, 6, "each run made its three keys: {runs:?}");
    let keys = store.keys().await.unwrap();
    assert_eq!(keys.len(), made);
    // One signer at each moment of the covered span, the same whoever asks.
    let day = 24 * 3600;
    for t in (now..now + 3 * day).step_by(600) {
        let signer = signing_key(&keys, t).unwrap_or_else(|| panic!("no key signs at {t}"));
        let reversed: Vec<KeyRecord> = keys.iter().rev().cloned().collect();
        assert_eq!(signing_key(&reversed, t).unwrap().kid, signer.kid);
    }
    assert_eq!(s.plan(&keys, now).create, vec![], "nothing left to make");
}

#[tokio::test]
async fn revoking_the_signing_key_makes_a_key_that_signs_at_once() {
    let (kms, store) = (kms().await, fresh_store().await);
    let sealing = sealing_key(&kms).await;
    let now = auth::clock::system_now();
    let s = schedule();
    rotate(&store, &kms, &sealing, &s, now).await.unwrap();
    let leaked = signing_key(&store.keys().await.unwrap(), now + 60)
        .unwrap()
        .kid
        .clone();
    let done = revoke(&store, &kms, &sealing, &s, &leaked, now + 60)
        .await
        .unwrap()
        .unwrap();
    let keys = store.keys().await.unwrap();
    let signer = signing_key(&keys, now + 60).unwrap();
    assert_ne!(signer.kid, leaked);
    assert!(
        done.created.contains(&signer.kid) || signer.sign_from <= now + 60,
        "{done:?}"
    );
    assert!(
        verifying_keys(&keys, now + 60)
            .iter()
            .all(|k| k.kid != leaked)
    );
    assert!(
        revoke(&store, &kms, &sealing, &s, "no-such-kid", now + 60)
            .await
            .unwrap()
            .is_none()
    );
}
