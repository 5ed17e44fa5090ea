//! Issuer keys sealed at rest (issue 26's first step), against the local
//! KMS (moto) and DynamoDB Local that `make test` started: a key made and
//! sealed by a symmetric KMS key, stored, read back and unsealed, signs
//! tokens its public half verifies; a sealed key that will not unseal
//! (another context, another KMS key, a swapped record) gives a clear error
//! and no signer.

use crate::support::*;
use auth::issuer_keys::{KeyRecord, Schedule, make_key, signing_key, unseal};
use auth::keys::{KeyError, PublicKey};
use auth::store::StoreError;
use auth::tokens::{TokenIssuer, TokenVerifier};
use auth::users::{User, Username};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use std::time::Duration;

async fn kms() -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&sdk_for(&required_env("KMS_TEST_ENDPOINT"), &sdk_settings()).await)
}

/// A fresh symmetric ENCRYPT_DECRYPT key: the sealing key.
async fn sealing_key(kms: &aws_sdk_kms::Client) -> String {
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
    Schedule {
        period: Duration::from_secs(24 * 3600),
        lead: Duration::from_secs(2 * 3600),
        tail: Duration::from_secs(905),
    }
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
    let token = issuer.issue(&user, "sid", now, now).await.unwrap().token;
    let public = PublicKey::from_der(&record.public_der, None, "stored").unwrap();
    assert_eq!(
        public.kid, record.kid,
        "the kid is the public half's thumbprint"
    );
    let claims = TokenVerifier::new(&[public], &token_config())
        .verify(&token)
        .unwrap();
    assert_eq!(claims.sub, user.id.to_string());
    // A stranger's key does not verify it: the check above is the key's.
    assert!(
        TokenVerifier::new(&[stranger_key().public.clone()], &token_config())
            .verify(&token)
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
