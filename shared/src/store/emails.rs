//! Address claims: `pk = "EMAIL#<normalised address>"`, `sk = "EMAIL"`:
//! `user_id`, `username`. Only a verified address has one, written by the
//! verification's transaction on the condition that it is new (or already
//! the same user's): two verifications of one address race to one winner,
//! and an address given but not proved claims nothing, so nobody can squat
//! on an address or learn from registration whether it is in use.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};

use super::sessions::{Cancelled, built, values};
use super::users::user_key;
use super::{Item, Store, StoreError, key, n, s};
use crate::email::Email;
use crate::outbox::{MailJob, Notice};
use crate::tickets::{Proof, Ticket};
use crate::users::{User, UserId, Username};

pub(super) fn claim_key(email: &Email) -> HashMap<String, AttributeValue> {
    key(format!("EMAIL#{email}"), "EMAIL")
}

/// What a verification came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// The address is the user's verified one now.
    Done,
    /// Another user verified it first.
    Taken,
}

impl Store {
    /// The user whose verified address `email` is, if any: the claim, then
    /// the user item, which must still be the claim's user with that
    /// address.
    pub async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let Some(claim) = self.get_item(claim_key(email)).await? else {
            // As many reads as for a claimed address: a code's lookup by
            // address takes as long whether or not it is anyone's.
            self.decoy_user_read().await?;
            return Ok(None);
        };
        let claim = Item(&claim, "address claim");
        let id = UserId::parse(claim.string("user_id")?).ok_or_else(|| claim.invalid("user_id"))?;
        let username =
            Username::parse(claim.string("username")?).map_err(|_| claim.invalid("username"))?;
        Ok(self
            .get(&username)
            .await?
            .filter(|u| u.id == id && u.email.as_ref() == Some(email)))
    }

    /// Makes `email` the address `user` (as read) waits to verify, and asks
    /// the mail function for its verification, all or nothing. `Ok(false)`
    /// when the user is gone, inactive or someone else now.
    pub async fn set_pending_email(
        &self,
        user: &User,
        email: &Email,
        now: i64,
    ) -> Result<bool, StoreError> {
        let job = MailJob::VerifyEmail {
            user_id: user.id,
            username: user.username.clone(),
            email: email.clone(),
        };
        let items = vec![
            self.update(
                user_key(&user.username),
                "SET email_pending = :email",
                "user_id = :uid AND active = :true",
                None,
                values([
                    (":email", s(email.as_str())),
                    (":uid", s(user.id.to_string())),
                    (":true", AttributeValue::Bool(true)),
                ]),
            )?,
            self.enqueue_item(&job, now)?,
        ];
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The verification of `ticket`'s address by `proof` (checked by the
    /// caller against `user`, as read), all or nothing: the ticket used up,
    /// the address claimed, made the user's verified one and no longer
    /// pending, the old address's claim released and its owner told. On the
    /// conditions that the ticket is still this one and live, that the
    /// address is still the pending one and the verified one still as read
    /// (`Conflict`), and that no other user claimed it first (`Taken`).
    pub async fn verify_email(
        &self,
        user: &User,
        ticket: &Ticket,
        proof: &Proof,
        now: i64,
    ) -> Result<Verified, StoreError> {
        let email = &ticket.email;
        let uid = s(user.id.to_string());
        let claim = built(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some({
                    let mut item = claim_key(email);
                    item.extend([
                        ("kind".to_owned(), s("email")),
                        ("user_id".to_owned(), uid.clone()),
                        ("username".to_owned(), s(user.username.as_str())),
                    ]);
                    item
                }))
                .condition_expression("attribute_not_exists(pk) OR user_id = :uid")
                .expression_attribute_values(":uid", uid.clone())
                .build(),
        )?;
        let (same_old, mut vals) = match &user.email {
            Some(old) => (
                "email = :old",
                values([(":old", s(old.as_str()))]).unwrap_or_default(),
            ),
            None => ("attribute_not_exists(email)", HashMap::new()),
        };
        vals.extend([
            (":new".to_owned(), s(email.as_str())),
            (":uid".to_owned(), uid),
            (":true".to_owned(), AttributeValue::Bool(true)),
            (":epoch".to_owned(), n(ticket.epoch)),
        ]);
        let mut items = vec![
            self.consume_ticket(ticket, proof, now)?,
            TransactWriteItem::builder().put(claim).build(),
            self.update(
                user_key(&user.username),
                "SET email = :new REMOVE email_pending",
                &format!(
                    "user_id = :uid AND active = :true AND session_epoch = :epoch \
                     AND email_pending = :new AND {same_old}"
                ),
                None,
                Some(vals),
            )?,
        ];
        if let Some(old) = user.email.as_ref().filter(|old| *old != email) {
            items.push(self.release_claim(old, user)?);
            let notice = MailJob::Notice {
                notice: Notice::EmailChanged {
                    new: email.masked(),
                },
                to: old.clone(),
                username: user.username.clone(),
            };
            items.push(self.enqueue_item(&notice, now)?);
        }
        match self.try_transact(items).await {
            Ok(()) => Ok(Verified::Done),
            Err(Cancelled::Conditions(failed)) if failed == [1] => Ok(Verified::Taken),
            Err(Cancelled::Conditions(_)) => Err(StoreError::Conflict),
            Err(Cancelled::Store(e)) => Err(e),
        }
    }

    /// Removes `user`'s addresses (as read), verified and pending, releases
    /// the claim and tells the old address, all or nothing; `Conflict` when
    /// the verified address changed meanwhile or the user is gone.
    pub async fn remove_email(&self, user: &User, now: i64) -> Result<(), StoreError> {
        let mut vals = HashMap::from([(":uid".to_owned(), s(user.id.to_string()))]);
        let same_old = match &user.email {
            Some(old) => {
                vals.insert(":old".to_owned(), s(old.as_str()));
                "email = :old"
            }
            None => "attribute_not_exists(email)",
        };
        let mut items = vec![self.update(
            user_key(&user.username),
            "REMOVE email, email_pending",
            &format!("user_id = :uid AND {same_old}"),
            None,
            Some(vals),
        )?];
        if let Some(old) = &user.email {
            items.push(self.release_claim(old, user)?);
        }
        if let Some(notice) = MailJob::notice_to(user, Notice::EmailRemoved) {
            items.push(self.enqueue_item(&notice, now)?);
        }
        self.transact(items).await
    }

    /// Deletes `user`'s claim of `email` (one that names anybody else is
    /// left alone), as one item of a transaction.
    pub(super) fn release_claim(
        &self,
        email: &Email,
        user: &User,
    ) -> Result<TransactWriteItem, StoreError> {
        let delete = built(
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(claim_key(email)))
                .condition_expression("attribute_not_exists(pk) OR user_id = :uid")
                .expression_attribute_values(":uid", s(user.id.to_string()))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }
}
