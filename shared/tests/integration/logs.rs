//! Logs: one structured line per request (request id, route, status, latency,
//! user id when known), and nothing secret in any line: no password, hash,
//! token or key material, across login, refresh, register, password change
//! and get-name.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::support::*;
use auth::handlers::{change_password, get_name, login, refresh, register};
use auth::runtime;
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn request_logs_are_structured_and_never_carry_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    // The JSON format Lambda's advanced logging controls ask for.
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = fresh_store().await;
    let app = App::new(&store);
    let password = "log-test password 1";
    let new_password = "log-test password 2";
    let mut secrets = vec![password.to_owned(), new_password.to_owned()];

    let body =
        json!({"username": "logged", "password": password, "name": "Logged User"}).to_string();
    let state = app.register();
    let response = runtime::handle(
        &|r| register::handle(&state, r),
        request("register.json", None, Some(&body)),
    )
    .await;
    assert_eq!(response.status(), 201);
    let user_id = body_json(&response)["id"].as_str().unwrap().to_owned();
    let stored = store
        .get(&auth::users::Username::parse("logged").unwrap())
        .await
        .unwrap()
        .unwrap();
    secrets.push(stored.password_hash.clone());

    let state = app.login();
    let login_body = json!({"username": "logged", "password": password}).to_string();
    let wrong = json!({"username": "logged", "password": "wrong password here"}).to_string();
    secrets.push("wrong password here".into());
    runtime::handle(
        &|r| login::handle(&state, r),
        request("login.json", None, Some(&wrong)),
    )
    .await;
    let response = runtime::handle(
        &|r| login::handle(&state, r),
        request("login.json", None, Some(&login_body)),
    )
    .await;
    let tokens = body_json(&response);
    let (access, refresh_token) = (
        tokens["access_token"].as_str().unwrap().to_owned(),
        tokens["refresh_token"].as_str().unwrap().to_owned(),
    );
    secrets.extend([access.clone(), refresh_token.clone()]);

    let state = app.get_name();
    let response = runtime::handle(
        &|r| get_name::handle(&state, r),
        request("get-name.json", Some(&bearer(&access)), None),
    )
    .await;
    assert_eq!(response.status(), 200);

    let state = app.refresh();
    let refresh_body = json!({"refresh_token": refresh_token}).to_string();
    let response = runtime::handle(
        &|r| refresh::handle(&state, r),
        request("refresh.json", None, Some(&refresh_body)),
    )
    .await;
    let refreshed = body_json(&response);
    let new_access = refreshed["access_token"].as_str().unwrap().to_owned();
    secrets.extend([
        new_access.clone(),
        refreshed["refresh_token"].as_str().unwrap().to_owned(),
    ]);

    let state = app.change_password();
    let change = json!({"current_password": password, "new_password": new_password}).to_string();
    let response = runtime::handle(
        &|r| change_password::handle(&state, r),
        request("password.json", Some(&bearer(&new_access)), Some(&change)),
    )
    .await;
    assert_eq!(response.status(), 200);
    let changed = body_json(&response);
    secrets.extend([
        changed["access_token"].as_str().unwrap().to_owned(),
        changed["refresh_token"].as_str().unwrap().to_owned(),
    ]);
    let after = store
        .get(&auth::users::Username::parse("logged").unwrap())
        .await
        .unwrap()
        .unwrap();
    secrets.push(after.password_hash.clone());

    drop(_guard);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret is in the logs: {}…",
            &secret[..8.min(secret.len())]
        );
        // Nor its JWT signing input, nor the hash's salt.
        if let Some((head, _)) = secret.rsplit_once('.') {
            assert!(
                !text.contains(head),
                "a token's header.payload is in the logs"
            );
        }
    }
    for marker in ["$2b$", "PRIVATE KEY", "eyJ", "password_hash"] {
        assert!(!text.contains(marker), "{marker:?} is in the logs");
    }
    assert!(!text.contains(&our_key().private_pem[40..80]));

    // One line per request, with what an operator needs.
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let done: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request done")
        .collect();
    assert_eq!(
        done.len(),
        6,
        "register, two logins, get_name, refresh, password"
    );
    for line in &done {
        assert!(line["fields"]["status"].as_u64().is_some(), "{line}");
        assert!(line["fields"]["latency_ms"].as_f64().is_some(), "{line}");
        assert!(
            line["span"]["route"]
                .as_str()
                .unwrap()
                .starts_with("POST /")
                || line["span"]["route"] == "GET /get_name",
            "{line}"
        );
        assert!(line["span"].get("request_id").is_some(), "{line}");
    }
    let with_user: Vec<&&Value> = done
        .iter()
        .filter(|l| l["span"]["user_id"] == user_id.as_str())
        .collect();
    assert_eq!(
        with_user.len(),
        5,
        "all but the failed login know the user: {done:?}"
    );
}
