//! Logs: one structured line per request (request id, route, status, latency,
//! user id when known), and nothing secret in any line: no password, hash,
//! token or key material, across login, refresh, register, password change
//! and get-name.

use crate::support::*;
use auth::handlers::{change_password, get_name, login, refresh, register};
use auth::runtime;
use serde_json::{Value, json};

/// `req` as the runtime hands it over: with Lambda's context and its request id.
fn invoked(req: lambda_http::Request, n: usize) -> lambda_http::Request {
    use lambda_http::RequestExt;
    let mut context = lambda_http::Context::default();
    context.request_id = format!("log-test-invocation-{n}");
    req.with_lambda_context(context)
}

#[tokio::test]
async fn request_logs_are_structured_and_never_carry_secrets() {
    // The JSON format Lambda's advanced logging controls ask for.
    let (captured, _guard) = capture_logs();

    let store = fresh_store().await;
    let app = App::new(&store);
    let password = "log-test password 1";
    let new_password = "log-test password 2";
    let mut secrets = vec![password.to_owned(), new_password.to_owned()];

    let body =
        json!({"username": "logged", "password": password, "name": "Logged User"}).to_string();
    let state = app.register();
    let response = runtime::handle(
        &|r| register::handle(&state, r),
        invoked(request("register.json", None, Some(&body)), 1),
    )
    .await;
    assert_eq!(response.status(), 201);
    let user_id = body_json(&response)["id"].as_str().unwrap().to_owned();
    let stored = store
        .get(&auth::users::Username::parse("logged").unwrap())
        .await
        .unwrap()
        .unwrap();
    secrets.push(stored.password_hash.clone());

    let state = app.login();
    let login_body = json!({"username": "logged", "password": password}).to_string();
    let wrong = json!({"username": "logged", "password": "wrong password here"}).to_string();
    secrets.push("wrong password here".into());
    runtime::handle(
        &|r| login::handle(&state, r),
        invoked(request("login.json", None, Some(&wrong)), 2),
    )
    .await;
    let response = runtime::handle(
        &|r| login::handle(&state, r),
        invoked(request("login.json", None, Some(&login_body)), 3),
    )
    .await;
    let tokens = body_json(&response);
    let (access, refresh_token) = (
        tokens["access_token"].as_str().unwrap().to_owned(),
        tokens["refresh_token"].as_str().unwrap().to_owned(),
    );
    secrets.extend([access.clone(), refresh_token.clone()]);

    let state = app.get_name();
    let response = runtime::handle(
        &|r| get_name::handle(&state, r),
        invoked(request("get-name.json", Some(&bearer(&access)), None), 4),
    )
    .await;
    assert_eq!(response.status(), 200);

    let state = app.refresh();
    let refresh_body = json!({"refresh_token": refresh_token}).to_string();
    let response = runtime::handle(
        &|r| refresh::handle(&state, r),
        invoked(request("refresh.json", None, Some(&refresh_body)), 5),
    )
    .await;
    let refreshed = body_json(&response);
    let new_access = refreshed["access_token"].as_str().unwrap().to_owned();
    secrets.extend([
        new_access.clone(),
        refreshed["refresh_token"].as_str().unwrap().to_owned(),
    ]);

    let state = app.account();
    let change = json!({"current_password": password, "new_password": new_password}).to_string();
    let response = runtime::handle(
        &|r| change_password::handle(&state, r),
        invoked(
            request("password.json", Some(&bearer(&new_access)), Some(&change)),
            6,
        ),
    )
    .await;
    assert_eq!(response.status(), 200);
    let changed = body_json(&response);
    secrets.extend([
        changed["access_token"].as_str().unwrap().to_owned(),
        changed["refresh_token"].as_str().unwrap().to_owned(),
    ]);
    let after = store
        .get(&auth::users::Username::parse("logged").unwrap())
        .await
        .unwrap()
        .unwrap();
    secrets.push(after.password_hash.clone());

    drop(_guard);
    let text = captured.text();
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret is in the logs: {}…",
            &secret[..8.min(secret.len())]
        );
        // Nor a JWT's signing input, nor a bcrypt hash's salt (its 22
        // characters after `$2b$10$`).
        if secret.starts_with("eyJ") {
            let (head, _) = secret.rsplit_once('.').unwrap();
            assert!(
                !text.contains(head),
                "a token's header.payload is in the logs"
            );
        }
        if secret.starts_with("$2") {
            assert!(
                !text.contains(&secret[7..29]),
                "a hash's salt is in the logs"
            );
        }
    }
    for marker in ["$2b$", "PRIVATE KEY", "eyJ", "password_hash"] {
        assert!(!text.contains(marker), "{marker:?} is in the logs");
    }
    assert!(!text.contains(&our_key().private_pem[40..80]));

    // One line per request, with what an operator needs.
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let done: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request done")
        .collect();
    assert_eq!(
        done.len(),
        6,
        "register, two logins, get_name, refresh, password"
    );
    for line in &lines {
        // No time: Lambda stamps each line itself. (Which spans a line
        // carries, at INFO and at DEBUG: `runtime::tests`.)
        assert!(line.get("timestamp").is_none(), "{line}");
    }
    for line in &done {
        assert_eq!(line["span"]["name"], "request", "{line}");
        assert!(line["fields"]["status"].as_u64().is_some(), "{line}");
        assert!(line["fields"]["latency_ms"].as_f64().is_some(), "{line}");
        assert!(
            line["span"]["route"]
                .as_str()
                .unwrap()
                .starts_with("POST /")
                || line["span"]["route"] == "GET /get_name",
            "{line}"
        );
        let id = line["span"]["request_id"].as_str().unwrap_or("");
        assert!(id.starts_with("log-test-invocation-"), "{line}");
        // The events' API Gateway request id: what the access log line carries.
        assert!(
            !line["span"]["api_request_id"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{line}"
        );
    }
    let with_user: Vec<&&Value> = done
        .iter()
        .filter(|l| l["span"]["user_id"] == user_id.as_str())
        .collect();
    assert_eq!(
        with_user.len(),
        5,
        "all but the failed login know the user: {done:?}"
    );
}

/// Answers every request with `status` and `body`, as a broken or hostile
/// endpoint would; returns its URL.
async fn answering(status: &'static str, body: &'static str) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                while read_http_request(&mut socket).await.is_some() {
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn a_dependency_error_is_logged_by_service_operation_kind_and_code_only() {
    const HASH: &str = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
    // A response the SDK cannot read (its raw body is the error's), and a
    // service error whose message carries an item.
    let unreadable = r#"{"Item": {"password_hash": {"S": "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"}, "active": {"BOOL": "not a bool"}}"#;
    let service = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"bad item {password_hash: $2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW}"}"#;
    for (status, body, expected) in [
        ("200 OK", unreadable, "dynamodb"),
        ("400 Bad Request", service, "ValidationException"),
    ] {
        let (captured, _guard) = capture_logs();
        let endpoint = answering(status, body).await;
        let client = client_for(&endpoint, &sdk_settings()).await;
        let store = auth::store::Store::new(client, "users");
        let state = App::new(&store).login();
        let login_body = json!({"username": "someone", "password": "a password"}).to_string();
        let response = runtime::handle(
            &|r| login::handle(&state, r),
            invoked(request("login.json", None, Some(&login_body)), 7),
        )
        .await;
        assert!(response.status().is_server_error(), "{}", response.status());
        let text = captured.text();
        assert!(!text.contains(HASH), "the raw body reached the log: {text}");
        assert!(!text.contains("password_hash"), "{text}");
        assert!(text.contains(expected), "{text}");
        assert!(
            text.contains("GetItem") || text.contains("UpdateItem"),
            "{text}"
        );
    }
}

/// A path that names a user is logged as its route's template: an admin
/// act on "ada-lovelace", through the runtime as the function serves it,
/// leaves no line that names her, and the span says which route it was.
#[tokio::test]
async fn a_request_is_logged_by_its_routes_template_never_by_a_path_that_names_a_user() {
    let (captured, _guard) = capture_logs();
    let store = fresh_store().await;
    let app = App::new(&store);
    crate::permissions::admin_in(&store, "chief").await;
    crate::sessions::user_in(&store, "ada-lovelace").await;
    let chief = crate::sessions::session(&app, "chief").await;
    let state = app.admin();
    for (method, path) in [
        ("DELETE", "/admin/users/ada-lovelace/sessions"),
        ("PUT", "/admin/users/ada-lovelace/roles/support"),
        ("GET", "/admin/users/ada-lovelace"),
    ] {
        let mut req = request("admin-user.json", Some(&bearer(&chief.access)), None);
        *req.method_mut() = method.parse().unwrap();
        *req.uri_mut() = path.parse().unwrap();
        let response = runtime::handle(
            &|r| auth::handlers::admin::handle(&state, r),
            invoked(req, 1),
        )
        .await;
        assert_eq!(response.status(), 200, "{}", body_json(&response));
    }
    drop(_guard);
    let lines = captured.lines();
    let routes: Vec<&str> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request done")
        .map(|l| l["span"]["route"].as_str().unwrap())
        .collect();
    assert_eq!(
        routes,
        [
            "DELETE /admin/users/{username}/sessions",
            "PUT /admin/users/{username}/roles/{role}",
            "GET /admin/users/{username}",
        ]
    );
    let text = captured.text();
    assert!(!text.contains("ada-lovelace"), "a log line names the user");
}
