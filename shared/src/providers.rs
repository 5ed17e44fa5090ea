//! The HTTP client for outside identity providers (federation, issue 28):
//! their discovery documents, key sets and token endpoints. It is not the
//! functions' AWS client: it trusts the public web's roots (Mozilla's, from
//! `webpki-root-certs`), not Amazon's alone; it follows no redirect (a
//! provider's endpoints are exact, and a hop we follow is a hop an attacker
//! may point elsewhere); it bounds every call in time and every answer in
//! size; and it speaks https only, unless it is made for a provider on this
//! machine's loopback (the local one of `make dev` and `make test`: only
//! when a configured issuer is one, so that no provider's document can
//! point a deployed function at its own Runtime API). It is the same
//! stack as the AWS client otherwise (hyper, rustls on aws-lc): no second
//! TLS library in the functions.
//!
//! And what we learn of a provider: its discovery document (OpenID Connect
//! Discovery 1.0), checked before anything in it is used: the issuer it
//! names exactly the one we asked, every endpoint one we would call, and
//! ID tokens signed by an algorithm on our allow-list (asymmetric only:
//! never `none`, never an HMAC a public key could be made to key).

use std::time::Duration;

use aws_smithy_http_client::Connector;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_types::body::SdkBody;
use base64::Engine;
use http_body_util::{BodyExt, Limited};
use lambda_http::http::{self, Uri};

/// How long a provider may take to answer one call, all told.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer we read: a discovery document or a key set is a few
/// kilobytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Why a call to a provider gave no answer we use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("{0}: not a provider URL (https, or http on a loopback address)")]
    Url(String),
    #[error("the provider answered with a redirect ({0}), which is not followed")]
    Redirected(u16),
    #[error("the provider did not answer within {} s", CALL_TIMEOUT.as_secs())]
    Timeout,
    #[error("the provider's answer is over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the call failed: {0}")]
    Failed(String),
}

/// The algorithms we accept an ID token signed with (RFC 8725 §3.1: the
/// algorithm is ours to pin, never the token's to choose): RSA and ECDSA as
/// providers sign with them.
pub const ID_TOKEN_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
];

/// What a provider's discovery document says, as we use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderMetadata {
    /// Exactly the issuer we asked about (and the one its ID tokens name).
    pub issuer: String,
    pub authorization_endpoint: Uri,
    pub token_endpoint: Uri,
    pub jwks_uri: Uri,
    /// Whether the authorization response names its issuer (RFC 9207): then
    /// we check it.
    pub iss_parameter: bool,
    /// The provider's ID token algorithms that are on our allow-list.
    pub algorithms: Vec<String>,
    /// How we prove the client at its token endpoint.
    pub client_auth: ClientAuth,
}

/// How a client proves itself at a token endpoint with its secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`: the default where a provider names none.
    Basic,
    /// `client_secret_post`.
    Post,
}

/// Which hosts a client may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hosts {
    /// https to anyone: every deployed provider.
    Public,
    /// And plain http to a loopback address (`127.0.0.0/8`, `[::1]`,
    /// literally: no name is resolved), for a local provider; chosen only
    /// when a configured issuer is itself one.
    AlsoLoopback,
}

impl Hosts {
    /// What an issuer needs: loopback only for a loopback issuer.
    pub fn for_issuer(issuer: &str) -> Hosts {
        match issuer.parse::<Uri>() {
            Ok(uri)
                if uri.scheme_str() == Some("http")
                    && is_provider_url(&uri, Hosts::AlsoLoopback) =>
            {
                Hosts::AlsoLoopback
            }
            _ => Hosts::Public,
        }
    }
}

/// Why a provider's discovery document is not one we use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoveryError {
    #[error(transparent)]
    Call(#[from] ProviderError),
    #[error("the discovery document answered {0}")]
    Status(u16),
    #[error("the discovery document is not one: {0}")]
    Malformed(String),
    #[error("the discovery document names the issuer {found:?}, not {asked:?}")]
    IssuerMismatch { asked: String, found: String },
    #[error("{field} ({value}) is not an https URL (or http on loopback)")]
    Endpoint { field: &'static str, value: String },
    #[error("the provider offers no ID token algorithm we accept (it offers {0:?})")]
    NoAlgorithm(Vec<String>),
    #[error("the provider does not offer the authorization code flow")]
    NoCodeFlow,
    #[error("the provider lists PKCE methods without S256")]
    NoPkce,
    #[error("the provider takes no client secret we send (basic or post): {0:?}")]
    NoClientAuth(Vec<String>),
}

/// Reads and checks `issuer`'s discovery document.
pub async fn discover(
    http: &ProviderHttp,
    issuer: &str,
) -> Result<ProviderMetadata, DiscoveryError> {
    // Discovery §4: a terminating slash of the issuer is removed first.
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let request = http::Request::get(url.as_str())
        .header("accept", "application/json")
        .body(Vec::new())
        .map_err(|_| ProviderError::Url(url.clone()))?;
    let answer = http.send(request).await?;
    if answer.status() != 200 {
        return Err(DiscoveryError::Status(answer.status().as_u16()));
    }
    metadata(issuer, answer.body())
}

/// The checks of a discovery document for `issuer` (Discovery §4.3: its
/// `issuer` is exactly the one asked). Its endpoints are held to what the
/// issuer itself is: https for an https issuer, whatever its document says.
/// PKCE S256 is always sent (RFC 9700 §2.1.1): a provider that lists its
/// methods without it is refused.
pub fn metadata(issuer: &str, document: &[u8]) -> Result<ProviderMetadata, DiscoveryError> {
    #[derive(serde::Deserialize)]
    struct Document {
        issuer: String,
        authorization_endpoint: String,
        token_endpoint: String,
        jwks_uri: String,
        response_types_supported: Vec<String>,
        id_token_signing_alg_values_supported: Vec<String>,
        #[serde(default)]
        authorization_response_iss_parameter_supported: bool,
        code_challenge_methods_supported: Option<Vec<String>>,
        token_endpoint_auth_methods_supported: Option<Vec<String>>,
    }
    let document: Document =
        serde_json::from_slice(document).map_err(|e| DiscoveryError::Malformed(e.to_string()))?;
    if document.issuer != issuer {
        return Err(DiscoveryError::IssuerMismatch {
            asked: issuer.to_owned(),
            found: document.issuer,
        });
    }
    let hosts = Hosts::for_issuer(issuer);
    let endpoint = |field: &'static str, value: &str| {
        value
            .parse::<Uri>()
            .ok()
            .filter(|uri| is_provider_url(uri, hosts))
            .ok_or_else(|| DiscoveryError::Endpoint {
                field,
                value: value.to_owned(),
            })
    };
    if !document
        .response_types_supported
        .iter()
        .any(|t| t == "code")
    {
        return Err(DiscoveryError::NoCodeFlow);
    }
    if document
        .code_challenge_methods_supported
        .as_ref()
        .is_some_and(|methods| !methods.iter().any(|m| m == "S256"))
    {
        return Err(DiscoveryError::NoPkce);
    }
    // Absent: client_secret_basic (Discovery §3).
    let client_auth = match &document.token_endpoint_auth_methods_supported {
        None => ClientAuth::Basic,
        Some(methods) if methods.iter().any(|m| m == "client_secret_basic") => ClientAuth::Basic,
        Some(methods) if methods.iter().any(|m| m == "client_secret_post") => ClientAuth::Post,
        Some(methods) => return Err(DiscoveryError::NoClientAuth(methods.clone())),
    };
    let algorithms: Vec<String> = document
        .id_token_signing_alg_values_supported
        .iter()
        .filter(|alg| ID_TOKEN_ALGORITHMS.contains(&alg.as_str()))
        .cloned()
        .collect();
    if algorithms.is_empty() {
        return Err(DiscoveryError::NoAlgorithm(
            document.id_token_signing_alg_values_supported,
        ));
    }
    Ok(ProviderMetadata {
        authorization_endpoint: endpoint(
            "authorization_endpoint",
            &document.authorization_endpoint,
        )?,
        token_endpoint: endpoint("token_endpoint", &document.token_endpoint)?,
        jwks_uri: endpoint("jwks_uri", &document.jwks_uri)?,
        iss_parameter: document.authorization_response_iss_parameter_supported,
        algorithms,
        client_auth,
        issuer: document.issuer,
    })
}

/// Whether `uri` is one a client for `hosts` calls: https with a host, or
/// (`AlsoLoopback`) http to a loopback address written as one; no user info.
pub fn is_provider_url(uri: &Uri, hosts: Hosts) -> bool {
    let Some(authority) = uri.authority() else {
        return false;
    };
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return false;
    }
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => hosts == Hosts::AlsoLoopback && is_loopback(authority.host()),
        _ => false,
    }
}

/// A loopback address, written as one (a name such as `localhost` is
/// resolved by whoever resolves it: not ours to trust).
fn is_loopback(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The client: made at init, its connector (and the roots it trusts, some
/// 150 certificates to parse) built at the first call, once: most of the
/// function's routes never call a provider, and a cold start should not
/// pay for what its request may not need.
#[derive(Debug)]
pub struct ProviderHttp {
    connector: std::sync::OnceLock<Connector>,
    hosts: Hosts,
}

impl ProviderHttp {
    pub fn new(hosts: Hosts) -> Self {
        ProviderHttp {
            connector: std::sync::OnceLock::new(),
            hosts,
        }
    }

    fn connector(&self) -> &Connector {
        self.connector.get_or_init(|| {
            let context = TlsContext::builder()
                .with_trust_store(TrustStore::empty().with_pem_certificate(public_roots_pem()))
                .build()
                .expect("the compiled-in roots make a TLS context");
            Connector::builder()
                .connector_settings(
                    HttpConnectorSettings::builder()
                        .connect_timeout(CALL_TIMEOUT)
                        .read_timeout(CALL_TIMEOUT)
                        .build(),
                )
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(context)
                .build()
        })
    }

    /// One call: the answer's status, headers and body (a 3xx is an error,
    /// never followed).
    pub async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, ProviderError> {
        if !is_provider_url(request.uri(), self.hosts) {
            return Err(ProviderError::Url(request.uri().to_string()));
        }
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, SdkBody::from(body))
            .try_into()
            .map_err(|e: aws_smithy_runtime_api::http::HttpError| {
                ProviderError::Failed(e.to_string())
            })?;
        let call = async {
            let response =
                self.connector()
                    .call(request)
                    .await
                    .map_err(|e| match e.is_timeout() {
                        true => ProviderError::Timeout,
                        false => ProviderError::Failed(e.to_string()),
                    })?;
            let status = response.status().as_u16();
            if (300..400).contains(&status) {
                return Err(ProviderError::Redirected(status));
            }
            let mut answer = http::Response::builder().status(status);
            for (name, value) in response.headers().iter() {
                answer = answer.header(name, value);
            }
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        ProviderError::TooLarge
                    } else {
                        ProviderError::Failed(e.to_string())
                    }
                })?
                .to_bytes()
                .to_vec();
            answer
                .body(body)
                .map_err(|e| ProviderError::Failed(e.to_string()))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| ProviderError::Timeout)?
    }
}

/// Mozilla's roots (as `webpki-root-certs` ships them), as PEM.
fn public_roots_pem() -> Vec<u8> {
    let mut pem = String::new();
    for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let encoded = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_roots_are_parsed_at_the_first_call_not_at_init() {
        let http = ProviderHttp::new(Hosts::AlsoLoopback);
        assert!(http.connector.get().is_none());
        // A URL it refuses calls nothing.
        let elsewhere = http::Request::get("http://example.com/")
            .body(vec![])
            .unwrap();
        assert!(matches!(
            http.send(elsewhere).await,
            Err(ProviderError::Url(_))
        ));
        assert!(http.connector.get().is_none());
        // A call (to a loopback port nobody listens on) builds it, once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let call = || {
            http::Request::get(format!("http://127.0.0.1:{port}/"))
                .body(vec![])
                .unwrap()
        };
        assert!(http.send(call()).await.is_err());
        let built: *const Connector = http.connector.get().expect("built by the call");
        assert!(http.send(call()).await.is_err());
        assert!(std::ptr::eq(built, http.connector.get().unwrap()));
    }

    fn url(raw: &str) -> bool {
        raw.parse()
            .is_ok_and(|uri| is_provider_url(&uri, Hosts::AlsoLoopback))
    }

    #[test]
    fn providers_are_called_over_https_or_on_a_loopback_address_only() {
        assert!(url(
            "https://accounts.google.com/.well-known/openid-configuration"
        ));
        assert!(url("https://login.microsoftonline.com/common/v2.0"));
        assert!(url("http://127.0.0.1:8811/jwks"));
        assert!(url("http://[::1]:9000/x"));
        assert!(url("http://127.1.2.3/x"), "all of 127.0.0.0/8");
        for refused in [
            "http://accounts.google.com/",
            "http://10.0.0.1/",
            "http://localhost:9000/x",
            "http://localhost./x",
            "http://localhost.evil.example/",
            "http://127.0.0.1.evil.example/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://127.0.0.%31/",
            "HTTP://evil.example/",
            "ftp://example.com/",
            "https://user:pass@example.com/",
            "/relative/path",
        ] {
            assert!(!url(refused), "{refused}");
        }
    }

    #[test]
    fn plain_http_to_loopback_is_for_a_loopback_issuer_only() {
        let local: Uri = "http://127.0.0.1:8811/jwks".parse().unwrap();
        assert!(!is_provider_url(&local, Hosts::Public));
        assert!(is_provider_url(&local, Hosts::AlsoLoopback));
        assert_eq!(
            Hosts::for_issuer("http://127.0.0.1:8811"),
            Hosts::AlsoLoopback
        );
        assert_eq!(
            Hosts::for_issuer("https://accounts.google.com"),
            Hosts::Public
        );
        assert_eq!(Hosts::for_issuer("http://localhost:8811"), Hosts::Public);
        assert_eq!(
            Hosts::for_issuer("http://accounts.example.com"),
            Hosts::Public
        );
    }

    /// A discovery document as Google's reads, for `issuer`, with `edit`.
    fn document(issuer: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut document = serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": "https://accounts.example.com/o/oauth2/v2/auth",
            "token_endpoint": "https://oauth2.example.com/token",
            "jwks_uri": "https://www.example.com/oauth2/v3/certs",
            "response_types_supported": ["code", "token", "id_token", "code id_token"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["plain", "S256"],
        });
        edit(&mut document);
        serde_json::to_vec(&document).unwrap()
    }

    const ISSUER: &str = "https://accounts.example.com";

    #[test]
    fn a_discovery_document_gives_the_endpoints_and_the_algorithms_we_accept() {
        let found = metadata(
            ISSUER,
            &document(ISSUER, |d| {
                d["id_token_signing_alg_values_supported"] =
                    serde_json::json!(["none", "HS256", "RS256", "ES256"]);
                d["authorization_response_iss_parameter_supported"] = true.into();
            }),
        )
        .unwrap();
        assert_eq!(found.issuer, ISSUER);
        assert_eq!(found.token_endpoint, "https://oauth2.example.com/token");
        assert_eq!(
            found.algorithms,
            ["RS256", "ES256"],
            "none and HS256 dropped"
        );
        assert!(found.iss_parameter);
        let without = metadata(ISSUER, &document(ISSUER, |_| {})).unwrap();
        assert!(!without.iss_parameter, "absent means not offered");
    }

    #[test]
    fn a_discovery_document_for_another_issuer_is_refused() {
        // Exactly: no trailing slash, case or path added or taken away.
        for other in [
            "https://accounts.example.com/",
            "https://Accounts.example.com",
            "https://accounts.example.com/tenant",
            "https://evil.example",
        ] {
            assert!(
                matches!(
                    metadata(ISSUER, &document(other, |_| {})),
                    Err(DiscoveryError::IssuerMismatch { .. })
                ),
                "{other}"
            );
        }
    }

    #[test]
    fn a_discovery_document_with_an_endpoint_we_would_not_call_is_refused() {
        // Plain http, and loopback under an https issuer: a provider's
        // document must not point a function at its own Runtime API.
        for value in [
            "http://oauth2.example.com/x",
            "http://127.0.0.1:9001/2018-06-01/runtime/invocation/next",
        ] {
            for field in ["authorization_endpoint", "token_endpoint", "jwks_uri"] {
                let refused = metadata(
                    ISSUER,
                    &document(ISSUER, |d| {
                        d[field] = value.into();
                    }),
                );
                assert!(
                    matches!(refused, Err(DiscoveryError::Endpoint { field: f, .. }) if f == field),
                    "{field} {value}: {refused:?}"
                );
            }
        }
    }

    #[test]
    fn pkce_s256_and_a_client_secret_method_of_ours_are_required_where_listed() {
        let plain_only = metadata(
            ISSUER,
            &document(ISSUER, |d| {
                d["code_challenge_methods_supported"] = serde_json::json!(["plain"]);
            }),
        );
        assert_eq!(plain_only, Err(DiscoveryError::NoPkce));
        let unlisted = document(ISSUER, |d| {
            d.as_object_mut()
                .unwrap()
                .remove("code_challenge_methods_supported");
        });
        let found = metadata(ISSUER, &unlisted).unwrap();
        assert_eq!(found.client_auth, ClientAuth::Basic, "none named: basic");
        let auth = |methods: serde_json::Value| {
            metadata(
                ISSUER,
                &document(ISSUER, |d| {
                    d["token_endpoint_auth_methods_supported"] = methods;
                }),
            )
            .map(|m| m.client_auth)
        };
        let both = serde_json::json!(["client_secret_post", "client_secret_basic"]);
        assert_eq!(auth(both), Ok(ClientAuth::Basic));
        assert_eq!(
            auth(serde_json::json!(["client_secret_post"])),
            Ok(ClientAuth::Post)
        );
        assert!(matches!(
            auth(serde_json::json!(["private_key_jwt"])),
            Err(DiscoveryError::NoClientAuth(_))
        ));
    }

    #[test]
    fn a_provider_with_no_algorithm_of_ours_or_no_code_flow_is_refused() {
        let symmetric = metadata(
            ISSUER,
            &document(ISSUER, |d| {
                d["id_token_signing_alg_values_supported"] = serde_json::json!(["HS256", "none"]);
            }),
        );
        assert!(
            matches!(symmetric, Err(DiscoveryError::NoAlgorithm(_))),
            "{symmetric:?}"
        );
        let implicit = metadata(
            ISSUER,
            &document(ISSUER, |d| {
                d["response_types_supported"] = serde_json::json!(["id_token", "token"]);
            }),
        );
        assert_eq!(implicit, Err(DiscoveryError::NoCodeFlow));
        assert!(matches!(
            metadata(ISSUER, b"<html>not json</html>"),
            Err(DiscoveryError::Malformed(_))
        ));
        assert!(matches!(
            metadata(
                ISSUER,
                &document(ISSUER, |d| {
                    d.as_object_mut().unwrap().remove("jwks_uri");
                })
            ),
            Err(DiscoveryError::Malformed(_))
        ));
    }

    #[test]
    fn the_public_roots_are_mozillas_and_each_is_a_usable_trust_anchor() {
        let pem = public_roots_pem();
        let certificates = crate::trust::certificates(&pem).unwrap();
        assert_eq!(
            certificates.len(),
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.len()
        );
        assert!(certificates.len() > 100, "{}", certificates.len());
        for der in &certificates {
            webpki::anchor_from_trusted_cert(der).unwrap();
        }
    }
}
