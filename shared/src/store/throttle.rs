//! Abuse-limit items, all with `expires_at` (TTL) and all updated atomically:
//! - failed logins: `pk = "LOCK#<normalised username>"`, `sk = "LOGIN"`:
//!   `failures`, `last_failure`;
//! - per-IP windows: `pk = "RATE#<scope>#<ip>"`, `sk = "<window start>"`: `hits`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{Item, Store, StoreError, TTL_ATTRIBUTE, classify, key, n};
use crate::throttle::{Failures, Window};
use crate::users::Username;

fn lock_key(username: &Username) -> HashMap<String, AttributeValue> {
    key(format!("LOCK#{username}"), "LOGIN")
}

impl Store {
    /// The failure record of `username`, known user or not.
    pub async fn failures(&self, username: &Username) -> Result<Option<Failures>, StoreError> {
        let Some(item) = self.get_item(lock_key(username)).await? else {
            return Ok(None);
        };
        let item = Item(&item, "lock");
        Ok(Some(Failures {
            count: item.number("failures")?,
            last: item.number("last_failure")?,
            expires_at: item.number(TTL_ATTRIBUTE)?,
        }))
    }

    /// Counts one more failed login: an atomic `ADD`, or a fresh count of one
    /// when the record has expired (TTL deletes late).
    pub async fn record_failure(&self, username: &Username, now: i64) -> Result<(), StoreError> {
        let values = |extra: Option<(&str, AttributeValue)>| {
            let mut map = HashMap::from([
                (":one".to_owned(), n(1)),
                (":now".to_owned(), n(now)),
                (":exp".to_owned(), n(Failures::expiry_after(now))),
            ]);
            if let Some((k, v)) = extra {
                map.insert(k.to_owned(), v);
            }
            Some(map)
        };
        let added = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(lock_key(username)))
            .update_expression("ADD failures :one SET last_failure = :now, expires_at = :exp")
            .condition_expression("attribute_not_exists(pk) OR expires_at > :now")
            .set_expression_attribute_values(values(None))
            .send()
            .await;
        match added {
            Ok(_) => return Ok(()),
            Err(err)
                if !err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                return Err(classify(err));
            }
            Err(_) => {}
        }
        // Expired: start over at one. Conditional again, so two such resets agree.
        let reset = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(lock_key(username)))
            .update_expression("SET failures = :one, last_failure = :now, expires_at = :exp")
            .condition_expression("expires_at <= :now")
            .set_expression_attribute_values(values(None))
            .send()
            .await;
        match reset {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // Someone else reset it a moment ago: count on top of theirs.
                Box::pin(self.record_failure(username, now)).await
            }
            Err(err) => Err(classify(err)),
        }
    }

    /// Forgets the failures of `username`: a successful login, or an operator's unlock.
    pub async fn clear_failures(&self, username: &Username) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(lock_key(username)))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Counts a hit in `source`'s current window; returns the hits so far.
    pub async fn hit(&self, window: &Window, source: &str, now: i64) -> Result<u64, StoreError> {
        let start = window.start(now);
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                format!("RATE#{}#{source}", window.scope),
                &start.to_string(),
            )))
            .update_expression("ADD hits :one SET expires_at = :exp")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":exp", n(start + window.length + 60))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(classify)?;
        let attributes = output.attributes().cloned().unwrap_or_default();
        Item(&attributes, "rate").number("hits")
    }
}
