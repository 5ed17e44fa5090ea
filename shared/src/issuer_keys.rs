//! Issuer keys sealed at rest (issue 26's key hierarchy): RSA-2048 signing
//! pairs made by the rotation function, whose private half is stored only
//! sealed by a symmetric KMS key (encryption context: purpose and `kid`),
//! beside its public half and its dates. Issuers unseal the key that signs
//! now, once, at init, and sign in memory; verifiers read the public halves.
//!
//! This module is the schedule: which key signs at a moment, which keys
//! verify, and what a rotation must do. It calls nothing: the store keeps
//! the records (`store::keys`), KMS seals and unseals them (`sealing`).
//!
//! A key's life, with `lead` (longer than any verifier's refresh bound plus
//! the JWKS cache lifetime) and `period` (how long a key signs):
//! - published at `created_at`: in the JWKS, verifying, not yet signing;
//! - signs from `sign_from` (`created_at + lead` at the earliest) until
//!   `sign_until` (`sign_from + period`);
//! - verifies until `verify_until`: `sign_until` plus the longest an access
//!   token it signed may be accepted (lifetime and leeway); then it leaves
//!   the JWKS and its record may go.
//! - revoked (a compromised issuer): from `revoked_at` it neither signs nor
//!   verifies, whatever its dates, and its sealed half is erased; the
//!   record stays, as a tombstone, until its `verify_until`.
//!
//! Runs are planned to tolerate one missed run: a run keeps signing
//! covered for `lead + 2 * period` ahead. Two runs at once may each make a
//! key for the same window; the newer one by `(sign_from, created_at, kid)`
//! signs, both verify (the rotation function runs one at a time where the
//! account can reserve concurrency).

use std::collections::HashMap;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use aws_sdk_kms::Client as KmsClient;
use aws_sdk_kms::primitives::Blob;
use zeroize::Zeroizing;

use crate::aws::classify;
use crate::keys::{KeyError, PublicKey, Signer};

/// A key's record: everything but the private half in clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub kid: String,
    /// `SubjectPublicKeyInfo` DER.
    pub public_der: Vec<u8>,
    /// The PKCS#8 private key as KMS `Encrypt` returned it (its ciphertext
    /// blob), under the encryption context `sealing::context(kid)`.
    pub sealed: Vec<u8>,
    pub created_at: i64,
    pub sign_from: i64,
    pub sign_until: i64,
    pub verify_until: i64,
    pub revoked_at: Option<i64>,
}

impl KeyRecord {
    fn revoked_by(&self, now: i64) -> bool {
        self.revoked_at.is_some_and(|at| at <= now)
    }

    /// Whether it signs at `now`.
    pub fn signs_at(&self, now: i64) -> bool {
        !self.revoked_by(now) && self.sign_from <= now && now < self.sign_until
    }

    /// Whether a token it signed may be accepted at `now` (and so whether
    /// it is in the JWKS): published, not past its last token, not revoked.
    pub fn verifies_at(&self, now: i64) -> bool {
        !self.revoked_by(now) && self.created_at <= now && now < self.verify_until
    }

    /// Whether a token it signed, issued at `iat`, may be accepted at
    /// `now`: the key verifies then (published `leeway` early at most: the
    /// rotation's clock may run ahead of the verifier's), and `iat` lies in
    /// its signing window, `leeway` either side. A key that was not signing
    /// at `iat` signed no token of ours then: a waiting key whose private
    /// half leaked forges nothing that is accepted before its window.
    pub fn accepts(&self, iat: i64, now: i64, leeway: i64) -> bool {
        self.verifies_at(now.saturating_add(leeway))
            && now < self.verify_until
            && self.sign_from - leeway <= iat
            && iat <= self.sign_until + leeway
    }
}

/// How keys are rotated (`Schedule::new` checks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// How long each key signs.
    pub period: Duration,
    /// How long a key is published before it signs: more than a verifier's
    /// refresh bound plus the longest a JWKS may be cached elsewhere.
    pub lead: Duration,
    /// How long after its last signature a key still verifies: the access
    /// token lifetime plus the leeway.
    pub tail: Duration,
}

/// What a rotation run does at a moment, given the records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Make a key that signs over this window: (`sign_from`, `sign_until`).
    /// Published at once.
    pub create: Vec<(i64, i64)>,
    /// Keep this key signing until then (its `verify_until` moving with it):
    /// runs were missed, and the next key may sign only a full lead after
    /// it is published. A longer window beats a moment with no key.
    pub extend: Vec<(String, i64)>,
    /// Records past `verify_until`, or revoked and past their tail: gone.
    pub delete: Vec<String>,
}

impl Schedule {
    /// A schedule whose lead is shorter than its period (else no key would
    /// ever have its full lead before the one it follows ends) and whose
    /// tail is at least `min_tail` (the access token lifetime and leeway).
    pub fn new(
        period: Duration,
        lead: Duration,
        tail: Duration,
        min_tail: Duration,
    ) -> Result<Self, String> {
        if lead.is_zero() || lead >= period {
            return Err(format!(
                "the lead ({lead:?}) must be above zero and below the period ({period:?})"
            ));
        }
        if tail < min_tail {
            return Err(format!(
                "the tail ({tail:?}) must cover an access token's life ({min_tail:?})"
            ));
        }
        Ok(Schedule { period, lead, tail })
    }

    /// What a rotation run at `now` must do so that a key always signs and
    /// the next one is published `lead` before it does. Idempotent: run
    /// again on its own result, it plans nothing. Runs may come late or
    /// twice, and one may be missed: signing stays covered `lead + 2 *
    /// period` ahead. Runs missed beyond that are made up by extending the
    /// signing key, never by a key that signs before its lead (but for the
    /// first key of all, or after every key was revoked).
    pub fn plan(&self, keys: &[KeyRecord], now: i64) -> Plan {
        let secs = |d: Duration| d.as_secs() as i64;
        let mut plan = Plan::default();
        let usable: Vec<&KeyRecord> = keys.iter().filter(|k| !k.revoked_by(now)).collect();
        let mut windows: Vec<(i64, i64)> =
            usable.iter().map(|k| (k.sign_from, k.sign_until)).collect();
        let mut covered = covered_until(&windows, now);
        if covered == now {
            // Nothing signs now (a first run, or the signing key revoked): a
            // key that signs at once. Verifiers learn of it on an unknown kid.
            // The keys already waiting carry on after it.
            windows.push((now, now + secs(self.period)));
            plan.create.push((now, now + secs(self.period)));
            covered = covered_until(&windows, now);
        }
        // The next keys, until signing is covered that far ahead: each
        // published now, and signing only after a full lead.
        while covered - now < secs(self.lead) + 2 * secs(self.period) {
            let from = covered.max(now + secs(self.lead));
            if from > covered {
                // Only after missed runs: the key whose window ends there
                // (there is one: a window ends wherever coverage does)
                // signs on until the new one may.
                if let Some(last) = usable
                    .iter()
                    .filter(|k| k.sign_until == covered)
                    .max_by_key(|k| k.sign_from)
                {
                    plan.extend.push((last.kid.clone(), from));
                }
                windows.push((covered, from));
            }
            plan.create.push((from, from + secs(self.period)));
            windows.push((from, from + secs(self.period)));
            covered = covered_until(&windows, now);
        }
        plan.delete = keys
            .iter()
            .filter(|k| now >= k.verify_until)
            .map(|k| k.kid.clone())
            .collect();
        plan
    }

    /// When a key whose signing is extended to `sign_until` stops verifying.
    pub fn verify_until(&self, sign_until: i64) -> i64 {
        sign_until + self.tail.as_secs() as i64
    }

    /// A key's dates for the window `(sign_from, sign_until)`, made at `now`.
    pub fn dates(&self, now: i64, window: (i64, i64)) -> (i64, i64, i64, i64) {
        let (from, until) = window;
        (now, from, until, self.verify_until(until))
    }
}

/// The end of the signing the windows cover from `now` on without a gap
/// (`now` itself when none signs at `now`).
fn covered_until(windows: &[(i64, i64)], now: i64) -> i64 {
    let mut sorted = windows.to_vec();
    sorted.sort();
    let mut covered = now;
    for (from, until) in sorted {
        if from <= covered {
            covered = covered.max(until);
        }
    }
    covered
}

/// The key that signs at `now`: of those whose window holds it, the one
/// that began signing last (the newer key wins an overlap). `None` when no
/// key signs: an issuer then refuses to issue (503), never signs with a key
/// outside its window.
pub fn signing_key(keys: &[KeyRecord], now: i64) -> Option<&KeyRecord> {
    keys.iter()
        .filter(|k| k.signs_at(now))
        .max_by_key(|k| (k.sign_from, k.created_at, k.kid.as_str()))
}

/// The keys that verify at `now`, as the JWKS publishes them.
pub fn verifying_keys(keys: &[KeyRecord], now: i64) -> Vec<&KeyRecord> {
    keys.iter().filter(|k| k.verifies_at(now)).collect()
}

// ---- sealing: the private halves at rest, under a symmetric KMS key

/// What every sealed key's encryption context names as its purpose: KMS
/// decrypts a sealed key only under the context it was sealed with, and the
/// key policy lets the issuers decrypt only under this purpose.
pub const SEALING_PURPOSE: &str = "auth-jwt-signing-key";

/// The encryption context of `kid`'s private half.
pub fn context(kid: &str) -> HashMap<String, String> {
    HashMap::from([
        ("purpose".to_owned(), SEALING_PURPOSE.to_owned()),
        ("kid".to_owned(), kid.to_owned()),
    ])
}

/// A new RSA-2048 pair for `window`, its private half sealed by
/// `sealing_key` (a symmetric KMS key's id or ARN) with KMS `Encrypt`: the
/// record to store. The private half is in clear only in this process's
/// memory: our own copy is zeroed once sealed, aws-lc clears its own when
/// the pair is dropped; the SDK's request buffers (the base64 body kept for
/// a retry) are freed, not zeroed (docs/capacity.md). (KMS `Encrypt` rather than an envelope
/// with `GenerateDataKey`: one call, and a PKCS#8 key is well under its
/// 4 KB; KMS sees the key in clear once, over TLS, as it sees every
/// plaintext it encrypts. docs/security.md weighs the two.)
pub async fn make_key(
    kms: &KmsClient,
    sealing_key: &str,
    schedule: &Schedule,
    now: i64,
    window: (i64, i64),
) -> Result<KeyRecord, KeyError> {
    let invalid = |e: &dyn std::fmt::Display| KeyError::Invalid("new".into(), e.to_string());
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|e| invalid(&e))?;
    let public_der = pair
        .public_key()
        .as_der()
        .map_err(|e| invalid(&e))?
        .as_ref()
        .to_vec();
    let kid = PublicKey::from_der(&public_der, None, "new")?.kid;
    let private = Zeroizing::new(pair.as_der().map_err(|e| invalid(&e))?.as_ref().to_vec());
    let sealed = kms
        .encrypt()
        .key_id(sealing_key)
        .plaintext(Blob::new(private.as_slice()))
        .set_encryption_context(Some(context(&kid)))
        .send()
        .await
        .map_err(classify)?
        .ciphertext_blob
        .ok_or_else(|| KeyError::Rejected("KMS returned no ciphertext".into()))?
        .into_inner();
    let (created_at, sign_from, sign_until, verify_until) = schedule.dates(now, window);
    Ok(KeyRecord {
        kid,
        public_der,
        sealed,
        created_at,
        sign_from,
        sign_until,
        verify_until,
        revoked_at: None,
    })
}

/// Whether the caller may seal with `sealing_key` (an `Encrypt` of a few
/// bytes under a probe's context, which stores nothing): the key policy lets
/// only the rotation function's role seal, so an operator revoking from a
/// shell must learn that before a revocation leaves no key to sign.
pub async fn can_seal(kms: &KmsClient, sealing_key: &str) -> Result<(), KeyError> {
    kms.encrypt()
        .key_id(sealing_key)
        .plaintext(Blob::new(b"probe".as_slice()))
        .set_encryption_context(Some(context("probe")))
        .send()
        .await
        .map_err(classify)?;
    Ok(())
}

/// `record`'s private half, unsealed with KMS `Decrypt` under its context
/// and pinned to `sealing_key` (a blob sealed by any other key is refused
/// by KMS), as a signer in memory. Checked against the record's public
/// half: a sealed key that is not the record's own never signs. A revoked
/// record never unseals. Our copy of the clear bytes is zeroed once parsed
/// (the SDK's response buffer is freed, not zeroed); the parsed key lives as
/// long as the signer.
pub async fn unseal(
    kms: &KmsClient,
    sealing_key: &str,
    record: &KeyRecord,
) -> Result<Signer, KeyError> {
    let name = format!("sealed key {}", record.kid);
    if record.revoked_at.is_some() || record.sealed.is_empty() {
        return Err(KeyError::Invalid(name, "revoked".into()));
    }
    let clear = Zeroizing::new(
        kms.decrypt()
            .key_id(sealing_key)
            .ciphertext_blob(Blob::new(record.sealed.as_slice()))
            .set_encryption_context(Some(context(&record.kid)))
            .send()
            .await
            .map_err(classify)?
            .plaintext
            .ok_or_else(|| KeyError::Rejected("KMS returned no plaintext".into()))?
            .into_inner(),
    );
    let pair =
        KeyPair::from_pkcs8(&clear).map_err(|e| KeyError::Invalid(name.clone(), e.to_string()))?;
    let public = PublicKey::from_der(pair.public_key().as_ref(), None, &name)?;
    let recorded = PublicKey::from_der(&record.public_der, None, &name)?;
    if public != recorded || public.kid != record.kid {
        return Err(KeyError::Invalid(
            name,
            "the sealed key is not the record's own".into(),
        ));
    }
    Ok(Signer::Local {
        pair,
        kid: record.kid.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const DAY: i64 = 24 * HOUR;

    fn schedule() -> Schedule {
        let secs = |s: i64| Duration::from_secs(s as u64);
        Schedule::new(secs(DAY), secs(2 * HOUR), secs(905), secs(905)).unwrap()
    }

    #[test]
    fn a_schedule_whose_lead_is_not_below_its_period_or_whose_tail_is_short_is_refused() {
        let secs = Duration::from_secs;
        assert!(Schedule::new(secs(3600), secs(3600), secs(905), secs(905)).is_err());
        assert!(Schedule::new(secs(3600), secs(0), secs(905), secs(905)).is_err());
        assert!(Schedule::new(secs(3600), secs(60), secs(900), secs(905)).is_err());
    }

    fn key(kid: &str, schedule: &Schedule, now: i64, window: (i64, i64)) -> KeyRecord {
        let (created_at, sign_from, sign_until, verify_until) = schedule.dates(now, window);
        KeyRecord {
            kid: kid.into(),
            public_der: vec![],
            sealed: vec![],
            created_at,
            sign_from,
            sign_until,
            verify_until,
            revoked_at: None,
        }
    }

    fn apply(s: &Schedule, keys: &mut Vec<KeyRecord>, made: &mut usize, now: i64, plan: Plan) {
        for (kid, until) in &plan.extend {
            let k = keys.iter_mut().find(|k| &k.kid == kid).unwrap();
            k.sign_until = *until;
            k.verify_until = s.verify_until(*until);
        }
        for window in plan.create {
            *made += 1;
            keys.push(key(&format!("k{made}"), s, now, window));
        }
        keys.retain(|k| !plan.delete.contains(&k.kid));
    }

    /// Runs the schedule's rotations every `step` seconds from `start` to
    /// `end`, applying each plan; checks at every second of the way that
    /// one key signs, and that it was published a lead before (but for the
    /// very first).
    fn simulate(start: i64, end: i64, step: i64) -> Vec<KeyRecord> {
        let s = schedule();
        let mut keys: Vec<KeyRecord> = Vec::new();
        let mut made = 0;
        let mut now = start;
        while now <= end {
            let plan = s.plan(&keys, now);
            apply(&s, &mut keys, &mut made, now, plan);
            assert_eq!(s.plan(&keys, now), Plan::default(), "idempotent at {now}");
            for t in now..(now + step).min(end + 1) {
                let signer = signing_key(&keys, t).unwrap_or_else(|| panic!("no key signs at {t}"));
                if signer.kid != "k1" {
                    assert!(
                        signer.created_at + s.lead.as_secs() as i64 <= t,
                        "{} signs at {t} before a full lead",
                        signer.kid
                    );
                }
                assert!(verifying_keys(&keys, t).iter().any(|k| k.kid == signer.kid));
            }
            now += step;
        }
        keys
    }

    #[test]
    fn hourly_runs_keep_one_key_signing_and_the_next_published_a_lead_ahead() {
        let keys = simulate(1_000_000, 1_000_000 + 5 * DAY, HOUR);
        // Old keys go once their last token has expired: a handful at most.
        assert!(keys.len() <= 4, "{keys:?}");
    }

    #[test]
    fn daily_runs_late_by_hours_or_one_missed_leave_no_gap_and_no_early_key() {
        // Runs 26 h apart, for two weeks: each late by more.
        simulate(1_000_000, 1_000_000 + 14 * DAY, 26 * HOUR);
        // A daily run missed now and then: runs two days apart.
        simulate(1_000_000, 1_000_000 + 14 * DAY, 2 * DAY);
    }

    #[test]
    fn after_missed_runs_the_signing_key_is_extended_rather_than_the_next_signing_early() {
        let s = schedule();
        let now = 1_000_000;
        // The last key signs for one more hour, and no next key exists.
        let mut keys = vec![key(
            "last",
            &s,
            now - 23 * HOUR,
            (now - 23 * HOUR, now + HOUR),
        )];
        let plan = s.plan(&keys, now);
        assert_eq!(plan.extend, vec![("last".to_owned(), now + 2 * HOUR)]);
        assert_eq!(
            plan.create,
            vec![
                (now + 2 * HOUR, now + 2 * HOUR + DAY),
                (now + 2 * HOUR + DAY, now + 2 * HOUR + 2 * DAY)
            ]
        );
        let mut made = 0;
        apply(&s, &mut keys, &mut made, now, plan);
        assert_eq!(s.plan(&keys, now), Plan::default(), "idempotent");
        for t in now..now + 2 * HOUR + DAY {
            let signer = signing_key(&keys, t).unwrap_or_else(|| panic!("no key signs at {t}"));
            assert!(signer.kid == "last" || t >= now + 2 * HOUR, "{t}");
        }
    }

    #[test]
    fn a_token_of_a_retired_key_verifies_until_its_tail_ends_then_the_key_goes() {
        let s = schedule();
        let k = key("old", &s, 0, (0, DAY));
        assert!(k.verifies_at(DAY + 904));
        assert!(!k.verifies_at(DAY + 905));
        assert!(!k.signs_at(DAY));
        let plan = s.plan(&[k], DAY + 905);
        assert_eq!(plan.delete, vec!["old".to_owned()]);
    }

    #[test]
    fn a_revoked_key_neither_signs_nor_verifies_and_a_new_one_signs_at_once() {
        let s = schedule();
        let mut k = key("leaked", &s, 0, (0, DAY));
        k.revoked_at = Some(100);
        assert!(k.signs_at(99) && !k.signs_at(100));
        assert!(!k.verifies_at(100));
        let plan = s.plan(std::slice::from_ref(&k), 100);
        assert_eq!(plan.create.first(), Some(&(100, 100 + DAY)), "{plan:?}");
        assert!(
            plan.delete.is_empty(),
            "kept until its tail: its revocation is on record"
        );
        assert_eq!(s.plan(&[k], DAY + 905).delete, vec!["leaked".to_owned()]);
    }

    #[test]
    fn revoking_the_signing_key_adds_one_key_that_signs_at_once_and_keeps_the_waiting_ones() {
        let s = schedule();
        let mut keys = Vec::new();
        let mut made = 0;
        let now = 1_000_000;
        let first = s.plan(&keys, now);
        apply(&s, &mut keys, &mut made, now, first);
        assert_eq!(keys.len(), 3);
        keys[0].revoked_at = Some(now + 60);
        let plan = s.plan(&keys, now + 60);
        assert_eq!(plan.create, vec![(now + 60, now + 60 + DAY)], "{plan:?}");
        apply(&s, &mut keys, &mut made, now + 60, plan);
        for t in now + 60..now + 3 * DAY {
            assert!(signing_key(&keys, t).is_some_and(|k| k.kid != "k1"), "{t}");
        }
    }

    #[test]
    fn a_key_accepts_only_tokens_issued_inside_its_signing_window() {
        let s = schedule();
        let k = key("k", &s, 1_000, (1_000 + 2 * HOUR, 1_000 + 2 * HOUR + DAY));
        let (from, until) = (k.sign_from, k.sign_until);
        // Published and waiting: verifies, but a token "issued" now, before
        // its window, was not signed by us.
        assert!(k.verifies_at(1_000));
        assert!(!k.accepts(1_000, 1_000, 5));
        assert!(!k.accepts(from - 6, from, 5));
        assert!(k.accepts(from - 5, from, 5));
        assert!(k.accepts(until + 5, until + 10, 5));
        assert!(!k.accepts(until + 6, until + 10, 5));
        // A clock a little behind the rotation's still takes a new key.
        let fresh = key("f", &s, 2_000, (2_000, 2_000 + DAY));
        assert!(fresh.accepts(2_000, 1_996, 5));
        assert!(!fresh.accepts(2_000, 1_994, 5));
        // Past its last token, or revoked: nothing.
        assert!(!k.accepts(until, k.verify_until, 5));
        let mut revoked = k.clone();
        revoked.revoked_at = Some(from + 10);
        assert!(!revoked.accepts(from + 1, from + 10, 5));
    }

    #[test]
    fn the_newer_key_signs_where_two_windows_overlap() {
        let s = schedule();
        let a = key("a", &s, 0, (0, DAY));
        let b = key("b", &s, 10, (DAY - 10, 2 * DAY));
        assert_eq!(
            signing_key(&[a.clone(), b.clone()], DAY - 5).unwrap().kid,
            "b"
        );
        assert_eq!(signing_key(&[a, b], DAY - 11).unwrap().kid, "a");
        assert!(signing_key(&[], 0).is_none());
    }
}
