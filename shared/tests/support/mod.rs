//! Shared by the integration tests: the DynamoDB Local that `make test` started,
//! a fresh table per test, users, tokens and requests built from `events/`.
#![allow(dead_code)]

use std::time::Duration;

use auth::clock::Clock;
use auth::config::{StoreConfig, TokenConfig};
use auth::handlers::change_password::ChangePassword;
use auth::handlers::get_name::GetName;
use auth::handlers::login::Login;
use auth::handlers::logout::Logout;
use auth::handlers::refresh::Refresh;
use auth::handlers::register::Register;
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::sessions::SessionConfig;
use auth::store::aws_sdk_dynamodb::Client;
use auth::store::aws_sdk_dynamodb::config::{Credentials, Region};
use auth::store::{Store, create_table, sdk_config_loader};
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
pub async fn fresh_store() -> Store {
    let client = local_client().await;
    let table = format!("test-{}", uuid::Uuid::new_v4());
    create_table(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("cannot create a table on DynamoDB Local: {e}"));
    Store::new(client, table)
}

pub fn hasher() -> PasswordHasher {
    PasswordHasher::new(BcryptCost::new(10).unwrap())
}

pub async fn add_user(store: &Store, username: &str, name: &str, password: &str) -> User {
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

pub fn session_config() -> SessionConfig {
    SessionConfig {
        refresh_ttl: Duration::from_secs(30 * 24 * 3600),
        reuse_grace: Duration::from_secs(10),
    }
}

/// Every handler's state over one store and one clock.
pub struct App {
    pub store: Store,
    pub clock: Clock,
    pub sessions: SessionConfig,
}

impl App {
    pub fn new(store: &Store) -> Self {
        App::with_clock(store, Clock::system())
    }

    pub fn with_clock(store: &Store, clock: Clock) -> Self {
        App {
            store: store.clone(),
            clock,
            sessions: session_config(),
        }
    }

    pub fn login(&self) -> Login {
        Login {
            store: self.store.clone(),
            passwords: hasher(),
            tokens: TokenIssuer::new(&token_config()).unwrap(),
            sessions: self.sessions.clone(),
            clock: self.clock.clone(),
        }
    }

    pub fn get_name(&self) -> GetName {
        GetName {
            store: self.store.clone(),
            tokens: TokenVerifier::new(&token_config()).unwrap(),
            clock: self.clock.clone(),
        }
    }

    pub fn register(&self) -> Register {
        Register {
            store: self.store.clone(),
            passwords: hasher(),
        }
    }

    pub fn refresh(&self) -> Refresh {
        Refresh {
            store: self.store.clone(),
            tokens: TokenIssuer::new(&token_config()).unwrap(),
            sessions: self.sessions.clone(),
            clock: self.clock.clone(),
        }
    }

    pub fn logout(&self) -> Logout {
        Logout {
            store: self.store.clone(),
            tokens: TokenVerifier::new(&token_config()).unwrap(),
            clock: self.clock.clone(),
        }
    }

    pub fn change_password(&self) -> ChangePassword {
        ChangePassword {
            store: self.store.clone(),
            passwords: hasher(),
            verifier: TokenVerifier::new(&token_config()).unwrap(),
            issuer: TokenIssuer::new(&token_config()).unwrap(),
            sessions: self.sessions.clone(),
            clock: self.clock.clone(),
        }
    }
}

pub fn login_state(store: &Store) -> Login {
    App::new(store).login()
}

pub fn get_name_state(store: &Store) -> GetName {
    App::new(store).get_name()
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

/// `events/<name>` with the Authorization header set (or removed) and, when
/// given, the body replaced.
pub fn request(name: &str, authorization: Option<&str>, body: Option<&str>) -> Request {
    let mut json: serde_json::Value = serde_json::from_str(&event_text(name)).unwrap();
    let headers = json["headers"].as_object_mut().unwrap();
    match authorization {
        Some(value) => headers.insert("authorization".into(), value.into()),
        None => headers.remove("authorization"),
    };
    if let Some(body) = body {
        json["body"] = body.into();
    }
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
