//! Passkeys through the handlers (issue 30), against DynamoDB Local, with a
//! software authenticator (support/authenticator.rs): add one (a fresh
//! proof; a discoverable credential with user verification), list, rename
//! and remove it; sign in with it and no username, as a login answers.
//! And what must be refused, leaving nothing stored: a ceremony answered
//! twice, another origin or relying party, no user verification, a counter
//! gone backwards, another account's credential or handle, a removed
//! passkey or a deleted account.

use auth::clock::Clock;
use auth::handlers::passkeys;
use auth::passkeys::CEREMONY_TTL;
use auth::users::{User, Username};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use crate::support::authenticator::{Authenticator, Behaviour};
use crate::support::race::{race, racing};
use crate::support::*;

const PASSWORD: &str = "correct horse battery staple";

/// A request to the passkeys function: `method` on `path`.
pub(crate) fn call(
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> Request {
    let mut json: Value = serde_json::from_str(&event_text("login.json")).unwrap();
    json["rawPath"] = path.into();
    json["requestContext"]["http"]["method"] = method.into();
    json["requestContext"]["http"]["path"] = path.into();
    let headers = json["headers"].as_object_mut().unwrap();
    match authorization {
        Some(value) => headers.insert("authorization".into(), value.into()),
        None => headers.remove("authorization"),
    };
    match body {
        Some(body) => json["body"] = body.to_string().into(),
        None => drop(json.as_object_mut().unwrap().remove("body")),
    }
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

pub(crate) async fn route(app: &App, req: Request) -> Response<Body> {
    passkeys::handle(&app.passkeys(), req).await
}

/// A user signed in with the password: the user and an access token.
pub(crate) async fn signed_in(app: &App, username: &str) -> (User, String) {
    let user = add_user(&app.store, username, "Passkey User", PASSWORD).await;
    let body = json!({"username": username, "password": PASSWORD}).to_string();
    let response =
        auth::handlers::login::handle(&app.login(), request("login.json", None, Some(&body))).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let access = body_json(&response)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    (user, access)
}

/// `POST /account/passkeys/options`: the ceremony and the options.
async fn registration_options(app: &App, access: &str) -> (String, Value) {
    let response = route(
        app,
        call(
            "POST",
            "/account/passkeys/options",
            Some(&bearer(access)),
            None,
        ),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let body = body_json(&response);
    assert_eq!(body["expires_in"], CEREMONY_TTL.as_secs());
    (
        body["ceremony"].as_str().unwrap().to_owned(),
        body["options"].clone(),
    )
}

/// `POST /account/passkeys` with `credential`, named `name`.
async fn register(
    app: &App,
    access: &str,
    ceremony: &str,
    credential: &Value,
    name: &str,
) -> Response<Body> {
    let body = json!({"ceremony": ceremony, "credential": credential, "name": name});
    route(
        app,
        call(
            "POST",
            "/account/passkeys",
            Some(&bearer(access)),
            Some(&body),
        ),
    )
    .await
}

/// A passkey made by `authenticator` and added to the account of `access`.
pub(crate) async fn add_passkey(
    app: &App,
    access: &str,
    authenticator: &mut Authenticator,
    name: &str,
) -> Value {
    let (ceremony, options) = registration_options(app, access).await;
    let credential = authenticator.create(&options);
    let response = register(app, access, &ceremony, &credential, name).await;
    assert_eq!(response.status(), 201, "{}", body_json(&response));
    body_json(&response)
}

/// `POST /login/passkey/options`: the ceremony and the options.
async fn sign_in_options(app: &App) -> (String, Value) {
    let response = route(app, call("POST", "/login/passkey/options", None, None)).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let body = body_json(&response);
    (
        body["ceremony"].as_str().unwrap().to_owned(),
        body["options"].clone(),
    )
}

async fn sign_in(app: &App, ceremony: &str, credential: &Value) -> Response<Body> {
    let body = json!({"ceremony": ceremony, "credential": credential});
    route(app, call("POST", "/login/passkey", None, Some(&body))).await
}

/// A whole sign-in with the authenticator's passkey `index`.
pub(crate) async fn sign_in_with(
    app: &App,
    authenticator: &mut Authenticator,
    index: usize,
) -> Response<Body> {
    let (ceremony, options) = sign_in_options(app).await;
    let credential = authenticator.get(&options, index);
    sign_in(app, &ceremony, &credential).await
}

/// `POST /account/passkeys/verify/options` for the session of `access`.
async fn verify_options(app: &App, access: &str) -> Response<Body> {
    route(
        app,
        call(
            "POST",
            "/account/passkeys/verify/options",
            Some(&bearer(access)),
            None,
        ),
    )
    .await
}

async fn verify(app: &App, access: &str, ceremony: &str, credential: &Value) -> Response<Body> {
    let body = json!({"ceremony": ceremony, "credential": credential});
    route(
        app,
        call(
            "POST",
            "/account/passkeys/verify",
            Some(&bearer(access)),
            Some(&body),
        ),
    )
    .await
}

/// The session of `access` proves the authenticator's passkey `index`
/// again: its new access token (fresh, `aal2`).
pub(crate) async fn verified(
    app: &App,
    access: &str,
    authenticator: &mut Authenticator,
    index: usize,
) -> String {
    let options = verify_options(app, access).await;
    assert_eq!(options.status(), 200, "{}", body_json(&options));
    let options = body_json(&options);
    let credential = authenticator.get(&options["options"], index);
    let response = verify(
        app,
        access,
        options["ceremony"].as_str().unwrap(),
        &credential,
    )
    .await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    access_of(&response)
}

fn access_of(response: &Response<Body>) -> String {
    body_json(response)["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn user_named(app: &App, username: &str) -> User {
    app.store
        .get(&Username::parse(username).unwrap())
        .await
        .unwrap()
        .unwrap()
}

/// A way to bend the authenticator's behaviour.
type Bend = fn(&mut Behaviour);

fn page() -> Authenticator {
    Authenticator::new(Behaviour::at(OWN_ORIGIN))
}

#[tokio::test]
async fn a_passkey_is_added_listed_renamed_and_signs_in_with_no_username() {
    let app = App::new(&fresh_store().await);
    let (user, access) = signed_in(&app, "pat").await;
    let mut phone = page();
    let (ceremony, options) = registration_options(&app, &access).await;
    // A discoverable credential, the person verified, for this account.
    let selection = &options["publicKey"]["authenticatorSelection"];
    assert_eq!(selection["residentKey"], "required", "{options}");
    assert_eq!(selection["userVerification"], "required");
    assert_eq!(options["publicKey"]["rp"]["id"], "auth.test");
    assert_eq!(options["publicKey"]["user"]["name"], "pat");
    let credential = phone.create(&options);
    let added = register(&app, &access, &ceremony, &credential, "  Phone ").await;
    assert_eq!(added.status(), 201, "{}", body_json(&added));
    let added = body_json(&added);
    assert_eq!(added["id"], phone.credentials[0].id_text());
    assert_eq!(added["name"], "Phone");
    assert_eq!(added["synced"], false);
    assert_eq!(added["last_used"], Value::Null);
    assert!(
        user_named(&app, "pat")
            .await
            .passkeys
            .contains(&phone.credentials[0].id_text())
    );

    // Signed in with it alone: the browser's autofill (conditional UI).
    let (ceremony, options) = sign_in_options(&app).await;
    assert_eq!(options["mediation"], "conditional", "{options}");
    assert_eq!(options["publicKey"]["userVerification"], "required");
    assert!(
        options["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "usernameless: no credential named"
    );
    let assertion = phone.get(&options, 0);
    let before = auth::clock::system_now();
    let response = sign_in(&app, &ceremony, &assertion).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let tokens = body_json(&response);
    assert_eq!(tokens["message"], "Login Success");
    assert!(tokens["refresh_token"].is_string());
    let claims = verifier()
        .verify(tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.sub, user.id.to_string());
    assert_eq!(claims.amr, ["swk", "user", "mfa"]);
    assert_eq!(claims.acr.as_deref(), Some("aal2"));
    assert!(claims.auth_time >= before, "a proof made now");
    // Its refresh token carries the session on.
    let refreshed = auth::handlers::refresh::handle(
        &app.refresh(),
        request(
            "refresh.json",
            None,
            Some(&json!({"refresh_token": tokens["refresh_token"]}).to_string()),
        ),
    )
    .await;
    assert_eq!(refreshed.status(), 200, "{}", body_json(&refreshed));

    // Listed: its last use and counter as the sign-in showed them.
    let listed = route(
        &app,
        call("GET", "/account/passkeys", Some(&bearer(&access)), None),
    )
    .await;
    assert_eq!(listed.status(), 200);
    let listed = body_json(&listed);
    assert_eq!(listed["passkeys"].as_array().unwrap().len(), 1, "{listed}");
    assert!(listed["passkeys"][0]["last_used"].as_i64().unwrap() >= before);
    let stored = app
        .store
        .get_passkey(&phone.credentials[0].id_text())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.counter, phone.credentials[0].counter);

    // Renamed; a name that is not one, or a passkey not theirs, refused.
    let path = format!("/account/passkeys/{}", phone.credentials[0].id_text());
    let renamed = route(
        &app,
        call(
            "PATCH",
            &path,
            Some(&bearer(&access)),
            Some(&json!({"name": "Work phone"})),
        ),
    )
    .await;
    assert_eq!(renamed.status(), 200, "{}", body_json(&renamed));
    assert_eq!(body_json(&renamed)["name"], "Work phone");
    assert_error(
        &route(
            &app,
            call(
                "PATCH",
                &path,
                Some(&bearer(&access)),
                Some(&json!({"name": "a\u{7}b"})),
            ),
        )
        .await,
        400,
        "invalid_request",
    );
    let (_, other) = signed_in(&app, "sam").await;
    assert_error(
        &route(
            &app,
            call(
                "PATCH",
                &path,
                Some(&bearer(&other)),
                Some(&json!({"name": "Mine"})),
            ),
        )
        .await,
        404,
        "not_found",
    );
    assert_eq!(
        app.store
            .get_passkey(&phone.credentials[0].id_text())
            .await
            .unwrap()
            .unwrap()
            .name,
        "Work phone"
    );
}

#[tokio::test]
async fn a_passkey_sign_in_answers_as_a_login_in_cookie_mode_too() {
    let app = App::new(&fresh_store().await);
    let (_, access) = signed_in(&app, "cora").await;
    let mut laptop = page();
    add_passkey(&app, &access, &mut laptop, "Laptop").await;
    let (ceremony, options) = sign_in_options(&app).await;
    let assertion = laptop.get(&options, 0);
    let body =
        json!({"ceremony": ceremony, "credential": assertion, "refresh_token_delivery": "cookie"});
    // Not from the page's origin: refused before anything is used.
    let mut req = call("POST", "/login/passkey", None, Some(&body));
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_error(&route(&app, req).await, 403, "origin_not_allowed");
    let mut req = call("POST", "/login/passkey", None, Some(&body));
    req.headers_mut()
        .insert("origin", OWN_ORIGIN.parse().unwrap());
    let response = route(&app, req).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    assert!(
        body_json(&response)["refresh_token"].is_null(),
        "in the cookie only"
    );
    let cookies: Vec<_> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-refresh_token=") && c.contains("HttpOnly")),
        "{cookies:?}"
    );
}

#[tokio::test]
async fn each_ceremony_is_answered_once_and_only_by_whoever_began_it() {
    let app = App::new(&fresh_store().await);
    let (_, access) = signed_in(&app, "olga").await;
    let mut key = page();
    // A registration's ceremony: used once; the same answer again refused.
    let (ceremony, options) = registration_options(&app, &access).await;
    let credential = key.create(&options);
    let first = register(&app, &access, &ceremony, &credential, "Key").await;
    assert_eq!(first.status(), 201, "{}", body_json(&first));
    // (The account has a second factor now: the session proves it, and
    // stays the one that began the ceremony.)
    let access = verified(&app, &access, &mut key, 0).await;
    assert_error(
        &register(&app, &access, &ceremony, &credential, "Key").await,
        400,
        "invalid_ceremony",
    );
    // Another account's session cannot end this account's ceremony.
    let (_, other) = signed_in(&app, "mallory").await;
    let (ceremony, options) = registration_options(&app, &access).await;
    let mut second = page();
    let credential = second.create(&options);
    assert_error(
        &register(&app, &other, &ceremony, &credential, "Mine").await,
        400,
        "invalid_ceremony",
    );
    // ... and that try used it up.
    assert_error(
        &register(&app, &access, &ceremony, &credential, "Key 2").await,
        400,
        "invalid_ceremony",
    );

    // A sign-in's: once; its assertion under a new challenge, refused.
    let (ceremony, options) = sign_in_options(&app).await;
    let assertion = key.get(&options, 0);
    assert_eq!(sign_in(&app, &ceremony, &assertion).await.status(), 200);
    assert_error(
        &sign_in(&app, &ceremony, &assertion).await,
        400,
        "invalid_ceremony",
    );
    let (fresh, _) = sign_in_options(&app).await;
    assert_error(
        &sign_in(&app, &fresh, &assertion).await,
        401,
        "passkey_refused",
    );
    // Past its lifetime: gone.
    let (ceremony, options) = sign_in_options(&app).await;
    let late = App::with_clock(
        &app.store,
        Clock::skewed((CEREMONY_TTL.as_secs() as i64 + 1) * 1000),
    );
    let assertion = key.get(&options, 0);
    assert_error(
        &sign_in(&late, &ceremony, &assertion).await,
        400,
        "invalid_ceremony",
    );
    // An id of another shape, or a registration's used for a sign-in.
    assert_error(
        &sign_in(&app, "not-an-id", &assertion).await,
        400,
        "invalid_ceremony",
    );
    let (registration, _) = registration_options(&app, &access).await;
    assert_error(
        &sign_in(&app, &registration, &assertion).await,
        400,
        "invalid_ceremony",
    );
}

#[tokio::test]
async fn of_racers_with_one_ceremony_one_signs_in() {
    let app = App::new(&fresh_store().await);
    let (user, access) = signed_in(&app, "rae").await;
    let mut key = page();
    add_passkey(&app, &access, &mut key, "Key").await;
    let (ceremony, options) = sign_in_options(&app).await;
    let assertion = key.get(&options, 0);
    let racers = app.racers(6).await;
    let outcomes = race(
        racers
            .into_iter()
            .map(|racer| {
                let (ceremony, assertion) = (ceremony.clone(), assertion.clone());
                racing(async move {
                    let response = sign_in(&racer, &ceremony, &assertion).await;
                    (response.status().as_u16(), body_json(&response))
                })
            })
            .collect(),
    )
    .await;
    let won: Vec<_> = outcomes.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    for (status, body) in &outcomes {
        assert!(
            *status == 200 || (*status == 400 && body["error"] == "invalid_ceremony"),
            "{status} {body}"
        );
    }
    // One session began: the winner's (and the password's).
    let (sessions, _) = app
        .store
        .list_sessions(&user, auth::clock::system_now())
        .await
        .unwrap();
    let by_passkey = sessions
        .iter()
        .filter(|s| s.origin.method == auth::sessions::SignIn::Passkey)
        .count();
    assert_eq!(by_passkey, 1, "{sessions:?}");
}

#[tokio::test]
async fn answers_from_another_origin_or_relying_party_or_without_user_verification_are_refused_and_store_nothing()
 {
    let app = App::new(&fresh_store().await);
    let (_, access) = signed_in(&app, "vera").await;
    let bent: [(&str, Bend); 3] = [
        ("another origin", |b| {
            b.origin = "https://evil.example".into()
        }),
        ("another relying party", |b| {
            b.rp_id = Some("evil.example".into())
        }),
        ("no user verification", |b| b.user_verified = false),
    ];
    for (what, bend) in bent {
        let mut key = page();
        bend(&mut key.behaviour);
        let (ceremony, options) = registration_options(&app, &access).await;
        let credential = key.create(&options);
        assert_error(
            &register(&app, &access, &ceremony, &credential, "Bent").await,
            401,
            "passkey_refused",
        );
        assert!(user_named(&app, "vera").await.passkeys.is_empty(), "{what}");
        let id = key.credentials[0].id_text();
        assert!(
            app.store.get_passkey(&id).await.unwrap().is_none(),
            "{what}"
        );
    }
    // A browser that says it made no discoverable credential: refused.
    let mut key = page();
    key.behaviour.says_resident = Some(false);
    let (ceremony, options) = registration_options(&app, &access).await;
    let credential = key.create(&options);
    assert_error(
        &register(&app, &access, &ceremony, &credential, "Not discoverable").await,
        400,
        "invalid_request",
    );
    assert!(user_named(&app, "vera").await.passkeys.is_empty());

    // A passkey added as it should be, then signing in bent: refused, and
    // the stored passkey (its counter, its last use) untouched.
    let mut key = page();
    add_passkey(&app, &access, &mut key, "Key").await;
    let id = key.credentials[0].id_text();
    for (what, bend) in bent {
        let saved = key.behaviour.clone();
        bend(&mut key.behaviour);
        let response = sign_in_with(&app, &mut key, 0).await;
        assert_error(&response, 401, "passkey_refused");
        key.behaviour = saved;
        let stored = app.store.get_passkey(&id).await.unwrap().unwrap();
        assert_eq!((stored.counter, stored.last_used), (1, None), "{what}");
    }
    assert_eq!(sign_in_with(&app, &mut key, 0).await.status(), 200);
}

#[tokio::test]
async fn a_counter_that_goes_backwards_is_refused_and_the_owner_is_told() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let (_, access) = signed_in(&app, "hana").await;
    crate::matrix::verify_directly(&store, "hana", "hana@example.com").await;
    let mut key = page();
    add_passkey(&app, &access, &mut key, "Hardware key").await;
    assert_eq!(sign_in_with(&app, &mut key, 0).await.status(), 200);
    assert_eq!(sign_in_with(&app, &mut key, 0).await.status(), 200);
    let id = key.credentials[0].id_text();
    assert_eq!(
        app.store.get_passkey(&id).await.unwrap().unwrap().counter,
        3
    );
    // A clone made before the last two sign-ins.
    key.credentials[0].counter = 1;
    assert_error(
        &sign_in_with(&app, &mut key, 0).await,
        401,
        "passkey_refused",
    );
    // Its counter equal to the stored one: refused too.
    key.credentials[0].counter = 2;
    assert_error(
        &sign_in_with(&app, &mut key, 0).await,
        401,
        "passkey_refused",
    );
    assert_eq!(
        app.store.get_passkey(&id).await.unwrap().unwrap().counter,
        3
    );
    // Told once, though the copy tried twice: at most once an hour.
    let jobs = store.pending_jobs().await.unwrap();
    let told = jobs
        .iter()
        .filter(|(_, job)| {
            matches!(job, auth::outbox::MailJob::Notice {
                notice: auth::outbox::Notice::PasskeyCloned { name }, ..
            } if name == "Hardware key")
        })
        .count();
    assert_eq!(told, 1, "{jobs:?}");
    // The original, ahead of the clone, still signs in.
    key.credentials[0].counter = 3;
    assert_eq!(sign_in_with(&app, &mut key, 0).await.status(), 200);
    // A passkey that keeps no counter (synced) shows 0 every time: fine.
    // (A second passkey needs the first one's proof.)
    let access = verified(&app, &access, &mut key, 0).await;
    let mut synced = page();
    synced.behaviour.counts = false;
    synced.behaviour.backup_eligible = true;
    synced.behaviour.backed_up = true;
    let added = add_passkey(&app, &access, &mut synced, "Synced").await;
    assert_eq!(added["synced"], true);
    for _ in 0..2 {
        assert_eq!(sign_in_with(&app, &mut synced, 0).await.status(), 200);
    }
}

#[tokio::test]
async fn a_credential_belongs_to_one_account_and_answers_only_for_it() {
    let app = App::new(&fresh_store().await);
    let (alice, alice_access) = signed_in(&app, "alice").await;
    let (_, bob_access) = signed_in(&app, "bob").await;
    let mut alices = page();
    add_passkey(&app, &alice_access, &mut alices, "Alice's").await;
    let mut bobs = page();
    add_passkey(&app, &bob_access, &mut bobs, "Bob's").await;
    let bob_access = verified(&app, &bob_access, &mut bobs, 0).await;
    // Alice's credential registered again, for Bob: refused, nothing moved.
    let (ceremony, options) = registration_options(&app, &bob_access).await;
    let again = alices.create_again(&options, 0);
    assert_error(
        &register(&app, &bob_access, &ceremony, &again, "Stolen").await,
        409,
        "conflict",
    );
    let stored = app
        .store
        .get_passkey(&alices.credentials[0].id_text())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stored.user_id, &*stored.name), (alice.id, "Alice's"));
    assert_eq!(user_named(&app, "bob").await.passkeys.len(), 1);
    // Bob's passkey claiming to be Alice's handle: refused.
    let (ceremony, options) = sign_in_options(&app).await;
    let mut assertion = bobs.get(&options, 0);
    assertion["response"]["userHandle"] = alices.get(&options, 0)["response"]["userHandle"].clone();
    assert_error(
        &sign_in(&app, &ceremony, &assertion).await,
        401,
        "passkey_refused",
    );
    // Bob's passkey signing what Alice's id names: refused.
    let (ceremony, options) = sign_in_options(&app).await;
    let mut assertion = bobs.get(&options, 0);
    assertion["id"] = alices.credentials[0].id_text().into();
    assertion["rawId"] = alices.credentials[0].id_text().into();
    assertion["response"]["userHandle"] = alices.get(&options, 0)["response"]["userHandle"].clone();
    assert_error(
        &sign_in(&app, &ceremony, &assertion).await,
        401,
        "passkey_refused",
    );
    // A passkey we never kept: the same answer.
    let mut stranger = page();
    let (_, carl) = signed_in(&app, "carl").await;
    let (_, options) = registration_options(&app, &carl).await;
    stranger.create(&options);
    assert_error(
        &sign_in_with(&app, &mut stranger, 0).await,
        401,
        "passkey_refused",
    );
}

#[tokio::test]
async fn a_removed_passkey_or_a_deleted_account_refuses_at_once() {
    let app = App::new(&fresh_store().await);
    let (_, access) = signed_in(&app, "ruth").await;
    let mut key = page();
    add_passkey(&app, &access, &mut key, "Key").await;
    // The account has a second factor now: a second passkey needs its proof.
    assert_error(
        &route(
            &app,
            call(
                "POST",
                "/account/passkeys/options",
                Some(&bearer(&access)),
                None,
            ),
        )
        .await,
        401,
        "insufficient_user_authentication",
    );
    let access = verified(&app, &access, &mut key, 0).await;
    let mut spare = page();
    add_passkey(&app, &access, &mut spare, "Spare").await;
    let path = format!("/account/passkeys/{}", key.credentials[0].id_text());
    // Removal needs a fresh proof.
    let later = App::with_clock(&app.store, Clock::skewed(3600 * 1000));
    assert_error(
        &route(&later, call("DELETE", &path, Some(&bearer(&access)), None)).await,
        401,
        "insufficient_user_authentication",
    );
    let removed = route(&app, call("DELETE", &path, Some(&bearer(&access)), None)).await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    assert_eq!(body_json(&removed)["message"], "Passkey removed");
    assert!(
        app.store
            .get_passkey(&key.credentials[0].id_text())
            .await
            .unwrap()
            .is_none()
    );
    assert_error(
        &sign_in_with(&app, &mut key, 0).await,
        401,
        "passkey_refused",
    );
    assert_error(
        &route(&app, call("DELETE", &path, Some(&bearer(&access)), None)).await,
        404,
        "not_found",
    );
    // The account deleted: its passkeys go with it.
    assert_eq!(sign_in_with(&app, &mut spare, 0).await.status(), 200);
    let deleted = auth::handlers::account::handle(
        &app.account(),
        request(
            "delete-account.json",
            Some(&bearer(&access)),
            Some(&json!({"password": PASSWORD}).to_string()),
        ),
    )
    .await;
    assert_eq!(deleted.status(), 200, "{}", body_json(&deleted));
    assert!(
        app.store
            .get_passkey(&spare.credentials[0].id_text())
            .await
            .unwrap()
            .is_none()
    );
    assert_error(
        &sign_in_with(&app, &mut spare, 0).await,
        401,
        "passkey_refused",
    );
}

#[tokio::test]
async fn adding_a_passkey_needs_a_fresh_proof_and_stops_at_the_most_an_account_may_hold() {
    let app = App::new(&fresh_store().await);
    let (_, access) = signed_in(&app, "nell").await;
    let later = App::with_clock(&app.store, Clock::skewed(3600 * 1000));
    assert_error(
        &route(
            &later,
            call(
                "POST",
                "/account/passkeys/options",
                Some(&bearer(&access)),
                None,
            ),
        )
        .await,
        401,
        "insufficient_user_authentication",
    );
    assert_error(
        &route(&app, call("POST", "/account/passkeys/options", None, None)).await,
        401,
        "missing_token",
    );
    // A proof recent when the ceremony began, stale when it ends: refused.
    let (ceremony, options) = registration_options(&app, &access).await;
    let credential = page().create(&options);
    assert_error(
        &register(&later, &access, &ceremony, &credential, "Late").await,
        401,
        "insufficient_user_authentication",
    );
    assert!(user_named(&app, "nell").await.passkeys.is_empty());
    let mut first = page();
    add_passkey(&app, &access, &mut first, "Key 0").await;
    // More need the first one's proof (the account has a second factor).
    let access = verified(&app, &access, &mut first, 0).await;
    // The options name the account's passkeys: the browser will not make a
    // second one on an authenticator that holds one of them.
    let (_, options) = registration_options(&app, &access).await;
    let excluded: Vec<_> = options["publicKey"]["excludeCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(excluded, [first.credentials[0].id_text()]);
    for i in 1..auth::passkeys::MAX_PASSKEYS {
        add_passkey(&app, &access, &mut page(), &format!("Key {i}")).await;
    }
    assert_error(
        &route(
            &app,
            call(
                "POST",
                "/account/passkeys/options",
                Some(&bearer(&access)),
                None,
            ),
        )
        .await,
        409,
        "conflict",
    );
    let user = user_named(&app, "nell").await;
    assert_eq!(user.passkeys.len(), auth::passkeys::MAX_PASSKEYS);
}

#[tokio::test]
async fn a_credential_id_longer_than_webauthn_allows_is_refused_not_a_500() {
    let app = App::new(&fresh_store().await);
    let (_, access) = signed_in(&app, "lena").await;
    // Past WebAuthn's bound, and long enough that its item's key would be
    // past DynamoDB's 2048 bytes (a ValidationException: a 500) if read.
    let long = URL_SAFE_NO_PAD.encode(vec![7u8; 1600]);
    // Registration: a clear 400, the ceremony left as it was.
    let mut key = page();
    let (ceremony, options) = registration_options(&app, &access).await;
    let mut credential = key.create(&options);
    credential["id"] = long.clone().into();
    credential["rawId"] = long.clone().into();
    assert_error(
        &register(&app, &access, &ceremony, &credential, "Long").await,
        400,
        "invalid_request",
    );
    assert!(user_named(&app, "lena").await.passkeys.is_empty());
    // Sign-in: the one refusal, before any read of it.
    add_passkey(&app, &access, &mut key, "Key").await;
    let (ceremony, options) = sign_in_options(&app).await;
    let mut assertion = key.get(&options, 0);
    assertion["id"] = long.clone().into();
    assertion["rawId"] = long.into();
    assert_error(
        &sign_in(&app, &ceremony, &assertion).await,
        401,
        "passkey_refused",
    );
}

#[tokio::test]
async fn the_only_way_to_sign_in_is_not_removed() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let (_, access) = signed_in(&app, "ines").await;
    let mut first = page();
    add_passkey(&app, &access, &mut first, "First").await;
    // The account loses its password (as one made through a provider has
    // none): the passkey is its only way in.
    local_client()
        .await
        .update_item()
        .table_name(store.table())
        .key(
            "pk",
            auth::store::aws_sdk_dynamodb::types::AttributeValue::S("USER#ines".into()),
        )
        .key(
            "sk",
            auth::store::aws_sdk_dynamodb::types::AttributeValue::S("PROFILE".into()),
        )
        .update_expression("SET password_hash = :none")
        .expression_attribute_values(
            ":none",
            auth::store::aws_sdk_dynamodb::types::AttributeValue::S(
                auth::users::NO_PASSWORD.into(),
            ),
        )
        .send()
        .await
        .unwrap();
    let response = sign_in_with(&app, &mut first, 0).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let access = body_json(&response)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/account/passkeys/{}", first.credentials[0].id_text());
    assert_error(
        &route(&app, call("DELETE", &path, Some(&bearer(&access)), None)).await,
        409,
        "conflict",
    );
    assert!(
        app.store
            .get_passkey(&first.credentials[0].id_text())
            .await
            .unwrap()
            .is_some()
    );
    // With a second one (added with the passkey's fresh proof), it goes.
    let mut second = page();
    add_passkey(&app, &access, &mut second, "Second").await;
    let removed = route(&app, call("DELETE", &path, Some(&bearer(&access)), None)).await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    assert_error(
        &sign_in_with(&app, &mut first, 0).await,
        401,
        "passkey_refused",
    );
    assert_eq!(sign_in_with(&app, &mut second, 0).await.status(), 200);
}

#[tokio::test]
async fn a_passkey_proves_a_fresh_second_factor_within_the_session() {
    let app = App::new(&fresh_store().await);
    // Signed in with the password a while ago: still a live token, but no
    // recent proof.
    let earlier = App::with_clock(&app.store, Clock::skewed(-700 * 1000));
    let (user, access) = signed_in(&earlier, "vera").await;
    let sid = verifier().verify(&access).await.unwrap().sid;
    // Nothing to prove yet, and never without a session.
    assert_error(&verify_options(&earlier, &access).await, 409, "conflict");
    assert_error(
        &route(
            &app,
            call("POST", "/account/passkeys/verify/options", None, None),
        )
        .await,
        401,
        "missing_token",
    );
    let mut key = page();
    add_passkey(&earlier, &access, &mut key, "Key").await;
    // The account has a second factor now: deletion asks for it.
    let delete = |access: &str| {
        request(
            "delete-account.json",
            Some(&bearer(access)),
            Some(&json!({"password": PASSWORD}).to_string()),
        )
    };
    assert_error(
        &auth::handlers::account::handle(&app.account(), delete(&access)).await,
        401,
        "insufficient_user_authentication",
    );

    // Now, the session's proof is stale: the passkey renews it.
    let options = verify_options(&app, &access).await;
    assert_eq!(options.status(), 200, "{}", body_json(&options));
    let options = body_json(&options);
    // Only this account's passkeys may answer, the person verified.
    let allowed: Vec<_> = options["options"]["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(allowed, [key.credentials[0].id_text()]);
    assert_eq!(
        options["options"]["publicKey"]["userVerification"],
        "required"
    );
    let ceremony = options["ceremony"].as_str().unwrap().to_owned();
    let credential = key.get(&options["options"], 0);
    let before = app.clock.now();
    let answered = verify(&app, &access, &ceremony, &credential).await;
    assert_eq!(answered.status(), 200, "{}", body_json(&answered));
    assert_eq!(body_json(&answered)["message"], "Reauthenticated");
    let fresh = access_of(&answered);
    let claims = verifier().verify(&fresh).await.unwrap();
    assert_eq!(claims.sid, sid, "the same session");
    assert_eq!(claims.sub, user.id.to_string());
    assert_eq!(claims.amr, ["swk", "user", "mfa"]);
    assert_eq!(claims.acr.as_deref(), Some("aal2"));
    assert!(
        (before..=app.clock.now()).contains(&claims.auth_time),
        "a proof made now"
    );
    assert_eq!(
        app.store
            .get_passkey(&key.credentials[0].id_text())
            .await
            .unwrap()
            .unwrap()
            .counter,
        key.credentials[0].counter,
        "its counter moved on"
    );
    // The same answer again: the ceremony is spent.
    assert_error(
        &verify(&app, &access, &ceremony, &credential).await,
        400,
        "invalid_ceremony",
    );

    // A ceremony answers only in the session that began it.
    let body = json!({"username": "vera", "password": PASSWORD}).to_string();
    let second_login =
        auth::handlers::login::handle(&app.login(), request("login.json", None, Some(&body))).await;
    let other = access_of(&second_login);
    let other_refresh = body_json(&second_login)["refresh_token"].clone();
    let options = body_json(&verify_options(&app, &other).await);
    let credential = key.get(&options["options"], 0);
    assert_error(
        &verify(
            &app,
            &access,
            options["ceremony"].as_str().unwrap(),
            &credential,
        )
        .await,
        400,
        "invalid_ceremony",
    );
    // Another account's passkey does not answer for this one.
    let (_, wes) = signed_in(&app, "wes").await;
    let mut wes_key = page();
    add_passkey(&app, &wes, &mut wes_key, "Wes's").await;
    let wes_id = wes_key.credentials[0].id_text();
    let wes_counter = app
        .store
        .get_passkey(&wes_id)
        .await
        .unwrap()
        .unwrap()
        .counter;
    let options = body_json(&verify_options(&app, &other).await);
    let foreign = wes_key.get(&options["options"], 0);
    assert_error(
        &verify(
            &app,
            &other,
            options["ceremony"].as_str().unwrap(),
            &foreign,
        )
        .await,
        401,
        "passkey_refused",
    );
    let wes_stored = app.store.get_passkey(&wes_id).await.unwrap().unwrap();
    assert_eq!(wes_stored.counter, wes_counter, "untouched");
    // Nor does one without user verification.
    key.behaviour.user_verified = false;
    let options = body_json(&verify_options(&app, &other).await);
    let unverified = key.get(&options["options"], 0);
    assert_error(
        &verify(
            &app,
            &other,
            options["ceremony"].as_str().unwrap(),
            &unverified,
        )
        .await,
        401,
        "passkey_refused",
    );
    key.behaviour.user_verified = true;

    // Proved in that session now, its refreshes carry the proof on.
    verified(&app, &other, &mut key, 0).await;
    let refreshed = auth::handlers::refresh::handle(
        &app.refresh(),
        request(
            "refresh.json",
            None,
            Some(&json!({"refresh_token": other_refresh}).to_string()),
        ),
    )
    .await;
    assert_eq!(refreshed.status(), 200, "{}", body_json(&refreshed));
    let claims = verifier().verify(&access_of(&refreshed)).await.unwrap();
    assert_eq!(claims.amr, ["swk", "user", "mfa"]);
    assert_eq!(claims.acr.as_deref(), Some("aal2"));
    // And the fresh token does what needed it.
    let deleted = auth::handlers::account::handle(&app.account(), delete(&fresh)).await;
    assert_eq!(deleted.status(), 200, "{}", body_json(&deleted));
}

#[tokio::test]
async fn a_code_factor_is_added_beside_a_passkey_only_with_its_proof() {
    let app = App::new(&fresh_store().await);
    let (_, access) = signed_in(&app, "otto").await;
    let mut key = page();
    add_passkey(&app, &access, &mut key, "Key").await;
    let factors = app.second_factor();
    let enrol = |access: &str| {
        auth::handlers::second_factor::handle(
            &factors,
            request("second-factor.json", Some(&bearer(access)), None),
        )
    };
    // The password alone (a fresh sign-in) would make a second factor of
    // its own, and with it `aal2`: refused.
    assert_error(
        &enrol(&access).await,
        401,
        "insufficient_user_authentication",
    );
    assert!(
        app.store
            .get_factor(&user_named(&app, "otto").await.id)
            .await
            .unwrap()
            .is_none()
    );
    // With the passkey proved, it begins.
    let verified = verified(&app, &access, &mut key, 0).await;
    let begun = enrol(&verified).await;
    assert_eq!(begun.status(), 201, "{}", body_json(&begun));
}

#[tokio::test]
async fn a_re_authentication_refuses_a_copy_behind_the_stored_counter_and_a_session_that_ended() {
    let store = fresh_store().await;
    let app = App::new(&store);
    let (_, access) = signed_in(&app, "cleo").await;
    crate::matrix::verify_directly(&store, "cleo", "cleo@example.com").await;
    let mut key = page();
    add_passkey(&app, &access, &mut key, "Key").await;
    let id = key.credentials[0].id_text();
    // The challenge is asked for; before it is answered, the key signs in
    // elsewhere (its counter moves on), and a copy made before that answers.
    let options = body_json(&verify_options(&app, &access).await);
    let before = key.credentials[0].counter;
    assert_eq!(sign_in_with(&app, &mut key, 0).await.status(), 200);
    let stored = app.store.get_passkey(&id).await.unwrap().unwrap().counter;
    // The copy: the key as it was before that sign-in.
    key.credentials[0].counter = before;
    let answer = key.get(&options["options"], 0);
    assert_eq!(key.credentials[0].counter, stored, "the copy is not ahead");
    assert_error(
        &verify(
            &app,
            &access,
            options["ceremony"].as_str().unwrap(),
            &answer,
        )
        .await,
        401,
        "passkey_refused",
    );
    assert_eq!(
        app.store.get_passkey(&id).await.unwrap().unwrap().counter,
        stored
    );
    let jobs = store.pending_jobs().await.unwrap();
    assert!(
        jobs.iter().any(|(_, job)| matches!(
            job,
            auth::outbox::MailJob::Notice {
                notice: auth::outbox::Notice::PasskeyCloned { .. },
                ..
            }
        )),
        "the owner is told: {jobs:?}"
    );
    // A session that ended between the challenge and its answer: refused,
    // and the passkey's counter stays.
    let options = body_json(&verify_options(&app, &access).await);
    let ended = auth::handlers::logout::handle(
        &app.logout(),
        request("logout.json", Some(&bearer(&access)), None),
    )
    .await;
    assert_eq!(ended.status(), 200, "{}", body_json(&ended));
    let answer = key.get(&options["options"], 0);
    assert_error(
        &verify(
            &app,
            &access,
            options["ceremony"].as_str().unwrap(),
            &answer,
        )
        .await,
        401,
        "invalid_token",
    );
    assert_eq!(
        app.store.get_passkey(&id).await.unwrap().unwrap().counter,
        stored
    );
}

/// `POST /login/passkey/options` with a password step's `mfa_token`.
pub(crate) async fn second_step_options(app: &App, token: &str) -> Response<Body> {
    let body = json!({ "mfa_token": token });
    route(
        app,
        call("POST", "/login/passkey/options", None, Some(&body)),
    )
    .await
}

pub(crate) async fn second_step(
    app: &App,
    token: &str,
    ceremony: &str,
    credential: &Value,
) -> Response<Body> {
    let body = json!({"ceremony": ceremony, "credential": credential, "mfa_token": token});
    route(app, call("POST", "/login/passkey", None, Some(&body))).await
}

#[tokio::test]
async fn a_passkey_is_the_second_step_after_a_password() {
    use crate::mfa::{code, enrolled, next_step, password_login, with_code};
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(crate::mfa::mid_step()));
    let pia = enrolled(&app, "pia").await;
    next_step(&app);
    // Signed in with the password and a code (aal2), a passkey is added.
    let ticket = |response: Response<Body>| {
        let json = assert_error(&response, 401, "mfa_required");
        (
            json["factors"].clone(),
            json["mfa_token"].as_str().unwrap().to_owned(),
        )
    };
    let (factors, token) = ticket(password_login(&app, "pia").await);
    assert_eq!(factors, json!(["totp", "recovery_code"]));
    let coded = with_code(&app, &token, &code(&pia.secret, app.clock.now())).await;
    assert_eq!(coded.status(), 200, "{}", body_json(&coded));
    let mut key = page();
    add_passkey(&app, &access_of(&coded), &mut key, "Key").await;
    next_step(&app);

    // The password step now names the passkey; its challenge names only
    // the account's passkeys, and its answer begins the session.
    let (factors, token) = ticket(password_login(&app, "pia").await);
    assert_eq!(factors, json!(["totp", "recovery_code", "passkey"]));
    let options = second_step_options(&app, &token).await;
    assert_eq!(options.status(), 200, "{}", body_json(&options));
    let options = body_json(&options);
    let allowed: Vec<_> = options["options"]["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(allowed, [key.credentials[0].id_text()]);
    let ceremony = options["ceremony"].as_str().unwrap().to_owned();
    let credential = key.get(&options["options"], 0);
    // Another ticket (another password step) does not take this ceremony.
    let (_, other_token) = ticket(password_login(&app, "pia").await);
    assert_error(
        &second_step(&app, &other_token, &ceremony, &credential).await,
        400,
        "invalid_ceremony",
    );
    let options = body_json(&second_step_options(&app, &token).await);
    let credential = key.get(&options["options"], 0);
    let response = second_step(
        &app,
        &token,
        options["ceremony"].as_str().unwrap(),
        &credential,
    )
    .await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let claims = verifier().verify(&access_of(&response)).await.unwrap();
    assert_eq!(claims.sub, pia.user.id.to_string());
    assert_eq!(claims.amr, ["pwd", "swk", "user", "mfa"]);
    assert_eq!(claims.acr.as_deref(), Some("aal2"));
    let stepped_with_passkey = access_of(&response);
    // The ticket is used up: a code with it is refused.
    next_step(&app);
    assert_error(
        &with_code(&app, &token, &code(&pia.secret, app.clock.now())).await,
        401,
        "invalid_mfa_token",
    );
    assert_error(
        &second_step_options(&app, &token).await,
        401,
        "invalid_mfa_token",
    );
    assert_error(
        &second_step_options(&app, "not-a-token").await,
        401,
        "invalid_mfa_token",
    );

    // Another account's passkey does not answer for this one, and the
    // ticket survives the try: a code then signs in with it.
    let (_, bob) = signed_in(&app, "bob").await;
    let mut bobs = page();
    add_passkey(&app, &bob, &mut bobs, "Bob's").await;
    let (_, token) = ticket(password_login(&app, "pia").await);
    let options = body_json(&second_step_options(&app, &token).await);
    let foreign = bobs.get(&options["options"], 0);
    assert_error(
        &second_step(
            &app,
            &token,
            options["ceremony"].as_str().unwrap(),
            &foreign,
        )
        .await,
        401,
        "passkey_refused",
    );
    let coded = with_code(&app, &token, &code(&pia.secret, app.clock.now())).await;
    assert_eq!(coded.status(), 200, "{}", body_json(&coded));

    // The passkey removed from the code's session: the session its second
    // step began ends with it, and not with another's removal.
    let coded = access_of(&coded);
    let mut spare = page();
    add_passkey(&app, &coded, &mut spare, "Spare").await;
    let path = format!("/account/passkeys/{}", spare.credentials[0].id_text());
    let removed = route(&app, call("DELETE", &path, Some(&bearer(&coded)), None)).await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    assert!(acts(&app, &stepped_with_passkey).await);
    let path = format!("/account/passkeys/{}", key.credentials[0].id_text());
    let removed = route(&app, call("DELETE", &path, Some(&bearer(&coded)), None)).await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    assert!(!acts(&app, &stepped_with_passkey).await);
    assert!(acts(&app, &coded).await);
}

/// A person who lost the device that held their only passkey: an admin
/// clears their second factors as for a lost code factor, which ends every
/// session; the passkey signs in no more, the password alone does.
#[tokio::test]
async fn an_admin_clears_the_passkeys_of_a_person_who_lost_them() {
    use lambda_http::http::Method;
    let store = fresh_store().await;
    let app = App::new(&store);
    let (_, access) = signed_in(&app, "lena-lost").await;
    let mut key = page();
    add_passkey(&app, &access, &mut key, "Lost").await;
    let access = verified(&app, &access, &mut key, 0).await;
    crate::permissions::admin_in(&store, "chief-pk").await;
    let chief = crate::sessions::session(&app, "chief-pk").await.access;
    let admin = |path: &str| {
        let mut req = request("admin-user.json", Some(&bearer(&chief)), None);
        *req.method_mut() = Method::DELETE;
        *req.uri_mut() = path.parse().unwrap();
        let state = app.admin();
        async move { auth::handlers::admin::handle(&state, req).await }
    };
    let viewed = {
        let req = request("admin-user.json", Some(&bearer(&chief)), None);
        let mut req = req;
        *req.uri_mut() = "/admin/users/lena-lost".parse().unwrap();
        auth::handlers::admin::handle(&app.admin(), req).await
    };
    assert_eq!(viewed.status(), 200, "{}", body_json(&viewed));
    assert_eq!(
        body_json(&viewed)["user"]["passkeys"],
        1,
        "the admin sees it"
    );
    let removed = admin("/admin/users/lena-lost/second-factor").await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    assert_eq!(
        body_json(&removed)["user"]["passkeys"],
        0,
        "{}",
        body_json(&removed)
    );
    let id = key.credentials[0].id_text();
    assert!(app.store.get_passkey(&id).await.unwrap().is_none());
    assert!(user_named(&app, "lena-lost").await.passkeys.is_empty());
    assert_error(
        &sign_in_with(&app, &mut key, 0).await,
        401,
        "passkey_refused",
    );
    // Every session ended; the password alone signs in.
    let ended = auth::handlers::get_name::handle(
        &app.get_name(),
        request("get-name.json", Some(&bearer(&access)), None),
    )
    .await;
    assert_error(&ended, 401, "invalid_token");
    let body = json!({"username": "lena-lost", "password": PASSWORD}).to_string();
    let signed_in_again =
        auth::handlers::login::handle(&app.login(), request("login.json", None, Some(&body))).await;
    assert_eq!(
        signed_in_again.status(),
        200,
        "{}",
        body_json(&signed_in_again)
    );
    let again = access_of(&signed_in_again);
    // With no second factor left, it may add a passkey again with the password.
    add_passkey(&app, &again, &mut page(), "New").await;
    // Nothing left to clear for a user with none: 409.
    signed_in(&app, "nobody-lost").await;
    assert_error(
        &admin("/admin/users/nobody-lost/second-factor").await,
        409,
        "conflict",
    );
}

/// A new session of `username`'s, with the password: its access token.
async fn logged_in(app: &App, username: &str) -> String {
    let body = json!({"username": username, "password": PASSWORD}).to_string();
    let response =
        auth::handlers::login::handle(&app.login(), request("login.json", None, Some(&body))).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    access_of(&response)
}

/// Whether the session of `access` still acts: its token lists the passkeys.
async fn acts(app: &App, access: &str) -> bool {
    let response = route(
        app,
        call("GET", "/account/passkeys", Some(&bearer(access)), None),
    )
    .await;
    match response.status().as_u16() {
        200 => true,
        401 => false,
        other => panic!("{other}: {}", body_json(&response)),
    }
}

#[tokio::test]
async fn removing_a_passkey_ends_the_sessions_it_proved_but_the_removers() {
    let app = App::new(&fresh_store().await);
    let (_, first) = signed_in(&app, "sven").await;
    let mut lost = page();
    add_passkey(&app, &first, &mut lost, "Lost phone").await;
    let owner = verified(&app, &first, &mut lost, 0).await;
    let mut kept = page();
    add_passkey(&app, &owner, &mut kept, "Laptop").await;
    // Whoever found the phone: a sign-in with it, and a password session
    // stepped up with it.
    let thief = sign_in_with(&app, &mut lost, 0).await;
    assert_eq!(thief.status(), 200, "{}", body_json(&thief));
    let thief = access_of(&thief);
    let stepped = logged_in(&app, "sven").await;
    let stepped = verified(&app, &stepped, &mut lost, 0).await;
    // The owner's other sessions: one the laptop signed in, one with the
    // password alone.
    let laptop = access_of(&sign_in_with(&app, &mut kept, 0).await);
    let password = logged_in(&app, "sven").await;
    let stepped_with_laptop = logged_in(&app, "sven").await;
    let stepped_with_laptop = verified(&app, &stepped_with_laptop, &mut kept, 0).await;
    for access in [
        &thief,
        &stepped,
        &laptop,
        &password,
        &stepped_with_laptop,
        &owner,
    ] {
        assert!(acts(&app, access).await);
    }
    // The owner removes the lost passkey from the session it last proved.
    let path = format!("/account/passkeys/{}", lost.credentials[0].id_text());
    let removed = route(&app, call("DELETE", &path, Some(&bearer(&owner)), None)).await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    assert!(!acts(&app, &thief).await, "the thief's sign-in ended");
    assert!(
        !acts(&app, &stepped).await,
        "the session it stepped up ended"
    );
    assert!(
        acts(&app, &laptop).await,
        "another passkey's session goes on"
    );
    assert!(acts(&app, &password).await, "a password's session goes on");
    assert!(
        acts(&app, &stepped_with_laptop).await,
        "a session another passkey stepped up goes on"
    );
    assert!(
        acts(&app, &owner).await,
        "the remover's own session goes on"
    );
}

#[tokio::test]
async fn a_removal_that_read_the_passkey_before_a_sign_in_with_it_is_refused() {
    let app = App::new(&fresh_store().await);
    let (_, first) = signed_in(&app, "tove").await;
    let mut key = page();
    add_passkey(&app, &first, &mut key, "Key").await;
    let owner = verified(&app, &first, &mut key, 0).await;
    let id = key.credentials[0].id_text();
    let read = app.store.get_passkey(&id).await.unwrap().unwrap();
    // A sign-in lands between the removal's read (and its list of the
    // sessions to end) and its write: that session was never listed.
    assert_eq!(sign_in_with(&app, &mut key, 0).await.status(), 200);
    let user = user_named(&app, "tove").await;
    let sid = crate::permissions::claims_of(&owner)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let stale = app
        .store
        .remove_passkey(&user, &sid, &read, false, app.clock.now())
        .await;
    assert!(
        matches!(stale, Err(auth::store::StoreError::Conflict)),
        "{stale:?}"
    );
    assert!(app.store.get_passkey(&id).await.unwrap().is_some());
    // Read again, it goes.
    let fresh = app.store.get_passkey(&id).await.unwrap().unwrap();
    assert_eq!(fresh.uses, read.uses + 1);
    app.store
        .remove_passkey(&user, &sid, &fresh, false, app.clock.now())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_passkey_that_proved_more_sessions_than_end_one_by_one_ends_them_all() {
    let app = App::new(&fresh_store().await);
    let (_, first) = signed_in(&app, "uno").await;
    let mut lost = page();
    add_passkey(&app, &first, &mut lost, "Lost").await;
    let owner = verified(&app, &first, &mut lost, 0).await;
    let mut kept = page();
    add_passkey(&app, &owner, &mut kept, "Kept").await;
    let laptop = access_of(&sign_in_with(&app, &mut kept, 0).await);
    let mut thief = Vec::new();
    for _ in 0..51 {
        let response = sign_in_with(&app, &mut lost, 0).await;
        assert_eq!(response.status(), 200, "{}", body_json(&response));
        thief.push(access_of(&response));
    }
    let path = format!("/account/passkeys/{}", lost.credentials[0].id_text());
    let removed = route(&app, call("DELETE", &path, Some(&bearer(&owner)), None)).await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    for access in thief.iter().chain([&laptop, &owner]) {
        assert!(!acts(&app, access).await, "every session ended");
    }
    // The account is whole: the kept passkey signs in.
    assert_eq!(sign_in_with(&app, &mut kept, 0).await.status(), 200);
}

/// `REMOVE`s `attributes` from the item `pk`/`sk`, behind the store's back.
async fn forget(store: &auth::store::Store, pk: &str, sk: &str, attributes: &[&str]) {
    use auth::store::aws_sdk_dynamodb::types::AttributeValue;
    let names: Vec<String> = (0..attributes.len()).map(|i| format!("#a{i}")).collect();
    let mut update = local_client()
        .await
        .update_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .update_expression(format!("REMOVE {}", names.join(", ")));
    for (name, attribute) in names.iter().zip(attributes) {
        update = update.expression_attribute_names(name, *attribute);
    }
    update.send().await.unwrap();
}

fn sid_of(access: &str) -> String {
    crate::permissions::claims_of(access)["sid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn sessions_the_list_does_not_show_yet_or_from_before_sessions_named_their_passkey_end_too() {
    let app = App::new(&fresh_store().await);
    let (_, first) = signed_in(&app, "vera").await;
    let mut key = page();
    add_passkey(&app, &first, &mut key, "Key").await;
    let owner = verified(&app, &first, &mut key, 0).await;
    let id = key.credentials[0].id_text();
    let passkey_pk = format!("PASSKEY#{id}");
    // A sign-in the sessions' index has not caught up with (eventually
    // consistent): the list does not show it; the passkey's item marks it.
    let unlisted = access_of(&sign_in_with(&app, &mut key, 0).await);
    let unlisted_sid = sid_of(&unlisted);
    forget(
        &app.store,
        &format!("SESSION#{unlisted_sid}"),
        "SESSION",
        &["session_owner"],
    )
    .await;
    let (listed, _) = app
        .store
        .list_sessions(&user_named(&app, "vera").await, app.clock.now())
        .await
        .unwrap();
    assert!(listed.iter().all(|s| s.id != unlisted_sid));
    // A session from before sessions named their passkey, its mark on the
    // passkey long forgotten; and the passkey from before its uses were
    // counted.
    let older = access_of(&sign_in_with(&app, &mut key, 0).await);
    let older_sid = sid_of(&older);
    forget(
        &app.store,
        &format!("SESSION#{older_sid}"),
        "SESSION",
        &["passkey"],
    )
    .await;
    let mark = format!("{}{older_sid}", auth::passkeys::PROVED_PREFIX);
    forget(&app.store, &passkey_pk, "PASSKEY", &[&mark, "uses"]).await;
    let read = app.store.get_passkey(&id).await.unwrap().unwrap();
    assert_eq!(read.uses, 0);
    assert!(read.recent.iter().any(|(sid, _)| *sid == unlisted_sid));
    assert!(read.recent.iter().all(|(sid, _)| *sid != older_sid));
    let password = logged_in(&app, "vera").await;

    let path = format!("/account/passkeys/{id}");
    let removed = route(&app, call("DELETE", &path, Some(&bearer(&owner)), None)).await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    assert!(!acts(&app, &unlisted).await, "the unlisted sign-in ended");
    assert!(!acts(&app, &older).await, "the older passkey session ended");
    assert!(acts(&app, &password).await, "a password's session goes on");
    assert!(acts(&app, &owner).await);
}
