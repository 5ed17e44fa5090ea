//! `auth-bench timing`: median login time for unknown users against wrong
//! passwords (distinct usernames, so the lockout never starts), through the
//! real login handler on DynamoDB Local at the production bcrypt cost. The two
//! medians must lie within 10 % of each other, or the exit code says so.
//!
//! Needs `DYNAMODB_TEST_ENDPOINT` (scripts/bench.sh starts DynamoDB Local).

use std::time::{Duration, Instant};

use auth::aws::{SdkSettings, sdk_config_loader};
use auth::clock::Clock;
use auth::config::TokenConfig;
use auth::handlers::login::{self, Login};
use auth::keys::{Signer, generate_pem_pair};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::sessions::SessionConfig;
use auth::store::{Store, create_table};
use auth::throttle::RateLimits;
use auth::tokens::TokenIssuer;
use auth::users::{User, Username};
use aws_sdk_dynamodb::config::{Credentials, Region};

const ATTEMPTS: usize = 40;

#[tokio::main]
async fn main() {
    let command = std::env::args().nth(1).unwrap_or_default();
    let ok = match command.as_str() {
        "timing" => timing().await,
        _ => {
            eprintln!("usage: auth-bench timing");
            false
        }
    };
    std::process::exit(if ok { 0 } else { 1 });
}

async fn store() -> Store {
    let endpoint = std::env::var("DYNAMODB_TEST_ENDPOINT")
        .expect("DYNAMODB_TEST_ENDPOINT is not set: run make bench-timing");
    let settings = SdkSettings {
        attempt_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(5),
        max_attempts: 3,
    };
    let sdk = sdk_config_loader(&settings)
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "bench"))
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("bench-{}", uuid::Uuid::new_v4());
    create_table(&client, &table)
        .await
        .expect("cannot create a table on DynamoDB Local");
    Store::new(client, table)
}

fn request(username: &str, password: &str) -> lambda_http::Request {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../events/login.json"))
            .unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["body"] = serde_json::json!({"username": username, "password": password})
        .to_string()
        .into();
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let mid = samples.len() / 2;
    if samples.len().is_multiple_of(2) {
        (samples[mid - 1] + samples[mid]) / 2.0
    } else {
        samples[mid]
    }
}

async fn timing() -> bool {
    let cost = BcryptCost::DEFAULT;
    let store = store().await;
    let passwords = PasswordHasher::new(cost);
    println!("creating {ATTEMPTS} users at bcrypt cost {}...", cost.get());
    let hash = passwords.hash("the real password 1".into()).await.unwrap();
    for i in 0..ATTEMPTS {
        let user = User::new(
            Username::parse(&format!("known-{i}")).unwrap(),
            "K".into(),
            hash.clone(),
        );
        store.create(&user).await.unwrap();
    }
    let (private, _) = generate_pem_pair().unwrap();
    let tokens = TokenConfig {
        issuer: "https://bench.test".into(),
        audience: "bench".into(),
        access_token_ttl: Duration::from_secs(900),
    };
    let state = Login {
        store,
        passwords,
        tokens: TokenIssuer::new(Signer::from_pem(&private, "bench").unwrap(), &tokens),
        sessions: SessionConfig::from_source(&|_: &str| None).unwrap(),
        limits: RateLimits {
            login_per_minute: 1_000_000,
            register_per_hour: 1_000_000,
        },
        clock: Clock::system(),
    };
    // Warm up the client and the blocking pool.
    login::handle(&state, request("warm-up-user", "x")).await;
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..ATTEMPTS {
        // Interleaved, so drift in the machine's load hits both alike.
        let started = Instant::now();
        let response =
            login::handle(&state, request(&format!("nobody-{i}"), "a wrong password")).await;
        unknown.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(response.status(), 401);
        let started = Instant::now();
        let response =
            login::handle(&state, request(&format!("known-{i}"), "a wrong password")).await;
        wrong.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(response.status(), 401);
    }
    let (u, w) = (median(unknown), median(wrong));
    let difference = (u - w).abs() / u.max(w) * 100.0;
    println!("login, unknown user:   median {u:.1} ms over {ATTEMPTS}");
    println!("login, wrong password: median {w:.1} ms over {ATTEMPTS}");
    println!("difference: {difference:.1} % (budget 10 %)");
    let ok = difference <= 10.0;
    println!(
        "timing: {}",
        if ok { "within budget" } else { "OVER BUDGET" }
    );
    ok
}
