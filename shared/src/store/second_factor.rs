//! The second factor's items.
//!
//! - The data key (`second_factor`): `pk = "DATAKEY#second-factor"`, `sk =
//!   "DATAKEY"`, `sealed` (B: the key as KMS `GenerateDataKey` sealed it),
//!   `created_at`. Written once, where none is, by the first function that
//!   needs it; read at every init after that.
//! - A user's factor (`mfa::Factor`): `pk = "FACTOR#<user id>"`, `sk =
//!   "TOTP"`, `state` (`pending`, `active`), `sealed` (B), `created_at`,
//!   `last_step` (once a code was accepted), `failures`, `recovery` (a string
//!   set of the unused recovery codes' hashes, absent when none), and, while
//!   pending, `expires_at` (TTL: an enrolment never confirmed goes).
//! - A login waiting for its second factor (`mfa::MfaTicket`): `pk =
//!   "MFA#<token hash>"`, `sk = "MFA"`, `user_id`, `username`, `epoch`,
//!   `password` (a fingerprint of the hash proved), `method`, `device` (the
//!   hash of the device proof that vouched, if one did), `failures`,
//!   `created_at`, `expires_at` (TTL; every read checks it).

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::sessions::{Cancelled, values};
use super::{Item, Store, StoreError, condition_held, key, n, s};
use crate::devices::DeviceChange;
use crate::mfa::{
    ENROLMENT_TTL, Factor, FactorState, MAX_FACTOR_FAILURES, MAX_TICKET_FAILURES, MfaTicket,
    WRONG_CODE_NOTICE_EVERY,
};
use crate::outbox::{MailJob, Notice};
use crate::second_factor::DataKeyRecord;
use crate::sessions::{RefreshRecord, Session, SignIn};
use crate::users::{User, UserId, Username};

/// What a code's reservation came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeTry {
    /// Counted: the code may be checked.
    Reserved,
    /// The login's `mfa_token` is spent (its wrong codes), expired or used.
    TicketVoid,
    /// The factor is suspended (codes from the app), or not the one read.
    FactorRefused,
}

/// How the second factor was proved, for the sign-in's write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FactorProof {
    /// A code of this step: no code of it or before works again.
    Code { step: i64 },
    /// This recovery code's hash: it is spent.
    Recovery { hash: String },
}

impl FactorProof {
    /// Its RFC 8176 `amr` value (`sessions::amr`).
    pub fn method(&self) -> &'static str {
        match self {
            FactorProof::Code { .. } => crate::sessions::amr::OTP,
            FactorProof::Recovery { .. } => crate::sessions::amr::RECOVERY_CODE,
        }
    }
}

/// The condition that `factor` is the active one read and `proof` unspent
/// (a code's step later than the last accepted; a recovery code still in
/// the set), and its values (`:spent`, the recovery code as a set, for
/// what takes it out; `:step`, the code's step, for what records it).
fn spendable(factor: &Factor, proof: &FactorProof) -> (String, HashMap<String, AttributeValue>) {
    let mut vals = HashMap::from([
        (":active".to_owned(), s(FactorState::Active.as_str())),
        (
            ":sealed".to_owned(),
            AttributeValue::B(Blob::new(factor.sealed.clone())),
        ),
    ]);
    let condition = match proof {
        FactorProof::Code { step } => {
            vals.insert(":step".to_owned(), n(*step));
            "#state = :active AND sealed = :sealed AND (attribute_not_exists(last_step) OR last_step < :step)"
        }
        FactorProof::Recovery { hash } => {
            vals.insert(":hash".to_owned(), s(hash));
            vals.insert(":spent".to_owned(), AttributeValue::Ss(vec![hash.clone()]));
            "#state = :active AND sealed = :sealed AND contains(recovery, :hash)"
        }
    };
    (condition.to_owned(), vals)
}

fn factor_key(user: &UserId) -> HashMap<String, AttributeValue> {
    key(format!("FACTOR#{user}"), "TOTP")
}

fn ticket_key(hash: &str) -> HashMap<String, AttributeValue> {
    key(format!("MFA#{hash}"), "MFA")
}

fn data_key_key() -> HashMap<String, AttributeValue> {
    key("DATAKEY#second-factor".to_owned(), "DATAKEY")
}

impl Store {
    /// The sealed data key, if one was made.
    pub async fn data_key(&self) -> Result<Option<DataKeyRecord>, StoreError> {
        self.get_item(data_key_key())
            .await?
            .map(|item| DataKeyRecord::try_from(&item))
            .transpose()
    }

    /// Stores `record` where no data key is; `AlreadyExists` if one is (a
    /// racer's made first: it is the one to use).
    pub async fn put_data_key(&self, record: &DataKeyRecord) -> Result<(), StoreError> {
        let mut item = data_key_key();
        item.extend([
            ("kind".to_owned(), s("second factor data key")),
            (
                "sealed".to_owned(),
                AttributeValue::B(Blob::new(record.sealed.clone())),
            ),
            ("created_at".to_owned(), n(record.created_at)),
        ]);
        self.put_once(item).await
    }
}

impl TryFrom<&HashMap<String, AttributeValue>> for DataKeyRecord {
    type Error = StoreError;

    fn try_from(map: &HashMap<String, AttributeValue>) -> Result<Self, StoreError> {
        let item = Item(map, "second factor data key");
        let sealed = map
            .get("sealed")
            .and_then(|v| v.as_b().ok())
            .map(|b| b.as_ref().to_vec())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| item.invalid("sealed"))?;
        Ok(DataKeyRecord {
            sealed,
            created_at: item.number("created_at")?,
        })
    }
}

fn factor_item(factor: &Factor) -> HashMap<String, AttributeValue> {
    let mut item = factor_key(&factor.user_id);
    item.extend([
        ("kind".to_owned(), s("second factor")),
        ("state".to_owned(), s(factor.state.as_str())),
        (
            "sealed".to_owned(),
            AttributeValue::B(Blob::new(factor.sealed.clone())),
        ),
        ("created_at".to_owned(), n(factor.created_at)),
        ("failures".to_owned(), n(factor.failures)),
    ]);
    if let Some(step) = factor.last_step {
        item.insert("last_step".to_owned(), n(step));
    }
    if !factor.recovery.is_empty() {
        let hashes = factor.recovery.iter().cloned().collect();
        item.insert("recovery".to_owned(), AttributeValue::Ss(hashes));
    }
    if factor.state == FactorState::Pending {
        let ends = factor.created_at + ENROLMENT_TTL.as_secs() as i64;
        item.insert(super::TTL_ATTRIBUTE.to_owned(), n(ends));
    }
    if let Some(sid) = &factor.session {
        item.insert("session".to_owned(), s(sid));
    }
    item
}

fn factor_from(user: UserId, map: &HashMap<String, AttributeValue>) -> Result<Factor, StoreError> {
    let item = Item(map, "second factor");
    let recovery = match map.get("recovery") {
        None => BTreeSet::new(),
        Some(value) => value
            .as_ss()
            .map_err(|_| item.invalid("recovery"))?
            .iter()
            .cloned()
            .collect(),
    };
    Ok(Factor {
        user_id: user,
        state: FactorState::parse(item.string("state")?).ok_or_else(|| item.invalid("state"))?,
        session: item.optional_string("session").map(str::to_owned),
        sealed: map
            .get("sealed")
            .and_then(|v| v.as_b().ok())
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| item.invalid("sealed"))?,
        created_at: item.number("created_at")?,
        last_step: match map.get("last_step") {
            None => None,
            Some(_) => Some(item.number("last_step")?),
        },
        failures: item.number("failures")?,
        recovery,
    })
}

fn ticket_item(ticket: &MfaTicket) -> HashMap<String, AttributeValue> {
    let mut item = ticket_key(&ticket.hash);
    item.extend([
        ("kind".to_owned(), s("mfa ticket")),
        // Not `user_id`: the users-by-id index keys on that name.
        ("owner_id".to_owned(), s(ticket.user_id.to_string())),
        ("username".to_owned(), s(ticket.username.as_str())),
        ("epoch".to_owned(), n(ticket.epoch)),
        ("password".to_owned(), s(&ticket.password)),
        ("method".to_owned(), s(ticket.method.as_str())),
        ("failures".to_owned(), n(ticket.failures)),
        ("created_at".to_owned(), n(ticket.created_at)),
        (super::TTL_ATTRIBUTE.to_owned(), n(ticket.expires_at)),
    ]);
    if let Some(device) = &ticket.device {
        item.insert("device".to_owned(), s(device));
    }
    item
}

fn ticket_from(hash: &str, map: &HashMap<String, AttributeValue>) -> Result<MfaTicket, StoreError> {
    let item = Item(map, "mfa ticket");
    Ok(MfaTicket {
        hash: hash.to_owned(),
        user_id: UserId::parse(item.string("owner_id")?).ok_or_else(|| item.invalid("owner_id"))?,
        username: Username::parse(item.string("username")?)
            .map_err(|_| item.invalid("username"))?,
        epoch: item.number("epoch")?,
        password: item.string("password")?.to_owned(),
        method: SignIn::parse(item.string("method")?).unwrap_or(SignIn::Other),
        device: item.optional_string("device").map(str::to_owned),
        failures: item.number("failures")?,
        created_at: item.number("created_at")?,
        expires_at: item.number(super::TTL_ATTRIBUTE)?,
    })
}

impl Store {
    /// `user`'s factor, pending or active, if any (read strongly).
    pub async fn get_factor(&self, user: &UserId) -> Result<Option<Factor>, StoreError> {
        self.get_item(factor_key(user))
            .await?
            .map(|item| factor_from(*user, &item))
            .transpose()
    }

    /// Stores a pending factor, replacing a pending one (an enrolment begun
    /// again); `false` when an active one is there (nothing written).
    pub async fn put_pending_factor(&self, factor: &Factor) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(factor_item(factor)))
            .condition_expression("attribute_not_exists(pk) OR #state = :pending")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":pending", s(FactorState::Pending.as_str()))
            .send()
            .await;
        condition_held(result)
    }

    /// Counts a code against `factor` (as read) and, at a login's second
    /// step, against its `ticket`, before the code is checked: one
    /// transaction, so however many guesses race, no more are checked than
    /// the counts allow. A code from the app is refused while the factor is
    /// suspended; a recovery code (`recovery`) is not: it is what restores
    /// one.
    pub async fn reserve_code_try(
        &self,
        factor: &Factor,
        ticket: Option<&MfaTicket>,
        recovery: bool,
        now: i64,
    ) -> Result<CodeTry, StoreError> {
        let mut condition = String::from("#state = :state AND sealed = :sealed");
        let mut vals = HashMap::from([
            (":one".to_owned(), n(1)),
            (":state".to_owned(), s(factor.state.as_str())),
            (
                ":sealed".to_owned(),
                AttributeValue::B(Blob::new(factor.sealed.clone())),
            ),
        ]);
        if !recovery {
            condition.push_str(" AND failures < :max");
            vals.insert(":max".to_owned(), n(MAX_FACTOR_FAILURES));
        }
        let mut items = vec![self.update(
            factor_key(&factor.user_id),
            "ADD failures :one",
            &condition,
            Some(HashMap::from([("#state".to_owned(), "state".to_owned())])),
            Some(vals),
        )?];
        if let Some(ticket) = ticket {
            items.push(self.update(
                ticket_key(&ticket.hash),
                "ADD failures :one",
                "expires_at > :now AND failures < :max",
                None,
                values([
                    (":one", n(1)),
                    (":now", n(now)),
                    (":max", n(MAX_TICKET_FAILURES)),
                ]),
            )?);
        }
        match self.try_transact(items).await {
            Ok(()) => Ok(CodeTry::Reserved),
            Err(Cancelled::Conditions(failed)) if failed.contains(&1) => Ok(CodeTry::TicketVoid),
            Err(Cancelled::Conditions(_)) => Ok(CodeTry::FactorRefused),
            Err(Cancelled::Store(e)) => Err(e),
        }
    }

    /// Confirms `factor` (pending, as read) by a code of `step`, all or
    /// nothing: the factor active with its recovery codes' hashes, its
    /// count cleared and no code of `step` or before good again, and the
    /// user's flag set, so that every later sign-in asks for it. On the
    /// conditions that the factor is still the one read (not begun again
    /// meanwhile) and `user` as read (`Conflict`).
    pub async fn confirm_factor(
        &self,
        user: &User,
        factor: &Factor,
        step: i64,
        recovery: &[String],
    ) -> Result<(), StoreError> {
        let mut items = vec![
            self.update(
                factor_key(&factor.user_id),
                "SET #state = :active, last_step = :step, failures = :zero, recovery = :codes REMOVE expires_at, #session",
                "#state = :pending AND sealed = :sealed",
                Some(HashMap::from([
                    ("#state".to_owned(), "state".to_owned()),
                    ("#session".to_owned(), "session".to_owned()),
                ])),
                values([
                    (":active", s(FactorState::Active.as_str())),
                    (":pending", s(FactorState::Pending.as_str())),
                    (":step", n(step)),
                    (":zero", n(0)),
                    (":codes", AttributeValue::Ss(recovery.to_vec())),
                    (":sealed", AttributeValue::B(Blob::new(factor.sealed.clone()))),
                ]),
            )?,
            self.update(
                super::users::user_key(&user.username),
                "SET second_factor = :true",
                "user_id = :uid AND active = :true AND session_epoch = :epoch",
                None,
                values([
                    (":true", AttributeValue::Bool(true)),
                    (":uid", s(user.id.to_string())),
                    (":epoch", n(user.session_epoch)),
                ]),
            )?,
        ];
        if let Some(notice) = MailJob::notice_to(user, Notice::SecondFactorAdded) {
            items.push(
                self.enqueue_item(&notice, factor.created_at.max(crate::clock::system_now()))?,
            );
        }
        self.transact(items).await
    }

    /// The spending of `proof` on `factor` (as read), as one item of a
    /// transaction: a code's step recorded, or the recovery code taken out
    /// of the set, and the count cleared; on the conditions of `spendable`.
    fn spend(
        &self,
        factor: &Factor,
        proof: &FactorProof,
    ) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, StoreError> {
        let (condition, mut vals) = spendable(factor, proof);
        vals.insert(":zero".to_owned(), n(0));
        let update = match proof {
            FactorProof::Code { .. } => "SET last_step = :step, failures = :zero",
            FactorProof::Recovery { .. } => "SET failures = :zero DELETE recovery :spent",
        };
        self.update(
            factor_key(&factor.user_id),
            update,
            &condition,
            Some(HashMap::from([("#state".to_owned(), "state".to_owned())])),
            Some(vals),
        )
    }

    /// The notice of a recovery code used (how many remain), if `proof` is
    /// one and the user has a verified address.
    fn recovery_notice(
        &self,
        user: &User,
        factor: &Factor,
        proof: &FactorProof,
        now: i64,
    ) -> Result<Option<aws_sdk_dynamodb::types::TransactWriteItem>, StoreError> {
        let FactorProof::Recovery { .. } = proof else {
            return Ok(None);
        };
        let remaining = factor.recovery.len().saturating_sub(1);
        MailJob::notice_to(user, Notice::RecoveryCodeUsed { remaining })
            .map(|notice| self.enqueue_item(&notice, now))
            .transpose()
    }

    /// The deletion of `user`'s factor, if any, as one item of a
    /// transaction (the account's deletion).
    pub(super) fn delete_factor_item(
        &self,
        user: &UserId,
    ) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, StoreError> {
        let delete = super::sessions::built(
            aws_sdk_dynamodb::types::Delete::builder()
                .table_name(&self.table)
                .set_key(Some(factor_key(user)))
                .build(),
        )?;
        Ok(aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .delete(delete)
            .build())
    }

    /// A second factor proved within session `sid`, all or nothing: the
    /// session's `amr` (its `auth_time`, the latest proof of the first
    /// factor, as it was: `auth_time`), `proof` marked on it (for
    /// `proof_stored`), the code's step or the recovery code spent and the
    /// factor's count cleared (and, for a recovery code, the notice); on
    /// the conditions that the session is live and the user's, the factor
    /// the one read and the proof unspent (`Conflict`).
    #[allow(clippy::too_many_arguments)]
    pub async fn step_up(
        &self,
        sid: &str,
        user: &User,
        factor: &Factor,
        spent: &FactorProof,
        amr: &[String],
        auth_time: i64,
        proof: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut items = vec![
            self.proof_on_session(sid, user, now, auth_time, proof, amr, None)?,
            self.spend(factor, spent)?,
        ];
        items.extend(self.recovery_notice(user, factor, spent, now)?);
        self.transact(items).await
    }

    /// Removes `user`'s `factor` (as read), spending `proof` (a fresh one
    /// of it), all or nothing: the factor deleted on the conditions that it
    /// is the one read and the proof unspent, the user's flag removed, and
    /// the notice (`Conflict`: the proof spent by a racer, the factor or
    /// the account changed).
    pub async fn remove_factor(
        &self,
        user: &User,
        factor: &Factor,
        proof: &FactorProof,
        now: i64,
    ) -> Result<(), StoreError> {
        let (condition, mut vals) = spendable(factor, proof);
        if let FactorProof::Recovery { .. } = proof {
            // Nothing to take out of a set that goes.
            vals.remove(":spent");
        }
        let delete = super::sessions::built(
            aws_sdk_dynamodb::types::Delete::builder()
                .table_name(&self.table)
                .set_key(Some(factor_key(&factor.user_id)))
                .condition_expression(condition)
                .expression_attribute_names("#state", "state")
                .set_expression_attribute_values(Some(vals))
                .build(),
        )?;
        let mut items = vec![
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .delete(delete)
                .build(),
            self.update(
                super::users::user_key(&user.username),
                "REMOVE second_factor",
                "user_id = :uid AND second_factor = :true",
                None,
                values([
                    (":uid", s(user.id.to_string())),
                    (":true", AttributeValue::Bool(true)),
                ]),
            )?,
        ];
        if let Some(notice) = MailJob::notice_to(user, Notice::SecondFactorRemoved) {
            items.push(self.enqueue_item(&notice, now)?);
        }
        self.transact(items).await
    }

    /// An operator's removal of `user`'s (as read) second factors, the code
    /// factor (active or pending) and the passkeys, for a person who lost
    /// the device (and the recovery codes) and proved who they are some
    /// other way (docs/operations.md): all or nothing, the factor and the
    /// passkeys deleted, the flag and the list removed, every session and
    /// device proof ended (the epoch moves on: whoever holds the password
    /// and a session is out too), and the owner told. `Ok(false)`: the user
    /// is gone, someone else now, or their passkeys changed meanwhile
    /// (nothing written).
    pub async fn remove_factor_by_operator(
        &self,
        user: &User,
        now: i64,
    ) -> Result<bool, StoreError> {
        // The passkeys too (a person who lost the device that held them):
        // each item, and the user's list, as read (the list's size
        // unchanged: one added meanwhile is not left behind unlisted).
        let (listed, mut vals) = if user.passkeys.is_empty() {
            ("attribute_not_exists(passkeys)", HashMap::new())
        } else {
            (
                "size(passkeys) = :listed",
                HashMap::from([(":listed".to_owned(), n(user.passkeys.len() as u64))]),
            )
        };
        vals.insert(":uid".to_owned(), s(user.id.to_string()));
        vals.insert(":one".to_owned(), n(1));
        let mut items = vec![
            self.delete_factor_item(&user.id)?,
            self.update(
                super::users::user_key(&user.username),
                "REMOVE second_factor, passkeys ADD session_epoch :one",
                &format!("user_id = :uid AND {listed}"),
                None,
                Some(vals),
            )?,
        ];
        for id in &user.passkeys {
            items.push(self.delete_passkey_item(id, user)?);
        }
        if let Some(notice) = MailJob::notice_to(user, Notice::SecondFactorRemoved) {
            items.push(self.enqueue_item(&notice, now)?);
        }
        match self.try_transact(items).await {
            Ok(()) => Ok(true),
            Err(Cancelled::Conditions(_)) => Ok(false),
            Err(Cancelled::Store(e)) => Err(e),
        }
    }

    /// Replaces every recovery code of `factor` (as read) with `hashes`,
    /// spending `proof`, clearing the count, and telling the owner, all or
    /// nothing (`Conflict`: the proof spent by a racer, or the factor
    /// changed).
    pub async fn replace_recovery_codes(
        &self,
        user: &User,
        factor: &Factor,
        proof: &FactorProof,
        hashes: &[String],
        now: i64,
    ) -> Result<(), StoreError> {
        let (condition, mut vals) = spendable(factor, proof);
        vals.remove(":spent");
        vals.insert(":codes".to_owned(), AttributeValue::Ss(hashes.to_vec()));
        vals.insert(":zero".to_owned(), n(0));
        let update = match proof {
            FactorProof::Code { .. } => {
                "SET recovery = :codes, failures = :zero, last_step = :step"
            }
            FactorProof::Recovery { .. } => "SET recovery = :codes, failures = :zero",
        };
        let mut items = vec![self.update(
            factor_key(&factor.user_id),
            update,
            &condition,
            Some(HashMap::from([("#state".to_owned(), "state".to_owned())])),
            Some(vals),
        )?];
        if let Some(notice) = MailJob::notice_to(user, Notice::RecoveryCodesReplaced) {
            items.push(self.enqueue_item(&notice, now)?);
        }
        self.transact(items).await
    }

    /// Tells `user` of a wrong code after the first step, at most once an
    /// hour (`WRONG_CODE_NOTICE_EVERY`): the mail job and the factor's
    /// `wrong_code_noticed_at` in one transaction, on the condition that no
    /// notice went within the hour. `Ok(false)`: one did (nothing written).
    pub async fn notice_wrong_code(&self, user: &User, now: i64) -> Result<bool, StoreError> {
        let Some(job) = MailJob::notice_to(user, Notice::WrongSecondFactorCode) else {
            return Ok(false);
        };
        let items = vec![
            self.update(
                factor_key(&user.id),
                "SET wrong_code_noticed_at = :now",
                "attribute_exists(pk) AND (attribute_not_exists(wrong_code_noticed_at) OR wrong_code_noticed_at < :since)",
                None,
                values([
                    (":now", n(now)),
                    (":since", n(now - WRONG_CODE_NOTICE_EVERY.as_secs() as i64)),
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

    /// Stores a login's ticket (its key is random: a new item) and, after
    /// a password's proof that no device proof vouched for (a device's
    /// count is cleared by the sign-in that retires it), clears the
    /// username's attempt record: the password was proved. Guessing codes is bounded by the factor's own
    /// count, which only a completed sign-in clears.
    pub async fn put_mfa_ticket(&self, ticket: &MfaTicket) -> Result<(), StoreError> {
        let mut items = vec![self.put_new(ticket_item(ticket))?];
        // A provider's sign-in proved no password: the record stays.
        if ticket.device.is_none() && ticket.method != SignIn::Provider {
            items.push(self.clear_attempts(&ticket.username)?);
        }
        match self.transact(items).await {
            // A failure reported for a write that committed (its answer
            // lost, the SDK's retry refused by its own effects): read back.
            Err(e)
                if !matches!(
                    self.get_mfa_ticket(&ticket.hash, ticket.created_at).await,
                    Ok(Some(_))
                ) =>
            {
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// `ticket` used up, as one item of a transaction: deleted on the
    /// condition that it is still live at `now`.
    pub(super) fn ticket_used(
        &self,
        ticket: &MfaTicket,
        now: i64,
    ) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, StoreError> {
        self.delete_if(
            ticket_key(&ticket.hash),
            "expires_at > :now AND failures <= :max",
            values([(":now", n(now)), (":max", n(MAX_TICKET_FAILURES))]),
        )
    }

    /// The live ticket under `hash`, if any (read strongly).
    pub async fn get_mfa_ticket(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<MfaTicket>, StoreError> {
        Ok(self
            .get_item(ticket_key(hash))
            .await?
            .map(|item| ticket_from(hash, &item))
            .transpose()?
            .filter(|t| t.expires_at > now))
    }

    /// A login's second step, all or nothing: the session begins as a
    /// login's does (`start_session`, the password's attempt record or the
    /// vouching device's count cleared with it), the ticket is used up, the
    /// factor's count is cleared, and the proof is spent: a code's step
    /// never accepted again (`last_step < step`: of two racers with one
    /// code, one wins), or the recovery code taken from the set. On the
    /// conditions that the ticket is still there and live, the factor still
    /// the one read and the proof unspent, and `user` as read (`Conflict`).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_session_by_factor(
        &self,
        session: &Session,
        first: &RefreshRecord,
        user: &User,
        device: &DeviceChange<'_>,
        ticket: &MfaTicket,
        factor: &Factor,
        proof: &FactorProof,
        now: i64,
    ) -> Result<(), StoreError> {
        let factor_write = self.spend(factor, proof)?;
        let used = self.ticket_used(ticket, now)?;
        let mut extra = vec![factor_write, used];
        extra.extend(self.recovery_notice(user, factor, proof, now)?);
        self.start_session_with(session, first, user, device, extra)
            .await
    }
}
