//! Passkeys' items.
//!
//! - A ceremony in flight (`passkeys::Ceremony`): `pk = "CEREMONY#<id
//!   hash>"`, `sk = "CEREMONY"`, `ceremony` (`register`, `sign_in`, `verify`, `second_step`),
//!   `state` (the library's, JSON), `user_id` and `session` (a
//!   registration's), `created_at`, `expires_at` (TTL; every take checks
//!   it). Taken out by one conditional delete: used once, by one caller.
//! - A passkey (`passkeys::StoredPasskey`): `pk = "PASSKEY#<credential
//!   id>"`, `sk = "PASSKEY"`, `owner` (the user id), `name`, `created_at`,
//!   `last_used`, `backup_eligible`, `backed_up`, `counter`, `passkey` (the
//!   library's credential, JSON). One item per credential id: the id
//!   belongs to one account. The owner's user item lists it (`passkeys`, a
//!   string set of credential ids), so that its list is one batch read and
//!   its deletion takes them all.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};

use super::sessions::{Cancelled, values};
use super::users::user_key;
use super::{Item, Store, StoreError, key, n, s};
use crate::devices::DeviceChange;
use crate::outbox::{MailJob, Notice};
use crate::passkeys::{Ceremony, CeremonyKind, MAX_PASSKEYS, StoredPasskey};
use crate::sessions::{RefreshRecord, Session};
use crate::users::{User, UserId};

/// The owner hears of a copied passkey at most this often.
const CLONED_NOTICE_EVERY_SECONDS: i64 = 3600;

fn ceremony_key(hash: &str) -> HashMap<String, AttributeValue> {
    key(format!("CEREMONY#{hash}"), "CEREMONY")
}

pub(super) fn passkey_key(id: &str) -> HashMap<String, AttributeValue> {
    key(format!("PASSKEY#{id}"), "PASSKEY")
}

fn ceremony_item(c: &Ceremony) -> HashMap<String, AttributeValue> {
    let mut item = ceremony_key(&c.hash);
    item.extend([
        ("kind".to_owned(), s("passkey_ceremony")),
        ("ceremony".to_owned(), s(c.kind.as_str())),
        ("state".to_owned(), s(&c.state)),
        ("created_at".to_owned(), n(c.created_at)),
        (super::TTL_ATTRIBUTE.to_owned(), n(c.expires_at)),
    ]);
    if let Some(user) = c.user_id {
        item.insert("user_id".to_owned(), s(user.to_string()));
    }
    if let Some(sid) = &c.session {
        item.insert("session".to_owned(), s(sid));
    }
    item
}

fn ceremony_from(
    hash: &str,
    map: &HashMap<String, AttributeValue>,
) -> Result<Ceremony, StoreError> {
    let item = Item(map, "a passkey ceremony");
    let user_id = match map.get("user_id") {
        Some(_) => {
            Some(UserId::parse(item.string("user_id")?).ok_or_else(|| item.invalid("user_id"))?)
        }
        None => None,
    };
    Ok(Ceremony {
        hash: hash.to_owned(),
        kind: CeremonyKind::parse(item.string("ceremony")?)
            .ok_or_else(|| item.invalid("ceremony"))?,
        user_id,
        session: map
            .get("session")
            .map(|_| item.string("session").map(str::to_owned))
            .transpose()?,
        state: item.string("state")?.to_owned(),
        created_at: item.number("created_at")?,
        expires_at: item.number(super::TTL_ATTRIBUTE)?,
    })
}

fn passkey_item(p: &StoredPasskey) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let credential = serde_json::to_string(&p.passkey)
        .map_err(|e| StoreError::Internal(format!("a passkey does not serialise: {e}")))?;
    let mut item = passkey_key(&p.id);
    item.extend([
        ("kind".to_owned(), s("passkey")),
        ("owner".to_owned(), s(p.user_id.to_string())),
        ("name".to_owned(), s(&p.name)),
        ("created_at".to_owned(), n(p.created_at)),
        (
            "backup_eligible".to_owned(),
            AttributeValue::Bool(p.backup_eligible),
        ),
        ("backed_up".to_owned(), AttributeValue::Bool(p.backed_up)),
        ("counter".to_owned(), n(p.counter)),
        ("uses".to_owned(), n(p.uses)),
        ("passkey".to_owned(), s(credential)),
    ]);
    if let Some(at) = p.last_used {
        item.insert("last_used".to_owned(), n(at));
    }
    Ok(item)
}

/// `session`, begun by the passkey `used`: removing that passkey ends it.
fn of_passkey(session: &Session, used: &StoredPasskey) -> Session {
    Session {
        passkey: Some(used.id.clone()),
        ..session.clone()
    }
}

fn passkey_from(map: &HashMap<String, AttributeValue>) -> Result<StoredPasskey, StoreError> {
    let item = Item(map, "a passkey");
    let id = item
        .string(super::PARTITION_KEY)?
        .strip_prefix("PASSKEY#")
        .ok_or_else(|| item.invalid(super::PARTITION_KEY))?
        .to_owned();
    let flag = |name: &str| match map.get(name) {
        Some(AttributeValue::Bool(b)) => Ok(*b),
        _ => Err(item.invalid(name)),
    };
    Ok(StoredPasskey {
        id,
        user_id: UserId::parse(item.string("owner")?).ok_or_else(|| item.invalid("owner"))?,
        name: item.string("name")?.to_owned(),
        created_at: item.number("created_at")?,
        last_used: map
            .get("last_used")
            .map(|_| item.number("last_used"))
            .transpose()?,
        backup_eligible: flag("backup_eligible")?,
        backed_up: flag("backed_up")?,
        counter: item.number("counter")?,
        // Passkeys stored before uses were counted: none counted yet.
        uses: map
            .get("uses")
            .map(|_| item.number("uses"))
            .transpose()?
            .unwrap_or(0),
        recent: map
            .iter()
            .filter_map(|(name, value)| {
                let sid = name.strip_prefix(crate::passkeys::PROVED_PREFIX)?;
                let AttributeValue::N(at) = value else {
                    return None;
                };
                Some((sid.to_owned(), at.parse().ok()?))
            })
            .collect(),
        passkey: serde_json::from_str(item.string("passkey")?)
            .map_err(|_| item.invalid("passkey"))?,
    })
}

impl Store {
    pub async fn put_ceremony(&self, ceremony: &Ceremony) -> Result<(), StoreError> {
        self.put_once(ceremony_item(ceremony))
            .await
            .map_err(|e| match e {
                // 256 random bits do not collide: a retry's own first write.
                StoreError::AlreadyExists => StoreError::Internal("a ceremony's id exists".into()),
                e => e,
            })
    }

    /// Uses up the ceremony `hash` of `kind`: one conditional delete, which
    /// gives it to one caller alone, however many race. `None` when there
    /// is none (used, never begun), it is of another kind, or it has
    /// expired (then it is gone all the same).
    pub async fn take_ceremony(
        &self,
        hash: &str,
        kind: CeremonyKind,
        now: i64,
    ) -> Result<Option<Ceremony>, StoreError> {
        let old = self
            .take_item(
                ceremony_key(hash),
                "attribute_exists(pk) AND ceremony = :v",
                s(kind.as_str()),
            )
            .await?;
        Ok(old
            .map(|item| ceremony_from(hash, &item))
            .transpose()?
            .filter(|c| c.is_live(now)))
    }

    /// The passkey of credential `id`, whoever holds it.
    pub async fn get_passkey(&self, id: &str) -> Result<Option<StoredPasskey>, StoreError> {
        self.get_item(passkey_key(id))
            .await?
            .as_ref()
            .map(passkey_from)
            .transpose()
    }

    /// `user`'s passkeys (as its item lists them), oldest first: one batch
    /// read, strongly consistent.
    pub async fn passkeys_of(&self, user: &User) -> Result<Vec<StoredPasskey>, StoreError> {
        if user.passkeys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = user.passkeys.iter().map(|id| passkey_key(id)).collect();
        let mut request = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        );
        let mut found = Vec::new();
        // At most MAX_PASSKEYS keys: one request, and whatever DynamoDB
        // leaves unprocessed under load asked again.
        for _ in 0..3 {
            let Some(keys) = request.take() else { break };
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, keys)
                .send()
                .await
                .map_err(super::classify)?;
            for item in output
                .responses
                .unwrap_or_default()
                .remove(&self.table)
                .unwrap_or_default()
            {
                found.push(passkey_from(&item)?);
            }
            request = output
                .unprocessed_keys
                .and_then(|mut left| left.remove(&self.table))
                .filter(|left| !left.keys.is_empty());
        }
        if request.is_some() {
            return Err(StoreError::Unavailable(
                "DynamoDB left passkeys unread".into(),
            ));
        }
        found.retain(|p| p.user_id == user.id);
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(found)
    }

    /// Adds `passkey` to `user` (as read), all or nothing: its item, only
    /// where no item of its credential id exists (`AlreadyExists`: an id
    /// belongs to one account); the user's list, only while the user is as
    /// read (same id, active, same epoch), holds fewer than `MAX_PASSKEYS`,
    /// and the session that asked (`session`) is not logged out
    /// (`Conflict`); and a notice to the verified address.
    pub async fn add_passkey(
        &self,
        user: &User,
        session: &str,
        passkey: &StoredPasskey,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut items = vec![
            self.put_new(passkey_item(passkey)?)?,
            self.update(
                user_key(&user.username),
                "ADD passkeys :id",
                "user_id = :uid AND active = :true AND session_epoch = :epoch \
                 AND (attribute_not_exists(passkeys) OR size(passkeys) < :max) \
                 AND attribute_not_exists(revoked_sessions.#caller)",
                Some(HashMap::from([("#caller".to_owned(), session.to_owned())])),
                values([
                    (":id", AttributeValue::Ss(vec![passkey.id.clone()])),
                    (":uid", s(user.id.to_string())),
                    (":true", AttributeValue::Bool(true)),
                    (":epoch", n(user.session_epoch)),
                    (":max", n(MAX_PASSKEYS)),
                ]),
            )?,
        ];
        let notice = Notice::PasskeyAdded {
            name: passkey.name.clone(),
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

    /// Renames `user`'s passkey `id`: `false` when it is not theirs (or
    /// gone).
    pub async fn rename_passkey(
        &self,
        user: &User,
        id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(passkey_key(id)))
            .update_expression("SET #name = :name")
            .condition_expression("attribute_exists(pk) AND #owner = :uid")
            .expression_attribute_names("#name", "name")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":name", s(name))
            .expression_attribute_values(":uid", s(user.id.to_string()))
            .send()
            .await;
        super::condition_held(result)
    }

    /// Removes `passkey` (one of `user`'s, as read) all or nothing: its
    /// item, its entry in the user's list, and a notice; while the user is
    /// as read (the same passkeys, outside identities and password, and
    /// epoch: a concurrent addition, removal or password change wins), the
    /// passkey not proved since it was read (its `uses`: a sign-in since
    /// may have begun a session the caller did not end), and the session
    /// that asked (`session`) is not logged out (`Conflict`). With
    /// `every_session_ends`, the user's epoch moves on: every session ends,
    /// and no proof since the read matters.
    /// The caller has checked that another way to sign in remains; the
    /// conditions keep it so.
    pub async fn remove_passkey(
        &self,
        user: &User,
        session: &str,
        passkey: &StoredPasskey,
        every_session_ends: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        // As read: a proof since (`uses` moved) may have begun a session
        // the caller's list did not hold.
        // Every session ending, no session can escape: no need.
        let unused_since = match (every_session_ends, passkey.uses) {
            (true, _) => "",
            (false, 0) => " AND (attribute_not_exists(#uses) OR #uses = :uses)",
            (false, _) => " AND #uses = :uses",
        };
        let mut delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .set_key(Some(passkey_key(&passkey.id)))
            .condition_expression(format!("#owner = :uid{unused_since}"))
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":uid", s(user.id.to_string()));
        if !every_session_ends {
            delete = delete
                .expression_attribute_names("#uses", "uses")
                .expression_attribute_values(":uses", n(passkey.uses));
        }
        let delete = super::sessions::built(delete.build())?;
        let mut items = vec![
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .delete(delete)
                .build(),
            self.update(
                user_key(&user.username),
                if every_session_ends {
                    "DELETE passkeys :id ADD session_epoch :one"
                } else {
                    "DELETE passkeys :id"
                },
                "user_id = :uid AND active = :true AND session_epoch = :epoch \
                 AND password_hash = :hash AND size(passkeys) = :count \
                 AND (attribute_not_exists(identities) OR size(identities) = :identities) \
                 AND attribute_not_exists(revoked_sessions.#caller)",
                Some(HashMap::from([("#caller".to_owned(), session.to_owned())])),
                values([
                    (":id", AttributeValue::Ss(vec![passkey.id.clone()])),
                    (":uid", s(user.id.to_string())),
                    (":true", AttributeValue::Bool(true)),
                    (":epoch", n(user.session_epoch)),
                    (":hash", s(&user.password_hash)),
                    (":count", n(user.passkeys.len())),
                    (":identities", n(user.identities.len())),
                ])
                .map(|mut vals| {
                    if every_session_ends {
                        vals.insert(":one".to_owned(), n(1));
                    }
                    vals
                }),
            )?,
        ];
        let notice = Notice::PasskeyRemoved {
            name: passkey.name.clone(),
        };
        if let Some(job) = MailJob::notice_to(user, notice) {
            items.push(self.enqueue_item(&job, now)?);
        }
        self.transact(items).await
    }

    /// A sign-in with `user`'s passkey `read` (as read), which the library
    /// accepted as `used`: a session as a login's (`start_session`), and
    /// the passkey's new counter, flags and last use, on the conditions
    /// that it is still there and still the user's, and that its counter
    /// moved forward from what is stored (of two racers with clones of one
    /// hardware key, one wins; a passkey that keeps no counter shows 0
    /// each time) (`Conflict`).
    pub async fn start_session_by_passkey(
        &self,
        session: &Session,
        first: &RefreshRecord,
        user: &User,
        device: &DeviceChange<'_>,
        used: &StoredPasskey,
    ) -> Result<(), StoreError> {
        let write = self.passkey_used(user, used, &session.id, session.created_at)?;
        self.start_session_with(&of_passkey(session, used), first, user, device, vec![write])
            .await
    }

    /// `start_session_by_passkey` as the second step of a sign-in whose
    /// first step left `ticket`: the ticket used up in the same
    /// transaction, on the condition that it is still there and live
    /// (`Conflict`: a racer's second step, a code's or a passkey's, won).
    pub async fn start_session_by_passkey_after(
        &self,
        session: &Session,
        first: &RefreshRecord,
        user: &User,
        device: &DeviceChange<'_>,
        used: &StoredPasskey,
        ticket: &crate::mfa::MfaTicket,
    ) -> Result<(), StoreError> {
        let writes = vec![
            self.passkey_used(user, used, &session.id, session.created_at)?,
            self.ticket_used(ticket, session.created_at)?,
        ];
        self.start_session_with(&of_passkey(session, used), first, user, device, writes)
            .await
    }

    /// A proof made now with `user`'s passkey within session `sid`
    /// (`passkeys`' re-authentication): the session's new `auth_time`
    /// and `amr` (`proof` marks it, for `proof_stored`), and the passkey's
    /// counter as at a sign-in, all or nothing, while the session is live
    /// and the user's, the account as read, and the passkey still theirs
    /// with a counter that moved forward (`Conflict`).
    pub async fn reauthenticate_by_passkey(
        &self,
        sid: &str,
        user: &User,
        used: &StoredPasskey,
        amr: &[String],
        proof: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.transact(vec![
            self.proof_on_session(sid, user, now, now, proof, amr, Some(&used.id))?,
            self.user_unchanged(user, false)?,
            self.passkey_used(user, used, sid, now)?,
        ])
        .await
    }

    /// The passkey `used` (as the library left it after a sign-in) written
    /// back, as one item of a transaction: only while it is still there
    /// and `user`'s, and its counter moved forward from what is stored
    /// (or stays 0, for one that keeps no counter).
    fn passkey_used(
        &self,
        user: &User,
        used: &StoredPasskey,
        sid: &str,
        now: i64,
    ) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, StoreError> {
        let counter = if used.counter == 0 {
            "#counter = :counter"
        } else {
            "#counter < :counter"
        };
        let mut vals = values([
            (":uid", s(user.id.to_string())),
            (":counter", n(used.counter)),
            (":eligible", AttributeValue::Bool(used.backup_eligible)),
            (":backed", AttributeValue::Bool(used.backed_up)),
            (":now", n(used.last_used.unwrap_or(now))),
            (":one", n(1)),
        ]);
        let credential = serde_json::to_string(&used.passkey)
            .map_err(|e| StoreError::Internal(format!("a passkey does not serialise: {e}")))?;
        if let Some(vals) = vals.as_mut() {
            vals.insert(":passkey".to_owned(), s(credential));
        }
        // The session it proves, marked on it for a removal to end; those
        // marked before the window forgotten on the way.
        let mut names = HashMap::from([
            ("#owner".to_owned(), "owner".to_owned()),
            ("#counter".to_owned(), "counter".to_owned()),
            ("#uses".to_owned(), "uses".to_owned()),
            (
                "#proved".to_owned(),
                format!("{}{sid}", crate::passkeys::PROVED_PREFIX),
            ),
        ]);
        let forgotten: Vec<String> = used
            .recent
            .iter()
            .filter(|(old, at)| old != sid && *at < now - crate::passkeys::RECENT_PROOFS)
            .enumerate()
            .map(|(i, (old, _))| {
                let name = format!("#old{i}");
                names.insert(
                    name.clone(),
                    format!("{}{old}", crate::passkeys::PROVED_PREFIX),
                );
                name
            })
            .collect();
        let remove = if forgotten.is_empty() {
            String::new()
        } else {
            format!(" REMOVE {}", forgotten.join(", "))
        };
        self.update(
            passkey_key(&used.id),
            &format!(
                "SET #counter = :counter, backup_eligible = :eligible, backed_up = :backed, \
                 last_used = :now, passkey = :passkey, #proved = :now ADD #uses :one{remove}"
            ),
            &format!("attribute_exists(pk) AND #owner = :uid AND {counter}"),
            Some(names),
            vals,
        )
    }

    /// Tells `user` that their passkey `passkey` showed a counter that went
    /// backwards (a copy of it), at most once an hour per passkey (marked
    /// on its item, in the notice's transaction): whoever holds a copy
    /// cannot fill the owner's mailbox. `false` when not sent (told within
    /// the hour, no verified address, or the passkey gone).
    pub async fn notice_cloned_passkey(
        &self,
        user: &User,
        passkey: &StoredPasskey,
        now: i64,
    ) -> Result<bool, StoreError> {
        let Some(job) = MailJob::notice_to(
            user,
            Notice::PasskeyCloned {
                name: passkey.name.clone(),
            },
        ) else {
            return Ok(false);
        };
        let items = vec![
            self.update(
                passkey_key(&passkey.id),
                "SET cloned_noticed_at = :now",
                "attribute_exists(pk) AND #owner = :uid \
                 AND (attribute_not_exists(cloned_noticed_at) OR cloned_noticed_at < :since)",
                Some(HashMap::from([("#owner".to_owned(), "owner".to_owned())])),
                values([
                    (":now", n(now)),
                    (":since", n(now - CLONED_NOTICE_EVERY_SECONDS)),
                    (":uid", s(user.id.to_string())),
                ]),
            )?,
            self.enqueue_item(&job, now)?,
        ];
        match self.try_transact(items).await {
            Ok(()) => Ok(true),
            Err(Cancelled::Conditions(_)) => Ok(false),
            Err(Cancelled::Store(e)) => Err(e),
        }
    }

    /// The deletion of passkey `id` of `user`, as one item of a
    /// transaction: only while it is `user`'s (or already gone).
    pub(super) fn delete_passkey_item(
        &self,
        id: &str,
        user: &User,
    ) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, StoreError> {
        let delete = super::sessions::built(
            aws_sdk_dynamodb::types::Delete::builder()
                .table_name(&self.table)
                .set_key(Some(passkey_key(id)))
                .condition_expression("attribute_not_exists(pk) OR #owner = :uid")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":uid", s(user.id.to_string()))
                .build(),
        )?;
        Ok(aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .delete(delete)
            .build())
    }
}
