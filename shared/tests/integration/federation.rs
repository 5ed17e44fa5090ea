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
        trust_mfa: false,
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
}

/// Whether `response` ended the browser's round trip (cleared its cookie).
fn ends_round_trip(response: &Response<Body>) -> bool {
    set_cookie(response, TRANSACTION_COOKIE).is_some_and(|c| c.contains("Max-Age=0"))
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
    let claims = refreshed_claims(f, refresh_token).await;
    json!({"sub": claims.sub, "username": claims.username})
}

/// The claims of the access token a refresh cookie's session gets.
async fn refreshed_claims(f: &Fixture, refresh_token: &str) -> auth::tokens::Claims {
    // A deployment's default: admin only after our own second factor.
    let app = App::new(&f.store).guarded();
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
    verifier().verify(&token).await.unwrap()
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
async fn a_foreign_or_missing_state_yields_nothing_and_spends_nothing() {
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
    // A forged state, and none: refused, and the browser's round trip left
    // as it was (a page elsewhere cannot cancel a sign-in under way).
    for forged in [with_state(Some("forged")), with_state(None)] {
        let response = come_back(&f.state, "test", &forged, Some(&begun.handle)).await;
        assert_refused(&response, "sign_in_failed");
        assert!(!ends_round_trip(&response), "the round trip's cookie kept");
    }
    assert_eq!(f.idp.calls("/token"), 0, "no code was redeemed");
    assert!(
        f.store
            .get_identity(&external(&f, "person-1"))
            .await
            .unwrap()
            .is_none()
    );
    // The real answer still ends it, once.
    let response = come_back(&f.state, "test", &query, Some(&begun.handle)).await;
    assert_signed_in(&response);
    assert!(ends_round_trip(&response));
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

/// A signed-in caller's round trip begun at `provider` for `intent`
/// (`connect`, `reauthenticate`): its provider's URL and the browser's cookie,
/// the URL checked to ask for a sign-in made now.
async fn begin_as(state: &Federation, provider: &str, token: &str, intent: &str) -> Begun {
    let auth = bearer(token);
    let body = json!({ "intent": intent }).to_string();
    let response = begin_with(state, provider, &body, &[("authorization", &auth)]).await;
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
    Begun { url, handle }
}

pub(crate) async fn connect(f: &Fixture, access_token: &str, mint: Mint) -> Response<Body> {
    let begun = begin_as(&f.state, "test", access_token, "connect").await;
    let query = f.idp.authorize(&begun.url, mint);
    come_back(&f.state, "test", &query, Some(&begun.handle)).await
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

/// The access token a refresh cookie's session gets now, and the cookie's
/// successor (a refresh rotates it).
async fn access_token(store: &Store, refresh_token: &str) -> (String, String) {
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
    let response = auth::handlers::refresh::handle(&App::new(store).refresh(), req).await;
    assert_eq!(response.status(), 200, "{:?}", body_json(&response));
    let successor = cookie_value(&set_cookie(&response, "__Host-refresh_token").unwrap());
    let access = body_json(&response)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    (access, successor)
}

/// A request to the password function's routes, or federation's own.
async fn account_call(
    store: &Store,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Response<Body> {
    let auth = bearer(token);
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let req = api_request(method, path, "", &headers, body);
    auth::handlers::account::handle(&App::new(store).account(), req).await
}

/// A federated account just signed in (through the provider, which may have
/// held its session for days: no recent proof), and the fixture: (its
/// refresh token, the fixture).
async fn federated(subject: &str, username: &str) -> (String, Fixture) {
    let f = fixture().await;
    let mint = Mint::good(subject).with("preferred_username", json!(username));
    let refresh = assert_signed_in(&round_trip(&f, mint).await);
    (refresh, f)
}

async fn reauthenticate(f: &Fixture, token: &str, mint: Mint) -> Response<Body> {
    let begun = begin_as(&f.state, "test", token, "reauthenticate").await;
    let query = f.idp.authorize(&begun.url, mint);
    come_back(&f.state, "test", &query, Some(&begun.handle)).await
}

#[tokio::test]
async fn an_account_without_a_password_proves_itself_again_at_its_provider_then_deletes_itself() {
    let (refresh, f) = federated("p", "fed-delete").await;
    let (token, refresh) = access_token(&f.store, &refresh).await;
    // No password to give, and a provider's sign-in is no recent proof: a
    // fresh one first.
    let response = account_call(&f.store, "DELETE", "/account", &token, Some("{}")).await;
    crate::support::assert_error(&response, 401, "insufficient_user_authentication");
    // Another identity's sign-in proves nothing for this account.
    assert_refused(
        &reauthenticate(&f, &token, Mint::good("someone-else")).await,
        "sign_in_failed",
    );
    let response = reauthenticate(&f, &token, Mint::good("p")).await;
    assert_eq!(
        location(&response),
        format!("{OWN_ORIGIN}/#reauthenticated=test")
    );
    assert!(
        set_cookie(&response, "__Host-refresh_token").is_none(),
        "the same session"
    );
    // The session's next access token carries the new proof.
    let (token, _) = access_token(&f.store, &refresh).await;
    let response = account_call(&f.store, "DELETE", "/account", &token, Some("{}")).await;
    assert_eq!(response.status(), 200, "{:?}", body_json(&response));
    assert!(
        f.store
            .get_identity(&external(&f, "p"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_fresh_proof_through_a_provider_is_for_accounts_without_a_password() {
    let f = fixture().await;
    let token = logged_in(&f, "pat").await;
    let auth = bearer(&token);
    let headers = [("authorization", auth.as_str())];
    let start = || begin_with(&f.state, "test", r#"{"intent":"reauthenticate"}"#, &headers);
    // No identity of this provider on the account.
    crate::support::assert_error(&start().await, 400, "invalid_request");
    // With one: still the password (`/reauthenticate`) proves a password
    // account; the provider never stands in for it.
    let connected = connect(&f, &token, Mint::good("pat-there")).await;
    assert_eq!(
        location(&connected),
        format!("{OWN_ORIGIN}/#connected=test")
    );
    let response = start().await;
    crate::support::assert_error(&response, 400, "invalid_request");
    assert!(set_cookie(&response, TRANSACTION_COOKIE).is_none());
}

#[tokio::test]
async fn an_account_without_a_password_sets_one_after_a_fresh_sign_in_at_its_provider() {
    let (refresh, f) = federated("p", "fed-sets").await;
    let (token, refresh) = access_token(&f.store, &refresh).await;
    let body = r#"{"new_password":"a brand new passphrase"}"#;
    let response = account_call(&f.store, "POST", "/password", &token, Some(body)).await;
    crate::support::assert_error(&response, 401, "insufficient_user_authentication");
    assert_eq!(
        location(&reauthenticate(&f, &token, Mint::good("p")).await),
        format!("{OWN_ORIGIN}/#reauthenticated=test")
    );
    let (token, _) = access_token(&f.store, &refresh).await;
    let response = account_call(&f.store, "POST", "/password", &token, Some(body)).await;
    assert_eq!(response.status(), 200, "{:?}", body_json(&response));
    let user = f
        .store
        .get(&Username::parse("fed-sets").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(user.has_password());
    // The password now logs in; the provider still signs in too.
    let login = json!({"username": "fed-sets", "password": "a brand new passphrase"}).to_string();
    let req = crate::support::request("login.json", None, Some(&login));
    assert_eq!(
        auth::handlers::login::handle(&App::new(&f.store).login(), req)
            .await
            .status(),
        200
    );
    assert_signed_in(&round_trip(&f, Mint::good("p")).await);
    // An account with a password still needs it to change it.
    let token = logged_in(&f, "pat").await;
    let response = account_call(&f.store, "POST", "/password", &token, Some(body)).await;
    crate::support::assert_error(&response, 400, "invalid_request");
}

#[tokio::test]
async fn a_provider_is_disconnected_only_while_another_way_to_sign_in_remains() {
    let f = fixture().await;
    // A federated account with one identity: its only way in stays.
    let refresh = assert_signed_in(
        &round_trip(
            &f,
            Mint::good("only").with("preferred_username", json!("only-way")),
        )
        .await,
    );
    let (token, refresh) = access_token(&f.store, &refresh).await;
    // A recent proof first (a provider's sign-in is none): a fresh one there.
    let proved = reauthenticate(&f, &token, Mint::good("only")).await;
    assert_eq!(
        location(&proved),
        format!("{OWN_ORIGIN}/#reauthenticated=test")
    );
    let (token, _) = access_token(&f.store, &refresh).await;
    let response = federation::handle(
        &f.state,
        api_request(
            "DELETE",
            "/account/identities/test",
            "",
            &[("authorization", &bearer(&token))],
            None,
        ),
    )
    .await;
    crate::support::assert_error(&response, 409, "conflict");
    let listed = federation::handle(
        &f.state,
        api_request(
            "GET",
            "/account/identities",
            "",
            &[("authorization", &bearer(&token))],
            None,
        ),
    )
    .await;
    let listed = body_json(&listed);
    assert_eq!(listed["has_password"], false);
    assert_eq!(listed["second_factor"], false);
    assert_eq!(listed["identities"][0]["provider"], "test");
    assert_eq!(listed["identities"][0]["issuer"], f.idp.issuer.as_str());

    // A password user with the provider connected: disconnected, and told.
    let token = logged_in(&f, "pat").await;
    crate::matrix::verify_directly(&f.store, "pat", "pat@example.com").await;
    assert_eq!(
        location(&connect(&f, &token, Mint::good("pat-there")).await),
        format!("{OWN_ORIGIN}/#connected=test")
    );
    let delete = || {
        api_request(
            "DELETE",
            "/account/identities/test",
            "",
            &[("authorization", &bearer(&token))],
            None,
        )
    };
    let response = federation::handle(&f.state, delete()).await;
    assert_eq!(response.status(), 200, "{:?}", body_json(&response));
    assert!(
        f.store
            .get_identity(&external(&f, "pat-there"))
            .await
            .unwrap()
            .is_none()
    );
    let pat = f
        .store
        .get(&Username::parse("pat").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(pat.identities.is_empty());
    let jobs = f.store.pending_jobs().await.unwrap();
    let told = jobs.iter().any(|(_, job)| {
        matches!(job, auth::outbox::MailJob::Notice {
            notice: auth::outbox::Notice::IdentityDisconnected { provider }, ..
        } if provider == "Stand-in test")
    });
    assert!(told, "the address is told: {jobs:?}");
    // Nothing left of it to disconnect; and its next sign-in is a new account.
    crate::support::assert_error(
        &federation::handle(&f.state, delete()).await,
        404,
        "not_found",
    );
    let who = user_of(
        &f,
        &assert_signed_in(&round_trip(&f, Mint::good("pat-there")).await),
    )
    .await;
    assert_ne!(who["sub"], pat.id.to_string());
}

#[tokio::test]
async fn the_admin_lookup_shows_a_users_identities_and_whether_it_has_a_password() {
    let f = fixture().await;
    assert_signed_in(
        &round_trip(
            &f,
            Mint::good("seen").with("preferred_username", json!("fed-seen")),
        )
        .await,
    );
    crate::permissions::admin_in(&f.store, "root-admin").await;
    let app = App::new(&f.store);
    let token = crate::sessions::session(&app, "root-admin").await.access;
    let response = crate::permissions::look_up(&app, &token, "fed-seen").await;
    assert_eq!(response.status(), 200, "{:?}", body_json(&response));
    let user = &body_json(&response)["user"];
    assert_eq!(user["has_password"], false);
    assert_eq!(
        user["identities"],
        json!([{"issuer": f.idp.issuer, "subject": "seen"}])
    );
}

#[tokio::test]
async fn a_sign_in_through_a_provider_is_no_recent_proof_until_one_made_just_then() {
    let (refresh, f) = federated("boss", "fed-admin").await;
    let user = f
        .store
        .get(&Username::parse("fed-admin").unwrap())
        .await
        .unwrap()
        .unwrap();
    let granted = f
        .store
        .grant_role(&user, &auth::permissions::Role::admin())
        .await
        .unwrap();
    assert_eq!(granted, auth::store::RoleGrant::Granted);
    let (token, refresh) = access_token(&f.store, &refresh).await;
    assert_eq!(verifier().verify(&token).await.unwrap().auth_time, 0);
    let app = App::new(&f.store);
    // The admin API wants a recent proof: the provider's session may be days old.
    let response = crate::permissions::look_up(&app, &token, "fed-admin").await;
    crate::support::assert_error(&response, 401, "insufficient_user_authentication");
    assert_eq!(
        location(&reauthenticate(&f, &token, Mint::good("boss")).await),
        format!("{OWN_ORIGIN}/#reauthenticated=test")
    );
    let (token, _) = access_token(&f.store, &refresh).await;
    let response = crate::permissions::look_up(&app, &token, "fed-admin").await;
    assert_eq!(response.status(), 200, "{:?}", body_json(&response));
}

#[tokio::test]
async fn a_rotated_provider_key_is_fetched_once_and_a_forged_kid_fetches_nothing() {
    let store = fresh_store().await;
    let idp = StandIn::start().await;
    let clock = Clock::manual(auth::clock::system_now());
    let mut state = federation_with(&store, vec![config("test", &idp)]);
    state.clock = clock.clone();
    let f = Fixture {
        store,
        idp,
        state: Arc::new(state),
    };
    assert_signed_in(&round_trip(&f, Mint::good("p")).await);
    assert_eq!(f.idp.calls("/jwks"), 1, "the key set, read once");
    assert_signed_in(&round_trip(&f, Mint::good("p")).await);
    assert_eq!(f.idp.calls("/jwks"), 1, "… and cached");
    // The provider rotates: a token under the new kid has the set read
    // again, once the minute since the last read is over.
    f.idp.rotate();
    clock.advance(auth::id_tokens::KEYS_MIN_REFETCH.as_secs() as i64);
    assert_signed_in(&round_trip(&f, Mint::good("p")).await);
    assert_eq!(
        f.idp.calls("/jwks"),
        2,
        "an unknown kid reads the set again"
    );
    // Tokens naming kids the provider never had: refused, and no read of
    // the set within the minute (a stream of them costs the provider nothing).
    f.idp.force_kid("never-had-it");
    for _ in 0..3 {
        assert_refused(&round_trip(&f, Mint::good("p")).await, "sign_in_failed");
    }
    assert_eq!(
        f.idp.calls("/jwks"),
        2,
        "no read for a forged kid within the minute"
    );
}

#[tokio::test]
async fn racing_first_sign_ins_of_one_identity_make_one_account() {
    let f = fixture().await;
    let mut ends = Vec::new();
    for _ in 0..4 {
        let begun = begin(&f.state, "test").await;
        let query = f.idp.authorize(
            &begun.url,
            Mint::good("twin").with("preferred_username", json!("twin")),
        );
        ends.push((query, begun.handle));
    }
    let racers: Vec<_> = ends
        .into_iter()
        .map(|(query, handle)| {
            let state = f.state.clone();
            crate::support::racing(
                async move { come_back(&state, "test", &query, Some(&handle)).await },
            )
        })
        .collect();
    let mut subjects = std::collections::BTreeSet::new();
    for response in crate::support::race(racers).await {
        let who = user_of(&f, &assert_signed_in(&response)).await;
        subjects.insert(who["sub"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        subjects.len(),
        1,
        "one account for one identity: {subjects:?}"
    );
    let link = f
        .store
        .get_identity(&external(&f, "twin"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        json!(link.user_id.to_string()),
        *subjects.iter().next().unwrap()
    );
    // And no second account was left half-made under another name.
    let twin = f
        .store
        .get(&Username::parse("twin").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(twin.id, link.user_id);
}

#[tokio::test]
async fn a_device_that_signed_in_before_is_known_to_a_provider_sign_in() {
    let f = fixture().await;
    let first = round_trip(
        &f,
        Mint::good("p").with("preferred_username", json!("returning")),
    )
    .await;
    assert_signed_in(&first);
    let device = cookie_value(&set_cookie(&first, "__Host-device").unwrap());
    // The device cookie rides the start (same origin), not the provider's redirect.
    let cookie = format!("__Host-device={device}");
    let response = begin_with(&f.state, "test", "{}", &[("cookie", &cookie)]).await;
    let url = body_json(&response)["authorization_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let handle = cookie_value(&set_cookie(&response, TRANSACTION_COOKIE).unwrap());
    let query = f.idp.authorize(&url, Mint::good("p"));
    let again = come_back(&f.state, "test", &query, Some(&handle)).await;
    assert_signed_in(&again);
    let user = f
        .store
        .get(&Username::parse("returning").unwrap())
        .await
        .unwrap()
        .unwrap();
    let (sessions, _) = f
        .store
        .list_sessions(&user, auth::clock::system_now())
        .await
        .unwrap();
    let known: Vec<bool> = {
        let mut s = sessions.clone();
        s.sort_by_key(|s| s.created_at);
        s.iter().map(|s| s.origin.known_device).collect()
    };
    assert!(known.contains(&true) && known.contains(&false), "{known:?}");
    // Its proof was spent: a new one issued.
    assert_ne!(
        cookie_value(&set_cookie(&again, "__Host-device").unwrap()),
        device
    );
}

#[tokio::test]
async fn a_connection_whose_session_ended_meanwhile_connects_nothing() {
    let f = fixture().await;
    let token = logged_in(&f, "pat").await;
    let auth = bearer(&token);
    let Begun { url, handle } = begin_as(&f.state, "test", &token, "connect").await;
    // The session logs out while the person is at the provider.
    let logout = crate::support::request("logout.json", Some(&auth), Some("{}"));
    let ended = auth::handlers::logout::handle(&App::new(&f.store).logout(), logout).await;
    assert_eq!(ended.status(), 200, "{:?}", body_json(&ended));
    let response = come_back(
        &f.state,
        "test",
        &f.idp.authorize(&url, Mint::good("late")),
        Some(&handle),
    )
    .await;
    assert_refused(&response, "sign_in_failed");
    let pat = f
        .store
        .get(&Username::parse("pat").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(pat.identities.is_empty());
    assert!(
        f.store
            .get_identity(&external(&f, "late"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_connection_tells_the_verified_address_and_linking_spares_admins_and_taken_accounts() {
    let store = fresh_store().await;
    let f = fixture_linking(&store, &["standin.example"]).await;
    // A connection: a notice to the verified address, in its transaction.
    let token = logged_in(&f, "pat").await;
    crate::matrix::verify_directly(&store, "pat", "pat@example.com").await;
    let before = store.pending_jobs().await.unwrap().len();
    assert_eq!(
        location(&connect(&f, &token, Mint::good("pat-there")).await),
        format!("{OWN_ORIGIN}/#connected=test")
    );
    let jobs = store.pending_jobs().await.unwrap();
    assert_eq!(jobs.len(), before + 1);
    assert!(
        jobs.iter()
            .any(|(_, job)| matches!(job, auth::outbox::MailJob::Notice {
        notice: auth::outbox::Notice::IdentityConnected { provider }, ..
    } if provider == "Stand-in test")),
        "{jobs:?}"
    );
    // An admin's verified address: never linked by it.
    crate::permissions::admin_in(&store, "chief").await;
    crate::matrix::verify_directly(&store, "chief", "chief@standin.example").await;
    let chief = store
        .get(&Username::parse("chief").unwrap())
        .await
        .unwrap()
        .unwrap();
    let who = user_of(
        &f,
        &assert_signed_in(&round_trip(&f, Mint::good("chief")).await),
    )
    .await;
    assert_ne!(who["sub"], chief.id.to_string());
    // An account with an identity at this provider already: a second subject
    // with its address (a mailbox the provider gave someone else) is not linked.
    add_user(&store, "leaver", "L", "a-good-password-1").await;
    crate::matrix::verify_directly(&store, "leaver", "leaver@standin.example").await;
    let leaver = store
        .get(&Username::parse("leaver").unwrap())
        .await
        .unwrap()
        .unwrap();
    let linked = user_of(
        &f,
        &assert_signed_in(&round_trip(&f, Mint::good("leaver")).await),
    )
    .await;
    assert_eq!(
        linked["sub"],
        leaver.id.to_string(),
        "the first subject links"
    );
    let newcomer = Mint::good("newcomer").with("email", json!("leaver@standin.example"));
    let who = user_of(&f, &assert_signed_in(&round_trip(&f, newcomer).await)).await;
    assert_ne!(who["sub"], leaver.id.to_string(), "the second does not");
}

#[tokio::test]
async fn the_store_connects_nothing_for_a_session_logged_out_after_it_was_read() {
    let f = fixture().await;
    let token = logged_in(&f, "pat").await;
    let sid = verifier().verify(&token).await.unwrap().sid;
    // Read before the logout (as a callback reads it), written after.
    let read = f
        .store
        .get(&Username::parse("pat").unwrap())
        .await
        .unwrap()
        .unwrap();
    let logout = crate::support::request("logout.json", Some(&bearer(&token)), Some("{}"));
    let ended = auth::handlers::logout::handle(&App::new(&f.store).logout(), logout).await;
    assert_eq!(ended.status(), 200);
    let identity = auth::federation::Identity {
        id: external(&f, "late"),
        provider: "test".into(),
        user_id: read.id,
        username: read.username.clone(),
        created_at: auth::clock::system_now(),
    };
    let now = auth::clock::system_now();
    let result = f
        .store
        .connect_identity(&read, &identity, Some(&sid), "Stand-in", now)
        .await;
    assert!(
        matches!(result, Err(auth::store::StoreError::Conflict)),
        "{result:?}"
    );
    assert!(
        f.store.get_identity(&identity.id).await.unwrap().is_none(),
        "nothing written"
    );
    // The same write for a live session connects.
    let token = crate::federation::logged_in_on(&f.store, "sam").await;
    let sid = verifier().verify(&token).await.unwrap().sid;
    let sam = f
        .store
        .get(&Username::parse("sam").unwrap())
        .await
        .unwrap()
        .unwrap();
    let identity = auth::federation::Identity {
        user_id: sam.id,
        username: sam.username.clone(),
        ..identity
    };
    f.store
        .connect_identity(&sam, &identity, Some(&sid), "Stand-in", now)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_identity_of_a_provider_no_longer_configured_is_no_way_in() {
    // A passwordless account with identities at two providers, then one of
    // them removed from the configuration: the other is its only way in.
    let store = fresh_store().await;
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    let both = federation_with(&store, vec![config("a", &a), config("b", &b)]);
    let begun = begin(&both, "a").await;
    let query = a.authorize(
        &begun.url,
        Mint::good("p").with("preferred_username", json!("two-ways")),
    );
    let refresh = assert_signed_in(&come_back(&both, "a", &query, Some(&begun.handle)).await);
    let user = store
        .get(&Username::parse("two-ways").unwrap())
        .await
        .unwrap()
        .unwrap();
    let b_identity = auth::federation::Identity {
        id: ExternalId {
            issuer: b.issuer.clone(),
            subject: "p".into(),
        },
        provider: "b".into(),
        user_id: user.id,
        username: user.username.clone(),
        created_at: auth::clock::system_now(),
    };
    store
        .connect_identity(&user, &b_identity, None, "b", auth::clock::system_now())
        .await
        .unwrap();
    let only_a = federation_with(&store, vec![config("a", &a)]);
    let (token, refresh) = access_token(&store, &refresh).await;
    // A fresh proof at a, then the disconnection of a: b is configured no more.
    let Begun { url, handle } = begin_as(&only_a, "a", &token, "reauthenticate").await;
    let proved = come_back(
        &only_a,
        "a",
        &a.authorize(&url, Mint::good("p")),
        Some(&handle),
    )
    .await;
    assert_eq!(
        location(&proved),
        format!("{OWN_ORIGIN}/#reauthenticated=a")
    );
    let (token, _) = access_token(&store, &refresh).await;
    let delete = || {
        api_request(
            "DELETE",
            "/account/identities/a",
            "",
            &[("authorization", &bearer(&token))],
            None,
        )
    };
    crate::support::assert_error(
        &federation::handle(&only_a, delete()).await,
        409,
        "conflict",
    );
    // With both configured, b remains a way in: a goes.
    assert_eq!(federation::handle(&both, delete()).await.status(), 200);
}

/// A provider's sign-in is a first factor: an account with a second factor
/// gets no session from it, but the page gets an `mfa_token` (in the
/// fragment only, no cookie), and the second step with a code signs in,
/// its tokens saying both (`amr` fed, otp, mfa; `acr` aal2) and the proof
/// recent (`auth_time` now, where a provider's sign-in alone is never
/// recent).
#[tokio::test]
async fn a_providers_sign_in_of_an_account_with_a_second_factor_asks_for_it() {
    let f = fixture().await;
    assert_signed_in(&round_trip(&f, Mint::good("two-step")).await);
    let user = f
        .store
        .get_identity(&external(&f, "two-step"))
        .await
        .unwrap()
        .unwrap();
    let username = user.username.clone();
    let secret = crate::matrix::factor_directly(&f.store, username.as_str(), true).await;

    let asked = round_trip(&f, Mint::good("two-step")).await;
    let at = location(&asked);
    let prefix = format!("{OWN_ORIGIN}/#mfa_required=");
    let token = at.strip_prefix(&prefix).unwrap_or_else(|| panic!("{at}"));
    assert!(
        set_cookie(&asked, "__Host-refresh_token").is_none(),
        "no session"
    );
    assert!(set_cookie(&asked, "__Host-device").is_none());
    assert!(ends_round_trip(&asked));

    let now = auth::clock::system_now();
    let code = secret
        .code_at(auth::totp::step_of(now))
        .unwrap()
        .expose()
        .to_owned();
    let body = json!({"mfa_token": token, "code": code}).to_string();
    let app = App::new(&f.store);
    let response = auth::handlers::second_factor::handle(
        &app.second_factor(),
        crate::support::request("login-second-factor.json", None, Some(&body)),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let access = body_json(&response)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = verifier().verify(&access).await.unwrap();
    assert_eq!(claims.amr, ["fed", "otp", "mfa"]);
    assert_eq!(claims.acr.as_deref(), Some("aal2"));
    assert!(claims.auth_time >= now - 5, "{}", claims.auth_time);
}

/// A provider trusted for its MFA (`trust_mfa`): its sign-in that says
/// `mfa` in `amr` stands for the account's second factor (no second step; a
/// session of `amr` fed mfa, `aal2`, and no recent proof: the provider's
/// MFA may be as old as its session); one that does not say it (or says it
/// in another shape) still asks. An untrusted provider's `mfa` counts for
/// nothing.
#[tokio::test]
async fn a_trusted_providers_own_mfa_stands_for_the_second_factor() {
    let f = fixture().await;
    assert_signed_in(&round_trip(&f, Mint::good("trusting")).await);
    let user = f
        .store
        .get_identity(&external(&f, "trusting"))
        .await
        .unwrap()
        .unwrap();
    crate::matrix::factor_directly(&f.store, user.username.as_str(), true).await;
    let account = f.store.get(&user.username).await.unwrap().unwrap();
    f.store
        .grant_role(&account, &auth::permissions::Role::admin())
        .await
        .unwrap();
    let with_mfa = || Mint::good("trusting").with("amr", json!(["pwd", "otp", "mfa"]));
    let asks = |response: &Response<Body>| {
        let at = location(response);
        assert!(
            at.starts_with(&format!("{OWN_ORIGIN}/#mfa_required=")),
            "{at}"
        );
        assert!(set_cookie(response, "__Host-refresh_token").is_none());
    };

    // Untrusted (the default): the provider's mfa is not ours.
    asks(&round_trip(&f, with_mfa()).await);

    let trusting = Arc::new(federation_with(
        &f.store,
        vec![ProviderConfig {
            trust_mfa: true,
            link_verified_email_domains: vec!["owner.example".into()],
            ..config("test", &f.idp)
        }],
    ));
    let trip = async |mint: Mint| {
        let begun = begin(&trusting, "test").await;
        let query = f.idp.authorize(&begun.url, mint);
        come_back(&trusting, "test", &query, Some(&begun.handle)).await
    };
    // Trusted, but no mfa said, or not as a list of strings: asked.
    asks(&trip(Mint::good("trusting")).await);
    asks(&trip(Mint::good("trusting").with("amr", json!(["pwd"]))).await);
    asks(&trip(Mint::good("trusting").with("amr", json!("mfa"))).await);
    asks(&trip(Mint::good("trusting").with("amr", json!(["mfa", 1]))).await);

    // Trusted and said: signed in, at aal2, with no recent proof.
    let refresh = assert_signed_in(&trip(with_mfa()).await);
    let claims = refreshed_claims(&f, &refresh).await;
    assert_eq!(claims.sub, user.user_id.to_string());
    assert_eq!(claims.amr, ["fed", "mfa"]);
    assert_eq!(claims.acr.as_deref(), Some("aal2"));
    // The provider's word is not our factor: no role that needs ours.
    assert_eq!(claims.scope, None);
    assert!(
        claims.auth_time < auth::clock::system_now() - 3600,
        "no recent proof: {}",
        claims.auth_time
    );

    // An account without a second factor: the provider's word makes
    // nothing of itself (one factor).
    let plain =
        assert_signed_in(&trip(Mint::good("trusting-plain").with("amr", json!(["mfa"]))).await);
    let claims = refreshed_claims(&f, &plain).await;
    assert_eq!(claims.amr, ["fed"]);

    // An account with a factor that this sign-in links by its address:
    // a mailbox the provider gave someone else asks for the code.
    add_user(&f.store, "owner", "Owner", "an owner's own passphrase").await;
    crate::matrix::verify_directly(&f.store, "owner", "owner@owner.example").await;
    crate::matrix::factor_directly(&f.store, "owner", true).await;
    asks(
        &trip(
            Mint::good("newcomer")
                .with("email", json!("owner@owner.example"))
                .with("amr", json!(["mfa"])),
        )
        .await,
    );
}
