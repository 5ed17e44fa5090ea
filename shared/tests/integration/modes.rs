//! Both signing modes through every token path (issue 26), over real HTTP:
//! `make test` runs two routed watches on one table, the main one in sealed
//! mode (the table's keys, unsealed at init, signing in memory; verifiers
//! reading the table), the other in KMS mode (`kms:Sign` per token). In
//! each: register, login, get_name, refresh, re-authentication, password
//! change, discovery and the JWKS; every token is checked the way an
//! outside service would (jsonwebtoken, keys from the mode's own JWKS), and
//! carries the kid its mode must sign with.

use std::time::Duration;

use crate::support::*;
use auth::store::Store;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use ureq::Agent;

struct Watch {
    base: String,
    mode: &'static str,
}

impl Watch {
    fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => {
                let mut request = agent.get(&url);
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                request.call()
            }
            (_, body) => {
                let mut request = agent.post(&url).header("content-type", "application/json");
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                request.send(body.unwrap_or(json!({})).to_string())
            }
        };
        let mut response = result.unwrap_or_else(|e| panic!("{} {path}: {e}", self.mode));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        for field in ["access_token", "refresh_token", "device"] {
            if let Some(secret) = json[field].as_str() {
                note_secret(secret);
            }
        }
        (status, json)
    }

    /// Checks `token` as an outside service would, with the keys of this
    /// watch's JWKS; returns its kid and claims.
    fn outside_check(&self, token: &str) -> (String, Value) {
        let (status, discovery) = self.call("GET", "/.well-known/openid-configuration", None, None);
        assert_eq!(status, 200, "{}: {discovery}", self.mode);
        let issuer = discovery["issuer"].as_str().unwrap();
        assert_eq!(
            discovery["jwks_uri"],
            format!("{issuer}/.well-known/jwks.json")
        );
        let (status, jwks) = self.call("GET", "/.well-known/jwks.json", None, None);
        assert_eq!(status, 200, "{}: {jwks}", self.mode);
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap_or_else(|| panic!("{}: kid {kid} is not in the JWKS {jwks}", self.mode));
        let key = DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[required_env("E2E_JWT_AUDIENCE")]);
        validation.set_issuer(&[issuer]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .unwrap_or_else(|e| panic!("{}: {e}", self.mode))
            .claims;
        (kid, claims)
    }
}

/// The kid the sealed watch's issuers sign with now: the table's signing key.
fn sealed_signing_kid() -> String {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Store::new(local_client().await, required_env("E2E_TABLE_NAME"));
        let records = store.keys().await.unwrap();
        auth::issuer_keys::signing_key(&records, auth::clock::system_now())
            .expect("the table has a signing key: make test's rotation ran")
            .kid
            .clone()
    })
}

fn token_paths(watch: &Watch, expected_kid: &str) {
    let mode = watch.mode;
    let username = format!(
        "modes-{mode}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let (password, new_password) = ("modes passphrase one", "modes passphrase two");
    note_secret(password);
    note_secret(new_password);
    let (status, body) = watch.call(
        "POST",
        "/register",
        None,
        Some(json!({"username": username, "password": password, "name": "Modes"})),
    );
    assert_eq!(status, 201, "{mode}: {body}");

    let mut seen = Vec::new();
    let mut check = |what: &str, token: &str| {
        let (kid, claims) = watch.outside_check(token);
        assert_eq!(kid, expected_kid, "{mode} {what}: signed by the wrong key");
        assert_eq!(claims["username"], username.as_str(), "{mode} {what}");
        let (status, body) = watch.call("GET", "/get_name", Some(token), None);
        assert_eq!(status, 200, "{mode} {what}: {body}");
        seen.push(what.to_owned());
        claims
    };

    let (status, login) = watch.call(
        "POST",
        "/login",
        None,
        Some(json!({"username": username, "password": password})),
    );
    assert_eq!(status, 200, "{mode}: {login}");
    let first = login["access_token"].as_str().unwrap().to_owned();
    check("login", &first);

    let (status, refreshed) = watch.call(
        "POST",
        "/refresh",
        None,
        Some(json!({"refresh_token": login["refresh_token"]})),
    );
    assert_eq!(status, 200, "{mode}: {refreshed}");
    let refreshed = refreshed["access_token"].as_str().unwrap().to_owned();
    check("refresh", &refreshed);

    let (status, reauthenticated) = watch.call(
        "POST",
        "/reauthenticate",
        Some(&refreshed),
        Some(json!({"password": password})),
    );
    assert_eq!(status, 200, "{mode}: {reauthenticated}");
    let reauthenticated = reauthenticated["access_token"].as_str().unwrap().to_owned();
    let claims = check("re-authentication", &reauthenticated);
    assert!(claims["auth_time"].as_i64().unwrap() >= claims["iat"].as_i64().unwrap() - 5);

    let (status, changed) = watch.call(
        "POST",
        "/password",
        Some(&reauthenticated),
        Some(json!({"current_password": password, "new_password": new_password})),
    );
    assert_eq!(status, 200, "{mode}: {changed}");
    let changed = changed["access_token"].as_str().unwrap().to_owned();
    check("password change", &changed);
    // The change ended the first session: its token no longer passes.
    let (status, _) = watch.call("GET", "/get_name", Some(&first), None);
    assert_eq!(status, 401, "{mode}");
    assert_eq!(
        seen,
        ["login", "refresh", "re-authentication", "password change"]
    );
}

#[test]
fn sealed_mode_signs_every_token_path_with_the_tables_key_in_memory() {
    let watch = Watch {
        base: required_env("WATCH_URL"),
        mode: "sealed",
    };
    token_paths(&watch, &sealed_signing_kid());
}

#[test]
fn kms_mode_signs_every_token_path_with_the_kms_key() {
    let watch = Watch {
        base: required_env("KMS_WATCH_URL"),
        mode: "kms",
    };
    token_paths(&watch, &required_env("E2E_KMS_KEY_ID"));
}
