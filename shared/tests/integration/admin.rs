//! The admin API through its handler on DynamoDB Local: every act does its
//! work and writes one audit line (actor, target, action, outcome) and one
//! metric line; the self-protection rules; the answers to what it refuses.

use crate::permissions::{admin_in, claims_of};
use crate::sessions::*;
use crate::support::*;
use auth::clock::Clock;
use auth::handlers::admin::{self, Admin};
use auth::metrics;
use auth::permissions::{PermissionConfig, Role};
use auth::users::Username;
use lambda_http::http::Method;
use lambda_http::{Body, Response};
use serde_json::{Value, json};

/// `method path` on the admin API with `access`, and `body` if any.
pub(crate) async fn call(
    state: &Admin,
    access: &str,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> Response<Body> {
    let mut req = request("admin-user.json", Some(&bearer(access)), body);
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().unwrap();
    admin::handle(state, req).await
}

/// The audit lines among `lines`.
fn audits(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["fields"]["audit"] == "admin")
        .map(|l| l["fields"].clone())
        .collect()
}

#[tokio::test]
async fn every_admin_act_does_its_work_and_writes_one_audit_line_and_one_metric() {
    let store = fresh_store().await;
    // A clock that stands still: the lock below lasts as long as the test.
    let app = App::with_clock(&store, Clock::manual(auth::clock::system_now()));
    let chief = admin_in(&store, "chief").await;
    let target = user_in(&store, "target").await;
    let chief_tokens = session(&app, "chief").await;
    let state = app.admin();
    let (logs, _guard) = capture_logs();
    let emf = metrics::capture();

    let mut acts = Vec::new();
    let mut act = async |method: Method, path: &str, body: Option<&str>, name: &str| {
        let response = call(&state, &chief_tokens.access, method, path, body).await;
        assert_eq!(response.status(), 200, "{name}: {}", body_json(&response));
        acts.push(name.to_owned());
        body_json(&response)
    };

    // Look up: what an admin needs, never the hash.
    let found = act(Method::GET, "/admin/users/Target", None, "lookup_user").await;
    assert_eq!(found["message"], "User found");
    let user = &found["user"];
    assert_eq!(user["id"], target.id.to_string());
    assert_eq!(user["username"], "target");
    assert_eq!(user["name"], "Session User");
    assert_eq!(user["active"], true);
    assert_eq!(user["roles"], json!([]));
    assert_eq!(user["locked"], false);
    assert!(user["created_at"].is_i64());
    let text = found.to_string();
    assert!(!text.contains("$2b$") && !text.contains("hash"), "{text}");

    // Grant and revoke.
    let granted = act(
        Method::PUT,
        "/admin/users/target/roles/support",
        None,
        "grant_role",
    )
    .await;
    assert_eq!(granted["user"]["roles"], json!(["support"]));
    let again = act(
        Method::PUT,
        "/admin/users/target/roles/support",
        None,
        "grant_role",
    )
    .await;
    assert_eq!(again["user"]["roles"], json!(["support"]), "idempotent");
    let target_tokens = session(&app, "target").await;
    assert_eq!(claims_of(&target_tokens.access)["scope"], "support");
    let revoked = act(
        Method::DELETE,
        "/admin/users/target/roles/support",
        None,
        "revoke_role",
    )
    .await;
    assert_eq!(revoked["user"]["roles"], json!([]));

    // Deactivate: every session ends; activate: none comes back.
    let off = act(
        Method::PATCH,
        "/admin/users/target",
        Some(r#"{"active": false}"#),
        "set_active",
    )
    .await;
    assert_eq!(off["user"]["active"], false);
    assert_error(
        &name_with(&app, &target_tokens.access).await,
        401,
        "invalid_token",
    );
    assert_error(&log_in(&app, "target", PASSWORD).await, 401, "login_failed");
    let on = act(
        Method::PATCH,
        "/admin/users/target",
        Some(r#"{"active": true}"#),
        "set_active",
    )
    .await;
    assert_eq!(on["user"]["active"], true);
    assert_error(
        &name_with(&app, &target_tokens.access).await,
        401,
        "invalid_token",
    );

    // Unlock: a locked username can log in again.
    for _ in 0..5 {
        log_in(&app, "target", "a wrong password").await;
    }
    assert_error(
        &log_in(&app, "target", PASSWORD).await,
        429,
        "too_many_requests",
    );
    let locked = act(Method::GET, "/admin/users/target", None, "lookup_user").await;
    assert_eq!(locked["user"]["locked"], true);
    assert!(locked["user"]["locked_until"].is_i64());
    let unlocked = act(
        Method::DELETE,
        "/admin/users/target/lock",
        None,
        "unlock_user",
    )
    .await;
    assert_eq!(unlocked["user"]["locked"], false);
    let fresh = session(&app, "target").await;

    // End every session.
    act(
        Method::DELETE,
        "/admin/users/target/sessions",
        None,
        "end_sessions",
    )
    .await;
    assert_error(&name_with(&app, &fresh.access).await, 401, "invalid_token");
    assert_error(
        &do_refresh(&app, &fresh.refresh).await,
        401,
        "invalid_grant",
    );

    // Delete: the user and the attempt record go; the name is free.
    log_in(&app, "target", "a wrong password").await;
    let deleted = act(Method::DELETE, "/admin/users/target", None, "delete_user").await;
    assert_eq!(deleted, json!({"message": "User deleted"}));
    let username = Username::parse("target").unwrap();
    assert_eq!(store.get(&username).await.unwrap(), None);
    assert_eq!(store.failures(&username).await.unwrap(), None);

    // One audit line per act, in order, naming both parties.
    let lines = audits(&logs.lines());
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(names, acts);
    for line in &lines {
        assert_eq!(line["actor_id"], chief.id.to_string(), "{line}");
        assert_eq!(line["target_id"], target.id.to_string(), "{line}");
        assert_eq!(line["outcome"], "done", "{line}");
        assert!(
            line.get("target_username").is_none(),
            "no username in logs: {line}"
        );
    }
    // What exactly was done: the role, the activity.
    let details: Vec<&str> = lines
        .iter()
        .map(|l| l["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        [
            "",
            "role=support",
            "role=support",
            "role=support",
            "active=false",
            "active=true",
            "",
            "",
            "",
            ""
        ]
    );
    // One metric line per act (and the deletion's own count).
    let emitted: Vec<Value> = emf.take();
    let admin_lines: Vec<&Value> = emitted
        .iter()
        .filter(|l| l.get("AdminActions").is_some())
        .collect();
    assert_eq!(admin_lines.len(), acts.len());
    for (line, name) in admin_lines.iter().zip(&acts) {
        metrics::check_emf(line).unwrap();
        assert_eq!(line["Action"], name.as_str());
        assert_eq!(line["Outcome"], "done");
    }
    assert_eq!(
        emitted
            .iter()
            .filter(|l| l.get("AccountsDeleted").is_some())
            .count(),
        1
    );
}

#[tokio::test]
async fn no_admin_can_remove_their_own_admin_role_deactivate_or_delete_themselves() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let chief = admin_in(&store, "chief").await;
    let deputy = admin_in(&store, "deputy").await;
    let tokens = session(&app, "chief").await;
    let state = app.admin();
    let (logs, _guard) = capture_logs();

    for (method, path, body) in [
        (Method::DELETE, "/admin/users/chief/roles/admin", None),
        (
            Method::PATCH,
            "/admin/users/chief",
            Some(r#"{"active": false}"#),
        ),
        (Method::DELETE, "/admin/users/chief", None),
    ] {
        let response = call(&state, &tokens.access, method.clone(), path, body).await;
        let json = assert_error(&response, 403, "forbidden");
        assert!(
            json["message"].as_str().unwrap().contains("auth-admin"),
            "{json}"
        );
    }
    let stored = store.get(&chief.username).await.unwrap().unwrap();
    assert!(stored.active && stored.roles.contains(&Role::admin()));
    assert_eq!(stored.session_epoch, chief.session_epoch);
    let lines = audits(&logs.lines());
    assert_eq!(lines.len(), 3, "one audit line per refused act: {lines:?}");
    for line in lines {
        assert_eq!(line["outcome"], "forbidden", "{line}");
        assert_eq!(line["target_id"], chief.id.to_string(), "{line}");
    }

    // What does not lock them out is allowed: another role, their own
    // sessions, activating themselves.
    assert_works(
        &call(
            &state,
            &tokens.access,
            Method::PUT,
            "/admin/users/chief/roles/support",
            None,
        )
        .await,
    );
    assert_works(
        &call(
            &state,
            &tokens.access,
            Method::DELETE,
            "/admin/users/chief/roles/support",
            None,
        )
        .await,
    );
    assert_works(
        &call(
            &state,
            &tokens.access,
            Method::PATCH,
            "/admin/users/chief",
            Some(r#"{"active": true}"#),
        )
        .await,
    );
    // Another admin may demote them (auth-admin is the break-glass).
    let deputy_tokens = session(&app, "deputy").await;
    assert_works(
        &call(
            &state,
            &deputy_tokens.access,
            Method::DELETE,
            "/admin/users/chief/roles/admin",
            None,
        )
        .await,
    );
    assert!(
        !store
            .get(&chief.username)
            .await
            .unwrap()
            .unwrap()
            .roles
            .contains(&Role::admin())
    );
    assert_error(
        &call(
            &state,
            &tokens.access,
            Method::GET,
            "/admin/users/deputy",
            None,
        )
        .await,
        403,
        "insufficient_scope",
    );
    // The demoted admin's refused act changed nothing: the deputy keeps the role.
    let stored = store.get(&deputy.username).await.unwrap().unwrap();
    assert!(stored.roles.contains(&Role::admin()));
}

#[tokio::test]
async fn refused_admin_requests_answer_in_the_one_error_shape() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let chief = admin_in(&store, "chief").await;
    let tokens = session(&app, "chief").await;
    let state = app.admin();
    let (logs, _guard) = capture_logs();
    let at = async |method: Method, path: &str, body: Option<&str>| {
        call(&state, &tokens.access, method, path, body).await
    };

    assert_error(
        &at(Method::GET, "/admin/users/nobody", None).await,
        404,
        "user_not_found",
    );
    assert_error(
        &at(Method::GET, "/admin/users/x", None).await,
        400,
        "invalid_request",
    );
    assert_error(
        &at(Method::GET, "/admin/users/chief/other", None).await,
        404,
        "not_found",
    );
    let unknown = assert_error(
        &at(Method::PUT, "/admin/users/chief/roles/auditor", None).await,
        400,
        "invalid_request",
    );
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("admin, support"),
        "{unknown}"
    );
    assert_error(
        &at(Method::PUT, "/admin/users/chief/roles/Admin", None).await,
        400,
        "invalid_request",
    );
    for (method, path, allow) in [
        (Method::POST, "/admin/users/chief", "GET, PATCH, DELETE"),
        (Method::GET, "/admin/users/chief/roles/admin", "PUT, DELETE"),
        (Method::GET, "/admin/users/chief/lock", "DELETE"),
        (Method::POST, "/admin/users/chief/sessions", "DELETE"),
    ] {
        let response = at(method, path, None).await;
        assert_error(&response, 405, "method_not_allowed");
        assert_eq!(response.headers()["allow"], allow, "{path}");
    }
    for body in [
        None,
        Some("{}"),
        Some(r#"{"active": "no"}"#),
        Some(r#"{"active": true, "x": 1}"#),
    ] {
        assert_error(
            &at(Method::PATCH, "/admin/users/chief", body).await,
            400,
            "invalid_request",
        );
    }
    // The user not found is audited with no target; route errors are not acts.
    let lines = audits(&logs.lines());
    let not_found: Vec<&Value> = lines
        .iter()
        .filter(|l| l["outcome"] == "user_not_found")
        .collect();
    assert_eq!(not_found.len(), 1);
    assert_eq!(not_found[0]["target_id"], "none");
    assert_eq!(not_found[0]["actor_id"], chief.id.to_string());
    assert!(
        lines
            .iter()
            .all(|l| l["outcome"] != "not_found" && l["outcome"] != "method_not_allowed")
    );
}

#[tokio::test]
async fn a_user_holds_at_most_ten_roles() {
    let store = fresh_store().await;
    let app = App::new(&store);
    admin_in(&store, "chief").await;
    user_in(&store, "collector").await;
    let tokens = session(&app, "chief").await;
    let many = (0..12)
        .map(|i| format!("role{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let state = Admin {
        permissions: PermissionConfig::from_source(&|v: &str| match v {
            "ROLES" => Some(many.clone()),
            "SECOND_FACTOR_ROLES" => Some("none".into()),
            _ => None,
        })
        .unwrap(),
        ..app.admin()
    };
    for i in 0..10 {
        let path = format!("/admin/users/collector/roles/role{i}");
        assert_works(&call(&state, &tokens.access, Method::PUT, &path, None).await);
    }
    let response = call(
        &state,
        &tokens.access,
        Method::PUT,
        "/admin/users/collector/roles/role10",
        None,
    )
    .await;
    assert_error(&response, 409, "conflict");
    // One already held is no new role.
    assert_works(
        &call(
            &state,
            &tokens.access,
            Method::PUT,
            "/admin/users/collector/roles/role3",
            None,
        )
        .await,
    );
    let stored = store
        .get(&Username::parse("collector").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.roles.len(), 10);
    // And the token of a user with ten roles stays well under the 4 KiB cap.
    let collector = session(&app, "collector").await;
    assert!(collector.access.len() < 2048, "{}", collector.access.len());
}

/// An act's write that happened with its answer lost is read back and
/// answered as done; when the read-back fails too, the answer is 503 and the
/// audit line says `unconfirmed`, never that the act failed; a write that
/// never reached DynamoDB is a 503 the audit calls `service_unavailable`.
/// Each fault proven fired.
#[tokio::test]
async fn an_act_whose_answer_is_lost_is_read_back_and_never_audited_as_failed_when_live() {
    use crate::support::proxy::{Call, Fault, Proxy};
    let store = fresh_store().await;
    let app = App::new(&store);
    admin_in(&store, "chief").await;
    let chief = session(&app, "chief").await;
    let write = Call::Nth("updateitem", 1);
    // The act's reads: the caller, the target; its read-back is the 3rd.
    let read_back = Call::Nth("getitem", 3);
    // The faults; the status, the audit's outcome, and whether the act is live.
    type Case<'a> = (&'a [(Call, Fault)], u16, &'a str, bool);
    let cases: [Case; 3] = [
        (&[(write.clone(), Fault::Lost)], 200, "done", true),
        (
            &[(write.clone(), Fault::Lost), (read_back, Fault::Dropped)],
            503,
            "unconfirmed",
            true,
        ),
        (
            &[(write.clone(), Fault::Dropped)],
            503,
            "service_unavailable",
            false,
        ),
    ];
    let (logs, _guard) = capture_logs();
    for (i, (faults, status, outcome, live)) in cases.into_iter().enumerate() {
        let username = format!("target-{i}");
        let target = user_in(&store, &username).await;
        let proxy = Proxy::to_dynamodb().await;
        for (call, fault) in faults {
            proxy.fail(call.clone(), *fault);
        }
        let racer = app.racer(0, 1, Some(&proxy)).await;
        let path = format!("/admin/users/{username}/sessions");
        let response = call(&racer.admin(), &chief.access, Method::DELETE, &path, None).await;
        for (call, fault) in faults {
            proxy.assert_fired(call, *fault);
        }
        assert_eq!(
            response.status(),
            status,
            "{outcome}: {}",
            body_json(&response)
        );
        let after = store.get(&target.username).await.unwrap().unwrap();
        assert_eq!(
            after.session_epoch > target.session_epoch,
            live,
            "{outcome}"
        );
        let lines = audits(&logs.lines());
        assert_eq!(lines.len(), i + 1, "one audit line per act: {lines:?}");
        let line = &lines[i];
        assert_eq!(line["target_id"], target.id.to_string());
        assert_eq!(line["action"], "end_sessions");
        assert_eq!(line["outcome"], outcome, "{line}");
    }
}

#[tokio::test]
async fn an_admin_sets_a_new_password_and_every_session_and_the_lockout_end() {
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(auth::clock::system_now()));
    let chief = admin_in(&store, "chief").await;
    let target = user_in(&store, "target").await;
    let chief_tokens = session(&app, "chief").await;
    let target_tokens = session(&app, "target").await;
    let state = app.admin();
    let (logs, _guard) = capture_logs();
    let set = async |username: &str, body: &str| {
        let path = format!("/admin/users/{username}/password");
        call(&state, &chief_tokens.access, Method::PUT, &path, Some(body)).await
    };
    // Locked out by a guesser, as a person who forgot it may be.
    for _ in 0..5 {
        log_in(&app, "target", "a wrong password").await;
    }
    assert_error(
        &log_in(&app, "target", PASSWORD).await,
        429,
        "too_many_requests",
    );

    // The policy's checks, and the body's shape, before anything is written.
    for (body, why) in [
        (r#"{"new_password": "password"}"#, "common"),
        (r#"{"new_password": "short"}"#, "too short"),
        (r#"{"password": "a long enough one"}"#, "unknown field"),
        ("{}", "missing"),
    ] {
        assert_error(&set("target", body).await, 400, "invalid_request");
        let stored = store.get(&target.username).await.unwrap().unwrap();
        assert_eq!(stored.password_hash, target.password_hash, "{why}");
    }
    assert_error(
        &set("nobody", r#"{"new_password": "a long enough one"}"#).await,
        404,
        "user_not_found",
    );
    // Not on oneself (POST /password proves the current one), nor on
    // another admin (one stolen admin session must not open every admin's).
    assert_error(
        &set("chief", r#"{"new_password": "a long enough one"}"#).await,
        403,
        "forbidden",
    );
    let deputy = admin_in(&store, "deputy").await;
    assert_error(
        &set("deputy", r#"{"new_password": "a long enough one"}"#).await,
        403,
        "forbidden",
    );
    let kept = store.get(&deputy.username).await.unwrap().unwrap();
    assert_eq!(kept.password_hash, deputy.password_hash);

    let new_password = "a brand new passphrase";
    let response = set("target", &json!({"new_password": new_password}).to_string()).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let answer = body_json(&response);
    assert_eq!(answer["message"], "Password set; every session ended");
    assert_eq!(answer["user"]["locked"], false, "the lockout ends");
    // Every session ended; the old password no longer works, the new one does.
    assert_error(
        &name_with(&app, &target_tokens.access).await,
        401,
        "invalid_token",
    );
    assert_error(
        &do_refresh(&app, &target_tokens.refresh).await,
        401,
        "invalid_grant",
    );
    assert_error(&log_in(&app, "target", PASSWORD).await, 401, "login_failed");
    assert_works(&log_in(&app, "target", new_password).await);
    // The admin's own session is untouched.
    assert_works(&name_with(&app, &chief_tokens.access).await);

    // Audited, the refusals too; the password in no line.
    let lines = audits(&logs.lines());
    let sets: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["action"] == "set_password")
        .map(|l| {
            (
                l["outcome"].as_str().unwrap(),
                l["target_id"].as_str().unwrap(),
            )
        })
        .collect();
    let target_id = target.id.to_string();
    let chief_id = chief.id.to_string();
    let deputy_id = deputy.id.to_string();
    assert_eq!(
        sets,
        [
            ("invalid_request", target_id.as_str()),
            ("invalid_request", target_id.as_str()),
            ("invalid_request", "none"),
            ("invalid_request", "none"),
            ("user_not_found", "none"),
            ("forbidden", chief_id.as_str()),
            ("forbidden", deputy_id.as_str()),
            ("done", target_id.as_str()),
        ]
    );
    let text = logs.text();
    assert!(!text.contains(new_password) && !text.contains("enough one"));
}

#[tokio::test]
async fn an_admin_finds_a_user_by_the_id_the_logs_name() {
    let store = fresh_store().await;
    let app = App::new(&store);
    admin_in(&store, "chief").await;
    let target = user_in(&store, "target").await;
    let tokens = session(&app, "chief").await;
    let state = app.admin();
    let find = async |query: &str| {
        let path = format!("/admin/users?{query}");
        call(&state, &tokens.access, Method::GET, &path, None).await
    };

    let found = find(&format!("id={}", target.id)).await;
    assert_eq!(found.status(), 200, "{}", body_json(&found));
    let found = body_json(&found);
    assert_eq!(found["message"], "User found");
    assert_eq!(found["user"]["username"], "target");
    assert_eq!(found["user"]["id"], target.id.to_string());

    assert_error(
        &find(&format!("id={}", uuid::Uuid::new_v4())).await,
        404,
        "user_not_found",
    );
    for query in ["id=target", "name=target", &format!("id={}&x=1", target.id)] {
        assert_error(&find(query).await, 400, "invalid_request");
    }
    // A deleted user's id finds nobody, though the name is taken anew.
    call(
        &state,
        &tokens.access,
        Method::DELETE,
        "/admin/users/target",
        None,
    )
    .await;
    user_in(&store, "target").await;
    assert_error(
        &find(&format!("id={}", target.id)).await,
        404,
        "user_not_found",
    );
    let response = call(&state, &tokens.access, Method::PUT, "/admin/users", None).await;
    assert_error(&response, 405, "method_not_allowed");
    assert_eq!(response.headers()["allow"], "GET, POST");
}

#[tokio::test]
async fn with_sign_up_closed_only_an_admin_creates_accounts() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let chief = admin_in(&store, "chief").await;
    user_in(&store, "plain").await;
    let chief_tokens = session(&app, "chief").await;
    let plain_tokens = session(&app, "plain").await;
    let closed = auth::handlers::register::Register {
        sign_up: auth::handlers::register::SignUp::AdminsOnly,
        ..app.register()
    };
    let body = json!({"username": "newbie", "password": "a long enough one", "name": "New Bie"})
        .to_string();
    let refused =
        auth::handlers::register::handle(&closed, request("register.json", None, Some(&body)))
            .await;
    let error = assert_error(&refused, 403, "sign_up_closed");
    assert!(error["message"].as_str().unwrap().contains("admin"));
    let newbie = Username::parse("newbie").unwrap();
    assert_eq!(store.get(&newbie).await.unwrap(), None);

    let state = app.admin();
    let (logs, _guard) = capture_logs();
    let create = async |access: &str, body: &str| {
        call(&state, access, Method::POST, "/admin/users", Some(body)).await
    };
    assert_error(
        &create(&plain_tokens.access, &body).await,
        403,
        "insufficient_scope",
    );
    assert_eq!(store.get(&newbie).await.unwrap(), None);
    for bad in [
        json!({"username": "newbie", "password": "password", "name": "N"}),
        json!({"username": "x", "password": "a long enough one", "name": "N"}),
        json!({"username": "newbie", "password": "a long enough one"}),
    ] {
        assert_error(
            &create(&chief_tokens.access, &bad.to_string()).await,
            400,
            "invalid_request",
        );
    }
    let created = create(&chief_tokens.access, &body).await;
    assert_eq!(created.status(), 201, "{}", body_json(&created));
    let created = body_json(&created);
    assert_eq!(created["message"], "User created");
    assert_eq!(created["user"]["username"], "newbie");
    assert_eq!(created["user"]["name"], "New Bie");
    assert_eq!(created["user"]["roles"], json!([]));
    assert_works(&log_in(&app, "newbie", "a long enough one").await);
    assert_error(
        &create(&chief_tokens.access, &body).await,
        409,
        "username_taken",
    );

    let lines = audits(&logs.lines());
    let created_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["action"] == "create_user" && l["outcome"] == "done")
        .collect();
    assert_eq!(created_lines.len(), 1, "{lines:?}");
    assert_eq!(created_lines[0]["target_id"], created["user"]["id"]);
    assert_eq!(created_lines[0]["actor_id"], chief.id.to_string());
    assert!(!logs.text().contains("a long enough one"));
}
