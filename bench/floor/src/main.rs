//! The floor: a hello-world function on `lambda_runtime`, started like ours
//! (a current-thread Tokio runtime) and built with the same release profile.
//! Whatever our functions cost beyond it is ours.

use lambda_http::lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::{Value, json};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(|_: LambdaEvent<Value>| async {
        Ok::<_, Error>(json!({"statusCode": 200, "body": "hello"}))
    }))
    .await
}
