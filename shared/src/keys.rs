//! Signing keys. Tokens are RS256; the private key signs and never leaves
//! where it lives: AWS KMS when deployed (`kms:Sign`, the key is never
//! exported), a PEM file locally. Everything else verifies with public keys,
//! loaded once per instance and looked up by `kid`.
//!
//! Key sources (`JWT_SIGNING_KEY`, and `JWT_VERIFICATION_KEYS`, a comma-separated list):
//! - `kms:<key id or key ARN>`: an asymmetric `RSA_2048` `SIGN_VERIFY` KMS key. Its
//!   `kid` is the key id (the UUID). Verifiers may also name an alias
//!   (`kms:alias/…`); the signer needs the id, so that init costs no KMS call.
//! - `pem:<path>`: a PEM file, a PKCS#8 private key (signer) or a public key
//!   (verifiers; a private key file works too). Its `kid` is the key's RFC 7638
//!   JWK thumbprint.
//! - `sealed:<key id or key ARN>` (signer only; sealed mode, the default
//!   deployed): the table's issuer keys (`issuer_keys`), whose private halves
//!   this symmetric KMS key seals. The issuer unseals the one that signs.
//! - `table` (verifiers only): the public halves of the table's issuer keys,
//!   read at init and again on a bounded schedule (`key_set`).

use std::collections::HashMap;
use std::path::PathBuf;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKey as RsaPublicKey, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use aws_sdk_kms::Client as KmsClient;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use serde::Serialize;

use crate::aws::{CallError, classify};
use crate::config::{ConfigError, Source, required};

/// Where a key lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Kms(String),
    Pem(PathBuf),
    /// The table's keys, sealed by this symmetric KMS key.
    Sealed(String),
    /// The table's public keys.
    Table,
}

impl KeySource {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if let Some(id) = raw.strip_prefix("kms:").filter(|id| !id.is_empty()) {
            Ok(KeySource::Kms(id.to_owned()))
        } else if let Some(path) = raw.strip_prefix("pem:").filter(|p| !p.is_empty()) {
            Ok(KeySource::Pem(PathBuf::from(path)))
        } else if let Some(id) = raw.strip_prefix("sealed:").filter(|id| !id.is_empty()) {
            Ok(KeySource::Sealed(id.to_owned()))
        } else if raw == "table" {
            Ok(KeySource::Table)
        } else {
            Err(format!(
                "{raw:?} is none of kms:<key id>, pem:<path>, sealed:<key id>, table"
            ))
        }
    }
}

/// The signing key of a token-issuing function.
pub fn signing_key_from(env: &impl Source) -> Result<KeySource, ConfigError> {
    let var = "JWT_SIGNING_KEY";
    let source = KeySource::parse(&required(env, var)?)
        .map_err(|reason| ConfigError::Invalid { var, reason })?;
    if let KeySource::Kms(id) = &source
        && id.starts_with("alias/")
    {
        return Err(ConfigError::Invalid {
            var,
            reason: "name the KMS key by id or ARN, not by alias (its kid is the key id)".into(),
        });
    }
    if source == KeySource::Table {
        return Err(ConfigError::Invalid {
            var,
            reason: "the table's keys sign as sealed:<sealing key id>".into(),
        });
    }
    Ok(source)
}

/// The keys a verifying function accepts: the current one and, during a
/// rotation, the previous one.
pub fn verification_keys_from(env: &impl Source) -> Result<Vec<KeySource>, ConfigError> {
    let var = "JWT_VERIFICATION_KEYS";
    required(env, var)?
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| match KeySource::parse(s) {
            Ok(KeySource::Sealed(_)) => Err(ConfigError::Invalid {
                var,
                reason: "verifiers read the table's public keys as table, and need no sealing key"
                    .into(),
            }),
            other => other.map_err(|reason| ConfigError::Invalid { var, reason }),
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("key {0} is not a usable RSA key: {1}")]
    Invalid(String, String),
    #[error("KMS is unavailable: {0}")]
    Unavailable(String),
    #[error("KMS refused: {0}")]
    Rejected(String),
}

impl From<CallError> for KeyError {
    fn from(err: CallError) -> Self {
        match err {
            CallError::Unavailable(detail) => KeyError::Unavailable(detail),
            CallError::Rejected(detail) => KeyError::Rejected(detail),
        }
    }
}

/// An RSA public key and its `kid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
}

/// A key as RFC 7517 publishes it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
    pub n: String,
    pub e: String,
}

impl PublicKey {
    /// From DER: `SubjectPublicKeyInfo` (what KMS returns) or PKCS#1 `RSAPublicKey`.
    /// Without a `kid`, the RFC 7638 thumbprint is used.
    pub fn from_der(der: &[u8], kid: Option<String>, name: &str) -> Result<Self, KeyError> {
        let key = RsaPublicKey::from_der(der)
            .map_err(|e| KeyError::Invalid(name.to_owned(), e.to_string()))?;
        let components: PublicKeyComponents<Vec<u8>> = (&key).into();
        if components.n.len() * 8 < 2048 {
            return Err(KeyError::Invalid(
                name.to_owned(),
                "shorter than 2048 bits".into(),
            ));
        }
        let mut key = PublicKey {
            kid: String::new(),
            n: components.n,
            e: components.e,
        };
        key.kid = kid.unwrap_or_else(|| key.thumbprint());
        Ok(key)
    }

    /// RFC 7638: base64url SHA-256 of the canonical JSON of the required members.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(&self.e),
            URL_SAFE_NO_PAD.encode(&self.n)
        );
        URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()))
    }

    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "RSA".into(),
            kid: self.kid.clone(),
            use_: "sig".into(),
            alg: "RS256".into(),
            n: URL_SAFE_NO_PAD.encode(&self.n),
            e: URL_SAFE_NO_PAD.encode(&self.e),
        }
    }

    pub fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_rsa_raw_components(&self.n, &self.e)
    }
}

/// Loads the public keys of `sources`, once, at init (the table's are
/// `key_set`'s, and skipped here).
pub async fn load_public_keys(
    sources: &[KeySource],
    kms: &KmsClient,
) -> Result<Vec<PublicKey>, KeyError> {
    // All at once: during a rotation a verifier waits one KMS round trip, not two.
    futures_util::future::try_join_all(
        sources
            .iter()
            .filter(|source| !matches!(source, KeySource::Table | KeySource::Sealed(_)))
            .map(|source| load_public_key(source, kms)),
    )
    .await
}

async fn load_public_key(source: &KeySource, kms: &KmsClient) -> Result<PublicKey, KeyError> {
    match source {
        KeySource::Table | KeySource::Sealed(_) => Err(KeyError::Invalid(
            "table".into(),
            "the table's keys are read by key_set".into(),
        )),
        KeySource::Kms(id) => {
            let output = kms
                .get_public_key()
                .key_id(id)
                .send()
                .await
                .map_err(classify)?;
            let der = output.public_key().ok_or_else(|| {
                KeyError::Invalid(id.clone(), "KMS returned no public key".into())
            })?;
            let kid = output
                .key_id()
                .map(kms_key_uuid)
                .unwrap_or_else(|| kms_key_uuid(id));
            PublicKey::from_der(der.as_ref(), Some(kid), id)
        }
        KeySource::Pem(path) => {
            public_key_from_pem(&read_pem_file(path)?, &path.display().to_string())
        }
    }
}

/// The id part of a KMS key ARN (`arn:…:key/<uuid>` → `<uuid>`); ids pass through.
fn kms_key_uuid(id: &str) -> String {
    id.rsplit_once(":key/")
        .map_or(id, |(_, uuid)| uuid)
        .to_owned()
}

fn read_pem_file(path: &PathBuf) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|e| KeyError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The DER inside the first PEM block labelled `label`.
fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A public key from a PEM: `PUBLIC KEY`, `RSA PUBLIC KEY` or a `PRIVATE KEY`.
pub fn public_key_from_pem(pem: &str, name: &str) -> Result<PublicKey, KeyError> {
    if let Some(der) = pem_block(pem, "PUBLIC KEY").or_else(|| pem_block(pem, "RSA PUBLIC KEY")) {
        return PublicKey::from_der(&der, None, name);
    }
    let pair = private_key_from_pem(pem, name)?;
    PublicKey::from_der(pair.public_key().as_ref(), None, name)
}

fn private_key_from_pem(pem: &str, name: &str) -> Result<KeyPair, KeyError> {
    let der = pem_block(pem, "PRIVATE KEY").ok_or_else(|| {
        KeyError::Invalid(
            name.to_owned(),
            "no PEM block PUBLIC KEY or PRIVATE KEY".into(),
        )
    })?;
    KeyPair::from_pkcs8(&der).map_err(|e| KeyError::Invalid(name.to_owned(), e.to_string()))
}

/// A new RSA-2048 key pair as PEM: (PKCS#8 private key, SubjectPublicKeyInfo).
/// For `make dev` and tests; deployed stacks sign with KMS.
pub fn generate_pem_pair() -> Result<(String, String), KeyError> {
    let invalid = |e: &dyn std::fmt::Display| KeyError::Invalid("generated".into(), e.to_string());
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|e| invalid(&e))?;
    let private = pair.as_der().map_err(|e| invalid(&e))?;
    let public = pair.public_key().as_der().map_err(|e| invalid(&e))?;
    Ok((
        to_pem("PRIVATE KEY", private.as_ref()),
        to_pem("PUBLIC KEY", public.as_ref()),
    ))
}

/// The largest message KMS signs as `RAW`.
const KMS_MAX_RAW_MESSAGE: usize = 4096;

/// Why a signature could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the signing service is unavailable: {0}")]
    Unavailable(String),
    #[error("signing failed: {0}")]
    Failed(String),
}

/// The private half of the current key: signs, never leaves where it lives.
pub enum Signer {
    Kms {
        client: KmsClient,
        key_id: String,
        kid: String,
    },
    Local {
        pair: KeyPair,
        kid: String,
    },
}

impl Signer {
    /// The signer for `source`. No network call: a KMS key's `kid` is its id.
    pub fn new(source: &KeySource, kms: &KmsClient) -> Result<Self, KeyError> {
        match source {
            KeySource::Kms(id) => Ok(Signer::Kms {
                client: kms.clone(),
                key_id: id.clone(),
                kid: kms_key_uuid(id),
            }),
            KeySource::Pem(path) => {
                Signer::from_pem(&read_pem_file(path)?, &path.display().to_string())
            }
            KeySource::Sealed(_) | KeySource::Table => Err(KeyError::Invalid(
                "sealed".into(),
                "the table's keys are unsealed by TokenIssuer::sealed".into(),
            )),
        }
    }

    pub fn from_pem(pem: &str, name: &str) -> Result<Self, KeyError> {
        let pair = private_key_from_pem(pem, name)?;
        let kid = PublicKey::from_der(pair.public_key().as_ref(), None, name)?.kid;
        Ok(Signer::Local { pair, kid })
    }

    pub fn kid(&self) -> &str {
        match self {
            Signer::Kms { kid, .. } | Signer::Local { kid, .. } => kid,
        }
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message` (the JWT signing input).
    pub async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            Signer::Kms { client, key_id, .. } => {
                // KMS hashes a RAW message itself (up to 4 KB; a signing input is
                // well under 1 KB). RAW rather than DIGEST also because moto, our
                // local KMS, hashes a DIGEST a second time.
                if message.len() > KMS_MAX_RAW_MESSAGE {
                    return Err(SignError::Failed("token too large to sign".into()));
                }
                let output = client
                    .sign()
                    .key_id(key_id)
                    .message(Blob::new(message))
                    .message_type(MessageType::Raw)
                    .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
                    .send()
                    .await
                    .map_err(|e| match classify(e) {
                        CallError::Unavailable(detail) => SignError::Unavailable(detail),
                        CallError::Rejected(detail) => SignError::Failed(detail),
                    })?;
                output
                    .signature()
                    .map(|s| s.as_ref().to_vec())
                    .ok_or_else(|| SignError::Failed("KMS returned no signature".into()))
            }
            Signer::Local { pair, .. } => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|e| SignError::Failed(e.to_string()))?;
                Ok(signature)
            }
        }
    }
}

/// The public keys as a JWK Set (RFC 7517), for `/.well-known/jwks.json`.
pub fn jwk_set(keys: &[PublicKey]) -> HashMap<&'static str, Vec<Jwk>> {
    HashMap::from([("keys", keys.iter().map(PublicKey::jwk).collect())])
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" {
        // aws-lc's own test hook: which source seeds its random generator.
        // The versioned name stops linking at an aws-lc upgrade, which is
        // when this must be looked at again.
        fn aws_lc_0_47_0_get_entropy_source_method_id_FOR_TESTING() -> std::ffi::c_int;
    }

    #[test]
    fn aws_lc_is_built_without_cpu_jitter_entropy() {
        // 2 is OPT_OUT_CPU_JITTER_ENTROPY_SOURCE (the operating system's
        // generator); 1 would be the jitter source, ~30 ms of every cold
        // start (.cargo/config.toml, docs/performance.md).
        use aws_lc_rs::rand::SecureRandom as _;
        let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut [0u8; 8]);
        let source = unsafe { aws_lc_0_47_0_get_entropy_source_method_id_FOR_TESTING() };
        assert_eq!(source, 2, "aws-lc was built with CPU jitter entropy");
    }

    #[test]
    fn key_sources_parse() {
        assert_eq!(
            KeySource::parse("kms:1234abcd").unwrap(),
            KeySource::Kms("1234abcd".into())
        );
        assert_eq!(
            KeySource::parse(" pem:/tmp/k.pem ").unwrap(),
            KeySource::Pem("/tmp/k.pem".into())
        );
        assert_eq!(
            KeySource::parse("sealed:arn:aws:kms:eu-west-1:1:key/abc").unwrap(),
            KeySource::Sealed("arn:aws:kms:eu-west-1:1:key/abc".into())
        );
        assert_eq!(KeySource::parse("table").unwrap(), KeySource::Table);
        for bad in [
            "", "kms:", "pem:", "sealed:", "tables", "file:/x", "1234abcd",
        ] {
            assert!(KeySource::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_signer_must_name_a_kms_key_by_id() {
        let env = |v: &str| (v == "JWT_SIGNING_KEY").then(|| "kms:alias/auth".to_owned());
        assert!(matches!(
            signing_key_from(&env),
            Err(ConfigError::Invalid {
                var: "JWT_SIGNING_KEY",
                ..
            })
        ));
        let env = |v: &str| {
            (v == "JWT_VERIFICATION_KEYS").then(|| "kms:alias/auth, pem:/k.pem".to_owned())
        };
        assert_eq!(verification_keys_from(&env).unwrap().len(), 2);
        // The table's keys: signed as sealed, verified as table.
        let env = |v: &str| (v == "JWT_SIGNING_KEY").then(|| "table".to_owned());
        assert!(signing_key_from(&env).is_err());
        let env = |v: &str| (v == "JWT_VERIFICATION_KEYS").then(|| "table,sealed:k".to_owned());
        assert!(verification_keys_from(&env).is_err());
        let env = |v: &str| (v == "JWT_VERIFICATION_KEYS").then(|| "table, kms:old".to_owned());
        assert_eq!(
            verification_keys_from(&env).unwrap(),
            vec![KeySource::Table, KeySource::Kms("old".into())]
        );
    }

    #[test]
    fn kms_key_arns_reduce_to_their_id() {
        assert_eq!(
            kms_key_uuid(
                "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            ),
            "1234abcd-12ab-34cd-56ef-1234567890ab"
        );
        assert_eq!(kms_key_uuid("1234abcd"), "1234abcd");
    }

    #[tokio::test]
    async fn a_generated_pem_pair_signs_and_its_public_half_verifies() {
        let (private, public) = generate_pem_pair().unwrap();
        let signer = Signer::from_pem(&private, "test").unwrap();
        let key = public_key_from_pem(&public, "test").unwrap();
        assert_eq!(
            signer.kid(),
            key.kid,
            "both halves give the same thumbprint"
        );
        assert_eq!(public_key_from_pem(&private, "test").unwrap(), key);
        let signature = signer.sign(b"header.payload").await.unwrap();
        assert_eq!(signature.len(), 256);
        let verifier = aws_lc_rs::signature::RsaPublicKeyComponents {
            n: &key.n,
            e: &key.e,
        };
        verifier
            .verify(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                b"header.payload",
                &signature,
            )
            .unwrap();
        let jwk = key.jwk();
        assert_eq!(
            (jwk.kty.as_str(), jwk.alg.as_str(), jwk.use_.as_str()),
            ("RSA", "RS256", "sig")
        );
        assert_eq!(jwk.e, "AQAB");
    }

    #[test]
    fn the_thumbprint_matches_rfc_7638s_example() {
        // RFC 7638 §3.1: the example key and its thumbprint.
        let n = URL_SAFE_NO_PAD
            .decode("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
            .unwrap();
        let key = PublicKey {
            kid: String::new(),
            n,
            e: vec![1, 0, 1],
        };
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn garbage_pem_is_refused_with_the_files_name() {
        let err = public_key_from_pem("not a key", "keys/current.pem").unwrap_err();
        assert!(err.to_string().contains("keys/current.pem"), "{err}");
        assert!(
            Signer::from_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                "x"
            )
            .is_err()
        );
    }
}
