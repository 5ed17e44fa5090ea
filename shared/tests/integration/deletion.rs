//! Self-service account deletion through the real handlers on DynamoDB Local:
//! what goes, what every token of the account gets afterwards (and for whoever
//! registers the name next), and deletion racing refreshes and logins.

use crate::sessions::*;
use crate::support::proxy::{Call, Proxy, order_writes};
use crate::support::*;
use auth::handlers::{account, register};
use auth::permissions::Role;
use auth::store::{DeletedBy, StoreError};
use auth::users::Username;
use lambda_http::http::HeaderValue;
use lambda_http::{Body, Response};
use serde_json::json;

async fn delete_account(app: &App, access: &str, password: &str) -> Response<Body> {
    let body = json!({"password": password}).to_string();
    account::handle(
        &app.account(),
        request("delete-account.json", Some(&bearer(access)), Some(&body)),
    )
    .await
}

async fn register_again(app: &App, username: &str) -> Response<Body> {
    let body = json!({"username": username, "password": "the next owner's passphrase", "name": "Next Owner"});
    register::handle(
        &app.register(),
        request("register.json", None, Some(&body.to_string())),
    )
    .await
}

/// What every token of a deleted account gets: the seed's 404 on /get_name,
/// 401 for its refresh tokens; and, once the name is someone else's, 401.
async fn assert_dead(app: &App, sessions: &[Tokens], name_taken: bool) {
    for tokens in sessions {
        let response = name_with(app, &tokens.access).await;
        if name_taken {
            let json = assert_error(&response, 401, "invalid_token");
            assert!(!json.to_string().contains("Next Owner"));
        } else {
            let json = assert_error(&response, 404, "user_not_found");
            assert_eq!(json["message"], "User not found");
        }
        assert_error(
            &do_refresh(app, &tokens.refresh).await,
            401,
            "invalid_grant",
        );
    }
}

#[tokio::test]
async fn a_user_deletes_their_account_and_every_token_of_it_dies_for_good() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let user = user_in(&store, "leaving").await;
    let first = session(&app, "leaving").await;
    let second = session(&app, "leaving").await;
    log_in(&app, "leaving", "a wrong password").await;
    assert!(store.failures(&user.username).await.unwrap().is_some());

    let deleted = delete_account(&app, &first.access, PASSWORD).await;
    assert_works(&deleted);
    assert_eq!(body_json(&deleted), json!({"message": "Account deleted"}));
    assert!(
        deleted.headers().get("set-cookie").is_none(),
        "no cookie sent, none cleared"
    );
    // The user item and the attempt record are gone.
    assert_eq!(store.get(&user.username).await.unwrap(), None);
    assert_eq!(store.failures(&user.username).await.unwrap(), None);

    let sessions = [first.clone(), second.clone()];
    assert_dead(&app, &sessions, false).await;
    assert_error(
        &do_logout(&app, &first.access, None).await,
        401,
        "invalid_token",
    );
    assert_error(
        &delete_account(&app, &second.access, PASSWORD).await,
        401,
        "invalid_token",
    );
    assert_error(
        &log_in(&app, "leaving", PASSWORD).await,
        401,
        "login_failed",
    );

    // The name is free at once, and no old token works for its new owner.
    assert_eq!(register_again(&app, "Leaving").await.status(), 201);
    assert_dead(&app, &sessions, true).await;
    let next = Tokens::from(&log_in(&app, "leaving", "the next owner's passphrase").await);
    assert_eq!(
        body_json(&name_with(&app, &next.access).await)["name"],
        "Next Owner"
    );
}

#[tokio::test]
async fn a_wrong_password_deletes_nothing_and_counts_as_a_failed_attempt() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let user = user_in(&store, "staying").await;
    let tokens = session(&app, "staying").await;
    assert_error(
        &delete_account(&app, &tokens.access, "not it").await,
        401,
        "login_failed",
    );
    assert_error(
        &delete_account(&app, &tokens.access, "").await,
        400,
        "invalid_request",
    );
    assert_eq!(
        store.failures(&user.username).await.unwrap().unwrap().count,
        1
    );
    assert_eq!(store.get(&user.username).await.unwrap().unwrap(), user);
    assert_works(&name_with(&app, &tokens.access).await);
    let wrong_method = account::handle(
        &app.account(),
        request(
            "delete-account-wrong-method.json",
            Some(&bearer(&tokens.access)),
            None,
        ),
    )
    .await;
    assert_error(&wrong_method, 405, "method_not_allowed");
    assert_eq!(wrong_method.headers()["allow"], "DELETE");
}

#[tokio::test]
async fn an_admin_cannot_delete_their_own_account_while_holding_the_role() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let chief = crate::permissions::admin_in(&store, "chief").await;
    let tokens = session(&app, "chief").await;
    let refused = delete_account(&app, &tokens.access, PASSWORD).await;
    let json = assert_error(&refused, 403, "forbidden");
    assert!(
        json["message"].as_str().unwrap().contains("admin role"),
        "{json}"
    );
    assert_eq!(store.get(&chief.username).await.unwrap().unwrap(), chief);
    // Once another admin (or auth-admin) has taken the role, they may go.
    assert!(store.revoke_role(&chief, &Role::admin()).await.unwrap());
    assert_works(&delete_account(&app, &tokens.access, PASSWORD).await);
    assert_eq!(store.get(&chief.username).await.unwrap(), None);
}

#[tokio::test]
async fn an_owners_deletion_loses_to_a_password_change_a_deactivation_or_the_end_of_its_session() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let read = user_in(&store, "contested").await;
    let tokens = session(&app, "contested").await;
    let sid = crate::permissions::claims_of(&tokens.access)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let owner = DeletedBy::Owner { sid: &sid };
    // Each from the read made before the other write landed.
    assert_works(&do_logout(&app, &tokens.access, None).await);
    assert!(matches!(
        store.delete_user(&read, owner).await,
        Err(StoreError::Conflict)
    ));
    let other = session(&app, "contested").await;
    let other_sid = crate::permissions::claims_of(&other.access)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = store.get(&read.username).await.unwrap().unwrap();
    assert!(store.set_active(&read, false).await.unwrap());
    let owner = DeletedBy::Owner { sid: &other_sid };
    assert!(matches!(
        store.delete_user(&read, owner).await,
        Err(StoreError::Conflict)
    ));
    let read = store.get(&read.username).await.unwrap().unwrap();
    assert!(store.set_active(&read, true).await.unwrap());
    let read = store.get(&read.username).await.unwrap().unwrap();
    let mut changed = read.clone();
    changed.password_hash = hasher().hash("another passphrase 2".into()).await.unwrap();
    assert!(store.rehash(&read, &changed.password_hash).await.unwrap());
    assert!(matches!(
        store.delete_user(&read, owner).await,
        Err(StoreError::Conflict)
    ));
    // Nothing was deleted; as read now, it goes.
    let now = store.get(&read.username).await.unwrap().unwrap();
    store.delete_user(&now, owner).await.unwrap();
    assert_eq!(store.get(&read.username).await.unwrap(), None);
}

#[tokio::test]
async fn a_browser_deleting_its_account_gets_its_refresh_cookie_cleared() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "browsing").await;
    let tokens = session(&app, "browsing").await;
    let body = json!({"password": PASSWORD}).to_string();
    let mut req = request(
        "delete-account.json",
        Some(&bearer(&tokens.access)),
        Some(&body),
    );
    let cookie = format!("__Host-refresh_token={}", tokens.refresh);
    req.headers_mut()
        .insert("cookie", HeaderValue::from_str(&cookie).unwrap());
    let response = account::handle(&app.account(), req).await;
    assert_works(&response);
    let cleared = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("__Host-refresh_token=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletion_racing_refreshes_and_logins_leaves_no_token_that_works() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let mut outcomes = Outcomes::default();
    for round in 0..3 {
        let username = format!("racer-{round}");
        user_in(&store, &username).await;
        let deleter = session(&app, &username).await;
        let a = session(&app, &username).await;
        let b = session(&app, &username).await;

        let racers = app.racers(5).await;
        let mut requests = vec![{
            let (racer, access) = (racers[0].clone(), deleter.access.clone());
            racing(async move { delete_account(&racer, &access, PASSWORD).await })
        }];
        for (racer, tokens) in racers[1..3].iter().zip([&a, &b]) {
            let (racer, refresh) = (racer.clone(), tokens.refresh.clone());
            requests.push(racing(async move { do_refresh(&racer, &refresh).await }));
        }
        for racer in &racers[3..] {
            let (racer, username) = (racer.clone(), username.clone());
            requests.push(racing(
                async move { log_in(&racer, &username, PASSWORD).await },
            ));
        }
        let responses = race(requests).await;
        let [deleted, refresh_a, refresh_b, login_1, login_2] =
            <[_; 5]>::try_from(responses).unwrap_or_else(|_| unreachable!("five racers"));
        // Contended past its retries, a deletion says 409: a client tries again.
        outcomes.count(format!("deletion {}", deleted.status()));
        let deleted = if deleted.status() == 409 {
            delete_account(&app, &deleter.access, PASSWORD).await
        } else {
            deleted
        };
        assert_works(&deleted);
        let mut survivors = vec![deleter, a, b];
        for (what, response) in [
            ("refresh", &refresh_a),
            ("refresh", &refresh_b),
            ("login", &login_1),
            ("login", &login_2),
        ] {
            outcomes.count(format!("{what} {}", response.status()));
            match response.status().as_u16() {
                200 => survivors.push(Tokens::from(response)),
                401 | 409 => {}
                other => panic!("round {round}: {other} {}", body_json(response)),
            }
        }
        let unsuccessful = [&login_1, &login_2]
            .iter()
            .filter(|r| r.status() != 200)
            .count() as u64;
        assert_deleted_and_dead(&app, &username, &survivors, unsuccessful).await;
    }
    outcomes.report("deletion_racing_refreshes_and_logins");
}

/// After a deletion: the user is gone; whatever won its race before the
/// deletion is dead after it, and stays dead once the name is registered
/// again. A login whose attempt is reserved after the deletion counts it on
/// the name, as for any unknown username, and the record stays: at most one
/// attempt for each login that did not succeed (`unsuccessful`).
async fn assert_deleted_and_dead(
    app: &App,
    username: &str,
    survivors: &[Tokens],
    unsuccessful: u64,
) {
    let name = Username::parse(username).unwrap();
    assert_eq!(app.store.get(&name).await.unwrap(), None, "{username}");
    let left = app.store.failures(&name).await.unwrap();
    assert!(
        left.as_ref().is_none_or(|f| f.count <= unsuccessful),
        "{username}: {left:?} after {unsuccessful} unsuccessful logins"
    );
    assert_dead(app, survivors, false).await;
    assert_eq!(register_again(app, username).await.status(), 201);
    assert_dead(app, survivors, true).await;
}

/// Who writes first in a forced round of a deletion and one other request.
#[derive(Clone, Copy, Debug)]
enum Other {
    /// A refresh that read the live session and user before the deletion
    /// committed, and writes after it.
    RefreshAfter,
    /// A refresh whose rotation commits before the deletion.
    RefreshBefore,
    /// A login that proved the password before the deletion committed,
    /// and starts its session after it.
    LoginAfter,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_order_of_a_deletion_and_a_refresh_or_login_leaves_no_token_that_works() {
    let store = fresh_store().await;
    let app = App::new(&store);
    for (round, other) in [Other::RefreshAfter, Other::RefreshBefore, Other::LoginAfter]
        .into_iter()
        .enumerate()
    {
        let username = format!("ordered-{round}");
        user_in(&store, &username).await;
        let deleter = session(&app, &username).await;
        let tokens = session(&app, &username).await;
        let (deleter_proxy, other_proxy) = (Proxy::to_dynamodb().await, Proxy::to_dynamodb().await);
        let write = Call::Nth("transactwriteitems", 1);
        let written = match other {
            Other::RefreshAfter | Other::LoginAfter => {
                order_writes(&deleter_proxy, write.clone(), &other_proxy, write)
            }
            Other::RefreshBefore => {
                order_writes(&other_proxy, write.clone(), &deleter_proxy, write)
            }
        };
        let deleting = app.racer(0, 2, Some(&deleter_proxy)).await;
        let racer = app.racer(1, 2, Some(&other_proxy)).await;
        let access = deleter.access.clone();
        let (refresh, name) = (tokens.refresh.clone(), username.clone());
        let [deleted, answer] = <[_; 2]>::try_from(
            race(vec![
                racing(async move { delete_account(&deleting, &access, PASSWORD).await }),
                racing(async move {
                    match other {
                        Other::LoginAfter => log_in(&racer, &name, PASSWORD).await,
                        _ => do_refresh(&racer, &refresh).await,
                    }
                }),
            ])
            .await,
        )
        .unwrap_or_else(|_| unreachable!("two racers"));
        assert!(
            written.is_open(),
            "{other:?}: the forced order did not happen"
        );
        assert_works(&deleted);
        let mut survivors = vec![deleter, tokens];
        match other {
            // The rotation's condition on the user item refuses it.
            Other::RefreshAfter => {
                assert_error(&answer, 401, "invalid_grant");
            }
            Other::RefreshBefore => survivors.push(Tokens::from(&answer)),
            // The session's condition on the user item refuses it: the
            // account changed during the login.
            Other::LoginAfter => {
                assert_error(&answer, 409, "conflict");
            }
        }
        let unsuccessful = u64::from(matches!(other, Other::LoginAfter));
        assert_deleted_and_dead(&app, &username, &survivors, unsuccessful).await;
    }
}
