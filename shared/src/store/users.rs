//! User items: `pk = "USER#<normalised username>"`, `sk = "PROFILE"`, with
//! `user_id`, `username`, `name`, `password_hash`, `active`, `created_at`,
//! `session_epoch`, `revoked_sessions` (a map: session id → until when) and
//! `roles` (a string set, absent when empty: DynamoDB has no empty sets),
//! `email` (the verified address) and `email_pending` (one given, not yet
//! verified), each absent when there is none, and `identities` (a string
//! set of `<issuer>#<subject>`: the outside identities that sign in as the
//! user, each with its `IDENTITY#` item; absent when none), and
//! `second_factor` (true while a confirmed second factor guards sign-in,
//! its `FACTOR#` item beside; absent when none), and `passkeys` (a string
//! set of credential ids, each with its `PASSKEY#` item; absent when none).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{Item, Store, StoreError, classify, key, n, s};
use crate::permissions::{MAX_ROLES, Role};
use crate::users::ExternalId;
use crate::users::{User, UserId, Username};

/// What a grant of a role came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleGrant {
    /// The user holds the role now (granted, or held already).
    Granted,
    /// The user holds `MAX_ROLES` others already.
    TooManyRoles,
    /// The user is gone, or the username is someone else's now.
    Gone,
}

/// The index of users by id: its partition key is the user's id, and its
/// sort key `session_epoch`, which only user items carry (sessions and
/// device proofs name theirs `epoch`), so it holds users alone: no session,
/// refresh token or device proof, though they carry `user_id`, writes to it.
/// Keys only: a lookup then reads the user item itself, strongly.
pub const USERS_BY_ID_INDEX: &str = "users_by_id";
pub const USERS_BY_ID_KEY: &str = "user_id";
pub const USERS_BY_ID_SORT: &str = "session_epoch";

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

    /// A read of a user item no username can name (`~` is not allowed in
    /// one): what a lookup reads in place of a user that does not exist.
    pub async fn decoy_user_read(&self) -> Result<(), StoreError> {
        self.get_item(key(
            format!("{USER_PREFIX}~{}", UserId::random()),
            USER_PROFILE,
        ))
        .await
        .map(drop)
    }

    /// Finds a user by id: one query of `users_by_id` (keys only; no scan),
    /// then the user item read strongly and checked to be theirs still. The
    /// index trails the table by a moment: a user created a second ago may
    /// not be found yet.
    pub async fn get_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let found = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(USERS_BY_ID_INDEX)
            .key_condition_expression("#id = :id")
            .expression_attribute_names("#id", USERS_BY_ID_KEY)
            .expression_attribute_values(":id", s(id.to_string()))
            .send()
            .await
            .map_err(classify)?;
        // One item: ids are random. The index trails the table, so its entry
        // may name a user deleted a moment ago, or a name since taken by
        // someone else: the user item decides.
        for keys in found.items() {
            let Some(username) = keys
                .get("pk")
                .and_then(|pk| pk.as_s().ok())
                .and_then(|pk| pk.strip_prefix(USER_PREFIX))
                .and_then(|name| Username::parse(name).ok())
            else {
                continue;
            };
            if let Some(user) = self.get(&username).await?.filter(|u| u.id == id) {
                return Ok(Some(user));
            }
        }
        Ok(None)
    }

    /// Creates a user unless one with that username exists: a conditional write,
    /// so two concurrent creations cannot both succeed. A user created with
    /// an address to verify gets its verification asked for in the same
    /// transaction.
    pub async fn create(&self, user: &User) -> Result<(), StoreError> {
        let Some(email) = &user.email_pending else {
            return self.put_once(user_item(user)).await;
        };
        let job = crate::outbox::MailJob::VerifyEmail {
            user_id: user.id,
            username: user.username.clone(),
            email: email.clone(),
        };
        let items = vec![
            self.put_new(user_item(user))?,
            self.enqueue_item(&job, user.created_at)?,
        ];
        match self.try_transact(items).await {
            Ok(()) => Ok(()),
            Err(super::sessions::Cancelled::Conditions(_)) => Err(StoreError::AlreadyExists),
            Err(super::sessions::Cancelled::Store(e)) => Err(e),
        }
    }

    /// Grants `role` to `user` (as read): one conditional write that adds it
    /// to the set unless the user holds `MAX_ROLES` others already.
    pub async fn grant_role(&self, user: &User, role: &Role) -> Result<RoleGrant, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(&user.username)))
            .update_expression("ADD #roles :role")
            .condition_expression(
                "user_id = :uid AND (attribute_not_exists(#roles) OR contains(#roles, :name) OR size(#roles) < :max)",
            )
            // ROLES is one of DynamoDB's reserved words.
            .expression_attribute_names("#roles", "roles")
            .expression_attribute_values(":role", AttributeValue::Ss(vec![role.to_string()]))
            .expression_attribute_values(":name", s(role.as_str()))
            .expression_attribute_values(":uid", s(user.id.to_string()))
            .expression_attribute_values(":max", n(MAX_ROLES))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(RoleGrant::Granted),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(lost)) => {
                    let same_user = lost
                        .item()
                        .and_then(|item| item.get("user_id"))
                        .and_then(|id| id.as_s().ok())
                        .is_some_and(|id| *id == user.id.to_string());
                    Ok(if same_user {
                        RoleGrant::TooManyRoles
                    } else {
                        RoleGrant::Gone
                    })
                }
                _ => Err(classify(err)),
            },
        }
    }

    /// Takes `role` from `user` (as read); `Ok(false)` when the user is gone
    /// or someone else now. Taking a role not held is not an error.
    pub async fn revoke_role(&self, user: &User, role: &Role) -> Result<bool, StoreError> {
        self.update_user(
            &user.username,
            "DELETE #roles :role",
            "user_id = :uid",
            vec![
                (":role", AttributeValue::Ss(vec![role.to_string()])),
                (":uid", s(user.id.to_string())),
            ],
        )
        .await
    }

    /// Activates or deactivates `user` (as read); `Ok(false)` when the user is
    /// gone or someone else now. Deactivation ends every session (the epoch
    /// moves on, in the same write), so a reactivation revives none of them,
    /// an attacker's included.
    pub async fn set_active(&self, user: &User, active: bool) -> Result<bool, StoreError> {
        let update = if active {
            "SET active = :active"
        } else {
            "SET active = :active ADD session_epoch :one"
        };
        let mut values = vec![
            (":active", AttributeValue::Bool(active)),
            (":uid", s(user.id.to_string())),
        ];
        if !active {
            values.push((":one", n(1)));
        }
        self.update_user(&user.username, update, "user_id = :uid", values)
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
            .set_expression_attribute_names(
                update
                    .contains("#roles")
                    .then(|| HashMap::from([("#roles".to_owned(), "roles".to_owned())])),
            )
            .set_expression_attribute_values(Some(
                values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
            .send()
            .await;
        super::condition_held(result)
    }
}

pub(super) fn user_item(user: &User) -> HashMap<String, AttributeValue> {
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
    if !user.roles.is_empty() {
        let roles = user.roles.iter().map(Role::to_string).collect();
        item.insert("roles".to_owned(), AttributeValue::Ss(roles));
    }
    if let Some(email) = &user.email {
        item.insert("email".to_owned(), s(email.as_str()));
    }
    if let Some(email) = &user.email_pending {
        item.insert("email_pending".to_owned(), s(email.as_str()));
    }
    if !user.identities.is_empty() {
        let keys = user.identities.iter().map(ExternalId::key).collect();
        item.insert("identities".to_owned(), AttributeValue::Ss(keys));
    }
    if user.second_factor {
        item.insert("second_factor".to_owned(), AttributeValue::Bool(true));
    }
    if !user.passkeys.is_empty() {
        let ids = user.passkeys.iter().cloned().collect();
        item.insert("passkeys".to_owned(), AttributeValue::Ss(ids));
    }
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
        let roles = match map.get("roles") {
            None => Default::default(),
            Some(value) => value
                .as_ss()
                .map_err(|_| item.invalid("roles"))?
                .iter()
                .map(|r| Role::parse(r).map_err(|_| item.invalid("roles")))
                .collect::<Result<_, _>>()?,
        };
        let identities = match map.get("identities") {
            None => Default::default(),
            Some(value) => value
                .as_ss()
                .map_err(|_| item.invalid("identities"))?
                .iter()
                .map(|k| ExternalId::parse(k).ok_or_else(|| item.invalid("identities")))
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
            roles,
            email: item.optional_email("email")?,
            email_pending: item.optional_email("email_pending")?,
            identities,
            second_factor: map.contains_key("second_factor") && item.bool("second_factor")?,
            passkeys: match map.get("passkeys") {
                None => Default::default(),
                Some(value) => value
                    .as_ss()
                    .map_err(|_| item.invalid("passkeys"))?
                    .iter()
                    .cloned()
                    .collect(),
            },
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
        user.roles.insert(Role::admin());
        user.roles.insert(Role::parse("support").unwrap());
        user.email = Some(crate::email::Email::parse("alice@example.com").unwrap());
        user.email_pending = Some(crate::email::Email::parse("alice@example.org").unwrap());
        user.passkeys.insert("AAECAw".into());
        user.passkeys.insert("BAUGBw".into());
        let item = user_item(&user);
        assert_eq!(item["passkeys"].as_ss().unwrap().len(), 2);
        assert_eq!(item["roles"].as_ss().unwrap().len(), 2);
        assert_eq!(item["pk"].as_s().unwrap(), "USER#alice");
        assert_eq!(item["sk"].as_s().unwrap(), "PROFILE");
        assert_eq!(User::try_from(&item).unwrap(), user);
        user.roles.clear();
        user.email = None;
        user.email_pending = None;
        user.passkeys.clear();
        assert!(!user_item(&user).contains_key("roles"), "no empty set");
        assert!(!user_item(&user).contains_key("passkeys"), "no empty set");
        assert!(!user_item(&user).contains_key("email"));
        assert_eq!(User::try_from(&user_item(&user)).unwrap(), user);
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
