//! Session and refresh-token items.
//!
//! - session: `pk = "SESSION#<sid>"`, `sk = "SESSION"`: `user_id`, `username`,
//!   `epoch` (the user's session epoch at login), `revoked`, `created_at`,
//!   `expires_at` (TTL: the expiry of the family's newest refresh token).
//! - refresh token: `pk = "REFRESH#<sha256 hex>"`, `sk = "REFRESH"`: `session_id`,
//!   `user_id`, `token_state` (`active` | `rotated`), `rotated_at`, `replaced_by`
//!   (the successor's hash), `created_at`, `expires_at` (TTL).
//!
//! Every multi-item change is one DynamoDB transaction with conditions, so a
//! failure or a race leaves no half-done rotation or login behind.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use super::users::user_key;
use super::{Item, Store, StoreError, classify, key, n, s};
use crate::sessions::{RefreshRecord, RefreshState, Session};
use crate::users::{User, UserId, Username};

const SESSION_PREFIX: &str = "SESSION#";
const SESSION_SK: &str = "SESSION";
const REFRESH_PREFIX: &str = "REFRESH#";
const REFRESH_SK: &str = "REFRESH";
const ACTIVE: &str = "active";
const ROTATED: &str = "rotated";

/// At most this many individually revoked sessions are kept on a user item.
/// Past it, a logout ends all the user's sessions instead (one epoch bump), so
/// the item cannot grow without bound however often someone logs in and out.
pub const MAX_REVOKED_SESSIONS: usize = 100;

fn session_key(sid: &str) -> HashMap<String, AttributeValue> {
    key(format!("{SESSION_PREFIX}{sid}"), SESSION_SK)
}

fn refresh_key(hash: &str) -> HashMap<String, AttributeValue> {
    key(format!("{REFRESH_PREFIX}{hash}"), REFRESH_SK)
}

fn values<const N: usize>(
    pairs: [(&str, AttributeValue); N],
) -> Option<HashMap<String, AttributeValue>> {
    Some(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn built<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Internal(e.to_string()))
}

/// What a cancelled transaction means: a lost condition is a conflict, the
/// rest is classified as usual.
fn transaction_error<R: std::fmt::Debug>(err: SdkError<TransactWriteItemsError, R>) -> StoreError {
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        err.as_service_error()
    {
        let codes: Vec<&str> = cancelled
            .cancellation_reasons()
            .iter()
            .filter_map(|r| r.code())
            .filter(|c| *c != "None")
            .collect();
        if codes.iter().all(|c| *c == "ConditionalCheckFailed") {
            return StoreError::Conflict;
        }
        if codes.iter().any(|c| {
            [
                "ThrottlingError",
                "ProvisionedThroughputExceeded",
                "TransactionConflict",
            ]
            .contains(c)
        }) {
            return StoreError::Unavailable(codes.join(","));
        }
        return StoreError::Internal(format!("transaction cancelled: {}", codes.join(",")));
    }
    classify(err)
}

impl Store {
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(transaction_error)?;
        Ok(())
    }

    fn put_new(
        &self,
        item: HashMap<String, AttributeValue>,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = built(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build(),
        )?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn update(
        &self,
        key: HashMap<String, AttributeValue>,
        update: &str,
        condition: &str,
        names: Option<HashMap<String, String>>,
        values: Option<HashMap<String, AttributeValue>>,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = built(
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(key))
                .update_expression(update)
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .build(),
        )?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Stores a new session and its first refresh token, both or neither.
    pub async fn start_session(
        &self,
        session: &Session,
        first: &RefreshRecord,
    ) -> Result<(), StoreError> {
        self.transact(vec![
            self.put_new(session_item(session))?,
            self.put_new(refresh_item(first))?,
        ])
        .await
    }

    pub async fn get_session(&self, sid: &str) -> Result<Option<Session>, StoreError> {
        self.get_item(session_key(sid))
            .await?
            .as_ref()
            .map(Session::try_from)
            .transpose()
    }

    pub async fn get_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
        self.get_item(refresh_key(hash))
            .await?
            .as_ref()
            .map(RefreshRecord::try_from)
            .transpose()
    }

    /// Trades the active refresh token `old` for `new`, in one transaction that
    /// fails with `Conflict` if `old` was rotated meanwhile or the session revoked.
    pub async fn rotate(&self, old: &RefreshRecord, new: &RefreshRecord) -> Result<(), StoreError> {
        self.transact(vec![
            self.update(
                refresh_key(&old.hash),
                "SET token_state = :rotated, rotated_at = :now, replaced_by = :new",
                "token_state = :active",
                None,
                values([
                    (":rotated", s(ROTATED)),
                    (":active", s(ACTIVE)),
                    (":now", n(new.created_at)),
                    (":new", s(&new.hash)),
                ]),
            )?,
            self.put_new(refresh_item(new))?,
            self.extend_session(new)?,
        ])
        .await
    }

    /// The session lives as long as its newest refresh token, if not revoked.
    fn extend_session(&self, newest: &RefreshRecord) -> Result<TransactWriteItem, StoreError> {
        self.update(
            session_key(&newest.session_id),
            "SET expires_at = :exp",
            "revoked = :false",
            None,
            values([
                (":exp", n(newest.expires_at)),
                (":false", AttributeValue::Bool(false)),
            ]),
        )
    }

    /// Ends one session: its refresh family stops working, and its access tokens
    /// too, at once (the user item lists it until `access_until`, after which no
    /// access token of it can be valid anyway). Expired entries are pruned on
    /// the way. `user` is the holder as just read; `None` if the user is gone.
    pub async fn revoke_session(
        &self,
        sid: &str,
        user: Option<&User>,
        access_until: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut items = vec![self.update(
            session_key(sid),
            "SET revoked = :true",
            "attribute_exists(pk)",
            None,
            values([(":true", AttributeValue::Bool(true))]),
        )?];
        if let Some(user) = user {
            let live = user
                .revoked_sessions
                .values()
                .filter(|until| **until >= now)
                .count();
            if live >= MAX_REVOKED_SESSIONS {
                items.push(self.update(
                    user_key(&user.username),
                    "ADD session_epoch :one",
                    "user_id = :uid",
                    None,
                    values([(":one", n(1)), (":uid", s(user.id.to_string()))]),
                )?);
            } else {
                let mut names = HashMap::from([("#sid".to_owned(), sid.to_owned())]);
                let mut update = "SET revoked_sessions.#sid = :until".to_owned();
                let expired: Vec<&String> = user
                    .revoked_sessions
                    .iter()
                    .filter(|(old, until)| **until < now && *old != sid)
                    .map(|(old, _)| old)
                    .collect();
                for (i, old) in expired.iter().enumerate() {
                    update.push_str(if i == 0 { " REMOVE " } else { ", " });
                    update.push_str(&format!("revoked_sessions.#e{i}"));
                    names.insert(format!("#e{i}"), (*old).clone());
                }
                items.push(self.update(
                    user_key(&user.username),
                    &update,
                    "user_id = :uid",
                    Some(names),
                    values([
                        (":until", n(access_until)),
                        (":uid", s(user.id.to_string())),
                    ]),
                )?);
            }
        }
        self.transact(items).await
    }
}

fn session_item(session: &Session) -> HashMap<String, AttributeValue> {
    let mut item = session_key(&session.id);
    item.extend([
        ("kind".to_owned(), s("session")),
        ("user_id".to_owned(), s(session.user_id.to_string())),
        ("username".to_owned(), s(session.username.to_string())),
        ("epoch".to_owned(), n(session.epoch)),
        ("revoked".to_owned(), AttributeValue::Bool(session.revoked)),
        ("created_at".to_owned(), n(session.created_at)),
        (super::TTL_ATTRIBUTE.to_owned(), n(session.expires_at)),
    ]);
    item
}

impl TryFrom<&HashMap<String, AttributeValue>> for Session {
    type Error = StoreError;

    fn try_from(map: &HashMap<String, AttributeValue>) -> Result<Self, StoreError> {
        let item = Item(map, "session");
        let id = item
            .string(super::PARTITION_KEY)?
            .strip_prefix(SESSION_PREFIX)
            .ok_or_else(|| item.invalid("pk"))?
            .to_owned();
        Ok(Session {
            id,
            user_id: UserId::parse(item.string("user_id")?)
                .ok_or_else(|| item.invalid("user_id"))?,
            username: Username::parse(item.string("username")?)
                .map_err(|_| item.invalid("username"))?,
            epoch: item.number("epoch")?,
            revoked: item.bool("revoked")?,
            created_at: item.number("created_at")?,
            expires_at: item.number(super::TTL_ATTRIBUTE)?,
        })
    }
}

fn refresh_item(record: &RefreshRecord) -> HashMap<String, AttributeValue> {
    let mut item = refresh_key(&record.hash);
    item.extend([
        ("kind".to_owned(), s("refresh")),
        ("session_id".to_owned(), s(&record.session_id)),
        ("user_id".to_owned(), s(record.user_id.to_string())),
        ("created_at".to_owned(), n(record.created_at)),
        (super::TTL_ATTRIBUTE.to_owned(), n(record.expires_at)),
    ]);
    match &record.state {
        RefreshState::Active => {
            item.insert("token_state".to_owned(), s(ACTIVE));
        }
        RefreshState::Rotated { at, replaced_by } => {
            item.insert("token_state".to_owned(), s(ROTATED));
            item.insert("rotated_at".to_owned(), n(at));
            item.insert("replaced_by".to_owned(), s(replaced_by));
        }
    }
    item
}

impl TryFrom<&HashMap<String, AttributeValue>> for RefreshRecord {
    type Error = StoreError;

    fn try_from(map: &HashMap<String, AttributeValue>) -> Result<Self, StoreError> {
        let item = Item(map, "refresh token");
        let hash = item
            .string(super::PARTITION_KEY)?
            .strip_prefix(REFRESH_PREFIX)
            .ok_or_else(|| item.invalid("pk"))?
            .to_owned();
        let state = match item.string("token_state")? {
            ACTIVE => RefreshState::Active,
            ROTATED => RefreshState::Rotated {
                at: item.number("rotated_at")?,
                replaced_by: item
                    .optional_string("replaced_by")
                    .ok_or_else(|| item.invalid("replaced_by"))?
                    .to_owned(),
            },
            _ => return Err(item.invalid("token_state")),
        };
        Ok(RefreshRecord {
            hash,
            session_id: item.string("session_id")?.to_owned(),
            user_id: UserId::parse(item.string("user_id")?)
                .ok_or_else(|| item.invalid("user_id"))?,
            state,
            created_at: item.number("created_at")?,
            expires_at: item.number(super::TTL_ATTRIBUTE)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_and_refresh_items_round_trip() {
        let session = Session {
            id: Session::new_id(),
            user_id: UserId::random(),
            username: Username::parse("alice").unwrap(),
            epoch: 2,
            revoked: false,
            created_at: 100,
            expires_at: 200,
        };
        assert_eq!(Session::try_from(&session_item(&session)).unwrap(), session);
        for state in [
            RefreshState::Active,
            RefreshState::Rotated {
                at: 150,
                replaced_by: "ab".repeat(32),
            },
        ] {
            let record = RefreshRecord {
                hash: "cd".repeat(32),
                session_id: session.id.clone(),
                user_id: session.user_id,
                state,
                created_at: 100,
                expires_at: 200,
            };
            assert_eq!(
                RefreshRecord::try_from(&refresh_item(&record)).unwrap(),
                record
            );
        }
    }
}
