//! Account recovery by email, against DynamoDB Local and moto's SES (the
//! local KMS's server): addresses and their verification, password resets by
//! link and by code, the mail each sends (read back from moto's mailbox),
//! the answers that must not tell accounts apart, and the races.

use std::collections::BTreeSet;

use crate::sessions::{PASSWORD, log_in, session, user_in};
use crate::support::*;
use auth::clock::Clock;
use auth::handlers::account;
use auth::handlers::mail::{MailWorker, Outcome};
use auth::handlers::recovery::{self, RESET_ANSWER, Recovery};
use auth::mail::{MailConfig, Mailer};
use auth::store::Store;
use auth::users::{User, Username};
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

const SENDER: &str = "Auth <no-reply@auth.test>";
const PAGE: &str = "https://auth.test";

/// An address no other test (or run) mails: moto's mailbox is shared.
pub(crate) fn unique_address(name: &str) -> String {
    format!(
        "{name}-{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The mail function's state on `store`, sending through moto as `SENDER`
/// (made a verified identity first, as SES requires).
pub(crate) async fn worker(store: &Store, clock: Clock) -> MailWorker {
    let sdk = sdk_for(&required_env("KMS_TEST_ENDPOINT"), &sdk_settings()).await;
    let ses = aws_sdk_sesv2::Client::new(&sdk);
    ses.create_email_identity()
        .email_identity("no-reply@auth.test")
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot verify the sender on moto's SES: {e:?}"));
    MailWorker {
        store: store.clone(),
        mailer: Mailer::new(
            &sdk,
            MailConfig {
                from: SENDER.into(),
                configuration_set: None,
                page: PAGE.into(),
            },
        ),
        limits: generous_limits(),
        clock,
    }
}

/// Runs every job waiting in the table, as the stream would hand them over.
pub(crate) async fn deliver(worker: &MailWorker) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for (id, job) in worker.store.pending_jobs().await.unwrap() {
        outcomes.push(worker.run(&id, &job).await.unwrap());
    }
    assert!(
        worker.store.pending_jobs().await.unwrap().is_empty(),
        "jobs left behind"
    );
    outcomes
}

/// A message in moto's mailbox.
#[derive(Clone, Debug)]
pub(crate) struct Mail {
    pub subject: String,
    /// What moto keeps of a simple message: its HTML part.
    pub body: String,
}

/// Every message sent to `to`, oldest first.
pub(crate) fn inbox(to: &str) -> Vec<Mail> {
    let url = format!("{}/moto-api/data.json", required_env("KMS_TEST_ENDPOINT"));
    let text = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let data: Value = serde_json::from_str(&text).unwrap();
    data["ses"]["Message"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|m| {
            m["destinations"]["ToAddresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|t| t == to))
        })
        .map(|m| {
            // The tests' own sender, or the watch's (its MAIL_FROM).
            let source = m["source"].as_str().unwrap_or_default();
            assert!(source.contains("no-reply@auth.test"), "{source}");
            Mail {
                subject: m["subject"].as_str().unwrap().to_owned(),
                body: m["body"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

/// The newest message to `to` with `subject`.
pub(crate) fn latest(to: &str, subject: &str) -> Mail {
    inbox(to)
        .into_iter()
        .rev()
        .find(|m| m.subject == subject)
        .unwrap_or_else(|| panic!("no {subject:?} in the mailbox"))
}

impl Mail {
    /// The link's token (after `#reset=` or `#verify=`).
    pub fn token(&self) -> String {
        let at = self.body.find("/#").expect("a link") + 2;
        let rest = &self.body[at..];
        let start = rest.find('=').unwrap() + 1;
        let token: String = rest[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        assert_eq!(token.len(), auth::tickets::LINK_TOKEN_CHARS);
        note_secret(&token);
        token
    }

    /// The code, without its space.
    pub fn code(&self) -> String {
        let at = self.body.find("<code>").expect("a code") + 6;
        let code: String = self.body[at..at + 9]
            .chars()
            .filter(|c| *c != ' ')
            .collect();
        assert!(auth::tickets::is_code_shaped(&code), "{code}");
        code
    }
}

/// A request to `path` (any route), built on events/password.json.
pub(crate) fn call(method: Method, path: &str, auth: Option<&str>, body: Option<Value>) -> Request {
    let body = body.map(|b| b.to_string());
    let mut req = request("password.json", auth, body.as_deref());
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().unwrap();
    req
}

pub(crate) fn recovery_state(app: &App) -> Recovery {
    Recovery {
        store: app.store.clone(),
        passwords: hasher(),
        limits: generous_limits(),
        clock: app.clock.clone(),
    }
}

async fn ask_reset(app: &App, who: Value) -> Response<Body> {
    let req = call(Method::POST, recovery::RESET_PATH, None, Some(who));
    recovery::handle(&recovery_state(app), req).await
}

/// A reset asked for `who` (the fixed 202), its job run, and the newest
/// reset message in `address`'s mailbox.
async fn reset_mail(app: &App, worker: &MailWorker, who: Value, address: &str) -> Mail {
    assert_eq!(ask_reset(app, who).await.status(), 202);
    deliver(worker).await;
    latest(address, "Reset your password")
}

async fn confirm(app: &App, body: Value) -> Response<Body> {
    if let Some(password) = body["new_password"].as_str() {
        note_secret(password);
    }
    let req = call(Method::POST, recovery::CONFIRM_PATH, None, Some(body));
    recovery::handle(&recovery_state(app), req).await
}

async fn email_route(
    app: &App,
    method: Method,
    path: &str,
    access: &str,
    body: Option<Value>,
) -> Response<Body> {
    let req = call(method, path, Some(&bearer(access)), body);
    account::handle(&app.account(), req).await
}

/// `username` with a verified address, proved through the real routes: the
/// address given (PUT), its verification mailed, its link followed.
pub(crate) async fn verified_user(
    app: &App,
    worker: &MailWorker,
    username: &str,
) -> (User, String) {
    user_in(&app.store, username).await;
    let address = unique_address(username);
    let tokens = session(app, username).await;
    let given = email_route(
        app,
        Method::PUT,
        account::EMAIL_PATH,
        &tokens.access,
        Some(json!({"email": address})),
    )
    .await;
    assert_eq!(given.status(), 202, "{}", body_json(&given));
    assert_eq!(deliver(worker).await, [Outcome::Sent]);
    let mail = inbox(&address).pop().expect("the verification");
    assert_eq!(mail.subject, "Verify your email address");
    let req = call(
        Method::POST,
        account::VERIFY_EMAIL_PATH,
        None,
        Some(json!({"token": mail.token()})),
    );
    let verified = account::handle(&app.account(), req).await;
    assert_eq!(verified.status(), 200, "{}", body_json(&verified));
    let user = app
        .store
        .get(&Username::parse(username).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        user.email.as_ref().map(|e| e.to_string()),
        Some(address.clone())
    );
    (user, address)
}

#[tokio::test]
async fn a_reset_by_link_sets_the_password_ends_every_session_clears_the_lock_and_tells_the_owner()
{
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let (user, address) = verified_user(&app, &worker, "forgetful").await;
    let old = session(&app, "forgetful").await;
    for _ in 0..5 {
        log_in(&app, "forgetful", "a wrong guess").await;
    }
    // The sign-in's new-device notice.
    assert_eq!(deliver(&worker).await, [Outcome::Sent]);
    assert!(store.failures(&user.username).await.unwrap().is_some());

    let asked = ask_reset(&app, json!({"username": "Forgetful"})).await;
    assert_eq!(asked.status(), 202);
    assert_eq!(body_json(&asked), json!({"message": RESET_ANSWER}));
    assert_eq!(deliver(&worker).await, [Outcome::Sent]);
    let mail = latest(&address, "Reset your password");
    assert_eq!(mail.subject, "Reset your password");
    assert!(
        mail.body.contains(&format!("{PAGE}/#reset=")),
        "{}",
        mail.body
    );

    let new_password = "a fresh start passphrase";
    let done = confirm(
        &app,
        json!({"token": mail.token(), "new_password": new_password}),
    )
    .await;
    assert_eq!(done.status(), 200, "{}", body_json(&done));
    assert!(
        body_json(&done).get("access_token").is_none(),
        "no session starts"
    );
    // The ticket is used up with the reset, in its transaction.
    let left = store.get_ticket(
        auth::tickets::Purpose::Reset,
        user.id,
        auth::clock::system_now(),
    );
    assert!(left.await.unwrap().is_none(), "the ticket is gone");
    // Every session ended; the lock is gone; the new password works, the old not.
    let refused = crate::sessions::name_with(&app, &old.access).await;
    assert_eq!(refused.status(), 401);
    assert!(store.failures(&user.username).await.unwrap().is_none());
    assert_eq!(log_in(&app, "forgetful", PASSWORD).await.status(), 401);
    assert_eq!(log_in(&app, "forgetful", new_password).await.status(), 200);
    // The owner is told, and nothing secret is in any message.
    deliver(&worker).await;
    let mails = inbox(&address);
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert!(
        subjects.contains(&"Your password was reset"),
        "{subjects:?}"
    );
    for mail in &mails {
        for secret in [
            PASSWORD,
            new_password,
            &old.access,
            &old.refresh,
            &user.password_hash,
        ] {
            assert!(
                !mail.body.contains(secret),
                "{} holds a secret",
                mail.subject
            );
        }
    }
}

#[tokio::test]
async fn a_reset_by_address_and_code_works_and_the_code_is_typed_with_its_space() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let (_, address) = verified_user(&app, &worker, "coder").await;
    let mail = reset_mail(
        &app,
        &worker,
        json!({"email": address.to_uppercase()}),
        &address,
    )
    .await;
    let spaced = format!("{} {}", &mail.code()[..4], &mail.code()[4..]);
    let done = confirm(
        &app,
        json!({"email": address, "code": spaced, "new_password": "typed it in myself"}),
    )
    .await;
    assert_eq!(done.status(), 200, "{}", body_json(&done));
    assert_eq!(
        log_in(&app, "coder", "typed it in myself").await.status(),
        200
    );
}

/// The answer and its headers, with what differs per request taken out.
fn answer_of(response: &Response<Body>) -> (u16, Value, BTreeSet<(String, String)>) {
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    (response.status().as_u16(), body_json(response), headers)
}

#[tokio::test]
async fn a_reset_request_gets_one_answer_whether_or_not_an_account_or_an_address_exists() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let (_, address) = verified_user(&app, &worker, "known").await;
    user_in(&store, "no-address").await;
    let asks = [
        json!({"username": "known"}),
        json!({"email": address}),
        json!({"username": "no-address"}),
        json!({"username": "nobody-here"}),
        json!({"email": unique_address("nobody")}),
    ];
    let mut answers = Vec::new();
    for who in asks {
        answers.push(answer_of(&ask_reset(&app, who).await));
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:#?}");
    assert_eq!(answers[0].0, 202);
    // Only the account with a verified address gets mail (jobs of one
    // second run in any order).
    let mut outcomes: Vec<String> = deliver(&worker)
        .await
        .iter()
        .map(|o| format!("{o:?}"))
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            "Sent",
            "Sent",
            "Skipped(\"no_account\")",
            "Skipped(\"no_account\")",
            "Skipped(\"no_verified_address\")",
        ]
    );
}

#[tokio::test]
async fn reset_requests_are_limited_per_identifier_and_per_source_alike_for_every_identifier() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    verified_user(&app, &worker, "limited").await;
    let state = Recovery {
        limits: auth::throttle::RateLimits {
            reset_per_identifier_per_hour: 2,
            reset_per_ip_per_hour: 7,
            ..generous_limits()
        },
        ..recovery_state(&app)
    };
    let ask = |who: Value| {
        let state = &state;
        async move {
            let req = call(Method::POST, recovery::RESET_PATH, None, Some(who));
            recovery::handle(state, req).await.status().as_u16()
        }
    };
    // The same count for a known and an unknown name: 2 fit, the third is refused.
    for who in ["limited", "unknown-name"] {
        let statuses = [
            ask(json!({"username": who})).await,
            ask(json!({"username": who})).await,
            ask(json!({"username": who})).await,
        ];
        assert_eq!(statuses, [202, 202, 429], "{who}");
    }
    // The source's window (7 an hour, refused requests counted too): one
    // more fits, then everything is refused.
    assert_eq!(ask(json!({"username": "third-name"})).await, 202);
    assert_eq!(ask(json!({"username": "fourth-name"})).await, 429);
}

#[tokio::test]
async fn a_reset_secret_is_refused_after_use_after_ten_minutes_after_a_newer_request_and_after_a_password_change()
 {
    let store = fresh_store().await;
    let clock = Clock::manual(auth::clock::system_now());
    let app = App::with_clock(&store, clock.clone());
    let worker = worker(&store, clock.clone()).await;
    let (_, address) = verified_user(&app, &worker, "refusals").await;
    let reset = |app: &App| {
        let app = app.clone();
        let worker = &worker;
        let address = address.clone();
        async move { reset_mail(&app, worker, json!({"username": "refusals"}), &address).await }
    };
    let refused = |response: Response<Body>| {
        assert_eq!(response.status(), 400);
        assert_eq!(body_json(&response)["error"], "invalid_ticket");
    };
    // Used once: refused the second time.
    let mail = reset(&app).await;
    let body = json!({"token": mail.token(), "new_password": "the first new one"});
    assert_eq!(confirm(&app, body.clone()).await.status(), 200);
    refused(
        confirm(
            &app,
            json!({"token": mail.token(), "new_password": "and a second one"}),
        )
        .await,
    );
    // A password change after the request voids it (before the clock
    // moves: access tokens are checked against the system's).
    let mail = reset(&app).await;
    let tokens =
        crate::sessions::Tokens::from(&log_in(&app, "refusals", "the first new one").await);
    let changed = crate::sessions::do_change(
        &app,
        &tokens.access,
        "the first new one",
        "changed meanwhile",
    )
    .await;
    assert_eq!(changed.status(), 200, "{}", body_json(&changed));
    refused(
        confirm(
            &app,
            json!({"token": mail.token(), "new_password": "after a change"}),
        )
        .await,
    );
    // Ten minutes: good at 9:59, refused at 10:00.
    let mail = reset(&app).await;
    clock.advance(600);
    refused(
        confirm(
            &app,
            json!({"token": mail.token(), "new_password": "too late for this"}),
        )
        .await,
    );
    let mail = reset(&app).await;
    clock.advance(599);
    assert_eq!(
        confirm(
            &app,
            json!({"token": mail.token(), "new_password": "just in time"})
        )
        .await
        .status(),
        200
    );
    // A newer request replaces the older one: its link and code are dead.
    let older = reset(&app).await;
    let newer = reset(&app).await;
    refused(
        confirm(
            &app,
            json!({"token": older.token(), "new_password": "the older link"}),
        )
        .await,
    );
    refused(
        confirm(
            &app,
            json!({"username": "refusals", "code": older.code(), "new_password": "the older code"}),
        )
        .await,
    );
    assert_eq!(
        confirm(
            &app,
            json!({"token": newer.token(), "new_password": "the newer link"})
        )
        .await
        .status(),
        200
    );
    // A token of the right shape that was never issued, and garbage.
    let forged = format!("{}A", &mail.token()[..auth::tickets::LINK_TOKEN_CHARS - 1]);
    refused(
        confirm(
            &app,
            json!({"token": forged, "new_password": "a forged token"}),
        )
        .await,
    );
    refused(
        confirm(
            &app,
            json!({"token": "garbage", "new_password": "a garbage token"}),
        )
        .await,
    );
}

#[tokio::test]
async fn five_wrong_codes_void_the_code_but_not_the_link_and_nothing_locks_the_owner() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let (user, address) = verified_user(&app, &worker, "guessed").await;
    let mail = reset_mail(&app, &worker, json!({"username": "guessed"}), &address).await;
    let right = mail.code();
    let wrong = format!("{:08}", (right.parse::<u32>().unwrap() + 1) % 100_000_000);
    for _ in 0..5 {
        let guess = confirm(
            &app,
            json!({"username": "guessed", "code": wrong, "new_password": "a stranger's try"}),
        )
        .await;
        assert_eq!(body_json(&guess)["error"], "invalid_ticket");
    }
    let ticket = store
        .get_ticket(
            auth::tickets::Purpose::Reset,
            user.id,
            auth::clock::system_now(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ticket.code_failures, 5);
    let late = confirm(
        &app,
        json!({"username": "guessed", "code": right, "new_password": "the right code, late"}),
    )
    .await;
    assert_eq!(
        body_json(&late)["error"],
        "invalid_ticket",
        "the code is void"
    );
    // The password lockout was never touched; the link still works.
    assert!(store.failures(&user.username).await.unwrap().is_none());
    let done = confirm(
        &app,
        json!({"token": mail.token(), "new_password": "the owner's link"}),
    )
    .await;
    assert_eq!(done.status(), 200);
}

/// Every TICKET item in the table, by partition key.
async fn ticket_keys(store: &Store) -> Vec<String> {
    crate::matrix::snapshot(store.table())
        .await
        .into_keys()
        .map(|(pk, _)| pk)
        .filter(|pk| pk.starts_with("TICKET#"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn a_wrong_code_gets_one_answer_and_makes_the_same_calls_whatever_exists() {
    // Somebody asks a reset for every name and address (one fixed answer),
    // then confirms with a wrong code, or a forged link naming a known
    // user id: neither the answer nor the calls to DynamoDB may tell an
    // account with a live ticket (or a void one) from one without, one
    // without an address, or none.
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let (ticketed, ticketed_address) = verified_user(&app, &worker, "ticketed").await;
    let (unasked, unasked_address) = verified_user(&app, &worker, "unasked").await;
    let (voided, voided_address) = verified_user(&app, &worker, "voided").await;
    user_in(&store, "unmailed").await;
    for name in ["ticketed", "voided"] {
        let asked = ask_reset(&app, json!({"username": name})).await;
        assert_eq!(asked.status(), 202);
    }
    deliver(&worker).await;
    let right = latest(&ticketed_address, "Reset your password").code();
    let wrong = format!("{:08}", (right.parse::<u32>().unwrap() + 1) % 100_000_000);
    let reset = auth::tickets::Purpose::Reset;
    let ticket_of = |id| {
        let store = store.clone();
        async move {
            store
                .get_ticket(reset, id, auth::clock::system_now())
                .await
                .unwrap()
                .unwrap()
        }
    };
    // The voided account's code has had its five wrong guesses.
    for _ in 0..auth::tickets::MAX_CODE_FAILURES {
        assert!(
            store
                .count_code_failure(&ticket_of(voided.id).await)
                .await
                .unwrap()
        );
    }
    let by_name = ["ticketed", "voided", "unasked", "unmailed", "nobody-here"]
        .map(|name| json!({"username": name}));
    let unknown_address = unique_address("nobody");
    let by_address = [
        &ticketed_address,
        &voided_address,
        &unasked_address,
        &unknown_address,
    ]
    .map(|address| json!({"email": address}));
    // A forged link token naming a known id (ids are tokens' `sub`): one
    // with a live ticket, one without, and an id nobody has.
    let forged = |id: auth::users::UserId| {
        use base64::Engine;
        let mut bytes = uuid::Uuid::parse_str(&id.to_string())
            .unwrap()
            .as_bytes()
            .to_vec();
        bytes.extend([7u8; 32]);
        json!({"token": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)})
    };
    let by_link = [
        forged(ticketed.id),
        forged(unasked.id),
        forged(auth::users::UserId::random()),
    ];
    for (kinds, calls) in [
        (
            &by_name[..],
            ["updateitem", "getitem", "getitem", "updateitem"].as_slice(),
        ),
        (
            &by_address[..],
            ["updateitem", "getitem", "getitem", "getitem", "updateitem"].as_slice(),
        ),
        (
            &by_link[..],
            ["updateitem", "getitem", "getitem"].as_slice(),
        ),
    ] {
        // A good password reaches the lookup; a common one is refused
        // before it, alike for all.
        for (password, expected) in [
            ("a good new passphrase", calls),
            ("password123", &calls[..1]),
        ] {
            let mut seen = Vec::new();
            for who in kinds {
                let proxy = crate::support::proxy::Proxy::to_dynamodb().await;
                let state = Recovery {
                    store: Store::new(
                        client_for(&proxy.endpoint, &sdk_settings()).await,
                        store.table(),
                    ),
                    ..recovery_state(&app)
                };
                let mut body = who.clone();
                if body.get("token").is_none() {
                    body["code"] = json!(wrong);
                }
                body["new_password"] = json!(password);
                let req = call(Method::POST, recovery::CONFIRM_PATH, None, Some(body));
                let answer = answer_of(&recovery::handle(&state, req).await);
                let operations = proxy.operations();
                assert_eq!(operations, expected, "{who} with {password:?}: {answer:?}");
                seen.push(answer);
            }
            assert!(seen.iter().all(|a| *a == seen[0]), "{seen:#?}");
            assert_eq!(seen[0].0, 400);
        }
    }
    // The wrong codes were counted against the live ticket (by name and by
    // address: two), not past five on the void one; the decoys wrote nothing.
    assert_eq!(ticket_of(ticketed.id).await.code_failures, 2);
    assert_eq!(
        ticket_of(voided.id).await.code_failures,
        auth::tickets::MAX_CODE_FAILURES
    );
    let mut expected = [ticketed.id, voided.id].map(|id| format!("TICKET#reset#{id}"));
    expected.sort();
    assert_eq!(ticket_keys(&store).await, expected);
}

#[tokio::test]
async fn a_reset_holds_the_new_password_to_registrations_policy() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let (user, address) = verified_user(&app, &worker, "careful-one").await;
    let mail = reset_mail(&app, &worker, json!({"email": address}), &address).await;
    for (body, message) in [
        (
            json!({"email": address, "code": mail.code(), "new_password": "iloveyou"}),
            "too common",
        ),
        (
            json!({"token": mail.token(), "new_password": "short"}),
            "at least 8",
        ),
        // The username rule, once the code has shown whose account it is.
        (
            json!({"email": address, "code": mail.code(), "new_password": "Careful-One"}),
            "same as the username",
        ),
    ] {
        let refused = confirm(&app, body).await;
        assert_eq!(refused.status(), 400);
        let error = body_json(&refused);
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{error}"
        );
    }
    // Nothing used up, nothing counted, nothing changed.
    let now = store.get(&user.username).await.unwrap().unwrap();
    assert_eq!(now.password_hash, user.password_hash);
    let ticket = store
        .get_ticket(
            auth::tickets::Purpose::Reset,
            user.id,
            auth::clock::system_now(),
        )
        .await
        .unwrap()
        .expect("the ticket is still there");
    assert_eq!(ticket.code_failures, 0);
    let done = confirm(
        &app,
        json!({"email": address, "code": mail.code(), "new_password": "a careful new passphrase"}),
    )
    .await;
    assert_eq!(done.status(), 200, "{}", body_json(&done));
}

#[tokio::test]
async fn an_accounts_mail_allowance_is_spent_silently_and_its_last_link_still_works() {
    // Anyone can ask resets for a name: past the account's hourly
    // allowance the mail function sends nothing and replaces nothing, so
    // the owner's last message still works.
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = MailWorker {
        limits: auth::throttle::RateLimits {
            tickets_per_account_per_hour: 3,
            ..generous_limits()
        },
        ..worker(&store, Clock::system()).await
    };
    // The verification is the first of three.
    let (_, address) = verified_user(&app, &worker, "popular").await;
    let mut outcomes = Vec::new();
    for who in [
        json!({"username": "popular"}),
        json!({"email": address}),
        json!({"username": "popular"}),
        json!({"email": address}),
    ] {
        let asked = ask_reset(&app, who).await;
        assert_eq!(answer_of(&asked).1["message"], RESET_ANSWER);
        outcomes.extend(deliver(&worker).await);
    }
    assert_eq!(
        outcomes,
        [
            Outcome::Sent,
            Outcome::Sent,
            Outcome::Skipped("allowance_spent"),
            Outcome::Skipped("allowance_spent"),
        ]
    );
    let resets: Vec<Mail> = inbox(&address)
        .into_iter()
        .filter(|m| m.subject == "Reset your password")
        .collect();
    assert_eq!(resets.len(), 2);
    let first = confirm(
        &app,
        json!({"token": resets[0].token(), "new_password": "the first link, replaced"}),
    )
    .await;
    assert_eq!(body_json(&first)["error"], "invalid_ticket");
    let last = confirm(
        &app,
        json!({"token": resets[1].token(), "new_password": "the last link still works"}),
    )
    .await;
    assert_eq!(last.status(), 200, "{}", body_json(&last));
}

#[tokio::test]
async fn a_reset_link_points_at_the_configured_page_whatever_the_request_names() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let (_, address) = verified_user(&app, &worker, "hosted").await;
    let mut req = call(
        Method::POST,
        recovery::RESET_PATH,
        None,
        Some(json!({"username": "hosted"})),
    );
    for (name, value) in [
        ("host", "evil.example"),
        ("x-forwarded-host", "evil.example"),
        ("origin", "https://evil.example"),
        ("referer", "https://evil.example/"),
    ] {
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    let asked = recovery::handle(&recovery_state(&app), req).await;
    assert_eq!(asked.status(), 202);
    deliver(&worker).await;
    let mail = latest(&address, "Reset your password");
    assert!(
        mail.body.contains(&format!("href=\"{PAGE}/#reset=")),
        "{}",
        mail.body
    );
    assert!(!mail.body.contains("evil"), "{}", mail.body);
}

#[tokio::test]
async fn guesses_are_limited_per_source() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let state = Recovery {
        limits: auth::throttle::RateLimits {
            ticket_guesses_per_ip_per_hour: 3,
            ..generous_limits()
        },
        ..recovery_state(&app)
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let body =
            json!({"username": "anyone", "code": "12345678", "new_password": "guess guess guess"});
        let req = call(Method::POST, recovery::CONFIRM_PATH, None, Some(body));
        statuses.push(recovery::handle(&state, req).await.status().as_u16());
    }
    assert_eq!(statuses, [400, 400, 400, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_resets_with_one_secret_have_one_winner() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let (user, address) = verified_user(&app, &worker, "raced").await;
    let token = reset_mail(&app, &worker, json!({"username": "raced"}), &address)
        .await
        .token();
    let mut racers = Vec::new();
    for (i, racer) in app.racers(6).await.into_iter().enumerate() {
        let token = token.clone();
        racers.push(racing(async move {
            let body = json!({"token": token, "new_password": format!("racer number {i} wins")});
            confirm(&racer, body).await.status().as_u16()
        }));
    }
    let outcomes = race(racers).await;
    let wins = outcomes.iter().filter(|s| **s == 200).count();
    let losses = outcomes.iter().filter(|s| **s == 400).count();
    assert_eq!((wins, losses), (1, 5), "{outcomes:?}");
    let now = store.get(&user.username).await.unwrap().unwrap();
    assert_eq!(
        now.session_epoch,
        user.session_epoch + 1,
        "one reset, one epoch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_verifications_of_one_address_race_to_one_winner() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let address = unique_address("contested");
    let mut tokens = Vec::new();
    for name in ["claimant-a", "claimant-b"] {
        user_in(&store, name).await;
        let access = session(&app, name).await.access;
        let given = email_route(
            &app,
            Method::PUT,
            account::EMAIL_PATH,
            &access,
            Some(json!({"email": address})),
        )
        .await;
        assert_eq!(
            given.status(),
            202,
            "giving an address never tells whether it is taken"
        );
    }
    deliver(&worker).await;
    for mail in inbox(&address) {
        tokens.push(mail.token());
    }
    assert_eq!(tokens.len(), 2);
    let mut racers = Vec::new();
    for (racer, token) in app.racers(2).await.into_iter().zip(tokens) {
        racers.push(racing(async move {
            let req = call(
                Method::POST,
                account::VERIFY_EMAIL_PATH,
                None,
                Some(json!({"token": token})),
            );
            let response = account::handle(&racer.account(), req).await;
            (
                response.status().as_u16(),
                body_json(&response)["error"].clone(),
            )
        }));
    }
    let outcomes = race(racers).await;
    let statuses: BTreeSet<u16> = outcomes.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, BTreeSet::from([200, 409]), "{outcomes:?}");
    assert!(outcomes.iter().any(|(_, e)| e == "email_taken"));
    let owner = store
        .user_by_email(&auth::email::Email::parse(&address).unwrap())
        .await
        .unwrap()
        .expect("one owner");
    assert!(["claimant-a", "claimant-b"].contains(&owner.username.as_str()));
}

#[tokio::test]
async fn a_new_address_replaces_the_old_only_once_verified_and_the_old_one_is_told() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let (user, old) = verified_user(&app, &worker, "mover").await;
    let new = unique_address("mover-new");
    let access = session(&app, "mover").await.access;
    let given = email_route(
        &app,
        Method::PUT,
        account::EMAIL_PATH,
        &access,
        Some(json!({"email": new})),
    )
    .await;
    assert_eq!(given.status(), 202);
    let view = body_json(&given);
    assert_eq!(
        (view["email"].as_str(), view["email_pending"].as_str()),
        (Some(old.as_str()), Some(new.as_str()))
    );
    // Until verified, resets still go to the old address.
    deliver(&worker).await;
    assert_eq!(ask_reset(&app, json!({"email": new})).await.status(), 202);
    assert_eq!(deliver(&worker).await, [Outcome::Skipped("no_account")]);
    // Verified by code, with the owner's token.
    let code = latest(&new, "Verify your email address").code();
    let verified = email_route(
        &app,
        Method::POST,
        account::VERIFY_EMAIL_PATH,
        &access,
        Some(json!({"code": code})),
    )
    .await;
    assert_eq!(verified.status(), 200, "{}", body_json(&verified));
    let now = store.get(&user.username).await.unwrap().unwrap();
    assert_eq!(now.email.map(|e| e.to_string()), Some(new.clone()));
    assert!(now.email_pending.is_none());
    // The old address is free again and told; the new one resets.
    assert!(
        store
            .user_by_email(&auth::email::Email::parse(&old).unwrap())
            .await
            .unwrap()
            .is_none()
    );
    deliver(&worker).await;
    let told = latest(&old, "Your email address was changed");
    assert_eq!(told.subject, "Your email address was changed");
    assert!(!told.body.contains(&new), "the new address is masked");
    assert_eq!(ask_reset(&app, json!({"email": new})).await.status(), 202);
    assert_eq!(deliver(&worker).await, [Outcome::Sent]);
}

#[tokio::test]
async fn giving_an_address_needs_a_fresh_proof_of_the_password() {
    let store = fresh_store().await;
    let clock = Clock::manual(auth::clock::system_now());
    let app = App::with_clock(&store, clock.clone());
    user_in(&store, "stale").await;
    let access = session(&app, "stale").await.access;
    clock.advance(auth::permissions::DEFAULT_FRESH_AUTH_MAX_AGE.as_secs() as i64 + 1);
    let body = json!({"email": unique_address("stale")});
    let refused = email_route(&app, Method::PUT, account::EMAIL_PATH, &access, Some(body)).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        body_json(&refused)["error"],
        "insufficient_user_authentication"
    );
    let read = email_route(&app, Method::GET, account::EMAIL_PATH, &access, None).await;
    assert_eq!(body_json(&read)["email"], Value::Null);
}

#[tokio::test]
async fn notices_go_to_the_verified_address_on_password_change_new_device_and_deletion() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let (_, address) = verified_user(&app, &worker, "noticed").await;
    deliver(&worker).await;
    let before = inbox(&address).len();
    // A sign-in without a device proof is a new device.
    let tokens = session(&app, "noticed").await;
    deliver(&worker).await;
    let changed =
        crate::sessions::do_change(&app, &tokens.access, PASSWORD, "noticed new pass").await;
    assert_eq!(changed.status(), 200);
    deliver(&worker).await;
    let access = body_json(&changed)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let req = call(
        Method::DELETE,
        account::ACCOUNT_PATH,
        Some(&bearer(&access)),
        Some(json!({"password": "noticed new pass"})),
    );
    assert_eq!(account::handle(&app.account(), req).await.status(), 200);
    deliver(&worker).await;
    let subjects: Vec<String> = inbox(&address)[before..]
        .iter()
        .map(|m| m.subject.clone())
        .collect();
    assert_eq!(
        subjects,
        [
            "New sign-in to your account",
            "Your password was changed",
            "Your account was deleted"
        ]
    );
    // The address is free again.
    assert!(
        store
            .user_by_email(&auth::email::Email::parse(&address).unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_reset_link_dies_when_the_address_it_went_to_is_replaced() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let (_, old) = verified_user(&app, &worker, "replaced").await;
    deliver(&worker).await;
    let stale = reset_mail(&app, &worker, json!({"username": "replaced"}), &old).await;
    // The owner moves to a new address (the old mailbox may be someone else's now).
    let new = unique_address("replaced-new");
    let access = session(&app, "replaced").await.access;
    let given = email_route(
        &app,
        Method::PUT,
        account::EMAIL_PATH,
        &access,
        Some(json!({"email": new})),
    )
    .await;
    assert_eq!(given.status(), 202);
    deliver(&worker).await;
    let code = latest(&new, "Verify your email address").code();
    let verified = email_route(
        &app,
        Method::POST,
        account::VERIFY_EMAIL_PATH,
        &access,
        Some(json!({"code": code})),
    )
    .await;
    assert_eq!(verified.status(), 200);
    let refused = confirm(
        &app,
        json!({"token": stale.token(), "new_password": "from the old mailbox"}),
    )
    .await;
    assert_eq!(body_json(&refused)["error"], "invalid_ticket");
    assert_eq!(log_in(&app, "replaced", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn a_stream_batch_delivered_twice_sends_each_job_once() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let worker = worker(&store, Clock::system()).await;
    let address = unique_address("twice");
    user_in(&store, "twice").await;
    let access = session(&app, "twice").await.access;
    let given = email_route(
        &app,
        Method::PUT,
        account::EMAIL_PATH,
        &access,
        Some(json!({"email": address})),
    )
    .await;
    assert_eq!(given.status(), 202);
    // The stream's record of the job, as Lambda hands it over: keys only.
    let (id, _) = store.pending_jobs().await.unwrap().pop().unwrap();
    let event = json!({"Records": [{
        "eventName": "INSERT",
        "dynamodb": {"Keys": {"pk": {"S": format!("MAIL#{id}")}, "sk": {"S": "MAIL"}}, "SequenceNumber": "1"}
    }]});
    for _ in 0..2 {
        assert_eq!(
            worker.handle_batch(&event).await,
            json!({"batchItemFailures": []})
        );
    }
    assert_eq!(
        inbox(&address).len(),
        1,
        "the second delivery found the job gone"
    );
    assert!(store.pending_jobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn registrations_mail_one_address_only_so_often() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let state = auth::handlers::register::Register {
        limits: auth::throttle::RateLimits {
            reset_per_identifier_per_hour: 2,
            ..generous_limits()
        },
        ..app.register()
    };
    let address = unique_address("bombed");
    let mut statuses = Vec::new();
    for i in 0..3 {
        let body = json!({"username": format!("bomber-{i}"), "password": "a long passphrase", "name": "B", "email": address});
        let req = request("register.json", None, Some(&body.to_string()));
        statuses.push(
            auth::handlers::register::handle(&state, req)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [201, 201, 429]);
}

#[tokio::test]
async fn a_null_where_the_contract_says_string_is_a_bad_request() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let asked = ask_reset(&app, json!({"email": null, "username": "someone"})).await;
    assert_eq!(asked.status(), 400, "null is not absence");
    let confirmed = confirm(&app, json!({"token": null, "code": "12345678", "username": "someone", "new_password": "a long passphrase"})).await;
    assert_eq!(confirmed.status(), 400);
}
