//! Mail job items (`outbox`): `pk = "MAIL#<random id>"`, `sk = "MAIL"`,
//! `kind`, `expires_at` (TTL: a day), and by kind:
//! - `reset`: `identifier_kind` (`username` | `email`), `identifier`;
//! - `verify_email`: `user_id`, `username`, `email`;
//! - a notice: `to`, `username`, and `new` (an address change: the new
//!   address, masked) or `device` (a new device: its user agent).
//!
//! They are written new (never updated) and deleted by the mail function
//! once handled; the table's stream carries each insert to it.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};

use super::{Item, Store, StoreError, key, n, s};
use crate::email::Email;
use crate::outbox::{Identifier, JOB_TTL_SECONDS, MailJob, Notice};
use crate::users::{UserId, Username};

pub const MAIL_PREFIX: &str = "MAIL#";
const MAIL_SK: &str = "MAIL";

fn job_key(id: &str) -> HashMap<String, AttributeValue> {
    key(format!("{MAIL_PREFIX}{id}"), MAIL_SK)
}

/// The item of `job`, under a new random id, written at `now`.
pub(super) fn job_item(job: &MailJob, now: i64) -> HashMap<String, AttributeValue> {
    let mut item = job_key(&uuid::Uuid::new_v4().to_string());
    item.extend([
        ("kind".to_owned(), s(job.kind())),
        ("created_at".to_owned(), n(now)),
        ("expires_at".to_owned(), n(now + JOB_TTL_SECONDS)),
    ]);
    let mut set = |name: &str, value: &str| item.insert(name.to_owned(), s(value));
    match job {
        MailJob::Reset { identifier } => match identifier {
            Identifier::Username(name) => {
                set("identifier_kind", "username");
                set("identifier", name.as_str());
            }
            Identifier::Email(email) => {
                set("identifier_kind", "email");
                set("identifier", email.as_str());
            }
        },
        MailJob::VerifyEmail {
            user_id,
            username,
            email,
        } => {
            set("user_id", &user_id.to_string());
            set("username", username.as_str());
            set("email", email.as_str());
        }
        MailJob::Notice {
            notice,
            to,
            username,
        } => {
            set("to", to.as_str());
            set("username", username.as_str());
            match notice {
                Notice::EmailChanged { new } => {
                    set("new", new);
                }
                Notice::NewDevice {
                    device: Some(device),
                } => {
                    set("device", device);
                }
                Notice::IdentityConnected { provider }
                | Notice::IdentityDisconnected { provider } => {
                    set("provider", provider);
                }
                Notice::RecoveryCodeUsed { remaining } => {
                    set("remaining", &remaining.to_string());
                }
                Notice::PasskeyAdded { name }
                | Notice::PasskeyRemoved { name }
                | Notice::PasskeyCloned { name } => {
                    set("passkey", name);
                }
                _ => {}
            }
        }
    }
    item
}

/// A job read back from its item (or a stream record's image of it): its id
/// and the job. An item of an unknown kind is an error: it is logged and
/// left to expire.
pub fn job_from_item(
    map: &HashMap<String, AttributeValue>,
) -> Result<(String, MailJob), StoreError> {
    let item = Item(map, "mail job");
    let id = item
        .string("pk")?
        .strip_prefix(MAIL_PREFIX)
        .ok_or_else(|| item.invalid("pk"))?
        .to_owned();
    let username =
        || Username::parse(item.string("username")?).map_err(|_| item.invalid("username"));
    let email = |name: &str| Email::parse(item.string(name)?).map_err(|_| item.invalid(name));
    let kind = item.string("kind")?;
    let job = match kind {
        "reset" => {
            let raw = item.string("identifier")?;
            let identifier = match item.string("identifier_kind")? {
                "username" => Identifier::Username(
                    Username::parse(raw).map_err(|_| item.invalid("identifier"))?,
                ),
                "email" => Identifier::Email(email("identifier")?),
                _ => return Err(item.invalid("identifier_kind")),
            };
            MailJob::Reset { identifier }
        }
        "verify_email" => MailJob::VerifyEmail {
            user_id: UserId::parse(item.string("user_id")?)
                .ok_or_else(|| item.invalid("user_id"))?,
            username: username()?,
            email: email("email")?,
        },
        _ => {
            let notice = match kind {
                "password_changed" => Notice::PasswordChanged,
                "password_reset" => Notice::PasswordReset,
                "password_set" => Notice::PasswordSet,
                "email_changed" => Notice::EmailChanged {
                    new: item.string("new")?.to_owned(),
                },
                "email_removed" => Notice::EmailRemoved,
                "account_deleted" => Notice::AccountDeleted,
                "new_device" => Notice::NewDevice {
                    device: item.optional_string("device").map(str::to_owned),
                },
                "identity_connected" => Notice::IdentityConnected {
                    provider: item.string("provider")?.to_owned(),
                },
                "identity_disconnected" => Notice::IdentityDisconnected {
                    provider: item.string("provider")?.to_owned(),
                },
                "second_factor_added" => Notice::SecondFactorAdded,
                "second_factor_removed" => Notice::SecondFactorRemoved,
                "recovery_codes_replaced" => Notice::RecoveryCodesReplaced,
                "recovery_code_used" => Notice::RecoveryCodeUsed {
                    remaining: item
                        .string("remaining")?
                        .parse()
                        .map_err(|_| item.invalid("remaining"))?,
                },
                "wrong_second_factor_code" => Notice::WrongSecondFactorCode,
                "passkey_added" => Notice::PasskeyAdded {
                    name: item.string("passkey")?.to_owned(),
                },
                "passkey_removed" => Notice::PasskeyRemoved {
                    name: item.string("passkey")?.to_owned(),
                },
                "passkey_cloned" => Notice::PasskeyCloned {
                    name: item.string("passkey")?.to_owned(),
                },
                _ => return Err(item.invalid("kind")),
            };
            MailJob::Notice {
                notice,
                to: email("to")?,
                username: username()?,
            }
        }
    };
    Ok((id, job))
}

impl Store {
    /// Writes `job` on its own (a reset request: nothing else changes). A
    /// write reported failed is read back: its answer may have been lost
    /// (or the SDK's retry refused by the first attempt's own write).
    pub async fn enqueue(&self, job: &MailJob, now: i64) -> Result<(), StoreError> {
        let item = job_item(job, now);
        let key = super::key(item["pk"].as_s().cloned().unwrap_or_default(), MAIL_SK);
        match self.put_once(item).await {
            Ok(()) => Ok(()),
            Err(e) => match self.get_item(key).await {
                Ok(Some(_)) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// `job` as one item of a transaction.
    pub(super) fn enqueue_item(
        &self,
        job: &MailJob,
        now: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        self.put_new(job_item(job, now))
    }

    /// The job `id`, if it is still there (read strongly): one that is gone
    /// was handled already.
    pub async fn get_job(&self, id: &str) -> Result<Option<MailJob>, StoreError> {
        self.get_item(job_key(id))
            .await?
            .map(|item| job_from_item(&item).map(|(_, job)| job))
            .transpose()
    }

    /// Deletes a job once handled (or found unsendable).
    pub async fn remove_job(&self, id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(job_key(id)))
            .send()
            .await
            .map_err(super::classify)?;
        Ok(())
    }

    /// Every job in the table, oldest first (tests and the local pump's
    /// checks; a deployed mail function reads its jobs from the stream).
    pub async fn pending_jobs(&self) -> Result<Vec<(String, MailJob)>, StoreError> {
        let mut jobs = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :mail)")
                .expression_attribute_values(":mail", s(MAIL_PREFIX))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(super::classify)?;
            for item in page.items() {
                let created: i64 = Item(item, "mail job").number("created_at")?;
                jobs.push((created, job_from_item(item)?));
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        jobs.sort_by_key(|(created, _)| *created);
        Ok(jobs.into_iter().map(|(_, job)| job).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_job_round_trips_through_its_item() {
        let email = Email::parse("alice@example.com").unwrap();
        let alice = Username::parse("alice").unwrap();
        let jobs = [
            MailJob::Reset {
                identifier: Identifier::Username(alice.clone()),
            },
            MailJob::Reset {
                identifier: Identifier::Email(email.clone()),
            },
            MailJob::VerifyEmail {
                user_id: UserId::random(),
                username: alice.clone(),
                email: email.clone(),
            },
        ]
        .into_iter()
        .chain(
            [
                Notice::PasswordChanged,
                Notice::PasswordReset,
                Notice::PasswordSet,
                Notice::EmailChanged {
                    new: "b***@e***.org".into(),
                },
                Notice::EmailRemoved,
                Notice::AccountDeleted,
                Notice::NewDevice {
                    device: Some("Firefox on Linux".into()),
                },
                Notice::NewDevice { device: None },
                Notice::IdentityConnected {
                    provider: "Local IdP".into(),
                },
                Notice::IdentityDisconnected {
                    provider: "Local IdP".into(),
                },
                Notice::PasskeyAdded {
                    name: "Laptop".into(),
                },
                Notice::PasskeyRemoved {
                    name: "Phone".into(),
                },
                Notice::PasskeyCloned { name: "Key".into() },
            ]
            .map(|notice| MailJob::Notice {
                notice,
                to: email.clone(),
                username: alice.clone(),
            }),
        );
        for job in jobs {
            let item = job_item(&job, 1_000);
            assert_eq!(
                item["expires_at"].as_n().unwrap(),
                &(1_000 + JOB_TTL_SECONDS).to_string()
            );
            assert!(
                !item.contains_key("session_epoch"),
                "never in the users index"
            );
            let (id, back) = job_from_item(&item).unwrap();
            assert_eq!(back, job);
            assert_eq!(item["pk"].as_s().unwrap(), &format!("MAIL#{id}"));
        }
    }

    #[test]
    fn a_job_of_an_unknown_kind_is_an_error() {
        let mut item = job_item(
            &MailJob::Notice {
                notice: Notice::AccountDeleted,
                to: Email::parse("a@example.com").unwrap(),
                username: Username::parse("alice").unwrap(),
            },
            1,
        );
        item.insert("kind".into(), s("surprise"));
        assert!(job_from_item(&item).is_err());
    }
}
