//! Fault injection by call index: for each handler, its 1st, 2nd, … DynamoDB
//! operation fails in each way (connection dropped; hanging past a short
//! timeout; throttled; a transaction cancelled; done but its answer lost),
//! through a proxy in front of
//! DynamoDB Local that forwards every other call. Afterwards the store is
//! checked, not only the status:
//! - after a 5xx, every item is as it was, but for attempt and rate counters,
//!   which may only have gone up;
//! - an attempt count never goes down but by a success;
//! - every session has its refresh tokens, every refresh token its session, and
//!   no refresh family has two live tokens.
//!
//! An operation is one SDK call with its retries (one `amz-sdk-invocation-id`):
//! a faulted operation fails on every attempt.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::sessions::{PASSWORD, Tokens, log_in, session, user_in};
use crate::support::oidc::Mint;
use crate::support::proxy::{Call, Fault, Proxy};
use crate::support::*;
use auth::aws::SdkSettings;
use auth::clock::Clock;
use auth::handlers::login::Login;
use auth::handlers::{account, admin, login, logout, refresh, register};
use auth::passwords::{BcryptCost, PasswordHasher};
use auth::sessions::RefreshToken;
use auth::store::Store;
use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt as _};
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use serde_json::json;

const FAULTS: [Fault; 6] = [
    Fault::Dropped,
    Fault::Hang,
    Fault::Throttled,
    Fault::Cancelled,
    Fault::Lost,
    Fault::LostOnce,
];

/// Cells run side by side.
const CELLS_AT_ONCE: usize = 8;

/// Short enough that a hanging call ends its request soon, long enough that
/// a loaded machine's DynamoDB Local does not time out a call nobody faulted
/// (a write that committed behind such a timeout, with its read-back then
/// faulted, looks like a change behind a 503).
fn short_timeouts() -> SdkSettings {
    SdkSettings {
        attempt_timeout: Duration::from_millis(800),
        operation_timeout: Duration::from_secs(2),
        max_attempts: 3,
        trust: auth::trust::TrustRoots::Amazon,
    }
}

pub(crate) type Items = HashMap<(String, String), HashMap<String, AttributeValue>>;

/// Every item of `table`, by key (read consistently, page after page).
pub(crate) async fn snapshot(table: &str) -> Items {
    let client = local_client().await;
    let mut items = Items::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let key = (
                item["pk"].as_s().unwrap().clone(),
                item["sk"].as_s().unwrap().clone(),
            );
            items.insert(key, item.clone());
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A device record's own attempt count.
const DEVICE_COUNT: [&str; 5] = [
    "failures",
    "last_failure",
    "locked_until",
    "last_attempt",
    "failures_expire_at",
];

fn is_counter(pk: &str) -> bool {
    pk.starts_with("LOCK#") || pk.starts_with("RATE#")
}

/// The invariants; returns what is wrong. `unconfirmed`: the request's
/// write and its read-back both failed, so its change may be live behind
/// its 5xx (it must be whole, as every other check asks).
fn violations(
    before: &Items,
    after: &Items,
    status: u16,
    proved: bool,
    unconfirmed: bool,
) -> Vec<String> {
    let mut wrong = Vec::new();
    if status >= 500 && !unconfirmed {
        for (key, item) in before {
            if is_counter(&key.0) {
                continue;
            }
            // A device record's own attempt count may go up, as a
            // username's, and so may a second factor's and a login
            // ticket's count of codes; nothing else of them may change.
            let uncounted = |i: &HashMap<String, AttributeValue>| {
                let mut i = i.clone();
                if key.0.starts_with("DEVICE#") {
                    for field in DEVICE_COUNT {
                        i.remove(field);
                    }
                }
                if key.0.starts_with("FACTOR#") || key.0.starts_with("MFA#") {
                    i.remove("failures");
                }
                i
            };
            if after.get(key).map(uncounted) != Some(uncounted(item)) {
                wrong.push(format!("{key:?} changed behind a {status}"));
            }
        }
        for key in after.keys() {
            if !before.contains_key(key) && !is_counter(&key.0) {
                wrong.push(format!("{key:?} created behind a {status}"));
            }
        }
    }
    for (key, item) in before {
        let counter = match key.0.split('#').next() {
            Some("LOCK" | "DEVICE" | "FACTOR" | "MFA") => "failures",
            Some("RATE") => "hits",
            _ => continue,
        };
        let now = after.get(key).map(|i| number(i, counter));
        // Cleared by a success: one answered, or one that may have happened
        // (a device record is retired by the sign-in it vouched for).
        let cleared_by_success =
            counter == "failures" && (proved || unconfirmed) && now.is_none_or(|n| n == 0);
        if !cleared_by_success && now.is_none_or(|n| n < number(item, counter)) {
            wrong.push(format!("{key:?} {counter} went down behind a {status}"));
        }
    }
    let mut live: HashMap<String, usize> = HashMap::new();
    let mut tokens: HashMap<String, usize> = HashMap::new();
    for ((pk, _), item) in after {
        if pk.starts_with("REFRESH#") {
            let sid = item["session_id"].as_s().unwrap().clone();
            *tokens.entry(sid.clone()).or_default() += 1;
            if item["token_state"].as_s().unwrap() == "active" {
                *live.entry(sid).or_default() += 1;
            }
        }
    }
    for (pk, _) in after.keys() {
        if let Some(sid) = pk.strip_prefix("SESSION#")
            && !tokens.contains_key(sid)
        {
            wrong.push(format!("session {sid} has no refresh token"));
        }
    }
    for (sid, count) in &tokens {
        if !after.contains_key(&(format!("SESSION#{sid}"), "SESSION".to_owned())) {
            wrong.push(format!(
                "{count} refresh token(s) of a missing session {sid}"
            ));
        }
    }
    for (sid, count) in live {
        if count > 1 {
            wrong.push(format!("session {sid} has {count} live refresh tokens"));
        }
    }
    wrong
}

/// One handler's request, set up on a fresh table through the direct store,
/// then run through `store` (the proxy's).
#[derive(Clone, Copy, Debug)]
enum Scenario {
    LoginWithRehash,
    /// A login whose device proof vouches (after two failures of its own).
    LoginWithDevice,
    LoginWrongPassword,
    Register,
    Refresh,
    LogoutWithAnotherSession,
    LogoutEverywhere,
    /// The user's list of sessions (a read only).
    ListSessions,
    /// The user ends another session of theirs (`DELETE /sessions/{id}`).
    EndSession,
    ChangePassword,
    Reauthenticate,
    DeleteAccount,
    /// An admin ("chief") acts on the user.
    Admin(AdminAct),
    /// A reset asked for by the user's address (`POST /password/reset`).
    RequestReset,
    /// A reset by the mailed link's token (`POST /password/reset/confirm`).
    ConfirmReset,
    /// A new address given (`PUT /account/email`).
    GiveEmail,
    /// The new address verified by its link (`POST /account/email/verify`).
    VerifyEmail,
    /// The password of a user with a second factor: 401 `mfa_required`.
    LoginWithSecondFactor,
    /// The second step with a code (`POST /login/second-factor`).
    SecondStep,
    /// An enrolment begun (`POST /account/second-factor`).
    BeginSecondFactor,
    /// An enrolment confirmed by a code (`POST /account/second-factor/confirm`).
    ConfirmSecondFactor,
}

/// Gives `username` a second factor through the store, its last accepted
/// step a few ago; its secret. With `active` false, the enrolment waits.
pub(crate) async fn factor_directly(
    store: &Store,
    username: &str,
    active: bool,
) -> auth::totp::TotpSecret {
    factor_of_session(store, username, active, None).await
}

/// `factor_directly`, the enrolment begun in session `sid`.
pub(crate) async fn factor_of_session(
    store: &Store,
    username: &str,
    active: bool,
    sid: Option<&str>,
) -> auth::totp::TotpSecret {
    use auth::mfa::Factor;
    let name = auth::users::Username::parse(username).unwrap();
    let user = store.get(&name).await.unwrap().unwrap();
    let now = auth::clock::system_now();
    let secret = auth::totp::TotpSecret::generate();
    let factor = Factor::pending(
        user.id,
        sid.unwrap_or("none"),
        test_secret_box().seal(&user.id, &secret),
        now,
    );
    assert!(store.put_pending_factor(&factor).await.unwrap());
    if active {
        let codes = auth::second_factor::RecoveryCodes::generate();
        let step = auth::totp::step_of(now) - 5;
        store
            .confirm_factor(&user, &factor, step, &codes.hashes(&user.id))
            .await
            .unwrap();
    }
    secret
}

/// `secret`'s code now.
fn code_now(secret: &auth::totp::TotpSecret) -> String {
    let step = auth::totp::step_of(auth::clock::system_now());
    secret.code_at(step).unwrap().expose().to_owned()
}

/// The matrix user's verified address, and the one it moves to.
const ADDRESS: &str = "matrix@example.com";
const NEW_ADDRESS: &str = "matrix-new@example.com";

/// Makes `address` `username`'s verified address through the store (its
/// verification job left in the table, as the stream would have run it).
pub(crate) async fn verify_directly(
    store: &Store,
    username: &str,
    address: &str,
) -> auth::users::User {
    use auth::tickets::{LinkToken, Proof, Purpose, Ticket};
    let name = auth::users::Username::parse(username).unwrap();
    let email = auth::email::Email::parse(address).unwrap();
    let now = auth::clock::system_now();
    let user = store.get(&name).await.unwrap().unwrap();
    assert!(store.set_pending_email(&user, &email, now).await.unwrap());
    let user = store.get(&name).await.unwrap().unwrap();
    let (ticket, secrets) = Ticket::issue(Purpose::VerifyEmail, &user, email, now);
    store.put_ticket(&ticket).await.unwrap();
    let proof = Proof::Link(LinkToken::parse(&secrets.link).unwrap());
    let verified = store
        .verify_email(&user, &ticket, &proof, now)
        .await
        .unwrap();
    assert_eq!(verified, auth::store::Verified::Done);
    store.get(&name).await.unwrap().unwrap()
}

/// A ticket of `purpose` for `username`, stored; its link's token and code.
async fn ticket_for(
    store: &Store,
    username: &str,
    purpose: auth::tickets::Purpose,
    address: &str,
) -> (String, String) {
    let name = auth::users::Username::parse(username).unwrap();
    let user = store.get(&name).await.unwrap().unwrap();
    let email = auth::email::Email::parse(address).unwrap();
    let (ticket, secrets) =
        auth::tickets::Ticket::issue(purpose, &user, email, auth::clock::system_now());
    store.put_ticket(&ticket).await.unwrap();
    (secrets.link, secrets.code)
}

/// The admin API's acts that write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AdminAct {
    Deactivate,
    Delete,
    Grant,
    Revoke,
    Unlock,
    EndSessions,
    SetPassword,
    /// A new user, "newcomer" (`POST /admin/users`).
    Create,
    /// The user's lost second factor removed.
    RemoveSecondFactor,
}

impl AdminAct {
    /// Its method, path and body, on the user "matrix".
    fn request(self) -> (Method, &'static str, Option<&'static str>) {
        match self {
            AdminAct::Deactivate => (
                Method::PATCH,
                "/admin/users/matrix",
                Some(r#"{"active": false}"#),
            ),
            AdminAct::Delete => (Method::DELETE, "/admin/users/matrix", None),
            AdminAct::Grant => (Method::PUT, "/admin/users/matrix/roles/support", None),
            AdminAct::Revoke => (Method::DELETE, "/admin/users/matrix/roles/support", None),
            AdminAct::Unlock => (Method::DELETE, "/admin/users/matrix/lock", None),
            AdminAct::EndSessions => (Method::DELETE, "/admin/users/matrix/sessions", None),
            AdminAct::SetPassword => (
                Method::PUT,
                "/admin/users/matrix/password",
                Some(r#"{"new_password": "an operator's new passphrase"}"#),
            ),
            AdminAct::RemoveSecondFactor => {
                (Method::DELETE, "/admin/users/matrix/second-factor", None)
            }
            AdminAct::Create => (
                Method::POST,
                "/admin/users",
                Some(r#"{"username": "newcomer", "password": "a long enough one", "name": "N"}"#),
            ),
        }
    }
}

const SCENARIOS: [Scenario; 29] = [
    Scenario::LoginWithRehash,
    Scenario::LoginWithDevice,
    Scenario::LoginWrongPassword,
    Scenario::Register,
    Scenario::Refresh,
    Scenario::LogoutWithAnotherSession,
    Scenario::LogoutEverywhere,
    Scenario::ListSessions,
    Scenario::EndSession,
    Scenario::ChangePassword,
    Scenario::Reauthenticate,
    Scenario::DeleteAccount,
    Scenario::Admin(AdminAct::Deactivate),
    Scenario::Admin(AdminAct::Delete),
    Scenario::Admin(AdminAct::Grant),
    Scenario::Admin(AdminAct::Revoke),
    Scenario::Admin(AdminAct::Unlock),
    Scenario::Admin(AdminAct::EndSessions),
    Scenario::Admin(AdminAct::SetPassword),
    Scenario::Admin(AdminAct::Create),
    Scenario::Admin(AdminAct::RemoveSecondFactor),
    Scenario::RequestReset,
    Scenario::ConfirmReset,
    Scenario::GiveEmail,
    Scenario::VerifyEmail,
    Scenario::LoginWithSecondFactor,
    Scenario::SecondStep,
    Scenario::BeginSecondFactor,
    Scenario::ConfirmSecondFactor,
];

impl Scenario {
    /// The status it gets when nothing fails.
    fn normal(self) -> u16 {
        match self {
            Scenario::LoginWrongPassword | Scenario::LoginWithSecondFactor => 401,
            Scenario::Register
            | Scenario::Admin(AdminAct::Create)
            | Scenario::BeginSecondFactor => 201,
            Scenario::RequestReset | Scenario::GiveEmail => 202,
            _ => 200,
        }
    }

    /// Sets up on `direct`; returns the request to send.
    async fn prepare(self, direct: &Store) -> Request {
        let app = App::with_clock(direct, Clock::system());
        user_in(direct, "matrix").await;
        // A verified address: the acts that tell the user mail it.
        verify_directly(direct, "matrix", ADDRESS).await;
        // Earlier failures, so that a lost or reset count would show.
        for _ in 0..2 {
            log_in(&app, "matrix", "wrong").await;
        }
        let body = |value: serde_json::Value| Some(value.to_string());
        let (name, auth, body) = match self {
            Scenario::LoginWithRehash | Scenario::LoginWrongPassword => {
                let password = match self {
                    Scenario::LoginWithRehash => PASSWORD,
                    _ => "another wrong guess",
                };
                (
                    "login.json",
                    None,
                    body(json!({"username": "matrix", "password": password})),
                )
            }
            Scenario::LoginWithDevice => {
                let signed_in = log_in(&app, "matrix", PASSWORD).await;
                let device = body_json(&signed_in)["device"].as_str().unwrap().to_owned();
                // Failures of a stranger's (on the username) and of the
                // device's own, so that a count cleared wrongly would show.
                for guess in [None, None, Some(&device), Some(&device)] {
                    let mut wrong = json!({"username": "matrix", "password": "wrong"});
                    if let Some(device) = guess {
                        wrong["device"] = device.as_str().into();
                    }
                    let req = request("login.json", None, body(wrong).as_deref());
                    login::handle(&app.login(), req).await;
                }
                (
                    "login.json",
                    None,
                    body(json!({"username": "matrix", "password": PASSWORD, "device": device})),
                )
            }
            Scenario::Register => (
                "register.json",
                None,
                body(
                    json!({"username": "newcomer", "password": "a long passphrase", "name": "N", "email": "newcomer@example.com"}),
                ),
            ),
            Scenario::RequestReset
            | Scenario::ConfirmReset
            | Scenario::GiveEmail
            | Scenario::VerifyEmail => {
                use auth::tickets::Purpose;
                let (method, path, auth, body) = match self {
                    Scenario::RequestReset => (
                        Method::POST,
                        "/password/reset",
                        None,
                        json!({"email": ADDRESS}),
                    ),
                    Scenario::ConfirmReset => {
                        // By code and address (the link's path is recovery.rs's).
                        let (_, code) = ticket_for(direct, "matrix", Purpose::Reset, ADDRESS).await;
                        let body = json!({"email": ADDRESS, "code": code, "new_password": "a reset passphrase"});
                        (Method::POST, "/password/reset/confirm", None, body)
                    }
                    Scenario::GiveEmail => {
                        let current = session(&app, "matrix").await;
                        let body = json!({"email": NEW_ADDRESS});
                        (
                            Method::PUT,
                            "/account/email",
                            Some(bearer(&current.access)),
                            body,
                        )
                    }
                    _ => {
                        let user = direct
                            .get(&auth::users::Username::parse("matrix").unwrap())
                            .await
                            .unwrap()
                            .unwrap();
                        let new = auth::email::Email::parse(NEW_ADDRESS).unwrap();
                        assert!(
                            direct
                                .set_pending_email(&user, &new, auth::clock::system_now())
                                .await
                                .unwrap()
                        );
                        let (token, _) =
                            ticket_for(direct, "matrix", Purpose::VerifyEmail, NEW_ADDRESS).await;
                        (
                            Method::POST,
                            "/account/email/verify",
                            None,
                            json!({"token": token}),
                        )
                    }
                };
                return crate::recovery::call(method, path, auth.as_deref(), Some(body));
            }
            Scenario::LoginWithSecondFactor
            | Scenario::SecondStep
            | Scenario::BeginSecondFactor
            | Scenario::ConfirmSecondFactor => {
                // Boxed: this function's frame is large enough already.
                Box::pin(self.prepare_second_factor(direct, &app)).await
            }
            Scenario::Refresh => {
                let tokens = session(&app, "matrix").await;
                (
                    "refresh.json",
                    None,
                    body(json!({"refresh_token": tokens.refresh})),
                )
            }
            Scenario::LogoutWithAnotherSession => {
                let current = session(&app, "matrix").await;
                let other = session(&app, "matrix").await;
                (
                    "logout.json",
                    Some(bearer(&current.access)),
                    body(json!({"refresh_token": other.refresh})),
                )
            }
            Scenario::LogoutEverywhere => {
                let current: Tokens = session(&app, "matrix").await;
                (
                    "logout.json",
                    Some(bearer(&current.access)),
                    body(json!({"all": true})),
                )
            }
            Scenario::ListSessions => {
                let current = session(&app, "matrix").await;
                session(&app, "matrix").await;
                ("sessions.json", Some(bearer(&current.access)), None)
            }
            Scenario::EndSession => {
                let current = session(&app, "matrix").await;
                let other = session(&app, "matrix").await;
                let mut req = request("end-session.json", Some(&bearer(&current.access)), None);
                *req.uri_mut() =
                    format!("/sessions/{}", crate::session_list::sid_of(&other.access))
                        .parse()
                        .unwrap();
                return req;
            }
            Scenario::ChangePassword => {
                let current = session(&app, "matrix").await;
                (
                    "password.json",
                    Some(bearer(&current.access)),
                    body(json!({"current_password": PASSWORD, "new_password": "a new passphrase"})),
                )
            }
            Scenario::Reauthenticate | Scenario::DeleteAccount => {
                let current = session(&app, "matrix").await;
                // Earlier failures, so that the clearing shows.
                log_in(&app, "matrix", "wrong").await;
                let name = match self {
                    Scenario::Reauthenticate => "reauthenticate.json",
                    _ => "delete-account.json",
                };
                (
                    name,
                    Some(bearer(&current.access)),
                    body(json!({"password": PASSWORD})),
                )
            }
            Scenario::Admin(act) => {
                crate::permissions::admin_in(direct, "chief").await;
                let chief = session(&app, "chief").await;
                let target = direct
                    .get(&auth::users::Username::parse("matrix").unwrap())
                    .await
                    .unwrap()
                    .unwrap();
                if act == AdminAct::Revoke {
                    let support = auth::permissions::Role::parse("support").unwrap();
                    direct.grant_role(&target, &support).await.unwrap();
                }
                // A session of the user, for the acts that end it.
                session(&app, "matrix").await;
                log_in(&app, "matrix", "wrong").await;
                // A second factor to remove, once the session began.
                if act == AdminAct::RemoveSecondFactor {
                    factor_directly(direct, "matrix", true).await;
                }
                let (method, path, body) = act.request();
                let mut req = request("admin-user.json", Some(&bearer(&chief.access)), body);
                *req.method_mut() = method;
                *req.uri_mut() = path.parse().unwrap();
                return req;
            }
        };
        request(name, auth.as_deref(), body.as_deref())
    }

    /// `prepare`'s second-factor scenarios: the request's event, its
    /// authorization and its body.
    async fn prepare_second_factor(
        self,
        direct: &Store,
        app: &App,
    ) -> (&'static str, Option<String>, Option<String>) {
        let body = |value: serde_json::Value| Some(value.to_string());
        match self {
            Scenario::LoginWithSecondFactor => {
                factor_directly(direct, "matrix", true).await;
                (
                    "login.json",
                    None,
                    body(json!({"username": "matrix", "password": PASSWORD})),
                )
            }
            Scenario::SecondStep => {
                let secret = factor_directly(direct, "matrix", true).await;
                let asked = log_in(app, "matrix", PASSWORD).await;
                let token = body_json(&asked)["mfa_token"].as_str().unwrap().to_owned();
                // A wrong code first, so that a count cleared wrongly would show.
                let wrong = json!({"mfa_token": token, "code": "000000"}).to_string();
                let req = request("login-second-factor.json", None, Some(&wrong));
                Box::pin(auth::handlers::second_factor::handle(
                    &app.second_factor(),
                    req,
                ))
                .await;
                (
                    "login-second-factor.json",
                    None,
                    body(json!({"mfa_token": token, "code": code_now(&secret)})),
                )
            }
            Scenario::BeginSecondFactor => {
                let current = session(app, "matrix").await;
                ("second-factor.json", Some(bearer(&current.access)), None)
            }
            Scenario::ConfirmSecondFactor => {
                let current = session(app, "matrix").await;
                let sid = crate::session_list::sid_of(&current.access);
                let secret = factor_of_session(direct, "matrix", false, Some(&sid)).await;
                (
                    "second-factor-confirm.json",
                    Some(bearer(&current.access)),
                    body(json!({"code": code_now(&secret)})),
                )
            }
            _ => unreachable!("not a second-factor scenario"),
        }
    }

    /// What a success must have left in the store (`before` and `after`
    /// the request): the effect itself, not only the absence of damage.
    /// Returns what is missing.
    fn effect(self, before: &Items, after: &Items, response: &Response<Body>) -> Vec<String> {
        let mut missing = Vec::new();
        let mut expect = |holds: bool, what: &str| {
            if !holds {
                missing.push(format!("no effect: {what}"));
            }
        };
        let item =
            |items: &Items, pk: &str, sk: &str| items.get(&(pk.to_owned(), sk.to_owned())).cloned();
        let user_before = item(before, "USER#matrix", "PROFILE").unwrap();
        let user_after = item(after, "USER#matrix", "PROFILE");
        let json = body_json(response);
        // The refresh token the answer carries is stored, live, with a live
        // session of the user.
        let issued_is_live = || {
            let raw = json["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let pk = format!("REFRESH#{}", RefreshToken::presented(raw).hash());
            item(after, &pk, "REFRESH").is_some_and(|token| {
                let sid = token["session_id"].as_s().unwrap();
                token["token_state"].as_s().unwrap() == "active"
                    && item(after, &format!("SESSION#{sid}"), "SESSION")
                        .is_some_and(|s| s["revoked"] == AttributeValue::Bool(false))
            })
        };
        let epoch = |user: &HashMap<String, AttributeValue>| number(user, "session_epoch");
        // The device proof the answer carries is stored, for this user.
        let device_issued = || {
            let raw = json["device"].as_str().unwrap_or_default().to_owned();
            let pk = format!("DEVICE#{}", RefreshToken::presented(raw).hash());
            item(after, &pk, "DEVICE")
                .is_some_and(|d| d["username"].as_s().is_ok_and(|u| u == "matrix"))
        };
        let sessions = |items: &Items, revoked: bool| {
            items
                .iter()
                .filter(|((pk, _), i)| {
                    pk.starts_with("SESSION#") && i["revoked"] == AttributeValue::Bool(revoked)
                })
                .count()
        };
        let lock_cleared = item(after, "LOCK#matrix", "LOGIN").is_none();
        // A mail job the act asked for, in its own transaction.
        let jobs = |items: &Items| {
            items
                .keys()
                .filter(|(pk, _)| pk.starts_with("MAIL#"))
                .count()
        };
        let one_more_job = jobs(after) == jobs(before) + 1;
        let claimed = |items: &Items, address: &str| {
            item(items, &format!("EMAIL#{address}"), "EMAIL").is_some()
        };
        let told = matches!(
            self,
            Scenario::LoginWithRehash
                | Scenario::Register
                | Scenario::ChangePassword
                | Scenario::DeleteAccount
                | Scenario::Admin(
                    AdminAct::Delete | AdminAct::SetPassword | AdminAct::RemoveSecondFactor
                )
                | Scenario::RequestReset
                | Scenario::ConfirmReset
                | Scenario::GiveEmail
                | Scenario::VerifyEmail
                | Scenario::SecondStep
                | Scenario::ConfirmSecondFactor
        );
        expect(
            one_more_job == told,
            "a mail job exactly where the act tells someone",
        );
        let tickets = |items: &Items| {
            items
                .keys()
                .filter(|(pk, _)| pk.starts_with("MFA#"))
                .count()
        };
        let factor = |items: &Items| {
            items
                .iter()
                .find(|((pk, _), _)| pk.starts_with("FACTOR#"))
                .map(|(_, i)| i.clone())
        };
        let factor_state =
            |items: &Items| factor(items).map(|f| f["state"].as_s().unwrap().clone());
        match self {
            Scenario::LoginWithSecondFactor => {
                expect(
                    tickets(after) == tickets(before) + 1 && json["mfa_token"].is_string(),
                    "the login's ticket",
                );
                expect(lock_cleared, "the attempt record cleared");
                expect(
                    !after.keys().any(|(pk, _)| pk.starts_with("SESSION#"))
                        || sessions(after, false) == sessions(before, false),
                    "no session yet",
                );
            }
            Scenario::SecondStep => {
                expect(issued_is_live(), "the new session and its refresh token");
                expect(device_issued(), "a device proof");
                expect(lock_cleared, "the attempt record cleared");
                expect(tickets(after) == 0, "the ticket used up");
                let (old, new) = (factor(before).unwrap(), factor(after).unwrap());
                expect(
                    number(&new, "last_step") > number(&old, "last_step")
                        && number(&new, "failures") == 0,
                    "the code's step spent, the factor's count cleared",
                );
            }
            Scenario::BeginSecondFactor => expect(
                factor_state(after).as_deref() == Some("pending") && json["secret"].is_string(),
                "a pending factor",
            ),
            Scenario::ConfirmSecondFactor => {
                expect(
                    factor_state(after).as_deref() == Some("active")
                        && factor(after)
                            .is_some_and(|f| f["recovery"].as_ss().is_ok_and(|r| r.len() == 10))
                        && json["recovery_codes"]
                            .as_array()
                            .is_some_and(|r| r.len() == 10),
                    "the factor active, its recovery codes",
                );
                expect(
                    user_after.is_some_and(|u| {
                        u.get("second_factor") == Some(&AttributeValue::Bool(true))
                    }),
                    "the user's flag set",
                );
            }
            Scenario::LoginWithRehash => {
                expect(issued_is_live(), "the new session and its refresh token");
                expect(lock_cleared, "the attempt record cleared");
                expect(device_issued(), "a device proof");
            }
            Scenario::LoginWithDevice => {
                expect(issued_is_live(), "the new session and its refresh token");
                expect(device_issued(), "the next device proof");
                // The proof that vouched ends within a minute (its grace).
                let retired = before
                    .iter()
                    .filter(|((pk, _), _)| pk.starts_with("DEVICE#"))
                    .all(|(key, old)| {
                        after.get(key).is_some_and(|now| {
                            number(now, "expires_at") < number(old, "expires_at")
                                && number(now, "expires_at") <= auth::clock::system_now() + 61
                        })
                    });
                expect(retired, "the proof that vouched retired");
                expect(
                    item(after, "LOCK#matrix", "LOGIN") == item(before, "LOCK#matrix", "LOGIN"),
                    "the username's count untouched",
                );
            }
            Scenario::LoginWrongPassword => {
                let count = |items: &Items| {
                    item(items, "LOCK#matrix", "LOGIN").map(|i| number(&i, "failures"))
                };
                expect(
                    count(after) == count(before).map(|c| c + 1),
                    "the attempt counted",
                );
            }
            Scenario::Register | Scenario::Admin(AdminAct::Create) => {
                let id = json["id"]
                    .as_str()
                    .or(json["user"]["id"].as_str())
                    .unwrap_or_default();
                expect(
                    item(after, "USER#newcomer", "PROFILE")
                        .is_some_and(|u| u["user_id"].as_s().is_ok_and(|v| v == id)),
                    "the new user",
                );
            }
            Scenario::Refresh => {
                expect(issued_is_live(), "the successor refresh token");
                let tokens = |items: &Items| {
                    items
                        .keys()
                        .filter(|(pk, _)| pk.starts_with("REFRESH#"))
                        .count()
                };
                expect(tokens(after) == tokens(before) + 1, "one token more");
            }
            Scenario::LogoutWithAnotherSession => {
                expect(
                    sessions(before, false) == 2 && sessions(after, false) == 0,
                    "both sessions revoked",
                );
            }
            Scenario::ListSessions => {
                let listed = json["sessions"].as_array().map_or(0, Vec::len);
                expect(
                    listed == sessions(after, false) && listed == 2,
                    "both live sessions listed",
                );
            }
            Scenario::EndSession => {
                expect(
                    sessions(before, false) == 2
                        && sessions(after, false) == 1
                        && sessions(after, true) == sessions(before, true) + 1,
                    "the one session revoked",
                );
            }
            Scenario::LogoutEverywhere => {
                // By one, or more: an `ADD` whose answer was lost adds
                // again when the SDK retries it, and every session has
                // ended all the same.
                expect(
                    user_after.is_some_and(|u| epoch(&u) > epoch(&user_before)),
                    "the epoch moved on",
                );
            }
            Scenario::ChangePassword => {
                expect(
                    user_after.is_some_and(|u| {
                        epoch(&u) == epoch(&user_before) + 1
                            && u["password_hash"] != user_before["password_hash"]
                    }),
                    "the new hash, the epoch moved on",
                );
                expect(issued_is_live(), "the caller's new session");
                expect(lock_cleared, "the attempt record cleared");
                expect(device_issued(), "the caller's new device proof");
            }
            Scenario::Reauthenticate => {
                let proved = |items: &Items| {
                    items
                        .iter()
                        .filter(|((pk, _), _)| pk.starts_with("SESSION#"))
                        .map(|(_, i)| number(i, "auth_time"))
                        .max()
                        .unwrap_or(0)
                };
                expect(json["access_token"].is_string(), "a new access token");
                expect(proved(after) >= proved(before), "the session's new proof");
                expect(lock_cleared, "the attempt record cleared");
            }
            Scenario::DeleteAccount | Scenario::Admin(AdminAct::Delete) => {
                expect(user_after.is_none(), "the user deleted");
                expect(lock_cleared, "the attempt record deleted");
                expect(!claimed(after, ADDRESS), "the address released");
            }
            Scenario::RequestReset => {}
            Scenario::ConfirmReset => {
                expect(
                    user_after.is_some_and(|u| {
                        epoch(&u) == epoch(&user_before) + 1
                            && u["password_hash"] != user_before["password_hash"]
                    }),
                    "the new hash, the epoch moved on",
                );
                expect(lock_cleared, "the attempt record cleared");
                expect(
                    !after.keys().any(|(pk, _)| pk.starts_with("TICKET#reset#")),
                    "the ticket used up",
                );
            }
            Scenario::GiveEmail => expect(
                user_after.is_some_and(|u| {
                    u.get("email_pending")
                        .and_then(|e| e.as_s().ok())
                        .map(String::as_str)
                        == Some(NEW_ADDRESS)
                }),
                "the address waits for its verification",
            ),
            Scenario::VerifyEmail => {
                expect(
                    user_after.is_some_and(|u| {
                        u.get("email")
                            .and_then(|e| e.as_s().ok())
                            .map(String::as_str)
                            == Some(NEW_ADDRESS)
                            && !u.contains_key("email_pending")
                    }),
                    "the new address verified",
                );
                expect(
                    claimed(after, NEW_ADDRESS) && !claimed(after, ADDRESS),
                    "the new address claimed, the old released",
                );
            }
            Scenario::Admin(act) => {
                let user = user_after.unwrap_or_default();
                let roles = |u: &HashMap<String, AttributeValue>| {
                    u.get("roles")
                        .and_then(|r| r.as_ss().ok())
                        .cloned()
                        .unwrap_or_default()
                };
                let support = roles(&user).contains(&"support".to_owned());
                let ended = number(&user, "session_epoch") > epoch(&user_before);
                match act {
                    AdminAct::Deactivate => expect(
                        user.get("active") == Some(&AttributeValue::Bool(false)) && ended,
                        "deactivated, every session ended",
                    ),
                    AdminAct::Grant => expect(support, "the role granted"),
                    AdminAct::Revoke => expect(!support, "the role revoked"),
                    AdminAct::Unlock => expect(lock_cleared, "the attempt record deleted"),
                    AdminAct::EndSessions => expect(ended, "every session ended"),
                    AdminAct::RemoveSecondFactor => expect(
                        ended && !user.contains_key("second_factor") && factor(after).is_none(),
                        "the factor and the flag gone, every session ended",
                    ),
                    AdminAct::SetPassword => expect(
                        ended
                            && lock_cleared
                            && user.get("password_hash") != user_before.get("password_hash"),
                        "a new hash, every session ended, the attempt record deleted",
                    ),
                    AdminAct::Delete | AdminAct::Create => unreachable!("above"),
                }
            }
        }
        missing
    }

    /// The write that is the request's change, which it reads back when
    /// its answer is lost; `None` for a request that changes nothing but
    /// counters.
    fn write(self) -> Option<Call> {
        Some(match self {
            Scenario::LoginWrongPassword | Scenario::ListSessions => return None,
            Scenario::Register | Scenario::Admin(AdminAct::Create) => Call::Nth("putitem", 1),
            Scenario::LogoutEverywhere => Call::Nth("updateitem", 1),
            Scenario::Admin(AdminAct::Unlock) => Call::Nth("deleteitem", 1),
            Scenario::Admin(
                AdminAct::Delete | AdminAct::SetPassword | AdminAct::RemoveSecondFactor,
            ) => Call::Nth("transactwriteitems", 1),
            Scenario::Admin(_) => Call::Nth("updateitem", 1),
            Scenario::RequestReset | Scenario::BeginSecondFactor => Call::Nth("putitem", 1),
            // After the code's reservation.
            Scenario::SecondStep | Scenario::ConfirmSecondFactor => {
                Call::Nth("transactwriteitems", 2)
            }
            _ => Call::Nth("transactwriteitems", 1),
        })
    }

    /// The function (binary) that serves it.
    fn function(self) -> &'static str {
        match self {
            Scenario::LoginWithRehash
            | Scenario::LoginWithDevice
            | Scenario::LoginWrongPassword
            | Scenario::LoginWithSecondFactor => "login",
            Scenario::SecondStep | Scenario::BeginSecondFactor | Scenario::ConfirmSecondFactor => {
                "second-factor"
            }
            Scenario::Register => "register",
            Scenario::Refresh => "refresh",
            Scenario::LogoutWithAnotherSession
            | Scenario::LogoutEverywhere
            | Scenario::ListSessions
            | Scenario::EndSession => "logout",
            Scenario::ChangePassword
            | Scenario::Reauthenticate
            | Scenario::DeleteAccount
            | Scenario::GiveEmail
            | Scenario::VerifyEmail => "password",
            Scenario::Admin(_) => "admin",
            Scenario::RequestReset | Scenario::ConfirmReset => "recovery",
        }
    }

    async fn run(self, store: &Store, req: Request) -> Response<Body> {
        let app = App::new(store);
        match self {
            Scenario::LoginWithDevice | Scenario::LoginWithSecondFactor => {
                login::handle(&app.login(), req).await
            }
            Scenario::SecondStep | Scenario::BeginSecondFactor | Scenario::ConfirmSecondFactor => {
                Box::pin(auth::handlers::second_factor::handle(
                    &app.second_factor(),
                    req,
                ))
                .await
            }
            Scenario::LoginWithRehash | Scenario::LoginWrongPassword => {
                // A stronger configured cost: a successful login also rehashes.
                let state = Login {
                    passwords: PasswordHasher::new(BcryptCost::new(11).unwrap()),
                    ..app.login()
                };
                login::handle(&state, req).await
            }
            Scenario::Register => register::handle(&app.register(), req).await,
            Scenario::Refresh => refresh::handle(&app.refresh(), req).await,
            Scenario::LogoutWithAnotherSession
            | Scenario::LogoutEverywhere
            | Scenario::ListSessions
            | Scenario::EndSession => logout::handle(&app.logout(), req).await,
            Scenario::ChangePassword
            | Scenario::Reauthenticate
            | Scenario::DeleteAccount
            | Scenario::GiveEmail
            | Scenario::VerifyEmail => account::handle(&app.account(), req).await,
            Scenario::Admin(_) => admin::handle(&app.admin(), req).await,
            Scenario::RequestReset | Scenario::ConfirmReset => {
                auth::handlers::recovery::handle(&crate::recovery::recovery_state(&app), req).await
            }
        }
    }
}

/// Runs `test` as `#[tokio::test(flavor = "multi_thread")]` would, on
/// threads with 16 MiB stacks: a debug build's poll of the matrix's
/// futures (every scenario's setup and every handler, unoptimised) takes
/// more than a test thread's 2 MiB.
fn on_large_stacks<Fut: std::future::Future<Output = ()> + 'static>(test: fn() -> Fut) {
    const STACK: usize = 16 << 20;
    let thread = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .thread_stack_size(STACK)
                .enable_all()
                .build()
                .unwrap()
                .block_on(test())
        });
    if let Err(panic) = thread.unwrap().join() {
        std::panic::resume_unwind(panic);
    }
}

/// One cell: the faults to inject, each on the operation it names.
type Faults = Vec<(Call, Fault)>;

/// What a case came to: the operations the proxy saw, what is wrong, and
/// the answer.
struct Outcome {
    operations: Vec<String>,
    /// The partition key of every item the handler's requests named.
    keys: Vec<String>,
    wrong: Vec<String>,
    response: Response<Body>,
}

/// Runs `scenario` through a proxy that injects `faults` (and, with `hot`,
/// throttles every request naming that key); checks the store against the
/// invariants, the effect of a success, and that every fault fired.
async fn case(scenario: Scenario, faults: Faults, hot: Option<&'static str>) -> Outcome {
    let direct = fresh_store().await;
    // Boxed: every scenario's setup in one future is too large for a
    // thread's stack.
    let req = Box::pin(scenario.prepare(&direct)).await;
    let proxy = Proxy::to_dynamodb().await;
    for (call, fault) in &faults {
        proxy.fail(call.clone(), *fault);
    }
    if let Some(key) = hot {
        proxy.fail(Call::Naming(key), Fault::Throttled);
    }
    let client = client_for(&proxy.endpoint, &short_timeouts()).await;
    let store = Store::new(client, direct.table());
    let before = snapshot(direct.table()).await;
    let response = Box::pin(scenario.run(&store, req)).await;
    let status = response.status().as_u16();
    let after = snapshot(direct.table()).await;
    // Two faults: the write done but its answer lost, and the read-back
    // that would tell failing too. Nothing can confirm the change: 503.
    let unconfirmed = faults.len() == 2;
    // A proof that held: a success, or a password that asks for the
    // second factor next (its attempt record cleared).
    let proved =
        status == 200 || (status == 401 && body_json(&response)["error"] == "mfa_required");
    let mut wrong = violations(&before, &after, status, proved, unconfirmed);
    if unconfirmed && status != 503 {
        wrong.push(format!(
            "unconfirmed, yet {status}: {}",
            body_json(&response)
        ));
    }
    if status != scenario.normal() && status != 503 {
        wrong.push(format!("status {status}: {}", body_json(&response)));
    }
    if status == 503 {
        assert_error(&response, 503, "service_unavailable");
    }
    if status == scenario.normal() {
        wrong.extend(scenario.effect(&before, &after, &response));
    }
    for (call, fault) in &faults {
        if !proxy.fired_on(call, *fault) {
            wrong.push(format!("{fault:?} on {call:?} never fired"));
        }
    }
    if hot.is_some() && proxy.fired().is_empty() {
        wrong.push("no request named the hot key".into());
    }
    let label = format!("{scenario:?} faults {faults:?} hot {hot:?} -> {status}");
    Outcome {
        operations: proxy.operations(),
        keys: proxy.keys(),
        wrong: wrong.into_iter().map(|w| format!("{label}: {w}")).collect(),
        response,
    }
}

/// One item is hot: DynamoDB throttles every request naming its key, after
/// the SDK's retries too (a guessing flood against one username's attempt
/// record; one user's item read by a storm of requests). Every request that
/// needs it answers 503 with `Retry-After`, the store is whole, and requests
/// that do not touch it go through.
#[test]
fn a_hot_item_throttled_by_dynamodb_gets_503_with_retry_after_and_nothing_half_written() {
    on_large_stacks(a_hot_item_gets_503);
}

async fn a_hot_item_gets_503() {
    let cases = [
        ("LOCK#matrix", Scenario::LoginWithRehash),
        ("LOCK#matrix", Scenario::LoginWrongPassword),
        ("LOCK#matrix", Scenario::ChangePassword),
        ("USER#matrix", Scenario::LoginWithRehash),
        ("USER#matrix", Scenario::Refresh),
        ("USER#matrix", Scenario::LogoutEverywhere),
        ("USER#matrix", Scenario::ChangePassword),
    ];
    let runs = cases
        .into_iter()
        .map(|(hot, scenario)| case(scenario, Vec::new(), Some(hot)));
    let mut problems = Vec::new();
    for outcome in join_all(runs).await {
        problems.extend(outcome.wrong);
        let response = outcome.response;
        if response.status() == 503 {
            assert!(response.headers().contains_key("retry-after"));
        } else {
            problems.push(format!(
                "not 503 but {}: {}",
                response.status(),
                body_json(&response)
            ));
        }
    }
    // Another user's item is not hot: a registration goes through the same
    // proxy, so nothing names the key.
    let direct = fresh_store().await;
    let proxy = Proxy::to_dynamodb().await;
    proxy.fail(Call::Naming("LOCK#matrix"), Fault::Throttled);
    let store = Store::new(
        client_for(&proxy.endpoint, &short_timeouts()).await,
        direct.table(),
    );
    let req = Scenario::Register.prepare(&direct).await;
    let response = Scenario::Register.run(&store, req).await;
    assert_eq!(response.status(), 201, "{}", body_json(&response));
    assert!(proxy.fired().is_empty(), "{:?}", proxy.fired());

    // A hot item that only the final transaction names (every transaction is
    // cancelled with ThrottlingError, as DynamoDB reports it): 503, counted
    // as a throttled dependency call like any other.
    let capture = auth::metrics::capture();
    for scenario in [Scenario::LoginWithRehash, Scenario::Refresh] {
        let outcome = case(scenario, Vec::new(), Some("TransactItems")).await;
        problems.extend(outcome.wrong);
        let response = outcome.response;
        assert_eq!(response.status(), 503, "{}", body_json(&response));
    }
    let throttled = capture
        .take()
        .into_iter()
        .filter(|l| {
            l["DependencyErrors"] == 1 && l["Kind"] == "throttled" && l["Service"] == "dynamodb"
        })
        .count();
    assert!(
        throttled >= 2,
        "throttled transactions counted: {throttled}"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The cells of a handler whose clean run made `operations`: each
/// operation, named by its target and its number among that target's (so
/// calls made side by side are told apart however they interleave), fails
/// in each way that applies to it.
fn cells(operations: &[String]) -> Vec<Faults> {
    let mut cells = Vec::new();
    for (index, target) in operations.iter().enumerate() {
        let nth = operations[..=index].iter().filter(|t| *t == target).count();
        let target: &'static str = Box::leak(target.clone().into_boxed_str());
        for fault in FAULTS {
            if fault == Fault::Cancelled && target != "transactwriteitems" {
                continue; // only a transaction can be cancelled
            }
            cells.push(vec![(Call::Nth(target, nth), fault)]);
        }
    }
    cells
}

/// The double fault of a scenario whose clean run made `operations`: its
/// write is done but every answer to it lost, and the read-back that
/// follows (the next `GetItem`) fails too.
fn double_fault(scenario: Scenario, operations: &[String]) -> Option<Faults> {
    let Call::Nth(target, n) = scenario.write()? else {
        unreachable!("a write is named by its number")
    };
    let at = operations
        .iter()
        .enumerate()
        .filter(|(_, t)| *t == target)
        .nth(n - 1)
        .map(|(i, _)| i)?;
    let reads = operations[..at].iter().filter(|t| *t == "getitem").count();
    Some(vec![
        (Call::Nth(target, n), Fault::Lost),
        (Call::Nth("getitem", reads + 1), Fault::Dropped),
    ])
}

#[test]
fn every_handler_keeps_the_store_whole_when_any_of_its_calls_fails() {
    on_large_stacks(every_handler_keeps_the_store_whole);
}

async fn every_handler_keeps_the_store_whole() {
    let mut problems = Vec::new();
    let mut count = 0;
    for scenario in SCENARIOS {
        // A clean run says which operations the handler makes.
        let clean = case(scenario, Vec::new(), None).await;
        problems.extend(clean.wrong);
        assert!(!clean.operations.is_empty(), "{scenario:?} made no call");
        let mut cells = cells(&clean.operations);
        cells.extend(double_fault(scenario, &clean.operations));
        count += cells.len();
        println!("{scenario:?}: operations {:?}", clean.operations);
        // A few cells at once: many at once on two cores starve DynamoDB
        // Local past the short timeouts, and a cell timed out before its
        // faulted call would be a cell that tested nothing (it fails, as a
        // fault that never fired).
        let runs = cells.into_iter().map(|faults| case(scenario, faults, None));
        let outcomes: Vec<Outcome> = stream::iter(runs)
            .buffer_unordered(CELLS_AT_ONCE)
            .collect()
            .await;
        for outcome in outcomes {
            problems.extend(outcome.wrong);
        }
    }
    println!("{count} faulted runs");
    assert!(count >= 300, "the matrix ran {count} cells");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// An item kind as the roles' `dynamodb:LeadingKeys` name it: the key's
/// prefix (`USER#*`), a per-IP window with its scope (`RATE#login#*`).
fn kind(pk: &str) -> String {
    if pk == auth::store::KEYS_PARTITION {
        // One partition, one kind: the issuer keys (granted exactly).
        return pk.to_owned();
    }
    let mut parts = pk.splitn(3, '#');
    match (parts.next(), parts.next()) {
        (Some("RATE"), Some(scope)) => format!("RATE#{scope}#*"),
        (Some("TICKET"), Some(purpose)) => format!("TICKET#{purpose}#*"),
        (Some(kind), _) => format!("{kind}#*"),
        _ => unreachable!("a key has a kind"),
    }
}

type Kinds = BTreeMap<String, BTreeSet<String>>;

/// Each function's `dynamodb:LeadingKeys` in template.yaml, by binary: the
/// lists on its role and on its key policy (`GetNameRole` and
/// `GetNameKeyPolicy` are get-name's), together.
fn leading_keys_in_template() -> Kinds {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
    let mut kinds = Kinds::new();
    let mut role = None;
    for line in template.lines() {
        // A role (`GetNameRole:`) or its key policy (`GetNameKeyPolicy:`):
        // both are get-name's, wherever they stand in the file.
        if let Some(name) = line
            .strip_prefix("  ")
            .filter(|l| !l.starts_with(' '))
            .and_then(|l| {
                l.strip_suffix("Role:")
                    .or_else(|| l.strip_suffix("KeyPolicy:"))
            })
        {
            // GetName -> get-name.
            let mut binary = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    binary.push('-');
                }
                binary.push(c.to_ascii_lowercase());
            }
            role = Some(binary);
        }
        if let (Some(role), Some(list)) =
            (&role, line.trim().strip_prefix("dynamodb:LeadingKeys: "))
        {
            let list = list.trim_start_matches('[').trim_end_matches(']');
            kinds.entry(role.clone()).or_default().extend(
                list.split(',')
                    .map(|k| k.trim().trim_matches('"').to_owned()),
            );
        }
    }
    kinds
}

/// Least privilege by item kind, checked against the code: every request of
/// every handler (each scenario of the matrix, `/get_name`, and the warm-up
/// read of a verifier's init) goes through a proxy that records the key of
/// each item it names. A kind the code uses and the role lacks would be
/// `AccessDenied` once deployed; one the role has and the code never uses
/// is a grant too many. Either fails here.
#[test]
fn each_function_touches_only_the_item_kinds_its_role_allows() {
    on_large_stacks(item_kinds_named_and_granted);
}

async fn item_kinds_named_and_granted() {
    let mut seen = Kinds::new();
    let mut note = |function: &str, keys: Vec<String>| {
        assert!(!keys.is_empty(), "{function} named no item");
        seen.entry(function.to_owned())
            .or_default()
            .extend(keys.iter().map(|k| kind(k)));
    };
    for scenario in SCENARIOS {
        let outcome = case(scenario, Vec::new(), None).await;
        assert!(outcome.wrong.is_empty(), "{:?}", outcome.wrong);
        note(scenario.function(), outcome.keys);
    }
    // get-name: the one read of its user.
    let direct = fresh_store().await;
    user_in(&direct, "matrix").await;
    let tokens = session(&App::new(&direct), "matrix").await;
    let proxy = Proxy::to_dynamodb().await;
    let store = Store::new(
        client_for(&proxy.endpoint, &short_timeouts()).await,
        direct.table(),
    );
    let req = request("get-name.json", Some(&bearer(&tokens.access)), None);
    let response = auth::handlers::get_name::handle(&App::new(&store).get_name(), req).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    note("get-name", proxy.keys());
    // Wrong codes where there is no ticket: the decoys' keys are of the
    // kinds each role may touch (password: a verification by code;
    // recovery: a reset by an address nobody has).
    for (function, path, auth, body) in [
        (
            "password",
            "/account/email/verify",
            Some(bearer(&tokens.access)),
            json!({"code": "00000000"}),
        ),
        (
            "recovery",
            "/password/reset/confirm",
            None,
            json!({"email": "nobody@example.com", "code": "00000000", "new_password": "a good new passphrase"}),
        ),
    ] {
        let proxy = Proxy::to_dynamodb().await;
        let app = App::new(&Store::new(
            client_for(&proxy.endpoint, &short_timeouts()).await,
            direct.table(),
        ));
        let req = crate::recovery::call(Method::POST, path, auth.as_deref(), Some(body));
        let response = if function == "password" {
            auth::handlers::account::handle(&app.account(), req).await
        } else {
            auth::handlers::recovery::handle(&crate::recovery::recovery_state(&app), req).await
        };
        assert_eq!(body_json(&response)["error"], "invalid_ticket");
        note(function, proxy.keys());
    }
    // A verifier's init (`runtime::verifying_from_env`) opens its connection
    // with one read.
    let functions = concat!(env!("CARGO_MANIFEST_DIR"), "/../functions");
    for entry in std::fs::read_dir(functions).unwrap() {
        let path = entry.unwrap().path();
        let main = std::fs::read_to_string(path.join("src/main.rs")).unwrap();
        if main.contains("verifying_from_env") {
            let proxy = Proxy::to_dynamodb().await;
            let store = Store::new(
                client_for(&proxy.endpoint, &short_timeouts()).await,
                direct.table(),
            );
            store.warm_up().await;
            note(path.file_name().unwrap().to_str().unwrap(), proxy.keys());
        }
    }
    // In sealed mode, every function that signs or verifies reads the
    // issuer keys at init (`key_set`), and the rotation writes them.
    let (kms, sealing) = (
        crate::issuer_keys::kms().await,
        crate::issuer_keys::sealing_key(&crate::issuer_keys::kms().await).await,
    );
    for entry in std::fs::read_dir(functions).unwrap() {
        let path = entry.unwrap().path();
        let main = std::fs::read_to_string(path.join("src/main.rs")).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let proxy = Proxy::to_dynamodb().await;
        let store = Store::new(
            client_for(&proxy.endpoint, &short_timeouts()).await,
            direct.table(),
        );
        if main.contains("secret_box_from") {
            // The second factor's data key, made (the first init) and read.
            let sealing = crate::issuer_keys::sealing_key(&kms).await;
            Box::pin(auth::second_factor_key::ensure_secret_box(
                &store,
                &kms,
                &sealing,
                auth::clock::system_now(),
            ))
            .await
            .unwrap();
            note(&name, proxy.keys());
        }
        if main.contains("Rotation {") {
            let schedule = auth::issuer_keys::Schedule::new(
                Duration::from_secs(86400),
                Duration::from_secs(7200),
                Duration::from_secs(935),
                Duration::from_secs(905),
            )
            .unwrap();
            auth::rotation::rotate(&store, &kms, &sealing, &schedule, auth::clock::system_now())
                .await
                .unwrap();
            note(&name, proxy.keys());
        } else if [
            "verifying_from_env",
            "issuer_from_env",
            "public_keys_from_env",
        ]
        .iter()
        .any(|init| main.contains(init))
        {
            auth::key_set::KeyTable::load(store, auth::key_set::KeySettings::default())
                .await
                .unwrap();
            note(&name, proxy.keys());
        }
    }
    // The mail function: a job of each kind, run through the proxy.
    let direct = fresh_store().await;
    user_in(&direct, "matrix").await;
    verify_directly(&direct, "matrix", ADDRESS).await;
    let proxy = Proxy::to_dynamodb().await;
    let store = Store::new(
        client_for(&proxy.endpoint, &short_timeouts()).await,
        direct.table(),
    );
    let worker = crate::recovery::worker(&store, Clock::system()).await;
    let email = auth::email::Email::parse(ADDRESS).unwrap();
    let matrix = auth::users::Username::parse("matrix").unwrap();
    let user = direct.get(&matrix).await.unwrap().unwrap();
    let pending = auth::email::Email::parse(NEW_ADDRESS).unwrap();
    assert!(
        direct
            .set_pending_email(&user, &pending, auth::clock::system_now())
            .await
            .unwrap()
    );
    let jobs = [
        auth::outbox::MailJob::Reset {
            identifier: auth::outbox::Identifier::Email(email.clone()),
        },
        auth::outbox::MailJob::VerifyEmail {
            user_id: user.id,
            username: matrix.clone(),
            email: pending,
        },
        auth::outbox::MailJob::Notice {
            notice: auth::outbox::Notice::PasswordChanged,
            to: email,
            username: matrix,
        },
    ];
    for job in jobs {
        let outcome = worker.run("a-job-id", &job).await.unwrap();
        assert_eq!(outcome, auth::handlers::mail::Outcome::Sent, "{job:?}");
    }
    note("mail", proxy.keys());
    // Boxed: this test's future is large enough already for a thread's stack.
    for (function, keys) in Box::pin(federation_kinds()).await {
        note(function, keys);
    }
    for (function, keys) in Box::pin(passkeys_kinds()).await {
        note(function, keys);
    }
    let granted = leading_keys_in_template();
    assert_eq!(
        granted.len(),
        14,
        "every function with table access: {granted:?}"
    );
    assert_eq!(
        seen, granted,
        "the kinds each function's requests named (left) and its role allows (right)"
    );
}

/// The keys federation's requests name (a first sign-in, the next, a
/// connection), and those of the deletion of accounts with an identity by
/// the admin and password functions (`delete_user`, which deletes the links).
async fn federation_kinds() -> Vec<(&'static str, Vec<String>)> {
    let mut seen = Vec::new();
    let direct = fresh_store().await;
    let proxy = Proxy::to_dynamodb().await;
    let store = Store::new(
        client_for(&proxy.endpoint, &short_timeouts()).await,
        direct.table(),
    );
    let f = crate::federation::fixture_on(&store).await;
    let first = Mint::good("matrix").with("preferred_username", json!("fed-matrix"));
    crate::federation::assert_signed_in(&crate::federation::round_trip(&f, first).await);
    crate::federation::assert_signed_in(
        &crate::federation::round_trip(&f, Mint::good("matrix")).await,
    );
    // An account with a second factor: the sign-in leaves a login ticket.
    factor_directly(&direct, "fed-matrix", true).await;
    let asked = crate::federation::round_trip(&f, Mint::good("matrix")).await;
    assert!(
        asked.headers()["location"]
            .to_str()
            .unwrap()
            .contains("#mfa_required=")
    );
    let token = crate::federation::logged_in_on(&direct, "pat-matrix").await;
    let connected = crate::federation::connect(&f, &token, Mint::good("pat")).await;
    assert!(
        connected.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("#connected=test")
    );
    // A sign-in to an account with a verified address tells it of the new
    // device (a mail job); a provider authoritative for the address's domain
    // links by it (the address's claim read).
    verify_directly(&direct, "pat-matrix", "pat-matrix@standin.example").await;
    crate::federation::assert_signed_in(
        &crate::federation::round_trip(&f, Mint::good("pat")).await,
    );
    let linking = crate::federation::fixture_linking(&store, &["standin.example"]).await;
    add_user(&direct, "matrix-linked", "M", "a-good-password-1").await;
    verify_directly(&direct, "matrix-linked", "matrix-linked@standin.example").await;
    let linked = Mint::good("matrix-linked");
    crate::federation::assert_signed_in(&crate::federation::round_trip(&linking, linked).await);
    seen.push(("federation", proxy.keys()));
    for (function, username) in [("admin", "fed-matrix"), ("password", "pat-matrix")] {
        let proxy = Proxy::to_dynamodb().await;
        let store = Store::new(
            client_for(&proxy.endpoint, &short_timeouts()).await,
            direct.table(),
        );
        let user = direct
            .get(&auth::users::Username::parse(username).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(user.identities.len(), 1);
        let by = match function {
            "admin" => auth::store::DeletedBy::Operator,
            _ => auth::store::DeletedBy::Owner { sid: "another" },
        };
        store.delete_user(&user, by).await.unwrap();
        seen.push((function, proxy.keys()));
    }
    seen
}

/// The keys the passkeys function's requests name (a passkey added, the
/// list, a rename, a sign-in with no device proof, a removal), and those of
/// the deletion of accounts with passkeys by the admin and password
/// functions (`delete_user`, which deletes them).
async fn passkeys_kinds() -> Vec<(&'static str, Vec<String>)> {
    use crate::support::authenticator::{Authenticator, Behaviour};
    let mut seen = Vec::new();
    let direct = fresh_store().await;
    let proxy = Proxy::to_dynamodb().await;
    let app = App::new(&Store::new(
        client_for(&proxy.endpoint, &short_timeouts()).await,
        direct.table(),
    ));
    let (_, access) = crate::passkeys::signed_in(&App::new(&direct), "pk-matrix").await;
    // A verified address: each act's notice is a mail job.
    verify_directly(&direct, "pk-matrix", "pk-matrix@example.com").await;
    let mut key = Authenticator::new(Behaviour::at(OWN_ORIGIN));
    crate::passkeys::add_passkey(&app, &access, &mut key, "Key").await;
    // A second needs the first's proof, within the session.
    let access = crate::passkeys::verified(&app, &access, &mut key, 0).await;
    let mut spare = Authenticator::new(Behaviour::at(OWN_ORIGIN));
    crate::passkeys::add_passkey(&app, &access, &mut spare, "Spare").await;
    let listed = crate::passkeys::route(
        &app,
        crate::passkeys::call("GET", "/account/passkeys", Some(&bearer(&access)), None),
    )
    .await;
    assert_eq!(listed.status(), 200);
    let path = format!("/account/passkeys/{}", key.credentials[0].id_text());
    let renamed = crate::passkeys::route(
        &app,
        crate::passkeys::call(
            "PATCH",
            &path,
            Some(&bearer(&access)),
            Some(&json!({"name": "K"})),
        ),
    )
    .await;
    assert_eq!(renamed.status(), 200);
    let signed_in = crate::passkeys::sign_in_with(&app, &mut key, 0).await;
    assert_eq!(signed_in.status(), 200, "{}", body_json(&signed_in));
    // The second step after a password: the account given a code factor's
    // flag, and a ticket as the password step leaves it (read, then used up).
    local_client()
        .await
        .update_item()
        .table_name(direct.table())
        .key("pk", AttributeValue::S("USER#pk-matrix".into()))
        .key("sk", AttributeValue::S("PROFILE".into()))
        .update_expression("SET second_factor = :true")
        .expression_attribute_values(":true", AttributeValue::Bool(true))
        .send()
        .await
        .unwrap();
    let user = direct
        .get(&auth::users::Username::parse("pk-matrix").unwrap())
        .await
        .unwrap()
        .unwrap();
    let (ticket, token) = auth::mfa::MfaTicket::issue(
        &user,
        auth::sessions::SignIn::Password,
        None,
        auth::clock::system_now(),
    );
    direct.put_mfa_ticket(&ticket).await.unwrap();
    let options = crate::passkeys::second_step_options(&app, token.expose()).await;
    assert_eq!(options.status(), 200, "{}", body_json(&options));
    let options = body_json(&options);
    let answer = key.get(&options["options"], 0);
    let second = crate::passkeys::second_step(
        &app,
        token.expose(),
        options["ceremony"].as_str().unwrap(),
        &answer,
    )
    .await;
    assert_eq!(second.status(), 200, "{}", body_json(&second));
    let removed = crate::passkeys::route(
        &app,
        crate::passkeys::call("DELETE", &path, Some(&bearer(&access)), None),
    )
    .await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    seen.push(("passkeys", proxy.keys()));
    for function in ["admin", "password"] {
        let username = format!("pk-{function}");
        let (_, access) = crate::passkeys::signed_in(&App::new(&direct), &username).await;
        let mut key = Authenticator::new(Behaviour::at(OWN_ORIGIN));
        crate::passkeys::add_passkey(&App::new(&direct), &access, &mut key, "Key").await;
        let proxy = Proxy::to_dynamodb().await;
        let store = Store::new(
            client_for(&proxy.endpoint, &short_timeouts()).await,
            direct.table(),
        );
        let user = direct
            .get(&auth::users::Username::parse(&username).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(user.passkeys.len(), 1);
        let by = match function {
            "admin" => auth::store::DeletedBy::Operator,
            _ => auth::store::DeletedBy::Owner { sid: "another" },
        };
        store.delete_user(&user, by).await.unwrap();
        seen.push((function, proxy.keys()));
    }
    seen
}
