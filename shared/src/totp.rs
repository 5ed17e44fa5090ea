//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP), as
//! authenticator apps make them: the second factor's codes. A secret is
//! 160 random bits (RFC 4226 §4's recommendation), shown once to the
//! person's app as an `otpauth://` URI (base32, as the apps read it), and
//! never logged: its `Debug` says nothing of it. A code is 6 digits of a
//! 30 s step, accepted from one step either side of ours (clock drift), and
//! only from a step later than the last one accepted, so that no code (and
//! no older one) works twice; the caller records the step a code was
//! accepted at, conditionally, so that two racers cannot both use it.

use std::fmt::Write as _;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// A secret's length: 160 bits.
pub const SECRET_BYTES: usize = 20;
/// A step's length (RFC 6238's default, which every app uses).
pub const STEP_SECONDS: i64 = 30;
/// A code's digits.
pub const DIGITS: u32 = 6;
/// Steps either side of ours a code may come from.
pub const DRIFT_STEPS: i64 = 1;

/// The HMAC a code is made with. Apps use SHA-1 (what `otpauth://` means
/// unless told); the others are RFC 6238's too, and its test vectors'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha512,
}

impl Hash {
    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Hash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => hmac::HMAC_SHA256,
            Hash::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// A secret text to show the person once (a TOTP secret, its URI, a
/// recovery code): zeroed on drop, and its `Debug` says nothing of it.
/// `expose` is the one way to its text, where an answer carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Revealed(Zeroizing<String>);

impl Revealed {
    pub(crate) fn new(text: Zeroizing<String>) -> Self {
        Revealed(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Revealed(..)")
    }
}

/// A code as typed: six ASCII digits, once surrounding space and one space
/// in the middle (`123 456`, as apps show them) are taken out.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpCode(Zeroizing<String>);

impl std::fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpCode(..)")
    }
}

impl TotpCode {
    pub fn parse(typed: &str) -> Option<Self> {
        let typed = typed.trim();
        let code = match typed.split_once(' ') {
            Some((a, b)) if a.len() == 3 && b.len() == 3 => Zeroizing::new(format!("{a}{b}")),
            Some(_) => return None,
            None => Zeroizing::new(typed.to_owned()),
        };
        let valid = code.len() == DIGITS as usize && code.bytes().all(|b| b.is_ascii_digit());
        valid.then_some(TotpCode(code))
    }
}

/// A person's TOTP secret, in clear: only ever in memory, zeroed on drop.
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

/// A secret that is not 160 bits.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a TOTP secret is {SECRET_BYTES} bytes, not {0}")]
pub struct SecretLength(pub usize);

impl TotpSecret {
    /// A new secret from the system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system's random generator failed");
        TotpSecret(bytes)
    }

    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Result<Self, SecretLength> {
        if bytes.len() != SECRET_BYTES {
            return Err(SecretLength(bytes.len()));
        }
        Ok(TotpSecret(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as apps take it typed in: base32, unpadded (RFC 4648).
    pub fn base32(&self) -> Revealed {
        Revealed(base32(&self.0))
    }

    /// What the person's app scans (the Key URI Format apps share):
    /// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…` with our
    /// algorithm, digits and period spelt out.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> Revealed {
        let (issuer, account) = (encode(issuer), encode(account));
        let secret = base32(&self.0);
        let mut uri = Zeroizing::new(String::with_capacity(
            128 + 2 * issuer.len() + account.len() + secret.len(),
        ));
        // Writing to a String cannot fail.
        let _ = write!(
            uri,
            "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            secret.as_str()
        );
        Revealed(uri)
    }

    /// The code of `step` (6 digits, SHA-1); none before the epoch.
    pub fn code_at(&self, step: i64) -> Option<Revealed> {
        let counter = u64::try_from(step).ok()?;
        Some(Revealed(hotp(&self.0, counter, DIGITS, Hash::Sha1)))
    }

    /// Which step `code` is of, among those within `DRIFT_STEPS` of `now`'s
    /// and later than `last_used` (the step of the last code accepted):
    /// none for a wrong code or one used already. Every step in the window
    /// is computed and compared in constant time, whatever the answer.
    /// `last_used` only spares a write: what makes a code single use is
    /// the caller's conditional write of the step it was accepted at.
    pub fn verify(&self, code: &TotpCode, now: i64, last_used: Option<i64>) -> Option<i64> {
        let current = step_of(now);
        let mut found = None;
        for step in current - DRIFT_STEPS..=current + DRIFT_STEPS {
            let Some(expected) = self.code_at(step) else {
                continue;
            };
            let equal =
                verify_slices_are_equal(expected.expose().as_bytes(), code.0.as_bytes()).is_ok();
            let unused = last_used.is_none_or(|last| step > last);
            if equal && unused && found.is_none() {
                found = Some(step);
            }
        }
        found
    }
}

/// The step `now` (unix seconds) falls in.
pub fn step_of(now: i64) -> i64 {
    now.div_euclid(STEP_SECONDS)
}

/// RFC 4226's HOTP: `digits` (at most 9) decimal digits of the dynamically
/// truncated HMAC of `counter` (big-endian) under `key`.
fn hotp(key: &[u8], counter: u64, digits: u32, hash: Hash) -> Zeroizing<String> {
    assert!(digits <= 9, "a 31-bit value has at most 9 whole digits");
    let key = hmac::Key::new(hash.algorithm(), key);
    let mac = hmac::sign(&key, &counter.to_be_bytes());
    let mac = mac.as_ref();
    let offset = (mac[mac.len() - 1] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]) & 0x7fff_ffff;
    let code = u64::from(binary) % 10u64.pow(digits);
    let mut text = Zeroizing::new(String::with_capacity(digits as usize));
    let _ = write!(text, "{code:0width$}", width = digits as usize);
    text
}

/// RFC 4648 base32, unpadded, upper case.
pub fn base32(bytes: &[u8]) -> Zeroizing<String> {
    encode_base32(bytes, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
}

/// Base32 in `alphabet`, unpadded (RFC 4648's, or Crockford's).
pub(crate) fn encode_base32(bytes: &[u8], alphabet: &[u8; 32]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len().div_ceil(5) * 8));
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = ((buffer << 8) | u32::from(byte)) & 0xffff;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(alphabet[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(alphabet[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Percent-encoding for the URI's label and issuer: all but RFC 3986's
/// unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_SHA1: &[u8] = b"12345678901234567890";
    const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
    const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    fn totp(seed: &[u8], time: i64, hash: Hash) -> String {
        hotp(seed, step_of(time) as u64, 8, hash).to_string()
    }

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(Zeroizing::new(SEED_SHA1.to_vec())).unwrap()
    }

    fn code(text: &str) -> TotpCode {
        TotpCode::parse(text).unwrap()
    }

    /// RFC 6238 Appendix B, every row: 8 digits, 30 s steps, T0 = 0.
    #[test]
    fn rfc_6238_appendix_b() {
        let table: [(i64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (time, sha1, sha256, sha512) in table {
            assert_eq!(totp(SEED_SHA1, time, Hash::Sha1), sha1, "SHA-1 at {time}");
            assert_eq!(
                totp(SEED_SHA256, time, Hash::Sha256),
                sha256,
                "SHA-256 at {time}"
            );
            assert_eq!(
                totp(SEED_SHA512, time, Hash::Sha512),
                sha512,
                "SHA-512 at {time}"
            );
        }
    }

    /// RFC 4226 Appendix D: HOTP's 6-digit values for counts 0 to 9.
    #[test]
    fn rfc_4226_appendix_d() {
        let values = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (count, value) in values.iter().enumerate() {
            assert_eq!(
                hotp(SEED_SHA1, count as u64, 6, Hash::Sha1).as_str(),
                *value
            );
        }
    }

    /// Our codes are the 6-digit SHA-1 codes apps show: RFC 6238's rows,
    /// cut to 6 digits (the truncation is the same number mod 10^6).
    #[test]
    fn six_digit_codes_are_the_last_six_of_the_rfc_values() {
        let secret = rfc_secret();
        let at = |time| secret.code_at(step_of(time)).unwrap().expose().to_owned();
        assert_eq!(at(59), "287082");
        assert_eq!(at(1111111109), "081804");
        assert_eq!(at(1234567890), "005924");
        // Before the epoch there is no step, and no code.
        assert_eq!(secret.code_at(-1), None);
    }

    #[test]
    fn a_code_is_accepted_within_one_step_of_ours_and_never_from_a_used_step() {
        // The RFC's seed at a fixed time whose five steps around it all have
        // different codes: a code matches its own step only.
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let step = step_of(now);
        let codes: Vec<String> = (-2..=2)
            .map(|d| secret.code_at(step + d).unwrap().expose().to_owned())
            .collect();
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), 5, "{codes:?}");
        for drift in [-1, 0, 1] {
            let typed = code(&codes[(drift + 2) as usize]);
            assert_eq!(secret.verify(&typed, now, None), Some(step + drift));
        }
        for far in [-2, 2] {
            let typed = code(&codes[(far + 2) as usize]);
            assert_eq!(secret.verify(&typed, now, None), None, "{far} steps away");
        }
        let current = code(&codes[2]);
        // The step it is from, or a later one, was accepted already.
        assert_eq!(secret.verify(&current, now, Some(step)), None);
        assert_eq!(secret.verify(&current, now, Some(step + 1)), None);
        assert_eq!(secret.verify(&current, now, Some(step - 1)), Some(step));
        // A wrong code.
        assert_eq!(secret.verify(&code("000000"), now, None), None);
    }

    #[test]
    fn near_the_epoch_only_steps_that_exist_are_tried() {
        let secret = rfc_secret();
        let first = secret.code_at(0).unwrap();
        assert_eq!(secret.verify(&code(first.expose()), 10, None), Some(0));
        assert_eq!(secret.verify(&code("000000"), 10, None), None);
    }

    #[test]
    fn codes_are_read_as_apps_show_them_and_nothing_else() {
        assert_eq!(code("123456"), code(" 123 456 "));
        assert_eq!(code("123456"), code("123456\n"));
        for bad in [
            "",
            "12345",
            "1234567",
            "12345a",
            "12 3456",
            "123  456",
            "１２３４５６",
            "12-456",
        ] {
            assert!(TotpCode::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(format!("{:?}", code("123456")), "TotpCode(..)");
    }

    #[test]
    fn secrets_are_160_random_bits_and_never_shown_by_debug() {
        let (a, b) = (TotpSecret::generate(), TotpSecret::generate());
        assert_eq!(a.as_bytes().len(), 20);
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_eq!(format!("{a:?}"), "TotpSecret(..)");
        assert_eq!(format!("{:?}", a.base32()), "Revealed(..)");
        assert_eq!(format!("{:?}", a.otpauth_uri("i", "a")), "Revealed(..)");
        assert_eq!(
            TotpSecret::from_bytes(Zeroizing::new(vec![0; 16])).unwrap_err(),
            SecretLength(16)
        );
    }

    #[test]
    fn base32_is_rfc_4648s() {
        // RFC 4648 §10, unpadded.
        for (text, encoded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(text.as_bytes()).as_str(), encoded);
        }
        assert_eq!(
            base32(SEED_SHA1).as_str(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn the_uri_names_issuer_account_and_parameters() {
        assert_eq!(
            rfc_secret().otpauth_uri("Auth Demo", "alice@x").expose(),
            "otpauth://totp/Auth%20Demo:alice%40x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Auth%20Demo&algorithm=SHA1&digits=6&period=30"
        );
    }
}
