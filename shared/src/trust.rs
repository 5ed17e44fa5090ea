//! Whom the functions' HTTPS client trusts. Every AWS endpoint presents a
//! certificate that chains to an Amazon Trust Services root, so by default
//! that is all a function trusts: five roots compiled in, rather than the
//! system's store of ~150 read from disk at every cold start (on a machine
//! whose `SSL_CERT_DIR` is set, scanning it was half our cold start).
//! `AWS_CA_BUNDLE`, the variable the AWS CLI and SDKs read, replaces them with
//! a PEM bundle: for an endpoint behind another CA (a TLS-inspecting proxy, a
//! local emulator over https).

use std::path::PathBuf;

use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_smithy_http_client::Builder;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::{ConfigError, Source};

/// Amazon Root CA 1-4 and Starfield Services Root G2 (which cross-signs them).
pub const AMAZON_ROOTS_PEM: &str = include_str!("../data/amazon-trust-services-roots.pem");

const VAR: &str = "AWS_CA_BUNDLE";

/// Where the trusted roots come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustRoots {
    /// The compiled-in Amazon Trust Services roots.
    Amazon,
    /// A PEM bundle on disk (`AWS_CA_BUNDLE`), instead of them.
    Bundle(PathBuf),
}

impl TrustRoots {
    pub fn from_source(env: &impl Source) -> Self {
        match env.get(VAR) {
            Some(path) if !path.trim().is_empty() => TrustRoots::Bundle(PathBuf::from(path)),
            _ => TrustRoots::Amazon,
        }
    }

    /// The PEM text of the roots. A bundle is checked: at least one
    /// certificate, and each one usable as a trust anchor. These are exactly
    /// the two steps at which the SDK's client would panic when it builds its
    /// connector, at the first request (aws-smithy-http-client's
    /// `rustls_root_certs`: `pem_slice_iter`, then `RootCertStore::add`, which
    /// is `anchor_from_trusted_cert`): re-read them at every upgrade of that
    /// crate. The compiled-in roots are checked by the tests, not at every
    /// cold start.
    pub fn load(&self) -> Result<Vec<u8>, ConfigError> {
        let pem = match self {
            TrustRoots::Amazon => return Ok(AMAZON_ROOTS_PEM.as_bytes().to_vec()),
            TrustRoots::Bundle(path) => std::fs::read(path)
                .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?,
        };
        let certificates = certificates(&pem)?;
        if certificates.is_empty() {
            return Err(invalid("holds no PEM certificate".into()));
        }
        for (n, der) in certificates.iter().enumerate() {
            webpki::anchor_from_trusted_cert(der)
                .map_err(|e| invalid(format!("certificate {} is not a usable root: {e}", n + 1)))?;
        }
        Ok(pem)
    }
}

/// The DER certificates of a PEM text (text between the blocks is ignored).
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("is not valid PEM: {e}")))
}

/// The HTTPS client (rustls on aws-lc, as the SDK's default) trusting `pem`
/// alone: no native roots. Its TLS configuration is built at the first
/// request, once per set of timeouts (one: every client shares the
/// configuration's) ([`FirstUse`]).
pub fn https_client(pem: Vec<u8>) -> Result<SharedHttpClient, ConfigError> {
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(pem))
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    let client = Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https();
    Ok(SharedHttpClient::new(FirstUse(client)))
}

/// An HTTP client that builds its connector at the first request only. The
/// SDK's HTTPS client also builds one, and throws it away, each time an SDK
/// client is constructed on it (`validate_base_client_config`, there so that a
/// system certificate store is read at init, which we never read): the whole
/// rustls configuration with its roots parsed from PEM, twice in login's init
/// (its DynamoDB and KMS clients). The roots are checked at init all the same
/// ([`TrustRoots::load`]). Measured: docs/performance.md. Everything else is
/// delegated; skipping that one validation is on purpose, and worth
/// re-checking at every upgrade of aws-smithy-http-client.
#[derive(Debug)]
struct FirstUse(SharedHttpClient);

impl HttpClient for FirstUse {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn validate_final_config(
        &self,
        components: &RuntimeComponents,
        cfg: &aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        self.0.validate_final_config(components, cfg)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

fn invalid(reason: String) -> ConfigError {
    ConfigError::Invalid { var: VAR, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(der: &[u8]) -> String {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    #[test]
    fn the_compiled_in_roots_are_exactly_the_five_amazon_trust_services_roots() {
        // Published at https://www.amazontrust.com/repository/.
        let expected = [
            "8ECDE6884F3D87B1125BA31AC3FCB13D7016DE7F57CC904FE1CB97C6AE98196E", // Amazon Root CA 1
            "1BA5B2AA8C65401A82960118F80BEC4F62304D83CEC4713A19C39C011EA46DB4", // Amazon Root CA 2
            "18CE6CFE7BF14E60B2E347B8DFE868CB31D02EBB3ADA271569F50343B46DB3A4", // Amazon Root CA 3
            "E35D28419ED02025CFA69038CD623962458DA5C695FBDEA3C22B0BFB25897092", // Amazon Root CA 4
            "568D6905A2C88708A4B3025190EDCFEDB1974A606A13C6E5290FCB2AE63EDAB5", // Starfield Services G2
        ];
        let found_der = certificates(AMAZON_ROOTS_PEM.as_bytes()).unwrap();
        let found: Vec<String> = found_der.iter().map(|der| sha256_hex(der)).collect();
        assert_eq!(found, expected);
        for der in &found_der {
            webpki::anchor_from_trusted_cert(der).unwrap();
        }
        assert_eq!(
            TrustRoots::Amazon.load().unwrap(),
            AMAZON_ROOTS_PEM.as_bytes()
        );
    }

    #[test]
    fn aws_ca_bundle_names_a_bundle_and_unset_or_empty_means_amazon() {
        let env = |value: Option<&'static str>| {
            move |var: &str| (var == VAR).then_some(value).flatten().map(String::from)
        };
        assert_eq!(TrustRoots::from_source(&env(None)), TrustRoots::Amazon);
        assert_eq!(TrustRoots::from_source(&env(Some(" "))), TrustRoots::Amazon);
        assert_eq!(
            TrustRoots::from_source(&env(Some("/etc/ca.pem"))),
            TrustRoots::Bundle("/etc/ca.pem".into())
        );
    }

    fn load_bundle(contents: &[u8]) -> Result<Vec<u8>, ConfigError> {
        let path = std::env::temp_dir().join(format!("trust-test-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, contents).unwrap();
        let result = TrustRoots::Bundle(path.clone()).load();
        std::fs::remove_file(path).unwrap();
        result
    }

    fn reason(result: Result<Vec<u8>, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { var, reason }) => {
                assert_eq!(var, VAR);
                reason
            }
            other => panic!("expected an invalid AWS_CA_BUNDLE, got {other:?}"),
        }
    }

    #[test]
    fn a_bundle_is_refused_at_init_when_unreadable_empty_or_not_certificates() {
        let missing = TrustRoots::Bundle("/nonexistent/ca.pem".into()).load();
        assert!(reason(missing).contains("cannot read /nonexistent/ca.pem"));
        assert!(reason(load_bundle(b"")).contains("no PEM certificate"));
        assert!(reason(load_bundle(b"just some text\n")).contains("no PEM certificate"));
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(reason(load_bundle(broken)).contains("not valid PEM"));
        let not_x509 = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(reason(load_bundle(not_x509)).contains("certificate 1 is not a usable root"));
    }

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use aws_sdk_dynamodb::config::ConfigBag;
    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorFuture};
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;

    /// An HTTP client that counts what the SDK asks of it, and whose
    /// connector refuses every request.
    #[derive(Clone, Debug, Default)]
    struct Counting {
        validations: Arc<AtomicUsize>,
        connectors: Arc<AtomicUsize>,
    }

    #[derive(Debug)]
    struct Refusing;

    impl HttpConnector for Refusing {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            HttpConnectorFuture::ready(Err(ConnectorError::io("refused".into())))
        }
    }

    impl HttpClient for Counting {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            self.connectors.fetch_add(1, SeqCst);
            SharedHttpConnector::new(Refusing)
        }

        fn validate_base_client_config(
            &self,
            _: &RuntimeComponentsBuilder,
            _: &ConfigBag,
        ) -> Result<(), BoxError> {
            self.validations.fetch_add(1, SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_functions_client_builds_no_connector_until_its_first_request() {
        let client = https_client(AMAZON_ROOTS_PEM.into()).unwrap();
        let wrapped = format!("{client:?}");
        assert!(wrapped.contains("FirstUse"), "{wrapped}");
        // Still named in the user agent, as the SDK's own client is.
        assert!(client.connector_metadata().is_some());

        let counting = Counting::default();
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .http_client(FirstUse(SharedHttpClient::new(counting.clone())));
        // Unwrapped, constructing an SDK client asks the HTTP client to
        // validate itself (the SDK's HTTPS client builds a connector then).
        let _ = aws_sdk_dynamodb::Client::from_conf(
            config.clone().http_client(counting.clone()).build(),
        );
        assert_eq!(counting.validations.load(SeqCst), 1);
        counting.validations.store(0, SeqCst);

        let client = aws_sdk_dynamodb::Client::from_conf(config.build());
        assert_eq!(counting.validations.load(SeqCst), 0);
        assert_eq!(counting.connectors.load(SeqCst), 0);

        let call = client.describe_limits().send().await;
        assert!(call.is_err(), "the connector refuses every request");
        assert_eq!(counting.connectors.load(SeqCst), 1, "built at the request");
        assert_eq!(counting.validations.load(SeqCst), 0);
    }

    #[test]
    fn a_good_bundle_is_used_as_it_is() {
        let pem = AMAZON_ROOTS_PEM.as_bytes();
        assert_eq!(load_bundle(pem).unwrap(), pem);
    }
}
