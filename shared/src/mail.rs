//! The messages we send, rendered by our code (text and HTML, the same
//! words), and their sending through Amazon SES v2 (`SendEmail`, simple
//! content). Only a reset or a verification carries a secret, its ticket's;
//! no message ever holds a password, a hash or any other token. Links point
//! at the page's origin from configuration (`PAGE_URL`, else `JWT_ISSUER`),
//! never at a request's Host header, with the secret in the fragment, which
//! no server log or Referer ever sees.

use aws_config::SdkConfig;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message as SesMessage};

use crate::aws::{CallError, classify, endpoint_override};
use crate::config::{ConfigError, Source, required};
use crate::email::Email;
use crate::outbox::Notice;
use crate::tickets::{Purpose, Secrets, TICKET_TTL};
use crate::users::Username;

/// Where mail comes from and where its links lead.
#[derive(Clone, Debug)]
pub struct MailConfig {
    /// `MAIL_FROM`: a verified SES identity (an address, or `Name <address>`).
    pub from: String,
    /// `SES_CONFIGURATION_SET`: SES's event publishing and suppression
    /// settings for our mail; none when unset.
    pub configuration_set: Option<String>,
    /// The page's origin (`PAGE_URL`, else `JWT_ISSUER`), without a trailing slash.
    pub page: String,
}

impl MailConfig {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let from = required(env, "MAIL_FROM")?;
        if from.contains(['\r', '\n']) || !from.contains('@') {
            return Err(ConfigError::Invalid {
                var: "MAIL_FROM",
                reason: "must be one address, or Name <address>".into(),
            });
        }
        let page = crate::browser::page_origin(env)?;
        Ok(MailConfig {
            from,
            configuration_set: env
                .get("SES_CONFIGURATION_SET")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            page,
        })
    }
}

/// One message, rendered. Its parts may hold a ticket's secrets: `Debug`
/// shows the subject alone.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub to: Email,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A message's words: paragraphs, and where they go.
struct Draft {
    subject: String,
    /// Paragraphs; a `Line::Link` is shown as a link, a `Line::Code` set apart.
    lines: Vec<Line>,
}

enum Line {
    Text(String),
    Link(String),
    Code(String),
}

impl Draft {
    fn render(self, to: &Email) -> Message {
        let mut text = String::new();
        let mut html = String::from(
            "<!doctype html><html><body style=\"font-family: sans-serif; line-height: 1.5\">",
        );
        for line in &self.lines {
            match line {
                Line::Text(words) => {
                    text.push_str(words);
                    html.push_str(&format!("<p>{}</p>", escape(words)));
                }
                Line::Link(url) => {
                    text.push_str(url);
                    let url = escape(url);
                    html.push_str(&format!("<p><a href=\"{url}\">{url}</a></p>"));
                }
                Line::Code(code) => {
                    text.push_str(&format!("    {code}"));
                    html.push_str(&format!(
                        "<p style=\"font-size: 1.5em; letter-spacing: 0.2em\"><code>{}</code></p>",
                        escape(code)
                    ));
                }
            }
            text.push_str("\n\n");
        }
        html.push_str("</body></html>");
        Message {
            to: to.clone(),
            subject: self.subject,
            text,
            html,
        }
    }
}

fn escape(raw: &str) -> String {
    raw.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const FOOTER: &str = "You receive this because this address is on an account with us. We never ask for your password by mail.";

/// A reset's or a verification's message: the link (secret in the
/// fragment) and the code to type instead.
pub fn ticket_message(
    config: &MailConfig,
    purpose: Purpose,
    username: &Username,
    to: &Email,
    secrets: &Secrets,
) -> Message {
    let minutes = TICKET_TTL.as_secs() / 60;
    let (subject, ask, fragment, after, not_you) = match purpose {
        Purpose::Reset => (
            "Reset your password",
            format!("Someone asked to reset the password of the account {username}."),
            "reset",
            "Open this link and choose a new password",
            "If you did not ask, ignore this message: your password stays as it is, and the link stops working by itself.",
        ),
        // No account name to an address not yet proved: whoever gave it
        // chose the name.
        Purpose::VerifyEmail => (
            "Verify your email address",
            "This address was given for an account with us.".to_owned(),
            "verify",
            "To confirm it is yours, open this link",
            "If you did not give it, ignore this message: the address is not added without this link or code.",
        ),
    };
    let code = format!("{} {}", &secrets.code[..4], &secrets.code[4..]);
    Draft {
        subject: subject.to_owned(),
        lines: vec![
            Line::Text(ask),
            Line::Text(format!("{after} within {minutes} minutes:")),
            Line::Link(format!("{}/#{fragment}={}", config.page, secrets.link)),
            Line::Text("Or type this code on the page instead:".into()),
            Line::Code(code),
            Line::Text(not_you.into()),
            Line::Text(FOOTER.into()),
        ],
    }
    .render(to)
}

/// A notice: what happened to the account, and what to do if it was not
/// its owner. No secret.
pub fn notice_message(
    config: &MailConfig,
    notice: &Notice,
    username: &Username,
    to: &Email,
) -> Message {
    let reset = format!(
        "If this was not you, reset your password at once from {}/ (\"Forgot password?\") and sign out everywhere.",
        config.page
    );
    let (subject, what, advice) = match notice {
        Notice::PasswordChanged => (
            "Your password was changed",
            format!("The password of the account {username} was just changed. Every other session was signed out."),
            reset,
        ),
        Notice::PasswordReset => (
            "Your password was reset",
            format!("The password of the account {username} was just reset with a link or code sent to this address. Every session was signed out."),
            reset,
        ),
        Notice::PasswordSet => (
            "An administrator set a new password",
            format!("An administrator just set a new password for the account {username}. Every session was signed out; they will tell you the new password, or reset it yourself."),
            reset,
        ),
        Notice::EmailChanged { new } => (
            "Your email address was changed",
            format!("The email address of the account {username} was just changed to {new}. This address will no longer receive its mail."),
            "If this was not you, sign in, or ask us for help: this address can no longer reset the password.".to_owned(),
        ),
        Notice::EmailRemoved => (
            "Your email address was removed",
            format!("This address was just removed from the account {username}. It will no longer receive its mail."),
            "If this was not you, sign in and change your password.".to_owned(),
        ),
        Notice::AccountDeleted => (
            "Your account was deleted",
            format!("The account {username} was just deleted, with everything it held."),
            "If this was not you, contact us: the account cannot be restored by itself.".to_owned(),
        ),
        Notice::IdentityConnected { provider } => (
            "A sign-in provider was connected to your account",
            format!("The account {username} can now be signed in to with {provider}."),
            "If this was not you, sign in and disconnect it, then change your password.".to_owned(),
        ),
        Notice::IdentityDisconnected { provider } => (
            "A sign-in provider was disconnected from your account",
            format!("The account {username} can no longer be signed in to with {provider}."),
            "If this was not you, sign in and change your password.".to_owned(),
        ),
        Notice::SecondFactorAdded => (
            "A second factor was added to your account",
            format!("Signing in to the account {username} now asks for a code from an authenticator app after the password. Ten recovery codes were shown once, to whoever added it."),
            "If this was not you, someone has your password and a session: reset your password, sign out everywhere, and contact us to remove the factor.".to_owned(),
        ),
        Notice::SecondFactorRemoved => (
            "The second factor was removed from your account",
            format!("Signing in to the account {username} no longer asks for a code from an authenticator app: the password alone signs in."),
            "If this was not you, someone has your password, a session and a code: reset your password, sign out everywhere, and add the factor again.".to_owned(),
        ),
        Notice::RecoveryCodesReplaced => (
            "Your recovery codes were replaced",
            format!("Ten new recovery codes were made for the account {username}, shown once to whoever asked; the old ones no longer work."),
            "If this was not you, someone has your password, a session and a code: reset your password and sign out everywhere at once.".to_owned(),
        ),
        Notice::RecoveryCodeUsed { remaining } => (
            "A recovery code was used",
            format!("The account {username} was just signed in to with one of its recovery codes, in place of a code from the app. {remaining} unused recovery codes remain."),
            "If this was not you, someone has your password and a recovery code: reset your password and sign out everywhere at once.".to_owned(),
        ),
        Notice::PasskeyAdded { name } => (
            "A passkey was added to your account",
            format!("A passkey named \"{name}\" can now sign in to the account {username}, with no password."),
            "If this was not you, someone has a session and a recent proof of your sign-in: sign in, remove the passkey, reset your password and sign out everywhere.".to_owned(),
        ),
        Notice::PasskeyRemoved { name } => (
            "A passkey was removed from your account",
            format!("The passkey named \"{name}\" can no longer sign in to the account {username}."),
            "If this was not you, sign in and change your password.".to_owned(),
        ),
        Notice::PasskeyCloned { name } => (
            "A copy of your passkey was refused",
            format!("A sign-in to the account {username} with the passkey named \"{name}\" was refused: its signature counter went backwards, which a copy of the key would show. They are not in."),
            "If you did not copy that key, someone may have: remove the passkey from your account and add a new one.".to_owned(),
        ),
        Notice::WrongSecondFactorCode => (
            "A sign-in got past your password, then typed a wrong code",
            format!("Someone got past the first step of signing in to the account {username} (the right password, or its sign-in provider), then typed a wrong code for the second factor. They are not in."),
            reset,
        ),
        Notice::NewDevice { device } => (
            "New sign-in to your account",
            format!(
                "The account {username} was just signed in to from a device or browser that had not signed in before{}.",
                device
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            reset,
        ),
    };
    Draft {
        subject: subject.to_owned(),
        lines: vec![
            Line::Text(what),
            Line::Text(advice),
            Line::Text(FOOTER.into()),
        ],
    }
    .render(to)
}

/// Sends messages through SES v2.
#[derive(Clone, Debug)]
pub struct Mailer {
    client: aws_sdk_sesv2::Client,
    config: MailConfig,
}

impl Mailer {
    /// An SES client on the shared configuration (endpoint override from
    /// `AWS_ENDPOINT_URL_SESV2`: moto locally).
    pub fn new(sdk: &SdkConfig, config: MailConfig) -> Self {
        let mut builder = aws_sdk_sesv2::config::Builder::from(sdk);
        if let Some(url) = endpoint_override("SESV2") {
            builder = builder.endpoint_url(url);
        }
        Mailer {
            client: aws_sdk_sesv2::Client::from_conf(builder.build()),
            config,
        }
    }

    pub fn config(&self) -> &MailConfig {
        &self.config
    }

    /// Sends `message` (text and HTML parts, UTF-8).
    pub async fn send(&self, message: &Message) -> Result<(), CallError> {
        let content = |data: &str| {
            Content::builder()
                .data(data)
                .charset("UTF-8")
                .build()
                .map_err(|e| CallError::Rejected(format!("sesv2 SendEmail: {e}")))
        };
        let simple = SesMessage::builder()
            .subject(content(&message.subject)?)
            .body(
                Body::builder()
                    .text(content(&message.text)?)
                    .html(content(&message.html)?)
                    .build(),
            )
            .build();
        self.client
            .send_email()
            .from_email_address(&self.config.from)
            .destination(
                Destination::builder()
                    .to_addresses(message.to.as_str())
                    .build(),
            )
            .content(EmailContent::builder().simple(simple).build())
            .set_configuration_set_name(self.config.configuration_set.clone())
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tickets::Ticket;
    use crate::users::User;

    fn config() -> MailConfig {
        MailConfig {
            from: "Auth <no-reply@example.com>".into(),
            configuration_set: None,
            page: "https://auth.example.com".into(),
        }
    }

    #[test]
    fn a_reset_message_carries_the_link_in_the_fragment_and_the_code_in_both_parts() {
        let user = User::new(Username::parse("alice").unwrap(), "A".into(), "h".into());
        let to = Email::parse("alice@example.com").unwrap();
        let (_, secrets) = Ticket::issue(Purpose::Reset, &user, to.clone(), 0);
        let message = ticket_message(&config(), Purpose::Reset, &user.username, &to, &secrets);
        let link = format!("https://auth.example.com/#reset={}", secrets.link);
        let code = format!("{} {}", &secrets.code[..4], &secrets.code[4..]);
        for part in [&message.text, &message.html] {
            assert!(part.contains(&link), "{part}");
            assert!(part.contains(&code), "{part}");
            assert!(part.contains("10 minutes"));
        }
        assert_eq!(message.to, to);
        assert_eq!(message.subject, "Reset your password");
        let verify = ticket_message(
            &config(),
            Purpose::VerifyEmail,
            &user.username,
            &to,
            &secrets,
        );
        assert!(verify.text.contains("/#verify="));
        assert!(
            !verify.text.contains("alice"),
            "no account name to an unproved address"
        );
        assert!(
            !format!("{message:?}").contains(&secrets.code),
            "Debug hides the parts"
        );
    }

    #[test]
    fn html_is_escaped_and_notices_hold_no_secret() {
        let to = Email::parse("alice@example.com").unwrap();
        let alice = Username::parse("alice").unwrap();
        let message = notice_message(
            &config(),
            &Notice::NewDevice {
                device: Some("<script>x</script> & co".into()),
            },
            &alice,
            &to,
        );
        assert!(message.text.contains("<script>x</script> & co"));
        assert!(!message.html.contains("<script>"));
        assert!(
            message
                .html
                .contains("&lt;script&gt;x&lt;/script&gt; &amp; co")
        );
        for notice in [
            Notice::PasswordChanged,
            Notice::PasswordReset,
            Notice::PasswordSet,
            Notice::EmailChanged {
                new: "b***@e***.org".into(),
            },
            Notice::EmailRemoved,
            Notice::AccountDeleted,
        ] {
            let message = notice_message(&config(), &notice, &alice, &to);
            assert!(!message.text.contains('#'), "no link with a secret");
            assert!(message.text.contains("alice"));
        }
    }

    #[test]
    fn the_page_comes_from_configuration_and_must_be_https_or_localhost() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == var)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let issuer = MailConfig::from_source(&env(&[
            ("MAIL_FROM", "no-reply@example.com"),
            ("JWT_ISSUER", "https://auth.example.com/"),
        ]))
        .unwrap();
        assert_eq!(issuer.page, "https://auth.example.com");
        let page = MailConfig::from_source(&env(&[
            ("MAIL_FROM", "no-reply@example.com"),
            ("JWT_ISSUER", "https://api.example.com"),
            ("PAGE_URL", "http://localhost:9000"),
            ("SES_CONFIGURATION_SET", "auth"),
        ]))
        .unwrap();
        assert_eq!(page.page, "http://localhost:9000");
        assert_eq!(page.configuration_set.as_deref(), Some("auth"));
        for bad in [
            &[
                ("MAIL_FROM", "no-reply@example.com"),
                ("JWT_ISSUER", "http://auth.example.com"),
            ][..],
            &[
                ("MAIL_FROM", "no-reply@example.com"),
                ("PAGE_URL", "https://a.example/?x"),
            ],
            &[
                ("MAIL_FROM", "nobody"),
                ("JWT_ISSUER", "https://auth.example.com"),
            ],
            &[("JWT_ISSUER", "https://auth.example.com")],
        ] {
            let bad: &'static [(&str, &str)] = Box::leak(bad.to_vec().into_boxed_slice());
            assert!(MailConfig::from_source(&env(bad)).is_err(), "{bad:?}");
        }
    }
}
