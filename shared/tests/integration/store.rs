//! The user store against DynamoDB Local.

use std::sync::Arc;

use crate::support::*;
use auth::store::{DeletedBy, Store, StoreError, create_table};
use auth::users::{User, Username};

fn user(username: &str) -> User {
    User::new(
        Username::parse(username).unwrap(),
        "Some Name".into(),
        "$2b$10$hash".into(),
    )
}

#[tokio::test]
async fn a_created_user_reads_back_by_its_normalised_username() {
    let store = fresh_store().await;
    let alice = user("alice");
    store.create(&alice).await.unwrap();
    let found = store.get(&Username::parse("ALICE").unwrap()).await.unwrap();
    assert_eq!(found, Some(alice));
}

#[tokio::test]
async fn an_unknown_username_reads_as_none() {
    let store = fresh_store().await;
    assert_eq!(
        store
            .get(&Username::parse("nobody").unwrap())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_second_user_with_the_same_username_is_refused_and_the_first_is_kept() {
    let store = fresh_store().await;
    let first = user("alice");
    store.create(&first).await.unwrap();
    let err = store.create(&user("Alice")).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err}");
    assert_eq!(store.get(&first.username).await.unwrap(), Some(first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_of_one_username_let_exactly_one_through() {
    let store = Arc::new(fresh_store().await);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let candidate = user("contended");
                barrier.wait().await;
                store.create(&candidate).await.map(|()| candidate)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(user) => winners.push(user),
            Err(StoreError::AlreadyExists) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let stored = store
        .get(&Username::parse("contended").unwrap())
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), winners.first());
}

#[tokio::test]
async fn deactivating_and_deleting_a_user() {
    let store = fresh_store().await;
    let alice = user("alice");
    store.create(&alice).await.unwrap();
    assert!(store.set_active(&alice, false).await.unwrap());
    assert!(!store.get(&alice.username).await.unwrap().unwrap().active);
    let read = store.get(&alice.username).await.unwrap().unwrap();
    store.delete_user(&read, DeletedBy::Operator).await.unwrap();
    assert_eq!(store.get(&alice.username).await.unwrap(), None);
    assert!(
        matches!(
            store.delete_user(&read, DeletedBy::Operator).await,
            Err(StoreError::Conflict)
        ),
        "deleting a user who is gone"
    );
    assert!(
        !store.set_active(&alice, true).await.unwrap(),
        "no user to activate"
    );
    assert_eq!(
        store.get(&alice.username).await.unwrap(),
        None,
        "set_active must not create"
    );
}

#[tokio::test]
async fn creating_the_table_twice_is_fine() {
    let store = fresh_store().await;
    create_table(&local_client().await, store.table())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_table_is_an_internal_error_not_an_outage() {
    let store = Store::new(local_client().await, "no-such-table");
    let err = store
        .get(&Username::parse("alice").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Internal(_)), "{err}");
}

#[tokio::test]
async fn revoking_a_session_that_does_not_exist_changes_nothing_on_the_user() {
    let store = fresh_store().await;
    let mut alice = user("alice");
    alice.revoked_sessions.insert("expired".into(), 1_000);
    alice.revoked_sessions.insert("live".into(), 5_000);
    store.create(&alice).await.unwrap();
    store
        .revoke_sessions(&["fresh"], &alice, 6_000, 2_000)
        .await
        .unwrap_err(); // no session item
    // The session and the user entry are written together or not at all.
    assert_eq!(
        store
            .get(&alice.username)
            .await
            .unwrap()
            .unwrap()
            .revoked_sessions,
        alice.revoked_sessions
    );
}

#[tokio::test]
async fn past_the_cap_a_logout_ends_all_sessions_instead_of_growing_the_item() {
    use auth::store::MAX_REVOKED_SESSIONS;
    let store = fresh_store().await;
    let mut alice = user("alice");
    for i in 0..MAX_REVOKED_SESSIONS {
        alice.revoked_sessions.insert(format!("sid-{i}"), 9_000);
    }
    store.create(&alice).await.unwrap();
    let sid = start_session(&store, &alice).await;
    store
        .revoke_sessions(&[&sid], &alice, 9_500, 2_000)
        .await
        .unwrap();
    let stored = store.get(&alice.username).await.unwrap().unwrap();
    assert_eq!(stored.session_epoch, alice.session_epoch + 1);
    // Every listed session ended with the epoch: the list starts afresh, so
    // the next logout ends one session again, not all of them.
    assert!(stored.revoked_sessions.is_empty());
    let next = start_session(&store, &stored).await;
    store
        .revoke_sessions(&[&next], &stored, 9_500, 2_000)
        .await
        .unwrap();
    let after = store.get(&alice.username).await.unwrap().unwrap();
    assert_eq!(after.session_epoch, stored.session_epoch);
    assert_eq!(after.revoked_sessions.len(), 1);
}

#[tokio::test]
async fn a_logout_prunes_a_long_list_of_expired_entries_a_bounded_batch_at_a_time() {
    // 100 entries, all expired: one write removing them all would pass
    // DynamoDB's 4 KB expression limit and fail every logout from then on.
    let store = fresh_store().await;
    let mut alice = user("alice");
    for i in 0..100 {
        alice.revoked_sessions.insert(format!("{:036}", i), 1_000);
    }
    store.create(&alice).await.unwrap();
    let mut current = alice.clone();
    for round in 0..6 {
        let sid = start_session(&store, &current).await;
        store
            .revoke_sessions(&[&sid], &current, 9_500, 2_000)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        current = store.get(&alice.username).await.unwrap().unwrap();
    }
    let expired = current
        .revoked_sessions
        .values()
        .filter(|until| **until < 2_000)
        .count();
    assert_eq!(expired, 0, "all pruned over a few logouts");
    assert_eq!(current.revoked_sessions.len(), 6);
    assert_eq!(current.session_epoch, alice.session_epoch);
}

#[tokio::test]
async fn a_password_change_from_a_stale_read_loses_to_an_ended_session() {
    use auth::sessions::{RefreshRecord, RefreshState, RefreshToken, Session};
    let store = fresh_store().await;
    let alice = user("alice");
    store.create(&alice).await.unwrap();
    let caller = start_session(&store, &alice).await;
    let new_session = |epoch| Session {
        id: Session::new_id(),
        user_id: alice.id,
        username: alice.username.clone(),
        epoch,
        revoked: false,
        created_at: 1_000,
        auth_time: 1_000,
        expires_at: 99_999,
        last_used: 1_000,
        origin: Default::default(),
        amr: vec!["pwd".into()],
        passkey: None,
    };
    let first = |session: &Session| RefreshRecord {
        hash: RefreshToken::generate().hash(),
        session_id: session.id.clone(),
        user_id: alice.id,
        state: RefreshState::Active,
        created_at: 1_000,
        expires_at: 99_999,
    };
    // "Log out everywhere" after the change read the user: the change loses.
    assert!(store.end_all_sessions(&alice).await.unwrap());
    let session = new_session(alice.session_epoch + 1);
    let (_, device) = auth::devices::Device::issue(
        &alice,
        alice.session_epoch + 1,
        1_000,
        std::time::Duration::from_secs(99_000),
    );
    let device = auth::devices::DeviceChange {
        issued: &device,
        retired: None,
    };
    let lost = store
        .change_password(
            &alice,
            &caller,
            "$2b$10$new",
            &session,
            &first(&session),
            &device,
        )
        .await;
    assert!(matches!(lost, Err(StoreError::Conflict)), "{lost:?}");
    assert!(store.get_session(&session.id).await.unwrap().is_none());
    // The caller's own session logged out after the read: the change loses too.
    let fresh = store.get(&alice.username).await.unwrap().unwrap();
    let caller = start_session(&store, &fresh).await;
    store
        .revoke_sessions(&[&caller], &fresh, 9_500, 2_000)
        .await
        .unwrap();
    let session = new_session(fresh.session_epoch + 1);
    let lost = store
        .change_password(
            &fresh,
            &caller,
            "$2b$10$new",
            &session,
            &first(&session),
            &device,
        )
        .await;
    assert!(matches!(lost, Err(StoreError::Conflict)), "{lost:?}");
    let stored = store.get(&alice.username).await.unwrap().unwrap();
    assert_eq!(stored.password_hash, alice.password_hash);
}

#[tokio::test]
async fn revoking_prunes_entries_no_access_token_can_outlive() {
    let store = fresh_store().await;
    let mut alice = user("alice");
    alice.revoked_sessions.insert("expired".into(), 1_000);
    alice.revoked_sessions.insert("live".into(), 5_000);
    store.create(&alice).await.unwrap();
    let sid = start_session(&store, &alice).await;
    store
        .revoke_sessions(&[&sid], &alice, 6_000, 2_000)
        .await
        .unwrap();
    let stored = store.get(&alice.username).await.unwrap().unwrap();
    let kept: Vec<(&str, i64)> = stored
        .revoked_sessions
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let mut expected = vec![("live", 5_000), (sid.as_str(), 6_000)];
    expected.sort();
    assert_eq!(kept, expected);
    assert!(store.get_session(&sid).await.unwrap().unwrap().revoked);
}

/// Stores a session (and a first refresh token) for `user`; returns its id.
async fn start_session(store: &Store, user: &User) -> String {
    start_session_at(store, user, 1_000, 99_999).await
}

/// `start_session`, begun at `created_at` and ending at `expires_at`.
pub(crate) async fn start_session_at(
    store: &Store,
    user: &User,
    created_at: i64,
    expires_at: i64,
) -> String {
    try_start_session(store, user, created_at, expires_at)
        .await
        .unwrap()
}

/// A login's session for `user` (as read), through the store: its id, or
/// why its transaction did not happen.
pub(crate) async fn start_session_for(
    store: &Store,
    user: &User,
) -> Result<String, auth::store::StoreError> {
    try_start_session(store, user, 1_000, 99_999).await
}

async fn try_start_session(
    store: &Store,
    user: &User,
    created_at: i64,
    expires_at: i64,
) -> Result<String, auth::store::StoreError> {
    use auth::sessions::{RefreshRecord, RefreshState, RefreshToken, Session};
    let session = Session {
        id: Session::new_id(),
        user_id: user.id,
        username: user.username.clone(),
        epoch: user.session_epoch,
        revoked: false,
        created_at,
        auth_time: created_at,
        expires_at,
        last_used: created_at,
        origin: Default::default(),
        amr: vec!["pwd".into()],
        passkey: None,
    };
    let first = RefreshRecord {
        hash: RefreshToken::generate().hash(),
        session_id: session.id.clone(),
        user_id: user.id,
        state: RefreshState::Active,
        created_at,
        expires_at,
    };
    let (_, device) = auth::devices::Device::issue(
        user,
        user.session_epoch,
        created_at,
        std::time::Duration::from_secs(99_000),
    );
    let device = auth::devices::DeviceChange {
        issued: &device,
        retired: None,
    };
    store.start_session(&session, &first, user, &device).await?;
    Ok(session.id)
}

#[tokio::test]
async fn the_cap_holds_against_a_stale_read() {
    use auth::store::MAX_REVOKED_SESSIONS;
    // The list as read has room for one; meanwhile another logout filled it.
    let store = fresh_store().await;
    let mut alice = user("alice");
    for i in 0..MAX_REVOKED_SESSIONS - 1 {
        alice.revoked_sessions.insert(format!("sid-{i}"), 9_000);
    }
    store.create(&alice).await.unwrap();
    let stale = alice.clone();
    let first = start_session(&store, &alice).await;
    store
        .revoke_sessions(&[&first], &alice, 9_500, 2_000)
        .await
        .unwrap();
    let full = store.get(&alice.username).await.unwrap().unwrap();
    assert_eq!(full.revoked_sessions.len(), MAX_REVOKED_SESSIONS);
    assert_eq!(full.session_epoch, alice.session_epoch);
    // A logout working from the stale read must not push the list past the cap:
    // the write itself checks, and the logout ends all sessions instead.
    let second = start_session(&store, &alice).await;
    store
        .revoke_sessions(&[&second], &stale, 9_500, 2_000)
        .await
        .unwrap();
    let stored = store.get(&alice.username).await.unwrap().unwrap();
    assert!(
        stored.revoked_sessions.len() <= MAX_REVOKED_SESSIONS,
        "{} entries",
        stored.revoked_sessions.len()
    );
    assert_eq!(stored.session_epoch, alice.session_epoch + 1);
    assert!(store.get_session(&second).await.unwrap().unwrap().revoked);
}

#[tokio::test]
async fn deactivation_ends_every_session_and_reactivation_revives_none() {
    let store = fresh_store().await;
    let alice = user("alice");
    store.create(&alice).await.unwrap();
    assert!(store.set_active(&alice, false).await.unwrap());
    let off = store.get(&alice.username).await.unwrap().unwrap();
    assert!(!off.active);
    assert_eq!(off.session_epoch, alice.session_epoch + 1);
    assert!(store.set_active(&alice, true).await.unwrap());
    let on = store.get(&alice.username).await.unwrap().unwrap();
    assert!(on.active);
    assert_eq!(
        on.session_epoch,
        alice.session_epoch + 1,
        "still the new epoch"
    );
}

#[tokio::test]
async fn the_warm_up_at_init_reads_nothing_writes_nothing_and_never_holds_init_long() {
    // Through a proxy that records each call: one read, of a key no item
    // has, and nothing else.
    let store = fresh_store().await;
    let proxy = crate::support::proxy::Proxy::to_dynamodb().await;
    let watched = Store::new(
        client_for(&proxy.endpoint, &sdk_settings()).await,
        store.table(),
    );
    watched.warm_up().await;
    assert_eq!(
        proxy.operations(),
        ["getitem"],
        "the warm-up makes one read"
    );
    let client = local_client().await;
    let scan = client
        .scan()
        .table_name(store.table())
        .send()
        .await
        .unwrap();
    assert_eq!(scan.count(), 0, "the warm-up wrote nothing");

    // A DynamoDB that accepts and never answers: the warm-up asks, waits its
    // bound, and init goes on.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noted = asked.clone();
    tokio::spawn(async move {
        let (mut socket, _) = silent.accept().await.unwrap();
        if read_http_request(&mut socket).await.is_some() {
            noted.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        // Hold the connection open, unanswered, until the test ends.
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        drop(socket);
    });
    let unreachable = Store::new(client_for(&endpoint, &sdk_settings()).await, "users");
    let started = std::time::Instant::now();
    unreachable.warm_up().await;
    let waited = started.elapsed();
    assert!(waited < std::time::Duration::from_secs(3), "{waited:?}");
    assert!(
        waited >= auth::store::WARM_UP_LIMIT - std::time::Duration::from_millis(50),
        "it gave up before its bound: {waited:?}"
    );
    assert!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        "the warm-up sent no request"
    );
}

/// Every item of the index of users by id (a test may scan).
async fn users_by_id_items(store: &Store) -> Vec<String> {
    let page = local_client()
        .await
        .scan()
        .table_name(store.table())
        .index_name(auth::store::USERS_BY_ID_INDEX)
        .send()
        .await
        .unwrap();
    assert!(page.last_evaluated_key().is_none());
    page.items()
        .iter()
        .map(|item| item["pk"].as_s().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn the_index_by_id_holds_users_alone_and_finds_each_by_its_id() {
    use crate::sessions::{do_refresh, session, user_in};
    let store = fresh_store().await;
    let app = App::new(&store);
    let alice = user_in(&store, "alice").await;
    let bob = user_in(&store, "bob").await;
    // Sessions, refresh tokens (rotated too), device proofs and attempt
    // records, all carrying a user's id or name.
    let tokens = session(&app, "alice").await;
    do_refresh(&app, &tokens.refresh).await;
    session(&app, "bob").await;
    crate::sessions::log_in(&app, "bob", "a wrong password").await;

    let mut indexed = users_by_id_items(&store).await;
    indexed.sort();
    assert_eq!(indexed, ["USER#alice", "USER#bob"]);
    for user in [&alice, &bob] {
        let found = store.get_by_id(user.id).await.unwrap().unwrap();
        assert_eq!(found.username, user.username);
    }
    assert_eq!(
        store
            .get_by_id(auth::users::UserId::random())
            .await
            .unwrap(),
        None
    );
    // An epoch bump (log out everywhere) moves the entry; still found.
    assert!(store.end_all_sessions(&alice).await.unwrap());
    assert_eq!(users_by_id_items(&store).await.len(), 2);
    assert!(store.get_by_id(alice.id).await.unwrap().is_some());
}
