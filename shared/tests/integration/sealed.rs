//! Sealed mode wired (issue 26): issuers that unseal the table's key of the
//! moment at init and sign in memory, verifiers and the JWKS that read the
//! table's public keys (no KMS), each process with its own copy of the key
//! set, re-read on its bound. Against the local KMS (moto) and DynamoDB
//! Local that `make test` started, in real time: a rotation while requests
//! run on several "instances", a revocation that takes within the bound, an
//! unknown kid that forces at most one read per interval, and issuers whose
//! key will not unseal stopping at init with the reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::issuer_keys::{kms, sealing_key};
use crate::support::proxy::{Call, Fault, Proxy};
use crate::support::*;
use auth::clock::system_now;
use auth::handlers::discovery::{self, Discovery};
use auth::issuer_keys::{KeyRecord, Schedule, signing_key};
use auth::key_set::{KeySettings, KeyTable};
use auth::keys::KeyError;
use auth::rotation::{revoke, rotate};
use auth::store::Store;
use auth::tokens::{TokenError, TokenIssuer, TokenVerifier};
use auth::users::{User, Username};

fn daily() -> Schedule {
    let secs = Duration::from_secs;
    Schedule::new(secs(24 * 3600), secs(2 * 3600), secs(905), secs(905)).unwrap()
}

/// A table of its own, a sealing key of its own, and a first rotation
/// (three keys: one signing, two waiting) on that table.
async fn rotated() -> (aws_sdk_kms::Client, Store, String) {
    let (kms, store) = (kms().await, fresh_store().await);
    let sealing = sealing_key(&kms).await;
    rotate(&store, &kms, &sealing, &daily(), system_now())
        .await
        .unwrap();
    (kms, store, sealing)
}

/// `store`'s table through a proxy that sees (and may fail) its calls.
async fn through_proxy(store: &Store) -> (Proxy, Store) {
    let proxy = Proxy::to_dynamodb().await;
    let watched = Store::new(
        client_for(&proxy.endpoint, &sdk_settings()).await,
        store.table(),
    );
    (proxy, watched)
}

fn settings(refresh: u64, unknown_kid: u64) -> KeySettings {
    KeySettings {
        refresh: Duration::from_secs(refresh),
        unknown_kid: Duration::from_secs(unknown_kid),
    }
}

async fn table(store: &Store, settings: KeySettings) -> Arc<KeyTable> {
    Arc::new(KeyTable::load(store.clone(), settings).await.unwrap())
}

async fn sealed_issuer(
    store: &Store,
    kms: &aws_sdk_kms::Client,
    sealing: &str,
    settings: KeySettings,
) -> TokenIssuer {
    TokenIssuer::sealed(
        table(store, settings).await,
        kms.clone(),
        sealing.to_owned(),
        &token_config(),
        system_now(),
    )
    .await
    .unwrap()
}

fn user() -> User {
    User::new(Username::parse("sealed").unwrap(), "S".into(), "h".into())
}

async fn token(issuer: &TokenIssuer) -> String {
    let now = system_now();
    issuer
        .issue(&user(), "sid", now, &[], now)
        .await
        .unwrap()
        .token
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn jwks_kids(discovery: &Discovery) -> Vec<String> {
    let response = discovery::handle(discovery, event("jwks.json")).await;
    assert_eq!(response.status(), 200);
    let mut kids: Vec<String> = body_json(&response)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

#[tokio::test]
async fn a_sealed_issuer_signs_with_the_key_of_the_moment_and_table_verifiers_and_the_jwks_know_it()
{
    let (kms, store) = (kms().await, fresh_store().await);
    let sealing = sealing_key(&kms).await;
    let now = system_now();
    rotate(&store, &kms, &sealing, &daily(), now).await.unwrap();
    let records = store.keys().await.unwrap();
    assert_eq!(records.len(), 3, "one signing, two waiting");

    let issuer = sealed_issuer(&store, &kms, &sealing, KeySettings::default()).await;
    let token = token(&issuer).await;
    assert_eq!(kid_of(&token), signing_key(&records, now).unwrap().kid);
    let verifier = TokenVerifier::with_table(
        &[],
        table(&store, KeySettings::default()).await,
        &token_config(),
    );
    assert_eq!(verifier.verify(&token).await.unwrap().username, "sealed");

    // A key the table does not hold verifies nothing, whatever the token says.
    let mut header = our_header();
    header["kid"] = serde_json::json!(stranger_key().public.kid);
    let claims = serde_json::to_value(issuer.claims_for(&user(), "sid", now, now)).unwrap();
    let forged = forge(stranger_key(), &header, &claims).await;
    assert_eq!(verifier.verify(&forged).await, Err(TokenError::Invalid));
    // Nor does a table key's kid on another key's signature.
    header["kid"] = serde_json::json!(kid_of(&token));
    let forged = forge(stranger_key(), &header, &claims).await;
    assert_eq!(verifier.verify(&forged).await, Err(TokenError::Invalid));

    // The JWKS: every key that verifies now, the waiting ones too (they are
    // published a lead before they sign).
    let discovery = Discovery::new(
        &[],
        Some(table(&store, KeySettings::default()).await),
        &token_config(),
        &permissions(),
    );
    let mut kids: Vec<String> = records.iter().map(|r| r.kid.clone()).collect();
    kids.sort();
    assert_eq!(jwks_kids(&discovery).await, kids);
}

#[tokio::test]
async fn an_issuer_whose_key_will_not_unseal_stops_at_init_saying_why() {
    let (kms, store) = (kms().await, fresh_store().await);
    let sealing = sealing_key(&kms).await;
    let init = async |store: &Store, kms: &aws_sdk_kms::Client, sealing: &str| {
        TokenIssuer::sealed(
            table(store, KeySettings::default()).await,
            kms.clone(),
            sealing.to_owned(),
            &token_config(),
            system_now(),
        )
        .await
        .err()
        .expect("the issuer started")
    };
    // No key yet (the rotation never ran).
    let failed = init(&store, &kms, &sealing).await;
    assert!(
        matches!(&failed, KeyError::Unavailable(d) if d.contains("no issuer key signs")),
        "{failed}"
    );

    rotate(&store, &kms, &sealing, &daily(), system_now())
        .await
        .unwrap();
    // The positive control: as deployed, it starts.
    sealed_issuer(&store, &kms, &sealing, KeySettings::default()).await;
    // Pinned to another sealing key (a stack whose parameter names the
    // wrong key, or an issuer not allowed by the key policy): KMS refuses.
    let other = sealing_key(&kms).await;
    let failed = init(&store, &kms, &other).await;
    assert!(matches!(failed, KeyError::Rejected(_)), "{failed}");
    // KMS down.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = aws_sdk_kms::Client::new(&sdk_for(&endpoint, &sdk_settings()).await);
    let failed = init(&store, &down, &sealing).await;
    assert!(matches!(failed, KeyError::Unavailable(_)), "{failed}");

    // A record whose sealed half is another key's (sealed under the other
    // kid's context): refused, not signed with.
    let swapped_store = fresh_store().await;
    let now = system_now();
    let records = store.keys().await.unwrap();
    let signing = signing_key(&records, now).unwrap();
    let other_record = records.iter().find(|r| r.kid != signing.kid).unwrap();
    swapped_store
        .put_key(&KeyRecord {
            sealed: other_record.sealed.clone(),
            ..signing.clone()
        })
        .await
        .unwrap();
    let failed = init(&swapped_store, &kms, &sealing).await;
    assert!(matches!(failed, KeyError::Rejected(_)), "{failed}");
}

#[test]
fn a_rotation_while_requests_run_on_several_instances_fails_none() {
    // Keys that sign for 4 s each, published 2 s ahead (more than the
    // instances' 1 s refresh bound); a rotation every second. Two
    // instances, each with its own key set, issue and verify on threads for
    // 11 s: every token verifies at both, whichever key signed it, and
    // tokens of retired keys still verify at the end.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (kms, store) = (kms().await, fresh_store().await);
        let sealing = sealing_key(&kms).await;
        let secs = Duration::from_secs;
        let schedule = Schedule::new(secs(4), secs(2), secs(905), secs(905)).unwrap();
        rotate(&store, &kms, &sealing, &schedule, system_now())
            .await
            .unwrap();
        let quick = settings(1, 1);
        let instance = async || {
            Arc::new((
                sealed_issuer(&store, &kms, &sealing, quick).await,
                TokenVerifier::with_table(&[], table(&store, quick).await, &token_config()),
            ))
        };
        let (a, b) = (instance().await, instance().await);
        let until = Instant::now() + secs(11);
        let rotations = {
            let (store, kms, sealing) = (store.clone(), kms.clone(), sealing.clone());
            tokio::spawn(async move {
                let mut runs = 0;
                while Instant::now() < until {
                    rotate(&store, &kms, &sealing, &schedule, system_now())
                        .await
                        .unwrap();
                    runs += 1;
                    tokio::time::sleep(secs(1)).await;
                }
                runs
            })
        };
        let racer = |me: Arc<(TokenIssuer, TokenVerifier)>,
                     other: Arc<(TokenIssuer, TokenVerifier)>| {
            tokio::spawn(async move {
                let mut tokens = Vec::new();
                let mut failures = Vec::new();
                while Instant::now() < until {
                    let now = system_now();
                    match me.0.issue(&user(), "sid", now, &[], now).await {
                        Ok(issued) => {
                            for (at, verifier) in [("own", &me.1), ("other", &other.1)] {
                                if let Err(e) = verifier.verify(&issued.token).await {
                                    failures.push(format!("{at} verifier: {e}"));
                                }
                            }
                            tokens.push(issued.token);
                        }
                        Err(e) => failures.push(format!("issue: {e}")),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (tokens, failures)
            })
        };
        let (one, two) = (racer(a.clone(), b.clone()), racer(b.clone(), a.clone()));
        let (one, two, runs) = (
            one.await.unwrap(),
            two.await.unwrap(),
            rotations.await.unwrap(),
        );
        let failures: Vec<&String> = one.1.iter().chain(&two.1).collect();
        assert!(failures.is_empty(), "{failures:?}");
        assert!(runs >= 8, "{runs} rotation runs");
        let tokens: Vec<&String> = one.0.iter().chain(&two.0).collect();
        let mut kids: Vec<String> = tokens.iter().map(|t| kid_of(t)).collect();
        kids.dedup();
        let mut distinct = kids.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() >= 3,
            "signed by {distinct:?}: the keys did not change"
        );
        // The first token's key has stopped signing, and its tokens verify
        // on, at a verifier started now too.
        let fresh = TokenVerifier::with_table(&[], table(&store, quick).await, &token_config());
        let first = tokens.first().unwrap();
        assert_ne!(kid_of(first), kid_of(tokens.last().unwrap()));
        for verifier in [&a.1, &b.1, &fresh] {
            verifier.verify(first).await.unwrap();
            verifier.verify(tokens.last().unwrap()).await.unwrap();
        }
    });
}

#[tokio::test]
async fn a_revoked_kid_stops_verifying_signing_and_leaves_the_jwks_within_the_bound() {
    let (kms, store, sealing) = rotated().await;
    let bound = settings(2, 1);
    let issuer = sealed_issuer(&store, &kms, &sealing, bound).await;
    let verifier = TokenVerifier::with_table(&[], table(&store, bound).await, &token_config());
    let discovery = Discovery::new(
        &[],
        Some(table(&store, bound).await),
        &token_config(),
        &permissions(),
    );
    let before = token(&issuer).await;
    let leaked = kid_of(&before);
    verifier.verify(&before).await.unwrap();
    assert!(jwks_kids(&discovery).await.contains(&leaked));

    let started = Instant::now();
    revoke(&store, &kms, &sealing, &daily(), &leaked, system_now())
        .await
        .unwrap()
        .expect("the key exists");
    // Within the bound the copies held may still accept it; past it, none.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(verifier.verify(&before).await, Err(TokenError::Invalid));
    assert!(!jwks_kids(&discovery).await.contains(&leaked));
    let after = token(&issuer).await;
    assert_ne!(kid_of(&after), leaked, "the issuer signs with the new key");
    verifier.verify(&after).await.unwrap();
    assert!(jwks_kids(&discovery).await.contains(&kid_of(&after)));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_unknown_kid_makes_a_verifier_read_the_table_at_most_once_per_interval() {
    let (kms, store, sealing) = rotated().await;
    let (proxy, watched) = through_proxy(&store).await;
    // Verifiers that read the table every 15 minutes, and for an unknown
    // kid at most once in 300 s (one) or in 1 s (the other).
    let slow = TokenVerifier::with_table(
        &[],
        table(&watched, settings(900, 300)).await,
        &token_config(),
    );
    let quick =
        TokenVerifier::with_table(&[], table(&store, settings(900, 1)).await, &token_config());
    let queries = || {
        proxy
            .operations()
            .iter()
            .filter(|op| *op == "query")
            .count()
    };
    assert_eq!(queries(), 1, "the read at init");
    // A table kid on a stranger's signature: refused, and no read (a kid is
    // its key's thumbprint: no newer copy could accept it).
    let now = system_now();
    let known = signing_key(&store.keys().await.unwrap(), now)
        .unwrap()
        .kid
        .clone();
    let claims_now = serde_json::to_value(issuer().claims_for(&user(), "sid", now, now)).unwrap();
    for _ in 0..5 {
        let mut header = our_header();
        header["kid"] = serde_json::json!(known);
        let forged = forge(stranger_key(), &header, &claims_now).await;
        assert_eq!(slow.verify(&forged).await, Err(TokenError::Invalid));
    }
    assert_eq!(queries(), 1, "no read for a known kid's bad signature");
    // Forged kids, many: one read.
    let now = system_now();
    let claims = serde_json::to_value(issuer().claims_for(&user(), "sid", now, now)).unwrap();
    for n in 0..20 {
        let mut header = our_header();
        header["kid"] = serde_json::json!(format!("forged-{n}"));
        let forged = forge(stranger_key(), &header, &claims).await;
        assert_eq!(slow.verify(&forged).await, Err(TokenError::Invalid));
    }
    assert_eq!(queries(), 2, "one read for twenty unknown kids");

    // A key made after that read (the signing one revoked: a new one signs
    // at once) is unknown to both: the verifier that spent its read waits
    // for its interval (or its schedule); the other reads and accepts it.
    let signing = signing_key(&store.keys().await.unwrap(), system_now())
        .unwrap()
        .kid
        .clone();
    revoke(&store, &kms, &sealing, &daily(), &signing, system_now())
        .await
        .unwrap()
        .unwrap();
    let fresh = token(&sealed_issuer(&store, &kms, &sealing, KeySettings::default()).await).await;
    assert_eq!(slow.verify(&fresh).await, Err(TokenError::Invalid));
    assert_eq!(queries(), 2);
    quick.verify(&fresh).await.unwrap();
}

#[tokio::test]
async fn past_the_bound_a_key_set_that_cannot_be_read_again_is_a_503_never_the_old_copy() {
    let (kms, direct, sealing) = rotated().await;
    let (proxy, store) = through_proxy(&direct).await;
    let bound = settings(1, 1);
    let keys = table(&store, bound).await;
    let issuer = TokenIssuer::sealed(
        keys.clone(),
        kms.clone(),
        sealing.clone(),
        &token_config(),
        system_now(),
    )
    .await
    .unwrap();
    let verifier = TokenVerifier::with_table(&[], keys, &token_config());
    let good = token(&issuer).await;
    // Within the bound the copy serves: DynamoDB down changes nothing yet.
    proxy.fail(Call::Every("query"), Fault::Dropped);
    verifier.verify(&good).await.unwrap();
    token(&issuer).await;
    assert!(
        !proxy.fired_on(&Call::Every("query"), Fault::Dropped),
        "no read within the bound"
    );
    // Past it: the read fails, and so do signing and verifying (503s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        verifier.verify(&good).await,
        Err(TokenError::KeysUnavailable)
    );
    let now = system_now();
    let refused = issuer
        .issue(&user(), "sid", now, &[], now)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, auth::keys::SignError::Unavailable(_)),
        "{refused}"
    );
    assert!(proxy.fired_on(&Call::Every("query"), Fault::Dropped));
}

#[tokio::test]
async fn a_waiting_keys_private_half_forges_nothing_that_is_accepted_before_its_window() {
    // An issuer's role may unseal every key of the purpose, the waiting ones
    // too: a token it signs with one, before that key's window, is refused
    // though the key is published (and in the JWKS).
    let (kms, store) = (kms().await, fresh_store().await);
    let sealing = sealing_key(&kms).await;
    let now = system_now();
    rotate(&store, &kms, &sealing, &daily(), now).await.unwrap();
    let records = store.keys().await.unwrap();
    let signing = signing_key(&records, now).unwrap();
    let waiting = records.iter().find(|r| r.sign_from > now).unwrap();
    let stolen = TokenIssuer::new(
        auth::issuer_keys::unseal(&kms, &sealing, waiting)
            .await
            .unwrap(),
        &token_config(),
    );
    let verifier = TokenVerifier::with_table(
        &[],
        table(&store, KeySettings::default()).await,
        &token_config(),
    );
    let forged = token(&stolen).await;
    assert_eq!(kid_of(&forged), waiting.kid);
    assert_eq!(verifier.verify(&forged).await, Err(TokenError::Invalid));
    // The positive control: the same steps with the signing key pass.
    let genuine = TokenIssuer::new(
        auth::issuer_keys::unseal(&kms, &sealing, signing)
            .await
            .unwrap(),
        &token_config(),
    );
    verifier.verify(&token(&genuine).await).await.unwrap();
}

#[tokio::test]
async fn a_key_that_will_not_unseal_is_tried_once_per_bound_not_at_every_issuance() {
    let (kms_direct, store, sealing) = rotated().await;
    let proxy = Proxy::start(&required_env("KMS_TEST_ENDPOINT")).await;
    let kms = aws_sdk_kms::Client::new(&sdk_for(&proxy.endpoint, &sdk_settings()).await);
    let issuer = sealed_issuer(&store, &kms, &sealing, settings(1, 1)).await;
    token(&issuer).await;
    let decrypts = || {
        proxy
            .operations()
            .iter()
            .filter(|op| *op == "decrypt")
            .count()
    };
    assert_eq!(decrypts(), 1, "the unseal at init");
    // The signing key revoked: a new one signs at once, and KMS refuses.
    let signing = signing_key(&store.keys().await.unwrap(), system_now())
        .unwrap()
        .kid
        .clone();
    revoke(
        &store,
        &kms_direct,
        &sealing,
        &daily(),
        &signing,
        system_now(),
    )
    .await
    .unwrap()
    .unwrap();
    proxy.fail(Call::Every("decrypt"), Fault::Dropped);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..10 {
        let now = system_now();
        assert!(matches!(
            issuer.issue(&user(), "sid", now, &[], now).await,
            Err(auth::keys::SignError::Unavailable(_))
        ));
    }
    assert_eq!(decrypts(), 2, "one attempt for ten issuances");
    assert!(proxy.fired_on(&Call::Every("decrypt"), Fault::Dropped));
}

#[tokio::test]
async fn a_revocation_whose_run_fails_is_tried_three_times_and_the_revocation_stands() {
    let (_, store, sealing) = rotated().await;
    let proxy = Proxy::start(&required_env("KMS_TEST_ENDPOINT")).await;
    let kms = aws_sdk_kms::Client::new(&sdk_for(&proxy.endpoint, &sdk_settings()).await);
    let rotation = auth::rotation::Rotation {
        store: store.clone(),
        kms,
        config: auth::rotation::RotationConfig {
            sealing_key: sealing.clone(),
            schedule: daily(),
        },
    };
    let signing = signing_key(&store.keys().await.unwrap(), system_now())
        .unwrap()
        .kid
        .clone();
    proxy.fail(Call::Every("encrypt"), Fault::Dropped);
    let event = auth::rotation::RotationEvent {
        revoke: vec![signing.clone()],
        ..Default::default()
    };
    assert!(rotation.handle(&event, system_now()).await.is_err());
    let encrypts = proxy
        .operations()
        .iter()
        .filter(|op| *op == "encrypt")
        .count();
    assert_eq!(encrypts, 3, "three runs, each failing at sealing");
    assert!(proxy.fired_on(&Call::Every("encrypt"), Fault::Dropped));
    let records = store.keys().await.unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.kid == signing && r.revoked_at.is_some()),
        "the revocation stands"
    );
    // Nothing signs until a run succeeds (issuers answer 503 meanwhile).
    assert!(signing_key(&records, system_now()).is_none());
}
