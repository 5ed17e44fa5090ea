//! DynamoDB's and KMS's first call on a new connection and a call on a kept
//! one, over the plain and the production path.

use super::*;

/// DynamoDB's read (the one get-name makes) and KMS's `GetPublicKey` (a
/// verifier's at init), each on a new connection and on a kept one.
pub(super) async fn calls(bench: &Bench, tls: bool) {
    let path = if tls { "production" } else { "plain" };
    let ca = tls.then_some(&bench.ca_path);
    let (ddb_url, kms_url) = if tls {
        (&bench.ddb_tls, &bench.kms_tls)
    } else {
        (&bench.ddb_plain, &bench.kms_plain)
    };
    let user = Username::parse("bench-user").unwrap();
    // One GetItem and one GetPublicKey on `store` and `client`: their times.
    let call = async |store: &Store, client: &aws_sdk_kms::Client| {
        let started = Instant::now();
        store.get(&user).await.unwrap();
        let ddb = ms_of(started.elapsed());
        let started = Instant::now();
        let key = client.get_public_key().key_id(&bench.kms_key);
        key.send().await.unwrap();
        (ddb, ms_of(started.elapsed()))
    };
    let new_clients = || {
        let store = Store::new(dynamodb(&sdk(ca), ddb_url), bench.table.clone());
        (store, kms(&sdk(ca), kms_url))
    };
    let (mut ddb_first, mut kms_first) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let (store, client) = new_clients();
        let (ddb, kms) = call(&store, &client).await;
        ddb_first.push(ddb);
        kms_first.push(kms);
    }
    let (store, client) = new_clients();
    let (mut ddb_warm, mut kms_warm) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let (ddb, kms) = call(&store, &client).await;
        if i >= 10 {
            ddb_warm.push(ddb);
            kms_warm.push(kms);
        }
    }
    println!(
        "{path}.dynamodb_first_call_ms: {:.3}",
        percentile(&ddb_first, 50.0)
    );
    println!(
        "{path}.dynamodb_read_ms: {:.3}",
        percentile(&ddb_warm, 50.0)
    );
    println!(
        "{path}.kms_first_call_ms: {:.3}",
        percentile(&kms_first, 50.0)
    );
    println!("{path}.kms_call_ms: {:.3}", percentile(&kms_warm, 50.0));
}
