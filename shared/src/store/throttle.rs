//! Abuse-limit items, all with `expires_at` (TTL) and all updated atomically:
//! - password attempts: `pk = "LOCK#<normalised username>"`, `sk = "LOGIN"`:
//!   `failures` (attempts counted since the last success), `last_failure`
//!   (when the last was counted), `locked_until`, `last_attempt` (a random id
//!   of the write that counted the last one);
//! - per-IP windows: `pk = "RATE#<scope>#<ip>"`, `sk = "<window start>"`: `hits`.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::{Item, Store, StoreError, TTL_ATTRIBUTE, classify, key, n};
use crate::throttle::{Failures, Window};
use crate::users::Username;

pub(super) fn lock_key(username: &Username) -> HashMap<String, AttributeValue> {
    key(format!("LOCK#{username}"), "LOGIN")
}

/// What a reservation of a password attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The attempt is counted: bcrypt may run once.
    Granted,
    /// Locked: no bcrypt, come back in this many seconds.
    Locked { retry_after: u64 },
}

/// Rounds of compare-and-set before a reservation gives up and answers
/// "locked, retry in a second": only many attempts on one username at the
/// same moment lose this often, and that is an attack.
const RESERVATION_ROUNDS: usize = 8;

/// Where a count of password attempts lives: a username's attempt record
/// (its own item, `expires_at` its TTL), or a device proof's record (the
/// count beside the device's own fields, forgotten by `failures_expire_at`,
/// never created by a reservation).
#[derive(Clone, Copy)]
pub(super) enum Counter {
    Username,
    Device,
}

impl Counter {
    /// The attribute after which a count is forgotten.
    fn expiry(self) -> &'static str {
        match self {
            Counter::Username => TTL_ATTRIBUTE,
            Counter::Device => "failures_expire_at",
        }
    }
}

fn failures_from(item: &HashMap<String, AttributeValue>) -> Result<Failures, StoreError> {
    counted(item, Counter::Username)?.ok_or_else(|| Item(item, "lock").invalid("failures"))
}

/// The count an item holds, if any.
pub(super) fn counted(
    item: &HashMap<String, AttributeValue>,
    counter: Counter,
) -> Result<Option<Failures>, StoreError> {
    if !item.contains_key("failures") {
        return Ok(None);
    }
    let item = Item(item, "attempt count");
    let count = item.number("failures")?;
    let last = item.number("last_failure")?;
    Ok(Some(Failures {
        count,
        last,
        // Records written before `locked_until` existed lock as they always did.
        locked_until: item
            .number("locked_until")
            .unwrap_or_else(|_| last + Failures::lock_window(count)),
        expires_at: item.number(counter.expiry())?,
    }))
}

impl Store {
    /// The attempt record of `username`, known user or not.
    pub async fn failures(&self, username: &Username) -> Result<Option<Failures>, StoreError> {
        self.get_item(lock_key(username))
            .await?
            .as_ref()
            .map(failures_from)
            .transpose()
    }

    /// Reserves one password attempt for `username` before bcrypt runs: one
    /// conditional write counts it and sets the lock the count calls for, on
    /// the condition that the record is still what `seen` says (compare and
    /// set). Refused while locked. However many requests race, each attempt
    /// is counted by exactly one write, so bcrypt runs at most as often as the
    /// sequential schedule allows: `FREE_FAILURES`, then one per lock window.
    /// A success clears the record afterwards (in the transaction that starts
    /// the session); a failure leaves the count as it is.
    pub async fn reserve_attempt(
        &self,
        username: &Username,
        seen: Option<Failures>,
        now: i64,
    ) -> Result<Reservation, StoreError> {
        let reserved = self
            .reserve_on(lock_key(username), Counter::Username, seen, now)
            .await?;
        // A username's record is created by its first reservation: never gone.
        reserved.ok_or_else(|| StoreError::Internal("an attempt record vanished".into()))
    }

    /// `reserve_attempt` on the count of `key`'s item. `None` when the item
    /// is gone (a device record retired meanwhile): nothing was counted.
    pub(super) async fn reserve_on(
        &self,
        key: HashMap<String, AttributeValue>,
        counter: Counter,
        mut seen: Option<Failures>,
        now: i64,
    ) -> Result<Option<Reservation>, StoreError> {
        // Names this attempt's write: when its answer is lost and the SDK's
        // retry finds the record moved on, the record says whether it moved
        // on by this very write (counted once, granted) or another's.
        let attempt = uuid::Uuid::new_v4().to_string();
        for _ in 0..RESERVATION_ROUNDS {
            let live = seen.filter(|f| f.expires_at > now);
            if let Some(retry_after) = live.and_then(|f| f.locked_for(now)) {
                return Ok(Some(Reservation::Locked { retry_after }));
            }
            let count = live.map_or(0, |f| f.count) + 1;
            let mut values = HashMap::from([
                (":count".to_owned(), n(count)),
                (":now".to_owned(), n(now)),
                (":until".to_owned(), n(now + Failures::lock_window(count))),
                (":exp".to_owned(), n(Failures::expiry_after(now))),
                (":attempt".to_owned(), AttributeValue::S(attempt.clone())),
            ]);
            let condition = match (seen, counter) {
                (None, Counter::Username) => "attribute_not_exists(pk)",
                (None, Counter::Device) => {
                    "attribute_exists(pk) AND attribute_not_exists(failures)"
                }
                (Some(old), _) => {
                    values.insert(":seen".to_owned(), n(old.count));
                    values.insert(":last".to_owned(), n(old.last));
                    "failures = :seen AND last_failure = :last"
                }
            };
            let written = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression(format!(
                    "SET failures = :count, last_failure = :now, locked_until = :until, {} = :exp, last_attempt = :attempt",
                    counter.expiry()
                ))
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            match written {
                Ok(_) => return Ok(Some(Reservation::Granted)),
                Err(err) => match err.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(lost)) => {
                        let counted_by = lost
                            .item()
                            .and_then(|item| item.get("last_attempt"))
                            .and_then(|v| v.as_s().ok());
                        // This write itself, its answer lost: counted once.
                        if counted_by == Some(&attempt) {
                            return Ok(Some(Reservation::Granted));
                        }
                        // Another attempt was counted first: start from its
                        // record (none: a device record gone).
                        seen = match (lost.item(), counter) {
                            (Some(item), _) => counted(item, counter)?,
                            (None, Counter::Username) => self
                                .get_item(key.clone())
                                .await?
                                .as_ref()
                                .map(failures_from)
                                .transpose()?,
                            (None, Counter::Device) => return Ok(None),
                        };
                    }
                    // A success's transaction was clearing the record at that
                    // moment: nothing was written; read it again.
                    Some(UpdateItemError::TransactionConflictException(_)) => {
                        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
                        seen = match self.get_item(key.clone()).await? {
                            Some(item) => counted(&item, counter)?,
                            None if matches!(counter, Counter::Device) => return Ok(None),
                            None => None,
                        };
                    }
                    _ => return Err(classify(err)),
                },
            }
        }
        Ok(Some(Reservation::Locked { retry_after: 1 }))
    }

    /// Forgets the attempts of `username`: an operator's unlock. (A successful
    /// login clears them in the transaction that starts its session.)
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
