//! Federation's items. A round trip: `pk = "OIDC#<hash of its handle>"`,
//! `sk = "OIDC"`, with `provider`, `intent` (`sign_in`, or `connect` or
//! `reauthenticate`, with the caller's `connect_user`, `connect_session` and
//! `connect_epoch`), `state_hash`, `nonce`, `verifier`,
//! `return_to`, `fresh`, `device_hash` (the device proof presented at the
//! start, if any), `created_at` and `expires_at` (TTL; every read
//! checks it); used once, by a conditional delete that returns it. An
//! outside identity's link: `pk = "IDENTITY#<issuer>#<subject>"`, `sk =
//! "IDENTITY"`, with `provider`, `owner` (the user's id), `username` and
//! `created_at`; created only where none exists, so one identity signs in
//! as one user, and listed on its user's item (`identities`), so that the
//! user's deletion deletes it.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem};

use super::sessions::{Cancelled, built, values};
use super::users::user_key;
use super::{Item, Store, StoreError, key, n, s};
use crate::federation::{ExternalId, Identity, Intent, MAX_IDENTITIES, Transaction};
use crate::outbox::{MailJob, Notice};
use crate::users::{User, UserId, Username};

fn transaction_key(handle_hash: &str) -> HashMap<String, AttributeValue> {
    key(format!("OIDC#{handle_hash}"), "OIDC")
}

pub(super) fn identity_key(id: &ExternalId) -> HashMap<String, AttributeValue> {
    key(format!("IDENTITY#{}", id.key()), "IDENTITY")
}

fn transaction_item(tx: &Transaction) -> HashMap<String, AttributeValue> {
    let mut item = transaction_key(&tx.handle_hash);
    item.extend([
        ("kind".to_owned(), s("oidc_transaction")),
        ("provider".to_owned(), s(&tx.provider)),
        ("state_hash".to_owned(), s(&tx.state_hash)),
        ("nonce".to_owned(), s(&tx.nonce)),
        ("verifier".to_owned(), s(&tx.verifier)),
        ("return_to".to_owned(), s(&tx.return_to)),
        ("fresh".to_owned(), AttributeValue::Bool(tx.fresh)),
        ("created_at".to_owned(), n(tx.created_at)),
        ("expires_at".to_owned(), n(tx.expires_at)),
    ]);
    if let Some(hash) = &tx.device_hash {
        item.insert("device_hash".to_owned(), s(hash));
    }
    match &tx.intent {
        Intent::SignIn => {
            item.insert("intent".to_owned(), s("sign_in"));
        }
        Intent::Connect {
            user_id,
            session_id,
            epoch,
        }
        | Intent::Reauthenticate {
            user_id,
            session_id,
            epoch,
        } => {
            let intent = match tx.intent {
                Intent::Connect { .. } => "connect",
                _ => "reauthenticate",
            };
            item.extend([
                ("intent".to_owned(), s(intent)),
                ("connect_user".to_owned(), s(user_id.to_string())),
                ("connect_session".to_owned(), s(session_id)),
                ("connect_epoch".to_owned(), n(epoch)),
            ]);
        }
    }
    item
}

fn transaction_from(
    handle_hash: &str,
    map: &HashMap<String, AttributeValue>,
) -> Result<Transaction, StoreError> {
    let item = Item(map, "oidc transaction");
    let intent = match item.string("intent")? {
        "sign_in" => Intent::SignIn,
        "connect" => Intent::Connect {
            user_id: UserId::parse(item.string("connect_user")?)
                .ok_or_else(|| item.invalid("connect_user"))?,
            session_id: item.string("connect_session")?.to_owned(),
            epoch: item.number("connect_epoch")?,
        },
        "reauthenticate" => Intent::Reauthenticate {
            user_id: UserId::parse(item.string("connect_user")?)
                .ok_or_else(|| item.invalid("connect_user"))?,
            session_id: item.string("connect_session")?.to_owned(),
            epoch: item.number("connect_epoch")?,
        },
        _ => return Err(item.invalid("intent")),
    };
    Ok(Transaction {
        handle_hash: handle_hash.to_owned(),
        provider: item.string("provider")?.to_owned(),
        intent,
        state_hash: item.string("state_hash")?.to_owned(),
        nonce: item.string("nonce")?.to_owned(),
        verifier: item.string("verifier")?.to_owned(),
        return_to: item.string("return_to")?.to_owned(),
        fresh: item.bool("fresh")?,
        device_hash: item.optional_string("device_hash").map(str::to_owned),
        created_at: item.number("created_at")?,
        expires_at: item.number("expires_at")?,
    })
}

fn identity_item(identity: &Identity) -> HashMap<String, AttributeValue> {
    let mut item = identity_key(&identity.id);
    item.extend([
        ("kind".to_owned(), s("identity")),
        ("provider".to_owned(), s(&identity.provider)),
        ("owner".to_owned(), s(identity.user_id.to_string())),
        ("username".to_owned(), s(identity.username.as_str())),
        ("created_at".to_owned(), n(identity.created_at)),
    ]);
    item
}

fn identity_from(
    id: &ExternalId,
    map: &HashMap<String, AttributeValue>,
) -> Result<Identity, StoreError> {
    let item = Item(map, "identity");
    Ok(Identity {
        id: id.clone(),
        provider: item.string("provider")?.to_owned(),
        user_id: UserId::parse(item.string("owner")?).ok_or_else(|| item.invalid("owner"))?,
        username: Username::parse(item.string("username")?)
            .map_err(|_| item.invalid("username"))?,
        created_at: item.number("created_at")?,
    })
}

/// Why a new account through a provider was not created.
#[derive(Debug, thiserror::Error)]
pub enum NewAccountError {
    /// The username is someone's: try another.
    #[error("the username is taken")]
    UsernameTaken,
    /// The identity has an account already (a racer's first sign-in).
    #[error("the identity is linked already")]
    IdentityTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    pub async fn put_transaction(&self, tx: &Transaction) -> Result<(), StoreError> {
        self.put_once(transaction_item(tx))
            .await
            .map_err(|e| match e {
                // 256 random bits do not collide: a retry's own first write.
                StoreError::AlreadyExists => {
                    StoreError::Internal("a round trip's handle exists".into())
                }
                e => e,
            })
    }

    /// Uses up the round trip named by `handle_hash`, if `state_hash` is its
    /// state's: one conditional delete, which gives it back to one caller
    /// alone, however many race. `None` when there is none (used, never
    /// begun), it has expired, or the state is another's: a callback with a
    /// forged state leaves the browser's round trip as it was.
    pub async fn take_transaction(
        &self,
        handle_hash: &str,
        state_hash: &str,
        now: i64,
    ) -> Result<Option<Transaction>, StoreError> {
        let old = self
            .take_item(
                transaction_key(handle_hash),
                "attribute_exists(pk) AND state_hash = :v",
                s(state_hash),
            )
            .await?;
        Ok(old
            .map(|item| transaction_from(handle_hash, &item))
            .transpose()?
            .filter(|tx| tx.is_live(now)))
    }

    /// The link of outside identity `id`, if any.
    pub async fn get_identity(&self, id: &ExternalId) -> Result<Option<Identity>, StoreError> {
        self.get_item(identity_key(id))
            .await?
            .map(|item| identity_from(id, &item))
            .transpose()
    }

    /// A new account (`user`, listing `identity`) and its identity's link,
    /// all or nothing, each only where none exists.
    pub async fn create_federated_user(
        &self,
        user: &User,
        identity: &Identity,
    ) -> Result<(), NewAccountError> {
        let items = vec![
            self.put_new(super::users::user_item(user))?,
            self.put_new(identity_item(identity))?,
        ];
        match self.try_transact(items).await {
            Ok(()) => Ok(()),
            Err(Cancelled::Conditions(failed)) if failed.contains(&1) => {
                Err(NewAccountError::IdentityTaken)
            }
            Err(Cancelled::Conditions(_)) => Err(NewAccountError::UsernameTaken),
            Err(Cancelled::Store(e)) => Err(e.into()),
        }
    }

    /// Links `identity` to `user` (as read), all or nothing: the link, only
    /// where none exists (`AlreadyExists`); the user's list, only while the
    /// user is as read (same id, active, same epoch), holds fewer than
    /// `MAX_IDENTITIES`, and, for a connection the owner asked for, while
    /// the session that asked (`session`) is not logged out (`Conflict`);
    /// and a notice to the verified address, naming `provider`.
    pub async fn connect_identity(
        &self,
        user: &User,
        identity: &Identity,
        session: Option<&str>,
        provider: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut condition = String::from(
            "user_id = :uid AND active = :true AND session_epoch = :epoch \
             AND (attribute_not_exists(identities) OR size(identities) < :max)",
        );
        let mut names = None;
        if let Some(sid) = session {
            condition.push_str(" AND attribute_not_exists(revoked_sessions.#caller)");
            names = Some(HashMap::from([("#caller".to_owned(), sid.to_owned())]));
        }
        let mut items = vec![
            self.put_new(identity_item(identity))?,
            self.update(
                user_key(&user.username),
                "ADD identities :id",
                &condition,
                names,
                values([
                    (":id", AttributeValue::Ss(vec![identity.id.key()])),
                    (":uid", s(user.id.to_string())),
                    (":true", AttributeValue::Bool(true)),
                    (":epoch", n(user.session_epoch)),
                    (":max", n(MAX_IDENTITIES)),
                ]),
            )?,
        ];
        let notice = Notice::IdentityConnected {
            provider: provider.to_owned(),
        };
        if let Some(job) = MailJob::notice_to(user, notice) {
            items.push(self.enqueue_item(&job, now)?);
        }
        match self.try_transact(items).await {
            Ok(()) => Ok(()),
            Err(Cancelled::Conditions(failed)) if failed.contains(&0) => {
                Err(StoreError::AlreadyExists)
            }
            Err(Cancelled::Conditions(_)) => Err(StoreError::Conflict),
            Err(Cancelled::Store(e)) => Err(e),
        }
    }
}

impl Store {
    /// Removes `ids` (links of `user`, as read) all or nothing: their items,
    /// their entries in the user's list, and a notice to the verified
    /// address naming `provider`; while the user is as read (the same
    /// list's size, password and epoch: a concurrent connection,
    /// disconnection or password change wins) and the session that asked
    /// (`session`) is not logged out (`Conflict`). The caller has checked
    /// that another way to sign in remains; the conditions keep it so.
    pub async fn disconnect_identities(
        &self,
        user: &User,
        session: &str,
        ids: &[ExternalId],
        provider: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut items = Vec::with_capacity(ids.len() + 2);
        for id in ids {
            items.push(self.delete_identity_item(id, user)?);
        }
        items.push(self.update(
            user_key(&user.username),
            "DELETE identities :ids",
            "user_id = :uid AND active = :true AND session_epoch = :epoch \
             AND password_hash = :hash AND size(identities) = :count \
             AND attribute_not_exists(revoked_sessions.#caller)",
            Some(HashMap::from([("#caller".to_owned(), session.to_owned())])),
            values([
                (
                    ":ids",
                    AttributeValue::Ss(ids.iter().map(ExternalId::key).collect()),
                ),
                (":uid", s(user.id.to_string())),
                (":true", AttributeValue::Bool(true)),
                (":epoch", n(user.session_epoch)),
                (":hash", s(&user.password_hash)),
                (":count", n(user.identities.len())),
            ]),
        )?);
        let notice = Notice::IdentityDisconnected {
            provider: provider.to_owned(),
        };
        if let Some(job) = MailJob::notice_to(user, notice) {
            items.push(self.enqueue_item(&job, now)?);
        }
        self.transact(items).await
    }

    /// The deletion of `id`'s link to `user`, as one item of a transaction:
    /// only while it is `user`'s.
    pub(super) fn delete_identity_item(
        &self,
        id: &ExternalId,
        user: &User,
    ) -> Result<TransactWriteItem, StoreError> {
        let delete = built(
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(identity_key(id)))
                // A link already gone (never written, or tidied by hand)
                // does not keep its user from being deleted.
                .condition_expression("attribute_not_exists(pk) OR #owner = :uid")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":uid", s(user.id.to_string()))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::Intent;

    #[test]
    fn items_round_trip() {
        let (tx, _) = Transaction::begin(
            "local",
            Intent::Connect {
                user_id: UserId::random(),
                session_id: "sid".into(),
                epoch: 3,
            },
            "/",
            Some("a-device-hash".into()),
            1_000,
        );
        let item = transaction_item(&tx);
        assert!(!item.contains_key("user_id"), "never in the users index");
        assert_eq!(transaction_from(&tx.handle_hash, &item).unwrap(), tx);
        let (tx, _) = Transaction::begin("local", Intent::SignIn, "/", None, 1_000);
        assert_eq!(
            transaction_from(&tx.handle_hash, &transaction_item(&tx)).unwrap(),
            tx
        );
        let identity = Identity {
            id: ExternalId {
                issuer: "https://idp.example".into(),
                subject: "a#b".into(),
            },
            provider: "local".into(),
            user_id: UserId::random(),
            username: Username::parse("alice").unwrap(),
            created_at: 1_000,
        };
        let item = identity_item(&identity);
        assert_eq!(
            item["pk"].as_s().unwrap(),
            "IDENTITY#https://idp.example#a#b"
        );
        assert!(!item.contains_key("user_id"), "never in the users index");
        assert_eq!(identity_from(&identity.id, &item).unwrap(), identity);
    }
}
