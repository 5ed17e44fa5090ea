//! Browser sessions through the real handlers on DynamoDB Local: the refresh
//! token in a `__Host-` cookie, the origin and content-type checks on every
//! request that sets or uses it, the superseded code of a lost refresh race.

use crate::sessions::{PASSWORD, user_in};
use crate::support::*;
use auth::clock::Clock;
use auth::handlers::{change_password, get_name, login, logout, refresh};
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

const COOKIE: &str = "__Host-refresh_token";

/// `events/<name>` with headers set (an empty value removes one) and a body.
fn browser_request(name: &str, headers: &[(&str, &str)], body: Option<&str>) -> Request {
    let mut json: Value = serde_json::from_str(&event_text(name)).unwrap();
    let map = json["headers"].as_object_mut().unwrap();
    map.remove("authorization");
    for (k, v) in headers {
        if v.is_empty() {
            map.remove(*k);
        } else {
            map.insert((*k).into(), (*v).into());
        }
    }
    match body {
        Some(body) => json["body"] = body.into(),
        None => drop(json.as_object_mut().unwrap().remove("body")),
    }
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

/// The page's own requests: our origin, JSON.
fn ours<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![("origin", OWN_ORIGIN), ("content-type", "application/json")];
    headers.extend_from_slice(extra);
    headers
}

/// The refresh cookies `response` sets (a sign-in also sets the device
/// cookie: `devices` tests that one).
fn set_cookies(response: &Response<Body>) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .filter(|c| c.starts_with(&format!("{COOKIE}=")))
        .collect()
}

/// The refresh token a response put in the cookie, checking every attribute.
fn cookie_token(response: &Response<Body>) -> String {
    let cookies = set_cookies(response);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let cookie = &cookies[0];
    let (pair, attributes) = cookie.split_once(';').unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, COOKIE);
    let mut attributes: Vec<&str> = attributes.split(';').map(str::trim).collect();
    attributes.sort();
    let max_age = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap();
    assert_eq!(
        max_age,
        body_json(response)["refresh_expires_in"].to_string(),
        "Max-Age is the stored expiry"
    );
    attributes.retain(|a| !a.starts_with("Max-Age="));
    assert_eq!(
        attributes,
        ["HttpOnly", "Path=/", "SameSite=Strict", "Secure"]
    );
    assert!(!cookie.contains("Domain"), "{cookie}");
    assert_eq!(value.len(), 43, "a refresh token");
    value.to_owned()
}

fn assert_clears_cookie(response: &Response<Body>) {
    let cookies = set_cookies(response);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(
        cookies[0].starts_with(&format!("{COOKIE}=; Max-Age=0;")),
        "{cookies:?}"
    );
}

async fn browser_login(app: &App, username: &str) -> (String, String) {
    let body =
        json!({"username": username, "password": PASSWORD, "refresh_token_delivery": "cookie"})
            .to_string();
    let response = login::handle(
        &app.login(),
        browser_request("login.json", &ours(&[]), Some(&body)),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let json = body_json(&response);
    assert!(
        json.get("refresh_token").is_none(),
        "left out of the body: {json}"
    );
    let access = json["access_token"].as_str().unwrap().to_owned();
    (access, cookie_token(&response))
}

async fn cookie_refresh(app: &App, token: &str, headers: &[(&str, &str)]) -> Response<Body> {
    let cookie = format!("{COOKIE}={token}; theme=dark");
    let mut all = vec![("cookie", cookie.as_str())];
    all.extend_from_slice(headers);
    refresh::handle(
        &app.refresh(),
        browser_request("refresh.json", &all, Some("{}")),
    )
    .await
}

#[tokio::test]
async fn a_browser_login_puts_the_refresh_token_in_a_host_cookie_and_not_in_the_body() {
    let store = fresh_store().await;
    user_in(&store, "browsing").await;
    let app = App::new(&store);
    let (access, token) = browser_login(&app, "browsing").await;
    let name = get_name::handle(
        &app.get_name(),
        request("get-name.json", Some(&bearer(&access)), None),
    )
    .await;
    assert_eq!(name.status(), 200);
    // The cookie refreshes; its successor goes back in the cookie.
    let refreshed = cookie_refresh(&app, &token, &ours(&[])).await;
    assert_eq!(refreshed.status(), 200, "{}", body_json(&refreshed));
    assert!(body_json(&refreshed).get("refresh_token").is_none());
    let next = cookie_token(&refreshed);
    assert_ne!(next, token);
}

#[tokio::test]
async fn bearer_clients_keep_their_refresh_token_in_the_body_and_get_no_cookie() {
    let store = fresh_store().await;
    user_in(&store, "app-user").await;
    let app = App::new(&store);
    let body = json!({"username": "app-user", "password": PASSWORD}).to_string();
    let response = login::handle(&app.login(), request("login.json", None, Some(&body))).await;
    assert_eq!(response.status(), 200);
    assert!(set_cookies(&response).is_empty());
    let token = body_json(&response)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A body token wins over a cookie, and its successor goes in the body.
    let body = json!({"refresh_token": token}).to_string();
    let refreshed = refresh::handle(
        &app.refresh(),
        browser_request(
            "refresh.json",
            &[
                ("content-type", "application/json"),
                ("cookie", "__Host-refresh_token=something-else"),
            ],
            Some(&body),
        ),
    )
    .await;
    assert_eq!(refreshed.status(), 200, "{}", body_json(&refreshed));
    assert!(body_json(&refreshed)["refresh_token"].is_string());
    assert!(set_cookies(&refreshed).is_empty());
}

#[tokio::test]
async fn requests_that_set_or_use_the_cookie_must_come_from_an_allowed_origin() {
    let store = fresh_store().await;
    user_in(&store, "guarded").await;
    let app = App::new(&store);
    let (access, token) = browser_login(&app, "guarded").await;
    let foreign = [("origin", "https://evil.example")];
    let same_site = [("origin", "https://other.auth.test")];
    let no_origin: [(&str, &str); 0] = [];
    let login_body =
        json!({"username": "guarded", "password": PASSWORD, "refresh_token_delivery": "cookie"})
            .to_string();
    let state = app.login();
    for origin in [&foreign[..], &same_site[..], &no_origin[..]] {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend_from_slice(origin);
        let asked = login::handle(
            &state,
            browser_request("login.json", &headers, Some(&login_body)),
        )
        .await;
        assert_error(&asked, 403, "origin_not_allowed");
        assert!(set_cookies(&asked).is_empty());
        let used = cookie_refresh(&app, &token, &headers).await;
        assert_error(&used, 403, "origin_not_allowed");
        assert!(
            set_cookies(&used).is_empty(),
            "a refused request clears nothing"
        );
        let cookie = format!("{COOKIE}={token}");
        let mut with_cookie = headers.clone();
        with_cookie.push(("cookie", &cookie));
        let auth = bearer(&access);
        with_cookie.push(("authorization", &auth));
        let out = logout::handle(
            &app.logout(),
            browser_request("logout.json", &with_cookie, Some("{}")),
        )
        .await;
        assert_error(&out, 403, "origin_not_allowed");
    }
    assert_eq!(state.passwords.verifications(), 0, "refused before bcrypt");
    // The browser's own marker, without an Origin header, passes.
    let marked = cookie_refresh(
        &app,
        &token,
        &[
            ("content-type", "application/json"),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(marked.status(), 200, "{}", body_json(&marked));
}

#[tokio::test]
async fn a_cookie_request_must_be_json_with_a_json_object_body() {
    let store = fresh_store().await;
    user_in(&store, "strict").await;
    let app = App::new(&store);
    let (_, token) = browser_login(&app, "strict").await;
    let cookie = format!("{COOKIE}={token}");
    for (content_type, body, status) in [
        ("", Some("{}"), 415),
        ("text/plain", Some("{}"), 415),
        ("application/json", None, 400),
        ("application/json", Some("[]"), 400),
    ] {
        let response = refresh::handle(
            &app.refresh(),
            browser_request(
                "refresh.json",
                &[
                    ("origin", OWN_ORIGIN),
                    ("content-type", content_type),
                    ("cookie", &cookie),
                ],
                body,
            ),
        )
        .await;
        assert_eq!(response.status(), status, "{content_type} {body:?}");
    }
    // Nothing above used the token: it still refreshes.
    assert_eq!(cookie_refresh(&app, &token, &ours(&[])).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_refreshes_of_one_cookie_never_sign_the_browser_out() {
    let store = fresh_store().await;
    user_in(&store, "many-tabs").await;
    let app = App::new(&store);
    let mut outcomes = Outcomes::default();
    for _ in 0..3 {
        let (_, token) = browser_login(&app, "many-tabs").await;
        let responses = race(
            app.racers(8)
                .await
                .into_iter()
                .map(|racer| {
                    let token = token.clone();
                    racing(async move { cookie_refresh(&racer, &token, &ours(&[])).await })
                })
                .collect(),
        )
        .await;
        let winners: Vec<&Response<Body>> =
            responses.iter().filter(|r| r.status() == 200).collect();
        assert_eq!(winners.len(), 1);
        let next = cookie_token(winners[0]);
        for loser in responses.iter().filter(|r| r.status() != 200) {
            // Superseded by the winner, or contended before anyone won (409).
            let code = match loser.status().as_u16() {
                409 => assert_error(loser, 409, "conflict"),
                _ => assert_error(loser, 401, "refresh_token_superseded"),
            };
            outcomes.count(code["error"].to_string());
            assert!(
                set_cookies(loser).is_empty(),
                "a loser must not clear the winner's new cookie"
            );
        }
        assert_eq!(cookie_refresh(&app, &next, &ours(&[])).await.status(), 200);
    }
    outcomes.report("parallel_refreshes_of_one_cookie");
}

/// DynamoDB cancels every attempt of the rotation for a conflicting
/// transaction (other writes on its items at each moment): nobody has won,
/// so the answer is 409, try again, and the cookie is left alone; the token
/// still works.
#[tokio::test]
async fn a_rotation_contended_past_its_retries_is_409_and_keeps_the_cookie() {
    let store = fresh_store().await;
    user_in(&store, "contended").await;
    let app = App::new(&store);
    let (_, token) = browser_login(&app, "contended").await;
    let proxy = crate::support::proxy::Proxy::to_dynamodb().await;
    let every = crate::support::proxy::Call::Every("transactwriteitems");
    proxy.fail(every.clone(), crate::support::proxy::Fault::Cancelled);
    let contended = app.racer(0, 1, Some(&proxy)).await;
    let response = cookie_refresh(&contended, &token, &ours(&[])).await;
    assert_error(&response, 409, "conflict");
    assert!(
        set_cookies(&response).is_empty(),
        "{:?}",
        set_cookies(&response)
    );
    // Every attempt was cancelled: the store's four, each a transaction of its own.
    let cancelled = proxy.fired().len();
    assert_eq!(cancelled, 4, "{:?}", proxy.fired());
    assert_eq!(cookie_refresh(&app, &token, &ours(&[])).await.status(), 200);
}

#[tokio::test]
async fn after_the_grace_period_reuse_revokes_and_clears_the_cookie() {
    let store = fresh_store().await;
    user_in(&store, "replayed").await;
    let clock = Clock::manual(auth::clock::system_now());
    let app = App::with_clock(&store, clock.clone());
    let (_, token) = browser_login(&app, "replayed").await;
    let next = cookie_token(&cookie_refresh(&app, &token, &ours(&[])).await);
    clock.advance(2);
    let again = cookie_refresh(&app, &token, &ours(&[])).await;
    assert_error(&again, 401, "refresh_token_superseded");
    assert!(set_cookies(&again).is_empty());
    clock.advance(app.sessions.reuse_grace.as_secs() as i64);
    let reused = cookie_refresh(&app, &token, &ours(&[])).await;
    assert_error(&reused, 401, "invalid_grant");
    assert_clears_cookie(&reused);
    // The family is revoked: the successor is dead too.
    let dead = cookie_refresh(&app, &next, &ours(&[])).await;
    assert_error(&dead, 401, "invalid_grant");
    assert_clears_cookie(&dead);
}

#[tokio::test]
async fn logout_reads_and_clears_the_cookie_and_a_password_change_renews_it() {
    let store = fresh_store().await;
    user_in(&store, "leaving-page").await;
    let app = App::new(&store);
    let (access, token) = browser_login(&app, "leaving-page").await;
    let cookie = format!("{COOKIE}={token}");
    let auth = bearer(&access);
    let changed = change_password::handle(
        &app.account(),
        browser_request(
            "password.json",
            &ours(&[("cookie", &cookie), ("authorization", &auth)]),
            Some(
                &json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"})
                    .to_string(),
            ),
        ),
    )
    .await;
    assert_eq!(changed.status(), 200, "{}", body_json(&changed));
    assert!(body_json(&changed).get("refresh_token").is_none());
    let renewed = cookie_token(&changed);
    let access = body_json(&changed)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = format!("{COOKIE}={renewed}");
    let auth = bearer(&access);
    let out = logout::handle(
        &app.logout(),
        browser_request(
            "logout.json",
            &ours(&[("cookie", &cookie), ("authorization", &auth)]),
            Some("{}"),
        ),
    )
    .await;
    assert_eq!(out.status(), 200, "{}", body_json(&out));
    assert_clears_cookie(&out);
    let dead = cookie_refresh(&app, &renewed, &ours(&[])).await;
    assert_error(&dead, 401, "invalid_grant");
    assert_clears_cookie(&dead);
}

#[tokio::test]
async fn no_other_page_can_clear_the_cookie_and_a_failed_logout_keeps_it() {
    let store = fresh_store().await;
    user_in(&store, "kept").await;
    let app = App::new(&store);
    let (access, token) = browser_login(&app, "kept").await;
    let cookie = format!("{COOKIE}={token}");
    let auth = bearer(&access);
    // `<img src=/logout>` or a no-cors POST from a sibling subdomain: the
    // browser sends the cookie; the answer must not clear it.
    for (method, origin, with_auth) in [
        ("GET", "https://sibling.auth.test", false),
        ("POST", "https://sibling.auth.test", true),
        ("POST", "", true),
    ] {
        let mut json: Value = serde_json::from_str(&event_text("logout.json")).unwrap();
        json["requestContext"]["http"]["method"] = method.into();
        let headers = json["headers"].as_object_mut().unwrap();
        headers.remove("authorization");
        headers.insert("cookie".into(), cookie.clone().into());
        if !origin.is_empty() {
            headers.insert("origin".into(), origin.into());
        }
        if with_auth {
            headers.insert("authorization".into(), auth.clone().into());
        }
        let req = lambda_http::request::from_str(&json.to_string()).unwrap();
        let response = logout::handle(&app.logout(), req).await;
        assert_error(&response, 403, "origin_not_allowed");
        assert!(set_cookies(&response).is_empty(), "{method} {origin}");
    }
    // Our own page, but the logout fails (no bearer token): the session
    // lives, so the cookie stays.
    let failed = logout::handle(
        &app.logout(),
        browser_request("logout.json", &ours(&[("cookie", &cookie)]), Some("{}")),
    )
    .await;
    assert_error(&failed, 401, "missing_token");
    assert!(set_cookies(&failed).is_empty());
    assert_eq!(cookie_refresh(&app, &token, &ours(&[])).await.status(), 200);
}

#[tokio::test]
async fn a_planted_second_refresh_cookie_is_refused_not_guessed() {
    let store = fresh_store().await;
    user_in(&store, "planted").await;
    let app = App::new(&store);
    let (_, token) = browser_login(&app, "planted").await;
    let cookies = format!("{COOKIE}=planted-by-a-sibling-domain; {COOKIE}={token}");
    let response = refresh::handle(
        &app.refresh(),
        browser_request("refresh.json", &ours(&[("cookie", &cookies)]), Some("{}")),
    )
    .await;
    assert_error(&response, 400, "invalid_request");
    assert!(set_cookies(&response).is_empty());
}

#[tokio::test]
async fn a_password_change_asks_for_the_cookie_explicitly_or_by_carrying_it_from_our_origin() {
    let store = fresh_store().await;
    user_in(&store, "renewing").await;
    let app = App::new(&store);
    let (access, token) = browser_login(&app, "renewing").await;
    let cookie = format!("{COOKIE}={token}");
    let auth = bearer(&access);
    let body =
        json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}).to_string();
    let state = app.account();
    let foreign = change_password::handle(
        &state,
        browser_request(
            "password.json",
            &[
                ("content-type", "application/json"),
                ("origin", "https://evil.example"),
                ("cookie", &cookie),
                ("authorization", &auth),
            ],
            Some(&body),
        ),
    )
    .await;
    assert_error(&foreign, 403, "origin_not_allowed");
    assert_eq!(state.passwords.verifications(), 0, "refused before bcrypt");
    // Explicitly, without the cookie at hand (a listed origin that did not
    // send credentials): the cookie, not the body.
    let explicit = json!({
        "current_password": PASSWORD,
        "new_password": "a brand new passphrase",
        "refresh_token_delivery": "cookie"
    })
    .to_string();
    let changed = change_password::handle(
        &app.account(),
        browser_request(
            "password.json",
            &ours(&[("authorization", &auth)]),
            Some(&explicit),
        ),
    )
    .await;
    assert_eq!(changed.status(), 200, "{}", body_json(&changed));
    assert!(body_json(&changed).get("refresh_token").is_none());
    cookie_token(&changed);
}
