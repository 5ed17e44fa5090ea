//! The sessions list (`GET /sessions`) and ending one session
//! (`DELETE /sessions/{id}`), through the logout function's handler on
//! DynamoDB Local: what the list shows, whose sessions it shows, and that an
//! ended session's tokens stop working at once, racing its refresh too.

use crate::invariants::WriteFirst;
use crate::sessions::{
    PASSWORD, Tokens, assert_works, do_refresh, log_in, name_with, session, user_in,
};
use crate::support::*;
use auth::clock::Clock;
use auth::handlers::{login, logout};
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

pub(crate) async fn list(app: &App, access: &str) -> Response<Body> {
    logout::handle(
        &app.logout(),
        request("sessions.json", Some(&bearer(access)), None),
    )
    .await
}

/// The list's sessions, asserting a 200.
pub(crate) async fn listed(app: &App, access: &str) -> Vec<Value> {
    let response = list(app, access).await;
    assert_works(&response);
    body_json(&response)["sessions"]
        .as_array()
        .unwrap()
        .to_owned()
}

fn end_request(access: &str, id: &str) -> Request {
    let mut req = request("end-session.json", Some(&bearer(access)), None);
    *req.uri_mut() = format!("/sessions/{id}").parse().unwrap();
    req
}

pub(crate) async fn end(app: &App, access: &str, id: &str) -> Response<Body> {
    logout::handle(&app.logout(), end_request(access, id)).await
}

/// The session id an access token carries (`sid`), from its payload.
pub(crate) fn sid_of(access: &str) -> String {
    use base64::Engine as _;
    let payload = access.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A login from a client that says `user_agent` and comes from `ip`.
async fn log_in_from(app: &App, username: &str, user_agent: &str, ip: &str) -> Response<Body> {
    let body = json!({"username": username, "password": PASSWORD}).to_string();
    let mut json: Value = serde_json::from_str(&event_text("login.json")).unwrap();
    json["headers"]["user-agent"] = user_agent.into();
    json["requestContext"]["http"]["sourceIp"] = ip.into();
    json["headers"]["content-type"] = "application/json".into();
    json["body"] = body.into();
    let req = lambda_http::request::from_str(&json.to_string()).unwrap();
    login::handle(&app.login(), req).await
}

#[tokio::test]
async fn the_list_shows_each_live_session_of_the_caller_with_how_where_and_when_it_began() {
    let store = fresh_store().await;
    // Behind the system's clock, so that the tokens it dates are valid now.
    let clock = Clock::manual(auth::clock::system_now() - 30);
    let app = App::with_clock(&store, clock.clone());
    user_in(&store, "lister").await;
    user_in(&store, "neighbour").await;

    let phone = log_in_from(&app, "lister", "Phone\tApp/1.0", "198.51.100.4").await;
    let phone_tokens = Tokens::from(&phone);
    let device = body_json(&phone)["device"].as_str().unwrap().to_owned();
    clock.advance(10);
    // The same client again, with the device proof its first sign-in got.
    let body = json!({"username": "lister", "password": PASSWORD, "device": device}).to_string();
    let again = login::handle(&app.login(), request("login.json", None, Some(&body))).await;
    let laptop = Tokens::from(&again);
    session(&app, "neighbour").await;
    clock.advance(10);
    // A refresh uses the phone's session: its `last_used_at` moves on.
    let phone_tokens = Tokens::from(&do_refresh(&app, &phone_tokens.refresh).await);

    let shown = listed(&app, &laptop.access).await;
    assert_eq!(shown.len(), 2, "the caller's two sessions only: {shown:?}");
    let (newest, oldest) = (&shown[0], &shown[1]);
    let started = clock.now() - 20;
    assert_eq!(newest["id"], sid_of(&laptop.access));
    assert_eq!(newest["current"], true);
    assert_eq!(newest["method"], "password");
    assert_eq!(newest["known_device"], true, "it showed a device proof");
    assert_eq!(newest["user_agent"], "curl/8.5.0");
    assert_eq!(newest["ip"], "203.0.113.10");
    assert_eq!(newest["created_at"], started + 10);
    assert_eq!(newest["last_used_at"], started + 10);
    assert_eq!(oldest["id"], sid_of(&phone_tokens.access));
    assert_eq!(oldest["current"], false);
    assert_eq!(oldest["known_device"], false);
    assert_eq!(
        oldest["user_agent"], "PhoneApp/1.0",
        "no control characters"
    );
    assert_eq!(oldest["ip"], "198.51.100.4");
    assert_eq!(oldest["created_at"], started);
    assert_eq!(oldest["last_used_at"], started + 20, "its refresh");
    assert!(oldest["expires_at"].as_i64().unwrap() > clock.now());
    let text = body_json(&list(&app, &laptop.access).await).to_string();
    for secret in [&laptop.refresh, &phone_tokens.refresh, &device] {
        assert!(
            !text.contains(secret.as_str()),
            "the list carries no secret"
        );
    }
    // The neighbour's list is the neighbour's.
    let theirs = session(&app, "neighbour").await;
    let their_list = listed(&app, &theirs.access).await;
    assert_eq!(their_list.len(), 2);
    assert!(
        their_list
            .iter()
            .all(|s| s["id"] != newest["id"] && s["id"] != oldest["id"])
    );

    // A session past its end (its refresh token expired) is not listed.
    let lister = store
        .get(&auth::users::Username::parse("lister").unwrap())
        .await
        .unwrap()
        .unwrap();
    let now = clock.now();
    crate::store::start_session_at(&store, &lister, now - 100, now - 1).await;
    let after = body_json(&list(&app, &laptop.access).await);
    assert_eq!(after["sessions"].as_array().unwrap().len(), 2, "{after}");
    assert_eq!(after["truncated"], false);
}

#[tokio::test]
async fn ending_one_session_stops_its_tokens_at_once_and_leaves_the_others() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "ender").await;
    let lost_phone = session(&app, "ender").await;
    let laptop = session(&app, "ender").await;
    let phone_sid = sid_of(&lost_phone.access);

    let response = end(&app, &laptop.access, &phone_sid).await;
    assert_works(&response);
    assert_eq!(
        body_json(&response),
        json!({"message": "Session ended", "ended": "session"})
    );
    assert_error(
        &name_with(&app, &lost_phone.access).await,
        401,
        "invalid_token",
    );
    assert_error(
        &do_refresh(&app, &lost_phone.refresh).await,
        401,
        "invalid_grant",
    );
    assert_works(&name_with(&app, &laptop.access).await);
    let shown = listed(&app, &laptop.access).await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["id"], sid_of(&laptop.access));
    // Again (a client that lost the first answer): done already, 200.
    assert_works(&end(&app, &laptop.access, &phone_sid).await);
    // The caller's own session may end too: as its logout would.
    assert_works(&end(&app, &laptop.access, &sid_of(&laptop.access)).await);
    assert_error(&name_with(&app, &laptop.access).await, 401, "invalid_token");
    assert_error(
        &do_refresh(&app, &laptop.refresh).await,
        401,
        "invalid_grant",
    );
}

#[tokio::test]
async fn another_users_session_and_one_that_does_not_exist_are_alike_404_and_nothing_ends() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "owner").await;
    user_in(&store, "mallory").await;
    let owners = session(&app, "owner").await;
    let mallory = session(&app, "mallory").await;

    let theirs = end(&app, &mallory.access, &sid_of(&owners.access)).await;
    let unknown = end(&app, &mallory.access, &uuid::Uuid::new_v4().to_string()).await;
    let malformed = end(&app, &mallory.access, "not-a-session").await;
    for response in [&theirs, &unknown, &malformed] {
        assert_eq!(
            assert_error(response, 404, "not_found"),
            body_json(&theirs),
            "one answer for all"
        );
    }
    assert_works(&name_with(&app, &owners.access).await);
    assert_works(&do_refresh(&app, &owners.refresh).await);
    // Without a valid token, nothing is looked up: 401 first.
    assert_error(
        &end(&app, "not-a-token", &sid_of(&owners.access)).await,
        401,
        "invalid_token",
    );
    assert_error(&list(&app, "not-a-token").await, 401, "invalid_token");
    // The wrong method on either path: 405 with Allow, before the token.
    let mut wrong = request("sessions.json", None, None);
    *wrong.method_mut() = Method::DELETE;
    let response = logout::handle(&app.logout(), wrong).await;
    assert_error(&response, 405, "method_not_allowed");
    assert_eq!(response.headers()["allow"], "GET");
    let response = logout::handle(
        &app.logout(),
        request("end-session-wrong-method.json", None, None),
    )
    .await;
    assert_error(&response, 405, "method_not_allowed");
    assert_eq!(response.headers()["allow"], "DELETE");
}

#[tokio::test]
async fn after_a_password_change_or_log_out_everywhere_only_what_is_live_is_listed() {
    let store = fresh_store().await;
    let app = App::new(&store);
    user_in(&store, "changer").await;
    let first = session(&app, "changer").await;
    session(&app, "changer").await;
    assert_eq!(listed(&app, &first.access).await.len(), 2);

    let changed =
        crate::sessions::do_change(&app, &first.access, PASSWORD, "a new passphrase!").await;
    let changed = Tokens::from(&changed);
    let shown = listed(&app, &changed.access).await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["method"], "password_change");
    assert_eq!(shown[0]["current"], true);

    // Sessions ended one by one (a logout) are not listed either.
    let other = Tokens::from(&log_in(&app, "changer", "a new passphrase!").await);
    assert_eq!(listed(&app, &changed.access).await.len(), 2);
    assert_works(&crate::sessions::do_logout(&app, &other.access, None).await);
    assert_eq!(listed(&app, &changed.access).await.len(), 1);
}

#[tokio::test]
async fn a_list_shows_at_most_its_limit_and_says_more_are_live() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let user = user_in(&store, "many").await;
    let now = auth::clock::system_now();
    for i in 0..auth::store::MAX_LISTED_SESSIONS as i64 {
        crate::store::start_session_at(&store, &user, now - 1_000 + i, now + 3_600).await;
    }
    // The newest, the caller's, comes first, and one more than the limit is live.
    let caller = session(&app, "many").await;
    let response = list(&app, &caller.access).await;
    let json = body_json(&response);
    let shown = json["sessions"].as_array().unwrap();
    assert_eq!(shown.len(), auth::store::MAX_LISTED_SESSIONS);
    assert_eq!(json["truncated"], true);
    assert_eq!(shown[0]["id"], sid_of(&caller.access));
}

/// Ending a session (from another one) races its own refresh: whichever
/// write lands first, no token of the ended session works afterwards, and
/// the session that ended it lives on.
async fn end_racing_refresh(app: &App, order: Option<WriteFirst>) -> String {
    let victim = session(app, "raced").await;
    let holder = session(app, "raced").await;
    let end = end_request(&holder.access, &sid_of(&victim.access));
    let outcome = crate::invariants::end_racing_refresh(app, &victim, end, order).await;
    assert_works(&name_with(app, &holder.access).await);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ending_a_session_racing_its_refresh_leaves_no_live_token_of_it() {
    let store = fresh_store().await;
    user_in(&store, "raced").await;
    let app = App::new(&store);
    // The refresh read a live session, then the end landed before the
    // rotation: the rotation's condition refuses it.
    assert_eq!(
        end_racing_refresh(&app, Some(WriteFirst::End)).await,
        r#""invalid_grant""#
    );
    // The rotation landed first: its successor dies with the session.
    assert_eq!(
        end_racing_refresh(&app, Some(WriteFirst::Refresh)).await,
        "200"
    );
    let mut outcomes = Outcomes::default();
    for _ in 0..4 {
        outcomes.count(end_racing_refresh(&app, None).await);
    }
    outcomes.report("end_racing_refresh");
}

/// A refresh running beside the end of its session reads a later clock than
/// the end did (another instance, a slower request) and signs a token that
/// lives that much longer: the revoked session's entry outlives that token
/// too, not only the tokens signed before the end read its clock.
#[tokio::test]
async fn a_token_refreshed_beside_the_end_with_a_later_clock_dies_with_its_session() {
    let store = fresh_store().await;
    user_in(&store, "late").await;
    // In the past, so that every token below is valid by the system's clock.
    let base = auth::clock::system_now() - 40;
    let app = App::with_clock(&store, Clock::manual(base));
    let victim = session(&app, "late").await;
    let holder = session(&app, "late").await;
    // The refresh reads its clock 29 s after the end read its own (a
    // function's longest run), and commits first.
    let refresher = App::with_clock(&store, Clock::manual(base + 29));
    let successor = Tokens::from(&do_refresh(&refresher, &victim.refresh).await);
    assert_works(&end(&app, &holder.access, &sid_of(&victim.access)).await);
    // Just past the moment a token signed when the end read its clock could
    // last be accepted: the successor, signed later, still can be, and
    // must not be.
    let ttl = token_config().access_token_ttl.as_secs() as i64;
    let leeway = auth::tokens::LEEWAY.as_secs() as i64;
    let later = App::with_clock(&store, Clock::manual(base + ttl + leeway + 1));
    assert_error(
        &name_with(&later, &successor.access).await,
        401,
        "invalid_token",
    );
}

/// Ending a session takes it out of its owner's index, and an epoch bump
/// leaves every older session under a key no list reads: a list reads only
/// live sessions (and expired ones awaiting TTL), however many ended.
#[tokio::test]
async fn ended_sessions_leave_the_index_a_list_reads() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let user = user_in(&store, "indexed").await;
    let first = session(&app, "indexed").await;
    let second = session(&app, "indexed").await;
    let indexed = |epoch: u64| {
        let (store, id) = (store.clone(), user.id);
        async move {
            let client = local_client().await;
            client
                .query()
                .table_name(store.table())
                .index_name(auth::store::SESSIONS_INDEX)
                .key_condition_expression("#o = :o")
                .expression_attribute_names("#o", auth::store::SESSION_OWNER)
                .expression_attribute_values(
                    ":o",
                    auth::store::aws_sdk_dynamodb::types::AttributeValue::S(format!(
                        "{id}#{epoch}"
                    )),
                )
                .send()
                .await
                .unwrap()
                .count()
        }
    };
    assert_eq!(indexed(0).await, 2);
    assert_works(&end(&app, &second.access, &sid_of(&first.access)).await);
    assert_eq!(indexed(0).await, 1, "the ended session left the index");
    assert_works(&crate::sessions::do_logout(&app, &second.access, Some(r#"{"all": true}"#)).await);
    let fresh = session(&app, "indexed").await;
    assert_eq!(
        indexed(1).await,
        1,
        "the new epoch's key holds the new session only"
    );
    assert_eq!(listed(&app, &fresh.access).await.len(), 1);
}
