//! `auth-bench functions`: every function, through a Runtime API of ours
//! (lambda.rs), beside the floor (a hello-world function on the same runtime
//! and release profile), on four layers from the plain path to the one
//! Lambda runs:
//!
//! 1. `plain`: DynamoDB Local over plain HTTP, a local PEM key, logs at WARN;
//! 2. `logs`: + JSON logs at INFO (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL`);
//! 3. `sealed`: + sealed mode's keys: the table's key set (made by a
//!    rotation on the bench's table), issuers unsealing with KMS (moto);
//! 4. `production`: + TLS to DynamoDB and KMS (tls.rs; `AWS_CA_BUNDLE`);
//!
//! and, beside the production path, `kms`: KMS mode on the production path
//! (`kms:` keys, `kms:Sign` per token), for the functions that sign.
//!
//! For each function and layer: init (exec to the first poll of `/next`) and
//! the first invocation's latency, median of `COLD_RUNS` processes, each
//! started right after a cold start of the floor and, for a function whose
//! init calls AWS, right after a minimal client in a fresh process made the
//! calls of its init (`init_calls`: in sealed mode the key set's query, and
//! an issuer's `Decrypt` after it; in KMS mode a verifier's public keys and
//! DynamoDB's warm-up beside them: the round trips its init still makes, new
//! connections and TLS handshakes included); each process's init is judged against the
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
use auth::key_set::{KeySettings, KeyTable};
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

mod calls;
mod federation;
mod init_calls;
mod own_work;
mod passkeys;
mod paths;
mod second_factor;

use calls::calls;
use init_calls::fresh_init_calls;
pub use init_calls::init_calls;
use own_work::{login_own_work, print_own_work, refresh_own_work};
use paths::{measure, with_body};

const COLD_RUNS: usize = 9;
const WARM: usize = 30;
const PASSWORD: &str = "the bench's own passphrase";
/// The password function's chain changes the password back and forth.
const PASSWORDS: [&str; 2] = ["bench passphrase number one", "bench passphrase number two"];
const FUNCTIONS: [&str; 12] = [
    "login",
    "get-name",
    "register",
    "refresh",
    "logout",
    "password",
    "admin",
    "jwks",
    "web",
    "federation",
    "second-factor",
    "passkeys",
];
/// The functions that fetch their public keys at init.
const VERIFIERS: [&str; 8] = [
    "get-name",
    "logout",
    "password",
    "admin",
    "jwks",
    "federation",
    "second-factor",
    "passkeys",
];
/// The functions that sign (KMS mode's column).
const ISSUERS: [&str; 6] = [
    "login",
    "refresh",
    "password",
    "federation",
    "second-factor",
    "passkeys",
];
/// The functions that read secrets at init, in every mode: federation its
/// providers' client secrets (SSM `GetParameter`, after its keys).
const SECRETS_AT_INIT: [&str; 1] = ["federation"];
/// The functions that unseal the second factor's data key at init (a
/// `GetItem` and a `Decrypt`, beside the issuer's key) where it is sealed
/// under KMS (`SECOND_FACTOR_KEY=kms:`: the sealed, production and KMS
/// layers; the plain ones read a local file).
const DATA_KEY_AT_INIT: [&str; 1] = ["second-factor"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Plain,
    Logs,
    Sealed,
    Production,
    /// The production path in KMS mode.
    Kms,
}

const LAYERS: [Layer; 4] = [Layer::Plain, Layer::Logs, Layer::Sealed, Layer::Production];

impl Layer {
    fn name(self) -> &'static str {
        match self {
            Layer::Plain => "plain",
            Layer::Logs => "logs",
            Layer::Sealed => "sealed",
            Layer::Production => "production",
            Layer::Kms => "kms",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Layer::Production | Layer::Kms)
    }

    fn sealed(self) -> bool {
        matches!(self, Layer::Sealed | Layer::Production)
    }
}

/// Whether `function`'s init calls AWS on `layer` (and so is credited the
/// round trips of those calls): in sealed mode every function that signs or
/// verifies reads the key set; in KMS mode the verifiers fetch their keys;
/// on every layer a function with secrets reads them; where the second
/// factor's data key is sealed under KMS, the function that holds it
/// unseals it.
fn calls_at_init(function: &str, layer: Layer) -> bool {
    calls_for_keys_at_init(function, layer)
        || SECRETS_AT_INIT.contains(&function)
        || (DATA_KEY_AT_INIT.contains(&function) && second_factor::DataKeys::sealed(layer))
}

/// Whether `function`'s init calls AWS for its keys on `layer`.
fn calls_for_keys_at_init(function: &str, layer: Layer) -> bool {
    match layer {
        Layer::Sealed | Layer::Production => {
            VERIFIERS.contains(&function) || ISSUERS.contains(&function)
        }
        Layer::Kms => VERIFIERS.contains(&function),
        Layer::Plain | Layer::Logs => false,
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
    /// The bytes the functions have sent KMS over TLS (the production
    /// path's requests): no function may move it after its init in sealed mode.
    kms_tls_sent: Arc<std::sync::atomic::AtomicU64>,
    ca_path: PathBuf,
    pem_private: PathBuf,
    pem_public: PathBuf,
    kms_key: String,
    /// Sealed mode's sealing key (symmetric), whose keys the bench's table holds.
    sealing_key: String,
    /// The bench's own store (plain path): users, sessions, issuer keys.
    store: Store,
    pem_issuer: TokenIssuer,
    kms_issuer: TokenIssuer,
    sealed_issuer: TokenIssuer,
    /// Password changes so far: every layer's chain changes the same user's
    /// password, back and forth between `PASSWORDS`.
    password_changes: AtomicUsize,
    /// The local identity provider federation signs in with.
    idp: federation::Idp,
    /// The second factor's data keys, and its pool of users.
    data_keys: second_factor::DataKeys,
    /// The passkeys' relying party and the bench user's passkey.
    passkeys: passkeys::Passkeys,
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
        let (ddb_tls, _) = authority.terminate(address(&ddb_plain)).await;
        let (kms_tls, kms_tls_sent) = authority.terminate(address(&kms_plain)).await;
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
        let sealing = kms_client
            .create_key()
            .key_spec(aws_sdk_kms::types::KeySpec::SymmetricDefault)
            .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
            .send()
            .await
            .expect("moto: CreateKey");
        let sealing_key = sealing.key_metadata().unwrap().key_id().to_owned();
        let client = dynamodb(&plain, &ddb_plain);
        let table = format!("bench-{}", uuid::Uuid::new_v4());
        create_table(&client, &table).await.expect("DynamoDB Local");
        let store = Store::new(client, table.clone());
        // Sealed mode's keys, as the rotation function makes them.
        let rotation = auth::rotation::RotationConfig::from_source(
            &|var: &str| (var == "JWT_SIGNING_KEY").then(|| format!("sealed:{sealing_key}")),
            &token_config(),
        )
        .unwrap();
        let now = auth::clock::system_now();
        auth::rotation::rotate(&store, &kms_client, &sealing_key, &rotation.schedule, now)
            .await
            .expect("a rotation on the bench's table");
        let key_table = KeyTable::load(store.clone(), KeySettings::default())
            .await
            .unwrap();
        // As the functions' issuers: admin only after a second factor.
        let guarded = || std::collections::BTreeSet::from([Role::admin()]);
        let sealed_issuer = TokenIssuer::sealed(
            Arc::new(key_table),
            kms_client.clone(),
            sealing_key.clone(),
            &token_config(),
            now,
        )
        .await
        .unwrap()
        .guarding(guarded());
        let pem_issuer = TokenIssuer::new(
            Signer::from_pem(&private, "bench").unwrap(),
            &token_config(),
        )
        .guarding(guarded());
        let kms_issuer = TokenIssuer::new(
            Signer::new(&KeySource::Kms(kms_key.clone()), &kms_client).unwrap(),
            &token_config(),
        )
        .guarding(guarded());
        let idp = federation::Idp::new(&plain, &kms_plain).await;
        let hasher = PasswordHasher::new(BcryptCost::DEFAULT);
        let data_keys = second_factor::DataKeys::new(
            &dir,
            &kms_client,
            &store,
            hasher.hash(PASSWORD.into()).await.unwrap(),
        )
        .await;
        let passkeys =
            passkeys::Passkeys::new(&store, hasher.hash(PASSWORD.into()).await.unwrap()).await;
        let bench = Bench {
            bin: PathBuf::from(var("BENCH_BIN")),
            table,
            ddb_plain,
            ddb_tls,
            kms_plain,
            kms_tls,
            kms_tls_sent,
            ca_path,
            pem_private,
            pem_public,
            kms_key,
            sealing_key,
            store,
            pem_issuer,
            kms_issuer,
            sealed_issuer,
            password_changes: AtomicUsize::new(0),
            idp,
            data_keys,
            passkeys,
        };
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
        // The admin role needs a second factor (SECOND_FACTOR_ROLES'
        // default): the bench's admin has one, and signs in with it.
        let secrets = auth::second_factor::SecretBox::new(
            &auth::second_factor::generate_data_key()[..],
            "00000000000be4c4",
        )
        .unwrap();
        let secret = auth::totp::TotpSecret::generate();
        let now = auth::clock::system_now();
        let factor =
            auth::mfa::Factor::pending(admin.id, "bench", secrets.seal(&admin.id, &secret), now);
        assert!(bench.store.put_pending_factor(&factor).await.unwrap());
        let codes = auth::second_factor::RecoveryCodes::generate();
        let admin = bench.user("bench-admin").await;
        bench
            .store
            .confirm_factor(
                &admin,
                &factor,
                auth::totp::step_of(now),
                &codes.hashes(&admin.id),
            )
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
        let tls = layer.tls();
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
        if layer.sealed() {
            env.push(("JWT_SIGNING_KEY", format!("sealed:{}", self.sealing_key)));
            env.push(("JWT_VERIFICATION_KEYS", "table".into()));
        } else if layer == Layer::Kms {
            env.push(("JWT_SIGNING_KEY", format!("kms:{}", self.kms_key)));
            env.push(("JWT_VERIFICATION_KEYS", format!("kms:{}", self.kms_key)));
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
        if layer.sealed() || layer == Layer::Kms {
            env.push((
                "AWS_ENDPOINT_URL_KMS",
                if tls { &self.kms_tls } else { &self.kms_plain }.clone(),
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
            last_used: now,
            origin: Default::default(),
            amr: if user.second_factor {
                auth::sessions::amr::with_second_factor(
                    &auth::sessions::SignIn::Password.amr(),
                    auth::sessions::amr::OTP,
                )
            } else {
                auth::sessions::SignIn::Password.amr()
            },
            passkey: None,
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
            Layer::Sealed | Layer::Production => &self.sealed_issuer,
            Layer::Kms => &self.kms_issuer,
        };
        let access = issuer
            .issue(&user, &session.id, now, &session.amr, now)
            .await
            .unwrap();
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

/// `only`: the functions to measure (none: all, and beside them the calls
/// and login's and refresh's own work).
pub async fn run(only: &[String]) -> bool {
    if let Some(unknown) = only.iter().find(|f| !FUNCTIONS.contains(&f.as_str())) {
        eprintln!("no function {unknown}: one of {FUNCTIONS:?}");
        return false;
    }
    let all = only.is_empty();
    let chosen = |function: &&str| all || only.iter().any(|f| f == function);
    let bench = Bench::new().await;
    println!("cold_runs: {COLD_RUNS}");
    // Login's own work: a batch before the cold starts, one between the
    // layers, one at the end.
    let mut own_work = Vec::new();
    let mut own_work_batch = async || {
        if all {
            own_work.push(in_a_function_runtime(|| {
                login_own_work(&bench, Layer::Production)
            }));
        }
    };
    own_work_batch().await;
    for (i, layer) in LAYERS.iter().enumerate() {
        if i == LAYERS.len() / 2 {
            own_work_batch().await;
        }
        // The floor first: it has no layers.
        let floor = (i == 0).then_some("floor");
        for function in floor
            .into_iter()
            .chain(FUNCTIONS.into_iter().filter(chosen))
        {
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
    // KMS mode, beside the production path: the functions that sign.
    for function in ISSUERS.into_iter().filter(chosen) {
        let prefix = format!("{}.{function}", Layer::Kms.name());
        eprintln!("{prefix}");
        if let Err(e) = measure(&bench, function, Layer::Kms, &prefix).await {
            eprintln!("FAIL {e}");
            return false;
        }
    }
    if !all {
        return true;
    }
    calls(&bench, false).await;
    calls(&bench, true).await;
    own_work_batch().await;
    print_own_work(&own_work);
    // Login's own work in KMS mode, shown beside (one batch; not judged).
    let kms_login = in_a_function_runtime(|| login_own_work(&bench, Layer::Kms));
    kms_login.print_as("login_kms");
    // Refresh beside its DynamoDB calls and one signature in memory.
    let refresh = in_a_function_runtime(|| refresh_own_work(&bench));
    for line in refresh {
        println!("{line}");
    }
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
    print_own_work(&[in_a_function_runtime(|| {
        login_own_work(&bench, Layer::Production)
    })]);
    for line in in_a_function_runtime(|| refresh_own_work(&bench)) {
        println!("{line}");
    }
    true
}
