//! `auth-bench functions`: every function, through a Runtime API of ours
//! (lambda.rs), beside the floor (a hello-world function on the same runtime
//! and release profile), on four layers from the plain path to the one
//! Lambda runs:
//!
//! 1. `plain`: DynamoDB Local over plain HTTP, a local PEM key, logs at WARN;
//! 2. `logs`: + JSON logs at INFO (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL`);
//! 3. `kms`: + `kms:` keys (moto) for signers and verifiers;
//! 4. `production`: + TLS to DynamoDB and KMS (tls.rs; `AWS_CA_BUNDLE`).
//!
//! For each function and layer: init (exec to the first poll of `/next`) and
//! the first invocation's latency, median of `COLD_RUNS` processes, each
//! started right after a cold start of the floor and, for a verifier with
//! `kms:` keys, right after a minimal client in a fresh process made the
//! calls of its init (`init_calls`: KMS's public keys, and DynamoDB's warm-up
//! beside them: the round trips its init still makes, new connections and
//! TLS handshakes included); each process's init is judged against the
//! two measured just before it (the machine as it was then:
//! `init_beyond_budget_ms`, the median over the processes); then, in
//! the last process, `WARM` more invocations of its success path (each
//! status asserted), their latency, its peak RSS and the lines it wrote.
//! Beside them, in the same run: DynamoDB's and KMS's first call on a new
//! connection and a call on a kept one, over each path; and login's own work
//! (login minus its bcrypt verification) beside its AWS calls, measured
//! inside the same invocations (in process, production path), and where it
//! lies: the stretches between the calls.
//!
//! Needs `DYNAMODB_TEST_ENDPOINT` and `KMS_TEST_ENDPOINT` (plain HTTP) and
//! `BENCH_BIN` (the folder of the release binaries). Prints `metric: value`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth::aws::{SdkSettings, sdk_config};
use auth::devices::{Device, DeviceChange};
use auth::handlers::login;
use auth::keys::{KeySource, Signer, generate_pem_pair, public_key_from_pem};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::permissions::Role;
use auth::sessions::{RefreshRecord, RefreshState, RefreshToken, Session};
use auth::store::{Store, create_table};
use auth::tokens::TokenIssuer;
use auth::trust::TrustRoots;
use auth::users::{User, Username};
use serde_json::{Value, json};

use crate::lambda::Function;
use crate::tls::Authority;
use crate::{event, login_state, ms_of, percentile, token_config};

const COLD_RUNS: usize = 9;
const WARM: usize = 30;
const PASSWORD: &str = "the bench's own passphrase";
/// The password function's chain changes the password back and forth.
const PASSWORDS: [&str; 2] = ["bench passphrase number one", "bench passphrase number two"];
const FUNCTIONS: [&str; 9] = [
    "login", "get-name", "register", "refresh", "logout", "password", "admin", "jwks", "web",
];
/// The functions that fetch their public keys at init.
const VERIFIERS: [&str; 5] = ["get-name", "logout", "password", "admin", "jwks"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Plain,
    Logs,
    Kms,
    Production,
}

const LAYERS: [Layer; 4] = [Layer::Plain, Layer::Logs, Layer::Kms, Layer::Production];

impl Layer {
    fn name(self) -> &'static str {
        match self {
            Layer::Plain => "plain",
            Layer::Logs => "logs",
            Layer::Kms => "kms",
            Layer::Production => "production",
        }
    }
}

/// Everything the functions and the bench share for one run.
struct Bench {
    bin: PathBuf,
    table: String,
    ddb_plain: String,
    ddb_tls: String,
    kms_plain: String,
    kms_tls: String,
    ca_path: PathBuf,
    pem_private: PathBuf,
    pem_public: PathBuf,
    kms_key: String,
    /// The bench's own store (plain path): users, sessions.
    store: Store,
    pem_issuer: TokenIssuer,
    kms_issuer: TokenIssuer,
    /// Password changes so far: every layer's chain changes the same user's
    /// password, back and forth between `PASSWORDS`.
    password_changes: AtomicUsize,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run make bench"))
}

/// The SDK configuration the functions build, trusting `ca` (or Amazon's roots).
fn sdk(ca: Option<&PathBuf>) -> aws_config::SdkConfig {
    sdk_config(&SdkSettings {
        attempt_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(5),
        max_attempts: 3,
        trust: ca.map_or(TrustRoots::Amazon, |p| TrustRoots::Bundle(p.clone())),
    })
    .expect("the bench's SDK configuration")
}

fn dynamodb(sdk: &aws_config::SdkConfig, url: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .endpoint_url(url)
            .build(),
    )
}

fn kms(sdk: &aws_config::SdkConfig, url: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(sdk)
            .endpoint_url(url)
            .build(),
    )
}

fn address(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

impl Bench {
    async fn new() -> Bench {
        let ddb_plain = var("DYNAMODB_TEST_ENDPOINT");
        let kms_plain = var("KMS_TEST_ENDPOINT");
        let authority = Authority::new();
        let ddb_tls = authority.terminate(address(&ddb_plain)).await;
        let kms_tls = authority.terminate(address(&kms_plain)).await;
        let dir = std::env::temp_dir().join(format!("auth-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, &authority.ca_pem).unwrap();
        let (private, public) = generate_pem_pair().unwrap();
        let (pem_private, pem_public) = (dir.join("key.pem"), dir.join("key.pub.pem"));
        std::fs::write(&pem_private, &private).unwrap();
        std::fs::write(&pem_public, &public).unwrap();
        public_key_from_pem(&public, "bench").unwrap();

        let plain = sdk(None);
        let kms_client = kms(&plain, &kms_plain);
        let key = kms_client
            .create_key()
            .key_spec(aws_sdk_kms::types::KeySpec::Rsa2048)
            .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
            .send()
            .await
            .expect("moto: CreateKey");
        let kms_key = key.key_metadata().unwrap().key_id().to_owned();
        let client = dynamodb(&plain, &ddb_plain);
        let table = format!("bench-{}", uuid::Uuid::new_v4());
        create_table(&client, &table).await.expect("DynamoDB Local");
        let store = Store::new(client, table.clone());
        let pem_issuer = TokenIssuer::new(
            Signer::from_pem(&private, "bench").unwrap(),
            &token_config(),
        );
        let kms_issuer = TokenIssuer::new(
            Signer::new(&KeySource::Kms(kms_key.clone()), &kms_client).unwrap(),
            &token_config(),
        );
        let bench = Bench {
            bin: PathBuf::from(var("BENCH_BIN")),
            table,
            ddb_plain,
            ddb_tls,
            kms_plain,
            kms_tls,
            ca_path,
            pem_private,
            pem_public,
            kms_key,
            store,
            pem_issuer,
            kms_issuer,
            password_changes: AtomicUsize::new(0),
        };
        let hasher = PasswordHasher::new(BcryptCost::DEFAULT);
        for (username, password) in [
            ("bench-user", PASSWORD),
            ("bench-admin", PASSWORD),
            ("bench-pw", PASSWORDS[0]),
        ] {
            let hash = hasher.hash(password.into()).await.unwrap();
            let user = User::new(
                Username::parse(username).unwrap(),
                "Bench User".into(),
                hash,
            );
            bench.store.create(&user).await.unwrap();
        }
        let admin = bench.user("bench-admin").await;
        bench
            .store
            .grant_role(&admin, &Role::admin())
            .await
            .unwrap();
        bench
    }

    async fn user(&self, username: &str) -> User {
        self.store
            .get(&Username::parse(username).unwrap())
            .await
            .unwrap()
            .unwrap()
    }

    /// What Lambda's environment holds for a function on `layer`: its
    /// configuration and Lambda's own variables, nothing of the shell.
    fn env(&self, layer: Layer) -> Vec<(String, String)> {
        let mut env: Vec<(&str, String)> = vec![
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "local".into()),
            ("AWS_SECRET_ACCESS_KEY", "local".into()),
            ("TABLE_NAME", self.table.clone()),
            ("JWT_ISSUER", token_config().issuer),
            ("JWT_AUDIENCE", token_config().audience),
            ("BCRYPT_COST", BcryptCost::DEFAULT.get().to_string()),
            ("LOGIN_LIMIT_PER_IP_PER_MINUTE", "100000".into()),
            ("REGISTER_LIMIT_PER_IP_PER_HOUR", "100000".into()),
            ("ROLES", "admin".into()),
        ];
        let tls = layer == Layer::Production;
        env.push((
            "AWS_ENDPOINT_URL_DYNAMODB",
            if tls { &self.ddb_tls } else { &self.ddb_plain }.clone(),
        ));
        if layer == Layer::Plain {
            env.push(("RUST_LOG", "warn".into()));
        } else {
            // What Lambda sets for LoggingConfig { LogFormat: JSON, ApplicationLogLevel: INFO }.
            env.push(("AWS_LAMBDA_LOG_FORMAT", "JSON".into()));
            env.push(("AWS_LAMBDA_LOG_LEVEL", "INFO".into()));
        }
        if matches!(layer, Layer::Kms | Layer::Production) {
            env.push(("JWT_SIGNING_KEY", format!("kms:{}", self.kms_key)));
            env.push(("JWT_VERIFICATION_KEYS", format!("kms:{}", self.kms_key)));
            env.push((
                "AWS_ENDPOINT_URL_KMS",
                if tls { &self.kms_tls } else { &self.kms_plain }.clone(),
            ));
        } else {
            env.push((
                "JWT_SIGNING_KEY",
                format!("pem:{}", self.pem_private.display()),
            ));
            env.push((
                "JWT_VERIFICATION_KEYS",
                format!("pem:{}", self.pem_public.display()),
            ));
        }
        if tls {
            env.push(("AWS_CA_BUNDLE", self.ca_path.display().to_string()));
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// A new session of `username`, signed with `layer`'s key and stored (no
    /// bcrypt: the bench makes many): its access and refresh tokens.
    async fn session(&self, layer: Layer, username: &str) -> (String, String) {
        let user = self.user(username).await;
        let now = auth::clock::system_now();
        let refresh = RefreshToken::generate();
        let session = Session {
            id: Session::new_id(),
            user_id: user.id,
            username: user.username.clone(),
            epoch: user.session_epoch,
            revoked: false,
            created_at: now,
            auth_time: now,
            expires_at: now + 3600,
        };
        let first = RefreshRecord {
            hash: refresh.hash(),
            session_id: session.id.clone(),
            user_id: user.id,
            state: RefreshState::Active,
            created_at: now,
            expires_at: now + 3600,
        };
        let issuer = match layer {
            Layer::Plain | Layer::Logs => &self.pem_issuer,
            Layer::Kms | Layer::Production => &self.kms_issuer,
        };
        let access = issuer.issue(&user, &session.id, now, now).await.unwrap();
        let (_, device) = Device::issue(&user, user.session_epoch, now, Duration::from_secs(3600));
        let device = DeviceChange {
            issued: &device,
            retired: None,
        };
        self.store
            .start_session(&session, &first, &user, &device)
            .await
            .unwrap();
        (access.token, refresh.expose().to_owned())
    }
}

/// A function's success path: the next event, what it must answer, and what
/// the answer feeds into the next event.
struct Path {
    function: &'static str,
    layer: Layer,
    /// The token or refresh token the next event carries.
    carried: Option<String>,
    count: usize,
    run: String,
}

impl Path {
    fn new(function: &'static str, layer: Layer) -> Path {
        Path {
            function,
            layer,
            carried: None,
            count: 0,
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        }
    }

    fn expected(&self) -> u64 {
        if self.function == "register" {
            201
        } else {
            200
        }
    }

    async fn next(&mut self, bench: &Bench) -> String {
        self.count += 1;
        let layer = self.layer;
        let mut json = match self.function {
            "floor" => json!({"hello": "world"}),
            "login" => with_body(
                event("login.json"),
                &json!({"username": "bench-user", "password": PASSWORD}),
            ),
            "get-name" => {
                if self.carried.is_none() {
                    self.carried = Some(bench.session(layer, "bench-user").await.0);
                }
                with_bearer(event("get-name.json"), self.carried.as_deref().unwrap())
            }
            "register" => with_body(
                event("register.json"),
                &json!({"username": format!("r{}-{}", self.run, self.count), "password": "a passphrase for the bench", "name": "Registered"}),
            ),
            "refresh" => {
                if self.carried.is_none() {
                    self.carried = Some(bench.session(layer, "bench-user").await.1);
                }
                with_body(
                    event("refresh.json"),
                    &json!({"refresh_token": self.carried.as_deref().unwrap()}),
                )
            }
            // A fresh session for each logout.
            "logout" => with_bearer(
                event("logout.json"),
                &bench.session(layer, "bench-user").await.0,
            ),
            "password" => {
                if self.carried.is_none() {
                    self.carried = Some(bench.session(layer, "bench-pw").await.0);
                }
                let current = bench.password_changes.fetch_add(1, Ordering::Relaxed) % 2;
                let body = json!({"current_password": PASSWORDS[current], "new_password": PASSWORDS[1 - current]});
                with_bearer(
                    with_body(event("password.json"), &body),
                    self.carried.as_deref().unwrap(),
                )
            }
            "admin" => {
                if self.carried.is_none() {
                    self.carried = Some(bench.session(layer, "bench-admin").await.0);
                }
                let mut json =
                    with_bearer(event("admin-user.json"), self.carried.as_deref().unwrap());
                json["rawPath"] = "/admin/users/bench-user".into();
                json["requestContext"]["http"]["path"] = "/admin/users/bench-user".into();
                json["pathParameters"]["username"] = "bench-user".into();
                json
            }
            "jwks" => event("jwks.json"),
            "web" => event("page.json"),
            other => panic!("no success path for {other}"),
        };
        if let Some(headers) = json.get_mut("headers") {
            headers["x-forwarded-for"] = "192.0.2.10".into();
        }
        json.to_string()
    }

    /// Takes what the answer hands on: the refresh chain's next token, the
    /// password chain's new session.
    fn answered(&mut self, reply: &Value) {
        let body: Value = reply["body"]
            .as_str()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        match self.function {
            "refresh" => self.carried = body["refresh_token"].as_str().map(str::to_owned),
            "password" => self.carried = body["access_token"].as_str().map(str::to_owned),
            _ => {}
        }
    }
}

fn with_body(mut json: Value, body: &Value) -> Value {
    json["body"] = body.to_string().into();
    json["headers"]["content-type"] = "application/json".into();
    json
}

fn with_bearer(mut json: Value, token: &str) -> Value {
    json["headers"]["authorization"] = format!("Bearer {token}").into();
    json
}

/// Cold starts and a warm run of one function on one layer; prints its metrics.
async fn measure(
    bench: &Bench,
    function: &'static str,
    layer: Layer,
    prefix: &str,
) -> Result<(), String> {
    let binary = bench.bin.join(function);
    let env = if function == "floor" {
        Vec::new()
    } else {
        bench.env(layer)
    };
    let mut path = Path::new(function, layer);
    let (mut init, mut first, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    let (mut floor_init, mut init_calls, mut init_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let fetches_keys =
        VERIFIERS.contains(&function) && matches!(layer, Layer::Kms | Layer::Production);
    let floor_event = Path::new("floor", layer).next(bench).await;
    for run in 0..COLD_RUNS {
        if function != "floor" {
            let floor = Function::start(
                &bench.bin.join("floor").display().to_string(),
                &[],
                floor_event.clone(),
            )
            .await?;
            floor_init.push(floor.init.as_secs_f64() * 1000.0);
            drop(floor);
            if fetches_keys {
                let (wall, cpu) = fresh_init_calls(function, &env).await?;
                init_calls.push(wall);
                init_cpu.push(cpu);
            }
        }
        // The event that starts it is made first: it waits at the Runtime
        // API, as the invocation that caused a cold start does on Lambda.
        let event = path.next(bench).await;
        let mut process = Function::start(&binary.display().to_string(), &env, event).await?;
        init.push(process.init.as_secs_f64() * 1000.0);
        let last = run + 1 == COLD_RUNS;
        let invocations = if last { 1 + WARM } else { 1 };
        for i in 0..invocations {
            let (reply, took) = if i == 0 {
                process.first_reply().await?
            } else {
                process.invoke(path.next(bench).await).await?
            };
            let status = reply.body["statusCode"].as_u64().unwrap_or(0);
            if reply.error || status != path.expected() {
                return Err(format!(
                    "{prefix}: invocation {i} answered {status}: {}",
                    reply.body
                ));
            }
            path.answered(&reply.body);
            let took = took.as_secs_f64() * 1000.0;
            if i == 0 {
                first.push(took)
            } else {
                warm.push(took)
            }
        }
        if last {
            // Give the log pipe a moment to be drained.
            tokio::time::sleep(Duration::from_millis(50)).await;
            println!("{prefix}.rss_kib: {}", process.peak_rss_kib()?);
            let lines = process.output_lines.load(Ordering::Relaxed);
            let bytes = process.output_bytes.load(Ordering::Relaxed);
            println!(
                "{prefix}.log_lines_per_invocation: {:.1}",
                lines as f64 / invocations as f64
            );
            println!(
                "{prefix}.log_bytes_per_invocation: {:.0}",
                bytes as f64 / invocations as f64
            );
        }
    }
    println!("{prefix}.init_ms: {:.2}", percentile(&init, 50.0));
    if !floor_init.is_empty() {
        println!(
            "{prefix}.floor_init_ms: {:.2}",
            percentile(&floor_init, 50.0)
        );
        // Process by process (the budget: at most 0): its init beyond twice
        // the floor's, started just before it, and the round trips the
        // minimal client made between the two. Paired, a slow spell of the
        // machine weighs on both sides of the same comparison.
        let credit = |i: usize| if fetches_keys { init_calls[i] } else { 0.0 };
        assert_eq!(floor_init.len(), init.len());
        let beyond: Vec<f64> = (0..init.len())
            .map(|i| init[i] - 2.0 * floor_init[i] - credit(i))
            .collect();
        println!(
            "{prefix}.init_beyond_budget_ms: {:.2}",
            percentile(&beyond, 50.0)
        );
    }
    if !init_calls.is_empty() {
        println!(
            "{prefix}.init_calls_fresh_ms: {:.2}",
            percentile(&init_calls, 50.0)
        );
        let waits: Vec<f64> = init_calls
            .iter()
            .zip(&init_cpu)
            .map(|(w, c)| w - c)
            .collect();
        println!(
            "{prefix}.init_calls_fresh_wait_ms: {:.2}",
            percentile(&waits, 50.0)
        );
    }
    println!("{prefix}.first_ms: {:.2}", percentile(&first, 50.0));
    println!("{prefix}.warm_p50_ms: {:.3}", percentile(&warm, 50.0));
    println!("{prefix}.warm_p99_ms: {:.3}", percentile(&warm, 99.0));
    Ok(())
}

/// `auth-bench init-calls` in a process of its own with `function`'s `env`:
/// the wall time and the CPU time of the calls its init makes.
async fn fresh_init_calls(
    function: &'static str,
    env: &[(String, String)],
) -> Result<(f64, f64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let env = env.to_vec();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .arg("init-calls")
            .arg(function)
            .env_clear()
            .envs(env)
            .output()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let said = String::from_utf8_lossy(&output.stdout);
    let value = |name: &str| -> Option<f64> {
        said.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
            .and_then(|ms| ms.trim().parse().ok())
    };
    value("init_calls_ms")
        .zip(value("init_calls_cpu_ms"))
        .filter(|_| output.status.success())
        .ok_or_else(|| {
            format!(
                "init-calls failed: {said} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// `auth-bench init-calls FUNCTION`: the round trips a verifier's init still
/// makes, as a minimal client in a fresh process with the function's
/// environment makes them: `GetPublicKey` for each `kms:` key of
/// `JWT_VERIFICATION_KEYS`, all at once, and, for all but jwks, a `GetItem`
/// on the table beside them (the DynamoDB warm-up), each on a new connection.
/// Their wall time (connections, TLS handshakes, requests and answers) is
/// what the budget credits; the CPU time is printed beside it. Set up
/// untimed, as the function does it at its own init, and judged there: the
/// SDK configuration and clients, the roots, the random generator's seeding.
/// None of the function's own init code runs here (its configuration, its
/// keys' parsing, the way it orders the calls).
pub async fn init_calls(function: &str) -> bool {
    if !VERIFIERS.contains(&function) {
        eprintln!("{function} makes no calls at init; the verifiers do: {VERIFIERS:?}");
        return false;
    }
    let calls = match InitCalls::set_up(function != "jwks") {
        Ok(calls) => calls,
        Err(e) => {
            eprintln!("{function}'s init calls: {e}");
            return false;
        }
    };
    let (started, cpu) = (Instant::now(), crate::cpu::process_cpu_ms());
    let called = calls.make().await;
    let (elapsed, cpu) = (started.elapsed(), crate::cpu::process_cpu_ms() - cpu);
    match called {
        // Retries are off; an answer this slow is a stall, not a round trip.
        Ok(()) if elapsed >= auth::store::WARM_UP_LIMIT => {
            eprintln!("{function}'s init calls took {elapsed:?}: too long for round trips");
            false
        }
        Ok(()) => {
            println!("init_calls_ms: {:.3}", ms_of(elapsed));
            println!("init_calls_cpu_ms: {cpu:.3}");
            true
        }
        Err(e) => {
            eprintln!("{function}'s init calls failed: {e}");
            false
        }
    }
}

/// The clients of [`init_calls`], on the functions' SDK configuration
/// (`AWS_CA_BUNDLE`, timeouts, endpoints) but without retries: a retried
/// call must fail the bench, not pass for a long round trip.
struct InitCalls {
    kms: aws_sdk_kms::Client,
    keys: Vec<String>,
    /// The table's client and name, for the warm-up.
    warm_up: Option<(aws_sdk_dynamodb::Client, String)>,
}

impl InitCalls {
    fn set_up(warm_up: bool) -> Result<InitCalls, String> {
        use aws_lc_rs::rand::SecureRandom as _;
        use aws_sdk_dynamodb::config::retry::RetryConfig;
        let sdk = auth::runtime::aws_from_env().map_err(|e| e.to_string())?;
        // The first random draw seeds aws-lc's generator: the first TLS
        // handshake's, in the function's init.
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut [0u8; 8])
            .map_err(|_| "aws-lc's random generator failed")?;
        let mut kms =
            aws_sdk_kms::config::Builder::from(&sdk).retry_config(RetryConfig::disabled());
        if let Some(url) = auth::aws::endpoint_override("KMS") {
            kms = kms.endpoint_url(url);
        }
        let keys: Vec<String> = auth::keys::verification_keys_from(&auth::config::Environment)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|key| match key {
                KeySource::Kms(id) => Some(id),
                KeySource::Pem(_) => None,
            })
            .collect();
        if keys.is_empty() {
            return Err("JWT_VERIFICATION_KEYS names no kms: key, so no call to make".into());
        }
        let warm_up = if warm_up {
            let mut dynamodb =
                aws_sdk_dynamodb::config::Builder::from(&sdk).retry_config(RetryConfig::disabled());
            if let Some(url) = auth::aws::endpoint_override("DYNAMODB") {
                dynamodb = dynamodb.endpoint_url(url);
            }
            let table = auth::config::StoreConfig::from_source(&auth::config::Environment)
                .map_err(|e| e.to_string())?
                .table_name;
            Some((aws_sdk_dynamodb::Client::from_conf(dynamodb.build()), table))
        } else {
            None
        };
        Ok(InitCalls {
            kms: aws_sdk_kms::Client::from_conf(kms.build()),
            keys,
            warm_up,
        })
    }

    /// The calls, at once, each answer checked.
    async fn make(&self) -> Result<(), String> {
        use aws_sdk_dynamodb::types::AttributeValue;
        let fetch = async {
            let fetches = self
                .keys
                .iter()
                .map(|id| self.kms.get_public_key().key_id(id).send());
            for fetched in futures_util::future::join_all(fetches).await {
                let output =
                    fetched.map_err(|e| format!("GetPublicKey: {}", auth::aws::describe(&e)))?;
                output.public_key().ok_or("GetPublicKey: no public key")?;
            }
            Ok::<_, String>(())
        };
        let Some((dynamodb, table)) = &self.warm_up else {
            return fetch.await;
        };
        let key = |name: &str| (name.to_owned(), AttributeValue::S("BENCH#NONE".into()));
        let read = dynamodb
            .get_item()
            .table_name(table)
            .set_key(Some(
                [key(auth::store::PARTITION_KEY), key(auth::store::SORT_KEY)].into(),
            ))
            .send();
        let (fetched, read) = tokio::join!(fetch, read);
        read.map_err(|e| format!("GetItem: {}", auth::aws::describe(&e)))?;
        fetched
    }
}

/// DynamoDB's read (the one get-name makes) and KMS's `GetPublicKey` (a
/// verifier's at init), each on a new connection and on a kept one.
async fn calls(bench: &Bench, tls: bool) {
    let path = if tls { "production" } else { "plain" };
    let ca = tls.then_some(&bench.ca_path);
    let (ddb_url, kms_url) = if tls {
        (&bench.ddb_tls, &bench.kms_tls)
    } else {
        (&bench.ddb_plain, &bench.kms_plain)
    };
    let user = Username::parse("bench-user").unwrap();
    // One GetItem and one GetPublicKey on `store` and `client`: their times.
    let call = async |store: &Store, client: &aws_sdk_kms::Client| {
        let started = Instant::now();
        store.get(&user).await.unwrap();
        let ddb = ms_of(started.elapsed());
        let started = Instant::now();
        let key = client.get_public_key().key_id(&bench.kms_key);
        key.send().await.unwrap();
        (ddb, ms_of(started.elapsed()))
    };
    let new_clients = || {
        let store = Store::new(dynamodb(&sdk(ca), ddb_url), bench.table.clone());
        (store, kms(&sdk(ca), kms_url))
    };
    let (mut ddb_first, mut kms_first) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let (store, client) = new_clients();
        let (ddb, kms) = call(&store, &client).await;
        ddb_first.push(ddb);
        kms_first.push(kms);
    }
    let (store, client) = new_clients();
    let (mut ddb_warm, mut kms_warm) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let (ddb, kms) = call(&store, &client).await;
        if i >= 10 {
            ddb_warm.push(ddb);
            kms_warm.push(kms);
        }
    }
    println!(
        "{path}.dynamodb_first_call_ms: {:.3}",
        percentile(&ddb_first, 50.0)
    );
    println!(
        "{path}.dynamodb_read_ms: {:.3}",
        percentile(&ddb_warm, 50.0)
    );
    println!(
        "{path}.kms_first_call_ms: {:.3}",
        percentile(&kms_first, 50.0)
    );
    println!("{path}.kms_call_ms: {:.3}", percentile(&kms_warm, 50.0));
}

/// When each AWS call began and ended: +1 at a call's start, -1 at its end.
/// The SDK opens a span of its own for each call (`DynamoDB.GetItem`,
/// `KMS.Sign`, …, with the field `rpc.system`) from before it applies its
/// configuration to the call until its orchestrator returns the result; a
/// tracing layer records when each opens and closes. Outside it, and so
/// counted as the caller's: `send()`'s prologue (the input built, the
/// operation's plugins listed) and the output's final downcast.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Recorded>>);

#[derive(Default)]
struct Recorded {
    events: Vec<(Instant, i32)>,
    open: HashSet<tracing::span::Id>,
}

/// A span the SDK opens for one call.
fn is_sdk_call(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span() && metadata.fields().field("rpc.system").is_some()
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Timeline {
    fn on_new_span(
        &self,
        attributes: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if is_sdk_call(attributes.metadata()) {
            let mut recorded = self.0.lock().unwrap();
            recorded.open.insert(id.clone());
            recorded.events.push((Instant::now(), 1));
        }
    }

    fn on_close(&self, id: tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        let at = Instant::now();
        let mut recorded = self.0.lock().unwrap();
        if recorded.open.remove(&id) {
            recorded.events.push((at, -1));
        }
    }
}

impl Timeline {
    /// The calls since the last `take`, every one of them ended.
    fn take(&self) -> Calls {
        let mut recorded = self.0.lock().unwrap();
        assert!(recorded.open.is_empty(), "a call's span never closed");
        let mut events = std::mem::take(&mut recorded.events);
        events.sort_by_key(|(at, _)| *at);
        assert_eq!(events.iter().map(|(_, change)| change).sum::<i32>(), 0);
        Calls(events)
    }

    /// What a function's thread runs with, here: its logs as they ship
    /// (JSON at INFO, as `runtime::init_logging` sets them up from Lambda's
    /// variables, written to /dev/null rather than a pipe) and this timeline.
    fn with_production_logs(&self) -> impl tracing::Subscriber + Send + Sync {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let devnull = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .expect("/dev/null");
        let info = tracing_subscriber::filter::LevelFilter::INFO;
        let logs = auth::runtime::json_logs(Mutex::new(devnull), info).with_filter(info);
        // The SDK's call spans are at DEBUG: enabled for this layer alone,
        // they cost the registry a span each (its slot freed after the -1),
        // which the deployed function does not make.
        let calls = tracing_subscriber::filter::filter_fn(is_sdk_call)
            .with_max_level_hint(tracing_subscriber::filter::LevelFilter::DEBUG);
        tracing_subscriber::registry()
            .with(logs)
            .with(self.clone().with_filter(calls))
    }
}

/// Each call's start (+1) and end (-1), in order.
struct Calls(Vec<(Instant, i32)>);

impl Calls {
    fn count(&self) -> usize {
        self.0.iter().filter(|(_, change)| *change > 0).count()
    }

    /// The wall time covered by at least one call, and the calls' summed durations.
    fn covered_and_summed(&self) -> (Duration, Duration) {
        let (mut covered, mut summed, mut open) = (Duration::ZERO, Duration::ZERO, 0i32);
        let mut last = self.0.first().map(|(at, _)| *at);
        for &(at, change) in &self.0 {
            if let Some(last) = last {
                let span = at - last;
                if open > 0 {
                    covered += span;
                }
                summed += span * open.max(0) as u32;
            }
            open += change;
            last = Some(at);
        }
        (covered, summed)
    }

    /// The stretches from `start` to `end` during which no call was open,
    /// in order: before the first call, between calls, after the last.
    fn idle(&self, start: Instant, end: Instant) -> Vec<Duration> {
        let (mut stretches, mut open, mut since) = (Vec::new(), 0i32, start);
        for &(at, change) in &self.0 {
            if open == 0 && change > 0 {
                stretches.push(at - since);
            }
            open += change;
            if open == 0 {
                since = at;
            }
        }
        stretches.push(end - since);
        stretches
    }
}

/// One batch of login's own work: its figures as metric lines, and the one
/// its budget judges (each login's own work beyond its calls, the median).
struct OwnWork {
    lines: Vec<String>,
    beyond_calls: f64,
}

/// Login's own work, one batch: each login minus its bcrypt verification,
/// beside the wall time its AWS calls cover, all measured inside the same
/// invocations (in process, production path: TLS, KMS signing, cost-12
/// bcrypt, a current-thread runtime and the logs as the functions run, the
/// login served as they serve it: `runtime::handle`, its log line and
/// metrics).
async fn login_own_work(bench: &Bench) -> OwnWork {
    const N: usize = 30;
    let timeline = Timeline::default();
    let _logs = tracing::subscriber::set_default(timeline.with_production_logs());
    let production = sdk(Some(&bench.ca_path));
    let store = Store::new(dynamodb(&production, &bench.ddb_tls), bench.table.clone());
    let signer = Signer::new(
        &KeySource::Kms(bench.kms_key.clone()),
        &kms(&production, &bench.kms_tls),
    )
    .unwrap();
    let state = login_state(store, BcryptCost::DEFAULT, signer);
    let handler = |request| login::handle(&state, request);
    let request = || {
        let json = with_body(
            event("login.json"),
            &json!({"username": "bench-user", "password": PASSWORD}),
        );
        lambda_http::request::from_str(&json.to_string()).unwrap()
    };
    // The first login opens the connections.
    assert_eq!(
        auth::runtime::handle(&handler, request()).await.status(),
        200
    );
    let (mut own, mut covered, mut summed, mut total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Each login's stretches with no AWS call open, bcrypt taken out of the
    // one it falls in (the longest: bcrypt is 250 times any other).
    let mut stretches: Vec<Vec<f64>> = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..N {
        let bcrypt = state.passwords.verify_time();
        let request = request();
        timeline.take();
        let started = Instant::now();
        let response = auth::runtime::handle(&handler, request).await;
        let ended = Instant::now();
        let took = ended - started;
        assert_eq!(response.status(), 200);
        let bcrypt = state.passwords.verify_time() - bcrypt;
        let calls = timeline.take();
        let (aws, summed_calls) = calls.covered_and_summed();
        let mut idle: Vec<f64> = calls.idle(started, ended).into_iter().map(ms_of).collect();
        let longest = (0..idle.len())
            .max_by(|&i, &j| idle[i].total_cmp(&idle[j]))
            .unwrap();
        assert!(
            idle[longest] >= ms_of(bcrypt),
            "bcrypt ran while a call was open"
        );
        idle[longest] -= ms_of(bcrypt);
        covered.push(ms_of(aws));
        stretches.push(idle);
        counts.push(calls.count());
        total.push(ms_of(took));
        own.push(ms_of(took - bcrypt));
        summed.push(ms_of(summed_calls));
    }
    // Every login of the success path makes the same calls in the same order.
    assert!(
        counts.iter().all(|&c| c == counts[0]),
        "calls per login: {counts:?}"
    );
    assert!(stretches.iter().all(|s| s.len() == stretches[0].len()));
    // Each stretch's median over the logins: where the own work is.
    let by_stretch: Vec<f64> = (0..stretches[0].len())
        .map(|i| percentile(&stretches.iter().map(|s| s[i]).collect::<Vec<_>>(), 50.0))
        .collect();
    let overhead: Vec<f64> = own.iter().zip(&covered).map(|(o, c)| o - c).collect();
    let beyond_calls = percentile(&overhead, 50.0);
    let mut lines = vec![
        format!("login.p50_ms: {:.2}", percentile(&total, 50.0)),
        format!("login.own_work_p50_ms: {:.3}", percentile(&own, 50.0)),
        format!(
            "login.aws_calls_covered_p50_ms: {:.3}",
            percentile(&covered, 50.0)
        ),
        format!(
            "login.aws_calls_summed_p50_ms: {:.3}",
            percentile(&summed, 50.0)
        ),
        format!("login.own_beyond_aws_p50_ms: {beyond_calls:.3}"),
        format!("login.calls: {}", counts[0]),
        format!("login.phases: {}", stretches[0].len() - 1),
    ];
    for (i, median) in by_stretch.iter().enumerate() {
        lines.push(format!("login.idle_stretch_{i}_p50_ms: {median:.3}"));
    }
    lines.push(format!(
        "login.own_beyond_aws_by_stretch_ms: {:.3}",
        by_stretch.iter().sum::<f64>()
    ));
    OwnWork {
        lines,
        beyond_calls,
    }
}

/// Each batch's figure, then every figure of the lowest, the one the budget
/// judges (`run` spreads three batches over the run). A machine shared with
/// others (and with the stand-ins for AWS, here) only ever adds to a batch,
/// for as long as a busy spell lasts: minutes, longer than a batch. So the
/// least disturbed batch is the closest to what the login's code costs, and
/// a change that makes that code slower shows in every batch, the lowest too.
fn print_own_work(batches: &[OwnWork]) {
    for (i, batch) in batches.iter().enumerate() {
        println!(
            "login.batch_{i}_own_beyond_aws_p50_ms: {:.3}",
            batch.beyond_calls
        );
    }
    let (lowest, judged) = batches
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| a.beyond_calls.total_cmp(&b.beyond_calls))
        .expect("at least one batch");
    println!("login.batches: {}", batches.len());
    println!("login.judged_batch: {lowest}");
    for line in &judged.lines {
        println!("{line}");
    }
}

pub async fn run() -> bool {
    let bench = Bench::new().await;
    println!("cold_runs: {COLD_RUNS}");
    // Login's own work: a batch before the cold starts, one between the
    // layers, one at the end.
    let mut own_work = vec![in_a_function_runtime(|| login_own_work(&bench))];
    for (i, layer) in LAYERS.iter().enumerate() {
        if i == LAYERS.len() / 2 {
            own_work.push(in_a_function_runtime(|| login_own_work(&bench)));
        }
        // The floor first: it has no layers.
        let floor = (i == 0).then_some("floor");
        for function in floor.into_iter().chain(FUNCTIONS) {
            let prefix = if function == "floor" {
                "floor".to_owned()
            } else {
                format!("{}.{function}", layer.name())
            };
            eprintln!("{prefix}");
            if let Err(e) = measure(&bench, function, *layer, &prefix).await {
                eprintln!("FAIL {e}");
                return false;
            }
        }
    }
    calls(&bench, false).await;
    calls(&bench, true).await;
    own_work.push(in_a_function_runtime(|| login_own_work(&bench)));
    print_own_work(&own_work);
    true
}

/// Runs `work` on a current-thread runtime of its own, as in a function: no
/// hand-off between worker threads inside a login to count as its own work.
fn in_a_function_runtime<T: Send, F: Future<Output = T>>(work: impl FnOnce() -> F + Send) -> T {
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            scope
                .spawn(|| crate::function_runtime().block_on(work()))
                .join()
                .expect("the function's thread panicked")
        })
    })
}

/// `auth-bench own-work`: login's own work alone (`login_own_work`), on a
/// bench of its own; quicker than `functions` when working on that path.
pub async fn own_work() -> bool {
    let bench = Bench::new().await;
    print_own_work(&[in_a_function_runtime(|| login_own_work(&bench))]);
    true
}
