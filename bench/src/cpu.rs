//! `cpu`: our own code's CPU time per invocation of each route, in process,
//! as Lambda runs it: a release build, one current-thread runtime, each
//! handler's state built from the environment as its `main` builds it (KMS
//! keys, through moto; DynamoDB Local), and the success path of every route.
//! Beside it, the invocation's wall time: the rest is waiting on AWS calls
//! (which, locally, cost the other processes' CPU, not ours). The capacity
//! model's Lambda cost and concurrency figures rest on these numbers.

use std::time::Instant;

use auth::browser::BrowserPolicy;
use auth::clock::Clock;
use auth::config::Environment;
use auth::handlers::account::Account;
use auth::handlers::change_password;
use auth::handlers::get_name::{self, GetName};
use auth::handlers::login::{self, Login};
use auth::handlers::logout::{self, Logout};
use auth::handlers::refresh::{self, Refresh};
use auth::handlers::register::{self, Register, SignUp};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::runtime;
use auth::sessions::SessionConfig;
use auth::throttle::RateLimits;
use auth::tokens::TokenVerifier;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

/// CPU time of this process, every thread (bcrypt's blocking pool too), in ms.
pub fn process_cpu_ms() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime");
    now.tv_sec as f64 * 1000.0 + now.tv_nsec as f64 / 1e6
}

fn request(event: &str, bearer: Option<&str>, body: Value) -> Request {
    let mut json = crate::event(event);
    if body.is_null() {
        json["body"] = Value::Null;
    } else {
        json["body"] = body.to_string().into();
        json["headers"]["content-type"] = "application/json".into();
    }
    if let Some(token) = bearer {
        json["headers"]["authorization"] = format!("Bearer {token}").into();
    }
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

fn body(response: &Response<Body>) -> Value {
    match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        _ => Value::Null,
    }
}

/// Wall and CPU time of one invocation, with its status checked.
struct Sample {
    wall_ms: f64,
    cpu_ms: f64,
}

async fn measure<F: std::future::Future<Output = Response<Body>>>(
    expected: u16,
    call: F,
) -> (Sample, Value) {
    let (wall, cpu) = (Instant::now(), process_cpu_ms());
    let response = call.await;
    let sample = Sample {
        wall_ms: wall.elapsed().as_secs_f64() * 1000.0,
        cpu_ms: process_cpu_ms() - cpu,
    };
    assert_eq!(response.status(), expected, "{}", body(&response));
    (sample, body(&response))
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[sorted.len() / 2]
}

fn report(route: &str, calls: &str, samples: &[Sample]) {
    let wall = median(samples.iter().map(|s| s.wall_ms));
    let cpu = median(samples.iter().map(|s| s.cpu_ms));
    println!(
        "| {route} | {} | {cpu:.2} | {wall:.2} | {:.2} | {calls} |",
        samples.len(),
        (wall - cpu).max(0.0)
    );
}

pub fn run() -> bool {
    // One thread and one current-thread runtime, as each function's main.
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(routes());
    })
    .join()
    .is_ok()
}

async fn routes() {
    // The metrics' lines still cost their CPU; they are kept off our output.
    let _metrics = auth::metrics::capture();
    let sdk = runtime::aws_from_env().unwrap();
    let tokens = runtime::token_config_from_env().unwrap();
    let store = runtime::store_from_env(&sdk).unwrap();
    auth::store::create_table(
        &auth::store::dynamodb_client(&sdk),
        &std::env::var("TABLE_NAME").unwrap(),
    )
    .await
    .unwrap();
    let passwords = || PasswordHasher::new(BcryptCost::from_source(&Environment).unwrap());
    let sessions = || SessionConfig::from_source(&Environment).unwrap();
    let limits = || RateLimits::from_source(&Environment).unwrap();
    let browser = || BrowserPolicy::from_source(&Environment).unwrap();
    let issuer = async || {
        runtime::issuer_from_env(&sdk, &tokens, &store, None)
            .await
            .unwrap()
    };
    // The public keys once (one KMS round trip), for the three verifiers.
    let (public_keys, table) = runtime::public_keys_from_env(&sdk).await.unwrap();
    let verifier = || match &table {
        Some(table) => TokenVerifier::with_table(&public_keys, table.clone(), &tokens),
        None => TokenVerifier::new(&public_keys, &tokens),
    };
    let register = Register {
        store: store.clone(),
        passwords: passwords(),
        limits: limits(),
        sign_up: SignUp::Open,
        clock: Clock::system(),
    };
    let login = Login {
        store: store.clone(),
        passwords: passwords(),
        tokens: issuer().await,
        sessions: sessions(),
        limits: limits(),
        browser: browser(),
        clock: Clock::system(),
    };
    let refresh = Refresh {
        store: store.clone(),
        tokens: issuer().await,
        sessions: sessions(),
        browser: browser(),
        clock: Clock::system(),
    };
    let get_name = GetName {
        store: store.clone(),
        tokens: verifier(),
        clock: Clock::system(),
    };
    let logout = Logout {
        store: store.clone(),
        tokens: verifier(),
        browser: browser(),
        clock: Clock::system(),
    };
    let password = Account {
        store: store.clone(),
        passwords: passwords(),
        verifier: verifier(),
        issuer: issuer().await,
        sessions: sessions(),
        limits: limits(),
        browser: browser(),
        fresh_auth: auth::permissions::DEFAULT_FRESH_AUTH_MAX_AGE,
        clock: Clock::system(),
    };
    let secret = "capacity bench password 1";
    let credentials = |name: &str| json!({"username": name, "password": secret});
    let cost = BcryptCost::from_source(&Environment).unwrap().get();
    println!(
        "| route | invocations | CPU ms (median) | wall ms (median) | waiting on AWS ms | AWS calls |"
    );
    println!("|---|---|---|---|---|---|");

    // register: distinct users (one bcrypt hash each).
    let mut samples = Vec::new();
    for i in 0..8 {
        let name = format!(
            "cpu-{i}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let body = json!({"username": name, "password": secret, "name": "Capacity"});
        let (sample, _) = measure(
            201,
            register::handle(&register, request("register.json", None, body)),
        )
        .await;
        samples.push(sample);
    }
    report(
        &format!("register (bcrypt cost {cost})"),
        "DynamoDB: UpdateItem, PutItem",
        &samples,
    );

    let user = format!(
        "cpu-user-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let body = json!({"username": user, "password": secret, "name": "Capacity"});
    register::handle(&register, request("register.json", None, body)).await;

    // login: the same user, each a new session.
    let mut samples = Vec::new();
    let mut sessions_started = Vec::new();
    for _ in 0..8 {
        let (sample, answer) = measure(
            200,
            login::handle(&login, request("login.json", None, credentials(&user))),
        )
        .await;
        samples.push(sample);
        sessions_started.push(answer);
    }
    report(
        &format!("login (bcrypt cost {cost})"),
        "DynamoDB: UpdateItem ×2, GetItem, TransactWriteItems (4); KMS: Sign",
        &samples,
    );

    // refresh: a chain, each token once.
    let mut samples = Vec::new();
    let mut current = sessions_started[0]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut access = String::new();
    for _ in 0..60 {
        let (sample, answer) = measure(
            200,
            refresh::handle(
                &refresh,
                request("refresh.json", None, json!({"refresh_token": current})),
            ),
        )
        .await;
        samples.push(sample);
        current = answer["refresh_token"].as_str().unwrap().to_owned();
        access = answer["access_token"].as_str().unwrap().to_owned();
    }
    report(
        "refresh",
        "DynamoDB: GetItem ×3, TransactWriteItems (4); KMS: Sign",
        &samples,
    );

    // get_name.
    let mut samples = Vec::new();
    for _ in 0..200 {
        let (sample, _) = measure(
            200,
            get_name::handle(
                &get_name,
                request("get-name.json", Some(&access), Value::Null),
            ),
        )
        .await;
        samples.push(sample);
    }
    report("get_name", "DynamoDB: GetItem", &samples);

    // logout: one session each (started above, unmeasured).
    let mut samples = Vec::new();
    for answer in &sessions_started[1..] {
        let token = answer["access_token"].as_str().unwrap();
        let (sample, _) = measure(
            200,
            logout::handle(&logout, request("logout.json", Some(token), Value::Null)),
        )
        .await;
        samples.push(sample);
    }
    report(
        "logout",
        "DynamoDB: GetItem, TransactWriteItems (2)",
        &samples,
    );

    // password: a fresh session each (unmeasured login), back and forth
    // between two passwords (a verification and a hash each).
    let mut samples = Vec::new();
    let (mut from, mut to) = (secret.to_owned(), "capacity bench password 2".to_owned());
    for _ in 0..6 {
        let body = json!({"username": user, "password": from});
        let answer = body_of(login::handle(&login, request("login.json", None, body)).await);
        let token = answer["access_token"].as_str().unwrap().to_owned();
        let change = json!({"current_password": from, "new_password": to});
        let (sample, _) = measure(
            200,
            change_password::handle(&password, request("password.json", Some(&token), change)),
        )
        .await;
        samples.push(sample);
        std::mem::swap(&mut from, &mut to);
    }
    report(
        &format!("password (bcrypt cost {cost}, verify and hash)"),
        "DynamoDB: GetItem, UpdateItem ×2, TransactWriteItems (4); KMS: Sign",
        &samples,
    );
}

fn body_of(response: Response<Body>) -> Value {
    assert_eq!(response.status(), 200, "{}", body(&response));
    body(&response)
}
