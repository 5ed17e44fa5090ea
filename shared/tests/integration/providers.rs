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

/// A server on loopback that answers every request with `answer` (raw
/// HTTP/1.1), or never answers (`None`); returns its base URL.
async fn stand_in(answer: Option<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                match answer {
                    Some(bytes) => {
                        let _ = socket.write_all(&bytes).await;
                    }
                    // Holds the connection open, saying nothing.
                    None => tokio::time::sleep(CALL_TIMEOUT * 3).await,
                }
            });
        }
    });
    base
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
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        copied.len()
    )
    .into_bytes();
    answer.extend(copied);
    let elsewhere = stand_in(Some(answer)).await;
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
    let missing = stand_in(Some(
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
    let target = stand_in(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_vec(),
    ))
    .await;
    let hop = stand_in(Some(
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {target}/jwks\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    ))
    .await;
    let answer = ProviderHttp::new(Hosts::AlsoLoopback)
        .send(get(&format!("{hop}/jwks")))
        .await;
    assert_eq!(answer.unwrap_err(), ProviderError::Redirected(302));
}

#[tokio::test]
async fn a_silent_provider_times_out() {
    let silent = stand_in(None).await;
    let started = std::time::Instant::now();
    let answer = ProviderHttp::new(Hosts::AlsoLoopback)
        .send(get(&format!("{silent}/jwks")))
        .await;
    assert_eq!(answer.unwrap_err(), ProviderError::Timeout);
    assert!(
        started.elapsed() < CALL_TIMEOUT * 2,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_answer_that_drips_is_cut_at_the_time_bound() {
    // The head at once, then a byte a second: each read is quick, the
    // whole is not.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n";
                let _ = socket.write_all(head).await;
                for _ in 0..100 {
                    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
                    if socket.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let started = std::time::Instant::now();
    let answer = ProviderHttp::new(Hosts::AlsoLoopback)
        .send(get(&format!("{base}/jwks")))
        .await;
    assert_eq!(answer.unwrap_err(), ProviderError::Timeout);
    assert!(
        started.elapsed() < CALL_TIMEOUT * 2,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_answer_over_the_size_bound_is_refused() {
    let size = MAX_BODY_BYTES + 1;
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    answer.extend(std::iter::repeat_n(b' ', size));
    let big = stand_in(Some(answer)).await;
    let answer = ProviderHttp::new(Hosts::AlsoLoopback)
        .send(get(&format!("{big}/jwks")))
        .await;
    assert_eq!(answer.unwrap_err(), ProviderError::TooLarge);
    // And one within it is read whole.
    let mut fits =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {MAX_BODY_BYTES}\r\nConnection: close\r\n\r\n")
            .into_bytes();
    fits.extend(std::iter::repeat_n(b' ', MAX_BODY_BYTES));
    let fine = stand_in(Some(fits)).await;
    let answer = ProviderHttp::new(Hosts::AlsoLoopback)
        .send(get(&format!("{fine}/jwks")))
        .await
        .unwrap();
    assert_eq!(answer.body().len(), MAX_BODY_BYTES);
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
