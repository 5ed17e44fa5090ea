//! Fault injection by call index: for each handler, its 1st, 2nd, … DynamoDB
//! operation fails in each way (connection dropped; hanging past a short
//! timeout; throttled; a transaction cancelled; done but its answer lost),
//! through a proxy in front of
//! DynamoDB Local that forwards every other call. Afterwards the store is
//! checked, not only the status:
//! - after a 5xx, every item is as it was, but for attempt and rate counters,
//!   which may only have gone up;
//! - an attempt count never goes down but by a success;
//! - every session has its refresh tokens, every refresh token its session, and
//!   no refresh family has two live tokens.
//!
//! An operation is one SDK call with its retries (one `amz-sdk-invocation-id`):
//! a faulted operation fails on every attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sessions::{PASSWORD, Tokens, log_in, session, user_in};
use crate::support::*;
use auth::aws::SdkSettings;
use auth::clock::Clock;
use auth::handlers::login::Login;
use auth::handlers::{change_password, login, logout, refresh, register};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::store::Store;
use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::join_all;
use lambda_http::{Body, Request, Response};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The connection closes without an answer.
    Dropped,
    /// No answer until the client gives up.
    Hang,
    /// 400 ThrottlingException.
    Throttled,
    /// TransactionCanceledException (TransactionConflict): transactions only.
    Cancelled,
    /// TransactionCanceledException (ThrottlingError): how DynamoDB answers a
    /// transaction with a throttled item (hot items only).
    ThrottledTransaction,
    /// The call reaches DynamoDB and is done, but its answer is lost: the
    /// connection closes. A write that happened, reported as failed.
    Lost,
}

const FAULTS: [Fault; 5] = [
    Fault::Dropped,
    Fault::Hang,
    Fault::Throttled,
    Fault::Cancelled,
    Fault::Lost,
];

fn short_timeouts() -> SdkSettings {
    SdkSettings {
        attempt_timeout: Duration::from_millis(300),
        operation_timeout: Duration::from_secs(1),
        max_attempts: 3,
        trust: auth::trust::TrustRoots::Amazon,
    }
}

/// What the proxy saw: each operation's target, in order of first sight.
#[derive(Default)]
struct Seen {
    operations: Vec<(String, String)>, // (invocation id, target)
}

struct Proxy {
    endpoint: String,
    seen: Arc<Mutex<Seen>>,
}

/// A proxy to `upstream` that fails every attempt of operation number
/// `fault_at` (1-based) with `fault`, when that operation is one the fault
/// applies to; and, with `hot`, throttles every request that names that key
/// (one hot item: DynamoDB throttles by partition, and an item is in one).
async fn proxy(
    upstream: String,
    fault_at: Option<(usize, Fault)>,
    hot: Option<&'static str>,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(
                socket,
                upstream.clone(),
                fault_at,
                hot,
                shared.clone(),
            ));
        }
    });
    Proxy { endpoint, seen }
}

async fn serve(
    mut socket: TcpStream,
    upstream: String,
    fault_at: Option<(usize, Fault)>,
    hot: Option<&'static str>,
    seen: Arc<Mutex<Seen>>,
) {
    while let Some((head, request)) = read_http_request(&mut socket).await {
        let invocation = http_header(&head, "amz-sdk-invocation-id").unwrap_or_default();
        let target = http_header(&head, "x-amz-target").unwrap_or_default();
        let index = {
            let mut seen = seen.lock().unwrap();
            match seen.operations.iter().position(|(id, _)| *id == invocation) {
                Some(i) => i + 1,
                None => {
                    seen.operations.push((invocation, target.clone()));
                    seen.operations.len()
                }
            }
        };
        let names_hot = hot.is_some_and(|key| {
            request
                .windows(key.len())
                .any(|window| window == key.as_bytes())
        });
        let fault = fault_at
            .filter(|(at, _)| *at == index)
            .map(|(_, fault)| fault)
            .filter(|f| *f != Fault::Cancelled || target.ends_with("transactwriteitems"))
            .or(names_hot.then_some(
                // DynamoDB cancels a transaction with a throttled item.
                if target.ends_with("transactwriteitems") {
                    Fault::ThrottledTransaction
                } else {
                    Fault::Throttled
                },
            ));
        let response = match fault {
            None => forward(&upstream, &request).await,
            Some(Fault::Dropped) => return,
            Some(Fault::Lost) => {
                let _ = forward(&upstream, &request).await;
                return;
            }
            Some(Fault::Hang) => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            Some(Fault::Throttled) => Some(dynamodb_error(
                "ThrottlingException",
                r#""message":"Rate of requests exceeds the allowed throughput.""#,
            )),
            Some(Fault::ThrottledTransaction) => Some(dynamodb_error(
                "TransactionCanceledException",
                r#""message":"Transaction cancelled","CancellationReasons":[{"Code":"None"},{"Code":"ThrottlingError","Message":"Throughput exceeds the current capacity for one or more global secondary indexes."}]"#,
            )),
            Some(Fault::Cancelled) => Some(dynamodb_error(
                "TransactionCanceledException",
                r#""message":"Transaction cancelled","CancellationReasons":[{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}]"#,
            )),
        };
        let Some(response) = response else { return };
        if socket.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// Sends the request as it came, on a connection of its own, and returns
/// the whole answer. The answer keeps the connection open only if upstream did.
async fn forward(upstream: &str, request: &[u8]) -> Option<Vec<u8>> {
    let address = upstream.trim_start_matches("http://");
    let mut connection = TcpStream::connect(address).await.ok()?;
    // One request per upstream connection: close it after the answer.
    let text = String::from_utf8_lossy(request);
    let split = text.find("\r\n").unwrap_or(0);
    let mut rewritten = request[..split + 2].to_vec();
    rewritten.extend_from_slice(b"Connection: close\r\n");
    rewritten.extend_from_slice(&request[split + 2..]);
    connection.write_all(&rewritten).await.ok()?;
    let mut response = Vec::new();
    connection.read_to_end(&mut response).await.ok()?;
    // Tell our client to keep its connection: drop upstream's "close".
    let text = String::from_utf8_lossy(&response).into_owned();
    let end = text.find("\r\n\r\n")?;
    let head: String = text[..end]
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&response[end..]);
    Some(out)
}

type Items = HashMap<(String, String), HashMap<String, AttributeValue>>;

async fn snapshot(table: &str) -> Items {
    let client = local_client().await;
    let mut items = Items::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let key = (
                item["pk"].as_s().unwrap().clone(),
                item["sk"].as_s().unwrap().clone(),
            );
            items.insert(key, item.clone());
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn is_counter(pk: &str) -> bool {
    pk.starts_with("LOCK#") || pk.starts_with("RATE#")
}

/// The invariants; returns what is wrong.
fn violations(before: &Items, after: &Items, status: u16) -> Vec<String> {
    let mut wrong = Vec::new();
    if status >= 500 {
        for (key, item) in before {
            if is_counter(&key.0) {
                continue;
            }
            if after.get(key) != Some(item) {
                wrong.push(format!("{key:?} changed behind a {status}"));
            }
        }
        for key in after.keys() {
            if !before.contains_key(key) && !is_counter(&key.0) {
                wrong.push(format!("{key:?} created behind a {status}"));
            }
        }
    }
    for (key, item) in before {
        let counter = match key.0.split('#').next() {
            Some("LOCK") => "failures",
            Some("RATE") => "hits",
            _ => continue,
        };
        let now = after.get(key).map(|i| number(i, counter));
        let cleared_by_success = counter == "failures" && status == 200 && now.is_none();
        if !cleared_by_success && now.is_none_or(|n| n < number(item, counter)) {
            wrong.push(format!("{key:?} {counter} went down behind a {status}"));
        }
    }
    let mut live: HashMap<String, usize> = HashMap::new();
    let mut tokens: HashMap<String, usize> = HashMap::new();
    for ((pk, _), item) in after {
        if pk.starts_with("REFRESH#") {
            let sid = item["session_id"].as_s().unwrap().clone();
            *tokens.entry(sid.clone()).or_default() += 1;
            if item["token_state"].as_s().unwrap() == "active" {
                *live.entry(sid).or_default() += 1;
            }
        }
    }
    for (pk, _) in after.keys() {
        if let Some(sid) = pk.strip_prefix("SESSION#")
            && !tokens.contains_key(sid)
        {
            wrong.push(format!("session {sid} has no refresh token"));
        }
    }
    for (sid, count) in &tokens {
        if !after.contains_key(&(format!("SESSION#{sid}"), "SESSION".to_owned())) {
            wrong.push(format!(
                "{count} refresh token(s) of a missing session {sid}"
            ));
        }
    }
    for (sid, count) in live {
        if count > 1 {
            wrong.push(format!("session {sid} has {count} live refresh tokens"));
        }
    }
    wrong
}

/// One handler's request, set up on a fresh table through the direct store,
/// then run through `store` (the proxy's).
#[derive(Clone, Copy, Debug)]
enum Scenario {
    LoginWithRehash,
    LoginWrongPassword,
    Register,
    Refresh,
    LogoutWithAnotherSession,
    LogoutEverywhere,
    ChangePassword,
}

const SCENARIOS: [Scenario; 7] = [
    Scenario::LoginWithRehash,
    Scenario::LoginWrongPassword,
    Scenario::Register,
    Scenario::Refresh,
    Scenario::LogoutWithAnotherSession,
    Scenario::LogoutEverywhere,
    Scenario::ChangePassword,
];

impl Scenario {
    /// The status it gets when nothing fails.
    fn normal(self) -> u16 {
        match self {
            Scenario::LoginWrongPassword => 401,
            Scenario::Register => 201,
            _ => 200,
        }
    }

    /// Sets up on `direct`; returns the request to send.
    async fn prepare(self, direct: &Store) -> Request {
        let app = App::with_clock(direct, Clock::system());
        user_in(direct, "matrix").await;
        // Earlier failures, so that a lost or reset count would show.
        for _ in 0..2 {
            log_in(&app, "matrix", "wrong").await;
        }
        let body = |value: serde_json::Value| Some(value.to_string());
        let (name, auth, body) = match self {
            Scenario::LoginWithRehash | Scenario::LoginWrongPassword => {
                let password = match self {
                    Scenario::LoginWithRehash => PASSWORD,
                    _ => "another wrong guess",
                };
                (
                    "login.json",
                    None,
                    body(json!({"username": "matrix", "password": password})),
                )
            }
            Scenario::Register => (
                "register.json",
                None,
                body(json!({"username": "newcomer", "password": "a long passphrase", "name": "N"})),
            ),
            Scenario::Refresh => {
                let tokens = session(&app, "matrix").await;
                (
                    "refresh.json",
                    None,
                    body(json!({"refresh_token": tokens.refresh})),
                )
            }
            Scenario::LogoutWithAnotherSession => {
                let current = session(&app, "matrix").await;
                let other = session(&app, "matrix").await;
                (
                    "logout.json",
                    Some(bearer(&current.access)),
                    body(json!({"refresh_token": other.refresh})),
                )
            }
            Scenario::LogoutEverywhere => {
                let current: Tokens = session(&app, "matrix").await;
                (
                    "logout.json",
                    Some(bearer(&current.access)),
                    body(json!({"all": true})),
                )
            }
            Scenario::ChangePassword => {
                let current = session(&app, "matrix").await;
                (
                    "password.json",
                    Some(bearer(&current.access)),
                    body(json!({"current_password": PASSWORD, "new_password": "a new passphrase"})),
                )
            }
        };
        request(name, auth.as_deref(), body.as_deref())
    }

    async fn run(self, store: &Store, req: Request) -> Response<Body> {
        let app = App::new(store);
        match self {
            Scenario::LoginWithRehash | Scenario::LoginWrongPassword => {
                // A stronger configured cost: a successful login also rehashes.
                let state = Login {
                    passwords: PasswordHasher::new(BcryptCost::new(11).unwrap()),
                    ..app.login()
                };
                login::handle(&state, req).await
            }
            Scenario::Register => register::handle(&app.register(), req).await,
            Scenario::Refresh => refresh::handle(&app.refresh(), req).await,
            Scenario::LogoutWithAnotherSession | Scenario::LogoutEverywhere => {
                logout::handle(&app.logout(), req).await
            }
            Scenario::ChangePassword => change_password::handle(&app.account(), req).await,
        }
    }
}

/// Runs `scenario` with `fault` at operation `at`; returns what it saw and
/// what is wrong.
async fn case(scenario: Scenario, fault: Option<(usize, Fault)>) -> (Vec<String>, Vec<String>) {
    let (targets, wrong, _) = case_with(scenario, fault, None).await;
    (targets, wrong)
}

/// `case`, with a hot key too; also returns the response.
async fn case_with(
    scenario: Scenario,
    fault: Option<(usize, Fault)>,
    hot: Option<&'static str>,
) -> (Vec<String>, Vec<String>, Response<Body>) {
    let direct = fresh_store().await;
    let req = scenario.prepare(&direct).await;
    let proxy = proxy(required_env("DYNAMODB_TEST_ENDPOINT"), fault, hot).await;
    let client = client_for(&proxy.endpoint, &short_timeouts()).await;
    let store = Store::new(client, direct.table());
    let before = snapshot(direct.table()).await;
    let response = scenario.run(&store, req).await;
    let status = response.status().as_u16();
    let after = snapshot(direct.table()).await;
    let mut wrong = violations(&before, &after, status);
    if status != scenario.normal() && status != 503 {
        wrong.push(format!("status {status}: {}", body_json(&response)));
    }
    if status == 503 {
        assert_error(&response, 503, "service_unavailable");
    }
    let targets = proxy
        .seen
        .lock()
        .unwrap()
        .operations
        .iter()
        .map(|(_, t)| t.rsplit('.').next().unwrap_or("").to_owned())
        .collect();
    let label = format!("{scenario:?} fault {fault:?} hot {hot:?} -> {status}");
    (
        targets,
        wrong.into_iter().map(|w| format!("{label}: {w}")).collect(),
        response,
    )
}

/// One item is hot: DynamoDB throttles every request naming its key, after
/// the SDK's retries too (a guessing flood against one username's attempt
/// record; one user's item read by a storm of requests). Every request that
/// needs it answers 503 with `Retry-After`, the store is whole, and requests
/// that do not touch it go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_item_throttled_by_dynamodb_gets_503_with_retry_after_and_nothing_half_written() {
    let cases = [
        ("LOCK#matrix", Scenario::LoginWithRehash),
        ("LOCK#matrix", Scenario::LoginWrongPassword),
        ("LOCK#matrix", Scenario::ChangePassword),
        ("USER#matrix", Scenario::LoginWithRehash),
        ("USER#matrix", Scenario::Refresh),
        ("USER#matrix", Scenario::LogoutEverywhere),
        ("USER#matrix", Scenario::ChangePassword),
    ];
    let runs = cases
        .into_iter()
        .map(|(hot, scenario)| case_with(scenario, None, Some(hot)));
    let mut problems = Vec::new();
    for (_, wrong, response) in join_all(runs).await {
        problems.extend(wrong);
        if response.status() == 503 {
            assert!(response.headers().contains_key("retry-after"));
        } else {
            problems.push(format!(
                "not 503 but {}: {}",
                response.status(),
                body_json(&response)
            ));
        }
    }
    // Another user's item is not hot: a registration goes through the same proxy.
    let (_, wrong, response) = case_with(Scenario::Register, None, Some("LOCK#matrix")).await;
    problems.extend(wrong);
    assert_eq!(response.status(), 201, "{}", body_json(&response));

    // A hot item that only the final transaction names (every transaction is
    // cancelled with ThrottlingError, as DynamoDB reports it): 503, counted
    // as a throttled dependency call like any other.
    let capture = auth::metrics::capture();
    for scenario in [Scenario::LoginWithRehash, Scenario::Refresh] {
        let (_, wrong, response) = case_with(scenario, None, Some("TransactItems")).await;
        problems.extend(wrong);
        assert_eq!(response.status(), 503, "{}", body_json(&response));
    }
    let throttled = capture
        .take()
        .into_iter()
        .filter(|l| {
            l["DependencyErrors"] == 1 && l["Kind"] == "throttled" && l["Service"] == "dynamodb"
        })
        .count();
    assert!(
        throttled >= 2,
        "throttled transactions counted: {throttled}"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_handler_keeps_the_store_whole_when_any_of_its_calls_fails() {
    let mut problems = Vec::new();
    let mut cells = 0;
    for scenario in SCENARIOS {
        // A clean run says how many operations the handler makes.
        let (operations, wrong) = case(scenario, None).await;
        problems.extend(wrong);
        assert!(!operations.is_empty(), "{scenario:?} made no call");
        let mut runs = Vec::new();
        for (index, target) in operations.iter().enumerate() {
            for fault in FAULTS {
                if fault == Fault::Cancelled && target != "transactwriteitems" {
                    continue; // only a transaction can be cancelled
                }
                runs.push(case(scenario, Some((index + 1, fault))));
            }
        }
        cells += runs.len();
        println!("{scenario:?}: operations {operations:?}");
        for (_, wrong) in join_all(runs).await {
            problems.extend(wrong);
        }
    }
    println!("{cells} faulted runs");
    assert!(cells >= 100, "the matrix ran {cells} cells");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
