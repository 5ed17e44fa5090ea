//! The HTTP client for outside identity providers (`providers.rs`), against
//! the local identity provider (`tools/idp`, started by `make test`:
//! `IDP_TEST_ISSUER`) and against stand-ins that misbehave on purpose: a
//! redirect, silence, an endless answer.

use auth::providers::{
    CALL_TIMEOUT, DiscoveryError, Hosts, MAX_BODY_BYTES, ProviderError, ProviderHttp, discover,
};
use lambda_http::http;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::required_env;

fn get(url: &str) -> http::Request<Vec<u8>> {
    http::Request::get(url).body(Vec::new()).unwrap()
}

/// What a stand-in does with each request.
enum Behaviour {
    /// Answers with these bytes (raw HTTP/1.1).
    Answer(Vec<u8>),
    /// Holds the connection open, saying nothing.
    Silent,
    /// Sends `head` at once, then a body byte a little under every second.
    Drip { head: Vec<u8>, bytes: usize },
}

/// A 200 answer with `body`.
fn ok(body: &[u8]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend(body);
    answer
}

/// A server on loopback that meets every request with `behaviour`; its base URL.
async fn stand_in(behaviour: Behaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let behaviour = std::sync::Arc::new(behaviour);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                match &*behaviour {
                    Behaviour::Answer(bytes) => {
                        let _ = socket.write_all(bytes).await;
                    }
                    Behaviour::Silent => tokio::time::sleep(CALL_TIMEOUT * 3).await,
                    Behaviour::Drip { head, bytes } => {
                        let _ = socket.write_all(head).await;
                        for _ in 0..*bytes {
                            tokio::time::sleep(std::time::Duration::from_millis(900)).await;
                            if socket.write_all(b" ").await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    base
}

/// A loopback client's call of `base`'s key set.
async fn fetch_jwks(base: &str) -> Result<http::Response<Vec<u8>>, ProviderError> {
    ProviderHttp::new(Hosts::AlsoLoopback)
        .send(get(&format!("{base}/jwks")))
        .await
}

/// Panics unless a call of `base` ends in `Timeout`, within twice the bound.
async fn assert_times_out(base: &str) {
    let started = std::time::Instant::now();
    assert_eq!(fetch_jwks(base).await.unwrap_err(), ProviderError::Timeout);
    assert!(
        started.elapsed() < CALL_TIMEOUT * 2,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_local_providers_discovery_document_is_read() {
    let issuer = required_env("IDP_TEST_ISSUER");
    let answer = ProviderHttp::new(Hosts::AlsoLoopback)
        .send(get(&format!("{issuer}/.well-known/openid-configuration")))
        .await
        .unwrap_or_else(|e| panic!("the local identity provider at {issuer}: {e}"));
    assert_eq!(answer.status(), 200);
    let document: serde_json::Value = serde_json::from_slice(answer.body()).unwrap();
    assert_eq!(document["issuer"], issuer.as_str());
}

#[tokio::test]
async fn the_local_provider_is_discovered_and_checked() {
    let issuer = required_env("IDP_TEST_ISSUER");
    let http = ProviderHttp::new(Hosts::AlsoLoopback);
    let found = discover(&http, &issuer).await.unwrap();
    assert_eq!(found.issuer, issuer);
    assert_eq!(found.jwks_uri, format!("{issuer}/jwks").as_str());
    assert!(
        found.iss_parameter,
        "oidc-provider names its issuer (RFC 9207)"
    );
    assert!(found.algorithms.contains(&"RS256".to_owned()));
    // Asked as another issuer whose discovery path it serves all the same
    // (a trailing slash, another name for the host), it is refused: the
    // document names its own issuer, exactly.
    let slashed = format!("{issuer}/");
    assert!(
        matches!(
            discover(&http, &slashed).await,
            Err(DiscoveryError::IssuerMismatch { .. })
        ),
        "a trailing slash is another issuer"
    );
    // Its document, served from elsewhere: not that issuer's.
    let copied = http
        .send(get(&format!("{issuer}/.well-known/openid-configuration")))
        .await
        .unwrap()
        .into_body();
    let elsewhere = stand_in(Behaviour::Answer(ok(&copied))).await;
    assert!(
        matches!(
            discover(&http, &elsewhere).await,
            Err(DiscoveryError::IssuerMismatch { .. })
        ),
        "another provider's document"
    );
}

#[tokio::test]
async fn a_discovery_document_that_is_not_there_is_an_error() {
    let missing = stand_in(Behaviour::Answer(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    ))
    .await;
    assert_eq!(
        discover(&ProviderHttp::new(Hosts::AlsoLoopback), &missing).await,
        Err(DiscoveryError::Status(404))
    );
}

#[tokio::test]
async fn a_redirect_is_never_followed() {
    let target = stand_in(Behaviour::Answer(ok(b"{}"))).await;
    let hop = stand_in(Behaviour::Answer(
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {target}/jwks\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    ))
    .await;
    assert_eq!(
        fetch_jwks(&hop).await.unwrap_err(),
        ProviderError::Redirected(302)
    );
}

#[tokio::test]
async fn a_silent_provider_times_out() {
    assert_times_out(&stand_in(Behaviour::Silent).await).await;
}

#[tokio::test]
async fn an_answer_that_drips_is_cut_at_the_time_bound() {
    // The head at once, then a byte a second: each read is quick, the
    // whole is not.
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n".to_vec();
    assert_times_out(&stand_in(Behaviour::Drip { head, bytes: 100 }).await).await;
}

#[tokio::test]
async fn an_answer_over_the_size_bound_is_refused() {
    let big = stand_in(Behaviour::Answer(ok(&vec![b' '; MAX_BODY_BYTES + 1]))).await;
    assert_eq!(fetch_jwks(&big).await.unwrap_err(), ProviderError::TooLarge);
    // And one within it is read whole.
    let fine = stand_in(Behaviour::Answer(ok(&vec![b' '; MAX_BODY_BYTES]))).await;
    assert_eq!(
        fetch_jwks(&fine).await.unwrap().body().len(),
        MAX_BODY_BYTES
    );
}

#[tokio::test]
async fn a_deployed_client_calls_no_loopback_address() {
    // A provider's endpoint pointed at the function's own Runtime API.
    let answer = ProviderHttp::new(Hosts::Public)
        .send(get(
            "http://127.0.0.1:9001/2018-06-01/runtime/invocation/next",
        ))
        .await;
    assert!(matches!(answer, Err(ProviderError::Url(_))), "{answer:?}");
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_before_any_call() {
    let answer = ProviderHttp::new(Hosts::AlsoLoopback)
        .send(get(
            "http://accounts.example.com/.well-known/openid-configuration",
        ))
        .await;
    assert!(matches!(answer, Err(ProviderError::Url(_))), "{answer:?}");
}
