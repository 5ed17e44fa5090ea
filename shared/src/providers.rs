//! The HTTP client for outside identity providers (federation, issue 28):
//! their discovery documents, key sets and token endpoints. It is not the
//! functions' AWS client: it trusts the public web's roots (Mozilla's, from
//! `webpki-root-certs`), not Amazon's alone; it follows no redirect (a
//! provider's endpoints are exact, and a hop we follow is a hop an attacker
//! may point elsewhere); it bounds every call in time and every answer in
//! size; and it speaks https only, but to a provider on this machine's
//! loopback (the local one of `make dev` and `make test`). It is the same
//! stack as the AWS client otherwise (hyper, rustls on aws-lc): no second
//! TLS library in the functions.

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

/// Whether `uri` is one we call: https with a host, or http to a loopback
/// host (`localhost`, `127.0.0.0/8`, `[::1]`); no user info in it.
pub fn is_provider_url(uri: &Uri) -> bool {
    let Some(authority) = uri.authority() else {
        return false;
    };
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return false;
    }
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => is_loopback(authority.host()),
        _ => false,
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The client: built once at init (no TLS work until its first call).
#[derive(Debug)]
pub struct ProviderHttp {
    connector: Connector,
}

impl ProviderHttp {
    pub fn new() -> Self {
        let context = TlsContext::builder()
            .with_trust_store(TrustStore::empty().with_pem_certificate(public_roots_pem()))
            .build()
            .expect("the compiled-in roots make a TLS context");
        let connector = Connector::builder()
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
            .build();
        ProviderHttp { connector }
    }

    /// One call: the answer's status, headers and body (a 3xx is an error,
    /// never followed).
    pub async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, ProviderError> {
        if !is_provider_url(request.uri()) {
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
                self.connector
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

impl Default for ProviderHttp {
    fn default() -> Self {
        ProviderHttp::new()
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

    fn url(raw: &str) -> bool {
        is_provider_url(&raw.parse().unwrap())
    }

    #[test]
    fn providers_are_called_over_https_or_on_loopback_only() {
        assert!(url(
            "https://accounts.google.com/.well-known/openid-configuration"
        ));
        assert!(url("https://login.microsoftonline.com/common/v2.0"));
        assert!(url("http://127.0.0.1:8811/jwks"));
        assert!(url("http://localhost:9000/x"));
        assert!(url("http://[::1]:9000/x"));
        assert!(url("http://127.1.2.3/x"), "all of 127.0.0.0/8");
        assert!(
            !url("http://accounts.google.com/"),
            "plain http off loopback"
        );
        assert!(
            !url("http://10.0.0.1/"),
            "a private address is not loopback"
        );
        assert!(!url("http://localhost.evil.example/"));
        assert!(!url("http://127.0.0.1.evil.example/"));
        assert!(!url("ftp://example.com/"));
        assert!(!url("https://user:pass@example.com/"), "no user info");
        assert!(!url("/relative/path"));
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
