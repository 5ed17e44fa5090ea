//! Device proofs (OWASP's device cookies) through the real handlers on
//! DynamoDB Local: a stranger who keeps a username locked does not lock out
//! its owner's device; the device's own wrong guesses lock it like anyone's;
//! proofs rotate at each sign-in, expire, and die with log out everywhere,
//! deactivation, deletion and a password change (but for the changer's own,
//! reissued); the cookie for browsers, the body for API clients.

use crate::sessions::*;
use crate::support::*;
use auth::clock::Clock;
use auth::handlers::{account, login};
use auth::users::Username;
use lambda_http::http::HeaderValue;
use lambda_http::{Body, Response};
use serde_json::{Value, json};

const DEVICE_COOKIE: &str = "__Host-device";

/// A login sending `device` in its body (an API client); the answer.
async fn device_login(
    app: &App,
    username: &str,
    password: &str,
    device: Option<&str>,
) -> Response<Body> {
    let mut body = json!({"username": username, "password": password});
    if let Some(device) = device {
        body["device"] = device.into();
    }
    login::handle(
        &app.login(),
        request("login.json", None, Some(&body.to_string())),
    )
    .await
}

/// The device proof an answer hands out in its body, with its lifetime.
fn issued_device(response: &Response<Body>) -> (String, u64) {
    assert_eq!(response.status(), 200, "{}", body_json(response));
    let json = body_json(response);
    let device = json["device"]
        .as_str()
        .unwrap_or_else(|| panic!("no device in {json}"));
    assert_eq!(device.len(), 43, "256 random bits, base64url");
    (
        device.to_owned(),
        json["device_expires_in"].as_u64().unwrap(),
    )
}

/// "owner" signs in (no proof yet): the session's tokens and the proof.
async fn signed_in(app: &App) -> (Tokens, String) {
    let login = device_login(app, "owner", PASSWORD, None).await;
    let (device, _) = issued_device(&login);
    (Tokens::from(&login), device)
}

/// A stranger's wrong guess: no device.
async fn stranger_guess(app: &App, username: &str) -> Response<Body> {
    device_login(app, username, "a stranger's guess", None).await
}

/// A manual clock at now, and an app on it.
fn manual_app(store: &auth::store::Store) -> (App, Clock) {
    let clock = Clock::manual(auth::clock::system_now());
    (App::with_clock(store, clock.clone()), clock)
}

#[tokio::test]
async fn a_stranger_holds_the_lock_across_windows_while_the_owners_device_logs_in_every_time() {
    let store = fresh_store().await;
    let (app, clock) = manual_app(&store);
    user_in(&store, "owner").await;
    let (mut device, lifetime) = issued_device(&device_login(&app, "owner", PASSWORD, None).await);
    assert_eq!(lifetime, 90 * 24 * 3600, "90 days by default");
    let name = Username::parse("owner").unwrap();

    // The stranger fails five times: the username is locked for every
    // client without a proof, the right password included.
    for _ in 0..5 {
        assert_error(&stranger_guess(&app, "owner").await, 401, "login_failed");
    }
    let mut locked = 0;
    for window in 0..8 {
        assert_error(
            &stranger_guess(&app, "owner").await,
            429,
            "too_many_requests",
        );
        assert_error(
            &device_login(&app, "owner", PASSWORD, None).await,
            429,
            "too_many_requests",
        );
        locked += 1;
        // The owner's device logs in all the same, and gets a new proof.
        let response = device_login(&app, "owner", PASSWORD, Some(&device)).await;
        let (next, _) = issued_device(&response);
        assert_ne!(
            next, device,
            "window {window}: the proof rotates at each sign-in"
        );
        device = next;
        // The owner's success cleared nothing of the stranger's count.
        let record = store.failures(&name).await.unwrap().unwrap();
        assert!(record.count >= 5, "window {window}: {record:?}");
        // The stranger waits out the window and guesses again, keeping it.
        let wait = record.locked_for(clock.now()).unwrap_or(0) as i64;
        clock.advance(wait);
        assert_error(&stranger_guess(&app, "owner").await, 401, "login_failed");
    }
    assert_eq!(locked, 8);
    let record = store.failures(&name).await.unwrap().unwrap();
    assert_eq!(
        record.count,
        5 + 8,
        "only the stranger's guesses count on the username"
    );
}

/// A replaced proof vouches for a minute more (a client whose answer was
/// lost retries with the proof it holds), then for nothing.
#[tokio::test]
async fn a_replaced_proof_vouches_for_a_minute_then_for_nothing() {
    let store = fresh_store().await;
    let (app, clock) = manual_app(&store);
    user_in(&store, "owner").await;
    let (first, _) = issued_device(&device_login(&app, "owner", PASSWORD, None).await);
    for _ in 0..5 {
        stranger_guess(&app, "owner").await;
    }
    // Its answer lost, the client still holds `first`.
    let (second, _) = issued_device(&device_login(&app, "owner", PASSWORD, Some(&first)).await);
    clock.advance(59);
    let (third, _) = issued_device(&device_login(&app, "owner", PASSWORD, Some(&first)).await);
    clock.advance(1);
    // The stranger keeps the username locked (its window had passed).
    assert_error(&stranger_guess(&app, "owner").await, 401, "login_failed");
    assert_error(
        &device_login(&app, "owner", PASSWORD, Some(&first)).await,
        429,
        "too_many_requests",
    );
    // The second, replaced by the third a second ago, is in its grace; the
    // third carries on.
    issued_device(&device_login(&app, "owner", PASSWORD, Some(&second)).await);
    issued_device(&device_login(&app, "owner", PASSWORD, Some(&third)).await);
}

/// Thirty wrong guesses at once with one proof: the device's own count
/// takes them as a username's does (5, or 6 with clocks a second apart),
/// and nothing reaches the username's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_parallel_wrong_guesses_with_one_proof_get_the_schedule_and_lock_only_it() {
    let store = fresh_store().await;
    let (app, _) = manual_app(&store);
    user_in(&store, "owner").await;
    let (device, _) = issued_device(&device_login(&app, "owner", PASSWORD, None).await);
    let states: Vec<auth::handlers::login::Login> =
        app.racers(30).await.iter().map(App::login).collect();
    let hashers: Vec<_> = states.iter().map(|s| s.passwords.clone()).collect();
    let body = json!({"username": "owner", "password": "a wrong guess", "device": device});
    let responses = race(
        states
            .into_iter()
            .map(|state| {
                let req = request("login.json", None, Some(&body.to_string()));
                racing(async move { login::handle(&state, req).await })
            })
            .collect(),
    )
    .await;
    let verified: u64 = hashers.iter().map(|h| h.verifications()).sum();
    assert!((5..=6).contains(&verified), "{verified}");
    let mut expected = vec![401; verified as usize];
    expected.extend(vec![429; 30 - verified as usize]);
    assert_eq!(statuses(&responses), expected);
    let hash = auth::devices::DeviceProof::presented(device).hash();
    let record = store.get_device(&hash).await.unwrap().unwrap();
    assert_eq!(record.failures.map(|f| f.count), Some(verified));
    assert_eq!(
        store
            .failures(&Username::parse("owner").unwrap())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn the_owners_device_guessing_wrong_is_locked_like_anyone_and_only_it() {
    let store = fresh_store().await;
    let (app, clock) = manual_app(&store);
    user_in(&store, "owner").await;
    let (device, _) = issued_device(&device_login(&app, "owner", PASSWORD, None).await);
    for _ in 0..5 {
        assert_error(
            &device_login(&app, "owner", "a wrong guess", Some(&device)).await,
            401,
            "login_failed",
        );
    }
    // The device is locked, the right password included.
    assert_error(
        &device_login(&app, "owner", PASSWORD, Some(&device)).await,
        429,
        "too_many_requests",
    );
    // Its guesses counted on it, not on the username.
    let name = Username::parse("owner").unwrap();
    assert_eq!(store.failures(&name).await.unwrap(), None);
    // Once the window has passed, the device logs in.
    clock.advance(1);
    issued_device(&device_login(&app, "owner", PASSWORD, Some(&device)).await);
}

#[tokio::test]
async fn unknown_and_known_usernames_answer_alike_with_any_device_value() {
    let store = fresh_store().await;
    let (app, _) = manual_app(&store);
    user_in(&store, "known").await;
    let (device, _) = issued_device(&device_login(&app, "known", PASSWORD, None).await);
    // A proof of another user, and a made-up one: neither vouches.
    let made_up = "A".repeat(43);
    let mut answers = Vec::new();
    for username in ["known", "nobody-here"] {
        for value in [device.as_str(), made_up.as_str()] {
            let before = app.login().passwords.verifications();
            let state = app.login();
            let body = json!({"username": username, "password": "a wrong guess", "device": value});
            let response =
                login::handle(&state, request("login.json", None, Some(&body.to_string()))).await;
            assert_eq!(state.passwords.verifications() - before, 1);
            answers.push((response.status(), body_bytes(&response)));
        }
    }
    // The proof vouches only for its own user: on "nobody-here" it is
    // refused as any made-up value is, and "known" with its own proof is
    // the device's guess (401 as well).
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 401);
}

/// Revokes every device proof of "owner" in the way `how` says, from a
/// session of it; returns whether the caller got a proof of its own back.
async fn revoke(app: &App, how: &str, tokens: &Tokens, device: &str) -> Option<String> {
    let name = Username::parse("owner").unwrap();
    match how {
        "log out everywhere" => {
            assert_works(&do_logout(app, &tokens.access, Some(r#"{"all": true}"#)).await);
            None
        }
        "an admin's end of every session" => {
            crate::permissions::admin_in(&app.store, "chief").await;
            let chief = session(app, "chief").await;
            let state = app.admin();
            let response = crate::admin::call(
                &state,
                &chief.access,
                lambda_http::http::Method::DELETE,
                "/admin/users/owner/sessions",
                None,
            )
            .await;
            assert_works(&response);
            None
        }
        "deactivation" => {
            let user = app.store.get(&name).await.unwrap().unwrap();
            assert!(app.store.set_active(&user, false).await.unwrap());
            let user = app.store.get(&name).await.unwrap().unwrap();
            assert!(app.store.set_active(&user, true).await.unwrap());
            None
        }
        "password change" => {
            let body = json!({"current_password": PASSWORD, "new_password": "the owner's new passphrase", "device": device});
            let response = account::handle(
                &app.account(),
                request(
                    "password.json",
                    Some(&bearer(&tokens.access)),
                    Some(&body.to_string()),
                ),
            )
            .await;
            Some(issued_device(&response).0)
        }
        other => unreachable!("{other}"),
    }
}

#[tokio::test]
async fn every_device_proof_dies_with_log_out_everywhere_deactivation_and_a_password_change_but_the_changers()
 {
    for how in [
        "log out everywhere",
        "an admin's end of every session",
        "deactivation",
        "password change",
    ] {
        let store = fresh_store().await;
        let (app, _) = manual_app(&store);
        user_in(&store, "owner").await;
        let (laptop, _) = issued_device(&device_login(&app, "owner", PASSWORD, None).await);
        let phone_login = device_login(&app, "owner", PASSWORD, None).await;
        let (phone, _) = issued_device(&phone_login);
        let phone_tokens = Tokens::from(&phone_login);
        let reissued = revoke(&app, how, &phone_tokens, &phone).await;
        let password = match how {
            "password change" => "the owner's new passphrase",
            _ => PASSWORD,
        };
        // A stranger locks the username.
        for _ in 0..5 {
            stranger_guess(&app, "owner").await;
        }
        // The laptop's proof and the phone's old one vouch for nothing now.
        for device in [&laptop, &phone] {
            assert_error(
                &device_login(&app, "owner", password, Some(device)).await,
                429,
                "too_many_requests",
            );
        }
        // The changer's reissued proof is good.
        match reissued {
            Some(device) => {
                issued_device(&device_login(&app, "owner", password, Some(&device)).await);
            }
            None => assert_ne!(how, "password change"),
        }
    }
}

#[tokio::test]
async fn a_deleted_accounts_device_vouches_for_nobody_not_even_the_names_next_owner() {
    let store = fresh_store().await;
    let (app, _) = manual_app(&store);
    user_in(&store, "owner").await;
    let (tokens, device) = signed_in(&app).await;
    let body = json!({"password": PASSWORD}).to_string();
    assert_works(
        &account::handle(
            &app.account(),
            request(
                "delete-account.json",
                Some(&bearer(&tokens.access)),
                Some(&body),
            ),
        )
        .await,
    );
    add_user(&store, "owner", "Next Owner", "the next owner's passphrase").await;
    for _ in 0..5 {
        stranger_guess(&app, "owner").await;
    }
    assert_error(
        &device_login(&app, "owner", "the next owner's passphrase", Some(&device)).await,
        429,
        "too_many_requests",
    );
}

#[tokio::test]
async fn a_device_proof_expires_after_its_lifetime() {
    let store = fresh_store().await;
    let (app, clock) = manual_app(&store);
    user_in(&store, "owner").await;
    let (device, lifetime) = issued_device(&device_login(&app, "owner", PASSWORD, None).await);
    clock.advance(lifetime as i64);
    for _ in 0..5 {
        stranger_guess(&app, "owner").await;
    }
    assert_error(
        &device_login(&app, "owner", PASSWORD, Some(&device)).await,
        429,
        "too_many_requests",
    );
}

/// The page's login: JSON from our origin, cookie delivery, with `cookies`.
async fn browser_login(
    app: &App,
    password: &str,
    cookies: Option<&str>,
    origin: &str,
) -> Response<Body> {
    let body =
        json!({"username": "owner", "password": password, "refresh_token_delivery": "cookie"});
    let mut req = request("login.json", None, Some(&body.to_string()));
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(origin).unwrap());
    if let Some(cookies) = cookies {
        req.headers_mut()
            .insert("cookie", HeaderValue::from_str(cookies).unwrap());
    }
    login::handle(&app.login(), req).await
}

/// The device cookie an answer sets, checking every attribute.
fn device_cookie(response: &Response<Body>) -> String {
    assert_eq!(response.status(), 200, "{}", body_json(response));
    assert!(
        body_json(response).get("device").is_none(),
        "not in the body"
    );
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{DEVICE_COOKIE}=")))
        .expect("a device cookie");
    let (pair, attributes) = cookie.split_once(';').unwrap();
    let mut attributes: Vec<&str> = attributes.split(';').map(str::trim).collect();
    attributes.sort();
    assert_eq!(
        attributes,
        [
            "HttpOnly",
            "Max-Age=7776000",
            "Path=/",
            "SameSite=Strict",
            "Secure"
        ]
    );
    pair.split_once('=').unwrap().1.to_owned()
}

#[tokio::test]
async fn a_browsers_device_proof_is_a_host_cookie_and_counts_only_from_our_origin() {
    let store = fresh_store().await;
    let (app, _) = manual_app(&store);
    user_in(&store, "owner").await;
    let device = device_cookie(&browser_login(&app, PASSWORD, None, OWN_ORIGIN).await);
    for _ in 0..5 {
        stranger_guess(&app, "owner").await;
    }
    let cookies = format!("{DEVICE_COOKIE}={device}; theme=dark");
    // From our origin the cookie vouches; the browser gets the next one.
    let next = device_cookie(&browser_login(&app, PASSWORD, Some(&cookies), OWN_ORIGIN).await);
    assert_ne!(next, device);
    // A login from our page that wants its refresh token in the body still
    // gets the next proof in the cookie, never in a body scripts can read.
    let response = ours_with_cookie(&app, "login.json", None, PASSWORD, &next).await;
    assert!(body_json(&response)["refresh_token"].is_string());
    let next = device_cookie(&response);
    // A password change from the page renews it too.
    let tokens = Tokens::from(&response);
    let new_password = "the owner's new passphrase";
    let changed = ours_with_cookie(
        &app,
        "password.json",
        Some(&tokens.access),
        new_password,
        &next,
    )
    .await;
    let next = device_cookie(&changed);
    // Two device cookies (one planted beside ours) are refused, not guessed.
    let two = format!("{DEVICE_COOKIE}={next}; {DEVICE_COOKIE}={}", "B".repeat(43));
    let refused = browser_login(&app, new_password, Some(&two), OWN_ORIGIN).await;
    assert_error(&refused, 400, "invalid_request");
    // A body login from another origin carrying the cookie (a sibling site
    // the browser sent it to): the cookie counts for nothing there.
    let cookies = format!("{DEVICE_COOKIE}={next}");
    let mut req = request(
        "login.json",
        None,
        Some(&json!({"username": "owner", "password": new_password}).to_string()),
    );
    req.headers_mut().insert(
        "origin",
        HeaderValue::from_static("https://sibling.auth.test"),
    );
    req.headers_mut()
        .insert("cookie", HeaderValue::from_str(&cookies).unwrap());
    assert_error(
        &login::handle(&app.login(), req).await,
        429,
        "too_many_requests",
    );
    // From our origin, it vouches.
    device_cookie(&browser_login(&app, new_password, Some(&cookies), OWN_ORIGIN).await);
}

/// A request of our page (our origin) carrying the device cookie `device`,
/// with body delivery: a login with `password`, or (with `access`) a
/// password change from `PASSWORD` to `password`.
async fn ours_with_cookie(
    app: &App,
    event: &str,
    access: Option<&str>,
    password: &str,
    device: &str,
) -> Response<Body> {
    let body = match access {
        None => json!({"username": "owner", "password": password}),
        Some(_) => json!({"current_password": PASSWORD, "new_password": password}),
    };
    let auth = access.map(bearer);
    let mut req = request(event, auth.as_deref(), Some(&body.to_string()));
    req.headers_mut()
        .insert("origin", HeaderValue::from_static(OWN_ORIGIN));
    let cookie = format!("{DEVICE_COOKIE}={device}");
    req.headers_mut()
        .insert("cookie", HeaderValue::from_str(&cookie).unwrap());
    match access {
        None => login::handle(&app.login(), req).await,
        Some(_) => account::handle(&app.account(), req).await,
    }
}

#[tokio::test]
async fn a_device_re_authenticates_its_owner_while_a_stranger_holds_the_lock() {
    let store = fresh_store().await;
    let (app, _) = manual_app(&store);
    crate::permissions::admin_in(&store, "owner").await;
    let (tokens, device) = signed_in(&app).await;
    // Two wrong guesses of the device's own, then the stranger's five.
    for _ in 0..2 {
        device_login(&app, "owner", "a wrong guess", Some(&device)).await;
    }
    for _ in 0..5 {
        stranger_guess(&app, "owner").await;
    }
    let name = Username::parse("owner").unwrap();
    let hash = auth::devices::DeviceProof::presented(device.clone()).hash();
    let count = async || {
        let device = store.get_device(&hash).await.unwrap().unwrap();
        device.failures.map(|f| f.count)
    };
    assert_eq!(count().await, Some(2));
    assert_error(
        &reauthenticate(&app, &tokens.access, None).await,
        429,
        "too_many_requests",
    );
    assert_works(&reauthenticate(&app, &tokens.access, Some(&device)).await);
    // Its success cleared the device's count, and only it.
    assert_eq!(count().await, None);
    assert_eq!(store.failures(&name).await.unwrap().unwrap().count, 5);
    // Re-authentication rotates nothing: the proof still vouches.
    assert_works(&reauthenticate(&app, &tokens.access, Some(&device)).await);
}

#[tokio::test]
async fn a_device_deletes_its_owners_account_while_a_stranger_holds_the_lock() {
    let store = fresh_store().await;
    let (app, _) = manual_app(&store);
    user_in(&store, "owner").await;
    let (tokens, device) = signed_in(&app).await;
    for _ in 0..5 {
        stranger_guess(&app, "owner").await;
    }
    let delete = async |device: Option<&str>| {
        let mut body = json!({"password": PASSWORD});
        if let Some(device) = device {
            body["device"] = device.into();
        }
        let body = body.to_string();
        let req = request(
            "delete-account.json",
            Some(&bearer(&tokens.access)),
            Some(&body),
        );
        account::handle(&app.account(), req).await
    };
    assert_error(&delete(None).await, 429, "too_many_requests");
    assert_works(&delete(Some(&device)).await);
    assert_eq!(
        store.get(&Username::parse("owner").unwrap()).await.unwrap(),
        None
    );
}

async fn reauthenticate(app: &App, access: &str, device: Option<&str>) -> Response<Body> {
    let mut body = json!({"password": PASSWORD});
    if let Some(device) = device {
        body["device"] = Value::String(device.to_owned());
    }
    let req = request(
        "reauthenticate.json",
        Some(&bearer(access)),
        Some(&body.to_string()),
    );
    account::handle(&app.account(), req).await
}
