//! Issuer key records (`issuer_keys`): one partition, `pk = "KEYS#"`, one
//! item per key, `sk = "KEY#<kid>"`: `public_der` (B), `sealed` (B: the
//! private half as KMS sealed it), `created_at`, `sign_from`, `sign_until`,
//! `verify_until` (the TTL attribute: a key leaves the table once no token
//! of it can be accepted), `revoked_at`. A handful of items at any time,
//! read together with one strongly consistent query. Only the rotation
//! function's role may write them (`dynamodb:LeadingKeys`).

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, Store, StoreError, classify, key, n, s};
use crate::issuer_keys::KeyRecord;

/// The partition of every key record.
pub const KEYS_PARTITION: &str = "KEYS#";
const KEY_PREFIX: &str = "KEY#";

fn key_item_key(kid: &str) -> HashMap<String, AttributeValue> {
    key(KEYS_PARTITION.to_owned(), &format!("{KEY_PREFIX}{kid}"))
}

impl Store {
    /// Every key record, read strongly consistent. A record that cannot be
    /// read is an error: a verifier must not silently lose a key.
    pub async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut records = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :keys")
                .expression_attribute_values(":keys", s(KEYS_PARTITION))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for item in page.items() {
                records.push(KeyRecord::try_from(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(records),
            }
        }
    }

    /// Stores a new key record; `AlreadyExists` if its kid is taken.
    pub async fn put_key(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.put_once(key_item(record)).await
    }

    /// Marks `kid` revoked from `at` (an earlier revocation stands, a later
    /// one is brought forward) and erases its sealed half: nothing can
    /// unseal it again. `false`: no such key.
    pub async fn revoke_key(&self, kid: &str, at: i64) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_item_key(kid)))
            .update_expression("SET revoked_at = :at REMOVE sealed")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(revoked_at) OR revoked_at > :at)",
            )
            .expression_attribute_values(":at", n(at))
            .send()
            .await;
        super::condition_held(result)
    }

    /// Extends `kid`'s signing to `sign_until` (and its verifying to
    /// `verify_until`): a rotation's plan after missed runs. Never shortens,
    /// never revives a revoked key. `false`: no such live key.
    pub async fn extend_key(
        &self,
        kid: &str,
        sign_until: i64,
        verify_until: i64,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_item_key(kid)))
            .update_expression("SET sign_until = :sign, #ttl = :verify")
            .condition_expression(
                "attribute_exists(pk) AND attribute_not_exists(revoked_at) AND sign_until <= :sign \
                 AND #ttl <= :verify",
            )
            .expression_attribute_names("#ttl", super::TTL_ATTRIBUTE)
            .expression_attribute_values(":sign", n(sign_until))
            .expression_attribute_values(":verify", n(verify_until))
            .send()
            .await;
        super::condition_held(result)
    }

    /// Deletes `kid`'s record once no token of it can be accepted (its
    /// `verify_until` is past at `now`; a rotation's tidying, which TTL
    /// would do later). `false`: not yet, or no such key.
    pub async fn delete_key(&self, kid: &str, now: i64) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_item_key(kid)))
            .condition_expression("#ttl <= :now")
            .expression_attribute_names("#ttl", super::TTL_ATTRIBUTE)
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        super::condition_held(result)
    }
}

fn key_item(record: &KeyRecord) -> HashMap<String, AttributeValue> {
    let mut item = key_item_key(&record.kid);
    item.extend([
        ("kind".to_owned(), s("signing key")),
        (
            "public_der".to_owned(),
            AttributeValue::B(Blob::new(record.public_der.clone())),
        ),
        (
            "sealed".to_owned(),
            AttributeValue::B(Blob::new(record.sealed.clone())),
        ),
        ("created_at".to_owned(), n(record.created_at)),
        ("sign_from".to_owned(), n(record.sign_from)),
        ("sign_until".to_owned(), n(record.sign_until)),
        (super::TTL_ATTRIBUTE.to_owned(), n(record.verify_until)),
    ]);
    if let Some(at) = record.revoked_at {
        item.insert("revoked_at".to_owned(), n(at));
        item.remove("sealed");
    }
    item
}

impl TryFrom<&HashMap<String, AttributeValue>> for KeyRecord {
    type Error = StoreError;

    fn try_from(map: &HashMap<String, AttributeValue>) -> Result<Self, StoreError> {
        let item = Item(map, "signing key");
        let kid = item
            .string(super::SORT_KEY)?
            .strip_prefix(KEY_PREFIX)
            .ok_or_else(|| item.invalid("sk"))?
            .to_owned();
        let bytes = |name: &str| {
            map.get(name)
                .and_then(|v| v.as_b().ok())
                .map(|b| b.as_ref().to_vec())
                .ok_or_else(|| item.invalid(name))
        };
        let public_der = bytes("public_der")?;
        // The kid is the public half's thumbprint: a record whose key says
        // otherwise is refused, not trusted under the name it claims.
        let public = crate::keys::PublicKey::from_der(&public_der, None, "stored key")
            .map_err(|_| item.invalid("public_der"))?;
        if public.kid != kid {
            return Err(item.invalid("sk"));
        }
        Ok(KeyRecord {
            kid,
            public_der,
            // Erased when the key was revoked.
            sealed: if map.contains_key("sealed") {
                bytes("sealed")?
            } else {
                Vec::new()
            },
            created_at: item.number("created_at")?,
            sign_from: item.number("sign_from")?,
            sign_until: item.number("sign_until")?,
            verify_until: item.number(super::TTL_ATTRIBUTE)?,
            revoked_at: match map.get("revoked_at") {
                Some(_) => Some(item.number("revoked_at")?),
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_records_round_trip_and_a_revoked_one_keeps_no_sealed_half() {
        use base64::Engine as _;
        let (_, public_pem) = crate::keys::generate_pem_pair().unwrap();
        let public = crate::keys::public_key_from_pem(&public_pem, "test").unwrap();
        let body: String = public_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let public_der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        let mut record = KeyRecord {
            kid: public.kid.clone(),
            public_der,
            sealed: vec![4, 5],
            created_at: 10,
            sign_from: 20,
            sign_until: 30,
            verify_until: 40,
            revoked_at: None,
        };
        assert_eq!(KeyRecord::try_from(&key_item(&record)).unwrap(), record);
        record.revoked_at = Some(25);
        let read = KeyRecord::try_from(&key_item(&record)).unwrap();
        assert!(read.sealed.is_empty());
        assert_eq!(read.revoked_at, Some(25));
        // A record whose kid is not its key's thumbprint is refused.
        let mut item = key_item(&record);
        item.insert(
            "sk".to_owned(),
            AttributeValue::S("KEY#someone-else".into()),
        );
        assert!(KeyRecord::try_from(&item).is_err());
    }
}
