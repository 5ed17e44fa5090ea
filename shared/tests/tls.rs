//! The functions' HTTPS client (`auth::aws::sdk_config`, as every function
//! builds it) against a real TLS endpoint inside the test, whose certificate
//! comes from a throwaway CA: refused by default, since a function trusts the
//! Amazon Trust Services roots alone, and accepted once `AWS_CA_BUNDLE` names
//! that CA. Nothing here leaves the machine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth::aws::{SdkSettings, sdk_config};
use auth::trust::TrustRoots;
use aws_sdk_dynamodb::config::{Credentials, Region, SharedCredentialsProvider};
use aws_sdk_dynamodb::types::AttributeValue;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A TLS endpoint answering every request like an empty GetItem.
struct Endpoint {
    url: String,
    /// The CA that issued its certificate, as PEM.
    ca_pem: String,
    /// Request heads received over completed handshakes.
    requests: Arc<Mutex<Vec<String>>>,
}

/// A throwaway CA (PEM) and a server configuration with a certificate it
/// issued for 127.0.0.1. No runtime, no threads.
fn throwaway_ca() -> (String, ServerConfig) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "throwaway test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let provider = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider();
    let config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    (ca.pem(), config)
}

async fn endpoint() -> Endpoint {
    let (ca_pem, config) = throwaway_ca();
    serve(ca_pem, config).await
}

async fn serve(ca_pem: String, config: ServerConfig) -> Endpoint {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                // A client that does not trust us aborts the handshake here.
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buffer).to_ascii_lowercase());
                let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
                             content-length: 2\r\nconnection: close\r\n\r\n{}";
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Endpoint {
        url,
        ca_pem,
        requests,
    }
}

/// A DynamoDB client on the functions' SDK configuration, trusting `trust`.
fn client(trust: TrustRoots, url: &str) -> aws_sdk_dynamodb::Client {
    let settings = SdkSettings {
        attempt_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(5),
        max_attempts: 1,
        trust,
    };
    let sdk = sdk_config(&settings)
        .unwrap()
        .to_builder()
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "local", "local", None, None, "tls-test",
        )))
        .build();
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .endpoint_url(url)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

async fn get_item(
    client: &aws_sdk_dynamodb::Client,
) -> Result<(), aws_sdk_dynamodb::error::SdkError<impl std::error::Error + 'static>> {
    client
        .get_item()
        .table_name("users")
        .key("username", AttributeValue::S("alice".into()))
        .send()
        .await
        .map(|_| ())
}

/// `pem` in a file of its own under the temp dir.
fn temp_pem(pem: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("tls-test-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&path, pem).unwrap();
    path
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        text.push_str(&format!(": {next}"));
        source = next.source();
    }
    text
}

#[tokio::test]
async fn an_endpoint_whose_certificate_is_not_from_amazon_trust_services_is_refused() {
    let endpoint = endpoint().await;
    let err = get_item(&client(TrustRoots::Amazon, &endpoint.url))
        .await
        .expect_err("a function must not talk to an endpoint it does not trust");
    let text = chain(&err);
    assert!(
        text.contains("UnknownIssuer"),
        "expected an unknown-issuer TLS failure, got: {text}"
    );
    assert!(
        endpoint.requests.lock().unwrap().is_empty(),
        "no request may reach an untrusted endpoint"
    );
}

#[tokio::test]
async fn aws_ca_bundle_makes_the_functions_trust_that_ca_instead() {
    let endpoint = endpoint().await;
    let bundle = temp_pem(&endpoint.ca_pem);
    let result = get_item(&client(TrustRoots::Bundle(bundle.clone()), &endpoint.url)).await;
    std::fs::remove_file(&bundle).unwrap();
    result.unwrap_or_else(|e| panic!("the named CA must be trusted: {}", chain(&e)));
    let requests = endpoint.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].starts_with("post / http/1.1"));
    assert!(requests[0].contains("x-amz-target: dynamodb_20120810.getitem"));
}

const CHILD: &str = "TLS_TEST_SYSTEM_STORE_CHILD";

/// Runs in a process of its own (the test binary again, this test alone):
/// it points the system store at the throwaway CA through `SSL_CERT_FILE`
/// before any thread reads the environment.
#[test]
fn the_system_certificate_store_is_never_consulted() {
    let name = "the_system_certificate_store_is_never_consulted";
    if std::env::var_os(CHILD).is_none() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads", "1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "the child run failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    let (ca_pem, config) = throwaway_ca();
    let system_store = temp_pem(&ca_pem);
    // SAFETY: this process runs this test alone, and no other thread exists yet.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &system_store);
        std::env::remove_var("SSL_CERT_DIR");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let endpoint = serve(ca_pem, config).await;
        // The SDK's own default client reads the system store: it now trusts
        // the endpoint, so the refusal below is ours, not an accident.
        let default_sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "tls-test"))
            .load()
            .await;
        let default_client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&default_sdk)
                .endpoint_url(&endpoint.url)
                .build(),
        );
        get_item(&default_client)
            .await
            .unwrap_or_else(|e| panic!("the system store should trust it: {}", chain(&e)));
        assert_eq!(endpoint.requests.lock().unwrap().len(), 1);

        let err = get_item(&client(TrustRoots::Amazon, &endpoint.url))
            .await
            .expect_err("the functions' client must ignore the system store");
        assert!(chain(&err).contains("UnknownIssuer"));
        assert_eq!(endpoint.requests.lock().unwrap().len(), 1);
    });
    std::fs::remove_file(system_store).unwrap();
}
