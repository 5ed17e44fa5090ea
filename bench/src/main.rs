//! Benchmarks (`make bench` runs them all, beside the Flask peer; `make
//! bench-timing` runs `timing` alone). Every subcommand prints `metric: value`
//! lines; scripts/bench.sh collects them into one table.
//!
//! - `timing`: median login time, unknown users vs wrong passwords.
//! - `warm`: get-name's handler duration in process over 1,000 invocations,
//!   beside the one DynamoDB read it makes.
//! - `login`: a successful login beside the bare work it must do (a bcrypt
//!   verification at the same cost and the DynamoDB and signing calls).
//! - `cold <binary>`: exec of a release `bootstrap` to the completed response of
//!   its first invocation, through a real Lambda Runtime API
//!   (`cargo lambda watch --only-lambda-apis`), median of 10.
//! - `rss <binary> <event>`: peak RSS of a function process after a warm run.
//! - `cpu`: CPU time per invocation of each route (`make bench-capacity`).
//!
//! Needs `DYNAMODB_TEST_ENDPOINT`; `cold` and `rss` also `RUNTIME_API` (the
//! watch's address) and the function's settings in the environment.

mod cpu;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use auth::aws::{SdkSettings, sdk_config_loader};
use auth::clock::Clock;
use auth::config::TokenConfig;
use auth::handlers::get_name::{self, GetName};
use auth::handlers::login::{self, Login};
use auth::keys::{Signer, public_key_from_pem};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::sessions::SessionConfig;
use auth::store::{Store, create_table};
use auth::throttle::{RateLimits, Window};
use auth::tokens::{TokenIssuer, TokenVerifier};
use auth::users::{User, Username};
use aws_sdk_dynamodb::config::{Credentials, Region};

const PASSWORD: &str = "the real password 1";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.first().map(String::as_str) {
        Some("timing") => timing().await,
        Some("cpu") => cpu::run(),
        Some("warm") => warm().await,
        Some("login") => login_overhead().await,
        Some("cold") if args.len() == 3 => {
            warm_dynamodb_local().await;
            cold(&args[1], &args[2])
        }
        Some("rss") if args.len() == 4 => rss(&args[1], &args[2], args[3].parse().unwrap_or(100)),
        Some("token") => {
            println!("{}", token().await);
            true
        }
        _ => {
            eprintln!(
                "usage: auth-bench timing | warm | login | cpu | token | cold <binary> <event> | rss <binary> <event> <n>"
            );
            false
        }
    };
    std::process::exit(if ok { 0 } else { 1 });
}

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run make bench"))
}

/// A client of DynamoDB Local, with a connection pool of its own.
async fn dynamodb() -> aws_sdk_dynamodb::Client {
    let settings = SdkSettings {
        attempt_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(5),
        max_attempts: 3,
        trust: auth::trust::TrustRoots::Amazon,
    };
    let sdk = sdk_config_loader(&settings)
        .endpoint_url(env("DYNAMODB_TEST_ENDPOINT"))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "bench"))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

async fn store(table: Option<String>) -> Store {
    let client = dynamodb().await;
    let table = table.unwrap_or_else(|| format!("bench-{}", uuid::Uuid::new_v4()));
    create_table(&client, &table)
        .await
        .expect("cannot create a table on DynamoDB Local");
    Store::new(client, table)
}

/// DynamoDB Local is a JVM: its first requests run interpreted, a new
/// connection's first request slowest of all. The service it stands in for
/// is never cold, so it is warmed before our cold starts are timed: the read
/// get-name makes, 3,000 times, over 300 fresh connections (about 2 s).
async fn warm_dynamodb_local() {
    let (user, table) = (Username::parse("bench-user").unwrap(), env("BENCH_TABLE"));
    for _ in 0..300 {
        let store = Store::new(dynamodb().await, table.clone());
        for _ in 0..10 {
            store.get(&user).await.expect("DynamoDB Local");
        }
    }
}

fn event(name: &str) -> serde_json::Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

fn login_request(username: &str, password: &str) -> lambda_http::Request {
    let mut json = event("login.json");
    json["body"] = serde_json::json!({"username": username, "password": password})
        .to_string()
        .into();
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

fn get_name_request(token: &str) -> lambda_http::Request {
    let mut json = event("get-name.json");
    json["headers"]["authorization"] = format!("Bearer {token}").into();
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

fn token_config() -> TokenConfig {
    TokenConfig {
        issuer: std::env::var("JWT_ISSUER").unwrap_or_else(|_| "https://bench.test".into()),
        audience: std::env::var("JWT_AUDIENCE").unwrap_or_else(|_| "bench".into()),
        access_token_ttl: Duration::from_secs(900),
    }
}

/// The key pair of `BENCH_KEY` (a PEM file) if set, else a fresh one.
fn private_pem() -> String {
    match std::env::var("BENCH_KEY") {
        Ok(path) => std::fs::read_to_string(path).unwrap(),
        Err(_) => auth::keys::generate_pem_pair().unwrap().0,
    }
}

fn login_state(store: Store, cost: BcryptCost, pem: &str) -> Login {
    Login {
        store,
        passwords: PasswordHasher::new(cost),
        tokens: TokenIssuer::new(Signer::from_pem(pem, "bench").unwrap(), &token_config()),
        sessions: SessionConfig::from_source(&|_: &str| None).unwrap(),
        limits: RateLimits {
            login_per_minute: 1_000_000,
            register_per_hour: 1_000_000,
        },
        browser: auth::browser::BrowserPolicy::new(&["https://bench.invalid"]),
        clock: Clock::system(),
    }
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Creates `bench-user` at `cost` in `BENCH_TABLE` (or a new table) and logs in:
/// a real session's access token, for get-name's cold start and warm runs.
async fn token() -> String {
    let store = store(std::env::var("BENCH_TABLE").ok()).await;
    let cost = BcryptCost::new(10).unwrap();
    let hash = PasswordHasher::new(cost)
        .hash(PASSWORD.into())
        .await
        .unwrap();
    let _ = store
        .create(&User::new(
            Username::parse("bench-user").unwrap(),
            "Bench User".into(),
            hash,
        ))
        .await;
    let state = login_state(store, cost, &private_pem());
    let response = login::handle(&state, login_request("bench-user", PASSWORD)).await;
    let body: serde_json::Value = match response.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap(),
        _ => panic!("no body"),
    };
    body["access_token"]
        .as_str()
        .expect("login failed")
        .to_owned()
}

async fn warm() -> bool {
    const N: usize = 1_000;
    let pem = private_pem();
    let store = store(None).await;
    let cost = BcryptCost::new(10).unwrap();
    let hash = PasswordHasher::new(cost)
        .hash(PASSWORD.into())
        .await
        .unwrap();
    store
        .create(&User::new(
            Username::parse("warm-user").unwrap(),
            "Warm".into(),
            hash,
        ))
        .await
        .unwrap();
    let login = login_state(store.clone(), cost, &pem);
    let response = login::handle(&login, login_request("warm-user", PASSWORD)).await;
    let token = match response.body() {
        lambda_http::Body::Text(t) => {
            serde_json::from_str::<serde_json::Value>(t).unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
        _ => panic!("no token"),
    };
    let public = public_key_from_pem(&pem, "bench").unwrap();
    let state = GetName {
        store: store.clone(),
        tokens: TokenVerifier::new(&[public], &token_config()),
        clock: Clock::system(),
    };
    let username = Username::parse("warm-user").unwrap();
    for _ in 0..50 {
        get_name::handle(&state, get_name_request(&token)).await;
    }
    let (mut handler, mut read) = (Vec::with_capacity(N), Vec::with_capacity(N));
    for _ in 0..N {
        // Alternating, so that both see the same machine.
        let request = get_name_request(&token);
        let started = Instant::now();
        let response = get_name::handle(&state, request).await;
        handler.push(ms(started));
        assert_eq!(response.status(), 200);
        let started = Instant::now();
        store.get(&username).await.unwrap().unwrap();
        read.push(ms(started));
    }
    let (h50, r50) = (percentile(&handler, 50.0), percentile(&read, 50.0));
    println!("warm_get_name_handler_p50_ms: {h50:.3}");
    println!(
        "warm_get_name_handler_p99_ms: {:.3}",
        percentile(&handler, 99.0)
    );
    println!("warm_get_name_dynamodb_read_p50_ms: {r50:.3}");
    println!(
        "warm_get_name_dynamodb_read_p99_ms: {:.3}",
        percentile(&read, 99.0)
    );
    println!("warm_get_name_read_share_pct: {:.1}", r50 / h50 * 100.0);
    println!("warm_get_name_overhead_p50_ms: {:.3}", h50 - r50);
    println!("warm_get_name_invocations: {N}");
    true
}

async fn login_overhead() -> bool {
    const N: usize = 30;
    let cost = BcryptCost::DEFAULT;
    let pem = private_pem();
    let store = store(None).await;
    let passwords = PasswordHasher::new(cost);
    let hash = passwords.hash(PASSWORD.into()).await.unwrap();
    let username = Username::parse("login-user").unwrap();
    let user = User::new(username.clone(), "Login".into(), hash.clone());
    store.create(&user).await.unwrap();
    let state = login_state(store.clone(), cost, &pem);
    let signer = TokenIssuer::new(Signer::from_pem(&pem, "bench").unwrap(), &token_config());
    let window = Window {
        scope: "bare",
        length: 60,
        limit: u64::MAX,
    };
    login::handle(&state, login_request("login-user", PASSWORD)).await;
    let (mut full, mut bare) = (Vec::new(), Vec::new());
    for i in 0..N {
        let started = Instant::now();
        let response = login::handle(&state, login_request("login-user", PASSWORD)).await;
        full.push(ms(started));
        assert_eq!(response.status(), 200);
        // The same work, without the handler: the IP window, the user read and
        // the attempt reservation (in parallel, as login does), one bcrypt
        // verification, the signature and the session transaction.
        let started = Instant::now();
        store
            .hit(&window, "192.0.2.1", auth::clock::system_now())
            .await
            .unwrap();
        let now = auth::clock::system_now();
        let (found, _) = tokio::try_join!(
            store.get(&username),
            store.reserve_attempt(&username, None, now)
        )
        .unwrap();
        let found = found.unwrap();
        assert!(
            passwords
                .verify(PASSWORD.into(), Some(found.password_hash.clone()))
                .await
                .unwrap()
        );
        let now = auth::clock::system_now();
        signer
            .issue(&user, &format!("bare-{i}"), now, now)
            .await
            .unwrap();
        let session = auth::sessions::Session {
            id: auth::sessions::Session::new_id(),
            user_id: user.id,
            username: username.clone(),
            epoch: 0,
            revoked: false,
            created_at: now,
            auth_time: now,
            expires_at: now + 3600,
        };
        let first = auth::sessions::RefreshRecord {
            hash: auth::sessions::RefreshToken::generate().hash(),
            session_id: session.id.clone(),
            user_id: user.id,
            state: auth::sessions::RefreshState::Active,
            created_at: now,
            expires_at: now + 3600,
        };
        store.start_session(&session, &first, &found).await.unwrap();
        bare.push(ms(started));
    }
    let (f, b) = (percentile(&full, 50.0), percentile(&bare, 50.0));
    println!("login_p50_ms: {f:.1}");
    println!("login_bare_work_p50_ms: {b:.1}");
    println!("login_overhead_pct: {:.1}", (f / b - 1.0) * 100.0);
    println!("login_samples: {N}");
    true
}

async fn timing() -> bool {
    const ATTEMPTS: usize = 40;
    let cost = BcryptCost::DEFAULT;
    let store = store(None).await;
    let passwords = PasswordHasher::new(cost);
    eprintln!("creating {ATTEMPTS} users at bcrypt cost {}...", cost.get());
    let hash = passwords.hash(PASSWORD.into()).await.unwrap();
    for i in 0..ATTEMPTS {
        let user = User::new(
            Username::parse(&format!("known-{i}")).unwrap(),
            "K".into(),
            hash.clone(),
        );
        store.create(&user).await.unwrap();
    }
    let state = login_state(store, cost, &private_pem());
    login::handle(&state, login_request("warm-up-user", "x")).await;
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..ATTEMPTS {
        // Interleaved, so drift in the machine's load hits both alike.
        let started = Instant::now();
        let response = login::handle(
            &state,
            login_request(&format!("nobody-{i}"), "a wrong password"),
        )
        .await;
        unknown.push(ms(started));
        assert_eq!(response.status(), 401);
        let started = Instant::now();
        let response = login::handle(
            &state,
            login_request(&format!("known-{i}"), "a wrong password"),
        )
        .await;
        wrong.push(ms(started));
        assert_eq!(response.status(), 401);
    }
    let (u, w) = (percentile(&unknown, 50.0), percentile(&wrong, 50.0));
    let difference = (u - w).abs() / u.max(w) * 100.0;
    println!("timing_unknown_user_login_p50_ms: {u:.1}");
    println!("timing_wrong_password_login_p50_ms: {w:.1}");
    println!("timing_difference_pct: {difference:.1}");
    println!("timing_attempts_each: {ATTEMPTS}");
    difference <= 10.0
}

/// Posts `payload` to the watch's invoke endpoint for `function`; returns the reply.
fn invoke(function: &str, payload: &str) -> serde_json::Value {
    let url = format!(
        "http://{}/2015-03-31/functions/{function}/invocations",
        env("RUNTIME_API")
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.post(&url).send(payload).expect("invoke failed");
    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
}

/// What Lambda's environment holds for our functions: its own variables (set
/// in `spawn`) and the function's configuration. Nothing else of the shell
/// reaches the function: a developer machine's `AWS_CA_BUNDLE` or
/// `SSL_CERT_DIR`, say, would change what init reads from disk.
const FUNCTION_VARS: &[&str] = &[
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "TABLE_NAME",
    "JWT_SIGNING_KEY",
    "JWT_VERIFICATION_KEYS",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "BCRYPT_COST",
    "RUST_LOG",
];

/// The function binary, as Lambda starts it, against the watch's Runtime API.
fn spawn(binary: &str, function: &str) -> std::process::Child {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .envs(
            FUNCTION_VARS
                .iter()
                .filter_map(|var| Some((var, std::env::var(var).ok()?))),
        )
        .env("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin")
        .env("LANG", "en_US.UTF-8")
        .env("TZ", ":UTC")
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://{}/.rt/{function}", env("RUNTIME_API")),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command.spawn().unwrap_or_else(|e| panic!("{binary}: {e}"))
}

fn event_payload(name: &str) -> String {
    let mut json = event(name);
    if let Ok(token) = std::env::var("BENCH_TOKEN")
        && json["headers"].get("authorization").is_some()
    {
        json["headers"]["authorization"] = format!("Bearer {token}").into();
    }
    json.to_string()
}

fn cold(binary: &str, event_name: &str) -> bool {
    const RUNS: usize = 10;
    let payload = event_payload(event_name);
    let mut samples = Vec::new();
    // The emulator knows functions by their binary's name.
    let function = std::path::Path::new(binary)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for run in 0..RUNS {
        let started = Instant::now();
        let mut child = spawn(binary, &function);
        let reply = invoke(&function, &payload);
        samples.push(ms(started));
        let _ = child.kill();
        let _ = child.wait();
        if reply["statusCode"] != 200 {
            eprintln!("cold start run {run}: {reply}");
            return false;
        }
    }
    println!("cold_start_ms_median: {:.1}", percentile(&samples, 50.0));
    println!(
        "cold_start_ms_range: {:.1}..{:.1}",
        percentile(&samples, 0.0),
        percentile(&samples, 100.0)
    );
    true
}

fn rss(binary: &str, event_name: &str, invocations: usize) -> bool {
    let payload = event_payload(event_name);
    let function = std::path::Path::new(binary)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut child = spawn(binary, &function);
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..invocations {
        let reply = invoke(&function, &payload);
        *statuses.entry(reply["statusCode"].to_string()).or_insert(0) += 1;
    }
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    println!("peak_rss_kib: {hwm}");
    println!("invocations: {invocations} {statuses:?}");
    hwm > 0
}
