//! The second factor's data key (`second_factor::SecretBox`): made once,
//! by KMS (`GenerateDataKey` under a symmetric KMS key, the sealing key,
//! with its own purpose in the encryption context, which the key policy can
//! hold to), and stored sealed in the table (`store::second_factor`): only
//! what is about to seal a first secret may make it (`ensure_secret_box`),
//! and where two race, the one stored first is the one every function
//! opens. Whatever checks codes only reads it (`stored_secret_box`): a key
//! missing there is an error, never "no second factor".

use std::collections::HashMap;

use aws_sdk_kms::Client as KmsClient;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::Zeroizing;

use crate::aws::classify;
use crate::config::{ConfigError, Source};
use crate::keys::KeyError;
use crate::second_factor::{DataKeyRecord, SealError, SecretBox};
use crate::store::{Store, StoreError};

/// What the data key's encryption context names as its purpose: KMS opens
/// it only under this context, and the key policy lets only the functions
/// that check codes ask for it.
pub const DATA_KEY_PURPOSE: &str = "auth-second-factor-data-key";

/// Where the data key comes from: `SECOND_FACTOR_KEY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataKeySource {
    /// `kms:<id, ARN or alias>`: the symmetric KMS key that seals it (as
    /// deployed: the template's `SecondFactorKey`).
    Kms(String),
    /// `file:<path>`: 64 hex digits in a local file (`make dev`, whose
    /// local KMS forgets its keys at every start). Never deployed.
    File(String),
}

impl DataKeySource {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let raw = crate::config::required(env, "SECOND_FACTOR_KEY")?;
        match raw.split_once(':') {
            Some(("kms", key)) if !key.is_empty() => Ok(DataKeySource::Kms(key.to_owned())),
            Some(("file", path)) if !path.is_empty() => Ok(DataKeySource::File(path.to_owned())),
            _ => Err(ConfigError::Invalid {
                var: "SECOND_FACTOR_KEY",
                reason: "expected kms:<key id, ARN or alias> or file:<path>".into(),
            }),
        }
    }
}

/// The box that opens and seals TOTP secrets, from `source`: the data key
/// made or read under the KMS key (`ensure_secret_box`), or read from a
/// local file.
pub async fn secret_box_from(
    source: &DataKeySource,
    store: &Store,
    kms: &KmsClient,
    now: i64,
) -> Result<SecretBox, DataKeyError> {
    match source {
        DataKeySource::Kms(key) => Ok(ensure_secret_box(store, kms, key, now).await?.0),
        DataKeySource::File(path) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| KeyError::Rejected(format!("the data key's file {path}: {e}")))?,
            );
            let key = Zeroizing::new(hex_bytes(text.trim()).ok_or(SealError::KeyLength(0))?);
            let id = crate::email::hex_sha256(format!("key id:{}", text.trim()).as_bytes());
            Ok(SecretBox::new(
                &key,
                &id[..crate::second_factor::KEY_ID_LEN],
            )?)
        }
    }
}

/// `text` as bytes, two hex digits each; none if it is not hex.
fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The data key's encryption context.
pub fn data_key_context() -> HashMap<String, String> {
    HashMap::from([("purpose".to_owned(), DATA_KEY_PURPOSE.to_owned())])
}

/// How [`ensure_secret_box`] came by the data key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKeyOrigin {
    /// It was stored: unsealed (one `Decrypt`).
    Stored,
    /// None was: this call made it and stored it.
    Made,
    /// None was, but a racer stored theirs first: that one was unsealed.
    Racer,
}

/// Why the data key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DataKeyError {
    #[error("the data key: {0}")]
    Kms(#[from] KeyError),
    #[error("the data key's item: {0}")]
    Store(#[from] StoreError),
    #[error("the data key: {0}")]
    Invalid(#[from] SealError),
}

/// The stored data key, unsealed (one `Decrypt`), as the box that opens
/// TOTP secrets; none if none was ever made. What checks codes calls this,
/// and only this: it never makes a key.
pub async fn stored_secret_box(
    store: &Store,
    kms: &KmsClient,
    sealing_key: &str,
) -> Result<Option<SecretBox>, DataKeyError> {
    match store.data_key().await? {
        Some(record) => Ok(Some(open_data_key(kms, sealing_key, &record).await?)),
        None => Ok(None),
    }
}

/// The data key's box, for what is about to seal a secret: the stored key,
/// or the first time a new one (KMS `GenerateDataKey` under `sealing_key`),
/// stored only where none is; a racer's, stored first, wins. Our copies of
/// the clear key are zeroed once the box holds it.
pub async fn ensure_secret_box(
    store: &Store,
    kms: &KmsClient,
    sealing_key: &str,
    now: i64,
) -> Result<(SecretBox, DataKeyOrigin), DataKeyError> {
    if let Some(secret_box) = stored_secret_box(store, kms, sealing_key).await? {
        return Ok((secret_box, DataKeyOrigin::Stored));
    }
    let made = kms
        .generate_data_key()
        .key_id(sealing_key)
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(Some(data_key_context()))
        .send()
        .await
        .map_err(|e| KeyError::from(classify(e)))?;
    let clear = Zeroizing::new(
        made.plaintext
            .ok_or_else(|| KeyError::Rejected("KMS returned no plaintext".into()))?
            .into_inner(),
    );
    let record = DataKeyRecord {
        sealed: made
            .ciphertext_blob
            .ok_or_else(|| KeyError::Rejected("KMS returned no ciphertext".into()))?
            .into_inner(),
        created_at: now,
    };
    let secret_box = SecretBox::new(&clear, &record.key_id())?;
    match store.put_data_key(&record).await {
        Ok(()) => Ok((secret_box, DataKeyOrigin::Made)),
        Err(StoreError::AlreadyExists) => match stored_secret_box(store, kms, sealing_key).await? {
            Some(secret_box) => Ok((secret_box, DataKeyOrigin::Racer)),
            None => Err(StoreError::Internal(
                "the data key was stored by a racer, then gone".into(),
            )
            .into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// `record`'s key, unsealed with KMS `Decrypt` under its context and pinned
/// to `sealing_key` (a blob sealed by any other key is refused by KMS).
async fn open_data_key(
    kms: &KmsClient,
    sealing_key: &str,
    record: &DataKeyRecord,
) -> Result<SecretBox, DataKeyError> {
    let clear = Zeroizing::new(
        kms.decrypt()
            .key_id(sealing_key)
            .ciphertext_blob(Blob::new(record.sealed.as_slice()))
            .set_encryption_context(Some(data_key_context()))
            .send()
            .await
            .map_err(|e| KeyError::from(classify(e)))?
            .plaintext
            .ok_or_else(|| KeyError::Rejected("KMS returned no plaintext".into()))?
            .into_inner(),
    );
    Ok(SecretBox::new(&clear, &record.key_id())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(raw: &str) -> Result<DataKeySource, ConfigError> {
        let raw = raw.to_owned();
        DataKeySource::from_source(&move |var: &str| {
            (var == "SECOND_FACTOR_KEY").then(|| raw.clone())
        })
    }

    #[test]
    fn the_data_keys_source_is_a_kms_key_or_a_local_file() {
        assert_eq!(
            source("kms:alias/x"),
            Ok(DataKeySource::Kms("alias/x".into()))
        );
        assert_eq!(
            source("file:/tmp/k"),
            Ok(DataKeySource::File("/tmp/k".into()))
        );
        for bad in ["", "kms:", "alias/x", "pem:/tmp/k"] {
            assert!(source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_reads_back_and_nothing_else_does() {
        assert_eq!(hex_bytes("00ff10"), Some(vec![0, 255, 16]));
        for bad in ["0", "0g", "ééé"] {
            assert_eq!(hex_bytes(bad), None, "{bad}");
        }
    }
}
