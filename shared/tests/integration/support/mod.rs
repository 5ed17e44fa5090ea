//! Shared by the integration tests: the DynamoDB Local that `make test` started,
//! a fresh table per test, users, tokens and requests built from `events/`.

use std::time::Duration;

use auth::aws::{SdkSettings, sdk_config_loader};
use auth::clock::Clock;
use auth::config::TokenConfig;
use auth::handlers::account::Account;
use auth::handlers::get_name::GetName;
use auth::handlers::login::Login;
use auth::handlers::logout::Logout;
use auth::handlers::refresh::Refresh;
use auth::handlers::register::Register;
use auth::keys::{PublicKey, Signer, generate_pem_pair, public_key_from_pem};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::sessions::SessionConfig;
use auth::store::aws_sdk_dynamodb::Client;
use auth::store::aws_sdk_dynamodb::config::{Credentials, Region};
use auth::store::{Store, create_table};
use auth::tokens::{TokenIssuer, TokenVerifier};
use auth::users::{User, Username};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lambda_http::{Body, Request, Response};

pub use auth_authenticator as authenticator;
pub mod oidc;
pub mod proxy;
pub mod race;

pub use race::{Outcomes, race, racing, statuses};

pub const ISSUER: &str = "https://auth.test";
pub const AUDIENCE: &str = "auth-test-api";

/// Notes a secret a test received through the watch (a token, a proof) in
/// `TEST_SECRETS_FILE`, which `make test` sets: its last stage checks that
/// none is in the watch's logs.
pub fn note_secret(secret: &str) {
    use std::io::Write as _;
    let Ok(path) = std::env::var("TEST_SECRETS_FILE") else {
        return;
    };
    if secret.len() < 8 {
        return;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    writeln!(file, "{secret}").unwrap();
}

/// A variable `make test` sets. Missing means the tests were started some other
/// way: that is a failure, never a skip.
pub fn required_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with `make test`, which starts DynamoDB Local and the watch")
    })
}

pub fn sdk_settings() -> SdkSettings {
    SdkSettings {
        attempt_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(5),
        max_attempts: 3,
        trust: auth::trust::TrustRoots::Amazon,
    }
}

/// SDK configuration for `endpoint` with our production bounds from `settings`.
pub async fn sdk_for(endpoint: &str, settings: &SdkSettings) -> aws_config::SdkConfig {
    sdk_config_loader(settings)
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .load()
        .await
}

/// A DynamoDB client for `endpoint`.
pub async fn client_for(endpoint: &str, settings: &SdkSettings) -> Client {
    Client::new(&sdk_for(endpoint, settings).await)
}

/// A client for the run's DynamoDB Local.
pub async fn local_client() -> Client {
    client_for(&required_env("DYNAMODB_TEST_ENDPOINT"), &sdk_settings()).await
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

/// An RSA key pair made at run time (never committed).
pub struct TestKey {
    pub private_pem: String,
    pub public_pem: String,
    pub public: PublicKey,
}

impl TestKey {
    pub fn signer(&self) -> Signer {
        Signer::from_pem(&self.private_pem, "test key").unwrap()
    }
}

/// Our key (slot 0), a stranger's (slot 1) and the stand-in identity
/// provider's (slot 2, and slot 3 after it rotates), made once per test
/// binary.
pub fn test_key(slot: usize) -> &'static TestKey {
    static KEYS: std::sync::OnceLock<Vec<TestKey>> = std::sync::OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..4)
            .map(|_| {
                let (private_pem, public_pem) = generate_pem_pair().unwrap();
                let public = public_key_from_pem(&public_pem, "test key").unwrap();
                TestKey {
                    private_pem,
                    public_pem,
                    public,
                }
            })
            .collect()
    })[slot]
}

pub fn our_key() -> &'static TestKey {
    test_key(0)
}

pub fn stranger_key() -> &'static TestKey {
    test_key(1)
}

pub fn issuer() -> TokenIssuer {
    TokenIssuer::new(our_key().signer(), &token_config())
}

pub fn verifier() -> TokenVerifier {
    TokenVerifier::new(&[our_key().public.clone()], &token_config())
}

/// Any header and claims, RS256-signed by `key`: for forging hostile tokens.
pub async fn forge(
    key: &TestKey,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> String {
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = key.signer().sign(input.as_bytes()).await.unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The JOSE header our tokens carry.
pub fn our_header() -> serde_json::Value {
    serde_json::json!({"alg": "RS256", "typ": "at+jwt", "kid": our_key().public.kid})
}

/// The tests' deployment: unlike a real one's default, no role needs a
/// second factor (`SECOND_FACTOR_ROLES=none`), so that a password stands for
/// an admin's sign-in; `App::guarded` is the default's.
pub fn token_config() -> TokenConfig {
    TokenConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        access_token_ttl: Duration::from_secs(900),
    }
}

/// The roles the tests' deployment knows: admin and one more.
pub fn permissions() -> auth::permissions::PermissionConfig {
    auth::permissions::PermissionConfig {
        roles: ["admin", "support"]
            .iter()
            .map(|r| auth::permissions::Role::parse(r).unwrap())
            .collect(),
        fresh_auth_max_age: Duration::from_secs(600),
        second_factor_roles: Default::default(),
    }
}

pub fn session_config() -> SessionConfig {
    SessionConfig {
        refresh_ttl: Duration::from_secs(30 * 24 * 3600),
        reuse_grace: Duration::from_secs(10),
        max_lifetime: Duration::from_secs(90 * 24 * 3600),
        device_ttl: auth::sessions::DEFAULT_DEVICE_TTL,
    }
}

/// Per-IP limits no test reaches unless it means to.
/// The origins the tests' stack is served from.
pub const OWN_ORIGIN: &str = "https://auth.test";

pub fn browser_policy() -> auth::browser::BrowserPolicy {
    auth::browser::BrowserPolicy::new(&[OWN_ORIGIN])
}

pub fn generous_limits() -> auth::throttle::RateLimits {
    auth::throttle::RateLimits {
        login_per_minute: 10_000,
        register_per_hour: 10_000,
        reset_per_ip_per_hour: 10_000,
        reset_per_identifier_per_hour: 1_000,
        tickets_per_account_per_hour: 1_000,
        ticket_guesses_per_ip_per_hour: 10_000,
    }
}

/// Every handler's state over one store and one clock.
#[derive(Clone)]
pub struct App {
    pub store: Store,
    pub clock: Clock,
    pub sessions: SessionConfig,
    /// The roles that need a second factor (`SECOND_FACTOR_ROLES`).
    pub guarded: std::collections::BTreeSet<auth::permissions::Role>,
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
            guarded: Default::default(),
        }
    }

    /// The same app as a real deployment's default: `admin` needs a second
    /// factor.
    pub fn guarded(mut self) -> Self {
        self.guarded = [auth::permissions::Role::admin()].into();
        self
    }

    /// The issuer of this app's tokens.
    pub fn issuer(&self) -> TokenIssuer {
        TokenIssuer::new(our_key().signer(), &token_config()).guarding(self.guarded.clone())
    }

    pub fn login(&self) -> Login {
        Login {
            store: self.store.clone(),
            passwords: hasher(),
            tokens: self.issuer(),
            sessions: self.sessions.clone(),
            limits: generous_limits(),
            browser: browser_policy(),
            clock: self.clock.clone(),
        }
    }

    pub fn get_name(&self) -> GetName {
        GetName {
            store: self.store.clone(),
            tokens: verifier(),
            clock: self.clock.clone(),
        }
    }

    pub fn register(&self) -> Register {
        Register {
            store: self.store.clone(),
            passwords: hasher(),
            limits: generous_limits(),
            sign_up: auth::handlers::register::SignUp::Open,
            clock: self.clock.clone(),
        }
    }

    pub fn refresh(&self) -> Refresh {
        Refresh {
            store: self.store.clone(),
            tokens: self.issuer(),
            sessions: self.sessions.clone(),
            browser: browser_policy(),
            clock: self.clock.clone(),
        }
    }

    pub fn logout(&self) -> Logout {
        Logout {
            store: self.store.clone(),
            tokens: verifier(),
            browser: browser_policy(),
            clock: self.clock.clone(),
        }
    }

    pub fn account(&self) -> Account {
        Account {
            store: self.store.clone(),
            passwords: hasher(),
            verifier: verifier(),
            issuer: self.issuer(),
            sessions: self.sessions.clone(),
            limits: generous_limits(),
            browser: browser_policy(),
            fresh_auth: auth::permissions::DEFAULT_FRESH_AUTH_MAX_AGE,
            clock: self.clock.clone(),
        }
    }
}

/// The RFC 4648 base32 an enrolment answers, back to the secret, as an
/// authenticator app reads it.
pub fn totp_secret_from_base32(base32: &str) -> auth::totp::TotpSecret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut bytes) = (0u32, 0u64, Vec::new());
    for c in base32.trim_end_matches('=').bytes() {
        let index = ALPHABET.iter().position(|a| *a == c).expect("base32");
        value = (value << 5) | index as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((value >> bits) as u8);
            value &= (1 << bits) - 1;
        }
    }
    auth::totp::TotpSecret::from_bytes(zeroize::Zeroizing::new(bytes)).expect("a 160-bit secret")
}

/// The data key every test's second-factor function holds: one per run.
pub fn test_secret_box() -> auth::second_factor::SecretBox {
    static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| auth::second_factor::generate_data_key().to_vec());
    auth::second_factor::SecretBox::new(key, "00112233aabbccdd").unwrap()
}

impl App {
    pub fn second_factor(&self) -> auth::handlers::second_factor::SecondFactor {
        auth::handlers::second_factor::SecondFactor {
            store: self.store.clone(),
            verifier: verifier(),
            issuer: self.issuer(),
            sessions: self.sessions.clone(),
            limits: generous_limits(),
            browser: browser_policy(),
            secrets: test_secret_box(),
            fresh_auth: auth::permissions::DEFAULT_FRESH_AUTH_MAX_AGE,
            clock: self.clock.clone(),
        }
    }

    /// The passkeys function, its relying party the page's: `OWN_ORIGIN`.
    pub fn passkeys(&self) -> auth::handlers::passkeys::Passkeys {
        let config = auth::relying_party::PasskeyConfig::from_source(&|var: &str| {
            (var == "JWT_ISSUER").then(|| OWN_ORIGIN.to_owned())
        })
        .unwrap();
        auth::handlers::passkeys::Passkeys {
            store: self.store.clone(),
            verifier: verifier(),
            issuer: self.issuer(),
            sessions: self.sessions.clone(),
            limits: generous_limits(),
            browser: browser_policy(),
            relying_party: config.relying_party().unwrap(),
            fresh_auth: auth::permissions::DEFAULT_FRESH_AUTH_MAX_AGE,
            clock: self.clock.clone(),
        }
    }

    pub fn admin(&self) -> auth::handlers::admin::Admin {
        auth::handlers::admin::Admin {
            store: self.store.clone(),
            verifier: verifier(),
            permissions: auth::permissions::PermissionConfig {
                second_factor_roles: self.guarded.clone(),
                ..permissions()
            },
            passwords: hasher(),
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
/// given, the body replaced (and said to be JSON, as a client must).
pub fn request(name: &str, authorization: Option<&str>, body: Option<&str>) -> Request {
    let mut json: serde_json::Value = serde_json::from_str(&event_text(name)).unwrap();
    let headers = json["headers"].as_object_mut().unwrap();
    match authorization {
        Some(value) => headers.insert("authorization".into(), value.into()),
        None => headers.remove("authorization"),
    };
    if let Some(body) = body {
        headers
            .entry("content-type")
            .or_insert_with(|| "application/json".into());
        json["body"] = body.into();
    }
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

/// What the log lines written while a `capture_logs` guard lives say.
#[derive(Clone, Default)]
pub struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Each line, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

thread_local! {
    static CAPTURING: std::cell::RefCell<Option<LogBuffer>> = const { std::cell::RefCell::new(None) };
}

/// Writes a log line into this thread's capture, if any; else nowhere.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURING.with(|c| {
            if let Some(buffer) = c.borrow_mut().as_mut() {
                buffer.write_all(buf)?;
            }
            Ok(buf.len())
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Ends a thread's capture when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURING.with(|c| *c.borrow_mut() = None);
    }
}

/// Captures the log lines this thread writes (JSON, with the current span,
/// as Lambda's logging controls ask) while the guard lives. One global
/// subscriber routes each line to its thread's capture: a scoped one per
/// test (`set_default`) loses events when tests on other threads register
/// the same callsites at the same moment (tracing's interest cache).
pub fn capture_logs() -> (LogBuffer, CaptureGuard) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        // The functions' JSON lines, at DEBUG.
        let debug = tracing_subscriber::filter::LevelFilter::DEBUG;
        let subscriber = tracing_subscriber::registry()
            .with(debug)
            .with(auth::runtime::json_logs(|| ThreadWriter, debug));
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the integration tests");
    });
    let buffer = LogBuffer::default();
    CAPTURING.with(|c| *c.borrow_mut() = Some(buffer.clone()));
    (buffer, CaptureGuard(()))
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Reads one HTTP/1.1 request from `socket` (for the stubs that stand in
/// for AWS): its head, lower-cased, and all its bytes. `None` once closed.
pub async fn read_http_request(socket: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match tokio::io::AsyncReadExt::read(socket, &mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_ascii_lowercase();
    let length: usize = http_header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        match tokio::io::AsyncReadExt::read(socket, &mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    Some((head, buffer))
}

/// A header's value in a lower-cased head.
pub fn http_header(head: &str, name: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
}

/// The whole HTTP answer DynamoDB gives for error `code` (400, its JSON error
/// shape), with `fields` (`"message":…` and the like) in its body.
pub fn dynamodb_error(code: &str, fields: &str) -> Vec<u8> {
    let body = format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}",{fields}}}"#);
    format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: stub\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
