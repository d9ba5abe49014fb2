//! Upload ids: time-sortable and random, so keys list in upload order and cannot be
//! guessed. 26 characters of Crockford base32 (lowercase): 48 bits of milliseconds
//! since the Unix epoch, then 80 random bits (the ULID layout).
//!
//! With sign-in, an id is also bound to the subject that created it: its last 40 bits
//! are a SHA-256 of the subject and the rest of the id instead of random bits, so the
//! API tells from the id alone, with no record kept anywhere, whether the subject of a
//! verified token owns it. Another subject's check fails but for a chance of 2^-40.

use chrono::{DateTime, TimeZone, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const LEN: usize = 26;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId(u128);

impl UploadId {
    /// A new id for an upload created at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        let millis =
            u128::from(u64::try_from(now.timestamp_millis()).unwrap_or(0) & 0xffff_ffff_ffff);
        let mut random = [0u8; 16];
        rand::rng().fill_bytes(&mut random[6..]);
        let random = u128::from_be_bytes(random);
        Self((millis << 80) | random)
    }

    /// A new id for an upload created at `now` by the signed-in `owner`.
    pub fn owned_by(now: DateTime<Utc>, owner: &str) -> Self {
        let unbound = Self::new(now).0 & !OWNER_BITS;
        Self(unbound | owner_tag(unbound, owner))
    }

    /// Whether `owner` created this id with [`UploadId::owned_by`].
    pub fn is_owned_by(self, owner: &str) -> bool {
        self.0 & OWNER_BITS == owner_tag(self.0 & !OWNER_BITS, owner)
    }

    /// When the id was issued (millisecond precision).
    pub fn created_at(self) -> DateTime<Utc> {
        let millis = i64::try_from(self.0 >> 80).unwrap_or(i64::MAX);
        Utc.timestamp_millis_opt(millis)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (LEN - 1 - i);
            *slot = ALPHABET[((self.0 >> shift) & 0x1f) as usize];
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({self})")
    }
}

/// The bits of an owned id that name its owner.
const OWNER_BITS: u128 = (1 << 40) - 1;

/// The owner bits of the id whose other bits are `unbound`.
fn owner_tag(unbound: u128, owner: &str) -> u128 {
    let digest = Sha256::new()
        .chain_update(b"minilab upload owner\0")
        .chain_update(unbound.to_be_bytes())
        .chain_update(owner.as_bytes())
        .finalize();
    let mut tag = [0u8; 16];
    tag[11..].copy_from_slice(&digest[..5]);
    u128::from_be_bytes(tag)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an upload id (expected 26 lowercase base32 characters)")]
pub struct InvalidUploadId;

impl FromStr for UploadId {
    type Err = InvalidUploadId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != LEN {
            return Err(InvalidUploadId);
        }
        let mut value: u128 = 0;
        for (i, byte) in s.bytes().enumerate() {
            let digit = ALPHABET
                .iter()
                .position(|&c| c == byte)
                .ok_or(InvalidUploadId)? as u128;
            // The first character holds only 3 bits (26 * 5 = 130 > 128).
            if i == 0 && digit > 7 {
                return Err(InvalidUploadId);
            }
            value = (value << 5) | digit;
        }
        Ok(Self(value))
    }
}

impl TryFrom<String> for UploadId {
    type Error = InvalidUploadId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<UploadId> for String {
    fn from(id: UploadId) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_its_time() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap();
        let id = UploadId::new(now);
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<UploadId>().unwrap(), id);
        assert_eq!(id.created_at(), now);
    }

    #[test]
    fn sorts_by_time_as_text() {
        let a = UploadId::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let b = UploadId::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 1).unwrap());
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn two_ids_in_one_millisecond_differ() {
        let now = Utc::now();
        assert_ne!(UploadId::new(now), UploadId::new(now));
    }

    #[test]
    fn an_owned_id_names_its_owner_and_no_one_else() {
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 9, 0, 0).unwrap();
        let id = UploadId::owned_by(now, "alice");
        assert_eq!(id.created_at(), now);
        assert!(id.is_owned_by("alice"));
        assert!(!id.is_owned_by("bob"));
        assert!(!id.is_owned_by("alice "));
        assert!(!UploadId::new(now).is_owned_by("alice"));
        let reread: UploadId = id.to_string().parse().unwrap();
        assert!(reread.is_owned_by("alice"));
        assert_ne!(id, UploadId::owned_by(now, "alice"), "still random");
    }

    #[test]
    fn rejects_what_is_not_an_id() {
        for bad in [
            "",
            "../../etc/passwd",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "8zzzzzzzzzzzzzzzzzzzzzzzzz",
            "0123456789abcdefghjkmnpqrs/",
        ] {
            assert!(bad.parse::<UploadId>().is_err(), "{bad:?} was accepted");
        }
    }
}
