//! Federation's success path: a sign-in through the local identity provider
//! (tools/idp, the certified `oidc-provider`, started by scripts/bench.sh),
//! measured at its callback. For each invocation the bench begins a round
//! trip as the start route does (its transaction in the table, untimed),
//! walks the provider's authorization as a browser does (its development
//! forms the first time, its session after that), and hands the function
//! the callback the provider's redirect makes. What the function does then
//! is what is measured: the round trip taken, the code redeemed at the
//! provider's token endpoint (its key set fetched once a process), the ID
//! token checked, the identity looked up and the session started (the
//! first callback of the run makes the account).

use std::collections::BTreeMap;

use auth::federation::{Intent, Provider, Transaction, providers_from_source};
use auth::providers::{Hosts, ProviderHttp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// The provider's id in `OIDC_PROVIDERS` (and in events/oidc-callback.json's path).
const PROVIDER: &str = "local";
const CLIENT_ID: &str = "auth-bench";
const PARAMETER_PATH: &str = "/auth-bench/oidc/";
/// Who signs in at the provider (its `sub`).
const LOGIN: &str = "bench-federated";

/// The provider, as the bench reaches it.
pub(super) struct Idp {
    issuer: String,
    provider: Provider,
    http: ProviderHttp,
    /// The bench's browser's cookies at the provider.
    cookies: Mutex<BTreeMap<String, String>>,
}

impl Idp {
    /// The provider at `BENCH_IDP_ISSUER`, whose client `auth-bench` has the
    /// secret `BENCH_IDP_SECRET`: put in moto's SSM (`kms_plain`), where the
    /// function reads it at init.
    pub(super) async fn new(sdk: &aws_config::SdkConfig, kms_plain: &str) -> Idp {
        let issuer = var("BENCH_IDP_ISSUER");
        let secret = var("BENCH_IDP_SECRET");
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(sdk)
                .endpoint_url(kms_plain)
                .build(),
        );
        ssm.put_parameter()
            .name(format!("{PARAMETER_PATH}{PROVIDER}"))
            .value(&secret)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .expect("moto: PutParameter");
        let providers = Self::providers(&issuer);
        let config = providers_from_source(&|var: &str| {
            (var == "OIDC_PROVIDERS").then(|| providers.clone())
        })
        .expect("the bench's OIDC_PROVIDERS")
        .remove(0);
        Idp {
            provider: Provider::new(config, secret, &token_config().issuer),
            http: ProviderHttp::new(Hosts::for_issuer(&issuer)),
            issuer,
            cookies: Mutex::default(),
        }
    }

    fn providers(issuer: &str) -> String {
        json!([{
            "id": PROVIDER,
            "name": "Bench IdP",
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret_parameter": format!("{PARAMETER_PATH}{PROVIDER}"),
        }])
        .to_string()
    }

    /// What the federation function's environment adds on `layer`: the
    /// provider, and SSM (moto, over TLS on the production path).
    pub(super) fn env(&self, bench: &Bench, layer: Layer) -> Vec<(String, String)> {
        let ssm = if layer.tls() {
            &bench.kms_tls
        } else {
            &bench.kms_plain
        };
        vec![
            ("OIDC_PROVIDERS".into(), Self::providers(&self.issuer)),
            ("OIDC_PARAMETER_PATH".into(), PARAMETER_PATH.into()),
            ("AWS_ENDPOINT_URL_SSM".into(), ssm.clone()),
        ]
    }

    /// The next callback: a new round trip's, as the provider redirects the
    /// browser back with its code.
    pub(super) async fn callback_event(&self, store: &Store) -> Value {
        let now = auth::clock::system_now();
        let (tx, secrets) = Transaction::begin(PROVIDER, Intent::SignIn, "/", None, now);
        store
            .put_transaction(&tx)
            .await
            .expect("the round trip's transaction");
        let discovered = self
            .provider
            .discovered(&self.http, now)
            .await
            .expect("the local provider's discovery document");
        let url = self
            .provider
            .authorization_url(&discovered.metadata, &tx, &secrets);
        let back = self
            .walk(url)
            .await
            .unwrap_or_else(|e| panic!("the local provider's authorization: {e}"));
        let query = back.split_once('?').map_or("", |(_, q)| q).to_owned();
        let parameters: serde_json::Map<String, Value> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
            .collect();
        assert!(
            parameters.contains_key("code"),
            "the provider sent no code back: {back}"
        );
        let mut json = event("oidc-callback.json");
        json["rawQueryString"] = query.into();
        json["queryStringParameters"] = parameters.into();
        json["cookies"] = json!([format!(
            "{}={}",
            auth::federation::TRANSACTION_COOKIE,
            secrets.handle
        )]);
        json
    }

    /// From the authorization URL to the provider's redirect back to us,
    /// one hop at a time, filling its development login and consent forms
    /// where it shows them (as tests/idp/browse.py does): the redirect's URL.
    async fn walk(&self, mut url: String) -> Result<String, String> {
        let redirect_uri = format!("{}/oidc/{PROVIDER}/callback", token_config().issuer);
        for _ in 0..10 {
            let (status, location, body) = self.call(&url, None).await?;
            if matches!(status, 302 | 303) {
                let location = self.absolute(&location.ok_or("a redirect without Location")?);
                if location.starts_with(&redirect_uri) {
                    return Ok(location);
                }
                url = location;
                continue;
            }
            let action = between(&body, "<form", "action=\"", "\"");
            let prompt = between(&body, "name=\"prompt\"", "value=\"", "\"");
            let (Some(action), Some(prompt), 200) = (action, prompt, status) else {
                return Err(format!("{status}: {}", &body[..body.len().min(200)]));
            };
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("prompt", &prompt);
            if prompt == "login" {
                form.append_pair("login", LOGIN)
                    .append_pair("password", "any");
            }
            let target = self.absolute(&action.replace("&amp;", "&"));
            let (status, location, body) = self.call(&target, Some(form.finish())).await?;
            match (status, location) {
                (302 | 303, Some(location)) => url = self.absolute(&location),
                _ => return Err(format!("{status} after {prompt}: {body}")),
            }
        }
        Err("too many hops at the provider".into())
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with('/') {
            format!("{}{location}", self.issuer)
        } else {
            location.to_owned()
        }
    }

    /// One request to the provider (plain HTTP on loopback; HTTP/1.0, so
    /// the answer ends where the connection does): its status, its
    /// `Location`, its body. Cookies are kept and sent as a browser does
    /// (one jar: the provider is the only site).
    async fn call(
        &self,
        url: &str,
        form: Option<String>,
    ) -> Result<(u16, Option<String>, String), String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: not the local provider"))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let cookies = {
            let jar = self.cookies.lock().unwrap();
            jar.iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut request = format!(
            "{} {} HTTP/1.0\r\nHost: {host}\r\nCookie: {cookies}\r\n",
            if form.is_some() { "POST" } else { "GET" },
            if path.is_empty() { "/" } else { path },
        );
        if let Some(form) = &form {
            request.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
                form.len()
            ));
        } else {
            request.push_str("\r\n");
        }
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").ok_or("no answer")?;
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or("no status line")?;
        let mut location = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("location") {
                location = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case("set-cookie") {
                let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
                if let Some((name, value)) = pair.split_once('=') {
                    let mut jar = self.cookies.lock().unwrap();
                    // A cookie cleared (expired at once) goes, as in a browser.
                    let attributes = attributes.to_ascii_lowercase();
                    if value.is_empty() || attributes.contains("expires=thu, 01 jan 1970") {
                        jar.remove(name);
                    } else {
                        jar.insert(name.to_owned(), value.to_owned());
                    }
                }
            }
        }
        Ok((status, location, body.to_owned()))
    }
}

/// In `text`, after `anchor`, the value between `open` and `close`.
fn between(text: &str, anchor: &str, open: &str, close: &str) -> Option<String> {
    let after = &text[text.find(anchor)? + anchor.len()..];
    let start = after.find(open)? + open.len();
    let length = after[start..].find(close)?;
    Some(after[start..start + length].to_owned())
}

/// Whether a callback's answer is a sign-in: the page with no error in its
/// fragment, and a refresh cookie.
pub(super) fn signed_in(reply: &Value) -> bool {
    let location = reply["headers"]["location"].as_str().unwrap_or("#");
    let refresh = format!("{}=", auth::browser::REFRESH_COOKIE);
    let cookies = reply["cookies"].as_array().into_iter().flatten();
    let mut set_cookies = cookies.chain(
        reply["multiValueHeaders"]["set-cookie"]
            .as_array()
            .into_iter()
            .flatten(),
    );
    !location.contains('#')
        && set_cookies.any(|c| c.as_str().is_some_and(|c| c.starts_with(&refresh)))
}
