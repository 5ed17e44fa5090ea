//! The security invariants under parallel requests, through the real handlers
//! on DynamoDB Local: many requests at once (bcrypt runs on the blocking pool,
//! in parallel; the DynamoDB calls interleave), then the store and the answers
//! are checked. Each test here failed before its invariant was built.

use std::time::Duration;

use crate::sessions::{
    PASSWORD, Tokens, assert_works, do_change, do_logout, do_refresh, log_in, name_with, session,
    user_in,
};
use crate::support::*;
use auth::clock::Clock;
use auth::handlers::account::Account;
use auth::handlers::change_password;
use auth::handlers::login::{self, Login};
use auth::handlers::{logout, refresh};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::sessions::SessionConfig;
use auth::store::Store;
use auth::throttle::RateLimits;
use auth::users::Username;
use futures_util::future::join_all;
use lambda_http::{Body, Response};
use serde_json::json;

const RACERS: usize = 30;

fn statuses(responses: &[Response<Body>]) -> Vec<u16> {
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    statuses
}

fn login_body(username: &str, password: &str) -> String {
    json!({"username": username, "password": password}).to_string()
}

/// A clock that stands still: no lock window passes during the race.
fn still_app(store: &Store) -> App {
    App::with_clock(store, Clock::manual(auth::clock::system_now()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_parallel_wrong_logins_get_five_bcrypt_verifications_known_or_unknown() {
    let store = fresh_store().await;
    user_in(&store, "target").await;
    let app = still_app(&store);
    let mut answers = Vec::new();
    for username in ["target", "nobody-by-this-name"] {
        let state = app.login();
        let body = login_body(username, "a wrong guess");
        let responses = join_all(
            (0..RACERS).map(|_| login::handle(&state, request("login.json", None, Some(&body)))),
        )
        .await;
        assert_eq!(
            state.passwords.verifications(),
            5,
            "{username}: the sequential schedule allows 5 before the lock"
        );
        let mut expected = vec![401; 5];
        expected.extend(vec![429; RACERS - 5]);
        assert_eq!(statuses(&responses), expected, "{username}");
        let mut bodies: Vec<Vec<u8>> = responses.iter().map(body_bytes).collect();
        bodies.sort();
        answers.push(bodies);
        let record = store
            .failures(&Username::parse(username).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.count, 5, "refused attempts are not counted");
    }
    assert_eq!(answers[0], answers[1], "known and unknown answer alike");
    // Locked now: even the right password is refused without a verification.
    let state = app.login();
    let response = login::handle(
        &state,
        request("login.json", None, Some(&login_body("target", PASSWORD))),
    )
    .await;
    assert_error(&response, 429, "too_many_requests");
    assert_eq!(state.passwords.verifications(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_parallel_wrong_password_changes_get_five_verifications_and_then_the_lock() {
    let store = fresh_store().await;
    user_in(&store, "victim").await;
    let app = still_app(&store);
    // The attacker holds a stolen access token, not the password.
    let stolen = session(&app, "victim").await;
    let state = app.account();
    let body = json!({"current_password": "a wrong guess", "new_password": "attacker-chosen-1"})
        .to_string();
    let auth = bearer(&stolen.access);
    let responses = join_all((0..RACERS).map(|_| {
        change_password::handle(&state, request("password.json", Some(&auth), Some(&body)))
    }))
    .await;
    assert_eq!(state.passwords.verifications(), 5);
    let mut expected = vec![401; 5];
    expected.extend(vec![429; RACERS - 5]);
    assert_eq!(statuses(&responses), expected);
    // The right guess is refused too while locked: no password change.
    let right = do_change(&app, &stolen.access, PASSWORD, "attacker-chosen-1").await;
    assert_error(&right, 429, "too_many_requests");
    // And the lock is the username's: a login is locked as well.
    assert_error(
        &log_in(&app, "victim", PASSWORD).await,
        429,
        "too_many_requests",
    );
    assert_works(&name_with(&app, &stolen.access).await);
}

#[tokio::test]
async fn wrong_current_passwords_lock_the_account_as_failed_logins_do() {
    // The measured hole: 8 wrong guesses through /password, then the right one: 200.
    let store = fresh_store().await;
    user_in(&store, "owner").await;
    let app = still_app(&store);
    let stolen = session(&app, "owner").await;
    for _ in 0..5 {
        let response = do_change(&app, &stolen.access, "a wrong guess", "attacker-chosen-1").await;
        assert_error(&response, 401, "login_failed");
    }
    for _ in 0..3 {
        let response = do_change(&app, &stolen.access, "a wrong guess", "attacker-chosen-1").await;
        assert_error(&response, 429, "too_many_requests");
    }
    let response = do_change(&app, &stolen.access, PASSWORD, "attacker-chosen-1").await;
    assert_error(&response, 429, "too_many_requests");
    // A success clears the count, as at login.
    app.clock.advance(1);
    assert_works(&do_change(&app, &stolen.access, PASSWORD, "owner-chosen-22").await);
    let record = store
        .failures(&Username::parse("owner").unwrap())
        .await
        .unwrap();
    assert_eq!(record, None);
}

#[tokio::test]
async fn password_changes_count_against_the_per_ip_login_window() {
    let store = fresh_store().await;
    user_in(&store, "windowed").await;
    let app = still_app(&store);
    let tokens = session(&app, "windowed").await;
    // The login above counted once in this source's window; three more fit.
    let state = Account {
        limits: RateLimits {
            login_per_minute: 4,
            register_per_hour: 100,
        },
        ..app.account()
    };
    let body = json!({"current_password": "wrong", "new_password": "a new passphrase"}).to_string();
    let auth = bearer(&tokens.access);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let response =
            change_password::handle(&state, request("password.json", Some(&auth), Some(&body)))
                .await;
        seen.push(response.status().as_u16());
    }
    assert_eq!(seen, [401, 401, 401, 429]);
    assert_eq!(state.passwords.verifications(), 3);
}

#[tokio::test]
async fn deactivation_ends_every_session_and_reactivation_revives_none() {
    let store = fresh_store().await;
    let user = user_in(&store, "paused").await;
    let app = App::new(&store);
    let tokens = session(&app, "paused").await;
    assert!(store.set_active(&user, false).await.unwrap());
    assert!(store.set_active(&user, true).await.unwrap());
    assert_error(&name_with(&app, &tokens.access).await, 401, "invalid_token");
    assert_error(
        &do_refresh(&app, &tokens.refresh).await,
        401,
        "invalid_grant",
    );
    // A new login works.
    assert_works(&name_with(&app, &session(&app, "paused").await.access).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_refreshes_of_one_token_at_once_one_wins_the_rest_get_401_never_a_5xx() {
    let store = fresh_store().await;
    user_in(&store, "twice").await;
    let app = App::new(&store);
    for round in 0..5 {
        let tokens = session(&app, "twice").await;
        let state = app.refresh();
        let body = json!({"refresh_token": tokens.refresh}).to_string();
        let responses = join_all(
            (0..2 + round * 2)
                .map(|_| refresh::handle(&state, request("refresh.json", None, Some(&body)))),
        )
        .await;
        let statuses = statuses(&responses);
        assert_eq!(statuses[0], 200, "{statuses:?}");
        assert!(statuses[1..].iter().all(|s| *s == 401), "{statuses:?}");
        let winner = responses.iter().find(|r| r.status() == 200).unwrap();
        // The winner's token carries on: the family has one live token.
        assert_works(&do_refresh(&app, &Tokens::from(winner).refresh).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_racing_refresh_leaves_no_live_token_of_the_session() {
    let store = fresh_store().await;
    user_in(&store, "leaving").await;
    let app = App::new(&store);
    for _ in 0..8 {
        let tokens = session(&app, "leaving").await;
        let body = json!({"refresh_token": tokens.refresh}).to_string();
        let state = app.refresh();
        let (out, refreshed) = tokio::join!(
            do_logout(&app, &tokens.access, None),
            refresh::handle(&state, request("refresh.json", None, Some(&body)))
        );
        assert_works(&out);
        assert!(
            [200, 401].contains(&refreshed.status().as_u16()),
            "{}",
            refreshed.status()
        );
        if refreshed.status() == 200 {
            let successor = Tokens::from(&refreshed);
            assert_error(
                &name_with(&app, &successor.access).await,
                401,
                "invalid_token",
            );
            assert_error(
                &do_refresh(&app, &successor.refresh).await,
                401,
                "invalid_grant",
            );
        }
        assert_error(&name_with(&app, &tokens.access).await, 401, "invalid_token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_change_racing_log_out_everywhere_hands_out_no_dead_tokens() {
    let store = fresh_store().await;
    user_in(&store, "racing").await;
    let app = App::new(&store);
    let tokens = session(&app, "racing").await;
    // The change reads the user, then spends two bcrypt runs; "log out
    // everywhere" lands in between.
    let change = do_change(&app, &tokens.access, PASSWORD, "a brand new passphrase");
    let everywhere = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        do_logout(&app, &tokens.access, Some(r#"{"all": true}"#)).await
    };
    let (changed, out) = tokio::join!(change, everywhere);
    assert_works(&out);
    // The change must not succeed on a session that ended meanwhile.
    assert_error(&changed, 401, "invalid_token");
    // And the password is as it was.
    assert_works(&log_in(&app, "racing", PASSWORD).await);
    assert_error(
        &log_in(&app, "racing", "a brand new passphrase").await,
        401,
        "login_failed",
    );
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_often_it_is_refreshed() {
    let store = fresh_store().await;
    user_in(&store, "forever").await;
    let clock = Clock::manual(auth::clock::system_now());
    let mut app = App::with_clock(&store, clock.clone());
    app.sessions = SessionConfig {
        refresh_ttl: Duration::from_secs(60),
        reuse_grace: Duration::from_secs(0),
        max_lifetime: Duration::from_secs(150),
    };
    let mut tokens = Tokens::from(&log_in(&app, "forever", PASSWORD).await);
    let mut lifetimes = Vec::new();
    for _ in 0..2 {
        clock.advance(50);
        let response = do_refresh(&app, &tokens.refresh).await;
        lifetimes.push(body_json(&response)["refresh_expires_in"].as_u64().unwrap());
        tokens = Tokens::from(&response);
    }
    assert_eq!(
        lifetimes,
        [60, 50],
        "the second successor ends with the session"
    );
    clock.advance(50);
    assert_error(
        &do_refresh(&app, &tokens.refresh).await,
        401,
        "invalid_grant",
    );
}

#[tokio::test]
async fn after_a_cost_increase_a_cheaper_stored_hash_costs_a_failed_login_the_same_work() {
    let store = fresh_store().await;
    user_in(&store, "older").await; // hashed at cost 10
    let app = App::new(&store);
    let stronger = Login {
        passwords: PasswordHasher::new(BcryptCost::new(11).unwrap()),
        ..app.login()
    };
    let mut work = Vec::new();
    for username in ["older", "no-such-person"] {
        let before = stronger.passwords.work();
        let response = login::handle(
            &stronger,
            request(
                "login.json",
                None,
                Some(&login_body(username, "wrong guess")),
            ),
        )
        .await;
        assert_error(&response, 401, "login_failed");
        work.push(stronger.passwords.work() - before);
    }
    assert_eq!(work, [1 << 11, 1 << 11], "2^10 + 2^10 padding = 2^11");
}

#[tokio::test]
async fn logout_of_another_session_ends_its_access_tokens_at_once() {
    let store = fresh_store().await;
    user_in(&store, "two-devices").await;
    let app = App::new(&store);
    let phone = session(&app, "two-devices").await;
    let laptop = session(&app, "two-devices").await;
    let body = json!({"refresh_token": laptop.refresh}).to_string();
    assert_works(&do_logout(&app, &phone.access, Some(&body)).await);
    assert_error(&name_with(&app, &laptop.access).await, 401, "invalid_token");
    let state = app.logout();
    let again = logout::handle(
        &state,
        request("logout.json", Some(&bearer(&laptop.access)), None),
    )
    .await;
    assert_error(&again, 401, "invalid_token");
}
