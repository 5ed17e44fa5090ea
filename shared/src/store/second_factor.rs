//! The second factor's data key (`second_factor`): one item, `pk =
//! "DATAKEY#second-factor"`, `sk = "DATAKEY"`, `sealed` (B: the key as KMS
//! `GenerateDataKey` sealed it), `created_at`. Written once, where none is,
//! by the first function that needs it; read at every init after that.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, Store, StoreError, key, n, s};
use crate::second_factor::DataKeyRecord;

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
