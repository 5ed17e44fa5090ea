//! The DynamoDB table and the user store on it.
//!
//! One table for every item kind to come, with generic keys: `pk` (partition) and
//! `sk` (sort), both strings, each item kind recognisable by its key prefix, and a
//! numeric `expires_at` attribute that TTL housekeeping deletes by. The item
//! kinds and their access patterns are in `users`, `sessions`, `devices`,
//! `throttle`, `emails`, `tickets`, `outbox` and `federation`, and in docs/data.md.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateGlobalSecondaryIndexAction,
    GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};

pub use aws_sdk_dynamodb;
pub use sessions::{
    DeletedBy, MAX_LISTED_SESSIONS, MAX_REVOKED_SESSIONS, SESSION_OWNER, SESSIONS_INDEX,
};
pub use throttle::Reservation;
pub use users::{RoleGrant, USERS_BY_ID_INDEX, USERS_BY_ID_KEY, USERS_BY_ID_SORT};

use crate::aws::CallError;

mod devices;
mod emails;
mod federation;
pub use emails::Verified;
pub use federation::NewAccountError;
mod keys;
pub use keys::KEYS_PARTITION;
mod outbox;
mod passkeys;
mod second_factor;
pub use outbox::{MAIL_PREFIX, job_from_item};
pub use second_factor::{CodeTry, FactorProof};
mod sessions;
mod throttle;
mod tickets;
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

/// A global secondary index: its name, its keys (partition, sort) with their
/// types, and what it projects.
struct IndexSpec {
    name: &'static str,
    hash: (&'static str, ScalarAttributeType),
    range: (&'static str, ScalarAttributeType),
    projection: ProjectionType,
}

/// The table's indexes: a user's sessions (every attribute, for their list),
/// and users by id (keys only: the lookup then reads the user itself).
fn indexes() -> [IndexSpec; 2] {
    [
        IndexSpec {
            name: SESSIONS_INDEX,
            hash: (SESSION_OWNER, ScalarAttributeType::S),
            range: (SESSIONS_INDEX_SORT, ScalarAttributeType::N),
            projection: ProjectionType::All,
        },
        IndexSpec {
            name: USERS_BY_ID_INDEX,
            hash: (USERS_BY_ID_KEY, ScalarAttributeType::S),
            range: (USERS_BY_ID_SORT, ScalarAttributeType::N),
            projection: ProjectionType::KeysOnly,
        },
    ]
}

/// Creates the table if it does not exist (local development, tests, the admin
/// CLI), with TTL on `expires_at` and its indexes; a table of an earlier
/// version (`make dev`'s, kept on disk) gets the indexes it lacks added, one
/// at a time, as DynamoDB allows. Deployed stacks get all of it from
/// template.yaml.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let built = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Internal(e.to_string());
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(built)
    };
    let attribute = |(name, kind): &(&str, ScalarAttributeType)| {
        AttributeDefinition::builder()
            .attribute_name(*name)
            .attribute_type(kind.clone())
            .build()
            .map_err(built)
    };
    let specs = indexes();
    let mut index_attributes = Vec::new();
    let mut index_keys = Vec::new();
    for spec in &specs {
        index_attributes.push(vec![attribute(&spec.hash)?, attribute(&spec.range)?]);
        index_keys.push(vec![
            key(spec.hash.0, KeyType::Hash)?,
            key(spec.range.0, KeyType::Range)?,
        ]);
    }
    let projection = |spec: &IndexSpec| {
        Projection::builder()
            .projection_type(spec.projection.clone())
            .build()
    };
    let mut attributes = vec![
        attribute(&(PARTITION_KEY, ScalarAttributeType::S))?,
        attribute(&(SORT_KEY, ScalarAttributeType::S))?,
    ];
    attributes.extend(index_attributes.iter().flatten().cloned());
    let mut create = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(attributes))
        .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key(SORT_KEY, KeyType::Range)?)
        .stream_specification(stream().map_err(built)?);
    for (spec, keys) in specs.iter().zip(&index_keys) {
        create = create.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(spec.name)
                .set_key_schema(Some(keys.clone()))
                .projection(projection(spec))
                .build()
                .map_err(built)?,
        );
    }
    match create.send().await {
        Ok(_) => {}
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            for ((spec, keys), attributes) in specs.iter().zip(index_keys).zip(index_attributes) {
                if index_status(client, table, spec.name).await?.is_some() {
                    continue;
                }
                client
                    .update_table()
                    .table_name(table)
                    .set_attribute_definitions(Some(attributes))
                    .global_secondary_index_updates(
                        GlobalSecondaryIndexUpdate::builder()
                            .create(
                                CreateGlobalSecondaryIndexAction::builder()
                                    .index_name(spec.name)
                                    .set_key_schema(Some(keys))
                                    .projection(projection(spec))
                                    .build()
                                    .map_err(built)?,
                            )
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(classify)?;
                index_active(client, table, spec.name).await?;
            }
            let described = client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(classify)?;
            let streaming = described
                .table()
                .and_then(|t| t.stream_specification())
                .is_some_and(|s| s.stream_enabled());
            if !streaming {
                client
                    .update_table()
                    .table_name(table)
                    .stream_specification(stream().map_err(built)?)
                    .send()
                    .await
                    .map_err(classify)?;
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

/// The table's stream, for the mail function (the `outbox` jobs;
/// template.yaml filters the rest out): keys only, so what may read it
/// sees no hash, session or ticket of any item, and each job is read from
/// the table (one that is gone was handled already).
fn stream() -> Result<StreamSpecification, aws_sdk_dynamodb::error::BuildError> {
    StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::KeysOnly)
        .build()
}

/// The table's index `name`, by its status (`None`: there is none).
async fn index_status(
    client: &Client,
    table: &str,
    name: &str,
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
        .find(|i| i.index_name() == Some(name))
        .map(|i| {
            i.index_status()
                .cloned()
                .unwrap_or(aws_sdk_dynamodb::types::IndexStatus::Creating)
        }))
}

/// Waits until the index `name` just added is built (DynamoDB Local refuses
/// writes to the table meanwhile), a minute at most.
async fn index_active(client: &Client, table: &str, name: &str) -> Result<(), StoreError> {
    use aws_sdk_dynamodb::types::IndexStatus;
    for _ in 0..120 {
        if index_status(client, table, name).await? == Some(IndexStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Err(StoreError::Internal(format!(
        "the index {name} of {table} was not built within a minute"
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

    /// Deletes the item at `key` if `condition` holds (`value` its one
    /// value, `:v`), and gives back what it held: one caller alone gets it,
    /// however many race. `None` when there was none or the condition did
    /// not hold (nothing deleted).
    async fn take_item(
        &self,
        key: HashMap<String, AttributeValue>,
        condition: &str,
        value: AttributeValue,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .condition_expression(condition)
            .expression_attribute_values(":v", value)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output.attributes),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(err) => Err(classify(err)),
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

    /// An address, if there is one; one that does not parse is damage.
    fn optional_email(&self, name: &str) -> Result<Option<crate::email::Email>, StoreError> {
        self.optional_string(name)
            .map(|raw| crate::email::Email::parse(raw).map_err(|_| self.invalid(name)))
            .transpose()
    }

    fn bool(&self, name: &str) -> Result<bool, StoreError> {
        self.0
            .get(name)
            .and_then(|v| v.as_bool().ok())
            .copied()
            .ok_or_else(|| self.invalid(name))
    }
}
