//! A TLS terminator in front of DynamoDB Local and moto, as AWS's endpoints
//! are HTTPS: the functions' first call pays a handshake, as deployed. Its
//! certificate comes from a throwaway CA made at run time, which the
//! functions are told to trust through `AWS_CA_BUNDLE` (reading that file is
//! an init cost Lambda does not have: there the roots are compiled in).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A throwaway CA and a server configuration with a certificate it issued for 127.0.0.1.
pub struct Authority {
    pub ca_pem: String,
    config: Arc<ServerConfig>,
}

impl Authority {
    pub fn new() -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "make bench throwaway CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let certificate = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider();
        let config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        Authority {
            ca_pem: ca.pem(),
            config: Arc::new(config),
        }
    }

    /// Serves TLS on a free port, each connection piped to `upstream` in
    /// plain TCP; returns the `https://` URL and a count of the bytes the
    /// clients have sent through it (requests: a function that calls this
    /// endpoint moves it).
    pub async fn terminate(&self, upstream: SocketAddr) -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let acceptor = TlsAcceptor::from(self.config.clone());
        let sent = Arc::new(AtomicU64::new(0));
        let counted = sent.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let _ = socket.set_nodelay(true);
                    let Ok(tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    let (mut from_client, mut to_client) = tokio::io::split(tls);
                    let (mut from_upstream, mut to_upstream) = plain.into_split();
                    let up = async {
                        let mut buffer = vec![0u8; 16 * 1024];
                        loop {
                            match from_client.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    counted.fetch_add(n as u64, Ordering::Relaxed);
                                    if to_upstream.write_all(&buffer[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to_upstream.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut from_upstream, &mut to_client).await;
                        let _ = to_client.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        (url, sent)
    }
}
