//! Mail jobs: what the mail function is asked to send, written to the table
//! (`MAIL#<id>`) in the same transaction as the change they tell of (a
//! transactional outbox), so a notice goes out if and only if its change
//! committed. The table's stream hands each new job to the mail function
//! (template.yaml; locally scripts/mail-pump.py), which renders and sends it
//! and deletes it. No job holds a secret: a reset's or a verification's
//! secrets are drawn by the mail function itself and exist only hashed in
//! the table and in clear in the message.
//!
//! A reset request's job holds only what was typed: the requester's answer
//! is the same write whether or not an account matches, and the mail
//! function does the lookup, out of the requester's sight.

use crate::email::Email;
use crate::users::{UserId, Username};

/// How long an unsent job is kept (TTL): a stream holds records a day.
pub const JOB_TTL_SECONDS: i64 = 24 * 3600;

/// Who a reset is asked for: a username or an address, as typed (normalised).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identifier {
    Username(Username),
    Email(Email),
}

/// A mail to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailJob {
    /// A reset was asked for: if the identifier names an active account with
    /// a verified address, a reset ticket goes to it.
    Reset { identifier: Identifier },
    /// An address was added or changed: a verification ticket goes to it,
    /// if it is still the user's pending address.
    VerifyEmail {
        user_id: UserId,
        username: Username,
        email: Email,
    },
    /// Something happened to the account: its verified address is told.
    Notice {
        notice: Notice,
        to: Email,
        username: Username,
    },
}

/// What a notice tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    PasswordChanged,
    PasswordReset,
    /// An admin set a new password.
    PasswordSet,
    /// The address changed to another (sent to the old one).
    EmailChanged {
        new: String,
    },
    /// The address was removed (sent to it).
    EmailRemoved,
    AccountDeleted,
    /// A sign-in from a device that had not signed in before.
    NewDevice {
        device: Option<String>,
    },
    /// An outside identity provider can now sign in to the account (a
    /// connection, or a first sign-in linked by the verified address).
    IdentityConnected {
        provider: String,
    },
    /// An outside identity provider signs in to the account no more.
    IdentityDisconnected {
        provider: String,
    },
    /// A second factor now guards every sign-in.
    SecondFactorAdded,
    /// The second factor was removed: the password alone signs in again.
    SecondFactorRemoved,
    /// Every recovery code was replaced by ten new ones.
    RecoveryCodesReplaced,
    /// A recovery code signed in, in place of a code from the app.
    RecoveryCodeUsed {
        remaining: usize,
    },
    /// A wrong second-factor code after the right password: someone may
    /// know the password.
    WrongSecondFactorCode,
    /// A passkey now signs in to the account.
    PasskeyAdded {
        name: String,
    },
    /// A passkey signs in no more.
    PasskeyRemoved {
        name: String,
    },
    /// A passkey's signature counter went backwards: a copy of it was
    /// refused.
    PasskeyCloned {
        name: String,
    },
}

impl Notice {
    pub fn as_str(&self) -> &'static str {
        match self {
            Notice::PasswordChanged => "password_changed",
            Notice::PasswordReset => "password_reset",
            Notice::PasswordSet => "password_set",
            Notice::EmailChanged { .. } => "email_changed",
            Notice::EmailRemoved => "email_removed",
            Notice::AccountDeleted => "account_deleted",
            Notice::NewDevice { .. } => "new_device",
            Notice::IdentityConnected { .. } => "identity_connected",
            Notice::IdentityDisconnected { .. } => "identity_disconnected",
            Notice::SecondFactorAdded => "second_factor_added",
            Notice::SecondFactorRemoved => "second_factor_removed",
            Notice::RecoveryCodesReplaced => "recovery_codes_replaced",
            Notice::RecoveryCodeUsed { .. } => "recovery_code_used",
            Notice::WrongSecondFactorCode => "wrong_second_factor_code",
            Notice::PasskeyAdded { .. } => "passkey_added",
            Notice::PasskeyRemoved { .. } => "passkey_removed",
            Notice::PasskeyCloned { .. } => "passkey_cloned",
        }
    }
}

impl MailJob {
    /// `kind` of the item, and the metric dimension of its outcome.
    pub fn kind(&self) -> &'static str {
        match self {
            MailJob::Reset { .. } => "reset",
            MailJob::VerifyEmail { .. } => "verify_email",
            MailJob::Notice { notice, .. } => notice.as_str(),
        }
    }

    /// A notice to `user`'s verified address, if they have one.
    pub fn notice_to(user: &crate::users::User, notice: Notice) -> Option<MailJob> {
        user.email.clone().map(|to| MailJob::Notice {
            notice,
            to,
            username: user.username.clone(),
        })
    }
}
