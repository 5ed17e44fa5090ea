//! Shared by the integration tests: the DynamoDB Local that `make test` started,
//! a fresh table per test, users, tokens and requests built from `events/`.
#![allow(dead_code)]

use std::time::Duration;

use auth::config::{StoreConfig, TokenConfig};
use auth::handlers::get_name::GetName;
use auth::handlers::login::Login;
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::store::aws_sdk_dynamodb::Client;
use auth::store::aws_sdk_dynamodb::config::{Credentials, Region};
use auth::store::{UserStore, create_table, sdk_config_loader};
use auth::tokens::{TokenIssuer, TokenVerifier};
use auth::users::{User, Username};
use lambda_http::{Body, Request, Response};

pub const TEST_SECRET: &str = "handler-tests-secret-0123456789abcdef";
pub const ISSUER: &str = "https://auth.test";
pub const AUDIENCE: &str = "auth-test-api";

/// A variable `make test` sets. Missing means the tests were started some other
/// way: that is a failure, never a skip.
pub fn required_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with `make test`, which starts DynamoDB Local and the watch")
    })
}

pub fn store_config(table: &str) -> StoreConfig {
    StoreConfig {
        table_name: table.to_owned(),
        attempt_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(5),
        max_attempts: 3,
    }
}

/// A client for `endpoint` with our production bounds from `config`.
pub async fn client_for(endpoint: &str, config: &StoreConfig) -> Client {
    let sdk = sdk_config_loader(config)
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .load()
        .await;
    Client::new(&sdk)
}

/// A client for the run's DynamoDB Local.
pub async fn local_client() -> Client {
    client_for(
        &required_env("DYNAMODB_TEST_ENDPOINT"),
        &store_config("unused"),
    )
    .await
}

/// A store on a table of its own, so tests run in parallel without sharing data.
pub async fn fresh_store() -> UserStore {
    let client = local_client().await;
    let table = format!("test-{}", uuid::Uuid::new_v4());
    create_table(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("cannot create a table on DynamoDB Local: {e}"));
    UserStore::new(client, table)
}

pub fn hasher() -> PasswordHasher {
    PasswordHasher::new(BcryptCost::new(10).unwrap())
}

pub async fn add_user(store: &UserStore, username: &str, name: &str, password: &str) -> User {
    let hash = hasher().hash(password.to_owned()).await.unwrap();
    let user = User::new(Username::parse(username).unwrap(), name.to_owned(), hash);
    store.create(&user).await.unwrap();
    user
}

pub fn token_config() -> TokenConfig {
    TokenConfig {
        secret: TEST_SECRET.as_bytes().to_vec(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        access_token_ttl: Duration::from_secs(900),
    }
}

pub fn login_state(store: &UserStore) -> Login {
    Login {
        users: store.clone(),
        passwords: hasher(),
        tokens: TokenIssuer::new(&token_config()).unwrap(),
    }
}

pub fn get_name_state(store: &UserStore) -> GetName {
    GetName {
        users: store.clone(),
        tokens: TokenVerifier::new(&token_config()).unwrap(),
    }
}

pub fn event_text(name: &str) -> String {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The request API Gateway would hand the function for `events/<name>`.
pub fn event(name: &str) -> Request {
    lambda_http::request::from_str(&event_text(name))
        .unwrap_or_else(|e| panic!("events/{name}: {e}"))
}

/// `events/<name>` with its JSON body replaced.
pub fn event_with_body(name: &str, body: &str) -> Request {
    let mut json: serde_json::Value = serde_json::from_str(&event_text(name)).unwrap();
    json["body"] = body.into();
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

/// `events/<name>` with its Authorization header set (or removed, for `None`).
pub fn event_with_auth(name: &str, authorization: Option<&str>) -> Request {
    let mut json: serde_json::Value = serde_json::from_str(&event_text(name)).unwrap();
    let headers = json["headers"].as_object_mut().unwrap();
    match authorization {
        Some(value) => headers.insert("authorization".into(), value.into()),
        None => headers.remove("authorization"),
    };
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

pub fn body_json(response: &Response<Body>) -> serde_json::Value {
    let bytes: &[u8] = match response.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => b"",
    };
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {bytes:?}"))
}

pub fn body_bytes(response: &Response<Body>) -> Vec<u8> {
    match response.body() {
        Body::Text(text) => text.as_bytes().to_vec(),
        Body::Binary(bytes) => bytes.clone(),
        _ => Vec::new(),
    }
}

/// Asserts the one error shape: JSON with a stable code and a message.
pub fn assert_error(response: &Response<Body>, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(response.status(), status, "body: {}", body_json(response));
    assert_eq!(response.headers()["content-type"], "application/json");
    let json = body_json(response);
    assert_eq!(json["error"], code, "{json}");
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    json
}
