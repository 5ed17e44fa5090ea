//! Device-proof items (`devices`): `pk = "DEVICE#<sha256 hex>"`, `sk =
//! "DEVICE"`: `user_id`, `username`, `epoch` (the user's session epoch when
//! issued), `created_at`, `expires_at` (TTL: the proof's end), and the
//! device's own attempt count when it has one: `failures`, `last_failure`,
//! `locked_until`, `last_attempt`, `failures_expire_at` (as a username's
//! attempt record, `throttle`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};

use super::sessions::values;
use super::throttle::{Counter, counted};
use super::{Item, Store, StoreError, TTL_ATTRIBUTE, key, n, s};
use crate::devices::Device;
use crate::store::Reservation;
use crate::users::{UserId, Username};

const DEVICE_PREFIX: &str = "DEVICE#";
const DEVICE_SK: &str = "DEVICE";

fn device_key(hash: &str) -> HashMap<String, AttributeValue> {
    key(format!("{DEVICE_PREFIX}{hash}"), DEVICE_SK)
}

fn device_item(device: &Device) -> HashMap<String, AttributeValue> {
    let mut item = device_key(&device.hash);
    item.extend([
        ("kind".to_owned(), s("device")),
        ("user_id".to_owned(), s(device.user_id.to_string())),
        ("username".to_owned(), s(device.username.to_string())),
        ("epoch".to_owned(), n(device.epoch)),
        ("created_at".to_owned(), n(device.created_at)),
        (TTL_ATTRIBUTE.to_owned(), n(device.expires_at)),
    ]);
    item
}

impl TryFrom<&HashMap<String, AttributeValue>> for Device {
    type Error = StoreError;

    fn try_from(map: &HashMap<String, AttributeValue>) -> Result<Self, StoreError> {
        let item = Item(map, "device");
        let hash = item
            .string(super::PARTITION_KEY)?
            .strip_prefix(DEVICE_PREFIX)
            .ok_or_else(|| item.invalid("pk"))?
            .to_owned();
        Ok(Device {
            hash,
            user_id: UserId::parse(item.string("user_id")?)
                .ok_or_else(|| item.invalid("user_id"))?,
            username: Username::parse(item.string("username")?)
                .map_err(|_| item.invalid("username"))?,
            epoch: item.number("epoch")?,
            created_at: item.number("created_at")?,
            expires_at: item.number(TTL_ATTRIBUTE)?,
            failures: counted(map, Counter::Device)?,
        })
    }
}

impl Store {
    /// The record of the proof whose hash is `hash`, if there is one.
    pub async fn get_device(&self, hash: &str) -> Result<Option<Device>, StoreError> {
        self.get_item(device_key(hash))
            .await?
            .as_ref()
            .map(Device::try_from)
            .transpose()
    }

    /// Reserves a password attempt on `device`'s own count (as read), as
    /// `reserve_attempt` does on a username's. `None` when the record is
    /// gone meanwhile (a concurrent sign-in retired it): nothing counted,
    /// and the proof vouches for nothing any more.
    pub async fn reserve_device_attempt(
        &self,
        device: &Device,
        now: i64,
    ) -> Result<Option<Reservation>, StoreError> {
        self.reserve_on(
            device_key(&device.hash),
            Counter::Device,
            device.failures,
            now,
        )
        .await
    }

    /// Stores a new proof's record (its hash is new: 256 random bits).
    pub(super) fn issue_device(&self, device: &Device) -> Result<TransactWriteItem, StoreError> {
        self.put_new(device_item(device))
    }

    /// Ends a proof a sign-in replaces: it vouches until `until` (a short
    /// grace, for a client whose answer was lost), then expires.
    pub(super) fn retire_device(
        &self,
        hash: &str,
        until: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        self.update(
            device_key(hash),
            "SET expires_at = :until",
            "attribute_exists(pk)",
            None,
            values([(":until", n(until))]),
        )
    }

    /// Forgets a device's own attempts (a proof of the password it vouched
    /// for succeeded), if the record is still there.
    pub(super) fn clear_device_attempts(
        &self,
        hash: &str,
    ) -> Result<TransactWriteItem, StoreError> {
        self.update(
            device_key(hash),
            "REMOVE failures, last_failure, locked_until, last_attempt, failures_expire_at",
            "attribute_exists(pk)",
            None,
            None,
        )
    }
}
