//! Racers, as Lambda runs them: each request on a task of its own on the
//! test's multi-thread runtime, with state of its own (its own DynamoDB
//! client, through a proxy of its own when the test steers its calls, and its
//! own clock, up to a second apart from the others'), all released together
//! by a barrier.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use lambda_http::{Body, Response};

use super::proxy::Proxy;
use super::{App, client_for, required_env, sdk_settings};
use auth::store::Store;

/// How far apart the racers' clocks are at most, in milliseconds.
pub const SKEW_MILLIS: i64 = 1_000;

impl App {
    /// The state of racer `i` of `n` on this app's table: a client of its
    /// own (through `proxy`, if given) and a clock of its own, `i` steps of
    /// `SKEW_MILLIS / (n - 1)` ahead of this app's (a manual clock: a second
    /// ahead for the later half of the racers).
    pub async fn racer(&self, i: usize, n: usize, proxy: Option<&Proxy>) -> App {
        let endpoint = match proxy {
            Some(proxy) => proxy.endpoint.clone(),
            None => required_env("DYNAMODB_TEST_ENDPOINT"),
        };
        let client = client_for(&endpoint, &sdk_settings()).await;
        let skew = SKEW_MILLIS * i as i64 / (n.max(2) - 1) as i64;
        App {
            store: Store::new(client, self.store.table()),
            clock: self.clock.offset(skew),
            sessions: self.sessions.clone(),
            guarded: self.guarded.clone(),
        }
    }

    /// `n` racers' states, none through a proxy.
    pub async fn racers(&self, n: usize) -> Vec<App> {
        let mut apps = Vec::with_capacity(n);
        for i in 0..n {
            apps.push(self.racer(i, n, None).await);
        }
        apps
    }
}

/// A racer's request, boxed so that different routes race in one call.
pub type Racing<T> = BoxFuture<'static, T>;

/// Boxes a racer's request.
pub fn racing<T, F>(request: F) -> Racing<T>
where
    F: Future<Output = T> + Send + 'static,
{
    Box::pin(request)
}

/// Runs each request on a task of its own, all released at once by a
/// barrier; their results in the order given. A racer's panic fails the test.
pub async fn race<T: Send + 'static>(requests: Vec<Racing<T>>) -> Vec<T> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                request.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("a racer panicked"));
    }
    results
}

/// The statuses of `responses`, sorted.
pub fn statuses(responses: &[Response<Body>]) -> Vec<u16> {
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    statuses
}

/// Counts of the outcomes that free-running rounds came to, printed with the
/// test's output (`--nocapture` shows them) so a reader sees which branches
/// the rounds reached; the forced rounds are what proves each branch.
#[derive(Default, Debug)]
pub struct Outcomes(std::collections::BTreeMap<String, usize>);

impl Outcomes {
    pub fn count(&mut self, outcome: impl Into<String>) {
        *self.0.entry(outcome.into()).or_default() += 1;
    }

    pub fn report(&self, test: &str) {
        println!("{test}: free-running outcomes {:?}", self.0);
    }
}
