//! End to end: real HTTP to the routed `cargo lambda watch` that `make test`
//! started, whose functions run against the run's DynamoDB Local.

mod support;

use std::time::Duration;

use auth::config::TokenConfig;
use auth::store::{UserStore, create_table};
use auth::tokens::TokenVerifier;
use support::*;
use ureq::Agent;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> Agent {
    // The first request may start the function process: be generous.
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn url(path: &str) -> String {
    format!("{}{path}", required_env("WATCH_URL"))
}

fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut response = result.unwrap_or_else(|e| panic!("request to the watch failed: {e}"));
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    headers.sort();
    Reply {
        status: response.status().as_u16(),
        headers,
        body: response.body_mut().read_to_string().unwrap(),
    }
}

fn post_login(body: &str) -> Reply {
    reply(
        agent()
            .post(&url("/login"))
            .header("content-type", "application/json")
            .send(body),
    )
}

fn get_name(authorization: Option<&str>) -> Reply {
    let mut request = agent().get(&url("/get_name"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    reply(request.call())
}

/// A user of its own in the table the watch's functions use.
fn seed_user(prefix: &str, password: &str) -> String {
    let username = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = local_client().await;
        let table = required_env("E2E_TABLE_NAME");
        create_table(&client, &table).await.unwrap();
        add_user(
            &UserStore::new(client, table),
            &username,
            "End To End",
            password,
        )
        .await;
    });
    username
}

fn watch_token_config() -> TokenConfig {
    TokenConfig {
        secret: required_env("E2E_JWT_SECRET").into_bytes(),
        issuer: required_env("E2E_JWT_ISSUER"),
        audience: required_env("E2E_JWT_AUDIENCE"),
        access_token_ttl: Duration::from_secs(900),
    }
}

#[test]
fn login_then_get_name_over_http() {
    let username = seed_user("e2e", "e2e-password-1");
    let login = post_login(
        &serde_json::json!({"username": username, "password": "e2e-password-1"}).to_string(),
    );
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.header("content-type"), Some("application/json"));
    let json = login.json();
    assert_eq!(json["message"], "Login Success");
    assert_eq!(json["token_type"], "Bearer");
    let token = json["access_token"].as_str().unwrap();
    let claims = TokenVerifier::new(&watch_token_config())
        .unwrap()
        .verify(token)
        .unwrap();
    assert_eq!(claims.username, username);

    let found = get_name(Some(&format!("Bearer {token}")));
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(
        found.json(),
        serde_json::json!({"message": "User found", "name": "End To End"})
    );
}

#[test]
fn wrong_password_and_unknown_user_look_the_same_over_http() {
    let username = seed_user("e2e-fail", "e2e-password-2");
    let wrong =
        post_login(&serde_json::json!({"username": username, "password": "nope-nope"}).to_string());
    let unknown = post_login(r#"{"username": "e2e-nobody-at-all", "password": "nope-nope"}"#);
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "login_failed");
    assert_eq!(wrong.body, unknown.body);
    let strip = |r: &Reply| -> Vec<(String, String)> {
        // The emulator adds per-request headers of its own; compare the rest.
        r.headers
            .iter()
            .filter(|(k, _)| !["date", "x-amzn-requestid", "content-length"].contains(&k.as_str()))
            .cloned()
            .collect()
    };
    assert_eq!(strip(&wrong), strip(&unknown));
}

#[test]
fn main_failures_over_http_are_json_errors() {
    let bad_json = post_login("{not json");
    assert_eq!(bad_json.status, 400);
    assert_eq!(bad_json.json()["error"], "invalid_request");

    let no_token = get_name(None);
    assert_eq!(no_token.status, 401);
    assert_eq!(no_token.json()["error"], "missing_token");
    assert_eq!(
        no_token.header("www-authenticate"),
        Some("Bearer realm=\"auth\"")
    );

    let garbage = get_name(Some("Bearer not.a.token"));
    assert_eq!(garbage.status, 401);
    assert!(
        garbage
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );

    let wrong_method = reply(agent().get(&url("/login")).call());
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    assert_eq!(wrong_method.json()["error"], "method_not_allowed");

    let wrong_method = reply(agent().delete(&url("/get_name")).call());
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET"));
}
