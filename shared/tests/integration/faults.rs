//! DynamoDB in trouble: a stub endpoint inside the test refuses connections,
//! hangs, or throttles. Each must give a 503 JSON error within a bound (5x the
//! configured operation timeout: liveness, not a tight timing), never a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use auth::aws::SdkSettings;
use auth::handlers::{get_name, login};
use auth::store::Store;
use auth::users::{User, Username};
use lambda_http::{Body, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

#[derive(Clone, Copy)]
enum Fault {
    Refuse,
    Hang,
    Throttle,
}

impl Fault {
    /// The `Kind` of the DependencyErrors metric this fault must produce.
    fn metric_kind(self) -> &'static str {
        match self {
            Fault::Refuse => "unavailable",
            Fault::Hang => "timeout",
            Fault::Throttle => "throttled",
        }
    }
}

/// The handler counted the dependency's trouble: valid EMF lines of
/// DependencyErrors for `service`, of the fault's kind, and no other kind.
fn assert_dependency_errors(capture: &auth::metrics::Capture, service: &str, fault: Fault) {
    let lines: Vec<_> = capture
        .take()
        .into_iter()
        .filter(|line| line.get(auth::metrics::DEPENDENCY_ERRORS).is_some())
        .collect();
    assert!(!lines.is_empty(), "no DependencyErrors line");
    for line in &lines {
        assert_eq!(
            auth::metrics::check_emf(line),
            Ok(vec![auth::metrics::DEPENDENCY_ERRORS.to_owned()])
        );
        assert_eq!(line["Service"], service, "{line}");
        assert_eq!(line["Kind"], fault.metric_kind(), "{line}");
    }
}

fn fault_settings() -> SdkSettings {
    SdkSettings {
        attempt_timeout: Duration::from_millis(300),
        operation_timeout: Duration::from_secs(1),
        max_attempts: 3,
        trust: auth::trust::TrustRoots::Amazon,
    }
}

/// Starts the stub; returns its endpoint and a count of the requests it received.
async fn stub(fault: Fault) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    match fault {
        // Nothing listens on the port any more: connections are refused.
        Fault::Refuse => drop(listener),
        Fault::Hang | Fault::Throttle => {
            let requests = requests.clone();
            tokio::spawn(async move {
                loop {
                    let (socket, _) = listener.accept().await.unwrap();
                    tokio::spawn(serve(socket, fault, requests.clone()));
                }
            });
        }
    }
    (endpoint, requests)
}

async fn serve(mut socket: tokio::net::TcpStream, fault: Fault, requests: Arc<AtomicUsize>) {
    while read_http_request(&mut socket).await.is_some() {
        requests.fetch_add(1, Ordering::SeqCst);
        match fault {
            Fault::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Fault::Throttle => {
                let response = dynamodb_error(
                    "ThrottlingException",
                    r#""message":"Rate of requests exceeds the allowed throughput.""#,
                );
                if socket.write_all(&response).await.is_err() {
                    return;
                }
            }
            Fault::Refuse => unreachable!(),
        }
    }
}

async fn faulty_store(fault: Fault) -> (Store, Arc<AtomicUsize>) {
    let (endpoint, requests) = stub(fault).await;
    let client = client_for(&endpoint, &fault_settings()).await;
    (Store::new(client, "users"), requests)
}

fn assert_unavailable_in_time(response: &Response<Body>, started: Instant) {
    let bound = fault_settings().operation_timeout * 5;
    assert!(
        started.elapsed() < bound,
        "took {:?}, bound {bound:?}",
        started.elapsed()
    );
    let json = assert_error(response, 503, "service_unavailable");
    let text = json.to_string();
    for internal in ["Throttling", "dispatch", "timeout", "127.0.0.1"] {
        assert!(!text.contains(internal), "internals leak: {text}");
    }
    assert!(response.headers().contains_key("retry-after"));
}

async fn login_under(fault: Fault) -> Arc<AtomicUsize> {
    let (store, requests) = faulty_store(fault).await;
    let body = r#"{"username": "alice", "password": "whatever-password"}"#;
    let started = Instant::now();
    let response = login::handle(&login_state(&store), event_with_body("login.json", body)).await;
    assert_unavailable_in_time(&response, started);
    requests
}

async fn get_name_under(fault: Fault) {
    let (store, _) = faulty_store(fault).await;
    let user = User::new(
        Username::parse("alice").unwrap(),
        "Alice".into(),
        "h".into(),
    );
    let token = issuer()
        .issue(
            &user,
            "session-1",
            auth::clock::system_now(),
            &[],
            auth::clock::system_now(),
        )
        .await
        .unwrap()
        .token;
    let request = event_with_auth("get-name.json", Some(&format!("Bearer {token}")));
    let started = Instant::now();
    let capture = auth::metrics::capture();
    let response = get_name::handle(&get_name_state(&store), request).await;
    assert_unavailable_in_time(&response, started);
    assert_dependency_errors(&capture, "dynamodb", fault);
}

#[tokio::test]
async fn login_answers_503_when_dynamodb_refuses_connections() {
    login_under(Fault::Refuse).await;
}

#[tokio::test]
async fn login_answers_503_when_dynamodb_hangs() {
    let requests = login_under(Fault::Hang).await;
    assert!(
        requests.load(Ordering::SeqCst) >= 1,
        "the stub was never reached"
    );
}

#[tokio::test]
async fn login_answers_503_when_dynamodb_throttles_and_retries_first() {
    let requests = login_under(Fault::Throttle).await;
    let seen = requests.load(Ordering::SeqCst);
    assert!(
        seen >= 2,
        "throttling should be retried, saw {seen} request(s)"
    );
    assert!(
        seen <= 3,
        "at most DYNAMODB_MAX_ATTEMPTS attempts, saw {seen}"
    );
}

#[tokio::test]
async fn get_name_answers_503_when_dynamodb_refuses_connections() {
    get_name_under(Fault::Refuse).await;
}

#[tokio::test]
async fn get_name_answers_503_when_dynamodb_hangs() {
    get_name_under(Fault::Hang).await;
}

#[tokio::test]
async fn get_name_answers_503_when_dynamodb_throttles() {
    get_name_under(Fault::Throttle).await;
}

/// The signer is KMS, and KMS is in trouble; DynamoDB is fine.
async fn login_with_kms_under(fault: Fault) {
    let store = fresh_store().await;
    add_user(&store, "alice", "Alice", "alice-password").await;
    let login = auth::handlers::login::Login {
        tokens: kms_issuer(fault).await,
        ..login_state(&store)
    };
    let body = r#"{"username": "alice", "password": "alice-password"}"#;
    let started = Instant::now();
    let capture = auth::metrics::capture();
    let response = login::handle(&login, event_with_body("login.json", body)).await;
    assert_unavailable_in_time(&response, started);
    assert_dependency_errors(&capture, "kms", fault);
}

/// A token issuer that signs with a KMS key behind a stub in trouble.
async fn kms_issuer(fault: Fault) -> auth::tokens::TokenIssuer {
    use auth::keys::{KeySource, Signer};
    let (endpoint, _) = stub(fault).await;
    let kms = aws_sdk_kms::Client::new(&sdk_for(&endpoint, &fault_settings()).await);
    let signer = Signer::new(
        &KeySource::Kms("1234abcd-12ab-34cd-56ef-1234567890ab".into()),
        &kms,
    )
    .unwrap();
    auth::tokens::TokenIssuer::new(signer, &token_config())
}

#[tokio::test]
async fn login_answers_503_when_kms_refuses_connections() {
    login_with_kms_under(Fault::Refuse).await;
}

#[tokio::test]
async fn login_answers_503_when_kms_hangs() {
    login_with_kms_under(Fault::Hang).await;
}

#[tokio::test]
async fn login_answers_503_when_kms_throttles() {
    login_with_kms_under(Fault::Throttle).await;
}

#[tokio::test]
async fn register_refresh_logout_and_password_answer_503_when_dynamodb_is_down() {
    let (store, _) = faulty_store(Fault::Refuse).await;
    let app = App::new(&store);
    let user = User::new(
        Username::parse("alice").unwrap(),
        "Alice".into(),
        "h".into(),
    );
    let token = issuer()
        .issue(
            &user,
            "session-1",
            auth::clock::system_now(),
            &[],
            auth::clock::system_now(),
        )
        .await
        .unwrap()
        .token;
    let auth = format!("Bearer {token}");
    let register_body =
        r#"{"username": "newcomer", "password": "a long enough passphrase", "name": "N"}"#;
    let refresh_body = r#"{"refresh_token": "some-refresh-token-value"}"#;
    let password_body = r#"{"current_password": "a", "new_password": "a brand new passphrase"}"#;
    let started = Instant::now();
    let responses = [
        auth::handlers::register::handle(
            &app.register(),
            request("register.json", None, Some(register_body)),
        )
        .await,
        auth::handlers::refresh::handle(
            &app.refresh(),
            request("refresh.json", None, Some(refresh_body)),
        )
        .await,
        auth::handlers::logout::handle(&app.logout(), request("logout.json", Some(&auth), None))
            .await,
        auth::handlers::change_password::handle(
            &app.account(),
            request("password.json", Some(&auth), Some(password_body)),
        )
        .await,
    ];
    for response in &responses {
        assert_unavailable_in_time(response, started);
    }
}

#[tokio::test]
async fn a_refresh_while_kms_is_down_rotates_nothing() {
    let store = fresh_store().await;
    add_user(&store, "bob", "Bob", "bob-password-1").await;
    let app = App::new(&store);
    let body = r#"{"username": "bob", "password": "bob-password-1"}"#;
    let login = login::handle(&app.login(), event_with_body("login.json", body)).await;
    let refresh_token = body_json(&login)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh_body = serde_json::json!({"refresh_token": refresh_token}).to_string();

    let broken = auth::handlers::refresh::Refresh {
        tokens: kms_issuer(Fault::Refuse).await,
        ..app.refresh()
    };
    let started = Instant::now();
    let response = auth::handlers::refresh::handle(
        &broken,
        request("refresh.json", None, Some(&refresh_body)),
    )
    .await;
    assert_unavailable_in_time(&response, started);
    // Nothing was written: the same refresh token still works once KMS is back.
    let again = auth::handlers::refresh::handle(
        &app.refresh(),
        request("refresh.json", None, Some(&refresh_body)),
    )
    .await;
    assert_eq!(again.status(), 200, "{}", body_json(&again));
}

#[tokio::test]
async fn a_login_that_cannot_sign_resets_no_attempt_count_and_starts_no_session() {
    let store = fresh_store().await;
    add_user(&store, "carol", "Carol", "carol-password").await;
    let app = App::new(&store);
    let wrong = r#"{"username": "carol", "password": "wrong-password"}"#;
    for _ in 0..2 {
        login::handle(&app.login(), event_with_body("login.json", wrong)).await;
    }
    let broken = auth::handlers::login::Login {
        tokens: kms_issuer(Fault::Refuse).await,
        ..app.login()
    };
    let right = r#"{"username": "carol", "password": "carol-password"}"#;
    let started = Instant::now();
    let capture = auth::metrics::capture();
    let response = login::handle(&broken, event_with_body("login.json", right)).await;
    assert_unavailable_in_time(&response, started);
    // The fault fired where it was meant to: KMS, after the password was proved.
    assert_dependency_errors(&capture, "kms", Fault::Refuse);
    assert_eq!(broken.passwords.verifications(), 1);
    let username = Username::parse("carol").unwrap();
    let record = store.failures(&username).await.unwrap().unwrap();
    assert_eq!(
        record.count, 3,
        "the attempt stays counted; nothing was cleared"
    );
    // No session and no refresh token was written.
    let items = local_client()
        .await
        .scan()
        .table_name(store.table())
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = items
        .items()
        .iter()
        .map(|item| item["pk"].as_s().unwrap().as_str())
        .collect();
    assert!(
        keys.iter()
            .all(|pk| !pk.starts_with("SESSION#") && !pk.starts_with("REFRESH#")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"USER#carol"),
        "the scan sees the table: {keys:?}"
    );
}

#[tokio::test]
async fn a_password_change_that_cannot_sign_changes_nothing() {
    let store = fresh_store().await;
    add_user(&store, "dave", "Dave", "dave-password").await;
    let app = App::new(&store);
    let body = r#"{"username": "dave", "password": "dave-password"}"#;
    let login = login::handle(&app.login(), event_with_body("login.json", body)).await;
    let access = body_json(&login)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let broken = auth::handlers::account::Account {
        issuer: kms_issuer(Fault::Refuse).await,
        ..app.account()
    };
    let change = r#"{"current_password": "dave-password", "new_password": "a new passphrase"}"#;
    let started = Instant::now();
    let response = auth::handlers::change_password::handle(
        &broken,
        request(
            "password.json",
            Some(&format!("Bearer {access}")),
            Some(change),
        ),
    )
    .await;
    assert_unavailable_in_time(&response, started);
    // The password is as it was, and the session still lives.
    let again = login::handle(&app.login(), event_with_body("login.json", body)).await;
    assert_eq!(again.status(), 200, "{}", body_json(&again));
    let name = get_name::handle(
        &app.get_name(),
        event_with_auth("get-name.json", Some(&format!("Bearer {access}"))),
    )
    .await;
    assert_eq!(name.status(), 200);
}
