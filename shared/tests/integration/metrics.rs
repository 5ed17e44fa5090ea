//! Operations metrics as the real handlers write them, on DynamoDB Local: each
//! outcome writes its one EMF line (valid as CloudWatch reads it: `_aws` and
//! the values at the top level, unit Count, the dimensions' values present),
//! and nothing else writes one.

use crate::sessions::*;
use crate::support::*;
use auth::clock::Clock;
use auth::handlers::{login, register};
use auth::metrics::{self, Capture, check_emf};
use auth::throttle::RateLimits;
use serde_json::json;

/// The metric names of the lines captured since the last call, in order.
fn emitted(capture: &Capture) -> Vec<String> {
    capture
        .take()
        .iter()
        .map(|line| {
            let names = check_emf(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(line["level"], "INFO", "{line}");
            assert!(line.get("fields").is_none(), "{line}");
            names.join("+")
        })
        .collect()
}

#[tokio::test]
async fn each_outcome_writes_its_one_metric_line() {
    let store = fresh_store().await;
    let clock = Clock::manual(auth::clock::system_now());
    let app = App::with_clock(&store, clock.clone());
    let capture = metrics::capture();

    let body = json!({"username": "metered", "password": PASSWORD, "name": "Metered"}).to_string();
    let created =
        register::handle(&app.register(), request("register.json", None, Some(&body))).await;
    assert_eq!(created.status(), 201);
    assert_eq!(emitted(&capture), ["Registrations"]);

    // A lost condition (the name is taken) is no dependency's trouble.
    let again =
        register::handle(&app.register(), request("register.json", None, Some(&body))).await;
    assert_eq!(again.status(), 409);
    assert!(
        emitted(&capture).is_empty(),
        "a conditional write that fails is not counted"
    );

    let first = Tokens::from(&log_in(&app, "metered", PASSWORD).await);
    assert_eq!(emitted(&capture), ["LoginSucceeded"]);

    assert_error(
        &log_in(&app, "metered", "a wrong password").await,
        401,
        "login_failed",
    );
    assert_eq!(emitted(&capture), ["LoginFailed"]);

    Tokens::from(&do_refresh(&app, &first.refresh).await);
    assert_eq!(emitted(&capture), ["Refreshes"]);

    // Presented again within the grace period: superseded, nothing revoked.
    assert_error(
        &do_refresh(&app, &first.refresh).await,
        401,
        "refresh_token_superseded",
    );
    assert_eq!(emitted(&capture), ["RefreshSuperseded"]);

    let third = session(&app, "metered").await;
    capture.take();
    let changed = do_change(&app, &third.access, PASSWORD, "metered anew 2026").await;
    assert_eq!(changed.status(), 200);
    assert_eq!(emitted(&capture), ["PasswordChanges"]);

    let fourth = Tokens::from(&changed);
    assert_eq!(do_logout(&app, &fourth.access, None).await.status(), 200);
    assert_eq!(emitted(&capture), ["Logouts"]);

    // After the grace period: reuse, the session revoked.
    let fifth = Tokens::from(&log_in(&app, "metered", "metered anew 2026").await);
    let sixth = Tokens::from(&do_refresh(&app, &fifth.refresh).await);
    capture.take();
    clock.advance(11);
    assert_error(
        &do_refresh(&app, &fifth.refresh).await,
        401,
        "invalid_grant",
    );
    assert_eq!(emitted(&capture), ["RefreshReuseDetected"]);
    assert_error(
        &do_refresh(&app, &sixth.refresh).await,
        401,
        "invalid_grant",
    );
    assert!(
        emitted(&capture).is_empty(),
        "a dead token is no event of its own"
    );
}

#[tokio::test]
async fn lockouts_and_per_ip_refusals_are_counted_apart() {
    let store = fresh_store().await;
    // A clock that stands still: the lock (1 s after the fifth failure) is
    // still on at the sixth attempt, however slow the machine.
    let app = App::with_clock(&store, Clock::manual(auth::clock::system_now()));
    user_in(&store, "locked-out").await;
    let capture = metrics::capture();
    for _ in 0..5 {
        assert_error(
            &log_in(&app, "locked-out", "a wrong guess").await,
            401,
            "login_failed",
        );
    }
    assert_eq!(emitted(&capture), ["LoginFailed"; 5]);
    assert_error(
        &log_in(&app, "locked-out", PASSWORD).await,
        429,
        "too_many_requests",
    );
    assert_eq!(emitted(&capture), ["Lockouts"]);

    // One login a minute from this address (of a table of its own): the
    // second is refused before any work.
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(auth::clock::system_now()));
    let tight = login::Login {
        limits: RateLimits {
            login_per_minute: 1,
            register_per_hour: 1,
            ..auth::throttle::RateLimits::from_source(&|_: &str| None).unwrap()
        },
        ..app.login()
    };
    user_in(&store, "behind-nat").await;
    let body = json!({"username": "behind-nat", "password": PASSWORD}).to_string();
    let first = login::handle(&tight, request("login.json", None, Some(&body))).await;
    assert_eq!(first.status(), 200);
    let refused = login::handle(&tight, request("login.json", None, Some(&body))).await;
    assert_error(&refused, 429, "too_many_requests");
    assert_eq!(emitted(&capture), ["LoginSucceeded", "IpRateLimited"]);
}

#[test]
fn the_code_names_each_metric_once() {
    let names = metrics::metric_names();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
}
