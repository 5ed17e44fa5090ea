//! Hostile tokens and hostile requests, through the real handlers on DynamoDB
//! Local: every protected route refuses every bad token with 401; every bad
//! request gets a clean 4xx JSON error, never a 5xx, never a panic.

use crate::support::*;
use auth::handlers::{account, admin, change_password, get_name, login, logout, refresh, register};
use auth::runtime;
use auth::store::Store;
use auth::users::User;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

const PASSWORD: &str = "hostile tests password";

/// Every route that takes a bearer token.
const PROTECTED: [&str; 8] = [
    "get_name",
    "logout",
    "sessions",
    "end_session",
    "password",
    "reauthenticate",
    "account",
    "admin",
];

struct Fixture {
    app: App,
    user: User,
    /// A valid access token and refresh token of a live session.
    access: String,
    refresh: String,
    /// The access token's claims, as verified.
    claims: Value,
}

async fn fixture() -> Fixture {
    let store = fresh_store().await;
    let user = add_user(&store, "holder", "Holder", PASSWORD).await;
    let app = App::new(&store);
    let body = json!({"username": "holder", "password": PASSWORD}).to_string();
    let response = login::handle(&app.login(), request("login.json", None, Some(&body))).await;
    let json = body_json(&response);
    let access = json["access_token"].as_str().unwrap().to_owned();
    let verified = verifier().verify(&access).await.unwrap();
    Fixture {
        claims: serde_json::to_value(verified).unwrap(),
        access,
        refresh: json["refresh_token"].as_str().unwrap().to_owned(),
        app,
        user,
    }
}

fn now() -> i64 {
    auth::clock::system_now()
}

impl Fixture {
    fn claims(&self) -> Value {
        self.claims.clone()
    }

    /// The protected routes, each called with `authorization`.
    async fn protected(&self, authorization: Option<&str>) -> Vec<(&'static str, Response<Body>)> {
        let mut answers = Vec::new();
        for route in PROTECTED {
            answers.push((route, self.call(route, authorization).await));
        }
        answers
    }

    /// Protected route `route` (one of `PROTECTED`), with `authorization`
    /// and a body that would do its work.
    async fn call(&self, route: &str, authorization: Option<&str>) -> Response<Body> {
        let password_body =
            json!({"current_password": PASSWORD, "new_password": "a new passphrase 1"}).to_string();
        let proof = json!({"password": PASSWORD}).to_string();
        let account = |event: &str, body: &str| request(event, authorization, Some(body));
        match route {
            "get_name" => {
                let req = request("get-name.json", authorization, None);
                get_name::handle(&self.app.get_name(), req).await
            }
            "logout" => {
                let req = request("logout.json", authorization, None);
                logout::handle(&self.app.logout(), req).await
            }
            "sessions" => {
                let req = request("sessions.json", authorization, None);
                logout::handle(&self.app.logout(), req).await
            }
            "end_session" => {
                // The fixture's own session: one that a good token may end.
                let mut req = request("end-session.json", authorization, None);
                let sid = self.claims()["sid"].as_str().unwrap().to_owned();
                *req.uri_mut() = format!("/sessions/{sid}").parse().unwrap();
                logout::handle(&self.app.logout(), req).await
            }
            "password" => {
                let req = account("password.json", &password_body);
                change_password::handle(&self.app.account(), req).await
            }
            "reauthenticate" => {
                let req = account("reauthenticate.json", &proof);
                account::handle(&self.app.account(), req).await
            }
            "account" => {
                let req = account("delete-account.json", &proof);
                account::handle(&self.app.account(), req).await
            }
            "admin" => {
                let req = request("admin-user.json", authorization, None);
                admin::handle(&self.app.admin(), req).await
            }
            other => unreachable!("{other} is not a protected route"),
        }
    }

    /// Every protected route answers 401 with a bearer challenge and JSON.
    async fn assert_refused(&self, authorization: Option<&str>) {
        for (route, response) in self.protected(authorization).await {
            assert_eq!(response.status(), 401, "{route}: {}", body_json(&response));
            assert!(
                response.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer"),
                "{route}"
            );
            let json = body_json(&response);
            assert!(
                ["missing_token", "invalid_token"].contains(&json["error"].as_str().unwrap()),
                "{route}: {json}"
            );
        }
        // And the session was not touched by any of it.
        let still = get_name::handle(
            &self.app.get_name(),
            request("get-name.json", Some(&bearer(&self.access)), None),
        )
        .await;
        assert_eq!(still.status(), 200);
    }

    async fn assert_token_refused(&self, token: &str) {
        self.assert_refused(Some(&bearer(token))).await;
    }

    async fn forged(&self, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        let mut header = our_header();
        let mut claims = self.claims();
        edit(&mut header, &mut claims);
        forge(our_key(), &header, &claims).await
    }
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Our header with `alg`, and `claims`, really signed with `alg`.
fn signed_with(alg: &str, claims: &Value) -> String {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA512, RSA_PSS_SHA256,
    };
    let header = json!({"alg": alg, "typ": "at+jwt", "kid": our_key().public.kid});
    let input = format!("{}.{}", b64(&header), b64(claims));
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let signature = match alg {
        "RS512" | "PS256" => {
            let body: String = our_key()
                .private_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect();
            let der = STANDARD.decode(body).unwrap();
            let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).unwrap();
            let mut signature = vec![0; pair.public_modulus_len()];
            let padding: &'static dyn aws_lc_rs::signature::RsaEncoding = match alg {
                "RS512" => &RSA_PKCS1_SHA512,
                _ => &RSA_PSS_SHA256,
            };
            pair.sign(padding, &rng, input.as_bytes(), &mut signature)
                .unwrap();
            signature
        }
        "ES256" => {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
            pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec()
        }
        "HS512" => {
            let key = aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA512,
                our_key().public_pem.as_bytes(),
            );
            aws_lc_rs::hmac::sign(&key, input.as_bytes())
                .as_ref()
                .to_vec()
        }
        other => unreachable!("{other}"),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The positive control: on every protected route, the fixture's token
/// and a forged token with nothing edited are accepted (each on a fixture of
/// its own: the routes do their work). So a refusal below is the token's,
/// not the request's.
#[tokio::test]
async fn the_fixture_token_itself_is_accepted_by_every_protected_route() {
    for route in PROTECTED {
        for forged in [false, true] {
            let f = fixture().await;
            let token = match forged {
                false => f.access.clone(),
                // The forging is sound: nothing edited, accepted.
                true => f.forged(|_, _| {}).await,
            };
            let response = f.call(route, Some(&bearer(&token))).await;
            let what = format!("{route}, forged: {forged}");
            match route {
                // The holder has no role: a good token, refused for its scope.
                "admin" => {
                    assert_error(&response, 403, "insufficient_scope");
                }
                _ => assert_eq!(response.status(), 200, "{what}: {}", body_json(&response)),
            }
        }
    }
}

#[tokio::test]
async fn alg_none() {
    let f = fixture().await;
    let header = json!({"alg": "none", "typ": "at+jwt", "kid": our_key().public.kid});
    f.assert_token_refused(&format!("{}.{}.", b64(&header), b64(&f.claims())))
        .await;
}

#[tokio::test]
async fn signed_with_a_key_that_is_not_ours() {
    let f = fixture().await;
    f.assert_token_refused(&forge(stranger_key(), &our_header(), &f.claims()).await)
        .await;
}

#[tokio::test]
async fn hs256_keyed_with_our_public_key() {
    let f = fixture().await;
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(our_key().public.kid.clone());
    let key = EncodingKey::from_secret(our_key().public_pem.as_bytes()).unwrap();
    f.assert_token_refused(&jsonwebtoken::encode(&header, &f.claims(), &key).unwrap())
        .await;
}

#[tokio::test]
async fn an_algorithm_we_do_not_issue() {
    let f = fixture().await;
    // Each really signed with its algorithm: RSA ones with our own private
    // key, ES256 with a key of its own, HS512 keyed with our public key. A
    // verifier that took the algorithm from the header would accept one.
    for alg in ["RS512", "PS256", "ES256", "HS512"] {
        let token = signed_with(alg, &f.claims());
        f.assert_token_refused(&token).await;
    }
}

#[tokio::test]
async fn signature_bit_flipped() {
    let f = fixture().await;
    let (input, signature) = f.access.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[10] ^= 0x01;
    f.assert_token_refused(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes)))
        .await;
}

#[tokio::test]
async fn payload_edited() {
    let f = fixture().await;
    let parts: Vec<&str> = f.access.split('.').collect();
    let mut claims = f.claims();
    claims["username"] = json!("someone-else");
    f.assert_token_refused(&format!("{}.{}.{}", parts[0], b64(&claims), parts[2]))
        .await;
}

#[tokio::test]
async fn expired() {
    let f = fixture().await;
    let token = f
        .forged(|_, c| {
            c["iat"] = json!(now() - 3_600);
            c["nbf"] = json!(now() - 3_600);
            c["exp"] = json!(now() - 1_800);
        })
        .await;
    f.assert_token_refused(&token).await;
}

#[tokio::test]
async fn nbf_in_the_future() {
    let f = fixture().await;
    f.assert_token_refused(&f.forged(|_, c| c["nbf"] = json!(now() + 600)).await)
        .await;
}

#[tokio::test]
async fn iat_in_the_future_beyond_leeway() {
    let f = fixture().await;
    f.assert_token_refused(&f.forged(|_, c| c["iat"] = json!(now() + 600)).await)
        .await;
}

#[tokio::test]
async fn wrong_issuer() {
    let f = fixture().await;
    f.assert_token_refused(&f.forged(|_, c| c["iss"] = json!("https://evil.test")).await)
        .await;
}

#[tokio::test]
async fn wrong_or_missing_audience() {
    let f = fixture().await;
    f.assert_token_refused(&f.forged(|_, c| c["aud"] = json!("another-api")).await)
        .await;
    f.assert_token_refused(&f.forged(|_, c| c["aud"] = json!(["another-api"])).await)
        .await;
    f.assert_token_refused(
        &f.forged(|_, c| drop(c.as_object_mut().unwrap().remove("aud")))
            .await,
    )
    .await;
}

#[tokio::test]
async fn missing_exp_sub_or_sid() {
    let f = fixture().await;
    for claim in ["exp", "sub", "sid"] {
        f.assert_token_refused(
            &f.forged(|_, c| drop(c.as_object_mut().unwrap().remove(claim)))
                .await,
        )
        .await;
    }
}

#[tokio::test]
async fn wrong_typ() {
    let f = fixture().await;
    f.assert_token_refused(&f.forged(|h, _| h["typ"] = json!("JWT")).await)
        .await;
}

#[tokio::test]
async fn a_refresh_token_used_as_access_token() {
    let f = fixture().await;
    f.assert_token_refused(&f.refresh).await;
}

#[tokio::test]
async fn kid_naming_no_key_of_ours() {
    let f = fixture().await;
    f.assert_token_refused(&f.forged(|h, _| h["kid"] = json!("not-our-key")).await)
        .await;
    f.assert_token_refused(
        &forge(
            stranger_key(),
            &json!({"alg": "RS256", "typ": "at+jwt", "kid": stranger_key().public.kid}),
            &f.claims(),
        )
        .await,
    )
    .await;
}

#[tokio::test]
async fn jku_x5u_and_jwk_headers_are_never_followed() {
    let f = fixture().await;
    let stranger_jwk = serde_json::to_value(stranger_key().public.jwk()).unwrap();
    // The URLs point at a listener that would serve the stranger's key: a
    // verifier that followed one would connect to it. None may.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = format!("http://{}", listener.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    let jwks = json!({"keys": [stranger_jwk.clone()]}).to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{jwks}",
                jwks.len()
            );
            let _ = tokio::io::AsyncWriteExt::write_all(&mut socket, answer.as_bytes()).await;
        }
    });
    for (name, value) in [
        ("jku", json!(format!("{at}/jwks.json"))),
        ("x5u", json!(format!("{at}/cert.pem"))),
        ("jwk", stranger_jwk),
    ] {
        // Signed by the stranger, pointing at the stranger's key: never looked at.
        let mut header = json!({"alg": "RS256", "typ": "at+jwt", "kid": stranger_key().public.kid});
        header[name] = value.clone();
        f.assert_token_refused(&forge(stranger_key(), &header, &f.claims()).await)
            .await;
        // Even signed by our key, a token naming a key is refused.
        let ours = f.forged(|h, _| h[name] = value).await;
        f.assert_token_refused(&ours).await;
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a verifier fetched a key a token named"
    );
    // The listener counts what reaches it (its positive control).
    let address = at.trim_start_matches("http://").to_owned();
    let _probe = tokio::net::TcpStream::connect(address).await.unwrap();
    for _ in 0..100 {
        if connections.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the listener never counted a connection");
}

#[tokio::test]
async fn garbage_tokens() {
    let f = fixture().await;
    for token in [
        "abc.def",
        "a.b.c.d",
        "eyJ.eyJ.sig.extra",
        &"A".repeat(100 * 1024),
        "ey!J*.{}[].%%%",
        "été.été.été",
    ] {
        f.assert_token_refused(token).await;
    }
}

#[tokio::test]
async fn bearer_with_no_token_and_other_schemes() {
    let f = fixture().await;
    for value in ["Bearer", "Bearer ", "Basic aG9sZGVyOnB3", "Token abc", ""] {
        f.assert_refused(Some(value)).await;
    }
    f.assert_refused(None).await;
}

#[tokio::test]
async fn a_token_in_the_query_string_is_ignored() {
    let f = fixture().await;
    let mut json: Value = serde_json::from_str(&event_text("get-name.json")).unwrap();
    json["headers"]
        .as_object_mut()
        .unwrap()
        .remove("authorization");
    json["rawQueryString"] = format!("access_token={}", f.access).into();
    json["queryStringParameters"] = json!({"access_token": f.access});
    let req = lambda_http::request::from_str(&json.to_string()).unwrap();
    let response = get_name::handle(&f.app.get_name(), req).await;
    assert_error(&response, 401, "missing_token");
}

#[tokio::test]
async fn a_revoked_sessions_token() {
    let f = fixture().await;
    let access = f.access.clone();
    assert_eq!(
        logout::handle(
            &f.app.logout(),
            request("logout.json", Some(&bearer(&access)), None)
        )
        .await
        .status(),
        200
    );
    for (route, response) in f.protected(Some(&bearer(&access))).await {
        assert_error(&response, 401, "invalid_token");
        let _ = route;
    }
    let _ = &f.user;
}

// ---- hostile requests

/// A request from `events/<name>` with its body, headers and base64 flag replaced.
fn raw(name: &str, body: Option<&str>, base64: bool, headers: &[(&str, &str)]) -> Request {
    let mut json: Value = serde_json::from_str(&event_text(name)).unwrap();
    match body {
        Some(body) => json["body"] = body.into(),
        None => drop(json.as_object_mut().unwrap().remove("body")),
    }
    json["isBase64Encoded"] = base64.into();
    for (k, v) in headers {
        if v.is_empty() {
            json["headers"].as_object_mut().unwrap().remove(*k);
        } else {
            json["headers"][*k] = (*v).into();
        }
    }
    lambda_http::request::from_str(&json.to_string()).unwrap()
}

fn binary(name: &str, bytes: &[u8]) -> Request {
    raw(name, Some(&STANDARD.encode(bytes)), true, &[])
}

async fn all_post_handlers(app: &App, req: impl Fn() -> Vec<Request>) -> Vec<Response<Body>> {
    let reqs = req();
    let mut out = Vec::new();
    let mut it = reqs.into_iter();
    out.push(login::handle(&app.login(), it.next().unwrap()).await);
    out.push(register::handle(&app.register(), it.next().unwrap()).await);
    out.push(refresh::handle(&app.refresh(), it.next().unwrap()).await);
    out
}

fn for_each_route(make: impl Fn(&str) -> Request) -> Vec<Request> {
    ["login.json", "register.json", "refresh.json"]
        .iter()
        .map(|n| make(n))
        .collect()
}

async fn assert_clean_4xx(store: &Store, make: impl Fn(&str) -> Request, status: u16, code: &str) {
    let app = App::new(store);
    for response in all_post_handlers(&app, || for_each_route(&make)).await {
        assert_error(&response, status, code);
    }
}

#[tokio::test]
async fn hostile_bodies_get_clean_4xx_json_errors() {
    let store = fresh_store().await;
    let big = format!("{{\"username\": \"{}\"}}", "a".repeat(9 * 1024));
    assert_clean_4xx(
        &store,
        |n| raw(n, Some(&big), false, &[]),
        413,
        "payload_too_large",
    )
    .await;
    let megabyte = format!(
        "{{\"username\": \"{}\", \"password\": \"x\"}}",
        "u".repeat(1024 * 1024)
    );
    assert_clean_4xx(
        &store,
        |n| raw(n, Some(&megabyte), false, &[]),
        413,
        "payload_too_large",
    )
    .await;
    let nested = format!(
        "{{\"username\": {}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_clean_4xx(
        &store,
        |n| raw(n, Some(&nested), false, &[]),
        413,
        "payload_too_large",
    )
    .await;
    let nested_small = format!(
        "{{\"username\": {}{}}}",
        "[".repeat(3_000),
        "]".repeat(3_000)
    );
    assert_clean_4xx(
        &store,
        |n| raw(n, Some(&nested_small), false, &[]),
        400,
        "invalid_request",
    )
    .await;
    assert_clean_4xx(
        &store,
        |n| binary(n, &[0x7b, 0xff, 0xfe, 0x7d]),
        400,
        "invalid_request",
    )
    .await;
    for body in [
        r#"{"username": "a", "username": "b", "password": "p", "name": "n", "refresh_token": "t"}"#,
        r#"{"username": 12345, "password": 1, "name": 2, "refresh_token": 3}"#,
        "null",
        "[]",
        r#"["username", "password"]"#,
        "\"just a string\"",
        "",
    ] {
        assert_clean_4xx(
            &store,
            |n| raw(n, Some(body), false, &[]),
            400,
            "invalid_request",
        )
        .await;
    }
    let app = App::new(&store);
    for username in [
        "",
        "nul\u{0}byte",
        "tab\there",
        "line\nfeed",
        "bell\u{7}",
        "\u{202e}rtl",
    ] {
        let body = json!({"username": username, "password": "a long enough password", "name": "N"})
            .to_string();
        let response =
            login::handle(&app.login(), raw("login.json", Some(&body), false, &[])).await;
        assert_error(&response, 400, "invalid_request");
        let response = register::handle(
            &app.register(),
            raw("register.json", Some(&body), false, &[]),
        )
        .await;
        assert_error(&response, 400, "invalid_request");
    }
    let body = json!({"refresh_token": ""}).to_string();
    assert_error(
        &refresh::handle(&app.refresh(), raw("refresh.json", Some(&body), false, &[])).await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn base64_bodies_are_decoded_and_wrong_content_types_refused() {
    let store = fresh_store().await;
    add_user(&store, "b64-user", "B", PASSWORD).await;
    let app = App::new(&store);
    let creds = json!({"username": "b64-user", "password": PASSWORD}).to_string();
    let response = login::handle(&app.login(), binary("login.json", creds.as_bytes())).await;
    assert_eq!(response.status(), 200, "a valid base64 body is the body");
    // A missing content type is refused like a wrong one: 415.
    for content_type in [
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        assert_clean_4xx(
            &store,
            |n| raw(n, Some(&creds), false, &[("content-type", content_type)]),
            415,
            "unsupported_media_type",
        )
        .await;
    }
    let response = login::handle(
        &app.login(),
        raw(
            "login.json",
            Some(&creds),
            false,
            &[("content-type", "application/json; charset=utf-8")],
        ),
    )
    .await;
    assert_eq!(response.status(), 200);
}

/// What `fetch(url, {mode: 'no-cors', body: new Blob([json])})` or
/// `navigator.sendBeacon(url, json)` sends from any web page, with no
/// preflight: a JSON body without a content type (or a CORS-safelisted one).
/// No route takes it, and nothing is hashed, verified or written.
/// `req` to the function that serves `event`: logout or the password function.
async fn account_or_logout(app: &App, event: &str, req: Request) -> Response<Body> {
    match event {
        "logout.json" => logout::handle(&app.logout(), req).await,
        _ => account::handle(&app.account(), req).await,
    }
}

#[tokio::test]
async fn a_body_a_page_can_send_cross_origin_without_asking_is_415_everywhere() {
    let store = fresh_store().await;
    add_user(&store, "nocors", "N", PASSWORD).await;
    let app = App::new(&store);
    let login_state = app.login();
    let tokens = login::handle(
        &login_state,
        raw(
            "login.json",
            Some(&json!({"username": "nocors", "password": PASSWORD}).to_string()),
            false,
            &[],
        ),
    )
    .await;
    let access = body_json(&tokens)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = scan_keys(&store).await;
    let auth = format!("Bearer {access}");
    for content_type in ["", "text/plain;charset=UTF-8"] {
        let headers = [("content-type", content_type)];
        let with_auth = [
            ("content-type", content_type),
            ("authorization", auth.as_str()),
        ];
        let login_body = json!({"username": "nocors", "password": PASSWORD}).to_string();
        let register_body =
            json!({"username": "nocors-2", "password": "a long passphrase", "name": "N"})
                .to_string();
        let password_body =
            json!({"current_password": PASSWORD, "new_password": "another passphrase"}).to_string();
        let proof_body = json!({"password": PASSWORD}).to_string();
        let responses = [
            login::handle(
                &login_state,
                raw("login.json", Some(&login_body), false, &headers),
            )
            .await,
            register::handle(
                &app.register(),
                raw("register.json", Some(&register_body), false, &headers),
            )
            .await,
            refresh::handle(
                &app.refresh(),
                raw(
                    "refresh.json",
                    Some(r#"{"refresh_token": "x"}"#),
                    false,
                    &headers,
                ),
            )
            .await,
            logout::handle(
                &app.logout(),
                raw("logout.json", Some(r#"{"all": true}"#), false, &with_auth),
            )
            .await,
            change_password::handle(
                &app.account(),
                raw("password.json", Some(&password_body), false, &with_auth),
            )
            .await,
            account::handle(
                &app.account(),
                raw("reauthenticate.json", Some(&proof_body), false, &with_auth),
            )
            .await,
            account::handle(
                &app.account(),
                raw("delete-account.json", Some(&proof_body), false, &with_auth),
            )
            .await,
        ];
        // The protected routes carry a token above, which no page elsewhere
        // can attach without a preflight: even so, the body is refused. What
        // such a page can send them (no token) is refused before the body.
        for response in &responses {
            assert_error(response, 415, "unsupported_media_type");
        }
        for (event, body) in [
            ("logout.json", r#"{"all": true}"#),
            ("password.json", password_body.as_str()),
            ("reauthenticate.json", proof_body.as_str()),
            ("delete-account.json", proof_body.as_str()),
        ] {
            let no_token = [("content-type", content_type), ("authorization", "")];
            let req = raw(event, Some(body), false, &no_token);
            let response = account_or_logout(&app, event, req).await;
            assert_error(&response, 401, "missing_token");
        }
    }
    assert_eq!(
        login_state.passwords.verifications(),
        1,
        "only the first login verified"
    );
    let after = scan_keys(&store).await;
    let changed: Vec<_> = after
        .iter()
        .filter(|k| !before.contains(k) && !k.starts_with("RATE#"))
        .collect();
    assert!(changed.is_empty(), "written: {changed:?}");
    // The session still works: logout-all and password change did not happen.
    assert_eq!(
        get_name::handle(&app.get_name(), request("get-name.json", Some(&auth), None))
            .await
            .status(),
        200
    );
}

/// Every item's key in the test's table.
async fn scan_keys(store: &Store) -> Vec<String> {
    let items = local_client()
        .await
        .scan()
        .table_name(store.table())
        .send()
        .await
        .unwrap();
    items
        .items()
        .iter()
        .map(|i| i["pk"].as_s().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn an_invalid_base64_body_is_400_not_a_runtime_panic() {
    // The runtime marks such a request (lambda_http would panic decoding it);
    // the handlers answer the mark. The watch check sends the real event.
    let store = fresh_store().await;
    let app = App::new(&store);
    let marked = raw(
        "login.json",
        None,
        false,
        &[(auth::http::INVALID_BASE64_MARK, "1")],
    );
    let response = login::handle(&app.login(), marked).await;
    let json = assert_error(&response, 400, "invalid_request");
    assert!(json["message"].as_str().unwrap().contains("base64"));
}

#[tokio::test]
async fn unknown_query_strings_and_headers_are_ignored() {
    let store = fresh_store().await;
    add_user(&store, "plain", "Plain", PASSWORD).await;
    let app = App::new(&store);
    let creds = json!({"username": "plain", "password": PASSWORD}).to_string();
    let mut json: Value = serde_json::from_str(&event_text("login.json")).unwrap();
    json["body"] = creds.into();
    json["rawQueryString"] = "debug=1&admin=true&username=root".into();
    json["queryStringParameters"] = json!({"debug": "1", "admin": "true", "username": "root"});
    json["headers"]["x-forwarded-user"] = "root".into();
    json["headers"]["x-admin"] = "true".into();
    let response = login::handle(
        &app.login(),
        lambda_http::request::from_str(&json.to_string()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let token = body_json(&response)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(verifier().verify(&token).await.unwrap().username, "plain");
}

// ---- property-based: whatever comes in, no panic, no 5xx, a JSON body

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Stands for a valid access token of a live session, made for the case
    /// (so the fuzzed bodies reach the protected routes' parsers too).
    const VALID: &str = "a valid token";

    fn header_value() -> impl Strategy<Value = String> {
        prop_oneof![
            2 => Just(VALID.to_owned()),
            1 => Just(String::new()),
            1 => "[ -~]{0,64}",
            1 => "Bearer [A-Za-z0-9._~+/=-]{0,300}",
            1 => "Bearer [ -~]{0,100}",
        ]
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            "[ -~]{0,200}".prop_map(String::into_bytes),
            (
                "[ -~]{0,40}",
                "[ -~\u{80}-\u{10ffff}]{0,80}",
                "[ -~]{0,20}"
            )
                .prop_map(|(u, p, n)| json!({"username": u, "password": p, "name": n, "refresh_token": p, "all": u.len() % 2 == 0})
                    .to_string()
                    .into_bytes()),
        ]
    }

    fn build(
        name: &str,
        body: &[u8],
        authorization: &str,
        content_type: &str,
        base64: bool,
    ) -> Request {
        let mut json: Value = serde_json::from_str(&event_text(name)).unwrap();
        json["body"] = if base64 {
            STANDARD.encode(body).into()
        } else {
            String::from_utf8_lossy(body).into_owned().into()
        };
        json["isBase64Encoded"] = base64.into();
        let headers = json["headers"].as_object_mut().unwrap();
        if authorization.is_empty() {
            headers.remove("authorization");
        } else {
            headers.insert("authorization".into(), authorization.into());
        }
        headers.insert("content-type".into(), content_type.into());
        lambda_http::request::from_str(&json.to_string()).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn no_handler_panics_fails_or_answers_without_json(
            body in body(),
            authorization in header_value(),
            content_type in prop_oneof![Just("application/json".to_owned()), "[ -~]{0,30}"],
            base64 in any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let store = shared_store().await;
                let app = App::new(&store);
                let authorization = match authorization.as_str() {
                    VALID => bearer(&fresh_access(&app).await),
                    other => other.to_owned(),
                };
                let (l, reg, rf, g, lo, pw, adm) = (app.login(), app.register(), app.refresh(), app.get_name(), app.logout(), app.account(), app.admin());
                let req = |name: &str| build(name, &body, &authorization, &content_type, base64);
                let cases: Vec<(&str, Response<Body>)> = vec![
                    ("login", runtime::handle(&|r| login::handle(&l, r), req("login.json")).await),
                    ("register", runtime::handle(&|r| register::handle(&reg, r), req("register.json")).await),
                    ("refresh", runtime::handle(&|r| refresh::handle(&rf, r), req("refresh.json")).await),
                    ("get_name", runtime::handle(&|r| get_name::handle(&g, r), req("get-name.json")).await),
                    ("logout", runtime::handle(&|r| logout::handle(&lo, r), req("logout.json")).await),
                    ("sessions", runtime::handle(&|r| logout::handle(&lo, r), req("sessions.json")).await),
                    ("end_session", runtime::handle(&|r| logout::handle(&lo, r), req("end-session.json")).await),
                    ("password", runtime::handle(&|r| change_password::handle(&pw, r), req("password.json")).await),
                    ("reauthenticate", runtime::handle(&|r| account::handle(&pw, r), req("reauthenticate.json")).await),
                    ("account", runtime::handle(&|r| account::handle(&pw, r), req("delete-account.json")).await),
                    ("admin", runtime::handle(&|r| admin::handle(&adm, r), req("admin-user.json")).await),
                ];
                for (route, response) in cases {
                    prop_assert!(response.status().as_u16() < 500, "{route}: {}", response.status());
                    let json: Result<Value, _> = serde_json::from_slice(&body_bytes(&response));
                    prop_assert!(json.is_ok(), "{route}: body is not JSON");
                }
                Ok(())
            })?;
        }
    }

    /// One table for all cases (tables are cheap, but not free).
    /// A new session's access token of the shared store's user.
    async fn fresh_access(app: &App) -> String {
        let username = "fuzzed-holder";
        if app
            .store
            .get(&auth::users::Username::parse(username).unwrap())
            .await
            .unwrap()
            .is_none()
        {
            let _ = app
                .store
                .create(&auth::users::User::new(
                    auth::users::Username::parse(username).unwrap(),
                    "Fuzzed".into(),
                    hasher().hash(PASSWORD.to_owned()).await.unwrap(),
                ))
                .await;
        }
        let body = json!({"username": username, "password": PASSWORD}).to_string();
        let response = login::handle(&app.login(), request("login.json", None, Some(&body))).await;
        body_json(&response)["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{}", body_json(&response)))
            .to_owned()
    }

    async fn shared_store() -> Store {
        static TABLE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let client = local_client().await;
        let table = match TABLE.get() {
            Some(table) => table.clone(),
            None => {
                let store = fresh_store().await;
                let name = store.table().to_owned();
                let _ = TABLE.set(name.clone());
                name
            }
        };
        Store::new(client, table)
    }
}
