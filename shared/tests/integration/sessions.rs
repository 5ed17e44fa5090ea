//! Accounts and sessions through the real handlers on DynamoDB Local:
//! registration, refresh rotation and reuse detection, logout, password change,
//! rehash on login.

use crate::support::*;
use auth::clock::Clock;
use auth::handlers::login::Login;
use auth::handlers::{change_password, get_name, login, logout, refresh, register};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::store::Store;
use auth::users::{User, Username};
use lambda_http::{Body, Response};
use serde_json::{Value, json};

pub(crate) const PASSWORD: &str = "events-password-1";

/// Tokens of one session.
#[derive(Clone, Debug)]
pub(crate) struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    pub(crate) fn from(response: &Response<Body>) -> Tokens {
        assert_eq!(response.status(), 200, "{}", body_json(response));
        let json = body_json(response);
        Tokens {
            access: json["access_token"].as_str().unwrap().to_owned(),
            refresh: json["refresh_token"].as_str().unwrap().to_owned(),
        }
    }
}

pub(crate) async fn user_in(store: &Store, username: &str) -> User {
    add_user(store, username, "Session User", PASSWORD).await
}

pub(crate) async fn log_in(app: &App, username: &str, password: &str) -> Response<Body> {
    let body = json!({"username": username, "password": password}).to_string();
    login::handle(&app.login(), request("login.json", None, Some(&body))).await
}

pub(crate) async fn session(app: &App, username: &str) -> Tokens {
    Tokens::from(&log_in(app, username, PASSWORD).await)
}

pub(crate) async fn do_refresh(app: &App, refresh_token: &str) -> Response<Body> {
    let body = json!({"refresh_token": refresh_token}).to_string();
    refresh::handle(&app.refresh(), request("refresh.json", None, Some(&body))).await
}

pub(crate) async fn name_with(app: &App, access: &str) -> Response<Body> {
    get_name::handle(
        &app.get_name(),
        request("get-name.json", Some(&bearer(access)), None),
    )
    .await
}

pub(crate) async fn do_logout(app: &App, access: &str, body: Option<&str>) -> Response<Body> {
    logout::handle(
        &app.logout(),
        request("logout.json", Some(&bearer(access)), body),
    )
    .await
}

pub(crate) async fn do_change(app: &App, access: &str, current: &str, new: &str) -> Response<Body> {
    let body = json!({"current_password": current, "new_password": new}).to_string();
    change_password::handle(
        &app.account(),
        request("password.json", Some(&bearer(access)), Some(&body)),
    )
    .await
}

async fn register_with(app: &App, body: Value) -> Response<Body> {
    register::handle(
        &app.register(),
        request("register.json", None, Some(&body.to_string())),
    )
    .await
}

pub(crate) fn assert_works(response: &Response<Body>) {
    assert_eq!(response.status(), 200, "{}", body_json(response));
}

// ---- registration

#[tokio::test]
async fn registration_creates_a_user_who_can_log_in_and_returns_only_public_fields() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let response = register::handle(&app.register(), event("register.json")).await;
    assert_eq!(response.status(), 201, "{}", body_json(&response));
    let json = body_json(&response);
    assert_eq!(json["username"], "new-user");
    assert_eq!(json["name"], "New User");
    assert!(uuid::Uuid::parse_str(json["id"].as_str().unwrap()).is_ok());
    let text = json.to_string();
    assert!(
        !text.contains("$2b$") && !text.contains("hash") && !text.contains("passphrase"),
        "{text}"
    );

    let stored = store
        .get(&Username::parse("new-user").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.id.to_string(), json["id"]);
    assert!(stored.active);
    assert_works(&log_in(&app, "New-User", "a long enough passphrase").await);
}

#[tokio::test]
async fn registering_a_taken_username_in_any_case_is_409_and_keeps_the_first_account() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let first = user_in(&store, "taken-name").await;
    let body =
        json!({"username": "Taken-NAME", "password": "another fine passphrase", "name": "Other"});
    let response = register_with(&app, body).await;
    assert_error(&response, 409, "username_taken");
    let stored = store.get(&first.username).await.unwrap().unwrap();
    assert_eq!(stored, first);
}

#[tokio::test]
async fn registration_refuses_what_the_policy_refuses_with_a_message_and_writes_nothing() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let ok_password = "a long enough passphrase";
    let cases = [
        (
            json!({"username": "new-user", "password": "short", "name": "N"}),
            "at least 8 characters",
        ),
        (
            json!({"username": "new-user", "password": "é".repeat(37), "name": "N"}),
            "at most 72 bytes",
        ),
        (
            json!({"username": "new-user", "password": "x".repeat(73), "name": "N"}),
            "never truncated",
        ),
        (
            json!({"username": "new-user", "password": "password123", "name": "N"}),
            "too common",
        ),
        (
            json!({"username": "new-user", "password": "Qwertyuiop", "name": "N"}),
            "too common",
        ),
        (
            json!({"username": "long-username", "password": "LONG-USERNAME", "name": "N"}),
            "same as the username",
        ),
        (
            json!({"username": "аdmin", "password": ok_password, "name": "N"}),
            "username must be",
        ),
        (
            json!({"username": "ab", "password": ok_password, "name": "N"}),
            "username must be",
        ),
        (
            json!({"username": "new-user", "password": ok_password, "name": "   "}),
            "name must not be empty",
        ),
        (
            json!({"username": "new-user", "password": ok_password, "name": "n".repeat(101)}),
            "at most 100",
        ),
        (
            json!({"username": "new-user", "password": ok_password}),
            "missing field `name`",
        ),
        (
            json!({"username": "new-user", "password": 12345678, "name": "N"}),
            "invalid type",
        ),
    ];
    for (body, expected) in cases {
        let response = register_with(&app, body.clone()).await;
        let json = assert_error(&response, 400, "invalid_request");
        let message = json["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{body}: {message:?} should mention {expected:?}"
        );
    }
    for username in ["new-user", "long-username"] {
        assert_eq!(
            store
                .get(&Username::parse(username).unwrap())
                .await
                .unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn registration_trims_the_name() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let body = json!({"username": "trimmed", "password": "a long enough passphrase", "name": "  Ada Lovelace \n"});
    let response = register_with(&app, body).await;
    assert_eq!(response.status(), 201);
    assert_eq!(body_json(&response)["name"], "Ada Lovelace");
}

#[tokio::test]
async fn register_answers_other_methods_with_405() {
    let store = fresh_store().await;
    let response = register::handle(
        &App::new(&store).register(),
        event("register-wrong-method.json"),
    )
    .await;
    assert_error(&response, 405, "method_not_allowed");
    assert_eq!(response.headers()["allow"], "POST");
}

// ---- login and refresh

#[tokio::test]
async fn login_returns_a_refresh_token_beside_the_seed_fields() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "rt-user").await;
    let response = log_in(&app, "rt-user", PASSWORD).await;
    let json = body_json(&response);
    assert_eq!(json["message"], "Login Success");
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["expires_in"], 900);
    assert_eq!(json["refresh_expires_in"], 30 * 24 * 3600);
    let refresh = json["refresh_token"].as_str().unwrap();
    assert_eq!(refresh.len(), 43, "256 bits, base64url");
    assert!(json["access_token"].as_str().unwrap().contains('.'));
}

#[tokio::test]
async fn refresh_rotates_the_token_and_keeps_the_session() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "rotator").await;
    let mut tokens = session(&app, "rotator").await;
    let verifier = verifier();
    let sid = verifier.verify(&tokens.access).await.unwrap().sid;
    for _ in 0..3 {
        let response = do_refresh(&app, &tokens.refresh).await;
        assert_eq!(body_json(&response)["message"], "Token refreshed");
        let next = Tokens::from(&response);
        assert_ne!(next.refresh, tokens.refresh);
        assert_eq!(
            verifier.verify(&next.access).await.unwrap().sid,
            sid,
            "same session"
        );
        assert_works(&name_with(&app, &next.access).await);
        tokens = next;
    }
}

#[tokio::test]
async fn a_rotated_token_retried_within_the_grace_period_is_refused_but_the_session_lives() {
    let store = fresh_store().await;
    let clock = Clock::manual(auth::clock::system_now());
    let app = App::with_clock(&store, clock.clone());
    user_in(&store, "retrier").await;
    let first = session(&app, "retrier").await;
    let second = Tokens::from(&do_refresh(&app, &first.refresh).await);
    clock.advance(5);
    // Its own code, so a client knows to carry on with the successor.
    assert_error(
        &do_refresh(&app, &first.refresh).await,
        401,
        "refresh_token_superseded",
    );
    // Not treated as theft: the session's newest tokens still work.
    assert_works(&name_with(&app, &second.access).await);
    assert_works(&do_refresh(&app, &second.refresh).await);
}

#[tokio::test]
async fn reusing_a_rotated_token_revokes_the_whole_family_and_only_that_session() {
    let store = fresh_store().await;
    let clock = Clock::manual(auth::clock::system_now());
    let app = App::with_clock(&store, clock.clone());
    user_in(&store, "victim").await;
    let stolen = session(&app, "victim").await;
    let other_session = session(&app, "victim").await;
    let rotated = Tokens::from(&do_refresh(&app, &stolen.refresh).await);
    let newest = Tokens::from(&do_refresh(&app, &rotated.refresh).await);

    clock.advance(11); // past the 10 s grace period
    let reuse = do_refresh(&app, &stolen.refresh).await;
    assert_error(&reuse, 401, "invalid_grant");

    // Every token of that family, and its access tokens, stop working at once.
    assert_error(
        &do_refresh(&app, &newest.refresh).await,
        401,
        "invalid_grant",
    );
    assert_error(&name_with(&app, &newest.access).await, 401, "invalid_token");
    assert_error(&name_with(&app, &stolen.access).await, 401, "invalid_token");
    // The user's other session is untouched.
    assert_works(&name_with(&app, &other_session.access).await);
    assert_works(&do_refresh(&app, &other_session.refresh).await);
}

#[tokio::test]
async fn a_refresh_token_expires_by_its_own_clock_not_by_dynamodb_ttl() {
    let store = fresh_store().await;
    let clock = Clock::manual(auth::clock::system_now());
    let app = App::with_clock(&store, clock.clone());
    user_in(&store, "expiring").await;
    let tokens = session(&app, "expiring").await;
    clock.advance(30 * 24 * 3600 - 60);
    let renewed = Tokens::from(&do_refresh(&app, &tokens.refresh).await);
    clock.advance(30 * 24 * 3600 + 1);
    assert_error(
        &do_refresh(&app, &renewed.refresh).await,
        401,
        "invalid_grant",
    );
}

#[tokio::test]
async fn refresh_and_access_tokens_are_not_interchangeable() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "swapper").await;
    let tokens = session(&app, "swapper").await;
    assert_error(
        &name_with(&app, &tokens.refresh).await,
        401,
        "invalid_token",
    );
    assert_error(
        &do_refresh(&app, &tokens.access).await,
        401,
        "invalid_grant",
    );
    let logout = do_logout(&app, &tokens.refresh, None).await;
    assert_error(&logout, 401, "invalid_token");
}

#[tokio::test]
async fn refresh_refuses_unknown_and_malformed_tokens() {
    let store = fresh_store().await;
    let app = App::new(&store);
    assert_error(
        &do_refresh(&app, "not-a-token-we-issued").await,
        401,
        "invalid_grant",
    );
    assert_error(
        &do_refresh(&app, &"x".repeat(1_000)).await,
        401,
        "invalid_grant",
    );
    assert_error(&do_refresh(&app, "").await, 400, "invalid_request");
    let missing = refresh::handle(&app.refresh(), event("refresh-missing-token.json")).await;
    assert_error(&missing, 400, "invalid_request");
    let wrong_method = refresh::handle(&app.refresh(), event("refresh-wrong-method.json")).await;
    assert_error(&wrong_method, 405, "method_not_allowed");
}

#[tokio::test]
async fn a_deactivated_user_cannot_refresh() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let user = user_in(&store, "sleepy").await;
    let tokens = session(&app, "sleepy").await;
    store.set_active(&user, false).await.unwrap();
    assert_error(
        &do_refresh(&app, &tokens.refresh).await,
        401,
        "invalid_grant",
    );
}

// ---- logout

#[tokio::test]
async fn logout_ends_that_session_at_once_and_leaves_the_others() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "two-devices").await;
    let phone = session(&app, "two-devices").await;
    let laptop = session(&app, "two-devices").await;

    let response = do_logout(&app, &phone.access, None).await;
    assert_works(&response);
    assert_eq!(body_json(&response)["ended"], "session");

    assert_error(&name_with(&app, &phone.access).await, 401, "invalid_token");
    assert_error(
        &do_refresh(&app, &phone.refresh).await,
        401,
        "invalid_grant",
    );
    assert_error(
        &do_logout(&app, &phone.access, None).await,
        401,
        "invalid_token",
    );
    assert_works(&name_with(&app, &laptop.access).await);
    assert_works(&do_refresh(&app, &laptop.refresh).await);
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_only() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "everywhere").await;
    user_in(&store, "bystander").await;
    let a = session(&app, "everywhere").await;
    let b = session(&app, "everywhere").await;
    let other_user = session(&app, "bystander").await;

    let response = logout::handle(
        &app.logout(),
        request("logout-all.json", Some(&bearer(&a.access)), None),
    )
    .await;
    assert_works(&response);
    assert_eq!(body_json(&response)["ended"], "all");
    for tokens in [&a, &b] {
        assert_error(&name_with(&app, &tokens.access).await, 401, "invalid_token");
        assert_error(
            &do_refresh(&app, &tokens.refresh).await,
            401,
            "invalid_grant",
        );
    }
    assert_works(&name_with(&app, &other_user.access).await);
    // A new login starts afresh.
    assert_works(&name_with(&app, &session(&app, "everywhere").await.access).await);
}

#[tokio::test]
async fn logout_with_a_refresh_token_of_another_own_session_ends_that_one_too() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "tidy").await;
    user_in(&store, "someone-else").await;
    let current = session(&app, "tidy").await;
    let forgotten = session(&app, "tidy").await;
    let foreign = session(&app, "someone-else").await;
    let body = json!({"refresh_token": forgotten.refresh}).to_string();
    assert_works(&name_with(&app, &forgotten.access).await);
    assert_works(&do_logout(&app, &current.access, Some(&body)).await);
    assert_error(
        &do_refresh(&app, &forgotten.refresh).await,
        401,
        "invalid_grant",
    );
    // Its access tokens end at once too, not when they expire.
    assert_error(
        &name_with(&app, &forgotten.access).await,
        401,
        "invalid_token",
    );

    // Another user's refresh token in the body is ignored, not revoked.
    let again = session(&app, "tidy").await;
    let body = json!({"refresh_token": foreign.refresh}).to_string();
    assert_works(&do_logout(&app, &again.access, Some(&body)).await);
    assert_works(&do_refresh(&app, &foreign.refresh).await);
}

#[tokio::test]
async fn logout_needs_a_valid_bearer_token_and_a_sane_body() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "careful").await;
    let tokens = session(&app, "careful").await;
    let no_token = logout::handle(&app.logout(), event("logout-no-token.json")).await;
    assert_error(&no_token, 401, "missing_token");
    assert_eq!(
        no_token.headers()["www-authenticate"],
        "Bearer realm=\"auth\""
    );
    let wrong_method = logout::handle(
        &app.logout(),
        request(
            "logout-wrong-method.json",
            Some(&bearer(&tokens.access)),
            None,
        ),
    )
    .await;
    assert_error(&wrong_method, 405, "method_not_allowed");
    assert_error(
        &do_logout(&app, &tokens.access, Some("{nope")).await,
        400,
        "invalid_request",
    );
    assert_error(
        &do_logout(&app, &tokens.access, Some(r#"{"all": "yes"}"#)).await,
        400,
        "invalid_request",
    );
    assert_works(&name_with(&app, &tokens.access).await);
}

// ---- password change

#[tokio::test]
async fn a_password_change_ends_every_other_session_and_reissues_the_callers() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "changer").await;
    let caller = session(&app, "changer").await;
    let other = session(&app, "changer").await;

    let response = do_change(&app, &caller.access, PASSWORD, "a brand new passphrase").await;
    assert_eq!(body_json(&response)["message"], "Password changed");
    let fresh = Tokens::from(&response);

    for old in [&caller, &other] {
        assert_error(&name_with(&app, &old.access).await, 401, "invalid_token");
        assert_error(&do_refresh(&app, &old.refresh).await, 401, "invalid_grant");
    }
    assert_works(&name_with(&app, &fresh.access).await);
    assert_works(&do_refresh(&app, &fresh.refresh).await);
    assert_error(
        &log_in(&app, "changer", PASSWORD).await,
        401,
        "login_failed",
    );
    assert_works(&log_in(&app, "changer", "a brand new passphrase").await);
}

#[tokio::test]
async fn a_wrong_current_password_is_401_like_a_failed_login_and_changes_nothing() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "guarded").await;
    let tokens = session(&app, "guarded").await;
    let response = do_change(
        &app,
        &tokens.access,
        "not my password",
        "a brand new passphrase",
    )
    .await;
    let failed_login = log_in(&app, "guarded", "not my password").await;
    assert_error(&response, 401, "login_failed");
    assert_eq!(body_bytes(&response), body_bytes(&failed_login));
    assert_works(&name_with(&app, &tokens.access).await);
    assert_works(&log_in(&app, "guarded", PASSWORD).await);
}

#[tokio::test]
async fn the_new_password_must_pass_the_policy() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "policy-user").await;
    let tokens = session(&app, "policy-user").await;
    for (new, expected) in [
        ("short", "at least 8"),
        ("password1", "too common"),
        ("Policy-User", "same as the username"),
    ] {
        let response = do_change(&app, &tokens.access, PASSWORD, new).await;
        let json = assert_error(&response, 400, "invalid_request");
        assert!(
            json["message"].as_str().unwrap().contains(expected),
            "{json}"
        );
    }
    assert_works(&log_in(&app, "policy-user", PASSWORD).await);
    let wrong_method = change_password::handle(
        &app.account(),
        request(
            "password-wrong-method.json",
            Some(&bearer(&tokens.access)),
            None,
        ),
    )
    .await;
    assert_error(&wrong_method, 405, "method_not_allowed");
}

// ---- rehash on login

#[tokio::test]
async fn login_rehashes_a_hash_below_the_configured_cost() {
    let store = fresh_store().await;
    let user = user_in(&store, "old-hash").await; // cost 10
    assert!(user.password_hash.starts_with("$2b$10$"));
    let app = App::new(&store);
    let stronger = Login {
        passwords: PasswordHasher::new(BcryptCost::new(11).unwrap()),
        ..app.login()
    };
    let body = json!({"username": "old-hash", "password": PASSWORD}).to_string();
    assert_works(&login::handle(&stronger, request("login.json", None, Some(&body))).await);
    let stored = store.get(&user.username).await.unwrap().unwrap();
    assert!(
        stored.password_hash.starts_with("$2b$11$"),
        "{}",
        &stored.password_hash[..7]
    );
    assert_ne!(stored.password_hash, user.password_hash);
    // Same password, now at cost 11; a wrong one still fails.
    assert_works(&login::handle(&stronger, request("login.json", None, Some(&body))).await);
    assert_error(
        &log_in(&app, "old-hash", "wrong password").await,
        401,
        "login_failed",
    );
}

#[tokio::test]
async fn a_rehash_never_overwrites_a_password_changed_meanwhile() {
    let store = fresh_store().await;
    let user = user_in(&store, "racer").await;
    let mut changed = user.clone();
    changed.password_hash = "$2b$12$changed-meanwhile".into();
    assert!(store.rehash(&user, &changed.password_hash).await.unwrap());
    // `user` is the stale read a login would rehash from.
    assert!(
        !store
            .rehash(&user, "$2b$12$rehash-of-old-password")
            .await
            .unwrap()
    );
    let stored = store.get(&user.username).await.unwrap().unwrap();
    assert_eq!(stored.password_hash, "$2b$12$changed-meanwhile");
}

#[tokio::test]
async fn an_access_token_of_an_ended_epoch_is_refused_even_if_well_signed() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let user = user_in(&store, "epoch-user").await;
    let tokens = session(&app, "epoch-user").await;
    assert!(store.end_all_sessions(&user).await.unwrap());
    assert_error(&name_with(&app, &tokens.access).await, 401, "invalid_token");
}
