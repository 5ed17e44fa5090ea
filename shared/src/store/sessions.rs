//! Session and refresh-token items.
//!
//! - session: `pk = "SESSION#<sid>"`, `sk = "SESSION"`: `user_id`, `username`,
//!   `epoch` (the user's session epoch at login), `revoked`, `created_at`,
//!   `auth_time` (the latest proof of the password in it), `last_proof` (a
//!   random id of the re-authentication that set it, if one did), `expires_at`
//!   (TTL: the expiry of the family's newest refresh token), `last_used`,
//!   and how and where it began (`method`, `user_agent`, `ip`,
//!   `known_device`). `session_owner` (`<user id>#<epoch>`) puts a live
//!   session in the sparse index `sessions_by_user` (sort key
//!   `created_at`): the owner's list. Ending a session removes it, and an
//!   epoch bump leaves every older one under a key no list reads.
//! - refresh token: `pk = "REFRESH#<sha256 hex>"`, `sk = "REFRESH"`: `session_id`,
//!   `user_id`, `token_state` (`active` | `rotated`), `rotated_at`, `replaced_by`
//!   (the successor's hash), `created_at`, `expires_at` (TTL).
//!
//! Every multi-item change is one DynamoDB transaction with conditions, so a
//! failure or a race leaves no half-done rotation or login behind.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update,
};

use super::throttle::lock_key;
use super::users::user_key;
use super::{Item, Store, StoreError, classify, key, n, s};
use crate::devices::DeviceChange;
use crate::outbox::{MailJob, Notice};
use crate::sessions::{Origin, RefreshRecord, RefreshState, Session, SignIn};
use crate::users::{User, UserId, Username};

const SESSION_PREFIX: &str = "SESSION#";
const SESSION_SK: &str = "SESSION";
const REFRESH_PREFIX: &str = "REFRESH#";
const REFRESH_SK: &str = "REFRESH";
const ACTIVE: &str = "active";
const ROTATED: &str = "rotated";
/// The index of a user's sessions, and its partition key: only session
/// items carry it.
pub const SESSIONS_INDEX: &str = "sessions_by_user";
pub const SESSION_OWNER: &str = "session_owner";
/// Sessions a list shows at most, newest first. Every login begins one, so
/// a user may hold many; the rest end as usual, only unlisted.
pub const MAX_LISTED_SESSIONS: usize = 100;
/// Index items a list reads at most (ended ones awaiting TTL included), so
/// that however many sessions someone piles up, a list stays one bounded
/// read; past it the list says `truncated`.
const MAX_LIST_READ: i32 = 1_000;

/// The index key of a session of `user_id` under `epoch`.
fn owner(user_id: &UserId, epoch: u64) -> String {
    format!("{user_id}#{epoch}")
}

/// Who deletes an account, and so on what condition (`Store::delete_user`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletedBy<'a> {
    /// The owner, who just proved the password in session `sid`: only while
    /// the password, the account's activity and epoch, and that session are
    /// as read. A concurrent password change (its owner taking the account
    /// back), deactivation or end of the session wins.
    Owner { sid: &'a str },
    /// The admin API or `auth-admin`: only while the user is the one read
    /// (not deleted and registered anew meanwhile).
    Operator,
}

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

pub(super) fn values<const N: usize>(
    pairs: [(&str, AttributeValue); N],
) -> Option<HashMap<String, AttributeValue>> {
    Some(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

pub(super) fn built<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Internal(e.to_string()))
}

/// Why a transaction did not happen. A cancelled transaction wrote nothing.
pub(super) enum Cancelled {
    /// These items' conditions failed (indices into the transaction).
    Conditions(Vec<usize>),
    /// Throttled, contended past our retries, or a store error.
    Store(StoreError),
}

/// Attempts of a transaction that DynamoDB cancels for `TransactionConflict`
/// (another write touched one of its items at that moment). A cancelled
/// transaction wrote nothing, so trying again is always safe; the second try
/// then meets the other write's result through its conditions.
const TRANSACTION_ATTEMPTS: usize = 4;

/// What a cancelled transaction means: lost conditions, contention (retried
/// by the caller), or a store error classified as usual.
fn cancellation<R: std::fmt::Debug>(
    err: SdkError<TransactWriteItemsError, R>,
) -> Result<Cancelled, StoreError> {
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        err.as_service_error()
    {
        let reasons = cancelled.cancellation_reasons();
        let code =
            |r: &aws_sdk_dynamodb::types::CancellationReason| r.code().unwrap_or("None").to_owned();
        let codes: Vec<String> = reasons.iter().map(code).filter(|c| c != "None").collect();
        if codes.iter().any(|c| c == "TransactionConflict") {
            return Err(StoreError::Contended);
        }
        if !codes.is_empty() && codes.iter().all(|c| c == "ConditionalCheckFailed") {
            let failed = reasons
                .iter()
                .enumerate()
                .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                .map(|(i, _)| i)
                .collect();
            return Ok(Cancelled::Conditions(failed));
        }
        if codes
            .iter()
            .any(|c| ["ThrottlingError", "ProvisionedThroughputExceeded"].contains(&c.as_str()))
        {
            // DynamoDB reports a throttled transaction this way, not as a
            // ThrottlingException: counted as the dependency's trouble too.
            crate::metrics::dependency_error("dynamodb", "throttled");
            return Ok(Cancelled::Store(StoreError::Unavailable(format!(
                "dynamodb TransactWriteItems: throttled ({})",
                codes.join(",")
            ))));
        }
        return Ok(Cancelled::Store(StoreError::Internal(format!(
            "dynamodb TransactWriteItems: cancelled ({})",
            codes.join(",")
        ))));
    }
    Ok(Cancelled::Store(classify(err)))
}

impl Store {
    /// Writes `items` all or none; a lost condition is `Conflict`.
    pub(super) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        match self.try_transact(items).await {
            Ok(()) => Ok(()),
            Err(Cancelled::Conditions(_)) => Err(StoreError::Conflict),
            Err(Cancelled::Store(e)) => Err(e),
        }
    }

    /// `transact`, saying which conditions failed. Contention is retried.
    pub(super) async fn try_transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), Cancelled> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let Err(err) = result else { return Ok(()) };
            match cancellation(err) {
                Ok(cancelled) => return Err(cancelled),
                Err(StoreError::Contended) if attempt < TRANSACTION_ATTEMPTS => {
                    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 20);
                    let pause = 10 * (1 << attempt) + jitter;
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(Cancelled::Store(e)),
            }
        }
    }

    pub(super) fn put_new(
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

    pub(super) fn update(
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

    /// The condition that `user` (as read) is still the user and still may
    /// hold sessions of its epoch: same id, active, epoch not moved on; and,
    /// for a login, the password it proved still the password.
    pub(super) fn user_unchanged(
        &self,
        user: &User,
        same_password: bool,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut condition =
            String::from("user_id = :uid AND active = :true AND session_epoch = :epoch");
        let mut vals = HashMap::from([
            (":uid".to_owned(), s(user.id.to_string())),
            (":true".to_owned(), AttributeValue::Bool(true)),
            (":epoch".to_owned(), n(user.session_epoch)),
        ]);
        if same_password {
            // A rehash changes the hash but not the password: refreshes do not
            // check it (a password change moves the epoch on anyway).
            condition.push_str(" AND password_hash = :hash");
            vals.insert(":hash".to_owned(), s(&user.password_hash));
            // And a sign-in that found no second factor begins no session
            // once one was confirmed meanwhile (nor the reverse).
            if user.second_factor {
                condition.push_str(" AND second_factor = :true");
            } else {
                // Read as none: absent, or false.
                condition.push_str(
                    " AND (attribute_not_exists(second_factor) OR second_factor = :false)",
                );
                vals.insert(":false".to_owned(), AttributeValue::Bool(false));
            }
        }
        let check = built(
            ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(user_key(&user.username)))
                .condition_expression(condition)
                .set_expression_attribute_values(Some(vals))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// Clears the password-attempt record: the password was just proved.
    pub(super) fn clear_attempts(
        &self,
        username: &Username,
    ) -> Result<TransactWriteItem, StoreError> {
        let delete = built(
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(lock_key(username)))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// A deletion of the item at `key`, as one item of a transaction, on
    /// `condition`.
    pub(super) fn delete_if(
        &self,
        key: HashMap<String, AttributeValue>,
        condition: &str,
        values: Option<HashMap<String, AttributeValue>>,
    ) -> Result<TransactWriteItem, StoreError> {
        let delete = built(
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key))
                .condition_expression(condition)
                .set_expression_attribute_values(values)
                .build(),
        )?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// After a proof of the password: stores a new session and its first
    /// refresh token, issues a device proof and retires the one that
    /// vouched (or, with none, clears the username's attempt record), all or
    /// nothing, on the condition that `user` is as read (a password change,
    /// a deactivation or "log out everywhere" a moment ago: `Conflict`).
    pub async fn start_session(
        &self,
        session: &Session,
        first: &RefreshRecord,
        user: &User,
        device: &DeviceChange<'_>,
    ) -> Result<(), StoreError> {
        self.start_session_with(session, first, user, device, Vec::new())
            .await
    }

    /// `start_session`, with `extra` writes in its transaction (a second
    /// factor's).
    pub(super) async fn start_session_with(
        &self,
        session: &Session,
        first: &RefreshRecord,
        user: &User,
        device: &DeviceChange<'_>,
        extra: Vec<TransactWriteItem>,
    ) -> Result<(), StoreError> {
        let mut items = vec![
            self.put_new(session_item(session))?,
            self.put_new(refresh_item(first))?,
            self.user_unchanged(user, true)?,
        ];
        items.extend(self.device_change(device, &user.username)?);
        // A device that had not signed in before: its owner is told.
        if !session.origin.known_device
            && let Some(notice) = MailJob::notice_to(
                user,
                Notice::NewDevice {
                    device: session.origin.user_agent.clone(),
                },
            )
        {
            items.push(self.enqueue_item(&notice, session.created_at)?);
        }
        items.extend(extra);
        self.transact(items).await
    }

    /// The writes of `change`: the new proof, and the retired one or the
    /// username's attempt record cleared.
    fn device_change(
        &self,
        change: &DeviceChange<'_>,
        username: &Username,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let grace_ends = change.issued.created_at + crate::devices::RETIRED_PROOF_GRACE_SECONDS;
        Ok(vec![
            self.issue_device(change.issued)?,
            match change.retired {
                Some(old) => self.retire_device(&old.hash, old.expires_at.min(grace_ends))?,
                None => self.clear_attempts(username)?,
            },
        ])
    }

    /// A password change, all or nothing: the new hash, the end of every
    /// session and device proof (the epoch moves on), the caller's new
    /// session under the new epoch and its first refresh token, the caller's
    /// new device proof, and the attempt record cleared (the username's, or
    /// the proof's that vouched, retired). On
    /// the condition that `user` is as read: no concurrent change, "log out
    /// everywhere", deactivation or logout of the caller's session
    /// (`caller_sid`) is lost (`Conflict`).
    pub async fn change_password(
        &self,
        user: &User,
        caller_sid: &str,
        new_hash: &str,
        session: &Session,
        first: &RefreshRecord,
        device: &DeviceChange<'_>,
    ) -> Result<(), StoreError> {
        let mut items = vec![
            self.update(
                user_key(&user.username),
                "SET password_hash = :new ADD session_epoch :one",
                "user_id = :uid AND active = :true AND session_epoch = :epoch AND password_hash = :old \
                 AND attribute_not_exists(revoked_sessions.#caller)",
                Some(HashMap::from([("#caller".to_owned(), caller_sid.to_owned())])),
                values([
                    (":new", s(new_hash)),
                    (":one", n(1)),
                    (":uid", s(user.id.to_string())),
                    (":true", AttributeValue::Bool(true)),
                    (":epoch", n(user.session_epoch)),
                    (":old", s(&user.password_hash)),
                ]),
            )?,
            self.put_new(session_item(session))?,
            self.put_new(refresh_item(first))?,
        ];
        items.extend(self.device_change(device, &user.username)?);
        if let Some(notice) = MailJob::notice_to(user, Notice::PasswordChanged) {
            items.push(self.enqueue_item(&notice, session.created_at)?);
        }
        self.transact(items).await
    }

    /// An operator's new password for `user` (as read): the new hash, the end
    /// of every session and device proof (the epoch moves on) and the
    /// username's attempt record cleared (a lockout ends), all or nothing, on
    /// the condition that the user is still the one read (`Conflict`: gone,
    /// or the name registered anew).
    pub async fn set_password(
        &self,
        user: &User,
        new_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut items = vec![
            self.update(
                user_key(&user.username),
                "SET password_hash = :new ADD session_epoch :one",
                "user_id = :uid",
                None,
                values([
                    (":new", s(new_hash)),
                    (":one", n(1)),
                    (":uid", s(user.id.to_string())),
                ]),
            )?,
            self.clear_attempts(&user.username)?,
        ];
        if let Some(notice) = MailJob::notice_to(user, Notice::PasswordSet) {
            items.push(self.enqueue_item(&notice, now)?);
        }
        self.transact(items).await
    }

    /// After a proof of the password within session `sid` of `user` (as
    /// read): the session's `auth_time` becomes `now` and the username's
    /// attempt record is cleared, all or nothing, on the condition that the
    /// session is the user's, not revoked and not past its end (its newest
    /// refresh token's expiry, which its absolute lifetime caps), and the
    /// user is as read (`Conflict`). `proof`, a random id, marks the write
    /// on the session (`last_proof`), for `proof_stored`. The attempts
    /// cleared are the device's (`device`: the hash of the proof that
    /// vouched), else the username's.
    ///
    /// `amr` is what the proof was: the session's tokens say it from now on
    /// (RFC 9470: `auth_time` and `acr` describe the latest proof).
    #[allow(clippy::too_many_arguments)]
    pub async fn reauthenticate(
        &self,
        sid: &str,
        user: &User,
        now: i64,
        proof: &str,
        amr: &[String],
        device: Option<&str>,
    ) -> Result<(), StoreError> {
        self.transact(vec![
            self.proof_on_session(sid, user, now, now, proof, amr, None)?,
            self.user_unchanged(user, true)?,
            match device {
                Some(hash) => self.clear_device_attempts(hash)?,
                None => self.clear_attempts(&user.username)?,
            },
        ])
        .await
    }

    /// A proof made now in session `sid` of `user`'s, as one item of a
    /// transaction: the session's `auth_time` (its latest proof of the
    /// first factor), its `amr`, and `proof` (a random id, for
    /// `proof_stored`), on the condition that the session is the user's,
    /// not revoked and not past its end.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn proof_on_session(
        &self,
        sid: &str,
        user: &User,
        now: i64,
        auth_time: i64,
        proof: &str,
        amr: &[String],
        passkey: Option<&str>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut vals = values([
            (":now", n(now)),
            (":auth_time", n(auth_time)),
            (":proof", s(proof)),
            (":amr", s(amr.join(" "))),
            (":false", AttributeValue::Bool(false)),
            (":uid", s(user.id.to_string())),
        ]);
        let mut set = String::from(
            "SET auth_time = :auth_time, last_used = :now, last_proof = :proof, amr = :amr",
        );
        // A passkey's proof: the session is now that passkey's.
        if let (Some(passkey), Some(vals)) = (passkey, vals.as_mut()) {
            set.push_str(", passkey = :passkey");
            vals.insert(":passkey".to_owned(), s(passkey));
        }
        self.update(
            session_key(sid),
            &set,
            "revoked = :false AND user_id = :uid AND expires_at > :now",
            None,
            vals,
        )
    }

    /// Deletes `user` (as read) and the username's attempt record, all or
    /// nothing: the name is free again at once. Every session ends with the
    /// item: tokens are checked against it, and a new user of the name has
    /// another id. `Conflict` when the condition `by` sets fails.
    pub async fn delete_user(&self, user: &User, by: DeletedBy<'_>) -> Result<(), StoreError> {
        let mut condition = String::from("user_id = :uid");
        let mut vals = HashMap::from([(":uid".to_owned(), s(user.id.to_string()))]);
        let mut names = None;
        // The address as read: its claim goes with the user.
        match &user.email {
            Some(email) => {
                condition.push_str(" AND email = :email");
                vals.insert(":email".to_owned(), s(email.as_str()));
            }
            None => condition.push_str(" AND attribute_not_exists(email)"),
        }
        if user.identities.is_empty() {
            condition.push_str(" AND attribute_not_exists(identities)");
        } else {
            condition.push_str(" AND size(identities) = :identities");
            vals.insert(":identities".to_owned(), n(user.identities.len()));
        }
        if user.passkeys.is_empty() {
            condition.push_str(" AND attribute_not_exists(passkeys)");
        } else {
            condition.push_str(" AND size(passkeys) = :passkeys");
            vals.insert(":passkeys".to_owned(), n(user.passkeys.len()));
        }
        if let DeletedBy::Owner { sid } = by {
            condition.push_str(
                " AND password_hash = :hash AND active = :true AND session_epoch = :epoch \
                 AND attribute_not_exists(revoked_sessions.#caller)",
            );
            vals.extend([
                (":hash".to_owned(), s(&user.password_hash)),
                (":true".to_owned(), AttributeValue::Bool(true)),
                (":epoch".to_owned(), n(user.session_epoch)),
            ]);
            names = Some(HashMap::from([("#caller".to_owned(), sid.to_owned())]));
        }
        let delete = built(
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(user_key(&user.username)))
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(Some(vals))
                .build(),
        )?;
        let mut items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            self.clear_attempts(&user.username)?,
        ];
        if let Some(email) = &user.email {
            items.push(self.release_claim(email, user)?);
        }
        // The outside identities as read go with it: a link connected
        // meanwhile changes the list's size, and the deletion then fails.
        for id in &user.identities {
            items.push(self.delete_identity_item(id, user)?);
        }
        // Its second factor, active or pending, goes with it: no secret
        // outlives its account.
        items.push(self.delete_factor_item(&user.id)?);
        // So do its passkeys, as read: one added meanwhile changes the
        // list's size, and the deletion then fails.
        for id in &user.passkeys {
            items.push(self.delete_passkey_item(id, user)?);
        }
        if let Some(notice) = MailJob::notice_to(user, Notice::AccountDeleted) {
            items.push(self.enqueue_item(&notice, crate::clock::system_now())?);
        }
        self.transact(items).await
    }

    /// Whether session `sid` is stored: after its write reported a failure,
    /// whether it committed all the same (its answer lost, the SDK's retry
    /// then refused by the first attempt's own effects). `false` when unsure.
    pub async fn session_stored(&self, sid: &str) -> bool {
        matches!(self.get_session(sid).await, Ok(Some(_)))
    }

    /// Whether the re-authentication marked `proof` is stored on session
    /// `sid`: after it reported a failure, whether it committed all the
    /// same (its answer lost). `false` when unsure.
    pub async fn proof_stored(&self, sid: &str, proof: &str) -> bool {
        matches!(
            self.get_item(session_key(sid)).await,
            Ok(Some(item)) if item.get("last_proof").and_then(|v| v.as_s().ok()).is_some_and(|p| p == proof)
        )
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
    /// fails with `Conflict` if `old` was rotated meanwhile, the session
    /// revoked, or its user (as read) changed epoch or was deactivated.
    pub async fn rotate(
        &self,
        old: &RefreshRecord,
        new: &RefreshRecord,
        user: &User,
    ) -> Result<(), StoreError> {
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
            self.extend_session(new, user.session_epoch)?,
            self.user_unchanged(user, false)?,
        ])
        .await
    }

    /// The session lives as long as its newest refresh token, if not
    /// revoked, and was last used now. (A session stored before the list
    /// existed joins the owner's index here: `epoch` is the user's, which a
    /// live session's is.)
    fn extend_session(
        &self,
        newest: &RefreshRecord,
        epoch: u64,
    ) -> Result<TransactWriteItem, StoreError> {
        self.update(
            session_key(&newest.session_id),
            "SET expires_at = :exp, last_used = :now, #owner = :owner",
            "revoked = :false AND user_id = :uid",
            Some(HashMap::from([(
                "#owner".to_owned(),
                SESSION_OWNER.to_owned(),
            )])),
            values([
                (":exp", n(newest.expires_at)),
                (":now", n(newest.created_at)),
                (":uid", s(newest.user_id.to_string())),
                (":owner", s(owner(&newest.user_id, epoch))),
                (":false", AttributeValue::Bool(false)),
            ]),
        )
    }

    /// `user`'s live sessions at `now`, newest first, at most
    /// `MAX_LISTED_SESSIONS` (and whether more may be live). Read from the
    /// owner's index under the user's epoch, `MAX_LIST_READ` items at most.
    /// The index is eventually consistent: a session ended a moment ago is
    /// filtered out by `user` (as just read, strongly), not by the index. An
    /// item that cannot be read is left out (and logged), not a failed list.
    pub async fn list_sessions(
        &self,
        user: &User,
        now: i64,
    ) -> Result<(Vec<Session>, bool), StoreError> {
        let mut listed = Vec::new();
        let mut start = None;
        let mut read = 0;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(SESSIONS_INDEX)
                .key_condition_expression("#owner = :owner")
                .filter_expression("revoked = :false AND expires_at > :now")
                .expression_attribute_names("#owner", SESSION_OWNER)
                .expression_attribute_values(":owner", s(owner(&user.id, user.session_epoch)))
                .expression_attribute_values(":false", AttributeValue::Bool(false))
                .expression_attribute_values(":now", n(now))
                .scan_index_forward(false)
                .limit(MAX_LIST_READ - read)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(super::classify)?;
            read += page.scanned_count();
            let mut unreadable = 0;
            for item in page.items() {
                let Ok(session) = Session::try_from(item) else {
                    unreadable += 1;
                    continue;
                };
                if session.is_live(user, now) {
                    if listed.len() == MAX_LISTED_SESSIONS {
                        return Ok((listed, true));
                    }
                    listed.push(session);
                }
            }
            if unreadable > 0 {
                tracing::warn!(user_id = %user.id, unreadable, "session items left out of a list");
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() && read < MAX_LIST_READ => start = Some(key),
                Some(key) if !key.is_empty() => return Ok((listed, true)),
                _ => return Ok((listed, false)),
            }
        }
    }

    /// Ends sessions `sids` of `user` (as just read): their refresh families
    /// stop working, and their access tokens too, at once (the user item
    /// lists them until `access_until`, after which no access token of theirs
    /// can be valid anyway). Expired entries are pruned on the way. The list
    /// holds at most `MAX_REVOKED_SESSIONS` live entries, checked by the write
    /// itself (not against the read): past it, the user's epoch moves on
    /// instead, which ends all their sessions. `Conflict` when a session is
    /// not the user's or the user is gone or someone else now.
    pub async fn revoke_sessions(
        &self,
        sids: &[&str],
        user: &User,
        access_until: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut user = user.clone();
        for _ in 0..REVOKE_ROUNDS {
            let mut items = sids
                .iter()
                .map(|sid| {
                    // Out of the owner's index too: a list never reads it again.
                    self.update(
                        session_key(sid),
                        "SET revoked = :true REMOVE #owner",
                        "user_id = :uid",
                        Some(HashMap::from([(
                            "#owner".to_owned(),
                            SESSION_OWNER.to_owned(),
                        )])),
                        values([
                            (":true", AttributeValue::Bool(true)),
                            (":uid", s(user.id.to_string())),
                        ]),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            items.push(self.list_revoked(sids, &user, access_until, now)?);
            let user_index = items.len() - 1;
            match self.try_transact(items).await {
                Ok(()) => return Ok(()),
                Err(Cancelled::Conditions(failed)) if failed == [user_index] => {
                    // The list changed since it was read (another logout, a
                    // pruning), or the user did: read it again and redo.
                    match self.get(&user.username).await? {
                        Some(fresh) if fresh.id == user.id => user = fresh,
                        _ => return Err(StoreError::Conflict),
                    }
                }
                Err(Cancelled::Conditions(_)) => return Err(StoreError::Conflict),
                Err(Cancelled::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Contended)
    }

    /// The user-item half of `revoke_sessions`.
    fn list_revoked(
        &self,
        sids: &[&str],
        user: &User,
        access_until: i64,
        now: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let added = sids
            .iter()
            .filter(|sid| !user.revoked_sessions.contains_key(**sid))
            .count();
        let live = user
            .revoked_sessions
            .iter()
            .filter(|(sid, until)| **until >= now || sids.contains(&sid.as_str()))
            .count();
        if live + added > MAX_REVOKED_SESSIONS {
            // Every session of the old epoch ends, so none needs listing: the
            // list starts empty, and the next logout ends one session again.
            return self.update(
                user_key(&user.username),
                "SET revoked_sessions = :empty ADD session_epoch :one",
                "user_id = :uid",
                None,
                values([
                    (":one", n(1)),
                    (":uid", s(user.id.to_string())),
                    (":empty", AttributeValue::M(HashMap::new())),
                ]),
            );
        }
        let expired: Vec<&String> = user
            .revoked_sessions
            .iter()
            .filter(|(old, until)| **until < now && !sids.contains(&old.as_str()))
            .map(|(old, _)| old)
            .take(MAX_PRUNED_PER_WRITE)
            .collect();
        let mut names = HashMap::new();
        let mut update = String::from("SET ");
        for (i, sid) in sids.iter().enumerate() {
            if i > 0 {
                update.push_str(", ");
            }
            update.push_str(&format!("revoked_sessions.#s{i} = :until"));
            names.insert(format!("#s{i}"), (*sid).to_owned());
        }
        // The write holds the cap: the list may not have grown since the read
        // (whose live entries were counted above), and what it prunes must
        // still be there.
        let mut condition = String::from("user_id = :uid AND size(revoked_sessions) <= :seen");
        for (i, old) in expired.iter().enumerate() {
            update.push_str(if i == 0 { " REMOVE " } else { ", " });
            update.push_str(&format!("revoked_sessions.#e{i}"));
            condition.push_str(&format!(" AND attribute_exists(revoked_sessions.#e{i})"));
            names.insert(format!("#e{i}"), (*old).clone());
        }
        self.update(
            user_key(&user.username),
            &update,
            &condition,
            Some(names),
            values([
                (":until", n(access_until)),
                (":uid", s(user.id.to_string())),
                (":seen", n(user.revoked_sessions.len())),
            ]),
        )
    }
}

/// Expired entries one write removes at most: each adds to the update and
/// condition expressions, which DynamoDB caps at 4 KB. The rest go with the
/// next writes (the cap counts live entries only).
const MAX_PRUNED_PER_WRITE: usize = 24;

/// Rounds of `revoke_sessions` when the user's list keeps changing under it.
const REVOKE_ROUNDS: usize = 4;

fn session_item(session: &Session) -> HashMap<String, AttributeValue> {
    let mut item = session_key(&session.id);
    item.extend([
        ("kind".to_owned(), s("session")),
        ("user_id".to_owned(), s(session.user_id.to_string())),
        ("username".to_owned(), s(session.username.to_string())),
        ("epoch".to_owned(), n(session.epoch)),
        ("revoked".to_owned(), AttributeValue::Bool(session.revoked)),
        ("created_at".to_owned(), n(session.created_at)),
        ("auth_time".to_owned(), n(session.auth_time)),
        (super::TTL_ATTRIBUTE.to_owned(), n(session.expires_at)),
        (
            SESSION_OWNER.to_owned(),
            s(owner(&session.user_id, session.epoch)),
        ),
        ("last_used".to_owned(), n(session.last_used)),
        ("method".to_owned(), s(session.origin.method.as_str())),
        (
            "known_device".to_owned(),
            AttributeValue::Bool(session.origin.known_device),
        ),
    ]);
    if let Some(user_agent) = &session.origin.user_agent {
        item.insert("user_agent".to_owned(), s(user_agent));
    }
    if let Some(ip) = &session.origin.ip {
        item.insert("ip".to_owned(), s(ip));
    }
    if !session.amr.is_empty() {
        item.insert("amr".to_owned(), s(session.amr.join(" ")));
    }
    if let Some(passkey) = &session.passkey {
        item.insert("passkey".to_owned(), s(passkey));
    }
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
        let created_at = item.number("created_at")?;
        let method = item
            .optional_string("method")
            .map_or(SignIn::Password, |m| {
                SignIn::parse(m).unwrap_or(SignIn::Other)
            });
        Ok(Session {
            id,
            user_id: UserId::parse(item.string("user_id")?)
                .ok_or_else(|| item.invalid("user_id"))?,
            username: Username::parse(item.string("username")?)
                .map_err(|_| item.invalid("username"))?,
            epoch: item.number("epoch")?,
            revoked: item.bool("revoked")?,
            created_at,
            // Sessions stored before re-authentication existed: their login.
            auth_time: match map.get("auth_time") {
                Some(_) => item.number("auth_time")?,
                None => created_at,
            },
            expires_at: item.number(super::TTL_ATTRIBUTE)?,
            // Sessions stored before the list existed: what is known.
            last_used: match map.get("last_used") {
                Some(_) => item.number("last_used")?,
                None => created_at,
            },
            origin: Origin {
                // One this version does not know (written by a later one,
                // before a rollback): shown as such, never a failed refresh.
                method,
                user_agent: item.optional_string("user_agent").map(str::to_owned),
                ip: item.optional_string("ip").map(str::to_owned),
                known_device: map.get("known_device").is_some() && item.bool("known_device")?,
            },
            // Sessions stored before `amr` existed: their sign-in's own.
            amr: match item.optional_string("amr") {
                Some(amr) => amr.split(' ').map(str::to_owned).collect(),
                None => method.amr(),
            },
            passkey: item.optional_string("passkey").map(str::to_owned),
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
            auth_time: 150,
            expires_at: 200,
            last_used: 160,
            origin: Origin {
                method: SignIn::PasswordChange,
                user_agent: Some("curl/8.5".into()),
                ip: Some("192.0.2.7".into()),
                known_device: true,
            },
            amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
            passkey: Some("AQID".into()),
        };
        assert_eq!(Session::try_from(&session_item(&session)).unwrap(), session);
        // One stored before `amr` existed: its sign-in's own.
        let mut old = session_item(&session);
        old.remove("amr");
        assert_eq!(Session::try_from(&old).unwrap().amr, ["pwd"]);
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
