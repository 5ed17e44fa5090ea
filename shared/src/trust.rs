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

    /// The PEM text of the roots, checked: at least one certificate, and each
    /// one usable as a trust anchor. (The SDK's client would otherwise panic
    /// on a bad one at its first connection, not refuse it at init.)
    pub fn load(&self) -> Result<Vec<u8>, ConfigError> {
        let pem = match self {
            TrustRoots::Amazon => AMAZON_ROOTS_PEM.as_bytes().to_vec(),
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
/// alone: no native roots.
pub fn https_client(pem: Vec<u8>) -> Result<SharedHttpClient, ConfigError> {
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(pem))
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    Ok(Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https())
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
        let found: Vec<String> = certificates(AMAZON_ROOTS_PEM.as_bytes())
            .unwrap()
            .iter()
            .map(|der| sha256_hex(der))
            .collect();
        assert_eq!(found, expected);
        assert!(TrustRoots::Amazon.load().is_ok());
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

    #[test]
    fn a_good_bundle_is_used_as_it_is() {
        let pem = AMAZON_ROOTS_PEM.as_bytes();
        assert_eq!(load_bundle(pem).unwrap(), pem);
    }
}
