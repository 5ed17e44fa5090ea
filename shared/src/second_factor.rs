//! The second factor's secrets at rest, and its recovery codes (issue 29).
//!
//! A TOTP secret is stored sealed: AES-256-GCM under a data key that the
//! functions which check codes unseal once, at init (as issuers unseal
//! their signing key), so that no KMS call lands on the sign-in path. The
//! format, the data key's id and the user's id are the associated data: a
//! sealed secret copied onto another user's record does not open, and one
//! sealed under another data key says so (a rotation of the data key can
//! tell what to re-seal). Each seal draws its own 96-bit nonce.
//!
//! The data key itself is made, stored and unsealed by `second_factor_key`.
//!
//! Recovery codes are ten, each 120 random bits (ASVS 6.5.2 asks 112 at
//! least for a code stored as an unsalted hash), shown once, stored as
//! SHA-256 hashes (of the user's id and the code: a hash copied onto another
//! user's record matches nothing there), each good once. They are typed by
//! people: Crockford's base32 (no `i`, `l`, `o` or `u`; those typed for
//! `1` and `0` read as them), grouped in fours, read back case-blind,
//! without dashes or spaces of any kind.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::email::hex_sha256;
use crate::totp::{Revealed, SECRET_BYTES, TotpSecret, encode_base32};
use crate::users::UserId;

/// AES-GCM's tag.
const TAG_LEN: usize = 16;
/// A data key's length: AES-256.
pub const DATA_KEY_BYTES: usize = 32;
/// Recovery codes issued at once.
pub const RECOVERY_CODES: usize = 10;
/// A recovery code's random bytes: 120 bits, 24 base32 characters.
const RECOVERY_CODE_BYTES: usize = 15;
const RECOVERY_CODE_CHARS: usize = RECOVERY_CODE_BYTES * 8 / 5;
/// Crockford's base32, lower case.
const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// The first byte of a sealed secret: the format, so that another can follow.
const SEALED_V1: u8 = 1;
/// A data key's id: 16 hex digits of its sealed form's SHA-256.
pub const KEY_ID_LEN: usize = 16;
/// A sealed secret's length: format, key id, nonce, secret, tag.
const SEALED_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN + SECRET_BYTES + TAG_LEN;

/// Why a sealed secret did not open.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the data key is {0} bytes, not {DATA_KEY_BYTES}")]
    KeyLength(usize),
    #[error("the sealed secret is malformed")]
    Malformed,
    #[error("the data key's id is malformed")]
    KeyId,
    /// Sealed under another data key (its id is not ours).
    #[error("the secret was sealed under another data key")]
    OtherKey,
    /// Another key, another user, or altered bytes: GCM's tag says which
    /// is not ours to know.
    #[error("the sealed secret does not open under this key for this user")]
    DoesNotOpen,
}

/// The data key, unsealed: seals and opens TOTP secrets.
pub struct SecretBox {
    key: LessSafeKey,
    key_id: String,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBox({})", self.key_id)
    }
}

impl SecretBox {
    /// The box of `data_key`, known as `key_id` (`DataKeyRecord::key_id`).
    pub fn new(data_key: &[u8], key_id: &str) -> Result<Self, SealError> {
        if key_id.len() != KEY_ID_LEN || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SealError::KeyId);
        }
        let key = UnboundKey::new(&AES_256_GCM, data_key)
            .map_err(|_| SealError::KeyLength(data_key.len()))?;
        Ok(SecretBox {
            key: LessSafeKey::new(key),
            key_id: key_id.to_owned(),
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `secret`, sealed for `user`: format byte, key id, nonce, ciphertext
    /// and tag.
    pub fn seal(&self, user: &UserId, secret: &TotpSecret) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random generator failed");
        // Room for the tag: the clear bytes are never moved to a new buffer
        // and left behind in the old.
        let mut body = Zeroizing::new(Vec::with_capacity(SECRET_BYTES + TAG_LEN));
        body.extend_from_slice(secret.as_bytes());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.associated_data(user)),
                &mut *body,
            )
            .expect("AES-GCM seals a 20-byte secret");
        let mut sealed = Vec::with_capacity(SEALED_LEN);
        sealed.push(SEALED_V1);
        sealed.extend_from_slice(self.key_id.as_bytes());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        sealed
    }

    /// The secret `sealed` holds for `user`.
    pub fn open(&self, user: &UserId, sealed: &[u8]) -> Result<TotpSecret, SealError> {
        if sealed.len() != SEALED_LEN || sealed[0] != SEALED_V1 {
            return Err(SealError::Malformed);
        }
        let (key_id, rest) = sealed[1..].split_at(KEY_ID_LEN);
        if key_id != self.key_id.as_bytes() {
            return Err(SealError::OtherKey);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut body = Zeroizing::new(body.to_vec());
        let clear = self
            .key
            .open_in_place(nonce, Aad::from(self.associated_data(user)), &mut body)
            .map_err(|_| SealError::DoesNotOpen)?;
        TotpSecret::from_bytes(Zeroizing::new(clear.to_vec())).map_err(|_| SealError::Malformed)
    }

    /// The format, the data key's id, the user's.
    fn associated_data(&self, user: &UserId) -> Vec<u8> {
        format!("totp:v{SEALED_V1}:{}:{user}", self.key_id).into_bytes()
    }
}

/// The data key as stored: its ciphertext, as KMS returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataKeyRecord {
    pub sealed: Vec<u8>,
    pub created_at: i64,
}

impl DataKeyRecord {
    /// The key's id, which every secret sealed under it carries: from its
    /// sealed form, so that nothing else has to be kept in step with it.
    pub fn key_id(&self) -> String {
        hex_sha256(&self.sealed)[..KEY_ID_LEN].to_owned()
    }
}

/// Recovery codes just issued: shown once, never stored or logged in clear.
pub struct RecoveryCodes {
    pub codes: Vec<Revealed>,
}

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryCodes({} codes)", self.codes.len())
    }
}

impl RecoveryCodes {
    pub fn generate() -> Self {
        let random = SystemRandom::new();
        let codes = (0..RECOVERY_CODES)
            .map(|_| {
                let mut bytes = Zeroizing::new([0u8; RECOVERY_CODE_BYTES]);
                random
                    .fill(bytes.as_mut())
                    .expect("the system's random generator failed");
                let plain = encode_base32(bytes.as_ref(), CROCKFORD);
                let mut grouped = Zeroizing::new(String::with_capacity(RECOVERY_CODE_CHARS + 5));
                for (i, c) in plain.chars().enumerate() {
                    if i > 0 && i % 4 == 0 {
                        grouped.push('-');
                    }
                    grouped.push(c);
                }
                Revealed::new(grouped)
            })
            .collect();
        RecoveryCodes { codes }
    }

    /// What is stored for `user`: each code's hash.
    pub fn hashes(&self, user: &UserId) -> Vec<String> {
        self.codes
            .iter()
            .map(|c| recovery_code_hash(user, c.expose()).expect("a code just made reads back"))
            .collect()
    }
}

/// The hash `user`'s typed recovery code is looked for under: none for text
/// that is not one (the wrong length, or a character it cannot hold).
pub fn recovery_code_hash(user: &UserId, typed: &str) -> Option<String> {
    let code = normalised_recovery_code(typed)?;
    let input = Zeroizing::new(format!("recovery:{user}:{}", code.as_str()));
    Some(hex_sha256(input.as_bytes()))
}

/// Whether `text` has the shape of a recovery code rather than a TOTP code.
pub fn looks_like_recovery_code(text: &str) -> bool {
    normalised_recovery_code(text).is_some()
}

/// A typed recovery code as issued: without dashes and spaces of any kind,
/// lower case, `i` and `l` read as `1` and `o` as `0`.
fn normalised_recovery_code(typed: &str) -> Option<Zeroizing<String>> {
    let mut code = Zeroizing::new(String::with_capacity(RECOVERY_CODE_CHARS));
    for c in typed.chars() {
        if c.is_whitespace() || matches!(c, '-' | '‐' | '‑' | '‒' | '–' | '—' | '―' | '−')
        {
            continue;
        }
        let c = match c.to_ascii_lowercase() {
            'i' | 'l' => '1',
            'o' => '0',
            c => c,
        };
        if !c.is_ascii() || !CROCKFORD.contains(&(c as u8)) || code.len() == RECOVERY_CODE_CHARS {
            return None;
        }
        code.push(c);
    }
    (code.len() == RECOVERY_CODE_CHARS).then_some(code)
}

/// A new data key (for tests: deployed, KMS makes it).
pub fn generate_data_key() -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(vec![0u8; DATA_KEY_BYTES]);
    SystemRandom::new()
        .fill(&mut key)
        .expect("the system's random generator failed");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::random()
    }

    fn sealer() -> SecretBox {
        SecretBox::new(&generate_data_key(), "0123456789abcdef").unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_for_its_user_under_its_key_only() {
        let key = generate_data_key();
        let sealer = SecretBox::new(&key, "0123456789abcdef").unwrap();
        let (alice, bob) = (user(), user());
        let secret = TotpSecret::generate();
        let sealed = sealer.seal(&alice, &secret);
        assert_eq!(
            sealer.open(&alice, &sealed).unwrap().as_bytes(),
            secret.as_bytes()
        );
        // Copied to another user's record: it does not open.
        assert_eq!(
            sealer.open(&bob, &sealed).unwrap_err(),
            SealError::DoesNotOpen
        );
        // Under another key of the same id (as if its record were swapped).
        let other = SecretBox::new(&generate_data_key(), "0123456789abcdef").unwrap();
        assert_eq!(
            other.open(&alice, &sealed).unwrap_err(),
            SealError::DoesNotOpen
        );
        // The same key known by another id: the id is bound in.
        let renamed = SecretBox::new(&key, "fedcba9876543210").unwrap();
        assert_eq!(
            renamed.open(&alice, &sealed).unwrap_err(),
            SealError::OtherKey
        );
        let mut relabelled = sealed.clone();
        relabelled[1..17].copy_from_slice(b"fedcba9876543210");
        assert_eq!(
            renamed.open(&alice, &relabelled).unwrap_err(),
            SealError::DoesNotOpen
        );
        // Any byte of nonce, ciphertext or tag altered.
        for i in 17..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 1;
            assert_eq!(
                sealer.open(&alice, &altered).unwrap_err(),
                SealError::DoesNotOpen,
                "byte {i}"
            );
        }
        for short in [0, 1, 17, 29, 64] {
            assert_eq!(
                sealer.open(&alice, &sealed[..short]).unwrap_err(),
                SealError::Malformed,
                "{short} bytes"
            );
        }
        let mut other_format = sealed.clone();
        other_format[0] = 2;
        assert_eq!(
            sealer.open(&alice, &other_format).unwrap_err(),
            SealError::Malformed
        );
    }

    #[test]
    fn each_seal_draws_its_own_nonce_and_hides_the_secret() {
        let sealer = sealer();
        let (alice, secret) = (user(), TotpSecret::generate());
        let (a, b) = (sealer.seal(&alice, &secret), sealer.seal(&alice, &secret));
        assert_ne!(a, b);
        assert_eq!(a.len(), 1 + 16 + 12 + 20 + 16);
        assert!(
            !a.windows(20).any(|w| w == secret.as_bytes()),
            "the secret is not in the sealed bytes"
        );
        assert_eq!(
            SecretBox::new(&[0; 16], "0123456789abcdef").unwrap_err(),
            SealError::KeyLength(16)
        );
        for id in ["", "0123", "0123456789abcdeg", "0123456789abcdef0"] {
            assert_eq!(
                SecretBox::new(&generate_data_key(), id).unwrap_err(),
                SealError::KeyId
            );
        }
        assert_eq!(format!("{sealer:?}"), "SecretBox(0123456789abcdef)");
    }

    #[test]
    fn a_data_key_is_known_by_its_sealed_forms_hash() {
        let record = DataKeyRecord {
            sealed: b"a sealed key".to_vec(),
            created_at: 0,
        };
        assert_eq!(record.key_id(), hex_sha256(b"a sealed key")[..16]);
        assert!(SecretBox::new(&generate_data_key(), &record.key_id()).is_ok());
    }

    #[test]
    fn recovery_codes_are_ten_distinct_120_bit_codes_that_read_back_as_typed() {
        let issued = RecoveryCodes::generate();
        let alice = user();
        assert_eq!(issued.codes.len(), 10);
        let hashes = issued.hashes(&alice);
        let distinct: std::collections::HashSet<_> = hashes.iter().collect();
        assert_eq!(distinct.len(), 10);
        for (code, hash) in issued.codes.iter().zip(&hashes) {
            let code = code.expose();
            // 24 Crockford characters in six groups of four.
            assert_eq!(code.len(), 24 + 5, "{code}");
            assert_eq!(code.split('-').count(), 6);
            assert!(
                code.bytes().all(|b| b == b'-' || CROCKFORD.contains(&b)),
                "{code}"
            );
            let typed = [
                code.to_uppercase(),
                code.replace('-', ""),
                code.replace('-', " "),
                code.replace('-', "\t"),
                code.replace('-', "–"),
                code.replace('-', "\u{a0}"),
                format!(" {code}\n"),
            ];
            for typed in typed {
                assert_eq!(
                    recovery_code_hash(&alice, &typed).as_ref(),
                    Some(hash),
                    "{typed}"
                );
            }
            assert!(looks_like_recovery_code(code));
            // Another user's hash of the same code is another hash.
            assert_ne!(recovery_code_hash(&user(), code).as_ref(), Some(hash));
        }
        assert_eq!(format!("{issued:?}"), "RecoveryCodes(10 codes)");
        assert_eq!(format!("{:?}", issued.codes[0]), "Revealed(..)");
    }

    /// The stored hashes depend on the reading: it is fixed here, so that a
    /// change to it, which would void every code issued, fails a test.
    #[test]
    fn a_recovery_code_reads_as_crockford_and_hashes_as_it_always_has() {
        let alice = UserId::parse("6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f").unwrap();
        let expected =
            hex_sha256(b"recovery:6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f:0123456789abcdefghjkmnpq");
        for typed in [
            "0123-4567-89ab-cdef-ghjk-mnpq",
            "O123-4567-89AB-CDEF-GHJK-MNPQ",
            "o123 4567 89ab cdef ghjk mnpq",
        ] {
            assert_eq!(
                recovery_code_hash(&alice, typed),
                Some(expected.clone()),
                "{typed}"
            );
        }
        // `i` and `l` are read as `1`.
        assert_eq!(
            recovery_code_hash(&alice, "0Il3-4567-89ab-cdef-ghjk-mnpq"),
            recovery_code_hash(&alice, "0113-4567-89ab-cdef-ghjk-mnpq")
        );
    }

    #[test]
    fn text_that_is_no_recovery_code_has_no_hash() {
        let alice = user();
        let code = RecoveryCodes::generate()
            .codes
            .remove(0)
            .expose()
            .to_owned();
        for bad in [
            "123456".to_owned(),
            String::new(),
            code[..code.len() - 1].to_owned(),
            format!("{code}a"),
            format!("u{}", &code[1..]),
            format!("{}é", &code[..code.len() - 1]),
            "0123-4567-89ab-cdef-ghjk-mnp_".to_owned(),
        ] {
            assert_eq!(recovery_code_hash(&alice, &bad), None, "{bad}");
        }
        assert!(!looks_like_recovery_code("123456"));
    }
}
