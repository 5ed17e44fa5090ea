//! Ticket items (`tickets`): `pk = "TICKET#<purpose>#<user id>"`, `sk =
//! "TICKET"`: `username`, `epoch`, `password` (a fingerprint of the hash),
//! `email`, `link_hash`, `code_hash`, `code_failures`, `created_at`,
//! `expires_at` (TTL; every read checks it). One per purpose and user: a
//! new one overwrites the old. A ticket is consumed by a conditional delete
//! inside the transaction of its effect (the reset, here; the
//! verification, in `emails`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem};

use super::sessions::{built, values};
use super::users::user_key;
use super::{Item, Store, StoreError, key, n, s};
use crate::email::Email;
use crate::outbox::MailJob;
use crate::tickets::{MAX_CODE_FAILURES, Proof, Purpose, Ticket};
use crate::users::{User, UserId, Username};

fn ticket_key(purpose: Purpose, user: UserId) -> HashMap<String, AttributeValue> {
    key(format!("TICKET#{}#{user}", purpose.as_str()), "TICKET")
}

fn ticket_item(ticket: &Ticket) -> HashMap<String, AttributeValue> {
    let mut item = ticket_key(ticket.purpose, ticket.user_id);
    item.extend([
        ("kind".to_owned(), s("ticket")),
        ("username".to_owned(), s(ticket.username.as_str())),
        ("epoch".to_owned(), n(ticket.epoch)),
        ("password".to_owned(), s(&ticket.password)),
        ("email".to_owned(), s(ticket.email.as_str())),
        ("link_hash".to_owned(), s(&ticket.link_hash)),
        ("code_hash".to_owned(), s(&ticket.code_hash)),
        ("code_failures".to_owned(), n(ticket.code_failures)),
        ("created_at".to_owned(), n(ticket.created_at)),
        ("expires_at".to_owned(), n(ticket.expires_at)),
    ]);
    item
}

fn ticket_from(
    purpose: Purpose,
    user_id: UserId,
    map: &HashMap<String, AttributeValue>,
) -> Result<Ticket, StoreError> {
    let item = Item(map, "ticket");
    Ok(Ticket {
        purpose,
        user_id,
        username: Username::parse(item.string("username")?)
            .map_err(|_| item.invalid("username"))?,
        epoch: item.number("epoch")?,
        password: item.string("password")?.to_owned(),
        email: Email::parse(item.string("email")?).map_err(|_| item.invalid("email"))?,
        link_hash: item.string("link_hash")?.to_owned(),
        code_hash: item.string("code_hash")?.to_owned(),
        code_failures: item.number("code_failures")?,
        created_at: item.number("created_at")?,
        expires_at: item.number("expires_at")?,
    })
}

impl Store {
    /// Stores `ticket`, replacing any earlier one of its purpose and user.
    pub async fn put_ticket(&self, ticket: &Ticket) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(ticket_item(ticket)))
            .send()
            .await
            .map_err(super::classify)?;
        Ok(())
    }

    /// The live ticket of `purpose` for `user`, if any (read strongly).
    pub async fn get_ticket(
        &self,
        purpose: Purpose,
        user: UserId,
        now: i64,
    ) -> Result<Option<Ticket>, StoreError> {
        Ok(self
            .get_item(ticket_key(purpose, user))
            .await?
            .map(|item| ticket_from(purpose, user, &item))
            .transpose()?
            .filter(|t| t.is_live(now)))
    }

    /// Counts a wrong code against `ticket` (as read): one conditional
    /// update, so however many guesses race, no more than
    /// `MAX_CODE_FAILURES` are ever counted as allowed. `Ok(false)` when the
    /// ticket is gone, replaced, or its code void already.
    pub async fn count_code_failure(&self, ticket: &Ticket) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(ticket_key(ticket.purpose, ticket.user_id)))
            .update_expression("ADD code_failures :one")
            .condition_expression("link_hash = :link AND code_failures < :max")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":link", s(&ticket.link_hash))
            .expression_attribute_values(":max", n(MAX_CODE_FAILURES))
            .send()
            .await;
        super::condition_held(result)
    }

    /// A read of a ticket no user has: what a code's lookup reads in
    /// place of a ticket when its account does not exist.
    pub async fn decoy_ticket_read(&self, purpose: Purpose) -> Result<(), StoreError> {
        self.get_item(ticket_key(purpose, UserId::random()))
            .await
            .map(drop)
    }

    /// `count_code_failure`'s conditional update on a ticket of `purpose`
    /// no user has (the key kind the caller's role may touch): its
    /// condition fails and nothing is written. A wrong code costs this one
    /// write when there is no ticket to count it against.
    pub async fn decoy_code_failure(&self, purpose: Purpose) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(ticket_key(purpose, UserId::random())))
            .update_expression("ADD code_failures :one")
            .condition_expression("link_hash = :link AND code_failures < :max")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":link", s("decoy"))
            .expression_attribute_values(":max", n(MAX_CODE_FAILURES))
            .send()
            .await;
        super::condition_held(result).map(drop)
    }

    /// The deletion that uses `ticket` (as read) up, as one item of its
    /// effect's transaction: only this very ticket (not one that replaced
    /// it), only while live, and by code only while the code is not void.
    pub(super) fn consume_ticket(
        &self,
        ticket: &Ticket,
        proof: &Proof,
        now: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut condition = String::from("link_hash = :link AND expires_at > :now");
        let mut vals = HashMap::from([
            (":link".to_owned(), s(&ticket.link_hash)),
            (":now".to_owned(), n(now)),
        ]);
        if let Proof::Code(_) = proof {
            condition.push_str(" AND code_failures < :max");
            vals.insert(":max".to_owned(), n(MAX_CODE_FAILURES));
        }
        let delete = built(
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(ticket_key(ticket.purpose, ticket.user_id)))
                .condition_expression(condition)
                .set_expression_attribute_values(Some(vals))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// A password reset by `ticket` (checked against `proof` and `user`, as
    /// read, by the caller), all or nothing: the ticket used up, the new
    /// hash, the end of every session and device proof (the epoch moves
    /// on), the username's attempt record cleared (a lockout ends), and the
    /// notice to the verified address. On the conditions that the ticket is
    /// still this one and live, and that `user` still has the epoch and
    /// password the ticket was issued under, and the address it went to
    /// still the verified one (`Conflict`: a racer used it, a newer request
    /// replaced it, or the password or the address changed meanwhile).
    pub async fn reset_password(
        &self,
        user: &User,
        ticket: &Ticket,
        proof: &Proof,
        new_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut items = vec![
            self.consume_ticket(ticket, proof, now)?,
            self.update(
                user_key(&user.username),
                "SET password_hash = :new ADD session_epoch :one",
                "user_id = :uid AND active = :true AND session_epoch = :epoch AND password_hash = :old \
                 AND email = :email",
                None,
                values([
                    (":new", s(new_hash)),
                    (":one", n(1)),
                    (":uid", s(user.id.to_string())),
                    (":true", AttributeValue::Bool(true)),
                    (":epoch", n(ticket.epoch)),
                    (":old", s(&user.password_hash)),
                    (":email", s(ticket.email.as_str())),
                ]),
            )?,
            self.clear_attempts(&user.username)?,
        ];
        if let Some(notice) = MailJob::notice_to(user, crate::outbox::Notice::PasswordReset) {
            items.push(self.enqueue_item(&notice, now)?);
        }
        self.transact(items).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_item_round_trips() {
        let user = User::new(Username::parse("alice").unwrap(), "A".into(), "h".into());
        let email = Email::parse("alice@example.com").unwrap();
        let (mut ticket, _) = Ticket::issue(Purpose::Reset, &user, email, 1_000);
        ticket.code_failures = 2;
        let item = ticket_item(&ticket);
        assert_eq!(
            item["pk"].as_s().unwrap(),
            &format!("TICKET#reset#{}", user.id)
        );
        assert!(!item.contains_key("user_id"), "never in the users index");
        assert_eq!(ticket_from(Purpose::Reset, user.id, &item).unwrap(), ticket);
    }
}
