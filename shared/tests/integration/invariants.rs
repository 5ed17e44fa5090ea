//! The security invariants under parallel requests, through the real handlers
//! on DynamoDB Local: racers on tasks of their own, each with its own client
//! and a clock up to a second apart from the others' (`support::race`),
//! released together; then the store and the answers are checked. Where a
//! race has an interesting branch, a round forces it through the racers'
//! proxies (a call held until the other racer has written), and
//! free-running rounds report which branches they reached. Each test here
//! failed before its invariant was built.

use std::time::Duration;

use crate::sessions::{
    PASSWORD, Tokens, assert_works, do_change, do_logout, do_refresh, log_in, name_with, session,
    user_in,
};
use crate::support::proxy::{Call, Fault, Gate, Proxy, order_writes};
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
use lambda_http::{Body, Request, Response};
use serde_json::json;
use std::collections::BTreeSet;

const RACERS: usize = 30;

/// Each distinct answer body, by status: what a prober can tell apart.
fn distinct_answers(responses: &[Response<Body>]) -> BTreeSet<(u16, Vec<u8>)> {
    responses
        .iter()
        .map(|r| (r.status().as_u16(), body_bytes(r)))
        .collect()
}

/// Each login state's request with `body`, racing the others'.
async fn race_logins(states: Vec<Login>, body: &str) -> Vec<Response<Body>> {
    race(
        states
            .into_iter()
            .map(|state| {
                let req = request("login.json", None, Some(body));
                racing(async move { login::handle(&state, req).await })
            })
            .collect(),
    )
    .await
}

/// Bcrypt runs a lockout allows racers whose clocks are up to a second
/// apart: five, and one more when the writer of the fifth attempt's clock
/// is a second behind another racer's (the first lock window is 1 s, "as the
/// writers' clocks measure it"). Fewer than five would be a false lock.
const SKEWED_SCHEDULE: std::ops::RangeInclusive<u64> = 5..=6;

/// The racers' logins (or password changes) return `responses`, and their
/// hashers did `verified` bcrypt runs: each run a 401, every other answer
/// a 429.
fn assert_lockout_schedule(what: &str, verified: u64, responses: &[Response<Body>]) {
    assert!(
        SKEWED_SCHEDULE.contains(&verified),
        "{what}: {verified} verifications"
    );
    let mut expected = vec![401; verified as usize];
    expected.extend(vec![429; responses.len() - verified as usize]);
    assert_eq!(statuses(responses), expected, "{what}");
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
        let states: Vec<Login> = app.racers(RACERS).await.iter().map(App::login).collect();
        let hashers: Vec<PasswordHasher> = states.iter().map(|s| s.passwords.clone()).collect();
        let body = login_body(username, "a wrong guess");
        let responses = race_logins(states, &body).await;
        let verified: u64 = hashers.iter().map(PasswordHasher::verifications).sum();
        println!("{username}: {verified} verifications");
        assert_lockout_schedule(username, verified, &responses);
        answers.push(distinct_answers(&responses));
        let record = store
            .failures(&Username::parse(username).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.count, verified, "refused attempts are not counted");
    }
    assert_eq!(answers[0], answers[1], "known and unknown answer alike");
    assert_eq!(answers[0].len(), 2, "one 401 body and one 429 body");
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

/// Fewer wrong guesses than the lock allows, from instances whose clocks
/// are a second apart, are all verified: no false lock. Forced: the attempt
/// of the instance whose clock is behind is reserved after the one ahead
/// counted its own (a record under five attempts ends its "lock" the second
/// it was counted, which is in the future for the clock behind); then free
/// rounds of four.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_under_the_lock_from_clocks_a_second_apart_are_never_refused() {
    let store = fresh_store().await;
    let app = still_app(&store);
    user_in(&store, "skewed").await;
    let (ahead_proxy, behind_proxy) = (Proxy::to_dynamodb().await, Proxy::to_dynamodb().await);
    let counted = Gate::default();
    // Login's 1st UpdateItem counts its source's window; its 2nd reserves.
    let reservation = Call::Nth("updateitem", 2);
    ahead_proxy.open_after(reservation.clone(), &counted);
    behind_proxy.hold_until(reservation, &counted);
    let behind = app.racer(0, 2, Some(&behind_proxy)).await;
    let ahead = app.racer(1, 2, Some(&ahead_proxy)).await;
    assert_eq!(ahead.clock.now(), behind.clock.now() + 1);
    let body = login_body("skewed", "a wrong guess");
    let responses = race_logins(vec![behind.login(), ahead.login()], &body).await;
    assert!(counted.is_open(), "the forced order did not happen");
    assert_eq!(statuses(&responses), [401, 401]);
    for round in 0..4 {
        let username = format!("skewed-{round}");
        let body = login_body(&username, "a wrong guess");
        let states = app.racers(4).await.iter().map(App::login).collect();
        let responses = race_logins(states, &body).await;
        assert_eq!(statuses(&responses), [401; 4], "round {round}");
        let name = Username::parse(&username).unwrap();
        assert_eq!(store.failures(&name).await.unwrap().unwrap().count, 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_parallel_wrong_password_changes_get_five_verifications_and_then_the_lock() {
    let store = fresh_store().await;
    user_in(&store, "victim").await;
    let app = still_app(&store);
    // The attacker holds a stolen access token, not the password.
    let stolen = session(&app, "victim").await;
    let states: Vec<Account> = app.racers(RACERS).await.iter().map(App::account).collect();
    let hashers: Vec<PasswordHasher> = states.iter().map(|s| s.passwords.clone()).collect();
    let body = json!({"current_password": "a wrong guess", "new_password": "attacker-chosen-1"})
        .to_string();
    let auth = bearer(&stolen.access);
    let responses = race(
        states
            .into_iter()
            .map(|state| {
                let req = request("password.json", Some(&auth), Some(&body));
                racing(async move { change_password::handle(&state, req).await })
            })
            .collect(),
    )
    .await;
    let verified: u64 = hashers.iter().map(PasswordHasher::verifications).sum();
    assert_lockout_schedule("password changes", verified, &responses);
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
            ..auth::throttle::RateLimits::from_source(&|_: &str| None).unwrap()
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
    let mut outcomes = Outcomes::default();
    for round in 0..5 {
        let tokens = session(&app, "twice").await;
        let body = json!({"refresh_token": tokens.refresh}).to_string();
        let racers = app.racers(2 + round * 2).await;
        let responses = race(
            racers
                .iter()
                .map(|racer| {
                    let state = racer.refresh();
                    let req = request("refresh.json", None, Some(&body));
                    racing(async move { refresh::handle(&state, req).await })
                })
                .collect(),
        )
        .await;
        let statuses = statuses(&responses);
        assert_eq!(statuses[0], 200, "{statuses:?}");
        // A loser lost to the winner (superseded) or, contended past its
        // retries before anyone won, was told to try again (409).
        for loser in responses.iter().filter(|r| r.status() != 200) {
            let code = body_json(loser)["error"].as_str().unwrap().to_owned();
            match loser.status().as_u16() {
                401 => assert_error(loser, 401, "refresh_token_superseded"),
                _ => assert_error(loser, 409, "conflict"),
            };
            outcomes.count(code);
        }
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1);
        let winner = responses.iter().find(|r| r.status() == 200).unwrap();
        // The winner's token carries on: the family has one live token.
        assert_works(&do_refresh(&app, &Tokens::from(winner).refresh).await);
    }
    outcomes.report("two_refreshes_of_one_token_at_once");
}

/// A logout and a refresh of the same session (`logout_racing_refresh`).
async fn logout_racing_refresh(app: &App, order: Option<WriteFirst>) -> String {
    let tokens = session(app, "leaving").await;
    let out_request = request("logout.json", Some(&bearer(&tokens.access)), None);
    end_racing_refresh(app, &tokens, out_request, order).await
}

/// A request that ends `victim`'s session (`end`: a logout, or the end of
/// it from another session) and a refresh of that session, each a racer
/// with a proxy of its own; `order` steers their writes (`None`:
/// free-running). Returns the refresh's answer (its error code, or "200")
/// after checking that the end worked and no token of the session works
/// afterwards, whatever won.
pub(crate) async fn end_racing_refresh(
    app: &App,
    victim: &Tokens,
    end: Request,
    order: Option<WriteFirst>,
) -> String {
    let (end_proxy, refresh_proxy) = (Proxy::to_dynamodb().await, Proxy::to_dynamodb().await);
    let write = Call::Nth("transactwriteitems", 1);
    let written = match order {
        // The refresh has read the session (live) and reached its write;
        // the end commits; then the rotation.
        Some(WriteFirst::End) => order_writes(&end_proxy, write.clone(), &refresh_proxy, write),
        // The rotation commits, then the end.
        Some(WriteFirst::Refresh) => order_writes(&refresh_proxy, write.clone(), &end_proxy, write),
        None => Gate::default(),
    };
    let ender = app.racer(0, 2, Some(&end_proxy)).await;
    let refresher = app.racer(1, 2, Some(&refresh_proxy)).await;
    let refresh_request = request(
        "refresh.json",
        None,
        Some(&json!({"refresh_token": victim.refresh}).to_string()),
    );
    let [ended, refreshed] = race(vec![
        racing(async move { logout::handle(&ender.logout(), end).await }),
        racing(async move { refresh::handle(&refresher.refresh(), refresh_request).await }),
    ])
    .await
    .try_into()
    .unwrap();
    if order.is_some() {
        assert!(written.is_open(), "the forced order did not happen");
    }
    assert_works(&ended);
    let outcome = match refreshed.status().as_u16() {
        200 => {
            let successor = Tokens::from(&refreshed);
            assert_error(
                &name_with(app, &successor.access).await,
                401,
                "invalid_token",
            );
            assert_error(
                &do_refresh(app, &successor.refresh).await,
                401,
                "invalid_grant",
            );
            "200".to_owned()
        }
        // Contended past its retries before either won: try again (409),
        // only where DynamoDB decides the order.
        409 if order.is_none() => assert_error(&refreshed, 409, "conflict")["error"].to_string(),
        _ => assert_error(&refreshed, 401, "invalid_grant")["error"].to_string(),
    };
    assert_error(&name_with(app, &victim.access).await, 401, "invalid_token");
    outcome
}

/// Whose write commits first, in a forced round.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WriteFirst {
    End,
    Refresh,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_racing_refresh_leaves_no_live_token_of_the_session() {
    let store = fresh_store().await;
    user_in(&store, "leaving").await;
    let app = App::new(&store);
    // The refresh read a live session, then the logout ended it before the
    // rotation: the rotation's condition refuses it.
    assert_eq!(
        logout_racing_refresh(&app, Some(WriteFirst::End)).await,
        r#""invalid_grant""#
    );
    // The rotation landed first: its successor dies with the logout.
    assert_eq!(
        logout_racing_refresh(&app, Some(WriteFirst::Refresh)).await,
        "200"
    );
    let mut outcomes = Outcomes::default();
    for _ in 0..6 {
        outcomes.count(logout_racing_refresh(&app, None).await);
    }
    outcomes.report("logout_racing_refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_change_racing_log_out_everywhere_hands_out_no_dead_tokens() {
    let store = fresh_store().await;
    user_in(&store, "racing").await;
    let app = App::new(&store);

    // "Log out everywhere" lands after the change read the user and proved
    // the password, before its write: the change must not succeed on a
    // session that ended meanwhile, and the password is as it was.
    let tokens = session(&app, "racing").await;
    let (change_proxy, out_proxy) = (Proxy::to_dynamodb().await, Proxy::to_dynamodb().await);
    let ended = order_writes(
        &out_proxy,
        Call::Nth("updateitem", 1),
        &change_proxy,
        Call::Nth("transactwriteitems", 1),
    );
    let [changed, out] = change_racing_everywhere(&app, &tokens, &change_proxy, &out_proxy).await;
    assert!(ended.is_open(), "the forced order did not happen");
    assert_works(&out);
    assert_error(&changed, 401, "invalid_token");
    assert_works(&log_in(&app, "racing", PASSWORD).await);
    assert_error(
        &log_in(&app, "racing", "a brand new passphrase").await,
        401,
        "login_failed",
    );

    // The change lands first: "log out everywhere" with the old token is
    // refused (the change moved the epoch on), and the change's own tokens
    // are the live ones.
    let tokens = session(&app, "racing").await;
    let (change_proxy, out_proxy) = (Proxy::to_dynamodb().await, Proxy::to_dynamodb().await);
    let changed_gate = Gate::default();
    change_proxy.open_after(Call::Nth("transactwriteitems", 1), &changed_gate);
    out_proxy.hold_until(Call::Nth("getitem", 1), &changed_gate);
    let [changed, out] = change_racing_everywhere(&app, &tokens, &change_proxy, &out_proxy).await;
    assert!(changed_gate.is_open(), "the forced order did not happen");
    assert_error(&out, 401, "invalid_token");
    let fresh = Tokens::from(&changed);
    assert_works(&name_with(&app, &fresh.access).await);
    assert_works(&do_refresh(&app, &fresh.refresh).await);
    assert_error(&name_with(&app, &tokens.access).await, 401, "invalid_token");
    assert_works(&log_in(&app, "racing", "a brand new passphrase").await);
}

/// A password change (to "a brand new passphrase") and "log out everywhere"
/// with the same session's token, racing through their proxies; their
/// answers, in that order.
async fn change_racing_everywhere(
    app: &App,
    tokens: &Tokens,
    change_proxy: &Proxy,
    out_proxy: &Proxy,
) -> [Response<Body>; 2] {
    let changer = app.racer(0, 2, Some(change_proxy)).await;
    let out = app.racer(1, 2, Some(out_proxy)).await;
    let change_body =
        json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    let change_request = request(
        "password.json",
        Some(&bearer(&tokens.access)),
        Some(&change_body.to_string()),
    );
    let out_request = request(
        "logout.json",
        Some(&bearer(&tokens.access)),
        Some(r#"{"all": true}"#),
    );
    race(vec![
        racing(async move { change_password::handle(&changer.account(), change_request).await }),
        racing(async move { logout::handle(&out.logout(), out_request).await }),
    ])
    .await
    .try_into()
    .unwrap()
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
        device_ttl: auth::sessions::DEFAULT_DEVICE_TTL,
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

/// A reservation that meets a running transaction on the attempt record
/// (DynamoDB's `TransactionConflictException`: a success clearing it at that
/// moment) wrote nothing: it reads the record again and tries once more, and
/// the attempt is counted once.
#[tokio::test]
async fn a_reservation_that_meets_a_transaction_reads_again_and_counts_once() {
    let store = fresh_store().await;
    user_in(&store, "conflicted").await;
    let app = App::new(&store);
    // Login's 1st UpdateItem counts its source's window; its 2nd reserves.
    let reservation = Call::Nth("updateitem", 2);
    for (password, status) in [("a wrong guess", 401), (PASSWORD, 200)] {
        let proxy = Proxy::to_dynamodb().await;
        proxy.fail(reservation.clone(), Fault::Conflicting);
        let racer = app.racer(0, 1, Some(&proxy)).await;
        let state = racer.login();
        let response = login::handle(
            &state,
            request(
                "login.json",
                None,
                Some(&login_body("conflicted", password)),
            ),
        )
        .await;
        proxy.assert_fired(&reservation, Fault::Conflicting);
        assert_eq!(response.status(), status, "{}", body_json(&response));
        assert_eq!(state.passwords.verifications(), 1);
        let record = store
            .failures(&Username::parse("conflicted").unwrap())
            .await
            .unwrap();
        assert_eq!(
            record.map(|r| r.count),
            (status == 401).then_some(1),
            "counted once; cleared by the success"
        );
        // The reservation was tried again as an operation of its own.
        let updates = proxy
            .operations()
            .iter()
            .filter(|t| *t == "updateitem")
            .count();
        assert!(updates >= 3, "{:?}", proxy.operations());
    }
}
