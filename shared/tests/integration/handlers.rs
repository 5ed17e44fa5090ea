//! The API contract, through the real handlers: requests built from `events/`,
//! the real store on DynamoDB Local.

use crate::support::*;
use auth::handlers::{get_name, login};
use auth::store::{DeletedBy, Store};
use auth::tokens::Claims;
use auth::users::User;
use lambda_http::{Body, Response};

/// The user `events/login.json` logs in as.
const EVENTS_USER: &str = "events-user";
const EVENTS_PASSWORD: &str = "events-password-1";

async fn store_with_events_user() -> (Store, User) {
    let store = fresh_store().await;
    let user = add_user(&store, EVENTS_USER, "Events User", EVENTS_PASSWORD).await;
    (store, user)
}

async fn login_with(store: &Store, username: &str, password: &str) -> Response<Body> {
    let body = serde_json::json!({"username": username, "password": password}).to_string();
    login::handle(&login_state(store), event_with_body("login.json", &body)).await
}

async fn access_token(store: &Store) -> String {
    let response = login::handle(&login_state(store), event("login.json")).await;
    assert_eq!(response.status(), 200);
    body_json(&response)["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn get_name_with(store: &Store, authorization: Option<&str>) -> Response<Body> {
    get_name::handle(
        &get_name_state(store),
        event_with_auth("get-name.json", authorization),
    )
    .await
}

/// Status, sorted headers and body, for byte-for-byte comparison.
type Snapshot = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

fn snapshot(response: &Response<Body>) -> Snapshot {
    let mut headers: Vec<_> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    headers.sort();
    (response.status().as_u16(), headers, body_bytes(response))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims_for(user: &User) -> serde_json::Value {
    serde_json::to_value(issuer().claims_for(user, "session-1", now(), now())).unwrap()
}

// ---- POST /login

#[tokio::test]
async fn login_with_the_right_password_returns_a_bearer_token_for_that_user() {
    let (store, user) = store_with_events_user().await;
    let response = login::handle(&login_state(&store), event("login.json")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let json = body_json(&response);
    assert_eq!(json["message"], "Login Success");
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["expires_in"], 900);
    let token = json["access_token"].as_str().unwrap();
    let claims: Claims = verifier().verify(token).await.unwrap();
    assert_eq!(claims.sub, user.id.to_string());
    assert_eq!(claims.username, EVENTS_USER);
}

#[tokio::test]
async fn login_is_case_insensitive_in_the_username() {
    let (store, _) = store_with_events_user().await;
    assert_eq!(
        login_with(&store, "Events-USER", EVENTS_PASSWORD)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn wrong_password_unknown_user_and_inactive_user_get_byte_identical_401s() {
    let (store, _) = store_with_events_user().await;
    let inactive = add_user(&store, "sleeper", "Sleeper", "sleeper-password").await;
    assert!(store.set_active(&inactive, false).await.unwrap());
    let state = login_state(&store);

    let wrong_password = login::handle(&state, event("login-wrong-password.json")).await;
    let unknown_user = login::handle(&state, event("login-unknown-user.json")).await;
    let inactive_user = login_with(&store, "sleeper", "sleeper-password").await;
    let too_long = login_with(&store, EVENTS_USER, &"p".repeat(100)).await;

    assert_error(&wrong_password, 401, "login_failed");
    assert_eq!(body_json(&wrong_password)["message"], "Login Failed");
    assert_eq!(snapshot(&wrong_password), snapshot(&unknown_user));
    assert_eq!(snapshot(&wrong_password), snapshot(&inactive_user));
    assert_eq!(snapshot(&wrong_password), snapshot(&too_long));
}

#[tokio::test]
async fn a_password_over_72_bytes_does_not_log_in_with_its_first_72_bytes() {
    let store = fresh_store().await;
    let first_72 = "k".repeat(72);
    add_user(&store, "longpass", "Long", &first_72).await;
    assert_eq!(
        login_with(&store, "longpass", &first_72).await.status(),
        200
    );
    let longer = format!("{first_72}extra");
    assert_error(
        &login_with(&store, "longpass", &longer).await,
        401,
        "login_failed",
    );
}

#[tokio::test]
async fn malformed_login_bodies_get_a_400_that_says_what_is_wrong() {
    let store = fresh_store().await;
    let state = login_state(&store);
    let cases = [
        (event("login-invalid-json.json"), "not valid JSON"),
        (
            event("login-missing-password.json"),
            "missing field `password`",
        ),
        (event_with_body("login.json", ""), "empty"),
        (
            event_with_body("login.json", r#"{"username": 42, "password": "x"}"#),
            "invalid type",
        ),
        (
            event_with_body("login.json", r#"{"username": "alice", "password": null}"#),
            "invalid type",
        ),
        (
            event_with_body("login.json", r#"["alice", "pw"]"#),
            "JSON object",
        ),
        (
            event_with_body("login.json", r#"{"username": "", "password": "x"}"#),
            "username must be",
        ),
        (
            event_with_body("login.json", r#"{"username": "alice", "password": ""}"#),
            "password must not be empty",
        ),
    ];
    for (request, expected) in cases {
        let response = login::handle(&state, request).await;
        let json = assert_error(&response, 400, "invalid_request");
        let message = json["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{message:?} should mention {expected:?}"
        );
    }
}

#[tokio::test]
async fn login_answers_other_methods_with_405_and_allow() {
    let store = fresh_store().await;
    let response = login::handle(&login_state(&store), event("login-wrong-method.json")).await;
    assert_error(&response, 405, "method_not_allowed");
    assert_eq!(response.headers()["allow"], "POST");
}

#[tokio::test]
async fn a_damaged_user_record_is_a_contained_json_500() {
    let store = fresh_store().await;
    let user = User::new(
        auth::users::Username::parse("damaged").unwrap(),
        "D".into(),
        "not-a-bcrypt-hash".into(),
    );
    store.create(&user).await.unwrap();
    let response = login_with(&store, "damaged", "whatever").await;
    let json = assert_error(&response, 500, "internal_error");
    assert!(
        !json.to_string().contains("bcrypt"),
        "no internals in the body: {json}"
    );
}

#[tokio::test]
async fn a_missing_table_is_a_contained_json_500() {
    let store = Store::new(local_client().await, "no-such-table");
    assert_error(
        &login_with(&store, "alice", "pw").await,
        500,
        "internal_error",
    );
    let response = get_name::handle(
        &get_name_state(&store),
        event_with_auth("get-name.json", None),
    )
    .await;
    assert_eq!(
        response.status(),
        401,
        "auth is checked before the database"
    );
}

// ---- GET /get_name

#[tokio::test]
async fn get_name_with_a_token_from_login_returns_that_users_name() {
    let (store, _) = store_with_events_user().await;
    let token = access_token(&store).await;
    let response = get_name_with(&store, Some(&format!("Bearer {token}"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(
        body_json(&response),
        serde_json::json!({"message": "User found", "name": "Events User"})
    );
}

#[tokio::test]
async fn get_name_refuses_bad_credentials_with_401_and_a_bearer_challenge() {
    let (store, user) = store_with_events_user().await;
    let token = access_token(&store).await;
    // One character in the middle of the signature: all six of its bits
    // count (the last character of a 256-byte signature is partly padding).
    let mut tampered: Vec<char> = token.chars().collect();
    let middle = token.rfind('.').unwrap() + (token.len() - token.rfind('.').unwrap()) / 2;
    tampered[middle] = if tampered[middle] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();

    let edit = async |claim: &str, value: serde_json::Value| {
        let mut claims = claims_for(&user);
        claims[claim] = value;
        forge(our_key(), &our_header(), &claims).await
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no header", None, "missing_token"),
        (
            "not Bearer",
            Some(format!("Basic {token}")),
            "missing_token",
        ),
        ("empty Bearer", Some("Bearer ".into()), "invalid_token"),
        (
            "malformed",
            Some("Bearer not.a.jwt".into()),
            "invalid_token",
        ),
        (
            "two segments",
            Some("Bearer abc.def".into()),
            "invalid_token",
        ),
        (
            "bad signature",
            Some(format!("Bearer {tampered}")),
            "invalid_token",
        ),
        (
            "signed by a key not ours",
            Some(format!(
                "Bearer {}",
                forge(stranger_key(), &our_header(), &claims_for(&user)).await
            )),
            "invalid_token",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                edit("exp", (now() - 3600).into()).await
            )),
            "invalid_token",
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                edit("nbf", (now() + 3600).into()).await
            )),
            "invalid_token",
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                edit("iss", "https://evil.test".into()).await
            )),
            "invalid_token",
        ),
        (
            "wrong audience",
            Some(format!("Bearer {}", edit("aud", "other-api".into()).await)),
            "invalid_token",
        ),
    ];
    for (case, authorization, code) in cases {
        let response = get_name_with(&store, authorization.as_deref()).await;
        assert_eq!(response.status(), 401, "{case}");
        assert_error(&response, 401, code);
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer realm="),
            "{case}: {challenge}"
        );
        if code == "invalid_token" {
            assert!(
                challenge.contains("error=\"invalid_token\""),
                "{case}: {challenge}"
            );
        }
    }
}

#[tokio::test]
async fn get_name_for_a_deleted_user_is_404() {
    let (store, user) = store_with_events_user().await;
    let token = access_token(&store).await;
    store.delete_user(&user, DeletedBy::Operator).await.unwrap();
    let response = get_name_with(&store, Some(&format!("Bearer {token}"))).await;
    let json = assert_error(&response, 404, "user_not_found");
    assert_eq!(json["message"], "User not found");
}

#[tokio::test]
async fn a_token_of_a_deleted_user_never_reads_the_name_of_whoever_took_the_username() {
    let (store, user) = store_with_events_user().await;
    let token = access_token(&store).await;
    store.delete_user(&user, DeletedBy::Operator).await.unwrap();
    add_user(&store, EVENTS_USER, "Someone Else", "another-password").await;
    let response = get_name_with(&store, Some(&format!("Bearer {token}"))).await;
    let json = assert_error(&response, 401, "invalid_token");
    assert!(!json.to_string().contains("Someone Else"));
}

#[tokio::test]
async fn a_token_of_a_deactivated_user_is_refused() {
    let (store, user) = store_with_events_user().await;
    let token = access_token(&store).await;
    store.set_active(&user, false).await.unwrap();
    let response = get_name_with(&store, Some(&format!("Bearer {token}"))).await;
    assert_error(&response, 401, "invalid_token");
}

#[tokio::test]
async fn get_name_answers_other_methods_with_405_and_allow() {
    let store = fresh_store().await;
    let response =
        get_name::handle(&get_name_state(&store), event("get-name-wrong-method.json")).await;
    assert_error(&response, 405, "method_not_allowed");
    assert_eq!(response.headers()["allow"], "GET");
}

#[tokio::test]
async fn get_name_without_a_token_uses_the_events_fixture_and_is_401() {
    let store = fresh_store().await;
    let response = get_name::handle(&get_name_state(&store), event("get-name-no-token.json")).await;
    assert_error(&response, 401, "missing_token");
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"auth\""
    );
}
