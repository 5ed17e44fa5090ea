//! End to end: real HTTP to the routed `cargo lambda watch` that `make test`
//! started, whose functions run against the run's DynamoDB Local.

use std::time::Duration;

use crate::support::*;
use auth::config::TokenConfig;
use auth::store::{Store, create_table};
use auth::tokens::TokenVerifier;
use ureq::Agent;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> Agent {
    // The first request may start the function process: be generous.
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn url(path: &str) -> String {
    format!("{}{path}", required_env("WATCH_URL"))
}

fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut response = result.unwrap_or_else(|e| panic!("request to the watch failed: {e}"));
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    headers.sort();
    let reply = Reply {
        status: response.status().as_u16(),
        headers,
        body: response.body_mut().read_to_string().unwrap(),
    };
    // Every token and proof the watch hands out: make test's last stage
    // checks that none of them is in its logs.
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&reply.body) {
        for field in ["access_token", "refresh_token", "device"] {
            if let Some(secret) = json[field].as_str() {
                note_secret(secret);
            }
        }
    }
    for (name, value) in &reply.headers {
        if name == "set-cookie"
            && let Some((_, rest)) = value.split_once('=')
        {
            note_secret(rest.split(';').next().unwrap_or(""));
        }
    }
    reply
}

fn post_login(body: &str) -> Reply {
    reply(
        agent()
            .post(&url("/login"))
            .header("content-type", "application/json")
            .send(body),
    )
}

fn get_name(authorization: Option<&str>) -> Reply {
    let mut request = agent().get(&url("/get_name"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    reply(request.call())
}

/// A user of its own in the table the watch's functions use.
fn seed_user(prefix: &str, password: &str) -> String {
    note_secret(password);
    let username = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = local_client().await;
        let table = required_env("E2E_TABLE_NAME");
        create_table(&client, &table).await.unwrap();
        add_user(
            &Store::new(client, table),
            &username,
            "End To End",
            password,
        )
        .await;
    });
    username
}

/// Dates the rotation of refresh token `raw` `seconds` further back in the
/// table the watch's functions use, as if that much time had passed since.
fn age_rotation(raw: &str, seconds: i64) {
    use auth::store::aws_sdk_dynamodb::types::AttributeValue;
    let hash = auth::sessions::RefreshToken::presented(raw.to_owned()).hash();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        local_client()
            .await
            .update_item()
            .table_name(required_env("E2E_TABLE_NAME"))
            .key("pk", AttributeValue::S(format!("REFRESH#{hash}")))
            .key("sk", AttributeValue::S("REFRESH".into()))
            .update_expression("SET rotated_at = rotated_at - :by")
            .condition_expression("token_state = :rotated")
            .expression_attribute_values(":by", AttributeValue::N(seconds.to_string()))
            .expression_attribute_values(":rotated", AttributeValue::S("rotated".into()))
            .send()
            .await
            .unwrap();
    });
}

fn watch_token_config() -> TokenConfig {
    TokenConfig {
        issuer: required_env("E2E_JWT_ISSUER"),
        audience: required_env("E2E_JWT_AUDIENCE"),
        access_token_ttl: Duration::from_secs(900),
    }
}

/// A verifier of the keys the watch's functions sign with (sealed mode):
/// the table's, read like a deployed verifier reads them.
fn watch_verifier() -> TokenVerifier {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::new(local_client().await, required_env("E2E_TABLE_NAME"));
        let table = auth::key_set::KeyTable::load(store, auth::key_set::KeySettings::default())
            .await
            .unwrap();
        TokenVerifier::with_table(&[], std::sync::Arc::new(table), &watch_token_config())
    })
}

#[test]
fn login_then_get_name_over_http() {
    let username = seed_user("e2e", "e2e-password-1");
    let login = post_login(
        &serde_json::json!({"username": username, "password": "e2e-password-1"}).to_string(),
    );
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.header("content-type"), Some("application/json"));
    let json = login.json();
    assert_eq!(json["message"], "Login Success");
    assert_eq!(json["token_type"], "Bearer");
    let token = json["access_token"].as_str().unwrap();
    let verifier = watch_verifier();
    let claims = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(verifier.verify(token))
        .unwrap();
    assert_eq!(claims.username, username);

    let found = get_name(Some(&format!("Bearer {token}")));
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(
        found.json(),
        serde_json::json!({"message": "User found", "name": "End To End"})
    );
}

#[test]
fn wrong_password_and_unknown_user_look_the_same_over_http() {
    let username = seed_user("e2e-fail", "e2e-password-2");
    let wrong =
        post_login(&serde_json::json!({"username": username, "password": "nope-nope"}).to_string());
    let unknown = post_login(r#"{"username": "e2e-nobody-at-all", "password": "nope-nope"}"#);
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "login_failed");
    assert_eq!(wrong.body, unknown.body);
    let strip = |r: &Reply| -> Vec<(String, String)> {
        // The emulator adds per-request headers of its own; compare the rest.
        r.headers
            .iter()
            .filter(|(k, _)| !["date", "x-amzn-requestid", "content-length"].contains(&k.as_str()))
            .cloned()
            .collect()
    };
    assert_eq!(strip(&wrong), strip(&unknown));
}

#[test]
fn main_failures_over_http_are_json_errors() {
    let bad_json = post_login("{not json");
    assert_eq!(bad_json.status, 400);
    assert_eq!(bad_json.json()["error"], "invalid_request");

    let no_token = get_name(None);
    assert_eq!(no_token.status, 401);
    assert_eq!(no_token.json()["error"], "missing_token");
    assert_eq!(
        no_token.header("www-authenticate"),
        Some("Bearer realm=\"auth\"")
    );

    let garbage = get_name(Some("Bearer not.a.token"));
    assert_eq!(garbage.status, 401);
    assert!(
        garbage
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );

    let wrong_method = reply(agent().get(&url("/login")).call());
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    assert_eq!(wrong_method.json()["error"], "method_not_allowed");

    let wrong_method = reply(agent().delete(&url("/get_name")).call());
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET"));
}

fn post_json(path: &str, authorization: Option<&str>, body: serde_json::Value) -> Reply {
    let mut request = agent()
        .post(&url(path))
        .header("content-type", "application/json");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    reply(request.send(body.to_string()))
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Registers over HTTP and logs in; returns (username, access, refresh).
fn register_and_log_in(prefix: &str, password: &str) -> (String, String, String) {
    let username = unique(prefix);
    let created = post_json(
        "/register",
        None,
        serde_json::json!({"username": username, "password": password, "name": "Http User"}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let (access, refresh) = log_in(&username, password);
    (username, access, refresh)
}

fn log_in(username: &str, password: &str) -> (String, String) {
    let login = post_json(
        "/login",
        None,
        serde_json::json!({"username": username, "password": password}),
    );
    assert_eq!(login.status, 200, "{}", login.body);
    tokens_of(&login)
}

fn tokens_of(reply: &Reply) -> (String, String) {
    let json = reply.json();
    (
        json["access_token"].as_str().unwrap().to_owned(),
        json["refresh_token"].as_str().unwrap().to_owned(),
    )
}

fn refresh(token: &str) -> Reply {
    post_json(
        "/refresh",
        None,
        serde_json::json!({"refresh_token": token}),
    )
}

#[test]
fn registration_over_http_gives_201_then_409() {
    let username = unique("e2e-reg");
    let body = serde_json::json!({"username": username, "password": "http passphrase one", "name": "  Reg User "});
    let created = post_json("/register", None, body);
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["name"], "Reg User");
    assert!(!created.body.contains("$2b$"));
    let again = serde_json::json!({"username": username.to_uppercase(), "password": "http passphrase two", "name": "X"});
    let taken = post_json("/register", None, again);
    assert_eq!(taken.status, 409);
    assert_eq!(taken.json()["error"], "username_taken");
    let weak = post_json(
        "/register",
        None,
        serde_json::json!({"username": unique("e2e-weak"), "password": "password123", "name": "W"}),
    );
    assert_eq!(weak.status, 400);
    assert!(
        weak.json()["message"]
            .as_str()
            .unwrap()
            .contains("too common")
    );
}

#[test]
fn refresh_rotation_and_reuse_detection_over_http() {
    // The watch runs with REFRESH_REUSE_GRACE_SECONDS=10, as deployed.
    let (_, access, first) = register_and_log_in("e2e-rot", "rotation passphrase");
    let rotated = refresh(&first);
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let (new_access, second) = tokens_of(&rotated);
    assert_eq!(get_name(Some(&format!("Bearer {new_access}"))).status, 200);

    // Within the grace period: superseded, nothing revoked.
    let retried = refresh(&first);
    assert_eq!(retried.status, 401);
    assert_eq!(retried.json()["error"], "refresh_token_superseded");
    assert_eq!(get_name(Some(&format!("Bearer {new_access}"))).status, 200);

    // After it: reuse. The grace period passes for this token alone: its
    // rotation is dated 11 s back in the watch's table (no wall-clock wait).
    age_rotation(&first, 11);
    let reuse = refresh(&first);
    assert_eq!(reuse.status, 401);
    assert_eq!(reuse.json()["error"], "invalid_grant");
    // The family is revoked: the newest refresh token and the access tokens die.
    assert_eq!(refresh(&second).status, 401);
    assert_eq!(get_name(Some(&format!("Bearer {new_access}"))).status, 401);
    assert_eq!(get_name(Some(&format!("Bearer {access}"))).status, 401);
}

#[test]
fn logout_over_http_ends_one_session_then_all() {
    let password = "logout passphrase";
    let (username, phone, phone_refresh) = register_and_log_in("e2e-out", password);
    let (laptop, laptop_refresh) = log_in(&username, password);
    let (tablet, _) = log_in(&username, password);

    let out = post_json(
        "/logout",
        Some(&format!("Bearer {phone}")),
        serde_json::json!({}),
    );
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(get_name(Some(&format!("Bearer {phone}"))).status, 401);
    assert_eq!(refresh(&phone_refresh).status, 401);
    assert_eq!(get_name(Some(&format!("Bearer {laptop}"))).status, 200);

    let all = post_json(
        "/logout",
        Some(&format!("Bearer {laptop}")),
        serde_json::json!({"all": true}),
    );
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(get_name(Some(&format!("Bearer {laptop}"))).status, 401);
    assert_eq!(get_name(Some(&format!("Bearer {tablet}"))).status, 401);
    assert_eq!(refresh(&laptop_refresh).status, 401);
}

#[test]
fn password_change_over_http_ends_the_other_sessions() {
    let (username, access, _) = register_and_log_in("e2e-pw", "first passphrase here");
    let (other, other_refresh) = log_in(&username, "first passphrase here");
    let changed = post_json(
        "/password",
        Some(&format!("Bearer {access}")),
        serde_json::json!({"current_password": "first passphrase here", "new_password": "second passphrase here"}),
    );
    assert_eq!(changed.status, 200, "{}", changed.body);
    let (fresh, _) = tokens_of(&changed);
    assert_eq!(get_name(Some(&format!("Bearer {fresh}"))).status, 200);
    assert_eq!(get_name(Some(&format!("Bearer {other}"))).status, 401);
    assert_eq!(get_name(Some(&format!("Bearer {access}"))).status, 401);
    assert_eq!(refresh(&other_refresh).status, 401);
    let old = post_json(
        "/login",
        None,
        serde_json::json!({"username": username, "password": "first passphrase here"}),
    );
    assert_eq!(old.status, 401);
    log_in(&username, "second passphrase here");
}

#[test]
fn every_new_route_answers_other_methods_with_405() {
    for path in ["/register", "/refresh", "/logout", "/password"] {
        let wrong = reply(agent().get(&url(path)).call());
        assert_eq!(wrong.status, 405, "{path}");
        assert_eq!(wrong.header("allow"), Some("POST"), "{path}");
    }
}

/// A POST to the watch with the headers a browser page would send.
fn browser_post(path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut request = agent().post(&url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    reply(request.send(body))
}

fn refresh_cookie_of(reply: &Reply) -> String {
    let cookie = reply
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with("__Host-refresh_token="))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no refresh cookie set: {:?}", reply.headers));
    assert!(
        cookie.contains("; Path=/; Secure; HttpOnly; SameSite=Strict"),
        "{cookie}"
    );
    let value = cookie
        .strip_prefix("__Host-refresh_token=")
        .and_then(|rest| rest.split(';').next())
        .unwrap();
    assert_eq!(value.len(), 43, "{cookie}");
    value.to_owned()
}

#[test]
fn browser_sessions_over_http_cookie_origin_content_type_and_parallel_refreshes() {
    let username = seed_user("cookie", "e2e-password-1");
    let origin = required_env("E2E_JWT_ISSUER");
    let json_from_us = [
        ("content-type", "application/json"),
        ("origin", origin.as_str()),
    ];
    let body = serde_json::json!({
        "username": username, "password": "e2e-password-1", "refresh_token_delivery": "cookie"
    })
    .to_string();
    let login = browser_post("/login", &json_from_us, &body);
    assert_eq!(login.status, 200, "{}", login.body);
    assert!(
        login.json().get("refresh_token").is_none(),
        "{}",
        login.body
    );
    let token = refresh_cookie_of(&login);

    let foreign = browser_post(
        "/login",
        &[
            ("content-type", "application/json"),
            ("origin", "http://evil.example"),
        ],
        &body,
    );
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    assert_eq!(foreign.json()["error"], "origin_not_allowed");

    let cookie = format!("__Host-refresh_token={token}");
    let untyped = browser_post(
        "/refresh",
        &[("origin", origin.as_str()), ("cookie", &cookie)],
        "{}",
    );
    assert_eq!(untyped.status, 415, "{}", untyped.body);

    // Several tabs at once (the watch runs 4 instances): one wins and sets
    // the successor; the others learn their token was superseded, and clear nothing.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let (barrier, cookie, origin) = (barrier.clone(), cookie.clone(), origin.clone());
            std::thread::spawn(move || {
                barrier.wait();
                browser_post(
                    "/refresh",
                    &[
                        ("content-type", "application/json"),
                        ("origin", origin.as_str()),
                        ("cookie", &cookie),
                    ],
                    "{}",
                )
            })
        })
        .collect();
    let replies: Vec<Reply> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let next = refresh_cookie_of(winners[0]);
    for loser in replies.iter().filter(|r| r.status != 200) {
        assert_eq!(loser.status, 401, "{}", loser.body);
        assert_eq!(loser.json()["error"], "refresh_token_superseded");
        assert_eq!(loser.header("set-cookie"), None);
    }
    let cookie = format!("__Host-refresh_token={next}");
    let again = browser_post(
        "/refresh",
        &[
            ("content-type", "application/json"),
            ("origin", origin.as_str()),
            ("cookie", &cookie),
        ],
        "{}",
    );
    assert_eq!(again.status, 200, "{}", again.body);
}

/// The newest message to `to` with `subject`, waited for: the pump hands
/// jobs to the watch's mail function a moment after they are written.
fn mail_for(to: &str, subject: &str) -> crate::recovery::Mail {
    for _ in 0..300 {
        if let Some(mail) = crate::recovery::inbox(to)
            .into_iter()
            .rev()
            .find(|m| m.subject == subject)
        {
            return mail;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no {subject:?} for the test's address within a minute: is the mail pump running?");
}

#[test]
fn a_forgotten_password_is_reset_over_http_with_the_mailed_link() {
    let username = format!(
        "e2e-mail-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let address = crate::recovery::unique_address("e2e");
    let (password, new_password) = ("end to end passphrase", "a reset end to end");
    note_secret(password);
    note_secret(new_password);
    // Registration with an address: its verification goes out through the
    // table's stream, the mail function and moto's SES.
    let created = post_json(
        "/register",
        None,
        serde_json::json!({"username": username, "password": password, "name": "Mail", "email": address}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["email_pending"], address.as_str());
    let verification = mail_for(&address, "Verify your email address");
    let verified = post_json(
        "/account/email/verify",
        None,
        serde_json::json!({"token": verification.token()}),
    );
    assert_eq!(verified.status, 200, "{}", verified.body);
    // The reset: asked by address, the link's token posted with a new password.
    let asked = post_json(
        "/password/reset",
        None,
        serde_json::json!({"email": address}),
    );
    assert_eq!(asked.status, 202, "{}", asked.body);
    let reset = mail_for(&address, "Reset your password");
    let origin = required_env("E2E_JWT_ISSUER");
    assert!(
        reset.body.contains(&format!("{origin}/#reset=")),
        "the link leads to the issuer's page"
    );
    // A scanner's GET of the route consumes nothing.
    let scanned = reply(agent().get(&url("/password/reset/confirm")).call());
    assert_eq!(scanned.status, 405);
    let confirmed = post_json(
        "/password/reset/confirm",
        None,
        serde_json::json!({"token": reset.token(), "new_password": new_password}),
    );
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    let login = |password: &str| {
        post_login(&serde_json::json!({"username": username, "password": password}).to_string())
            .status
    };
    assert_eq!(login(password), 401);
    assert_eq!(login(new_password), 200);
    mail_for(&address, "Your password was reset");
}

/// The second factor over HTTP through the watch (its second-factor
/// function, with the data key made under the run's KMS key): enrol as the
/// page does, read the secret as a phone would, confirm with a code; the
/// password then answers `mfa_required`, and the second step signs in with
/// a code, then with a recovery code (not twice); the tokens say so.
#[test]
fn a_second_factor_over_http_enrol_then_sign_in_with_a_code_and_a_recovery_code() {
    use auth::totp::{STEP_SECONDS, step_of};
    let password = "http passphrase for two steps";
    let (username, access, _) = register_and_log_in("e2e-mfa", password);
    let begun = post_json(
        "/account/second-factor",
        Some(&bearer(&access)),
        serde_json::json!({}),
    );
    assert_eq!(begun.status, 201, "{}", begun.body);
    let base32 = begun.json()["secret"].as_str().unwrap().to_owned();
    note_secret(&base32);
    let secret = totp_secret_from_base32(&base32);
    let code_at = |at: i64| secret.code_at(step_of(at)).unwrap().expose().to_owned();
    let now = auth::clock::system_now();
    let confirmed = post_json(
        "/account/second-factor/confirm",
        Some(&bearer(&access)),
        serde_json::json!({"code": code_at(now)}),
    );
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    let recovery: Vec<String> = confirmed.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    for code in &recovery {
        note_secret(code);
    }

    let mfa_token = || {
        let asked = post_json(
            "/login",
            None,
            serde_json::json!({"username": username, "password": password}),
        );
        assert_eq!(asked.status, 401, "{}", asked.body);
        assert_eq!(asked.json()["error"], "mfa_required");
        assert!(asked.json().get("access_token").is_none());
        let token = asked.json()["mfa_token"].as_str().unwrap().to_owned();
        note_secret(&token);
        token
    };
    // The confirmation spent this step's code: the next step's (one step
    // of drift) signs in.
    let signed_in = post_json(
        "/login/second-factor",
        None,
        serde_json::json!({"mfa_token": mfa_token(), "code": code_at(now + STEP_SECONDS)}),
    );
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    let verifier = watch_verifier();
    let claims = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(verifier.verify(signed_in.json()["access_token"].as_str().unwrap()))
        .unwrap();
    assert_eq!(claims.amr, ["pwd", "otp", "mfa"]);
    assert_eq!(claims.acr.as_deref(), Some("aal2"));

    let by_recovery = post_json(
        "/login/second-factor",
        None,
        serde_json::json!({"mfa_token": mfa_token(), "recovery_code": recovery[0]}),
    );
    assert_eq!(by_recovery.status, 200, "{}", by_recovery.body);
    let again = post_json(
        "/login/second-factor",
        None,
        serde_json::json!({"mfa_token": mfa_token(), "recovery_code": recovery[0]}),
    );
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(again.json()["error"], "invalid_code");
}
