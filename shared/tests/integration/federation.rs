//! Sign-in through an outside identity provider, end to end through the
//! handlers, against DynamoDB Local and the stand-in provider
//! (`support::oidc`): the round trip, the accounts it makes and connects,
//! and every hostile case, none of which may yield a session.

use std::sync::Arc;

use auth::clock::Clock;
use auth::federation::{ExternalId, Provider, ProviderConfig, TRANSACTION_COOKIE};
use auth::handlers::federation::{self, Federation};
use auth::handlers::register::SignUp;
use auth::providers::{Hosts, ProviderHttp};
use auth::store::Store;
use auth::users::{NO_PASSWORD, Username};
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use crate::support::oidc::{CLIENT_ID, CLIENT_SECRET, Mint, Signing, StandIn};
use crate::support::{
    App, OWN_ORIGIN, add_user, bearer, body_json, browser_policy, event_text, fresh_store,
    generous_limits, issuer, session_config, verifier,
};

fn config(id: &str, stand_in: &StandIn) -> ProviderConfig {
    ProviderConfig {
        id: id.into(),
        name: format!("Stand-in {id}"),
        issuer: stand_in.issuer.clone(),
        client_id: CLIENT_ID.into(),
        client_secret_parameter: format!("/test/{id}"),
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        link_verified_email_domains: vec![],
    }
}

fn federation_with(store: &Store, configs: Vec<ProviderConfig>) -> Federation {
    Federation {
        store: store.clone(),
        tokens: issuer(),
        verifier: verifier(),
        sessions: session_config(),
        limits: generous_limits(),
        browser: browser_policy(),
        sign_up: SignUp::Open,
        fresh_auth: auth::permissions::DEFAULT_FRESH_AUTH_MAX_AGE,
        providers: configs
            .into_iter()
            .map(|c| Provider::new(c, CLIENT_SECRET.into(), OWN_ORIGIN))
            .collect(),
        http: ProviderHttp::new(Hosts::AlsoLoopback),
        page: OWN_ORIGIN.into(),
        clock: Clock::system(),
    }
}

/// A store, a stand-in provider (`test`) and the federation state on both.
pub(crate) struct Fixture {
    pub store: Store,
    pub idp: StandIn,
    pub state: Arc<Federation>,
}

async fn fixture() -> Fixture {
    fixture_on(&fresh_store().await).await
}

/// The federation state on `store` (one of its own, or a proxy's).
pub(crate) async fn fixture_on(store: &Store) -> Fixture {
    fixture_linking(store, &[]).await
}

/// The same, with the provider authoritative for `domains`' addresses.
pub(crate) async fn fixture_linking(store: &Store, domains: &[&str]) -> Fixture {
    let idp = StandIn::start().await;
    let mut provider = config("test", &idp);
    provider.link_verified_email_domains = domains.iter().map(|d| d.to_string()).collect();
    let state = Arc::new(federation_with(store, vec![provider]));
    Fixture {
        store: store.clone(),
        idp,
        state,
    }
}

/// A request to `path` (an API Gateway event, as `events/` holds them).
fn api_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Request {
    let mut event: Value = serde_json::from_str(&event_text("login.json")).unwrap();
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["http"]["method"] = json!(method);
    event["routeKey"] = json!(format!("ANY {path}"));
    event["rawQueryString"] = json!(query);
    let params: serde_json::Map<String, Value> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    if !params.is_empty() {
        event["queryStringParameters"] = Value::Object(params);
    }
    let map = event["headers"].as_object_mut().unwrap();
    map.remove("content-length");
    for (name, value) in headers {
        map.insert((*name).into(), json!(value));
    }
    if body.is_none() {
        map.remove("content-type");
    }
    match body {
        Some(body) => event["body"] = json!(body),
        None => {
            event.as_object_mut().unwrap().remove("body");
        }
    }
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// The value of cookie `name` that `response` sets, with its attributes.
fn set_cookie(response: &Response<Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{name}=")))
}

fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_owned()
}

fn location(response: &Response<Body>) -> String {
    assert_eq!(response.status(), 303, "a callback always ends in a 303");
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// A round trip begun in a browser: the provider's URL and the browser's
/// round-trip cookie.
struct Begun {
    url: String,
    handle: String,
}

async fn begin_with(
    state: &Federation,
    provider: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> Response<Body> {
    let mut headers = vec![("origin", OWN_ORIGIN), ("content-type", "application/json")];
    headers.extend_from_slice(extra);
    let req = api_request(
        "POST",
        &format!("/oidc/{provider}/start"),
        "",
        &headers,
        Some(body),
    );
    federation::handle(state, req).await
}

async fn begin(state: &Federation, provider: &str) -> Begun {
    let response = begin_with(state, provider, "{}", &[]).await;
    assert_eq!(response.status(), 200, "{:?}", body_json(&response));
    let cookie = set_cookie(&response, TRANSACTION_COOKIE).expect("the round trip's cookie");
    Begun {
        url: body_json(&response)["authorization_url"]
            .as_str()
            .unwrap()
            .to_owned(),
        handle: cookie_value(&cookie),
    }
}

/// The provider's redirect back, in a browser holding `handle` (or none).
async fn come_back(
    state: &Federation,
    provider: &str,
    query: &str,
    handle: Option<&str>,
) -> Response<Body> {
    let cookie = handle.map(|h| format!("{TRANSACTION_COOKIE}={h}"));
    let mut headers = vec![("sec-fetch-site", "cross-site")];
    if let Some(cookie) = &cookie {
        headers.push(("cookie", cookie.as_str()));
    }
    let req = api_request(
        "GET",
        &format!("/oidc/{provider}/callback"),
        query,
        &headers,
        None,
    );
    federation::handle(state, req).await
}

/// A whole round trip for `mint` at the `test` provider.
pub(crate) async fn round_trip(f: &Fixture, mint: Mint) -> Response<Body> {
    let begun = begin(&f.state, "test").await;
    let query = f.idp.authorize(&begun.url, mint);
    come_back(&f.state, "test", &query, Some(&begun.handle)).await
}

fn external(f: &Fixture, subject: &str) -> ExternalId {
    ExternalId {
        issuer: f.idp.issuer.clone(),
        subject: subject.into(),
    }
}

/// A callback that failed: back to the page with `error`, no session (no
/// refresh cookie), and the round trip's cookie cleared.
fn assert_refused(response: &Response<Body>, error: &str) {
    assert_eq!(
        location(response),
        format!("{OWN_ORIGIN}/#sign_in_error={error}")
    );
    assert!(
        set_cookie(response, "__Host-refresh_token").is_none(),
        "no session"
    );
    assert!(set_cookie(response, "__Host-device").is_none());
    let cleared = set_cookie(response, TRANSACTION_COOKIE).unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

/// A sign-in that succeeded: back to the page, with the refresh cookie.
pub(crate) fn assert_signed_in(response: &Response<Body>) -> String {
    assert_eq!(location(response), format!("{OWN_ORIGIN}/"));
    let refresh = set_cookie(response, "__Host-refresh_token").expect("a refresh cookie");
    assert!(
        refresh.contains("HttpOnly")
            && refresh.contains("Secure")
            && refresh.contains("SameSite=Strict")
    );
    assert!(set_cookie(response, "__Host-device").is_some());
    cookie_value(&refresh)
}

/// The user a refresh cookie's session is, through `/refresh` as the page
/// does after the redirect.
async fn user_of(f: &Fixture, refresh_token: &str) -> Value {
    let app = App::new(&f.store);
    let cookie = format!("__Host-refresh_token={refresh_token}");
    let req = api_request(
        "POST",
        "/refresh",
        "",
        &[
            ("origin", OWN_ORIGIN),
            ("content-type", "application/json"),
            ("cookie", &cookie),
        ],
        Some("{}"),
    );
    let response = auth::handlers::refresh::handle(&app.refresh(), req).await;
    assert_eq!(response.status(), 200, "{:?}", body_json(&response));
    let token = body_json(&response)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = verifier().verify(&token).await.unwrap();
    json!({"sub": claims.sub, "username": claims.username})
}

#[tokio::test]
async fn a_first_sign_in_makes_an_account_and_the_next_signs_in_to_it() {
    let f = fixture().await;
    let first = round_trip(
        &f,
        Mint::good("person-1").with("preferred_username", json!("Jane Doe")),
    )
    .await;
    let refresh = assert_signed_in(&first);
    let cleared = set_cookie(&first, TRANSACTION_COOKIE).unwrap();
    assert!(cleared.contains("Max-Age=0"));
    let who = user_of(&f, &refresh).await;
    assert_eq!(who["username"], "jane.doe");

    // The link, and the account: no password, its name from the provider.
    let link = f
        .store
        .get_identity(&external(&f, "person-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.user_id.to_string(), who["sub"]);
    assert_eq!(link.provider, "test");
    let user = f
        .store
        .get(&Username::parse("jane.doe").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.password_hash, NO_PASSWORD);
    assert!(!user.has_password());
    assert_eq!(user.name, "Stand-in Person");
    assert!(user.identities.contains(&external(&f, "person-1")));
    let (sessions, _) = f
        .store
        .list_sessions(&user, auth::clock::system_now())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].origin.method, auth::sessions::SignIn::Provider);

    // Again: the same account, a second session.
    let again = round_trip(&f, Mint::good("person-1")).await;
    let who_again = user_of(&f, &assert_signed_in(&again)).await;
    assert_eq!(who_again, who);

    // Another person whose proposed username is taken gets another.
    let other = round_trip(
        &f,
        Mint::good("person-2").with("preferred_username", json!("jane.doe")),
    )
    .await;
    let who_other = user_of(&f, &assert_signed_in(&other)).await;
    assert_ne!(who_other["sub"], who["sub"]);
    assert!(
        who_other["username"]
            .as_str()
            .unwrap()
            .starts_with("jane.doe-"),
        "{who_other}"
    );
}

#[tokio::test]
async fn an_account_without_a_password_cannot_log_in_with_one() {
    let f = fixture().await;
    let response = round_trip(
        &f,
        Mint::good("person-1").with("preferred_username", json!("nopass")),
    )
    .await;
    assert_signed_in(&response);
    let app = App::new(&f.store);
    for password in [NO_PASSWORD, "", "!none ", "anything-at-all-1"] {
        let body = json!({"username": "nopass", "password": password}).to_string();
        let req = crate::support::request("login.json", None, Some(&body));
        let response = auth::handlers::login::handle(&app.login(), req).await;
        assert!(
            matches!(response.status().as_u16(), 400 | 401),
            "{password:?}: {}",
            response.status()
        );
    }
}

#[tokio::test]
async fn a_replayed_callback_yields_nothing() {
    let f = fixture().await;
    let begun = begin(&f.state, "test").await;
    let query = f.idp.authorize(&begun.url, Mint::good("person-1"));
    assert_signed_in(&come_back(&f.state, "test", &query, Some(&begun.handle)).await);
    // The same callback again (a replay, a reload, a racer): used.
    assert_refused(
        &come_back(&f.state, "test", &query, Some(&begun.handle)).await,
        "sign_in_failed",
    );
}

#[tokio::test]
async fn racing_callbacks_of_one_round_trip_yield_one_session() {
    let f = fixture().await;
    let begun = begin(&f.state, "test").await;
    let query = f.idp.authorize(&begun.url, Mint::good("person-1"));
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (state, query, handle) = (f.state.clone(), query.clone(), begun.handle.clone());
            crate::support::racing(
                async move { come_back(&state, "test", &query, Some(&handle)).await },
            )
        })
        .collect();
    let responses = crate::support::race(racers).await;
    let signed_in = responses
        .iter()
        .filter(|r| set_cookie(r, "__Host-refresh_token").is_some())
        .count();
    assert_eq!(signed_in, 1, "one round trip, one session");
    for response in responses
        .iter()
        .filter(|r| set_cookie(r, "__Host-refresh_token").is_none())
    {
        assert_refused(response, "sign_in_failed");
    }
    assert_eq!(
        f.idp.calls("/token"),
        1,
        "the losers never reached the provider"
    );
}

#[tokio::test]
async fn a_callback_in_a_browser_that_did_not_start_it_yields_nothing() {
    let f = fixture().await;
    // The attacker begins a round trip and signs in at the provider as
    // themselves, then sends the victim's browser the callback (login CSRF).
    let attacker = begin(&f.state, "test").await;
    let query = f.idp.authorize(&attacker.url, Mint::good("attacker"));
    assert_refused(
        &come_back(&f.state, "test", &query, None).await,
        "sign_in_failed",
    );
    // A victim with a round trip of their own under way: theirs is not this one.
    let victim = begin(&f.state, "test").await;
    assert_refused(
        &come_back(&f.state, "test", &query, Some(&victim.handle)).await,
        "sign_in_failed",
    );
    // And a made-up round-trip cookie.
    assert_refused(
        &come_back(&f.state, "test", &query, Some("made-up")).await,
        "sign_in_failed",
    );
    assert!(
        f.store
            .get_identity(&external(&f, "attacker"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(f.idp.calls("/token"), 0, "no code was redeemed");
}

#[tokio::test]
async fn a_foreign_or_missing_state_yields_nothing() {
    let f = fixture().await;
    let begun = begin(&f.state, "test").await;
    let query = f.idp.authorize(&begun.url, Mint::good("person-1"));
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let with_state = |state: Option<&str>| {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params {
            if k != "state" {
                out.append_pair(k, v);
            }
        }
        if let Some(state) = state {
            out.append_pair("state", state);
        }
        out.finish()
    };
    assert_refused(
        &come_back(
            &f.state,
            "test",
            &with_state(Some("forged")),
            Some(&begun.handle),
        )
        .await,
        "sign_in_failed",
    );
    // The round trip is spent by the attempt: the real state fails now too.
    assert_refused(
        &come_back(&f.state, "test", &query, Some(&begun.handle)).await,
        "sign_in_failed",
    );
    let begun = begin(&f.state, "test").await;
    let query = f.idp.authorize(&begun.url, Mint::good("person-1"));
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let without: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().filter(|(k, _)| k != "state"))
        .finish();
    assert_refused(
        &come_back(&f.state, "test", &without, Some(&begun.handle)).await,
        "sign_in_failed",
    );
    assert!(
        f.store
            .get_identity(&external(&f, "person-1"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_replayed_code_yields_nothing() {
    let f = fixture().await;
    let first = begin(&f.state, "test").await;
    let used = f.idp.authorize(&first.url, Mint::good("person-1"));
    assert_signed_in(&come_back(&f.state, "test", &used, Some(&first.handle)).await);
    // The used code, in a new round trip of the same browser.
    let second = begin(&f.state, "test").await;
    let fresh = f.idp.authorize(&second.url, Mint::good("person-1"));
    let code = |q: &str| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned()
    };
    let replay = fresh.replace(&code(&fresh), &code(&used));
    assert_ne!(replay, fresh);
    assert_refused(
        &come_back(&f.state, "test", &replay, Some(&second.handle)).await,
        "sign_in_failed",
    );
    assert_eq!(
        f.idp.calls("/token"),
        2,
        "the provider refused the used code"
    );
}

/// An ID token of the kind `mint` orders is refused, and nobody is signed
/// in or linked.
async fn assert_token_refused(mint: Mint) {
    let f = fixture().await;
    let subject = mint.subject.clone();
    assert_refused(&round_trip(&f, mint).await, "sign_in_failed");
    assert_eq!(
        f.idp.calls("/token"),
        1,
        "the code was redeemed: the token is what failed"
    );
    assert!(
        f.store
            .get_identity(&external(&f, &subject))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_id_token_with_the_wrong_nonce_is_refused() {
    assert_token_refused(Mint::good("p").with("nonce", json!("another-round-trips"))).await;
    assert_token_refused(Mint::good("p").with("nonce", Value::Null)).await;
}

#[tokio::test]
async fn an_id_token_signed_by_another_key_is_refused() {
    assert_token_refused(Mint::good("p").signed(Signing::OtherKey)).await;
}

#[tokio::test]
async fn an_unsigned_id_token_is_refused() {
    assert_token_refused(Mint::good("p").signed(Signing::None)).await;
}

#[tokio::test]
async fn an_id_token_signed_hs256_with_the_providers_public_key_is_refused() {
    assert_token_refused(Mint::good("p").signed(Signing::Hs256WithPublicKey)).await;
}

#[tokio::test]
async fn an_id_token_for_another_audience_is_refused() {
    assert_token_refused(Mint::good("p").with("aud", json!("another-client"))).await;
    assert_token_refused(Mint::good("p").with("aud", json!([CLIENT_ID, "another-client"]))).await;
    assert_token_refused(Mint::good("p").with("azp", json!("another-client"))).await;
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    let now = auth::clock::system_now();
    assert_token_refused(
        Mint::good("p")
            .with("exp", json!(now - 3600))
            .with("iat", json!(now - 3700)),
    )
    .await;
}

#[tokio::test]
async fn an_id_token_from_the_other_provider_is_refused_and_so_is_its_callback() {
    // Two providers configured: `a`, honest, and `b`, which an attacker
    // runs (a mix-up, RFC 9700 §4.4).
    let store = fresh_store().await;
    let a = StandIn::start().await;
    let b = StandIn::start().await;
    let state = federation_with(&store, vec![config("a", &a), config("b", &b)]);
    // b's ID token, naming b as issuer, handed out by a's token endpoint.
    let begun = begin(&state, "a").await;
    let query = a.authorize(&begun.url, Mint::good("p").with("iss", json!(b.issuer)));
    assert_refused(
        &come_back(&state, "a", &query, Some(&begun.handle)).await,
        "sign_in_failed",
    );
    // a's answer sent to b's callback: the round trip is a's, and the iss
    // parameter names a.
    let begun = begin(&state, "a").await;
    let query = a.authorize(&begun.url, Mint::good("p"));
    assert_refused(
        &come_back(&state, "b", &query, Some(&begun.handle)).await,
        "sign_in_failed",
    );
    // b's answer (its iss) to a round trip begun with a.
    let begun = begin(&state, "a").await;
    let query = a.authorize(&begun.url, Mint::good("p"));
    let forged = query.replace(
        &form_urlencoded::byte_serialize(a.issuer.as_bytes()).collect::<String>(),
        &form_urlencoded::byte_serialize(b.issuer.as_bytes()).collect::<String>(),
    );
    assert_ne!(forged, query);
    assert_refused(
        &come_back(&state, "a", &forged, Some(&begun.handle)).await,
        "sign_in_failed",
    );
    assert_eq!(b.calls("/token"), 0, "nothing went to b's token endpoint");
    for provider in [&a, &b] {
        let id = ExternalId {
            issuer: provider.issuer.clone(),
            subject: "p".into(),
        };
        assert!(store.get_identity(&id).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn no_redirect_leaves_our_page() {
    let f = fixture().await;
    for target in [
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "/account",
        "javascript:alert(1)",
    ] {
        let body = json!({"return_to": target}).to_string();
        let response = begin_with(&f.state, "test", &body, &[]).await;
        assert_eq!(response.status(), 400, "{target}");
        assert!(set_cookie(&response, TRANSACTION_COOKIE).is_none());
    }
    let response = begin_with(&f.state, "test", r#"{"return_to":"/"}"#, &[]).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_round_trip_begins_only_from_our_page() {
    let f = fixture().await;
    for origin in ["https://evil.example", "null"] {
        let response = begin_with(&f.state, "test", "{}", &[("origin", origin)]).await;
        assert_eq!(response.status(), 403, "{origin}");
        assert!(set_cookie(&response, TRANSACTION_COOKIE).is_none());
    }
    // Its cookie: host-only, https only, out of scripts' reach, and Lax so
    // that the provider's cross-site redirect back carries it.
    let response = begin_with(&f.state, "test", "{}", &[]).await;
    let cookie = set_cookie(&response, TRANSACTION_COOKIE).unwrap();
    let mut attributes: Vec<&str> = cookie.split(';').skip(1).map(str::trim).collect();
    attributes.sort();
    assert_eq!(
        attributes,
        [
            "HttpOnly",
            "Max-Age=600",
            "Path=/",
            "SameSite=Lax",
            "Secure"
        ]
    );
    // An unknown provider.
    let response = begin_with(&f.state, "nobody", "{}", &[]).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_provider_that_refuses_lands_on_the_page_with_why() {
    let f = fixture().await;
    let begun = begin(&f.state, "test").await;
    let query = f.idp.authorize(&begun.url, Mint::good("p"));
    let state = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let denied = form_urlencoded::Serializer::new(String::new())
        .append_pair("error", "access_denied")
        .append_pair("error_description", "The person said no")
        .append_pair("state", &state)
        .append_pair("iss", &f.idp.issuer)
        .finish();
    assert_refused(
        &come_back(&f.state, "test", &denied, Some(&begun.handle)).await,
        "access_denied",
    );
    assert_eq!(f.idp.calls("/token"), 0);
}

#[tokio::test]
async fn closed_sign_up_makes_no_account() {
    let f = fixture().await;
    let mut state = federation_with(&f.store, vec![config("test", &f.idp)]);
    state.sign_up = SignUp::AdminsOnly;
    let begun = begin(&state, "test").await;
    let query = f.idp.authorize(&begun.url, Mint::good("p"));
    assert_refused(
        &come_back(&state, "test", &query, Some(&begun.handle)).await,
        "sign_up_closed",
    );
    assert!(
        f.store
            .get_identity(&external(&f, "p"))
            .await
            .unwrap()
            .is_none()
    );
}

/// A password user's fresh access token.
async fn logged_in(f: &Fixture, username: &str) -> String {
    logged_in_on(&f.store, username).await
}

/// A new password user of `store`, logged in: a fresh access token.
pub(crate) async fn logged_in_on(store: &Store, username: &str) -> String {
    add_user(store, username, "Pat", "a-good-password-1").await;
    let body = json!({"username": username, "password": "a-good-password-1"}).to_string();
    let req = crate::support::request("login.json", None, Some(&body));
    let response = auth::handlers::login::handle(&App::new(store).login(), req).await;
    assert_eq!(response.status(), 200);
    body_json(&response)["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) async fn connect(f: &Fixture, access_token: &str, mint: Mint) -> Response<Body> {
    let auth = bearer(access_token);
    let response = begin_with(
        &f.state,
        "test",
        r#"{"intent":"connect"}"#,
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(response.status(), 200, "{:?}", body_json(&response));
    let url = body_json(&response)["authorization_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        url.contains("prompt=login") && url.contains("max_age=0"),
        "a fresh sign-in at the provider"
    );
    let handle = cookie_value(&set_cookie(&response, TRANSACTION_COOKIE).unwrap());
    let query = f.idp.authorize(&url, mint);
    come_back(&f.state, "test", &query, Some(&handle)).await
}

#[tokio::test]
async fn a_password_user_connects_a_provider_and_then_signs_in_with_it() {
    let f = fixture().await;
    let token = logged_in(&f, "pat").await;
    let response = connect(&f, &token, Mint::good("pat-at-idp")).await;
    assert_eq!(location(&response), format!("{OWN_ORIGIN}/#connected=test"));
    assert!(
        set_cookie(&response, "__Host-refresh_token").is_none(),
        "a connection starts no session"
    );
    let pat = f
        .store
        .get(&Username::parse("pat").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(pat.identities.contains(&external(&f, "pat-at-idp")));
    // Now the provider signs in to pat's account.
    let who = user_of(
        &f,
        &assert_signed_in(&round_trip(&f, Mint::good("pat-at-idp")).await),
    )
    .await;
    assert_eq!(who["sub"], pat.id.to_string());
    // Connecting needs the caller's token.
    let response = begin_with(&f.state, "test", r#"{"intent":"connect"}"#, &[]).await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn an_identity_connects_to_one_account_only() {
    let f = fixture().await;
    assert_signed_in(&round_trip(&f, Mint::good("taken")).await);
    let token = logged_in(&f, "pat").await;
    let response = connect(&f, &token, Mint::good("taken")).await;
    assert_refused(&response, "identity_in_use");
    let pat = f
        .store
        .get(&Username::parse("pat").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(pat.identities.is_empty());
}

#[tokio::test]
async fn a_connection_needs_a_sign_in_made_at_the_provider_just_now() {
    let f = fixture().await;
    let token = logged_in(&f, "pat").await;
    let old = auth::clock::system_now() - 3600;
    assert_refused(
        &connect(&f, &token, Mint::good("x").with("auth_time", json!(old))).await,
        "sign_in_failed",
    );
    assert_refused(
        &connect(&f, &token, Mint::good("x").with("auth_time", Value::Null)).await,
        "sign_in_failed",
    );
}

#[tokio::test]
async fn deactivation_stops_federated_sign_in_and_deletion_removes_the_links() {
    let f = fixture().await;
    assert_signed_in(
        &round_trip(&f, Mint::good("p").with("preferred_username", json!("fed"))).await,
    );
    let user = f
        .store
        .get(&Username::parse("fed").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(f.store.set_active(&user, false).await.unwrap());
    assert_refused(&round_trip(&f, Mint::good("p")).await, "sign_in_failed");
    let user = f
        .store
        .get(&Username::parse("fed").unwrap())
        .await
        .unwrap()
        .unwrap();
    f.store
        .delete_user(&user, auth::store::DeletedBy::Operator)
        .await
        .unwrap();
    assert!(
        f.store
            .get_identity(&external(&f, "p"))
            .await
            .unwrap()
            .is_none(),
        "the link went with the user"
    );
    // The identity may begin again: a new account.
    let again = user_of(
        &f,
        &assert_signed_in(&round_trip(&f, Mint::good("p")).await),
    )
    .await;
    assert_ne!(again["sub"], user.id.to_string());
}

#[tokio::test]
async fn a_provider_authoritative_for_a_domain_links_by_a_verified_address_and_only_then() {
    let store = fresh_store().await;
    let f = fixture_linking(&store, &["standin.example"]).await;
    for name in ["linked", "unverified-there", "pending-here"] {
        add_user(&store, name, "Pat", "a-good-password-1").await;
    }
    crate::matrix::verify_directly(&store, "linked", "linked@standin.example").await;
    crate::matrix::verify_directly(
        &store,
        "unverified-there",
        "unverified-there@standin.example",
    )
    .await;
    let pending = store
        .get(&Username::parse("pending-here").unwrap())
        .await
        .unwrap()
        .unwrap();
    let address = auth::email::Email::parse("pending-here@standin.example").unwrap();
    assert!(
        store
            .set_pending_email(&pending, &address, auth::clock::system_now())
            .await
            .unwrap()
    );
    let id_of = |name: &'static str| {
        let store = store.clone();
        async move {
            store
                .get(&Username::parse(name).unwrap())
                .await
                .unwrap()
                .unwrap()
                .id
                .to_string()
        }
    };

    // Both sides verified, the domain the provider's: the existing account.
    let who = user_of(
        &f,
        &assert_signed_in(&round_trip(&f, Mint::good("linked")).await),
    )
    .await;
    assert_eq!(who["sub"], id_of("linked").await);
    let linked = store
        .get(&Username::parse("linked").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(linked.identities.contains(&external(&f, "linked")));
    // The provider does not vouch for the address: a new account.
    let mint = Mint::good("unverified-there").with("email_verified", json!(false));
    let who = user_of(&f, &assert_signed_in(&round_trip(&f, mint).await)).await;
    assert_ne!(who["sub"], id_of("unverified-there").await);
    // We have not verified it: a new account.
    let who = user_of(
        &f,
        &assert_signed_in(&round_trip(&f, Mint::good("pending-here")).await),
    )
    .await;
    assert_ne!(who["sub"], id_of("pending-here").await);
    // A provider not authoritative for the domain: never linked, though verified.
    let other = fixture_linking(&store, &["elsewhere.example"]).await;
    let mint = Mint::good("someone").with("email", json!("linked@standin.example"));
    let who = user_of(&other, &assert_signed_in(&round_trip(&other, mint).await)).await;
    assert_ne!(who["sub"], id_of("linked").await);
}

#[tokio::test]
async fn the_providers_are_listed_for_the_page() {
    let f = fixture().await;
    let req = api_request("GET", "/oidc/providers", "", &[], None);
    let response = federation::handle(&f.state, req).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        body_json(&response),
        json!({"providers": [{"id": "test", "name": "Stand-in test"}]})
    );
}
