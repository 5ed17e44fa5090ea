//! Benchmarks (`make bench` runs `functions` and `timing` beside the Flask
//! peer; `make bench-timing` runs `timing` alone; `make bench-capacity`
//! runs `cpu`). Every subcommand prints `metric: value` lines; the scripts
//! collect them into tables.
//!
//! - `functions`: every function beside the floor, from the plain path to
//!   the production path: init, first and warm invocations through the
//!   runtime loop, peak RSS on the success path; DynamoDB's and KMS's calls;
//!   login's own work (functions/). `functions NAME...`: those functions
//!   alone (the floor beside them, their layers and KMS mode), nothing
//!   else: quicker when working on one path; `make bench` measures all.
//! - `own-work`: login's own work alone, as `functions` measures it.
//! - `timing`: median login time of unknown users, wrong passwords and wrong
//!   passwords of users hashed below the configured cost: a few ms apart at most.
//! - `cpu`: CPU time per invocation of each route (cpu.rs).
//! - `init-calls FUNCTION`: the calls a verifier makes at init (KMS's keys,
//!   DynamoDB's warm-up beside them), made by a minimal client in a fresh
//!   process with the function's environment (`functions` runs it; functions/init_calls.rs).
//!
//! Needs `DYNAMODB_TEST_ENDPOINT` (and, for `functions` and `cpu`,
//! `KMS_TEST_ENDPOINT`).

mod cpu;
mod functions;
mod lambda;
mod tls;

use std::time::{Duration, Instant};

use auth::aws::{SdkSettings, sdk_config_loader};
use auth::clock::Clock;
use auth::config::TokenConfig;
use auth::handlers::login::{self, Login};
use auth::keys::Signer;
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::sessions::SessionConfig;
use auth::store::{Store, create_table};
use auth::throttle::RateLimits;
use auth::tokens::TokenIssuer;
use auth::users::{User, Username};
use aws_sdk_dynamodb::config::{Credentials, Region};

const PASSWORD: &str = "the real password 1";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.first().map(String::as_str) {
        Some("init-calls") => match args.get(1) {
            Some(function) => function_runtime().block_on(functions::init_calls(function)),
            None => usage(),
        },
        Some("timing") => function_runtime().block_on(timing()),
        Some(command) => tokio::runtime::Runtime::new().unwrap().block_on(async {
            match command {
                "functions" => functions::run(&args[1..]).await,
                "own-work" => functions::own_work().await,
                "cpu" => cpu::run(),
                _ => usage(),
            }
        }),
        None => usage(),
    };
    std::process::exit(if ok { 0 } else { 1 });
}

/// A current-thread runtime, as a function runs on.
fn function_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn usage() -> bool {
    eprintln!("usage: auth-bench functions | own-work | timing | cpu | init-calls FUNCTION");
    false
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

async fn store() -> Store {
    let client = dynamodb().await;
    let table = format!("bench-{}", uuid::Uuid::new_v4());
    create_table(&client, &table)
        .await
        .expect("cannot create a table on DynamoDB Local");
    Store::new(client, table)
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

fn token_config() -> TokenConfig {
    TokenConfig {
        issuer: "https://bench.test".into(),
        audience: "bench".into(),
        access_token_ttl: Duration::from_secs(900),
    }
}

/// A login function's state on `store`, signing with `tokens`, with per-IP
/// limits no bench reaches.
fn login_state(store: Store, cost: BcryptCost, tokens: TokenIssuer) -> Login {
    Login {
        store,
        passwords: PasswordHasher::new(cost),
        tokens,
        sessions: SessionConfig::from_source(&|_: &str| None).unwrap(),
        limits: RateLimits {
            login_per_minute: 1_000_000,
            register_per_hour: 1_000_000,
            ..auth::throttle::RateLimits::from_source(&|_: &str| None).unwrap()
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
    ms_of(since.elapsed())
}

fn ms_of(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// How far apart the failed logins' medians may be, in milliseconds: a
/// few, whatever bcrypt's cost (10 % of a quarter second would let 25 ms
/// tell accounts apart).
const TIMING_GAP_MS: f64 = 3.0;

async fn timing() -> bool {
    const ATTEMPTS: usize = 40;
    let cost = BcryptCost::DEFAULT;
    let store = store().await;
    let passwords = PasswordHasher::new(cost);
    // Known users hashed at the configured cost, and older ones hashed one
    // below it (before a cost increase, not logged in since): their failed
    // logins are topped up with dummy work to the configured cost's.
    let older_cost = BcryptCost::new(cost.get() - 1).unwrap();
    eprintln!(
        "creating {ATTEMPTS} users at bcrypt cost {} and {ATTEMPTS} at {}...",
        cost.get(),
        older_cost.get()
    );
    let hash = passwords.hash(PASSWORD.into()).await.unwrap();
    let older_hash = PasswordHasher::new(older_cost)
        .hash(PASSWORD.into())
        .await
        .unwrap();
    for i in 0..ATTEMPTS {
        for (prefix, hash) in [("known", &hash), ("older", &older_hash)] {
            let user = User::new(
                Username::parse(&format!("{prefix}-{i}")).unwrap(),
                "K".into(),
                hash.clone(),
            );
            store.create(&user).await.unwrap();
        }
    }
    let pem = auth::keys::generate_pem_pair().unwrap().0;
    let issuer = TokenIssuer::new(Signer::from_pem(&pem, "bench").unwrap(), &token_config());
    let state = login_state(store, cost, issuer);
    login::handle(&state, login_request("warm-up-user", "x")).await;
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..ATTEMPTS {
        // Interleaved, so drift in the machine's load hits each alike.
        for (kind, prefix) in ["nobody", "known", "older"].iter().enumerate() {
            let started = Instant::now();
            let response = login::handle(
                &state,
                login_request(&format!("{prefix}-{i}"), "a wrong password"),
            )
            .await;
            times[kind].push(ms(started));
            assert_eq!(response.status(), 401);
        }
    }
    let [u, w, o] = times.map(|t| percentile(&t, 50.0));
    let gap = (u - w).abs().max((u - o).abs());
    let reset_gap = reset_timing(&state.store, ATTEMPTS).await;
    let confirm_gap = confirm_timing(&state.store, ATTEMPTS).await;
    println!("timing_unknown_user_login_p50_ms: {u:.1}");
    println!("timing_wrong_password_login_p50_ms: {w:.1}");
    println!("timing_older_hash_login_p50_ms: {o:.1}");
    println!("timing_gap_ms: {gap:.2}");
    println!("timing_gap_budget_ms: {TIMING_GAP_MS}");
    println!("timing_attempts_each: {ATTEMPTS}");
    gap <= TIMING_GAP_MS && reset_gap <= TIMING_GAP_MS && confirm_gap <= TIMING_GAP_MS
}

/// Reset requests for an unknown username, a user without an address, a
/// user with a verified one, an unknown address and a known one: the
/// answers' medians, and the largest gap between them.
async fn reset_timing(store: &Store, attempts: usize) -> f64 {
    use auth::handlers::recovery::{self, Recovery};
    let state = Recovery {
        store: store.clone(),
        passwords: PasswordHasher::new(BcryptCost::DEFAULT),
        limits: RateLimits {
            reset_per_ip_per_hour: 1_000_000,
            ..auth::throttle::RateLimits::from_source(&|_: &str| None).unwrap()
        },
        clock: Clock::system(),
    };
    for i in 0..attempts {
        for (prefix, with_address) in [("plain", false), ("mailed", true)] {
            let mut user = User::new(
                Username::parse(&format!("{prefix}-{i}")).unwrap(),
                "R".into(),
                IGNORED_HASH.into(),
            );
            if with_address {
                user.email = auth::email::Email::parse(&format!("mailed-{i}@example.com")).ok();
            }
            store.create(&user).await.unwrap();
        }
    }
    let request = |body: serde_json::Value| {
        let mut json = event("password-reset.json");
        json["body"] = body.to_string().into();
        lambda_http::request::from_str(&json.to_string()).unwrap()
    };
    recovery::handle(&state, request(serde_json::json!({"username": "warm-up"}))).await;
    let kinds = [
        "unknown name",
        "no address",
        "verified address",
        "unknown address",
        "known address",
    ];
    let mut times = vec![Vec::new(); kinds.len()];
    let mut answers = std::collections::BTreeSet::new();
    for i in 0..attempts {
        let bodies = [
            serde_json::json!({"username": format!("nobody-{i}")}),
            serde_json::json!({"username": format!("plain-{i}")}),
            serde_json::json!({"username": format!("mailed-{i}")}),
            serde_json::json!({"email": format!("nobody-{i}@example.com")}),
            serde_json::json!({"email": format!("mailed-{i}@example.com")}),
        ];
        for (kind, body) in bodies.into_iter().enumerate() {
            let started = Instant::now();
            let response = recovery::handle(&state, request(body)).await;
            times[kind].push(ms(started));
            let mut headers: Vec<String> = response
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
                .collect();
            headers.sort();
            let body = match response.body() {
                lambda_http::Body::Text(text) => text.clone(),
                other => format!("{other:?}"),
            };
            answers.insert((response.status().as_u16(), body, headers));
        }
    }
    let medians: Vec<f64> = times.iter().map(|t| percentile(t, 50.0)).collect();
    for (kind, median) in kinds.iter().zip(&medians) {
        println!(
            "timing_reset_request_{}_p50_ms: {median:.1}",
            kind.replace(' ', "_")
        );
    }
    let gap = medians.iter().cloned().fold(f64::MIN, f64::max)
        - medians.iter().cloned().fold(f64::MAX, f64::min);
    println!("timing_reset_request_gap_ms: {gap:.2}");
    println!("timing_reset_request_distinct_answers: {}", answers.len());
    assert_eq!(
        answers.len(),
        1,
        "one answer (status, body, headers) for every identifier"
    );
    gap
}

/// `username` made, given `address` and verified through the store, as
/// the verification route does.
async fn verified(store: &Store, username: &str, address: &str) -> User {
    use auth::tickets::{LinkToken, Proof, Purpose, Ticket};
    let name = Username::parse(username).unwrap();
    let email = auth::email::Email::parse(address).unwrap();
    let now = auth::clock::system_now();
    store
        .create(&User::new(name.clone(), "C".into(), IGNORED_HASH.into()))
        .await
        .unwrap();
    let user = store.get(&name).await.unwrap().unwrap();
    assert!(store.set_pending_email(&user, &email, now).await.unwrap());
    let user = store.get(&name).await.unwrap().unwrap();
    let (ticket, secrets) = Ticket::issue(Purpose::VerifyEmail, &user, email, now);
    store.put_ticket(&ticket).await.unwrap();
    let proof = Proof::Link(LinkToken::parse(&secrets.link).unwrap());
    store
        .verify_email(&user, &ticket, &proof, now)
        .await
        .unwrap();
    store.get(&name).await.unwrap().unwrap()
}

/// A hash no password matches, for users whose password is never tried.
const IGNORED_HASH: &str = "$2b$04$ignoredignoredignoredignoredignoredignoredignoredign";

/// Confirmations with a wrong code (a good new password), by username:
/// nobody, a user without an address, one with a verified address and no
/// ticket, one with a live reset ticket; by address: nobody's, a verified
/// one without a ticket, one with. The medians, and the largest gap within
/// each way of asking (the asker chooses the way, so only the kinds within
/// one must not differ).
async fn confirm_timing(store: &Store, attempts: usize) -> f64 {
    use auth::handlers::recovery::{self, Recovery};
    use auth::tickets::{Purpose, Ticket};
    let state = Recovery {
        store: store.clone(),
        passwords: PasswordHasher::new(BcryptCost::DEFAULT),
        limits: RateLimits {
            ticket_guesses_per_ip_per_hour: 1_000_000,
            ..auth::throttle::RateLimits::from_source(&|_: &str| None).unwrap()
        },
        clock: Clock::system(),
    };
    eprintln!("creating {} users for the confirmations...", attempts * 3);
    for i in 0..attempts {
        store
            .create(&User::new(
                Username::parse(&format!("bare-{i}")).unwrap(),
                "C".into(),
                IGNORED_HASH.into(),
            ))
            .await
            .unwrap();
        verified(
            store,
            &format!("unasked-{i}"),
            &format!("unasked-{i}@example.com"),
        )
        .await;
        let asked = verified(
            store,
            &format!("asked-{i}"),
            &format!("asked-{i}@example.com"),
        )
        .await;
        let email = asked.email.clone().unwrap();
        let (ticket, _) = Ticket::issue(Purpose::Reset, &asked, email, auth::clock::system_now());
        store.put_ticket(&ticket).await.unwrap();
    }
    let request = |mut body: serde_json::Value| {
        // Wrong but for one chance in 10^8.
        body["code"] = "00000000".into();
        body["new_password"] = "a good new passphrase".into();
        let mut json = event("password-reset-confirm.json");
        json["body"] = body.to_string().into();
        lambda_http::request::from_str(&json.to_string()).unwrap()
    };
    recovery::handle(&state, request(serde_json::json!({"username": "warm-up"}))).await;
    // (way, kind, field, the value's prefix before i, its suffix)
    let kinds = [
        ("name", "unknown", "username", "nobody-", ""),
        ("name", "no_address", "username", "bare-", ""),
        ("name", "no_ticket", "username", "unasked-", ""),
        ("name", "live_ticket", "username", "asked-", ""),
        ("address", "unknown", "email", "nobody-", "@example.com"),
        ("address", "no_ticket", "email", "unasked-", "@example.com"),
        ("address", "live_ticket", "email", "asked-", "@example.com"),
    ];
    let mut times = vec![Vec::new(); kinds.len()];
    let mut answers = std::collections::BTreeSet::new();
    for i in 0..attempts {
        for (kind, (_, _, field, prefix, suffix)) in kinds.iter().enumerate() {
            let body = serde_json::json!({*field: format!("{prefix}{i}{suffix}")});
            let started = Instant::now();
            let response = recovery::handle(&state, request(body)).await;
            times[kind].push(ms(started));
            let body = match response.body() {
                lambda_http::Body::Text(text) => text.clone(),
                other => format!("{other:?}"),
            };
            answers.insert((response.status().as_u16(), body));
        }
    }
    let medians: Vec<f64> = times.iter().map(|t| percentile(t, 50.0)).collect();
    let mut gap: f64 = 0.0;
    for way in ["name", "address"] {
        let within: Vec<f64> = kinds
            .iter()
            .zip(&medians)
            .filter(|((w, ..), _)| *w == way)
            .map(|((_, kind, ..), median)| {
                println!("timing_reset_confirm_by_{way}_{kind}_p50_ms: {median:.1}");
                *median
            })
            .collect();
        let spread = within.iter().cloned().fold(f64::MIN, f64::max)
            - within.iter().cloned().fold(f64::MAX, f64::min);
        println!("timing_reset_confirm_by_{way}_gap_ms: {spread:.2}");
        gap = gap.max(spread);
    }
    println!("timing_reset_confirm_distinct_answers: {}", answers.len());
    assert_eq!(answers.len(), 1, "one answer to every wrong code");
    gap
}
