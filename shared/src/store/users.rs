//! User items: `pk = "USER#<normalised username>"`, `sk = "PROFILE"`, with
//! `user_id`, `username`, `name`, `password_hash`, `active`, `created_at`,
//! `session_epoch` and `revoked_sessions` (a map: session id → until when).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, Store, StoreError, classify, key, n, s};
use crate::users::{User, UserId, Username};

const USER_PREFIX: &str = "USER#";
const USER_PROFILE: &str = "PROFILE";

pub(super) fn user_key(username: &Username) -> HashMap<String, AttributeValue> {
    key(format!("{USER_PREFIX}{username}"), USER_PROFILE)
}

impl Store {
    /// Reads a user (strongly consistent).
    pub async fn get(&self, username: &Username) -> Result<Option<User>, StoreError> {
        self.get_item(user_key(username))
            .await?
            .as_ref()
            .map(User::try_from)
            .transpose()
    }

    /// Creates a user unless one with that username exists: a conditional write,
    /// so two concurrent creations cannot both succeed.
    pub async fn create(&self, user: &User) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(user_item(user)))
            .condition_expression("attribute_not_exists(pk)")
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
    /// Deactivation ends every session (the epoch moves on, in the same
    /// write), so a reactivation revives none of them, an attacker's included.
    pub async fn set_active(&self, username: &Username, active: bool) -> Result<bool, StoreError> {
        let update = if active {
            "SET active = :active"
        } else {
            "SET active = :active ADD session_epoch :one"
        };
        let one = (":one", n(1));
        let values: &[(&str, AttributeValue)] = if active {
            &[(":active", AttributeValue::Bool(true))]
        } else {
            &[(":active", AttributeValue::Bool(false)), one]
        };
        self.update_user(username, update, "attribute_exists(pk)", values.to_vec())
            .await
    }

    /// Ends every session of `user` at once: their epoch is over. `Ok(false)`
    /// when the user is gone or is someone else now.
    pub async fn end_all_sessions(&self, user: &User) -> Result<bool, StoreError> {
        self.update_user(
            &user.username,
            "ADD session_epoch :one",
            "user_id = :uid",
            vec![(":one", n(1)), (":uid", s(user.id.to_string()))],
        )
        .await
    }

    /// Replaces the hash with one of the same password at a higher cost, unless
    /// the password changed meanwhile (`Ok(false)`).
    pub async fn rehash(&self, user: &User, new_hash: &str) -> Result<bool, StoreError> {
        self.update_user(
            &user.username,
            "SET password_hash = :new",
            "user_id = :uid AND password_hash = :old",
            vec![
                (":new", s(new_hash)),
                (":uid", s(user.id.to_string())),
                (":old", s(&user.password_hash)),
            ],
        )
        .await
    }

    /// A conditional update of a user item; `Ok(false)` when the condition fails.
    async fn update_user(
        &self,
        username: &Username,
        update: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(username)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(
                values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
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

fn user_item(user: &User) -> HashMap<String, AttributeValue> {
    let mut item = user_key(&user.username);
    let revoked = user
        .revoked_sessions
        .iter()
        .map(|(sid, until)| (sid.clone(), n(until)))
        .collect();
    item.extend([
        ("kind".to_owned(), s("user")),
        ("user_id".to_owned(), s(user.id.to_string())),
        ("username".to_owned(), s(user.username.to_string())),
        ("name".to_owned(), s(&user.name)),
        ("password_hash".to_owned(), s(&user.password_hash)),
        ("active".to_owned(), AttributeValue::Bool(user.active)),
        ("created_at".to_owned(), n(user.created_at)),
        ("session_epoch".to_owned(), n(user.session_epoch)),
        // Always present, so a logout can add one entry with a document path.
        ("revoked_sessions".to_owned(), AttributeValue::M(revoked)),
    ]);
    item
}

impl TryFrom<&HashMap<String, AttributeValue>> for User {
    type Error = StoreError;

    fn try_from(map: &HashMap<String, AttributeValue>) -> Result<Self, StoreError> {
        let item = Item(map, "user");
        let revoked_sessions = match map.get("revoked_sessions") {
            None => BTreeMap::new(),
            Some(value) => value
                .as_m()
                .map_err(|_| item.invalid("revoked_sessions"))?
                .iter()
                .map(|(sid, until)| {
                    let until = until.as_n().ok().and_then(|u| u.parse().ok());
                    until
                        .map(|u| (sid.clone(), u))
                        .ok_or_else(|| item.invalid("revoked_sessions"))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(User {
            id: UserId::parse(item.string("user_id")?).ok_or_else(|| item.invalid("user_id"))?,
            username: Username::parse(item.string("username")?)
                .map_err(|_| item.invalid("username"))?,
            name: item.string("name")?.to_owned(),
            password_hash: item.string("password_hash")?.to_owned(),
            active: item.bool("active")?,
            created_at: item.number("created_at")?,
            session_epoch: if map.contains_key("session_epoch") {
                item.number("session_epoch")?
            } else {
                0
            },
            revoked_sessions,
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
        user.session_epoch = 3;
        user.revoked_sessions.insert("sid-1".into(), 1_800_000_000);
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
