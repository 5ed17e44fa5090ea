//! The second factor's data key (issue 29), against DynamoDB Local and the
//! local KMS (moto): the first load that may make it makes it (KMS
//! `GenerateDataKey`) and stores it sealed, every later load unseals that
//! same key, and a load that only reads makes none; two first loads at once
//! agree on one key (the one stored first); a key sealed under another KMS
//! key, another purpose or none does not open; a failed read or write
//! leaves no key behind.

use crate::issuer_keys::{kms, sealing_key};
use crate::support::proxy::Fault;
use crate::support::proxy::{Call, Gate, Proxy, order_writes};
use crate::support::race::{Outcomes, race, racing};
use crate::support::*;
use auth::keys::KeyError;
use auth::second_factor::{DataKeyRecord, SecretBox};
use auth::second_factor_key::{DataKeyError, DataKeyOrigin, ensure_secret_box, stored_secret_box};
use auth::store::Store;
use auth::store::StoreError;
use auth::totp::TotpSecret;
use auth::users::UserId;

/// Whether `a` opens what `b` sealed, and the other way round: one key.
fn same_key(a: &SecretBox, b: &SecretBox) -> bool {
    let (user, secret) = (UserId::random(), TotpSecret::generate());
    let opens = |from: &SecretBox, to: &SecretBox| {
        to.open(&user, &from.seal(&user, &secret))
            .is_ok_and(|s| s.as_bytes() == secret.as_bytes())
    };
    opens(a, b) && opens(b, a)
}

#[tokio::test]
async fn the_first_load_makes_the_data_key_and_every_later_load_unseals_it() {
    let (kms, store) = (kms().await, fresh_store().await);
    let sealing = sealing_key(&kms).await;
    let now = auth::clock::system_now();
    assert_eq!(store.data_key().await.unwrap(), None);
    // What only reads makes none.
    assert!(
        stored_secret_box(&store, &kms, &sealing)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.data_key().await.unwrap(), None);

    let (made, origin) = ensure_secret_box(&store, &kms, &sealing, now)
        .await
        .unwrap();
    assert_eq!(origin, DataKeyOrigin::Made);
    let stored = store.data_key().await.unwrap().expect("the key is stored");
    assert_eq!(stored.created_at, now);
    // Stored sealed: KMS's ciphertext, not 32 bytes of key.
    assert!(stored.sealed.len() > 32, "{} bytes", stored.sealed.len());

    let (again, origin) = ensure_secret_box(&store, &kms, &sealing, now + 60)
        .await
        .unwrap();
    assert_eq!(origin, DataKeyOrigin::Stored);
    assert!(same_key(&made, &again));
    let read = stored_secret_box(&store, &kms, &sealing)
        .await
        .unwrap()
        .unwrap();
    assert!(same_key(&made, &read));
    assert_eq!(made.key_id(), stored.key_id());
    // Still the one item, as first stored.
    assert_eq!(store.data_key().await.unwrap(), Some(stored));
}

/// Two first loads at once: the one whose write comes second finds the
/// first's key stored and unseals it. Forced both ways round, then free.
#[tokio::test]
async fn two_first_loads_at_once_agree_on_the_key_stored_first() {
    let kms = kms().await;
    let sealing = sealing_key(&kms).await;
    let mut free = Outcomes::default();
    for round in 0..3 {
        let store = fresh_store().await;
        let (a, b) = (Proxy::to_dynamodb().await, Proxy::to_dynamodb().await);
        let write = Call::Nth("putitem", 1);
        // Round 0: a stores first; round 1: b does; round 2: free-running.
        let ordered = match round {
            0 => Some(order_writes(&a, write.clone(), &b, write)),
            1 => Some(order_writes(&b, write.clone(), &a, write)),
            _ => None,
        };
        let racers = [&a, &b].map(|proxy| {
            let (kms, sealing, table) = (kms.clone(), sealing.clone(), store.table().to_owned());
            let endpoint = proxy.endpoint.clone();
            racing(async move {
                let store = Store::new(client_for(&endpoint, &sdk_settings()).await, table);
                let now = auth::clock::system_now();
                ensure_secret_box(&store, &kms, &sealing, now)
                    .await
                    .unwrap()
            })
        });
        let [(box_a, origin_a), (box_b, origin_b)]: [_; 2] =
            race(racers.into()).await.try_into().ok().unwrap();
        assert!(same_key(&box_a, &box_b), "round {round}: one key");
        let stored = store.data_key().await.unwrap().unwrap();
        let (reloaded, _) = ensure_secret_box(&store, &kms, &sealing, 0).await.unwrap();
        assert!(same_key(&box_a, &reloaded), "round {round}: the stored one");
        let origins = [origin_a, origin_b];
        match ordered.as_ref().map(Gate::is_open) {
            Some(order_held) => {
                assert!(order_held, "round {round}: the first write was done first");
                let expected = if round == 0 {
                    [DataKeyOrigin::Made, DataKeyOrigin::Racer]
                } else {
                    [DataKeyOrigin::Racer, DataKeyOrigin::Made]
                };
                assert_eq!(origins, expected, "round {round}");
            }
            None => {
                assert!(origins.contains(&DataKeyOrigin::Made), "{origins:?}");
                free.count(format!("{origins:?}"));
            }
        }
        assert!(!stored.sealed.is_empty());
    }
    free.report("two_first_loads_at_once_agree_on_the_key_stored_first");
}

#[tokio::test]
async fn a_data_key_opens_only_under_its_sealing_key_and_its_purpose() {
    let (kms, store) = (kms().await, fresh_store().await);
    let (sealing, other) = (sealing_key(&kms).await, sealing_key(&kms).await);
    let now = auth::clock::system_now();
    ensure_secret_box(&store, &kms, &sealing, now)
        .await
        .unwrap();
    // Pinned to another KMS key: refused, and nothing is made in its place.
    let stored = store.data_key().await.unwrap();
    let refused = ensure_secret_box(&store, &kms, &other, now).await.err();
    assert!(
        matches!(refused, Some(DataKeyError::Kms(KeyError::Rejected(_)))),
        "{refused:?}"
    );
    assert_eq!(store.data_key().await.unwrap(), stored);

    // Sealed by the right KMS key under another purpose (an issuer key's
    // context), or under none: refused.
    for context in [Some(auth::issuer_keys::context("some-kid")), None] {
        let elsewhere = fresh_store().await;
        let foreign = kms
            .generate_data_key()
            .key_id(&sealing)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .set_encryption_context(context.clone())
            .send()
            .await
            .unwrap()
            .ciphertext_blob
            .unwrap()
            .into_inner();
        elsewhere
            .put_data_key(&DataKeyRecord {
                sealed: foreign,
                created_at: now,
            })
            .await
            .unwrap();
        let refused = stored_secret_box(&elsewhere, &kms, &sealing).await.err();
        assert!(
            matches!(refused, Some(DataKeyError::Kms(KeyError::Rejected(_)))),
            "{context:?}: {refused:?}"
        );
    }
}

/// A read that fails is an error, not "no key": nothing is made. A write
/// that fails leaves nothing stored, and the next load makes the key.
#[tokio::test]
async fn a_failed_read_or_write_makes_no_key_and_leaves_none() {
    let (kms, store) = (kms().await, fresh_store().await);
    let sealing = sealing_key(&kms).await;
    let now = auth::clock::system_now();
    let through = |proxy: &Proxy| {
        let (endpoint, table) = (proxy.endpoint.clone(), store.table().to_owned());
        async move { Store::new(client_for(&endpoint, &sdk_settings()).await, table) }
    };

    let proxy = Proxy::to_dynamodb().await;
    proxy.fail(Call::Every("getitem"), Fault::Dropped);
    let failed = ensure_secret_box(&through(&proxy).await, &kms, &sealing, now)
        .await
        .err();
    proxy.assert_fired(&Call::Every("getitem"), Fault::Dropped);
    assert!(
        matches!(
            failed,
            Some(DataKeyError::Store(StoreError::Unavailable(_)))
        ),
        "{failed:?}"
    );
    assert!(
        !proxy.operations().iter().any(|o| o == "putitem"),
        "{:?}",
        proxy.operations()
    );
    let failed = stored_secret_box(&through(&proxy).await, &kms, &sealing)
        .await
        .err();
    assert!(matches!(failed, Some(DataKeyError::Store(_))), "{failed:?}");
    assert_eq!(store.data_key().await.unwrap(), None);

    let proxy = Proxy::to_dynamodb().await;
    proxy.fail(Call::Every("putitem"), Fault::Dropped);
    let failed = ensure_secret_box(&through(&proxy).await, &kms, &sealing, now)
        .await
        .err();
    proxy.assert_fired(&Call::Every("putitem"), Fault::Dropped);
    assert!(matches!(failed, Some(DataKeyError::Store(_))), "{failed:?}");
    assert_eq!(store.data_key().await.unwrap(), None);

    let (_, origin) = ensure_secret_box(&store, &kms, &sealing, now)
        .await
        .unwrap();
    assert_eq!(origin, DataKeyOrigin::Made);
}
