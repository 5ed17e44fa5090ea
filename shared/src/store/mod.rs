//! The DynamoDB table and the user store on it.
//!
//! One table for every item kind to come, with generic keys: `pk` (partition) and
//! `sk` (sort), both strings, each item kind recognisable by its key prefix, and a
//! numeric `expires_at` attribute that TTL housekeeping deletes by. The item
//! kinds and their access patterns are in `users`, `sessions`, `devices` and
//! `throttle`, and in docs/data.md.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateGlobalSecondaryIndexAction,
    GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

pub use aws_sdk_dynamodb;
pub use sessions::{
    DeletedBy, MAX_LISTED_SESSIONS, MAX_REVOKED_SESSIONS, SESSION_OWNER, SESSIONS_INDEX,
};
pub use throttle::Reservation;
pub use users::RoleGrant;

use crate::aws::CallError;

mod devices;
mod keys;
pub use keys::KEYS_PARTITION;
mod sessions;
mod throttle;
mod users;

pub const PARTITION_KEY: &str = "pk";
pub const SORT_KEY: &str = "sk";
/// The TTL attribute: seconds since the epoch after which DynamoDB may delete the item.
pub const TTL_ATTRIBUTE: &str = "expires_at";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// DynamoDB could not be reached in time, or refused the load: retry later (503).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The write's condition failed: the item exists already.
    #[error("the item exists already")]
    AlreadyExists,
    /// A conditional write lost: another request changed the item first.
    #[error("the item was changed by another request")]
    Conflict,
    /// Other requests kept writing the same items at the same moment, past
    /// our retries (DynamoDB's `TransactionConflict`). Nothing was written.
    #[error("the items were being changed by other requests")]
    Contended,
    /// Anything else: misconfiguration or a bug (500).
    #[error("database error: {0}")]
    Internal(String),
}

/// A DynamoDB client on the shared SDK configuration (endpoint override from
/// `AWS_ENDPOINT_URL_DYNAMODB`, for DynamoDB Local).
pub fn dynamodb_client(sdk: &aws_config::SdkConfig) -> Client {
    let mut config = aws_sdk_dynamodb::config::Builder::from(sdk);
    if let Some(url) = crate::aws::endpoint_override("DYNAMODB") {
        config = config.endpoint_url(url);
    }
    Client::from_conf(config.build())
}

pub(crate) fn classify<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match crate::aws::classify(err) {
        CallError::Unavailable(detail) => StoreError::Unavailable(detail),
        CallError::Rejected(detail) => StoreError::Internal(detail),
    }
}

/// A conditional write's outcome: `true` done, `false` its condition did not
/// hold (nothing written); any other failure classified as usual.
pub(crate) fn condition_held<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(err)
            if err.as_service_error().and_then(|e| e.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(err) => Err(classify(err)),
    }
}

/// Creates the table if it does not exist (local development, tests, the admin
/// CLI), with TTL on `expires_at` and the index of a user's sessions; a table
/// of an earlier version (`make dev`'s, kept on disk) gets the index added.
/// Deployed stacks get all of it from template.yaml.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let built = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Internal(e.to_string());
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(built)
    };
    let attribute = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .map_err(built)
    };
    let index_keys = [
        key(SESSION_OWNER, KeyType::Hash)?,
        key(SESSIONS_INDEX_SORT, KeyType::Range)?,
    ];
    let projection = Projection::builder()
        .projection_type(ProjectionType::All)
        .build();
    let index_attributes = [
        attribute(SESSION_OWNER, ScalarAttributeType::S)?,
        attribute(SESSIONS_INDEX_SORT, ScalarAttributeType::N)?,
    ];
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(
            [
                attribute(PARTITION_KEY, ScalarAttributeType::S)?,
                attribute(SORT_KEY, ScalarAttributeType::S)?,
            ]
            .into_iter()
            .chain(index_attributes.clone())
            .collect(),
        ))
        .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key(SORT_KEY, KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(SESSIONS_INDEX)
                .set_key_schema(Some(index_keys.to_vec()))
                .projection(projection.clone())
                .build()
                .map_err(built)?,
        )
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            if sessions_index(client, table).await?.is_none() {
                client
                    .update_table()
                    .table_name(table)
                    .set_attribute_definitions(Some(index_attributes.to_vec()))
                    .global_secondary_index_updates(
                        GlobalSecondaryIndexUpdate::builder()
                            .create(
                                CreateGlobalSecondaryIndexAction::builder()
                                    .index_name(SESSIONS_INDEX)
                                    .set_key_schema(Some(index_keys.to_vec()))
                                    .projection(projection)
                                    .build()
                                    .map_err(built)?,
                            )
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(classify)?;
                index_active(client, table).await?;
            }
            return Ok(());
        }
        Err(err) => return Err(classify(err)),
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(built)?,
        )
        .send()
        .await
        .map_err(classify)?;
    Ok(())
}

/// The table's sessions index, by its status (`None`: there is none).
async fn sessions_index(
    client: &Client,
    table: &str,
) -> Result<Option<aws_sdk_dynamodb::types::IndexStatus>, StoreError> {
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(classify)?;
    Ok(described
        .table()
        .map(|t| t.global_secondary_indexes())
        .unwrap_or_default()
        .iter()
        .find(|i| i.index_name() == Some(SESSIONS_INDEX))
        .map(|i| {
            i.index_status()
                .cloned()
                .unwrap_or(aws_sdk_dynamodb::types::IndexStatus::Creating)
        }))
}

/// Waits until the sessions index just added is built (DynamoDB Local
/// refuses writes to the table meanwhile), a minute at most.
async fn index_active(client: &Client, table: &str) -> Result<(), StoreError> {
    use aws_sdk_dynamodb::types::IndexStatus;
    for _ in 0..120 {
        if sessions_index(client, table).await? == Some(IndexStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Err(StoreError::Internal(format!(
        "the index {SESSIONS_INDEX} of {table} was not built within a minute"
    )))
}

/// The sort key of the sessions index: when the session began.
const SESSIONS_INDEX_SORT: &str = "created_at";

/// The table: users, sessions and refresh tokens.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    table: String,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Store {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Opens the connection to DynamoDB (DNS, TCP, TLS) at init with one
    /// read of a key that never exists, so that the first request does not
    /// pay for it. Best effort and bounded: a DynamoDB that cannot be reached
    /// is the first request's to report (503).
    pub async fn warm_up(&self) {
        let read = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(WARM_UP_KEY.to_owned(), WARM_UP_KEY)))
            .send();
        match tokio::time::timeout(WARM_UP_LIMIT, read).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %classify(err), "DynamoDB warm-up failed"),
            Err(_) => tracing::warn!("DynamoDB warm-up timed out"),
        }
    }

    /// Writes `item` unless an item of its key exists (`AlreadyExists`).
    async fn put_once(&self, item: HashMap<String, AttributeValue>) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match condition_held(result)? {
            true => Ok(()),
            false => Err(StoreError::AlreadyExists),
        }
    }

    /// One item by key, read strongly consistent: a write is seen by the very
    /// next request (a logout, a rotation, a password change).
    async fn get_item(
        &self,
        key: HashMap<String, AttributeValue>,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(output.item)
    }
}

/// The partition and sort key of the item no one writes: what `warm_up` reads.
const WARM_UP_KEY: &str = "WARMUP#";
/// How long init waits for the warm-up at most.
pub const WARM_UP_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The key of an item: `pk`, `sk`.
fn key(pk: String, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PARTITION_KEY.to_owned(), AttributeValue::S(pk)),
        (SORT_KEY.to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Reading attributes back, with an internal error naming what is wrong.
struct Item<'a>(&'a HashMap<String, AttributeValue>, &'static str);

impl Item<'_> {
    fn invalid(&self, name: &str) -> StoreError {
        StoreError::Internal(format!("{} item has a missing or invalid {name}", self.1))
    }

    fn string(&self, name: &str) -> Result<&str, StoreError> {
        self.0
            .get(name)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
            .ok_or_else(|| self.invalid(name))
    }

    fn optional_string(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, StoreError> {
        self.0
            .get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.invalid(name))
    }

    fn bool(&self, name: &str) -> Result<bool, StoreError> {
        self.0
            .get(name)
            .and_then(|v| v.as_bool().ok())
            .copied()
            .ok_or_else(|| self.invalid(name))
    }
}
