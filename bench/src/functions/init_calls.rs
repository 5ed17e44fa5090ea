//! The calls a function's init makes, made by a minimal client in a fresh
//! process (`auth-bench init-calls`): what its init budget credits.

use super::*;

/// `auth-bench init-calls` in a process of its own with `function`'s `env`:
/// the wall time and the CPU time of the calls its init makes.
pub(super) async fn fresh_init_calls(
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

/// `auth-bench init-calls FUNCTION`: the round trips a function's init still
/// makes, as a minimal client in a fresh process with the function's
/// environment makes them, each on a new connection. In sealed mode: the
/// key set's query, then for an issuer the `Decrypt` of the key that signs
/// (and its parsing). In KMS mode, a verifier's: `GetPublicKey` for each
/// `kms:` key of `JWT_VERIFICATION_KEYS`, all at once, and, for all but
/// jwks, a `GetItem` on the table beside them (the DynamoDB warm-up).
/// And, in every mode, a function with secrets reads them after its keys
/// (federation: SSM `GetParameter` for each provider's client secret, all
/// at once); the function that holds the second factor's data key sealed
/// under KMS (`SECOND_FACTOR_KEY=kms:`) reads it (`GetItem`) and unseals
/// it (`Decrypt`) beside the issuer's key (sealed mode) or after its keys'
/// calls (KMS mode). Their wall time (connections, TLS handshakes, requests and answers) is
/// what the budget credits; the CPU time is printed beside it. Set up
/// untimed, as the function does it at its own init, and judged there: the
/// SDK configuration and clients, the roots, the random generator's seeding.
/// None of the function's own init code runs here (its configuration, its
/// keys' parsing, the way it orders the calls).
pub async fn init_calls(function: &str) -> bool {
    let keys = std::env::var("JWT_VERIFICATION_KEYS").unwrap_or_default();
    let layer = if keys == "table" {
        Layer::Sealed
    } else if keys.starts_with("kms:") {
        Layer::Kms
    } else {
        Layer::Plain
    };
    if !calls_at_init(function, layer) {
        eprintln!("{function} makes no calls at init in this mode");
        return false;
    }
    let set_up = match layer {
        _ if !calls_for_keys_at_init(function, layer) => InitCalls::set_up_secrets_only(),
        Layer::Sealed => InitCalls::set_up_sealed(ISSUERS.contains(&function)),
        _ => InitCalls::set_up(function != "jwks"),
    }
    .and_then(|calls| calls.with_secrets(SECRETS_AT_INIT.contains(&function)))
    .and_then(|calls| calls.with_data_key(DATA_KEY_AT_INIT.contains(&function)));
    let calls = match set_up {
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
pub(super) struct InitCalls {
    kms: aws_sdk_kms::Client,
    keys: Vec<String>,
    /// The table's client and name, for the warm-up.
    warm_up: Option<(aws_sdk_dynamodb::Client, String)>,
    /// Sealed mode: the table whose key set is read, and for an issuer the
    /// sealing key that unseals the key of the moment.
    sealed: Option<(Store, Option<String>)>,
    /// The SDK configuration, for the secrets' client.
    sdk: aws_config::SdkConfig,
    /// The secrets read after the keys: SSM's client and the parameters.
    secrets: Option<(aws_sdk_ssm::Client, Vec<String>)>,
    /// The second factor's data key: the table it is stored in (on the
    /// client the keys' calls opened) and the KMS key that seals it.
    data_key: Option<(Store, String)>,
}

impl InitCalls {
    /// What both modes set up alike, untimed: the SDK configuration, the
    /// random generator seeded (by its first draw: in the function, the
    /// first TLS handshake's, at init), and a KMS client without retries.
    fn common() -> Result<(aws_config::SdkConfig, aws_sdk_kms::Client), String> {
        use aws_lc_rs::rand::SecureRandom as _;
        use aws_sdk_dynamodb::config::retry::RetryConfig;
        let sdk = auth::runtime::aws_from_env().map_err(|e| e.to_string())?;
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut [0u8; 8])
            .map_err(|_| "aws-lc's random generator failed")?;
        let mut kms =
            aws_sdk_kms::config::Builder::from(&sdk).retry_config(RetryConfig::disabled());
        if let Some(url) = auth::aws::endpoint_override("KMS") {
            kms = kms.endpoint_url(url);
        }
        Ok((sdk, aws_sdk_kms::Client::from_conf(kms.build())))
    }

    fn set_up(warm_up: bool) -> Result<InitCalls, String> {
        let (sdk, kms) = Self::common()?;
        let keys: Vec<String> = auth::keys::verification_keys_from(&auth::config::Environment)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|key| match key {
                KeySource::Kms(id) => Some(id),
                KeySource::Pem(_) | KeySource::Sealed(_) | KeySource::Table => None,
            })
            .collect();
        if keys.is_empty() {
            return Err("JWT_VERIFICATION_KEYS names no kms: key, so no call to make".into());
        }
        let warm_up = if warm_up {
            Some(Self::table_client(&sdk)?)
        } else {
            None
        };
        Ok(InitCalls {
            kms,
            keys,
            warm_up,
            sealed: None,
            sdk,
            secrets: None,
            data_key: None,
        })
    }

    /// No key to fetch (a PEM key): only secrets to read.
    fn set_up_secrets_only() -> Result<InitCalls, String> {
        let (sdk, kms) = Self::common()?;
        Ok(InitCalls {
            kms,
            keys: Vec::new(),
            warm_up: None,
            sealed: None,
            sdk,
            secrets: None,
            data_key: None,
        })
    }

    /// With the providers' client secrets of `OIDC_PROVIDERS` to read, when
    /// `read` (SSM, without retries, at `AWS_ENDPOINT_URL_SSM`).
    fn with_secrets(mut self, read: bool) -> Result<InitCalls, String> {
        use aws_sdk_ssm::config::retry::RetryConfig;
        if !read {
            return Ok(self);
        }
        let names: Vec<String> =
            auth::federation::providers_from_source(&auth::config::Environment)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|p| p.client_secret_parameter)
                .collect();
        if names.is_empty() {
            return Err("OIDC_PROVIDERS names no provider, so no secret to read".into());
        }
        let mut ssm =
            aws_sdk_ssm::config::Builder::from(&self.sdk).retry_config(RetryConfig::disabled());
        if let Some(url) = auth::aws::endpoint_override("SSM") {
            ssm = ssm.endpoint_url(url);
        }
        self.secrets = Some((aws_sdk_ssm::Client::from_conf(ssm.build()), names));
        Ok(self)
    }

    /// With the second factor's data key to read and unseal, when `read`
    /// and `SECOND_FACTOR_KEY` names a KMS key (a local file is no call).
    fn with_data_key(mut self, read: bool) -> Result<InitCalls, String> {
        use auth::second_factor_key::DataKeySource;
        if !read {
            return Ok(self);
        }
        let DataKeySource::Kms(sealing) =
            DataKeySource::from_source(&auth::config::Environment).map_err(|e| e.to_string())?
        else {
            return Ok(self);
        };
        // The function's one client for the table: the keys' (sealed
        // mode's query, KMS mode's warm-up), its connection kept.
        let store = match (&self.sealed, &self.warm_up) {
            (Some((store, _)), _) => store.clone(),
            (None, Some((client, table))) => Store::new(client.clone(), table.clone()),
            (None, None) => {
                let (client, table) = Self::table_client(&self.sdk)?;
                Store::new(client, table)
            }
        };
        self.data_key = Some((store, sealing));
        Ok(self)
    }

    /// Sealed mode's init calls: the key set's query, and for an issuer the
    /// `Decrypt` of the key that signs.
    fn set_up_sealed(issuer: bool) -> Result<InitCalls, String> {
        let (sdk, kms) = Self::common()?;
        let (client, table) = Self::table_client(&sdk)?;
        let sealing = match auth::keys::signing_key_from(&auth::config::Environment) {
            Ok(KeySource::Sealed(id)) if issuer => Some(id),
            _ if issuer => return Err("an issuer in sealed mode names sealed:<key>".into()),
            _ => None,
        };
        Ok(InitCalls {
            kms,
            keys: Vec::new(),
            warm_up: None,
            sealed: Some((Store::new(client, table), sealing)),
            sdk,
            secrets: None,
            data_key: None,
        })
    }

    /// The table's client (no retries) and name.
    fn table_client(
        sdk: &aws_config::SdkConfig,
    ) -> Result<(aws_sdk_dynamodb::Client, String), String> {
        use aws_sdk_dynamodb::config::retry::RetryConfig;
        let mut dynamodb =
            aws_sdk_dynamodb::config::Builder::from(sdk).retry_config(RetryConfig::disabled());
        if let Some(url) = auth::aws::endpoint_override("DYNAMODB") {
            dynamodb = dynamodb.endpoint_url(url);
        }
        let table = auth::config::StoreConfig::from_source(&auth::config::Environment)
            .map_err(|e| e.to_string())?
            .table_name;
        Ok((aws_sdk_dynamodb::Client::from_conf(dynamodb.build()), table))
    }

    /// The calls as the function makes them. Sealed mode: the key set's
    /// query, then the issuer's `Decrypt` and the secrets' reads at once
    /// (federation's init). Otherwise its keys' calls, then its secrets'.
    async fn make(&self) -> Result<(), String> {
        if let Some((store, sealing)) = &self.sealed {
            let records = store.keys().await.map_err(|e| e.to_string())?;
            let unseal = async {
                let Some(sealing) = sealing else {
                    return Ok(());
                };
                let record = auth::issuer_keys::signing_key(&records, auth::clock::system_now())
                    .ok_or("no key signs now")?;
                auth::issuer_keys::unseal(&self.kms, sealing, record)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            };
            let (unsealed, read, data_key) =
                tokio::join!(unseal, self.read_secrets(), self.open_data_key());
            return unsealed.and(read).and(data_key);
        }
        self.key_calls().await?;
        let (read, data_key) = tokio::join!(self.read_secrets(), self.open_data_key());
        read.and(data_key)
    }

    /// The second factor's data key read and unsealed, as the function's
    /// init does it (none to open for a function without it).
    async fn open_data_key(&self) -> Result<(), String> {
        let Some((store, sealing)) = &self.data_key else {
            return Ok(());
        };
        auth::second_factor_key::stored_secret_box(store, &self.kms, sealing)
            .await
            .map_err(|e| e.to_string())?
            .map(drop)
            .ok_or_else(|| "no data key is stored".to_owned())
    }

    /// The secrets' reads, at once, each answer checked (none to make for
    /// a function without secrets).
    async fn read_secrets(&self) -> Result<(), String> {
        let Some((ssm, names)) = &self.secrets else {
            return Ok(());
        };
        let reads = names
            .iter()
            .map(|name| ssm.get_parameter().name(name).with_decryption(true).send());
        for read in futures_util::future::join_all(reads).await {
            let output = read.map_err(|e| format!("GetParameter: {}", auth::aws::describe(&e)))?;
            output
                .parameter
                .and_then(|p| p.value)
                .ok_or("GetParameter: no value")?;
        }
        Ok(())
    }

    /// A verifier's calls in KMS mode, at once, each answer checked (none
    /// with a PEM key).
    async fn key_calls(&self) -> Result<(), String> {
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
