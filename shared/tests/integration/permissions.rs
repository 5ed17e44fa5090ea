//! Roles in tokens and fresh logins, through the real handlers on DynamoDB
//! Local: the `scope` claim, 403 `insufficient_scope` against 401, a revoked
//! role refused at once, the freshness boundary on an injectable clock, and
//! `/reauthenticate`.

use crate::sessions::*;
use crate::support::*;
use auth::clock::Clock;
use auth::handlers::{account, admin};
use auth::permissions::Role;
use auth::store::{RoleGrant, Store};
use auth::users::User;
use lambda_http::{Body, Response};
use serde_json::json;

/// The claims of an access token, unverified (the handlers verify them).
pub(crate) fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// `GET /admin/users/{username}` with `access`.
pub(crate) async fn look_up(app: &App, access: &str, username: &str) -> Response<Body> {
    let mut req = request("admin-user.json", Some(&bearer(access)), None);
    *req.uri_mut() = format!("/admin/users/{username}").parse().unwrap();
    admin::handle(&app.admin(), req).await
}

pub(crate) async fn reauthenticate(app: &App, access: &str, password: &str) -> Response<Body> {
    let body = json!({"password": password}).to_string();
    account::handle(
        &app.account(),
        request("reauthenticate.json", Some(&bearer(access)), Some(&body)),
    )
    .await
}

/// A user holding `admin`, granted before their login.
pub(crate) async fn admin_in(store: &Store, username: &str) -> User {
    let user = user_in(store, username).await;
    assert_eq!(
        store.grant_role(&user, &Role::admin()).await.unwrap(),
        RoleGrant::Granted
    );
    store.get(&user.username).await.unwrap().unwrap()
}

#[tokio::test]
async fn roles_travel_in_tokens_as_the_scope_claim_and_open_the_admin_api() {
    let store = fresh_store().await;
    let app = App::new(&store);
    admin_in(&store, "chief").await;
    user_in(&store, "plain").await;
    let chief = session(&app, "chief").await;
    let plain = session(&app, "plain").await;
    assert_eq!(claims_of(&chief.access)["scope"], "admin");
    assert!(claims_of(&plain.access).get("scope").is_none());
    assert!(claims_of(&chief.access)["auth_time"].is_i64());

    let found = look_up(&app, &chief.access, "plain").await;
    assert_works(&found);
    // A refresh keeps the scope.
    let refreshed = Tokens::from(&do_refresh(&app, &chief.refresh).await);
    assert_eq!(claims_of(&refreshed.access)["scope"], "admin");
    assert_works(&look_up(&app, &refreshed.access, "plain").await);
}

#[tokio::test]
async fn without_the_role_403_insufficient_scope_and_without_a_good_token_401() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "plain").await;
    let plain = session(&app, "plain").await;

    let refused = look_up(&app, &plain.access, "plain").await;
    assert_error(&refused, 403, "insufficient_scope");
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"auth\"")
            && challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("scope=\"admin\""),
        "{challenge}"
    );
    // No token, a bad one: 401, never 403.
    let mut req = request("admin-user.json", None, None);
    *req.uri_mut() = "/admin/users/plain".parse().unwrap();
    assert_error(
        &admin::handle(&app.admin(), req).await,
        401,
        "missing_token",
    );
    assert_error(
        &look_up(&app, "not.a.token", "plain").await,
        401,
        "invalid_token",
    );
}

#[tokio::test]
async fn a_role_counts_only_when_both_the_token_and_the_user_item_carry_it() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let chief = admin_in(&store, "chief").await;
    let tokens = session(&app, "chief").await;
    assert_works(&look_up(&app, &tokens.access, "chief").await);

    // Revoked: the very same token is refused at once.
    assert!(store.revoke_role(&chief, &Role::admin()).await.unwrap());
    assert_error(
        &look_up(&app, &tokens.access, "chief").await,
        403,
        "insufficient_scope",
    );
    // Granted after a token was issued: that token lacks the scope (as API
    // Gateway's authorizer would see it) until the session's next refresh.
    let tokens = session(&app, "chief").await;
    assert!(claims_of(&tokens.access).get("scope").is_none());
    let chief = store.get(&chief.username).await.unwrap().unwrap();
    store.grant_role(&chief, &Role::admin()).await.unwrap();
    assert_error(
        &look_up(&app, &tokens.access, "chief").await,
        403,
        "insufficient_scope",
    );
    let refreshed = Tokens::from(&do_refresh(&app, &tokens.refresh).await);
    assert_works(&look_up(&app, &refreshed.access, "chief").await);

    // A token claiming a scope the user does not hold, signed by our own key.
    let plain = user_in(&store, "plain").await;
    let plain_tokens = session(&app, "plain").await;
    let mut claims = claims_of(&plain_tokens.access);
    claims["scope"] = json!("admin");
    let forged = forge(our_key(), &our_header(), &claims).await;
    assert_error(
        &look_up(&app, &forged, "plain").await,
        403,
        "insufficient_scope",
    );
    // The forged scope granted nothing: the stored user still holds no role.
    let stored = store.get(&plain.username).await.unwrap().unwrap();
    assert!(stored.roles.is_empty(), "{:?}", stored.roles);
}

#[tokio::test]
async fn admin_acts_need_a_proof_of_the_password_within_max_age_and_reauthentication_renews_it() {
    let store = fresh_store().await;
    // In the past, so that tokens issued on this clock are valid by the
    // system clock the verifier checks `exp` and `iat` with.
    let start = auth::clock::system_now() - 700;
    let clock = Clock::manual(start);
    let app = App::with_clock(&store, clock.clone());
    admin_in(&store, "chief").await;
    let tokens = session(&app, "chief").await;
    assert_eq!(claims_of(&tokens.access)["auth_time"], start);

    clock.advance(600); // exactly max_age: still fresh
    assert_works(&look_up(&app, &tokens.access, "chief").await);
    // A refresh does not make the login any fresher.
    let refreshed = Tokens::from(&do_refresh(&app, &tokens.refresh).await);
    assert_eq!(claims_of(&refreshed.access)["auth_time"], start);

    clock.advance(1);
    for access in [&tokens.access, &refreshed.access] {
        let stale = look_up(&app, access, "chief").await;
        assert_error(&stale, 401, "insufficient_user_authentication");
        let challenge = stale.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"auth\"")
                && challenge.contains("error=\"insufficient_user_authentication\"")
                && challenge.contains("max_age=600"),
            "{challenge}"
        );
    }

    // The password again, within the same session.
    let renewed = reauthenticate(&app, &refreshed.access, PASSWORD).await;
    assert_works(&renewed);
    let json = body_json(&renewed);
    assert_eq!(json["message"], "Reauthenticated");
    assert!(json.get("refresh_token").is_none(), "no new refresh token");
    let fresh = json["access_token"].as_str().unwrap();
    assert_eq!(claims_of(fresh)["auth_time"], start + 601);
    assert_eq!(claims_of(fresh)["sid"], claims_of(&refreshed.access)["sid"]);
    assert_works(&look_up(&app, fresh, "chief").await);
    // The session's next refresh carries the new proof on.
    let next = Tokens::from(&do_refresh(&app, &refreshed.refresh).await);
    assert_eq!(claims_of(&next.access)["auth_time"], start + 601);
    assert_works(&look_up(&app, &next.access, "chief").await);
}

#[tokio::test]
async fn reauthentication_with_a_wrong_password_is_a_failed_login_counted_by_the_lockout() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let user = user_in(&store, "forgetful").await;
    let tokens = session(&app, "forgetful").await;
    assert_error(
        &reauthenticate(&app, &tokens.access, "not the password").await,
        401,
        "login_failed",
    );
    let failures = store.failures(&user.username).await.unwrap().unwrap();
    assert_eq!(failures.count, 1);
    assert_error(
        &reauthenticate(&app, &tokens.access, "").await,
        400,
        "invalid_request",
    );
    // The right one clears the record, as a login does.
    assert_works(&reauthenticate(&app, &tokens.access, PASSWORD).await);
    assert_eq!(store.failures(&user.username).await.unwrap(), None);
}

#[tokio::test]
async fn a_session_past_its_end_cannot_be_reauthenticated_into_a_longer_life() {
    let store = fresh_store().await;
    let start = auth::clock::system_now() - 300;
    let clock = Clock::manual(start);
    let mut app = App::with_clock(&store, clock.clone());
    app.sessions.max_lifetime = std::time::Duration::from_secs(120);
    user_in(&store, "mayfly").await;
    let tokens = session(&app, "mayfly").await;
    assert_works(&reauthenticate(&app, &tokens.access, PASSWORD).await);
    // Past the session's absolute lifetime its access token still lives a
    // while, but cannot buy the session a fresh proof.
    clock.advance(150);
    assert_works(&name_with(&app, &tokens.access).await);
    assert_error(
        &reauthenticate(&app, &tokens.access, PASSWORD).await,
        401,
        "invalid_token",
    );
    assert_error(
        &do_refresh(&app, &tokens.refresh).await,
        401,
        "invalid_grant",
    );
}

#[tokio::test]
async fn a_session_that_ended_cannot_be_reauthenticated() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "leaver").await;
    let tokens = session(&app, "leaver").await;
    assert_works(&do_logout(&app, &tokens.access, None).await);
    assert_error(
        &reauthenticate(&app, &tokens.access, PASSWORD).await,
        401,
        "invalid_token",
    );
    let wrong_method = account::handle(
        &app.account(),
        request("reauthenticate-wrong-method.json", None, None),
    )
    .await;
    assert_error(&wrong_method, 405, "method_not_allowed");
    assert_eq!(wrong_method.headers()["allow"], "POST");
}
