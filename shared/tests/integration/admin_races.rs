//! An admin's deactivation or "end every session" racing the requests it
//! must end: a refresh, a login and a password change of the user, each
//! racer through a proxy of its own. Each order is forced: the other request
//! read the user before the admin's write and writes after it (it must
//! lose), or it wrote first (what it won must die with the admin's act).
//! Then free-running rounds, whose outcomes are printed.

use crate::admin::call;
use crate::permissions::admin_in;
use crate::sessions::*;
use crate::support::proxy::{Call, Gate, Proxy, order_writes};
use crate::support::*;
use auth::users::Username;
use lambda_http::http::Method;
use lambda_http::{Body, Response};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Deactivate,
    EndSessions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Other {
    Refresh,
    Login,
    ChangePassword,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// The other request read the user, then the admin's write, then its own.
    AdminFirst,
    /// The other request's write, then the admin's.
    OtherFirst,
    Free,
}

const NEW_PASSWORD: &str = "the user's next passphrase";

/// One round on a fresh user `username`; returns the other request's
/// answer (status and code) after checking what each order must leave.
async fn round(
    app: &App,
    admin_access: &str,
    username: &str,
    act: Act,
    other: Other,
    order: Order,
) -> String {
    user_in(&app.store, username).await;
    let tokens = session(app, username).await;
    let (admin_proxy, other_proxy) = (Proxy::to_dynamodb().await, Proxy::to_dynamodb().await);
    // The admin's write is its first UpdateItem; the other's, its first
    // transaction (a refresh's rotation, a login's session, the change).
    let admin_write = Call::Nth("updateitem", 1);
    let other_write = Call::Nth("transactwriteitems", 1);
    let written = match order {
        Order::AdminFirst => order_writes(&admin_proxy, admin_write, &other_proxy, other_write),
        Order::OtherFirst => order_writes(&other_proxy, other_write, &admin_proxy, admin_write),
        Order::Free => Gate::default(),
    };
    let admin = app.racer(0, 2, Some(&admin_proxy)).await;
    let racer = app.racer(1, 2, Some(&other_proxy)).await;
    let (method, path, body) = match act {
        Act::Deactivate => (
            Method::PATCH,
            format!("/admin/users/{username}"),
            Some(r#"{"active": false}"#),
        ),
        Act::EndSessions => (
            Method::DELETE,
            format!("/admin/users/{username}/sessions"),
            None,
        ),
    };
    let admin_access = admin_access.to_owned();
    let (name, refresh, access) = (
        username.to_owned(),
        tokens.refresh.clone(),
        tokens.access.clone(),
    );
    let [acted, answer] = <[Response<Body>; 2]>::try_from(
        race(vec![
            racing(async move { call(&admin.admin(), &admin_access, method, &path, body).await }),
            racing(async move {
                match other {
                    Other::Refresh => do_refresh(&racer, &refresh).await,
                    Other::Login => log_in(&racer, &name, PASSWORD).await,
                    Other::ChangePassword => {
                        do_change(&racer, &access, PASSWORD, NEW_PASSWORD).await
                    }
                }
            }),
        ])
        .await,
    )
    .unwrap_or_else(|_| unreachable!("two racers"));
    if order != Order::Free {
        assert!(
            written.is_open(),
            "{act:?} {other:?} {order:?}: the forced order did not happen"
        );
    }
    assert_works(&acted);
    let label = format!("{act:?} {other:?} {order:?}");
    let outcome = if answer.status() == 200 {
        "200".to_owned()
    } else {
        format!(
            "{} {}",
            answer.status().as_u16(),
            body_json(&answer)["error"].as_str().unwrap_or("")
        )
    };
    if order == Order::AdminFirst {
        let expected = match other {
            // The rotation's condition on the user's epoch and activity.
            Other::Refresh => "401 invalid_grant",
            // The session's condition on the user as read: try again.
            Other::Login => "409 conflict",
            // The change's condition: the caller's session has ended.
            Other::ChangePassword => "401 invalid_token",
        };
        assert_eq!(outcome, expected, "{label}");
    }
    if order == Order::OtherFirst {
        assert_eq!(outcome, "200", "{label}");
    }
    // Whatever won, no token from before the act, nor any the other
    // request was given under the epoch the act ended, works after it. (A
    // free login that read the user after "end every session" began a
    // session of the new epoch: that one lives, as it should.)
    let mut dead = vec![tokens];
    if answer.status() == 200 {
        let given = Tokens::from(&answer);
        let epoch = app
            .store
            .get(&Username::parse(username).unwrap())
            .await
            .unwrap()
            .unwrap()
            .session_epoch;
        let begun_after = crate::permissions::claims_of(&given.access)["sep"] == epoch;
        if begun_after && act == Act::EndSessions && other == Other::Login && order == Order::Free {
            assert_works(&name_with(app, &given.access).await);
        } else {
            dead.push(given);
        }
    }
    for (i, tokens) in dead.iter().enumerate() {
        let name = name_with(app, &tokens.access).await;
        assert_eq!(
            name.status(),
            401,
            "{label}: token {i} works after the act: {outcome}"
        );
        assert_error(&name, 401, "invalid_token");
        assert_error(
            &do_refresh(app, &tokens.refresh).await,
            401,
            "invalid_grant",
        );
    }
    // The password is the change's only if the change answered 200.
    let password = if other == Other::ChangePassword && answer.status() == 200 {
        NEW_PASSWORD
    } else {
        PASSWORD
    };
    let user = app
        .store
        .get(&Username::parse(username).unwrap())
        .await
        .unwrap()
        .unwrap();
    match act {
        // Deactivated: no login, whatever the password.
        Act::Deactivate => {
            assert!(!user.active, "{label}");
            assert_error(&log_in(app, username, password).await, 401, "login_failed");
        }
        // A new login starts a session of the new epoch, which works.
        Act::EndSessions => {
            let fresh = session_with(app, username, password).await;
            assert_works(&name_with(app, &fresh.access).await);
        }
    }
    format!("{label}: {outcome}")
}

async fn session_with(app: &App, username: &str, password: &str) -> Tokens {
    Tokens::from(&log_in(app, username, password).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admins_deactivation_or_end_of_sessions_ends_whatever_it_races() {
    let store = fresh_store().await;
    let app = App::new(&store);
    admin_in(&store, "chief").await;
    let chief = session(&app, "chief").await;
    let mut outcomes = Outcomes::default();
    let mut n = 0;
    for act in [Act::Deactivate, Act::EndSessions] {
        for other in [Other::Refresh, Other::Login, Other::ChangePassword] {
            for order in [
                Order::AdminFirst,
                Order::OtherFirst,
                Order::Free,
                Order::Free,
            ] {
                n += 1;
                let username = format!("raced-{n}");
                let outcome = round(&app, &chief.access, &username, act, other, order).await;
                if order == Order::Free {
                    outcomes.count(outcome);
                }
            }
        }
    }
    outcomes.report("an_admins_deactivation_or_end_of_sessions");
    // The admin's own session was never touched.
    assert_works(&name_with(&app, &chief.access).await);
}
