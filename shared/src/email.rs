//! Email addresses: checked and normalised once at the edge, like usernames,
//! and kept out of every log line (`Debug` hides them; there is no address
//! in any `tracing` field: a log names the user by id).
//!
//! Rule: at most 254 characters; a local part of 1 to 64 characters of ASCII
//! letters, digits and `.!#$%&'*+/=?^_`{|}~-` (no leading, trailing or
//! doubled dot); a domain of two or more dot-separated labels of ASCII
//! letters, digits and `-` (1 to 63 each, no leading or trailing hyphen; an
//! internationalised domain in its `xn--` form). Stored lower-case: one
//! mailbox, one spelling, so a verified address cannot be claimed twice by
//! case. Quoted local parts, comments and IP literals are refused: no
//! mailbox users give us needs them, and each is a parser to get wrong.

use std::fmt;

use aws_lc_rs::digest::{SHA256, digest};

pub const EMAIL_MAX_CHARS: usize = 254;
const LOCAL_MAX_CHARS: usize = 64;
const LABEL_MAX_CHARS: usize = 63;

/// An address in its normalised form. `Display` shows it (to build a
/// message); `Debug` never does.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "email must be an address like name@example.com: at most {EMAIL_MAX_CHARS} characters, ASCII only (an internationalised domain in its xn-- form)"
)]
pub struct InvalidEmail;

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > EMAIL_MAX_CHARS || !raw.is_ascii() {
            return Err(InvalidEmail);
        }
        let (local, domain) = raw.rsplit_once('@').ok_or(InvalidEmail)?;
        let local_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-.".contains(c);
        if local.is_empty()
            || local.len() > LOCAL_MAX_CHARS
            || !local.chars().all(local_char)
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return Err(InvalidEmail);
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |label: &&str| {
            (1..=LABEL_MAX_CHARS).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(InvalidEmail);
        }
        Ok(Email(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What a rate limit keys on: hex SHA-256 of the address, so the table's
    /// counters hold no address.
    pub fn hash(&self) -> String {
        hex_sha256(self.0.as_bytes())
    }

    /// The address with most of it hidden (`a***@e***.com`), for a page that
    /// shows which address a message went to.
    pub fn masked(&self) -> String {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or((&self.0, ""));
        let (host, tld) = domain.rsplit_once('.').unwrap_or((domain, ""));
        let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
        format!("{}***@{}***.{tld}", first(local), first(host))
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    digest(&SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_trimmed_and_lower_cased_once() {
        let email = Email::parse("  Alice.Smith+auth@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "alice.smith+auth@example.com");
        assert_eq!(email, Email::parse("alice.smith+AUTH@example.com").unwrap());
        assert_eq!(
            Email::parse("bob@xn--bcher-kva.example").unwrap().as_str(),
            "bob@xn--bcher-kva.example"
        );
    }

    #[test]
    fn what_is_not_a_plain_mailbox_is_refused() {
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@localhost",
            "alice@@example.com",
            "al ice@example.com",
            "\"alice\"@example.com",
            "alice@[127.0.0.1]",
            ".alice@example.com",
            "alice.@example.com",
            "al..ice@example.com",
            "alice@-example.com",
            "alice@example-.com",
            "alice@example..com",
            "alïce@example.com",
            "alice@bücher.example",
            "alice@example.com\r\nBcc: eve@example.com",
        ] {
            assert_eq!(Email::parse(bad), Err(InvalidEmail), "{bad:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
        let long = format!("a@{}.com", vec!["b".repeat(63); 4].join("."));
        assert!(long.len() > EMAIL_MAX_CHARS && Email::parse(&long).is_err());
    }

    #[test]
    fn debug_never_shows_the_address_and_the_mask_hides_most_of_it() {
        let email = Email::parse("alice@example.com").unwrap();
        assert!(!format!("{email:?}").contains("alice"));
        assert_eq!(email.masked(), "a***@e***.com");
        assert_ne!(email.hash(), "alice@example.com");
        assert_eq!(email.hash().len(), 64);
    }
}
