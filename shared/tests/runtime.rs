//! The real Lambda runtime loop (`auth::runtime::serve`) against a fake Lambda
//! Runtime API: a panicking invocation is answered with our JSON 500 as a
//! normal response (not an error that API Gateway would turn into its own
//! 500), and the next invocation on the same instance works; each response
//! is counted in the operations metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the function posted back for each invocation: (path, body).
type Posted = Arc<Mutex<Vec<(String, String)>>>;

fn event(path: &str) -> String {
    let text = std::fs::read_to_string(format!(
        "{}/../events/get-name-no-token.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["rawPath"] = path.into();
    json["requestContext"]["http"]["path"] = path.into();
    json.to_string()
}

/// A minimal Runtime API: hands out `events` one by one, records what comes back.
async fn fake_runtime_api(events: Vec<String>, posted: Posted) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let queue = Arc::new(Mutex::new(
        events.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (queue, posted) = (queue.clone(), posted.clone());
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                buffer.extend_from_slice(&chunk[..n]);
                                continue;
                            }
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < end + 4 + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body =
                        String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).to_string();
                    buffer.drain(..end + 4 + length);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let reply = if path.ends_with("/invocation/next") {
                        let next = queue.lock().unwrap().pop_front_compat();
                        match next {
                            Some((i, event)) => format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nlambda-runtime-aws-request-id: req-{i}\r\nlambda-runtime-deadline-ms: 9999999999999\r\nlambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:test\r\nlambda-runtime-trace-id: Root=1-00000000-000000000000000000000000\r\ncontent-length: {}\r\n\r\n{event}",
                                event.len()
                            ),
                            None => {
                                // Nothing more to do: keep the function waiting.
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return;
                            }
                        }
                    } else {
                        posted.lock().unwrap().push((path, body));
                        "HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}".to_owned()
                    };
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

trait PopFront<T> {
    fn pop_front_compat(&mut self) -> Option<T>;
}

impl<T> PopFront<T> for Vec<T> {
    fn pop_front_compat(&mut self) -> Option<T> {
        (!self.is_empty()).then(|| self.remove(0))
    }
}

#[tokio::test]
async fn a_panic_is_a_json_500_response_and_the_instance_keeps_serving() {
    let posted: Posted = Arc::default();
    let api = fake_runtime_api(vec![event("/boom"), event("/fine")], posted.clone()).await;
    // The variables Lambda sets; this test binary has only this test, so
    // setting them cannot race another.
    unsafe {
        std::env::set_var("AWS_LAMBDA_RUNTIME_API", &api);
        std::env::set_var("AWS_LAMBDA_FUNCTION_NAME", "test");
        std::env::set_var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128");
        std::env::set_var("AWS_LAMBDA_FUNCTION_VERSION", "1");
        std::env::set_var("AWS_LAMBDA_LOG_STREAM_NAME", "test");
        std::env::set_var("AWS_LAMBDA_LOG_GROUP_NAME", "test");
        // The metrics' namespace (a template parameter) and the level Lambda filters at.
        std::env::set_var("METRICS_NAMESPACE", "TestAuth");
        std::env::set_var("AWS_LAMBDA_LOG_LEVEL", "warn");
    }
    let metrics = auth::metrics::capture();
    let server = auth::runtime::serve(|req| async move {
        if req.uri().path() == "/boom" {
            panic!("injected failure with internals: secret-table-name");
        }
        auth::http::json_response(
            lambda_http::http::StatusCode::OK,
            &serde_json::json!({"message": "fine"}),
        )
    });
    let answered = async {
        for _ in 0..400 {
            if posted.lock().unwrap().len() >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    // The runtime loop and the wait run side by side on this task.
    tokio::select! {
        result = server => panic!("the runtime loop ended: {result:?}"),
        () = answered => {}
    }
    let posted = posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 2, "two invocations answered: {posted:?}");
    let (path, body) = &posted[0];
    assert!(
        path.ends_with("/invocation/req-0/response"),
        "a response, not an error: {path}"
    );
    let response: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(response["statusCode"], 500);
    let inner: serde_json::Value =
        serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(inner["error"], "internal_error");
    assert!(
        !body.contains("secret-table-name") && !body.contains("injected"),
        "no internals: {body}"
    );
    let (path, body) = &posted[1];
    assert!(path.ends_with("/invocation/req-1/response"), "{path}");
    let response: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(response["statusCode"], 200);

    // Every response is counted by its class, the contained panic as a 5xx;
    // the lines pass the function's log level and name the configured namespace.
    let lines = metrics.take();
    let classes: Vec<_> = lines
        .iter()
        .map(|l| (l["StatusClass"].clone(), l["ServerErrors"].clone()))
        .collect();
    assert_eq!(
        classes,
        [
            (serde_json::json!("5xx"), serde_json::json!(1)),
            (serde_json::json!("2xx"), serde_json::json!(0))
        ]
    );
    for line in &lines {
        assert!(auth::metrics::check_emf(line).is_ok(), "{line}");
        assert_eq!(line["level"], "WARN");
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "TestAuth"
        );
    }
}
