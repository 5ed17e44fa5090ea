//! What Lambda does around a function, for measuring it: a Runtime API of our
//! own, and the function's process started with Lambda's environment.
//!
//! Owning the Runtime API is what lets the bench see what Lambda reports:
//! the first poll of `/next` is the end of init (Lambda's `Init Duration`),
//! and each invocation is timed from the event's bytes handed to the
//! function to its response's last byte, through the runtime loop. As on a
//! Lambda cold start, the event that starts a process is waiting for its
//! first poll. The function's stdout and stderr (its logs and metric lines)
//! are drained and counted, as Lambda's log pipe would take them.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

/// A function's answer to one event: when the event's bytes were handed to
/// the function, and when the answer's last byte arrived.
pub struct Reply {
    pub body: serde_json::Value,
    pub handed: Instant,
    pub at: Instant,
    /// Posted to `/error` (or the process failed at init).
    pub error: bool,
}

struct Pending {
    event: String,
    reply: oneshot::Sender<Reply>,
}

/// One function's Runtime API.
struct Api {
    queue: Mutex<mpsc::UnboundedReceiver<Pending>>,
    /// Events handed over: their reply channel and when they went.
    waiting: std::sync::Mutex<HashMap<String, (oneshot::Sender<Reply>, Instant)>>,
    first_poll: std::sync::Mutex<Option<Instant>>,
    polled: Notify,
}

/// A function process and its Runtime API.
pub struct Function {
    child: Child,
    api: Arc<Api>,
    events: mpsc::UnboundedSender<Pending>,
    /// Exec to the first poll of `/next`.
    pub init: Duration,
    /// The reply to the event queued before the start.
    first: Option<oneshot::Receiver<Reply>>,
    /// Lines and bytes the process wrote (stdout and stderr).
    pub output_lines: Arc<AtomicU64>,
    pub output_bytes: Arc<AtomicU64>,
}

impl Function {
    /// Starts `binary` with exactly `env` (plus what Lambda sets itself) and
    /// waits for its first poll; `first`, the event that started it, is
    /// already waiting there, as on Lambda's cold start: the function goes
    /// from its init straight into its first invocation (`first_reply`).
    pub async fn start(
        binary: &str,
        env: &[(String, String)],
        first: String,
    ) -> Result<Function, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let (events, queue) = mpsc::unbounded_channel();
        let (reply, first_reply) = oneshot::channel();
        events
            .send(Pending {
                event: first,
                reply,
            })
            .map_err(|_| "the Runtime API is gone".to_owned())?;
        let api = Arc::new(Api {
            queue: Mutex::new(queue),
            waiting: std::sync::Mutex::new(HashMap::new()),
            first_poll: std::sync::Mutex::new(None),
            polled: Notify::new(),
        });
        let served = api.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                tokio::spawn(connection(socket, served.clone()));
            }
        });
        let name = std::path::Path::new(binary)
            .file_name()
            .map_or_else(|| "function".into(), |n| n.to_string_lossy().into_owned());
        let mut command = Command::new(binary);
        command
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin")
            .env("LANG", "en_US.UTF-8")
            .env("TZ", ":UTC")
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://{address}"))
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let polled = api.polled.notified();
        let started = Instant::now();
        let mut child = command.spawn().map_err(|e| format!("{binary}: {e}"))?;
        let (lines, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tail = Arc::new(std::sync::Mutex::new(Vec::new()));
        drain(child.stdout.take(), &lines, &bytes, &tail);
        drain(child.stderr.take(), &lines, &bytes, &tail);
        if tokio::time::timeout(Duration::from_secs(20), polled)
            .await
            .is_err()
        {
            let _ = child.kill();
            let said = String::from_utf8_lossy(&tail.lock().unwrap()).into_owned();
            return Err(format!(
                "{name} never polled for an event; its last words: {said}"
            ));
        }
        let first = api.first_poll.lock().unwrap().unwrap_or(started);
        Ok(Function {
            child,
            api,
            events,
            init: first - started,
            first: Some(first_reply),
            output_lines: lines,
            output_bytes: bytes,
        })
    }

    /// Hands `event` to the function and waits for its reply: the reply and
    /// the time from the event's hand-over (its bytes written to the
    /// function's `/next`) to the response's last byte.
    pub async fn invoke(&self, event: String) -> Result<(Reply, Duration), String> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(Pending { event, reply })
            .map_err(|_| "the Runtime API is gone".to_owned())?;
        Self::wait(answer).await
    }

    /// The reply to the event the function started with, timed as `invoke`'s.
    pub async fn first_reply(&mut self) -> Result<(Reply, Duration), String> {
        let answer = self.first.take().ok_or("the first reply was taken")?;
        Self::wait(answer).await
    }

    async fn wait(answer: oneshot::Receiver<Reply>) -> Result<(Reply, Duration), String> {
        match tokio::time::timeout(Duration::from_secs(60), answer).await {
            Ok(Ok(reply)) => {
                let took = reply.at - reply.handed;
                Ok((reply, took))
            }
            _ => Err("no answer within 60 s".into()),
        }
    }

    /// The process's peak resident set (`VmHWM`), in KiB; an error when the
    /// process is gone (no reading must never pass for a small one).
    pub fn peak_rss_kib(&self) -> Result<u64, String> {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .filter(|kib| *kib > 0)
            .ok_or_else(|| "no VmHWM: the function process is gone".to_owned())
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A poll still waiting on the queue ends with the process.
        self.api.waiting.lock().unwrap().clear();
    }
}

/// Reads a pipe to its end on a thread of its own, counting what comes and
/// keeping its last kilobytes (what an init failure said).
fn drain(
    pipe: Option<impl Read + Send + 'static>,
    lines: &Arc<AtomicU64>,
    bytes: &Arc<AtomicU64>,
    tail: &Arc<std::sync::Mutex<Vec<u8>>>,
) {
    let Some(mut pipe) = pipe else { return };
    let (lines, bytes, tail) = (lines.clone(), bytes.clone(), tail.clone());
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(n) = pipe.read(&mut buffer) {
            if n == 0 {
                break;
            }
            bytes.fetch_add(n as u64, Ordering::Relaxed);
            let newlines = buffer[..n].iter().filter(|b| **b == b'\n').count();
            lines.fetch_add(newlines as u64, Ordering::Relaxed);
            let mut kept = tail.lock().unwrap();
            kept.extend_from_slice(&buffer[..n]);
            let excess = kept.len().saturating_sub(4096);
            kept.drain(..excess);
        }
    });
}

/// One keep-alive connection of the runtime: HTTP/1.1 requests with
/// `Content-Length` bodies, which is what `lambda_runtime` sends.
async fn connection(mut socket: TcpStream, api: Arc<Api>) {
    let mut buffer = Vec::new();
    loop {
        let Some((method, path, body)) = request(&mut socket, &mut buffer).await else {
            return;
        };
        let at = Instant::now();
        if (method.as_str(), path.as_str()) == ("GET", "/2018-06-01/runtime/invocation/next") {
            // The event's bytes, then the moment they went.
            let (answer, id) = next(&api).await;
            if socket.write_all(&answer).await.is_err() {
                return;
            }
            if let Some(waiting) = api.waiting.lock().unwrap().get_mut(&id) {
                waiting.1 = Instant::now();
            }
            continue;
        }
        let answer = match (method.as_str(), path.as_str()) {
            ("POST", "/2018-06-01/runtime/init/error") => response(202, &[], b"{}"),
            ("POST", path) => {
                let rest = path.strip_prefix("/2018-06-01/runtime/invocation/");
                let (id, kind) = rest.and_then(|r| r.split_once('/')).unwrap_or(("", ""));
                if let Some((waiter, handed)) = api.waiting.lock().unwrap().remove(id) {
                    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    let _ = waiter.send(Reply {
                        body,
                        handed,
                        at,
                        error: kind != "response",
                    });
                }
                response(202, &[], b"{}")
            }
            _ => response(404, &[], b"{}"),
        };
        if socket.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// `/next`: the first poll ends init; then the next event, when there is
/// one, and its request id.
async fn next(api: &Api) -> (Vec<u8>, String) {
    {
        let mut first = api.first_poll.lock().unwrap();
        if first.is_none() {
            *first = Some(Instant::now());
            api.polled.notify_waiters();
        }
    }
    let Some(pending) = api.queue.lock().await.recv().await else {
        return (response(500, &[], b"{}"), String::new());
    };
    let id = uuid::Uuid::new_v4().to_string();
    api.waiting
        .lock()
        .unwrap()
        .insert(id.clone(), (pending.reply, Instant::now()));
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() + 60_000)
        .to_string();
    let answer = response(
        200,
        &[
            ("lambda-runtime-aws-request-id", &id),
            ("lambda-runtime-deadline-ms", &deadline),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:bench",
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000",
            ),
        ],
        pending.event.as_bytes(),
    );
    (answer, id)
}

fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The next request on the connection: method, path and body. `None` once closed.
async fn request(
    socket: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Option<(String, String, Vec<u8>)> {
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < end + length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buffer[end..end + length].to_vec();
    buffer.drain(..end + length);
    Some((method, path, body))
}
