//! Login's and refresh's own work beside their AWS calls: the SDK's call
//! spans recorded by a tracing layer, the stretches between them, in batches
//! spread over the run; in sealed mode, beside one signature in memory too.

use super::*;

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
    /// The service of each call (`rpc.service`: `DynamoDB`, `KMS`).
    services: Vec<String>,
}

/// A span's `rpc.service`.
#[derive(Default)]
struct Service(String);

impl tracing::field::Visit for Service {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "rpc.service" {
            self.0 = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "rpc.service" {
            self.0 = format!("{value:?}").trim_matches('"').to_owned();
        }
    }
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
            let mut service = Service::default();
            attributes.record(&mut service);
            let mut recorded = self.0.lock().unwrap();
            recorded.open.insert(id.clone());
            recorded.events.push((Instant::now(), 1));
            recorded.services.push(service.0);
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
        Calls(events, std::mem::take(&mut recorded.services))
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

/// Each call's start (+1) and end (-1), in order, and each call's service.
struct Calls(Vec<(Instant, i32)>, Vec<String>);

impl Calls {
    /// The calls to `service`.
    fn to(&self, service: &str) -> usize {
        self.1.iter().filter(|s| *s == service).count()
    }

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
pub(super) struct OwnWork {
    lines: Vec<String>,
    beyond_calls: f64,
}

impl OwnWork {
    /// Its lines, under another name than `login`.
    pub(super) fn print_as(&self, name: &str) {
        for line in &self.lines {
            println!("{name}{}", line.strip_prefix("login").unwrap_or(line));
        }
    }
}

/// The median time of one RS256 signature in memory by `issuer` (a sealed
/// one): what sealed mode adds to an issuance, here on this thread.
async fn signature_p50(issuer: &TokenIssuer) -> f64 {
    let user = User::new(
        Username::parse("bench-sign").unwrap(),
        "S".into(),
        "h".into(),
    );
    let now = auth::clock::system_now();
    let claims = issuer.claims_for(&user, "sid", now, now);
    let mut took = Vec::new();
    for _ in 0..101 {
        let started = Instant::now();
        issuer.sign(&claims, now).await.unwrap();
        took.push(ms_of(started.elapsed()));
    }
    percentile(&took, 50.0)
}

/// The production path's issuer of `layer` (sealed mode's or KMS mode's),
/// built as the function builds it at init (TLS to DynamoDB and KMS).
async fn issuer_of(bench: &Bench, layer: Layer, production: &aws_config::SdkConfig) -> TokenIssuer {
    let kms_client = kms(production, &bench.kms_tls);
    if layer == Layer::Kms {
        let signer = Signer::new(&KeySource::Kms(bench.kms_key.clone()), &kms_client).unwrap();
        return TokenIssuer::new(signer, &token_config());
    }
    let store = Store::new(dynamodb(production, &bench.ddb_tls), bench.table.clone());
    let now = auth::clock::system_now();
    let table = KeyTable::load(store, KeySettings::default()).await.unwrap();
    TokenIssuer::sealed(
        Arc::new(table),
        kms_client,
        bench.sealing_key.clone(),
        &token_config(),
        now,
    )
    .await
    .unwrap()
}

/// Login's own work, one batch: each login minus its bcrypt verification,
/// beside the wall time its AWS calls cover, all measured inside the same
/// invocations (in process, production path: TLS, cost-12 bcrypt, a
/// current-thread runtime and the logs as the functions run, the login
/// served as they serve it: `runtime::handle`, its log line and metrics).
/// `layer`: `Production` signs in memory (sealed mode: the signature's
/// median, measured on this thread beside the batch, is taken out as
/// bcrypt is, and no login may call KMS), `Kms` with `kms:Sign` (an AWS call).
pub(super) async fn login_own_work(bench: &Bench, layer: Layer) -> OwnWork {
    const N: usize = 30;
    let timeline = Timeline::default();
    let _logs = tracing::subscriber::set_default(timeline.with_production_logs());
    let production = sdk(Some(&bench.ca_path));
    let store = Store::new(dynamodb(&production, &bench.ddb_tls), bench.table.clone());
    let issuer = issuer_of(bench, layer, &production).await;
    let signature = if layer == Layer::Kms {
        0.0
    } else {
        signature_p50(&issuer).await
    };
    let state = login_state(store, BcryptCost::DEFAULT, issuer);
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
        assert!(
            layer == Layer::Kms || calls.to("KMS") == 0,
            "a login called KMS in sealed mode"
        );
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
    let overhead: Vec<f64> = own
        .iter()
        .zip(&covered)
        .map(|(o, c)| o - c - signature)
        .collect();
    let beyond_calls = percentile(&overhead, 50.0);
    let mut lines = vec![
        format!("login.signature_in_memory_p50_ms: {signature:.3}"),
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
pub(super) fn print_own_work(batches: &[OwnWork]) {
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

/// Refresh beside its DynamoDB calls and one signature in memory (sealed
/// mode, production path, in process as the function serves it): each
/// refresh of a chain, the wall time its calls cover, its calls to KMS
/// (none may be), and the median signature measured beside.
pub(super) async fn refresh_own_work(bench: &Bench) -> Vec<String> {
    const N: usize = 30;
    let timeline = Timeline::default();
    let _logs = tracing::subscriber::set_default(timeline.with_production_logs());
    let production = sdk(Some(&bench.ca_path));
    let store = Store::new(dynamodb(&production, &bench.ddb_tls), bench.table.clone());
    let issuer = issuer_of(bench, Layer::Production, &production).await;
    let signature = signature_p50(&issuer).await;
    let state = auth::handlers::refresh::Refresh {
        store,
        tokens: issuer,
        sessions: auth::sessions::SessionConfig::from_source(&|_: &str| None).unwrap(),
        browser: auth::browser::BrowserPolicy::new(&["https://bench.invalid"]),
        clock: auth::clock::Clock::system(),
    };
    let handler = |request| auth::handlers::refresh::handle(&state, request);
    let mut carried = bench.session(Layer::Production, "bench-user").await.1;
    let request = |token: &str| {
        let json = with_body(event("refresh.json"), &json!({"refresh_token": token}));
        lambda_http::request::from_str(&json.to_string()).unwrap()
    };
    let (mut total, mut covered, mut beyond, mut kms_calls, mut counts) =
        (Vec::new(), Vec::new(), Vec::new(), 0, Vec::new());
    for i in 0..=N {
        let request = request(&carried);
        timeline.take();
        let started = Instant::now();
        let response = auth::runtime::handle(&handler, request).await;
        let took = started.elapsed();
        assert_eq!(response.status(), 200);
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        carried = body["refresh_token"].as_str().unwrap().to_owned();
        let calls = timeline.take();
        kms_calls += calls.to("KMS");
        if i == 0 {
            continue; // the first opens the connections
        }
        let (aws, _) = calls.covered_and_summed();
        counts.push(calls.count());
        total.push(ms_of(took));
        covered.push(ms_of(aws));
        beyond.push(ms_of(took) - ms_of(aws) - signature);
    }
    vec![
        format!("refresh.p50_ms: {:.3}", percentile(&total, 50.0)),
        format!(
            "refresh.dynamodb_calls_covered_p50_ms: {:.3}",
            percentile(&covered, 50.0)
        ),
        format!("refresh.calls: {}", counts[0]),
        format!("refresh.kms_calls: {kms_calls}"),
        format!("refresh.signature_in_memory_p50_ms: {signature:.3}"),
        format!(
            "refresh.beyond_calls_and_signature_p50_ms: {:.3}",
            percentile(&beyond, 50.0)
        ),
    ]
}
