//! Abuse resistance through the real handlers on DynamoDB Local: the lockout,
//! per-IP limits, and no enumeration (answers compared byte for byte, work
//! counted call by call).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;
use auth::clock::Clock;
use auth::handlers::login::{self, Login};
use auth::handlers::register;
use auth::store::Store;
use auth::throttle::RateLimits;
use aws_sdk_dynamodb::config::Intercept;
use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_smithy_types::config_bag::ConfigBag;
use lambda_http::{Body, Response};
use serde_json::json;

const PASSWORD: &str = "the right password";

/// Status, sorted headers and body.
fn snapshot(response: &Response<Body>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers: Vec<_> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (response.status().as_u16(), headers, body_bytes(response))
}

fn login_request(username: &str, password: &str, ip: &str) -> lambda_http::Request {
    let mut json: serde_json::Value = serde_json::from_str(&event_text("login.json")).unwrap();
    json["body"] = json!({"username": username, "password": password})
        .to_string()
        .into();
    json["requestContext"]["http"]["sourceIp"] = ip.into();
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

async fn attempt(state: &Login, username: &str, password: &str) -> Response<Body> {
    login::handle(state, login_request(username, password, "203.0.113.10")).await
}

async fn locked_app() -> (Store, Clock, Login) {
    let store = fresh_store().await;
    let clock = Clock::manual(auth::clock::system_now());
    let app = App::with_clock(&store, clock.clone());
    add_user(&store, "target", "Target", PASSWORD).await;
    (store, clock, app.login())
}

#[tokio::test]
async fn five_failures_lock_the_username_and_even_the_right_password_is_refused() {
    let (_, clock, state) = locked_app().await;
    for _ in 0..5 {
        assert_error(
            &attempt(&state, "target", "wrong guess").await,
            401,
            "login_failed",
        );
    }
    let locked = attempt(&state, "target", PASSWORD).await;
    assert_error(&locked, 429, "too_many_requests");
    assert_eq!(
        locked.headers()["retry-after"],
        "1",
        "2^(5-5) seconds after the fifth failure"
    );
    clock.advance(1);
    // The lock is over; the right password works and resets the count.
    assert_eq!(attempt(&state, "target", PASSWORD).await.status(), 200);
    for _ in 0..4 {
        assert_error(
            &attempt(&state, "target", "wrong guess").await,
            401,
            "login_failed",
        );
    }
    assert_eq!(
        attempt(&state, "target", PASSWORD).await.status(),
        200,
        "a success reset the count"
    );
}

#[tokio::test]
async fn the_window_doubles_with_each_failure_and_refused_attempts_do_not_count() {
    let (store, clock, state) = locked_app().await;
    let username = auth::users::Username::parse("target").unwrap();
    for _ in 0..5 {
        attempt(&state, "target", "wrong").await;
    }
    for expected_window in [1, 2, 4, 8] {
        // While locked, attempts are refused and not counted.
        let before = store.failures(&username).await.unwrap().unwrap().count;
        for _ in 0..3 {
            let refused = attempt(&state, "target", "wrong").await;
            assert_eq!(refused.status(), 429);
            assert_eq!(
                refused.headers()["retry-after"],
                expected_window.to_string()
            );
        }
        assert_eq!(
            store.failures(&username).await.unwrap().unwrap().count,
            before
        );
        clock.advance(expected_window);
        assert_eq!(attempt(&state, "target", "wrong").await.status(), 401);
    }
}

#[tokio::test]
async fn the_lock_is_capped_at_15_minutes_and_the_count_expires_on_read() {
    let (store, clock, state) = locked_app().await;
    let username = auth::users::Username::parse("target").unwrap();
    for _ in 0..5 {
        attempt(&state, "target", "wrong").await;
    }
    // Push the count far up, stepping over each window.
    for _ in 0..15 {
        clock.advance(900);
        attempt(&state, "target", "wrong").await;
    }
    let locked = attempt(&state, "target", "wrong").await;
    assert_eq!(locked.headers()["retry-after"], "900");
    // 30 minutes after the last failure the record is forgotten, whatever TTL has done.
    clock.advance(1_800);
    assert_eq!(attempt(&state, "target", PASSWORD).await.status(), 200);
    assert_eq!(store.failures(&username).await.unwrap(), None);
}

#[tokio::test]
async fn unknown_and_known_usernames_are_throttled_identically() {
    let (_, clock, state) = locked_app().await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for step in 0..9 {
        known.push(snapshot(&attempt(&state, "target", "wrong").await));
        unknown.push(snapshot(&attempt(&state, "no-such-user", "wrong").await));
        if step == 6 {
            clock.advance(2);
        }
    }
    assert_eq!(known, unknown);
    assert!(
        known.iter().any(|(status, _, _)| *status == 429),
        "the lock was reached"
    );
}

#[tokio::test]
async fn per_ip_limits_stop_one_source_only() {
    let store = fresh_store().await;
    // 1,800,000,000 s is a whole hour: the windows start with the test.
    let clock = Clock::manual(1_800_000_000);
    let app = App::with_clock(&store, clock.clone());
    let limits = RateLimits {
        login_per_minute: 3,
        register_per_hour: 2,
        ..auth::throttle::RateLimits::from_source(&|_: &str| None).unwrap()
    };
    let login = Login {
        limits: limits.clone(),
        ..app.login()
    };
    for i in 0..3 {
        let response = login::handle(
            &login,
            login_request(&format!("user-{i}"), "x", "198.51.100.7"),
        )
        .await;
        assert_eq!(response.status(), 401);
    }
    let limited = login::handle(&login, login_request("user-9", "x", "198.51.100.7")).await;
    assert_error(&limited, 429, "too_many_requests");
    assert_eq!(limited.headers()["retry-after"], "60");
    let other_source = login::handle(&login, login_request("user-9", "x", "198.51.100.8")).await;
    assert_eq!(other_source.status(), 401);
    clock.advance(60);
    assert_eq!(
        login::handle(&login, login_request("user-9", "x", "198.51.100.7"))
            .await
            .status(),
        401
    );

    let register = auth::handlers::register::Register {
        limits,
        ..app.register()
    };
    let registration = |n: usize| {
        let mut json: serde_json::Value =
            serde_json::from_str(&event_text("register.json")).unwrap();
        json["body"] = json!({"username": format!("taken-{n}"), "password": "p", "name": "N"})
            .to_string()
            .into();
        lambda_http::request::from_str(&json.to_string()).unwrap()
    };
    assert_eq!(
        register::handle(&register, registration(1)).await.status(),
        400
    );
    assert_eq!(
        register::handle(&register, registration(2)).await.status(),
        400
    );
    let limited = register::handle(&register, registration(3)).await;
    assert_error(&limited, 429, "too_many_requests");
    assert_eq!(
        limited.headers()["retry-after"],
        "3540",
        "the hour window that began before the minute passed"
    );
}

/// Counts DynamoDB operations (once each, retries aside).
#[derive(Debug, Clone, Default)]
struct CountCalls(Arc<AtomicUsize>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn every_path_that_answers_alike_does_the_same_work() {
    let base = fresh_store().await;
    let calls = CountCalls::default();
    let sdk = sdk_for(&required_env("DYNAMODB_TEST_ENDPOINT"), &sdk_settings()).await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(calls.clone())
            .build(),
    );
    let store = Store::new(client, base.table());
    add_user(&store, "known", "Known", PASSWORD).await;
    let inactive = add_user(&store, "sleeper", "Sleeper", PASSWORD).await;
    store.set_active(&inactive, false).await.unwrap();
    add_user(&store, "locked-known", "Locked", PASSWORD).await;
    let clock = Clock::manual(auth::clock::system_now());
    let state = App::with_clock(&store, clock).login();
    for name in ["locked-known", "locked-unknown"] {
        for _ in 0..5 {
            attempt(&state, name, "wrong").await;
        }
    }

    // (work, answer) of each path: work = (bcrypt verifications, DynamoDB calls).
    let mut measured = Vec::new();
    for (path, username, password) in [
        ("unknown user", "nobody-here", "wrong"),
        ("inactive user", "sleeper", PASSWORD),
        ("wrong password", "known", "wrong"),
        ("locked, known", "locked-known", PASSWORD),
        ("locked, unknown", "locked-unknown", PASSWORD),
        ("success", "known", PASSWORD),
    ] {
        let (verifications, dynamodb) = (
            state.passwords.verifications(),
            calls.0.load(Ordering::SeqCst),
        );
        let response = attempt(&state, username, password).await;
        let work = (
            state.passwords.verifications() - verifications,
            calls.0.load(Ordering::SeqCst) - dynamodb,
        );
        measured.push((path, work, snapshot(&response)));
    }
    for (path, work, (status, _, _)) in &measured {
        println!(
            "{path:16} verifications {} dynamodb calls {} -> {status}",
            work.0, work.1
        );
    }
    let answer = |i: usize| &measured[i].2;
    let work = |i: usize| measured[i].1;
    // Same answer, same work.
    assert_eq!(answer(0), answer(1));
    assert_eq!(answer(0), answer(2));
    assert_eq!(work(0), work(1));
    assert_eq!(work(0), work(2));
    assert_eq!(work(0).0, 1, "one full bcrypt verification");
    assert_eq!(answer(3), answer(4));
    assert_eq!(work(3), work(4));
    assert_eq!(work(3).0, 0, "a locked attempt verifies nothing");
    assert_eq!(answer(5).0, 200);
}
