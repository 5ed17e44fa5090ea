//! What every function's `main` shares: logging, building its clients and keys
//! from the environment once at init, and the Lambda loop with panics contained
//! as our JSON 500.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use std::time::Instant;

use futures_util::FutureExt;
use lambda_http::request::LambdaRequest;
use lambda_http::tower::ServiceExt as _;
use lambda_http::{Body, Error, LambdaEvent, Request, RequestExt, Response, service_fn};
use tracing::Instrument as _;

use aws_config::SdkConfig;

use crate::aws::{SdkSettings, sdk_config};
use crate::clock::system_now;
use crate::config::{Environment, StoreConfig, TokenConfig};
use crate::http::{ApiError, INVALID_BASE64_MARK};
use crate::key_set::{KeySettings, KeyTable};
use crate::keys::{
    KeySource, PublicKey, Signer, load_public_keys, signing_key_from, verification_keys_from,
};
use crate::store::{Store, dynamodb_client};
use crate::tokens::{TokenIssuer, TokenVerifier};

/// Structured logs, as Lambda's advanced logging controls ask: JSON when
/// `AWS_LAMBDA_LOG_FORMAT` is `JSON`, at `AWS_LAMBDA_LOG_LEVEL` (else `RUST_LOG`,
/// a plain level, else INFO). No per-target filter: it would bring a regex
/// engine into every function for nothing.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let settings = LogSettings::from_source(&Environment);
    crate::metrics::init();
    if settings.json {
        tracing_subscriber::registry()
            .with(settings.level)
            .with(json_logs(std::io::stdout, settings.level))
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_target(false)
            .without_time()
            .with_max_level(settings.level)
            .init();
    }
}

/// What `init_logging` reads from the environment.
#[derive(Debug, PartialEq, Eq)]
struct LogSettings {
    level: tracing_subscriber::filter::LevelFilter,
    json: bool,
}

impl LogSettings {
    fn from_source(source: &impl crate::config::Source) -> Self {
        let level = source
            .get("AWS_LAMBDA_LOG_LEVEL")
            .or_else(|| source.get("RUST_LOG"))
            .and_then(|level| level.trim().parse().ok())
            .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
        let json = source
            .get("AWS_LAMBDA_LOG_FORMAT")
            .is_some_and(|format| format.eq_ignore_ascii_case("json"));
        LogSettings { level, json }
    }
}

/// The JSON log lines at `level`, one object a line, written to `writer`:
/// each event's fields, and the span it is in as `span`. No time (Lambda
/// stamps each line) and no target. At INFO and above the request's span is
/// the only one open (the SDK's own are at DEBUG and TRACE), so `span` holds
/// its ids, route and user id, and the list of enclosing spans is left out:
/// it would only write them twice on every line. Below INFO an event may
/// lie in one of the SDK's spans, and the list (`spans`, the request's
/// first) is what carries the request's ids: kept then.
pub fn json_logs<S, W>(
    writer: W,
    level: tracing_subscriber::filter::LevelFilter,
) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(level > tracing_subscriber::filter::LevelFilter::INFO)
        .with_target(false)
        .without_time()
        .with_writer(writer)
}

/// The AWS SDK configuration, with the bounds of `SDK_*`: one per process,
/// shared by its DynamoDB and KMS clients.
pub fn aws_from_env() -> Result<SdkConfig, Error> {
    Ok(sdk_config(&SdkSettings::from_source(&Environment)?)?)
}

/// The table named by `TABLE_NAME`.
pub fn store_from_env(sdk: &SdkConfig) -> Result<Store, Error> {
    let config = StoreConfig::from_source(&Environment)?;
    Ok(Store::new(dynamodb_client(sdk), config.table_name))
}

/// Issuer, audience and lifetime of access tokens.
pub fn token_config_from_env() -> Result<TokenConfig, Error> {
    Ok(TokenConfig::from_source(&Environment)?)
}

/// The table's key set (`JWT_VERIFICATION_KEYS=table`, `JWT_SIGNING_KEY=sealed:…`),
/// read once here: one strongly consistent query, which also opens the
/// connection to DynamoDB.
pub async fn key_table_from_env(store: &Store) -> Result<Arc<KeyTable>, Error> {
    let settings = KeySettings::from_source(&Environment)?;
    Ok(Arc::new(KeyTable::load(store.clone(), settings).await?))
}

/// The token issuer, signing with `JWT_SIGNING_KEY`: a KMS key or a PEM (no
/// network call), or the table's sealed keys (`table`, the process's key set
/// if it has one already, else read here): the key that signs now is
/// unsealed here, with one KMS `Decrypt`.
pub async fn issuer_from_env(
    sdk: &SdkConfig,
    tokens: &TokenConfig,
    store: &Store,
    table: Option<Arc<KeyTable>>,
) -> Result<TokenIssuer, Error> {
    let kms = crate::aws::kms_client(sdk);
    // The roles a token carries only after a second factor.
    let guarded = crate::permissions::second_factor_roles(&Environment)?;
    let issuer = match signing_key_from(&Environment)? {
        KeySource::Sealed(sealing_key) => {
            let table = match table {
                Some(table) => table,
                None => key_table_from_env(store).await?,
            };
            TokenIssuer::sealed(table, kms, sealing_key, tokens, system_now())
                .await
                .map_err(|e| format!("the issuer key does not unseal: {e}"))?
        }
        source => TokenIssuer::new(Signer::new(&source, &kms)?, tokens),
    };
    Ok(issuer.guarding(guarded))
}

/// The public keys of `JWT_VERIFICATION_KEYS` that are loaded once (fetched
/// from KMS, here, for KMS keys), and the table's key set (`TABLE_NAME`) if
/// it names it.
pub async fn public_keys_from_env(
    sdk: &SdkConfig,
) -> Result<(Vec<PublicKey>, Option<Arc<KeyTable>>), Error> {
    let sources = verification_keys_from(&Environment)?;
    let kms = crate::aws::kms_client(sdk);
    if !sources.contains(&KeySource::Table) {
        return Ok((load_public_keys(&sources, &kms).await?, None));
    }
    let (keys, table) = keys_and_table(&sources, &kms, &store_from_env(sdk)?).await?;
    Ok((keys, Some(table)))
}

/// The keys of `sources` loaded once and the table's key set, at once.
async fn keys_and_table(
    sources: &[KeySource],
    kms: &aws_sdk_kms::Client,
    store: &Store,
) -> Result<(Vec<PublicKey>, Arc<KeyTable>), Error> {
    let (keys, table) = tokio::join!(load_public_keys(sources, kms), key_table_from_env(store));
    Ok((keys?, table?))
}

/// What every function that checks bearer tokens builds at init.
pub struct Verifying {
    pub sdk: SdkConfig,
    pub tokens: TokenConfig,
    pub store: Store,
    pub verifier: TokenVerifier,
    /// The table's key set, when the verifier reads it (sealed mode): an
    /// issuer in the same process shares it.
    pub key_table: Option<Arc<KeyTable>>,
}

/// The SDK configuration, the token settings, the table (`TABLE_NAME`) and
/// the token verifier with the keys of `JWT_VERIFICATION_KEYS`: the table's
/// (sealed mode: one DynamoDB query, no KMS call), or KMS public keys fetched
/// while the table's connection opens.
pub async fn verifying_from_env() -> Result<Verifying, Error> {
    let sdk = aws_from_env()?;
    let tokens = token_config_from_env()?;
    let store = store_from_env(&sdk)?;
    let sources = verification_keys_from(&Environment)?;
    let (verifier, key_table) =
        verifier_from(&sources, &crate::aws::kms_client(&sdk), &tokens, &store).await?;
    Ok(Verifying {
        sdk,
        tokens,
        store,
        verifier,
        key_table,
    })
}

/// The token verifier, with the public keys of `sources`. The table's are
/// read with one query, which opens the connection to DynamoDB; KMS keys are
/// fetched while `store` opens it (a warm-up read): a verifier's init waits
/// for the slower of KMS and that handshake, not for both one after the
/// other, and its first request finds the connection open.
async fn verifier_from(
    sources: &[KeySource],
    kms: &aws_sdk_kms::Client,
    tokens: &TokenConfig,
    store: &Store,
) -> Result<(TokenVerifier, Option<Arc<KeyTable>>), Error> {
    if sources.contains(&KeySource::Table) {
        let (keys, table) = keys_and_table(sources, kms, store).await?;
        let verifier = TokenVerifier::with_table(&keys, table.clone(), tokens);
        return Ok((verifier, Some(table)));
    }
    let (keys, ()) = tokio::join!(load_public_keys(sources, kms), store.warm_up());
    Ok((TokenVerifier::new(&keys?, tokens), None))
}

/// Serves `handler` on the Lambda Runtime API until the process ends: every
/// request through `handle`, so panics are contained and each request logs
/// one line. The functions run it on a current-thread runtime: Lambda hands a
/// process one event at a time, so worker threads would only cost their start
/// at every cold start (bcrypt still leaves the event loop, on the blocking pool).
pub async fn serve<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Response<Body>> + Send,
{
    let adapter = lambda_http::Adapter::from(service_fn(|req: Request| {
        let response = handle(&handler, req);
        async move { Ok::<_, Error>(response.await) }
    }));
    lambda_http::lambda_runtime::run(adapter.map_request(mark_invalid_base64)).await
}

/// lambda_http panics, outside any handler, on an `isBase64Encoded` body that
/// is not base64. API Gateway never sends one, but nothing else may turn a bad
/// request into a 500: such a body is dropped and marked, and the handler
/// answers 400.
fn mark_invalid_base64(mut event: LambdaEvent<LambdaRequest>) -> LambdaEvent<LambdaRequest> {
    use base64::Engine as _;
    #[allow(irrefutable_let_patterns)]
    if let LambdaRequest::ApiGatewayV2(request) = &mut event.payload
        && request.is_base64_encoded
        && request.body.as_deref().is_some_and(|body| {
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .is_err()
        })
    {
        request.is_base64_encoded = false;
        request.body = None;
        request.headers.insert(
            INVALID_BASE64_MARK,
            lambda_http::http::HeaderValue::from_static("1"),
        );
    }
    event
}

/// One request: the handler, with a panic contained as our JSON 500, inside a
/// span carrying the request id, the route and (once a handler records it)
/// the user id, closed by one line with status and latency. Nothing of the
/// request's content is logged: no body, no header, no token.
pub async fn handle<F, Fut>(handler: &F, req: Request) -> Response<Body>
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Response<Body>>,
{
    let started = Instant::now();
    let request_id = req
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        // Joins this line with the API's access log line (its requestId).
        api_request_id = %crate::http::api_request_id(&req),
        route = %route_template(&req),
        user_id = tracing::field::Empty,
    );
    let response = contain_panics(handler(req)).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request done"
        );
    });
    crate::metrics::response(response.status().as_u16());
    response
}

/// The route a request took as its template (`DELETE
/// /admin/users/{username}`), never the path itself: a path can name a user,
/// and no log line names one. Made from the path (whatever an emulator puts
/// in the event's route key): a path that is none of ours is `{other}`.
pub fn route_template(req: &Request) -> String {
    format!("{} {}", req.method(), path_template(req.uri().path()))
}

/// `handlers::page::ASSETS_PREFIX`, `handlers::admin::USERS_PATH` and
/// `handlers::sessions::SESSIONS_PATH` (a
/// test checks): the runtime sits below the handlers.
const ASSETS_PREFIX: &str = "/assets/";
const USERS_PATH: &str = "/admin/users";
const SESSIONS_ONE: &str = "/sessions/";

/// The template of one of our paths: fixed paths as they are, a user in the
/// admin API as `{username}` and a role as `{role}`, the page's assets as
/// `/assets/{file}`.
fn path_template(path: &str) -> &'static str {
    const FIXED: [&str; 31] = [
        "/",
        "/login",
        "/login/second-factor",
        "/login/passkey",
        "/login/passkey/options",
        "/account/passkeys",
        "/account/passkeys/options",
        "/account/passkeys/verify",
        "/account/passkeys/verify/options",
        "/account/second-factor",
        "/account/second-factor/confirm",
        "/account/second-factor/recovery-codes",
        "/account/second-factor/verify",
        "/register",
        "/refresh",
        "/logout",
        "/get_name",
        "/password",
        "/reauthenticate",
        "/account",
        "/account/email",
        "/account/email/verify",
        "/account/identities",
        "/password/reset",
        "/password/reset/confirm",
        "/sessions",
        "/oidc/providers",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/favicon.ico",
        USERS_PATH,
    ];
    let trimmed = match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    if let Some(fixed) = FIXED.iter().find(|fixed| **fixed == trimmed) {
        return fixed;
    }
    if path.starts_with(ASSETS_PREFIX) {
        return "/assets/{file}";
    }
    if let Some(id) = trimmed.strip_prefix(SESSIONS_ONE)
        && !id.contains('/')
    {
        return "/sessions/{id}";
    }
    // A passkey's credential id names no one, but it is one person's: a
    // template too.
    if let Some(id) = trimmed.strip_prefix("/account/passkeys/")
        && !id.contains('/')
    {
        return "/account/passkeys/{id}";
    }
    // A provider's id is configuration, not a person's: still a template.
    if let Some(id) = trimmed.strip_prefix("/account/identities/")
        && !id.contains('/')
    {
        return "/account/identities/{provider}";
    }
    if let Some(rest) = trimmed.strip_prefix("/oidc/") {
        return match rest.split('/').collect::<Vec<_>>()[..] {
            [_, "start"] => "/oidc/{provider}/start",
            [_, "callback"] => "/oidc/{provider}/callback",
            _ => "{other}",
        };
    }
    let Some(rest) = trimmed
        .strip_prefix(USERS_PATH)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        return "{other}";
    };
    match rest.split('/').skip(1).collect::<Vec<_>>()[..] {
        [] => "/admin/users/{username}",
        ["roles", _] => "/admin/users/{username}/roles/{role}",
        ["lock"] => "/admin/users/{username}/lock",
        ["sessions"] => "/admin/users/{username}/sessions",
        ["password"] => "/admin/users/{username}/password",
        ["second-factor"] => "/admin/users/{username}/second-factor",
        _ => "/admin/users/{username}/{other}",
    }
}

/// Records the caller's user id on the request's log line.
pub fn record_user(id: &crate::users::UserId) {
    tracing::Span::current().record("user_id", tracing::field::display(id));
}

/// Runs a handler future; a panic in it becomes our JSON 500 rather than an
/// `Err`, which API Gateway would answer with its own non-JSON 500.
pub async fn contain_panics(handler: impl Future<Output = Response<Body>>) -> Response<Body> {
    AssertUnwindSafe(handler)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!("handler panicked");
            ApiError::Internal.into_response()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn a_route_is_logged_as_its_template_never_with_a_username() {
        assert_eq!(ASSETS_PREFIX, crate::handlers::page::ASSETS_PREFIX);
        assert_eq!(USERS_PATH, crate::handlers::admin::USERS_PATH);
        assert_eq!(
            SESSIONS_ONE,
            format!("{}/", crate::handlers::sessions::SESSIONS_PATH)
        );
        let template = |method: &str, path: &str| {
            let req = lambda_http::http::Request::builder()
                .method(method)
                .uri(path)
                .body(Body::Empty)
                .unwrap();
            route_template(&req)
        };
        assert_eq!(template("POST", "/login"), "POST /login");
        // Every route of the router (the template's) is logged as itself.
        let manifest =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
        let router = manifest
            .split("[workspace.metadata.lambda.watch.router]")
            .nth(1)
            .unwrap();
        let mut routes = 0;
        for line in router.lines().filter(|l| l.starts_with('"')) {
            let route = line.split('"').nth(1).unwrap();
            let (path, want) = match route {
                "/assets/{*path}" => ("/assets/a.js".to_owned(), "/assets/{file}".to_owned()),
                _ => (
                    route
                        .replace("{username}", "ada")
                        .replace("{role}", "support")
                        .replace("{id}", "a-session")
                        .replace("{provider}", "google"),
                    route.to_owned(),
                ),
            };
            assert_eq!(template("GET", &path), format!("GET {want}"), "{route}");
            routes += 1;
        }
        assert!(routes >= 25, "{routes} routes read from the router");
        assert_eq!(template("GET", "/oidc/google/elsewhere"), "GET {other}");
        assert_eq!(template("GET", "/"), "GET /");
        assert_eq!(
            template("GET", "/assets/index-abc12345.js"),
            "GET /assets/{file}"
        );
        assert_eq!(
            template("DELETE", "/admin/users/ada"),
            "DELETE /admin/users/{username}"
        );
        assert_eq!(
            template("PUT", "/admin/users/ada/roles/support"),
            "PUT /admin/users/{username}/roles/{role}"
        );
        assert_eq!(
            template("DELETE", "/admin/users/ada/sessions/"),
            "DELETE /admin/users/{username}/sessions"
        );
        assert_eq!(
            template("PUT", "/admin/users/ada/password"),
            "PUT /admin/users/{username}/password"
        );
        assert_eq!(
            template(
                "GET",
                "/admin/users?id=0b7a4f1e-1c1e-4f5e-9a55-5a1f0c2d3e4f"
            ),
            "GET /admin/users"
        );
        assert_eq!(template("GET", "/admin/usersada"), "GET {other}");
        assert_eq!(template("GET", "/get_name/ada"), "GET {other}");
        assert_eq!(template("GET", "/sessions/"), "GET /sessions");
        assert_eq!(
            template("DELETE", "/sessions/0b6b9d0e-8d3c-4f4e-9a53-3f0c2f1f5d11"),
            "DELETE /sessions/{id}"
        );
        assert_eq!(template("DELETE", "/sessions/a/b"), "DELETE {other}");
        assert_eq!(
            template("GET", "/admin/users/ada/x/y"),
            "GET /admin/users/{username}/{other}"
        );
    }

    #[test]
    fn log_settings_follow_lambdas_variables_then_rust_log() {
        let settings = |vars: &'static [(&str, &str)]| {
            LogSettings::from_source(&|name: &str| {
                vars.iter()
                    .find(|(var, _)| *var == name)
                    .map(|(_, value)| (*value).to_owned())
            })
        };
        let at = |level, json| LogSettings { level, json };
        assert_eq!(settings(&[]), at(LevelFilter::INFO, false));
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_FORMAT", "json"), ("RUST_LOG", "warn")]),
            at(LevelFilter::WARN, true)
        );
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_LEVEL", " DEBUG "), ("RUST_LOG", "warn")]),
            at(LevelFilter::DEBUG, false)
        );
        // Not a plain level (a per-target filter): INFO, not a panic.
        assert_eq!(
            settings(&[("RUST_LOG", "auth=debug,info")]),
            at(LevelFilter::INFO, false)
        );
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_FORMAT", "Text")]),
            at(LevelFilter::INFO, false)
        );
    }

    /// The lines `json_logs` writes at `level` for an INFO event in the
    /// request's span, then a DEBUG event in a DEBUG span inside it (as the
    /// SDK's are), parsed.
    fn json_lines_at(level: LevelFilter) -> Vec<serde_json::Value> {
        use tracing_subscriber::layer::SubscriberExt as _;
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(level)
            .with(json_logs(move || writer.clone(), level));
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request", request_id = "r-1", route = "POST /login");
            request.in_scope(|| {
                tracing::info!("in the request");
                tracing::debug_span!("try_attempt").in_scope(|| tracing::debug!("in the SDK"));
            });
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn json_lines_carry_the_request_once_at_info() {
        let lines = json_lines_at(LevelFilter::INFO);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["fields"]["message"], "in the request");
        assert_eq!(line["span"]["request_id"], "r-1", "{line}");
        assert_eq!(line["span"]["route"], "POST /login", "{line}");
        assert!(line.get("spans").is_none(), "the span twice: {line}");
        assert!(line.get("timestamp").is_none(), "{line}");
    }

    #[test]
    fn json_lines_inside_the_sdks_spans_carry_the_request_at_debug() {
        let lines = json_lines_at(LevelFilter::DEBUG);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let nested = &lines[1];
        assert_eq!(nested["fields"]["message"], "in the SDK");
        assert_eq!(nested["span"]["name"], "try_attempt", "{nested}");
        assert_eq!(nested["spans"][0]["request_id"], "r-1", "{nested}");
    }

    #[tokio::test]
    async fn a_panicking_handler_gives_a_json_500() {
        let response = contain_panics(async { panic!("boom") }).await;
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["content-type"], "application/json");
        let Body::Text(text) = response.body() else {
            panic!("not text")
        };
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(json["error"], "internal_error");
        assert!(
            !text.contains("boom"),
            "the panic message must not leak: {text}"
        );
    }

    /// Against a KMS and a DynamoDB that accept connections and never
    /// answer, both are asked at once. Asked one after the other, the second
    /// would be asked only once the first had given up: the warm-up after its
    /// bound (`WARM_UP_LIMIT`), KMS after its attempt timeout (5 s here, and
    /// its failure would end the init before DynamoDB is asked at all).
    #[tokio::test]
    async fn a_verifier_asks_kms_for_its_keys_while_the_table_connection_opens() {
        use aws_sdk_dynamodb::config::{Credentials, Region};
        use std::time::Duration;
        use tokio::net::TcpListener;

        let kms = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let table = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = |listener: &TcpListener| format!("http://{}", listener.local_addr().unwrap());
        let settings = SdkSettings {
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(10),
            max_attempts: 1,
            trust: crate::trust::TrustRoots::Amazon,
        };
        let sdk = crate::aws::sdk_config_loader(&settings)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "test"))
            .load()
            .await;
        let kms_client = aws_sdk_kms::Client::from_conf(
            aws_sdk_kms::config::Builder::from(&sdk)
                .endpoint_url(url(&kms))
                .build(),
        );
        let store = Store::new(
            aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&sdk)
                    .endpoint_url(url(&table))
                    .build(),
            ),
            "users".to_owned(),
        );
        let tokens = TokenConfig {
            issuer: "https://auth.test".into(),
            audience: "test".into(),
            access_token_ttl: Duration::from_secs(900),
        };
        let verifier = tokio::spawn(async move {
            let sources = [KeySource::Kms("a-key".into())];
            verifier_from(&sources, &kms_client, &tokens, &store)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        });
        let asked = async |listener: TcpListener| {
            let (connection, _) = listener.accept().await.unwrap();
            (Instant::now(), connection)
        };
        let ((kms_asked, _kms), (table_asked, _table)) =
            tokio::time::timeout(Duration::from_secs(15), async {
                tokio::join!(asked(kms), asked(table))
            })
            .await
            .expect("KMS and DynamoDB were not both asked");
        verifier.abort();
        let apart = kms_asked.max(table_asked) - kms_asked.min(table_asked);
        // A few milliseconds at once; one after the other, the bound at least.
        assert!(
            apart < crate::store::WARM_UP_LIMIT / 2,
            "asked {apart:?} apart: one after the other"
        );
    }

    #[tokio::test]
    async fn a_normal_response_passes_through() {
        let response = contain_panics(async { ApiError::UserNotFound.into_response() }).await;
        assert_eq!(response.status(), 404);
    }
}
