//! The DynamoDB table and the user store on it.
//!
//! One table for every item kind to come, with generic keys: `pk` (partition) and
//! `sk` (sort), both strings, each item kind recognisable by its key prefix, and a
//! numeric `expires_at` attribute that TTL housekeeping deletes by. A user is
//! `pk = "USER#<normalised username>"`, `sk = "PROFILE"`.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveSpecification,
};

pub use aws_sdk_dynamodb;

use crate::config::StoreConfig;
use crate::users::{User, UserId, Username};

pub const PARTITION_KEY: &str = "pk";
pub const SORT_KEY: &str = "sk";
/// The TTL attribute: seconds since the epoch after which DynamoDB may delete the item.
pub const TTL_ATTRIBUTE: &str = "expires_at";

const USER_PREFIX: &str = "USER#";
const USER_PROFILE: &str = "PROFILE";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// DynamoDB could not be reached in time, or refused the load: retry later (503).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The write's condition failed: the item exists already.
    #[error("the item exists already")]
    AlreadyExists,
    /// Anything else: misconfiguration or a bug (500).
    #[error("database error: {0}")]
    Internal(String),
}

/// The SDK configuration loader with our bounds: short attempts, a cap on the
/// whole operation (retries included), few retries. The endpoint, region and
/// credentials come from the standard AWS variables (`AWS_ENDPOINT_URL_DYNAMODB`…).
pub fn sdk_config_loader(config: &StoreConfig) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(config.attempt_timeout)
                .operation_attempt_timeout(config.attempt_timeout)
                .operation_timeout(config.operation_timeout)
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(config.max_attempts)
                .with_initial_backoff(Duration::from_millis(25))
                .with_max_backoff(Duration::from_millis(500)),
        )
}

/// The DynamoDB client for this process: built once, at init.
pub async fn dynamodb_client(config: &StoreConfig) -> Client {
    Client::new(&sdk_config_loader(config).load().await)
}

/// Classifies an SDK error: transport trouble, timeouts, throttling and server
/// errors are "unavailable"; everything else (bad request, missing table,
/// rejected credentials) is internal.
fn classify<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    const TRANSIENT: &[&str] = &[
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
    ];
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(format!("{err:?}"))
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown");
            if TRANSIENT.contains(&code) {
                StoreError::Unavailable(code.to_owned())
            } else {
                StoreError::Internal(format!("{code}: {}", service.err().message().unwrap_or("")))
            }
        }
        _ => StoreError::Internal(format!("{err:?}")),
    }
}

/// Creates the table if it does not exist (local development, tests, the admin
/// CLI), with TTL on `expires_at`. Deployed stacks get it from template.yaml.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(PARTITION_KEY)?)
        .attribute_definitions(attribute(SORT_KEY)?)
        .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key(SORT_KEY, KeyType::Range)?)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
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
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        )
        .send()
        .await
        .map_err(classify)?;
    Ok(())
}

/// Users in the table, keyed by normalised username.
#[derive(Clone, Debug)]
pub struct UserStore {
    client: Client,
    table: String,
}

impl UserStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        UserStore {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Reads a user with a strongly consistent read: a password change or a
    /// deactivation is seen by the very next request.
    pub async fn get(&self, username: &Username) -> Result<Option<User>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(user_key(username)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        output.item().map(User::try_from).transpose()
    }

    /// Creates a user unless one with that username exists: a conditional write,
    /// so two concurrent creations cannot both succeed.
    pub async fn create(&self, user: &User) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(user_item(user)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::AlreadyExists)
            }
            Err(err) => Err(classify(err)),
        }
    }

    /// Deletes a user; deleting a missing user is not an error.
    pub async fn delete(&self, username: &Username) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(user_key(username)))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Activates or deactivates an existing user; `Ok(false)` when there is none.
    pub async fn set_active(&self, username: &Username, active: bool) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(username)))
            .update_expression("SET active = :active")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":active", AttributeValue::Bool(active))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(classify(err)),
        }
    }
}

fn user_key(username: &Username) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S(format!("{USER_PREFIX}{username}")),
        ),
        (
            SORT_KEY.to_owned(),
            AttributeValue::S(USER_PROFILE.to_owned()),
        ),
    ])
}

fn user_item(user: &User) -> HashMap<String, AttributeValue> {
    let mut item = user_key(&user.username);
    item.extend([
        ("kind".to_owned(), AttributeValue::S("user".to_owned())),
        ("user_id".to_owned(), AttributeValue::S(user.id.to_string())),
        (
            "username".to_owned(),
            AttributeValue::S(user.username.to_string()),
        ),
        ("name".to_owned(), AttributeValue::S(user.name.clone())),
        (
            "password_hash".to_owned(),
            AttributeValue::S(user.password_hash.clone()),
        ),
        ("active".to_owned(), AttributeValue::Bool(user.active)),
        (
            "created_at".to_owned(),
            AttributeValue::N(user.created_at.to_string()),
        ),
    ]);
    item
}

impl TryFrom<&HashMap<String, AttributeValue>> for User {
    type Error = StoreError;

    fn try_from(item: &HashMap<String, AttributeValue>) -> Result<Self, StoreError> {
        let string = |name: &str| {
            item.get(name).and_then(|v| v.as_s().ok()).ok_or_else(|| {
                StoreError::Internal(format!("user item lacks string attribute {name}"))
            })
        };
        let invalid = |what: &str| StoreError::Internal(format!("user item has an invalid {what}"));
        Ok(User {
            id: UserId::parse(string("user_id")?).ok_or_else(|| invalid("user_id"))?,
            username: Username::parse(string("username")?).map_err(|_| invalid("username"))?,
            name: string("name")?.clone(),
            password_hash: string("password_hash")?.clone(),
            active: *item
                .get("active")
                .and_then(|v| v.as_bool().ok())
                .ok_or_else(|| invalid("active flag"))?,
            created_at: item
                .get("created_at")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| invalid("created_at"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_item_round_trips() {
        let mut user = User::new(
            Username::parse("Alice").unwrap(),
            "Alice L".into(),
            "$2b$10$h".into(),
        );
        user.active = false;
        let item = user_item(&user);
        assert_eq!(item["pk"].as_s().unwrap(), "USER#alice");
        assert_eq!(item["sk"].as_s().unwrap(), "PROFILE");
        assert_eq!(User::try_from(&item).unwrap(), user);
    }

    #[test]
    fn a_damaged_user_item_is_an_internal_error() {
        let user = User::new(Username::parse("alice").unwrap(), "A".into(), "h".into());
        let mut item = user_item(&user);
        item.insert("user_id".into(), AttributeValue::S("not-a-uuid".into()));
        assert!(matches!(
            User::try_from(&item),
            Err(StoreError::Internal(_))
        ));
        item.remove("user_id");
        assert!(matches!(
            User::try_from(&item),
            Err(StoreError::Internal(_))
        ));
    }
}
