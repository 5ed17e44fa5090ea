//! Each function's success path, and the measurement of one function on one
//! layer: its cold starts, first and warm invocations, RSS and lines.

use super::*;

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
        match self.function {
            "register" => 201,
            // The callback sends the browser to the page.
            "federation" => 303,
            _ => 200,
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
            "federation" => bench.idp.callback_event(&bench.store).await,
            "second-factor" => bench.data_keys.sign_in_event(&bench.store, layer).await,
            "passkeys" => bench.passkeys.sign_in_event(&bench.store).await,
            other => panic!("no success path for {other}"),
        };
        if let Some(headers) = json.get_mut("headers") {
            headers["x-forwarded-for"] = "192.0.2.10".into();
        }
        json.to_string()
    }

    /// Whether an answer of the expected status did what the path asks
    /// (a callback's 303 may carry an error in its fragment; a second
    /// step's 200 must be a session at two factors).
    fn succeeded(&self, reply: &Value) -> bool {
        match self.function {
            "federation" => federation::signed_in(reply),
            // A passkey's sign-in is two factors: `aal2`, as a second step's.
            "second-factor" | "passkeys" => second_factor::signed_in(reply),
            _ => true,
        }
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

pub(super) fn with_body(mut json: Value, body: &Value) -> Value {
    json["body"] = body.to_string().into();
    json["headers"]["content-type"] = "application/json".into();
    json
}

pub(super) fn with_bearer(mut json: Value, token: &str) -> Value {
    json["headers"]["authorization"] = format!("Bearer {token}").into();
    json
}

/// Cold starts and a warm run of one function on one layer; prints its metrics.
pub(super) async fn measure(
    bench: &Bench,
    function: &'static str,
    layer: Layer,
    prefix: &str,
) -> Result<(), String> {
    let binary = bench.bin.join(function);
    let mut env = if function == "floor" {
        Vec::new()
    } else {
        bench.env(layer)
    };
    if function == "federation" {
        env.extend(bench.idp.env(bench, layer));
    }
    if function == "second-factor" {
        env.extend(bench.data_keys.env(layer));
    }
    let mut path = Path::new(function, layer);
    let (mut init, mut first, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    let (mut floor_init, mut init_calls, mut init_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let fetches_keys = calls_at_init(function, layer);
    // The bytes sent KMS over TLS after each process's init, to its end:
    // its request path's KMS calls.
    let mut kms_after_init = 0u64;
    let kms_sent = || bench.kms_tls_sent.load(Ordering::SeqCst);
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
        let kms_at_init = kms_sent();
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
            if reply.error || status != path.expected() || !path.succeeded(&reply.body) {
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
        kms_after_init += kms_sent() - kms_at_init;
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
    if layer.tls() {
        println!("{prefix}.kms_bytes_after_init: {kms_after_init}");
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
