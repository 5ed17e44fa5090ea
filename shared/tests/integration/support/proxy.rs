//! A proxy in front of DynamoDB Local that the tests steer call by call: it
//! fails chosen calls in chosen ways, holds a call until another racer has
//! reached a point, and opens a gate when a call arrives or has been
//! answered. It records every operation it saw and every fault it injected,
//! so a test proves that its fault fired, on the call it meant.
//!
//! An operation is one SDK call with its retries (one `amz-sdk-invocation-id`);
//! a rule on an operation applies to each of its attempts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{dynamodb_error, http_header, read_http_request};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The connection closes without an answer.
    Dropped,
    /// No answer until the client gives up.
    Hang,
    /// 400 ThrottlingException.
    Throttled,
    /// TransactionCanceledException (TransactionConflict): transactions only.
    Cancelled,
    /// TransactionCanceledException (ThrottlingError): how DynamoDB answers a
    /// transaction with a throttled item (hot items only).
    ThrottledTransaction,
    /// TransactionConflictException: a plain write that met a running
    /// transaction on its item.
    Conflicting,
    /// The call reaches DynamoDB and is done, but its answer is lost: the
    /// connection closes. A write that happened, reported as failed (each
    /// attempt's answer lost: the SDK gives up).
    Lost,
    /// The first attempt's answer is lost, as with `Lost`; the SDK's retry
    /// goes through and meets the first attempt's effects (a condition
    /// fails, or an `ADD` adds again).
    LostOnce,
}

/// Which calls a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// The `n`-th operation (1-based) of this target (`getitem`,
    /// `updateitem`, `transactwriteitems`, …), in order of first sight.
    Nth(&'static str, usize),
    /// Every operation of this target.
    Every(&'static str),
    /// Every request whose body names this text (a key: one hot item).
    Naming(&'static str),
}

/// A one-way gate: closed until opened, then open for good.
#[derive(Clone)]
pub struct Gate(Arc<Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(Semaphore::new(0)))
    }
}

impl Gate {
    pub fn open(&self) {
        if self.0.available_permits() == 0 {
            self.0.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    pub fn is_open(&self) -> bool {
        self.0.available_permits() > 0
    }

    /// Waits until the gate is open, at most `limit`; whether it opened.
    pub async fn wait(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.0.acquire())
            .await
            .is_ok_and(|permit| permit.is_ok())
    }
}

/// What a rule does to the calls it matches.
#[derive(Clone)]
enum Act {
    Fail(Fault),
    /// Opens the gate when the call arrives (before any hold).
    Announce(Gate),
    /// Forwards the call only once the gate is open.
    HoldUntil(Gate),
    /// Opens the gate once the call's answer has been relayed.
    OpenAfter(Gate),
}

/// One injected fault: where it landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    /// The operation's target, as in `Call`.
    pub target: String,
    /// Its number among the operations of its target (1-based).
    pub nth: usize,
    pub fault: Fault,
}

#[derive(Default)]
struct Log {
    /// Each operation: its invocation id and target, in order of first sight.
    operations: Vec<(String, String)>,
    /// Attempts seen, by invocation id.
    attempts: std::collections::HashMap<String, usize>,
    fired: Vec<Fired>,
    /// The partition key of every item a request named, in order.
    keys: Vec<String>,
}

#[derive(Clone)]
pub struct Proxy {
    pub endpoint: String,
    rules: Arc<Mutex<Vec<(Call, Act)>>>,
    log: Arc<Mutex<Log>>,
    /// How long a held call waits for its gate before it goes on anyway
    /// (the test then fails on its branch, not by a hang).
    pub hold_limit: Duration,
}

impl Proxy {
    /// A proxy to `upstream` (`http://host:port`) that forwards everything
    /// until told otherwise.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            endpoint: format!("http://{}", listener.local_addr().unwrap()),
            rules: Arc::default(),
            log: Arc::default(),
            hold_limit: Duration::from_secs(10),
        };
        let (shared, upstream) = (proxy.clone(), upstream.to_owned());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(shared.clone().serve(socket, upstream.clone()));
            }
        });
        proxy
    }

    /// A proxy to the run's DynamoDB Local.
    pub async fn to_dynamodb() -> Proxy {
        Proxy::start(&super::required_env("DYNAMODB_TEST_ENDPOINT")).await
    }

    fn add(&self, call: Call, act: Act) -> &Self {
        self.rules.lock().unwrap().push((call, act));
        self
    }

    /// Fails the calls `call` matches with `fault` (a `Cancelled` only
    /// where the call is a transaction).
    pub fn fail(&self, call: Call, fault: Fault) -> &Self {
        self.add(call, Act::Fail(fault))
    }

    /// Opens `gate` when a call `call` matches arrives.
    pub fn announce(&self, call: Call, gate: &Gate) -> &Self {
        self.add(call, Act::Announce(gate.clone()))
    }

    /// Holds the calls `call` matches until `gate` opens.
    pub fn hold_until(&self, call: Call, gate: &Gate) -> &Self {
        self.add(call, Act::HoldUntil(gate.clone()))
    }

    /// Opens `gate` once a call `call` matches has been answered.
    pub fn open_after(&self, call: Call, gate: &Gate) -> &Self {
        self.add(call, Act::OpenAfter(gate.clone()))
    }

    /// The operations seen, by target, in order of first sight.
    pub fn operations(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.operations.iter().map(|(_, t)| t.clone()).collect()
    }

    /// The partition key of every item the requests named (gets, puts,
    /// updates, deletes, condition checks, in transactions too).
    pub fn keys(&self) -> Vec<String> {
        self.log.lock().unwrap().keys.clone()
    }

    /// The faults injected, one entry per attempt failed.
    pub fn fired(&self) -> Vec<Fired> {
        self.log.lock().unwrap().fired.clone()
    }

    /// Whether `fault` fired on a call `call` names (a `Throttled` on a
    /// transaction fires as `ThrottledTransaction`).
    pub fn fired_on(&self, call: &Call, fault: Fault) -> bool {
        self.fired().iter().any(|f| {
            let same = f.fault == fault
                || (fault == Fault::Throttled && f.fault == Fault::ThrottledTransaction);
            same && call_matches(call, f)
        })
    }

    /// Panics unless `fault` fired on `call` (at least once).
    pub fn assert_fired(&self, call: &Call, fault: Fault) {
        assert!(
            self.fired_on(call, fault),
            "{fault:?} on {call:?} never fired; fired: {:?}; operations: {:?}",
            self.fired(),
            self.operations()
        );
    }

    async fn serve(self, mut socket: TcpStream, upstream: String) {
        while let Some((head, request)) = read_http_request(&mut socket).await {
            let invocation = http_header(&head, "amz-sdk-invocation-id").unwrap_or_default();
            let target = http_header(&head, "x-amz-target")
                .map(|t| t.rsplit('.').next().unwrap_or("").to_owned())
                .unwrap_or_default();
            let (nth, attempt) = {
                let mut log = self.log.lock().unwrap();
                log.keys.extend(partition_keys(&request));
                if !log.operations.iter().any(|(id, _)| *id == invocation) {
                    log.operations.push((invocation.clone(), target.clone()));
                }
                let attempt = log.attempts.entry(invocation.clone()).or_default();
                *attempt += 1;
                let attempt = *attempt;
                let nth = log
                    .operations
                    .iter()
                    .filter(|(_, t)| *t == target)
                    .position(|(id, _)| *id == invocation)
                    .map_or(0, |i| i + 1);
                (nth, attempt)
            };
            let matching: Vec<Act> = self
                .rules
                .lock()
                .unwrap()
                .iter()
                .filter(|(call, _)| match call {
                    Call::Nth(t, n) => *t == target && *n == nth,
                    Call::Every(t) => *t == target,
                    Call::Naming(text) => request
                        .windows(text.len())
                        .any(|window| window == text.as_bytes()),
                })
                .map(|(_, act)| act.clone())
                .collect();
            for act in &matching {
                if let Act::Announce(gate) = act {
                    gate.open();
                }
            }
            for act in &matching {
                if let Act::HoldUntil(gate) = act {
                    gate.wait(self.hold_limit).await;
                }
            }
            let transaction = target == "transactwriteitems";
            let fault = matching.iter().find_map(|act| match act {
                // DynamoDB reports a throttled item in a transaction as a
                // cancelled transaction.
                Act::Fail(Fault::Throttled) if transaction => Some(Fault::ThrottledTransaction),
                Act::Fail(Fault::Cancelled) if !transaction => None,
                Act::Fail(Fault::LostOnce) if attempt > 1 => None,
                Act::Fail(fault) => Some(*fault),
                _ => None,
            });
            if let Some(fault) = fault {
                self.log.lock().unwrap().fired.push(Fired {
                    target: target.clone(),
                    nth,
                    fault,
                });
            }
            let response = match fault {
                None => forward(&upstream, &request).await,
                Some(Fault::Dropped) => return,
                Some(Fault::Lost | Fault::LostOnce) => {
                    let _ = forward(&upstream, &request).await;
                    return;
                }
                Some(Fault::Hang) => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                Some(Fault::Throttled) => Some(dynamodb_error(
                    "ThrottlingException",
                    r#""message":"Rate of requests exceeds the allowed throughput.""#,
                )),
                Some(Fault::ThrottledTransaction) => Some(dynamodb_error(
                    "TransactionCanceledException",
                    r#""message":"Transaction cancelled","CancellationReasons":[{"Code":"None"},{"Code":"ThrottlingError","Message":"Throughput exceeds the current capacity for one or more global secondary indexes."}]"#,
                )),
                Some(Fault::Cancelled) => Some(dynamodb_error(
                    "TransactionCanceledException",
                    r#""message":"Transaction cancelled","CancellationReasons":[{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}]"#,
                )),
                Some(Fault::Conflicting) => Some(dynamodb_error(
                    "TransactionConflictException",
                    r#""message":"Transaction is ongoing for the item""#,
                )),
            };
            let Some(response) = response else { return };
            if socket.write_all(&response).await.is_err() {
                return;
            }
            for act in &matching {
                if let Act::OpenAfter(gate) = act {
                    gate.open();
                }
            }
        }
    }
}

/// The `pk` of every item a DynamoDB request body names.
/// The partition keys a request names (`request`: its head and body).
fn partition_keys(body: &[u8]) -> Vec<String> {
    const MARK: &str = r#""pk":{"S":""#;
    let text = String::from_utf8_lossy(body);
    let mut keys: Vec<String> = text
        .match_indices(MARK)
        .filter_map(|(at, _)| {
            let rest = &text[at + MARK.len()..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .collect();
    // A query of the table names its partition in its key condition.
    let json = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body, |end| &body[end + 4..]);
    if let Ok(request) = serde_json::from_slice::<serde_json::Value>(json)
        && request["IndexName"].is_null()
        && let Some(placeholder) = request["KeyConditionExpression"]
            .as_str()
            .and_then(|c| c.strip_prefix("pk = "))
        && let Some(pk) = request["ExpressionAttributeValues"][placeholder.trim()]["S"].as_str()
    {
        keys.push(pk.to_owned());
    }
    keys
}

/// Forces an order on two racers' writes: `second` reaches its write
/// `second_write` (it has read all it reads) before `first` sends
/// `first_write`, and sends its own only once the first's has been
/// answered. The gate returned opens when the first's write is done: open
/// at the end, it proves the order happened.
pub fn order_writes(first: &Proxy, first_write: Call, second: &Proxy, second_write: Call) -> Gate {
    let (reached, written) = (Gate::default(), Gate::default());
    second
        .announce(second_write.clone(), &reached)
        .hold_until(second_write, &written);
    first
        .hold_until(first_write.clone(), &reached)
        .open_after(first_write, &written);
    written
}

fn call_matches(call: &Call, fired: &Fired) -> bool {
    match call {
        Call::Nth(target, n) => fired.target == *target && fired.nth == *n,
        Call::Every(target) => fired.target == *target,
        Call::Naming(_) => true,
    }
}

/// Sends the request as it came, on a connection of its own, and returns
/// the whole answer. The answer keeps the connection open only if upstream did.
async fn forward(upstream: &str, request: &[u8]) -> Option<Vec<u8>> {
    let address = upstream.trim_start_matches("http://");
    let mut connection = TcpStream::connect(address).await.ok()?;
    // One request per upstream connection: close it after the answer.
    let text = String::from_utf8_lossy(request);
    let split = text.find("\r\n").unwrap_or(0);
    let mut rewritten = request[..split + 2].to_vec();
    rewritten.extend_from_slice(b"Connection: close\r\n");
    rewritten.extend_from_slice(&request[split + 2..]);
    connection.write_all(&rewritten).await.ok()?;
    let mut response = Vec::new();
    connection.read_to_end(&mut response).await.ok()?;
    // Tell our client to keep its connection: drop upstream's "close".
    let text = String::from_utf8_lossy(&response).into_owned();
    let end = text.find("\r\n\r\n")?;
    let head: String = text[..end]
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&response[end..]);
    Some(out)
}
