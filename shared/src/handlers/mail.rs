//! The mail function: the table's stream hands it each new mail job
//! (`outbox`); it does what the job asks out of any requester's sight, then
//! deletes the job. A reset job looks the account up (by username, or by
//! verified address), and only for an active account with a verified
//! address, within its account's hourly allowance, issues a reset ticket and
//! mails it; a verification job mails a ticket to the address if it is still
//! the one pending; a notice is rendered and sent.
//!
//! Delivery is at least once: a job whose sending failed for a reason that
//! may pass (SES throttled or unreachable) is reported back to the stream,
//! which runs it again from there (a new ticket replaces the one that did
//! not go out); a job that can never be sent (SES refused it, or the job is
//! damaged) is counted (`MailFailed`, alarmed), logged without its address,
//! and deleted.

use serde_json::{Value, json};

use crate::aws::CallError;
use crate::clock::Clock;
use crate::mail::{Mailer, Message, notice_message, ticket_message};
use crate::metrics::{self, Event};
use crate::outbox::{Identifier, MailJob};
use crate::store::{MAIL_PREFIX, Store, StoreError};
use crate::throttle::{RateLimits, Window};
use crate::tickets::{Purpose, Ticket};
use crate::users::User;

/// What the mail function holds between invocations.
pub struct MailWorker {
    pub store: Store,
    pub mailer: Mailer,
    pub limits: RateLimits,
    pub clock: Clock,
}

/// What became of one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Nothing to send: no such account, no verified address, inactive, the
    /// address no longer pending, or the account's allowance spent.
    Skipped(&'static str),
    /// Can never be sent: counted and dropped.
    Failed,
}

/// A failure worth another try: the job stays, the stream runs it again.
#[derive(Debug)]
pub struct Retry(pub String);

impl MailWorker {
    /// One stream batch (a DynamoDB stream event, keys only, as Lambda
    /// delivers it): each inserted job in order, read from the table (a
    /// job that is gone was handled already: a batch delivered again sends
    /// nothing twice). The answer names the first record to run again, if
    /// any (`ReportBatchItemFailures`): the stream retries from it.
    pub async fn handle_batch(&self, event: &Value) -> Value {
        let records = event["Records"].as_array().cloned().unwrap_or_default();
        for record in &records {
            if record["eventName"] != "INSERT" {
                continue;
            }
            let sequence = record["dynamodb"]["SequenceNumber"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let Some(id) = record["dynamodb"]["Keys"]["pk"]["S"]
                .as_str()
                .and_then(|pk| pk.strip_prefix(MAIL_PREFIX))
            else {
                continue;
            };
            let job = match self.store.get_job(id).await {
                Ok(Some(job)) => job,
                Ok(None) => continue,
                Err(StoreError::Internal(detail)) => {
                    tracing::error!(%detail, "a damaged mail job: dropped");
                    metrics::count(Event::MailFailed);
                    if let Err(e) = self.store.remove_job(id).await {
                        tracing::warn!(error = %e, "a damaged mail job was not deleted");
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a mail job to read again");
                    return json!({"batchItemFailures": [{"itemIdentifier": sequence}]});
                }
            };
            if let Err(Retry(reason)) = self.run(id, &job).await {
                tracing::warn!(kind = job.kind(), %reason, "mail job to run again");
                return json!({"batchItemFailures": [{"itemIdentifier": sequence}]});
            }
        }
        json!({"batchItemFailures": []})
    }

    /// Runs one job and deletes it (unless it is to run again).
    pub async fn run(&self, id: &str, job: &MailJob) -> Result<Outcome, Retry> {
        let outcome = self.send(job).await?;
        match outcome {
            Outcome::Sent => {
                tracing::info!(kind = job.kind(), "mail sent");
                metrics::count(Event::MailSent);
            }
            Outcome::Skipped(why) => tracing::info!(kind = job.kind(), why, "nothing to send"),
            Outcome::Failed => metrics::count(Event::MailFailed),
        }
        // A job left behind by a failed delete expires by TTL; the stream
        // never offers it again.
        if let Err(e) = self.store.remove_job(id).await {
            tracing::warn!(error = %e, "a mail job was sent but not deleted");
        }
        Ok(outcome)
    }

    async fn send(&self, job: &MailJob) -> Result<Outcome, Retry> {
        let now = self.clock.now();
        let config = self.mailer.config();
        let message = match job {
            MailJob::Reset { identifier } => {
                let user = match identifier {
                    Identifier::Username(name) => self.store.get(name).await,
                    Identifier::Email(email) => self.store.user_by_email(email).await,
                }
                .map_err(retry)?;
                let Some(user) = user else {
                    return Ok(Outcome::Skipped("no_account"));
                };
                let Some(to) = user.email.clone().filter(|_| user.active) else {
                    return Ok(Outcome::Skipped("no_verified_address"));
                };
                if !self.within_allowance(&user, now).await? {
                    return Ok(Outcome::Skipped("allowance_spent"));
                }
                let (ticket, secrets) = Ticket::issue(Purpose::Reset, &user, to.clone(), now);
                self.store.put_ticket(&ticket).await.map_err(retry)?;
                ticket_message(config, Purpose::Reset, &user.username, &to, &secrets)
            }
            MailJob::VerifyEmail {
                user_id,
                username,
                email,
            } => {
                let user = self.store.get(username).await.map_err(retry)?;
                let Some(user) = user.filter(|u| {
                    u.id == *user_id && u.active && u.email_pending.as_ref() == Some(email)
                }) else {
                    return Ok(Outcome::Skipped("no_longer_pending"));
                };
                if !self.within_allowance(&user, now).await? {
                    return Ok(Outcome::Skipped("allowance_spent"));
                }
                let (ticket, secrets) =
                    Ticket::issue(Purpose::VerifyEmail, &user, email.clone(), now);
                self.store.put_ticket(&ticket).await.map_err(retry)?;
                ticket_message(config, Purpose::VerifyEmail, username, email, &secrets)
            }
            MailJob::Notice {
                notice,
                to,
                username,
            } => notice_message(config, notice, username, to),
        };
        self.deliver(job, &message).await
    }

    /// Counts a ticket against the account's hourly allowance.
    async fn within_allowance(&self, user: &User, now: i64) -> Result<bool, Retry> {
        let window = Window::account_tickets(&self.limits);
        let hits = self
            .store
            .hit(&window, &user.id.to_string(), now)
            .await
            .map_err(retry)?;
        Ok(hits <= window.limit)
    }

    async fn deliver(&self, job: &MailJob, message: &Message) -> Result<Outcome, Retry> {
        match self.mailer.send(message).await {
            Ok(()) => Ok(Outcome::Sent),
            Err(CallError::Unavailable(detail)) => Err(Retry(detail)),
            Err(CallError::Rejected(detail)) => {
                tracing::error!(kind = job.kind(), %detail, "SES refused a message");
                Ok(Outcome::Failed)
            }
        }
    }
}

fn retry(e: StoreError) -> Retry {
    Retry(e.to_string())
}
