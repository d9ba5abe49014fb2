//! Signed image addresses, for private uploads (sign-in on): the API serves
//! `/i/{id}/...` only with `?expires={unix seconds}&signature={hex}`, an HMAC-SHA256
//! by a secret the API holds (and the worker, for webhooks) of the upload's id and
//! that expiry. The API puts them into the statuses it answers the upload's owner
//! (ids are bound to their subject), and the worker into the webhook the owner asked
//! for, so only whoever the owner hands an address to can load it, until it
//! expires. One signature covers every file of the upload (outputs, widths made on
//! demand, `.auto`), so the page's `srcset` works from one signed address.
//!
//! Expiries fall on the boundaries of windows of a fixed length (`window`): every
//! status within a window hands out the same address (a browser's cached copy stays
//! good), valid for at least one more window and at most two. Pure: the clock is a
//! parameter.

use crate::UploadId;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// Signs and checks image addresses with one secret.
#[derive(Clone)]
pub struct ImageLinks {
    secret: Vec<u8>,
    window: u64,
}

/// Why an address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// No signature, a malformed one, or not this upload's.
    Invalid,
    /// Signed, but its expiry has passed.
    Expired,
}

impl ImageLinks {
    /// Links signed with `secret` (at least [`crate::webhook::MIN_SECRET_BYTES`],
    /// checked by the caller), expiring on boundaries of `window_seconds` (at least 1).
    pub fn new(secret: Vec<u8>, window_seconds: u64) -> Self {
        Self {
            secret,
            window: window_seconds.max(1),
        }
    }

    /// The query (`expires=...&signature=...`) that opens `id`'s images at `now`
    /// (unix seconds): the end of the window after the current one.
    pub fn query(&self, id: UploadId, now: u64) -> String {
        let expires = (now / self.window + 2) * self.window;
        format!(
            "expires={expires}&signature={}",
            hex::encode(self.mac(id, expires))
        )
    }

    /// Whether `expires` and `signature` (from the request's query) open `id`'s
    /// images at `now`; the seconds they stay valid if so.
    pub fn check(
        &self,
        id: UploadId,
        expires: Option<&str>,
        signature: Option<&str>,
        now: u64,
    ) -> Result<u64, LinkError> {
        let (Some(expires), Some(signature)) = (expires, signature) else {
            return Err(LinkError::Invalid);
        };
        let expires: u64 = expires.parse().map_err(|_| LinkError::Invalid)?;
        let given = hex::decode(signature).map_err(|_| LinkError::Invalid)?;
        self.hmac(id, expires)
            .verify_slice(&given)
            .map_err(|_| LinkError::Invalid)?;
        expires
            .checked_sub(now)
            .filter(|left| *left > 0)
            .ok_or(LinkError::Expired)
    }

    fn hmac(&self, id: UploadId, expires: u64) -> hmac::Hmac<Sha256> {
        #[allow(clippy::expect_used)] // HMAC takes a key of any length
        let mut mac =
            <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("any key");
        mac.update(format!("minilab image link\n{id}\n{expires}").as_bytes());
        mac
    }

    fn mac(&self, id: UploadId, expires: u64) -> Vec<u8> {
        self.hmac(id, expires).finalize().into_bytes().to_vec()
    }
}

/// Where an upload's outputs are served at stable addresses, and with what links:
/// the one rule by which statuses (the API) and webhooks (the worker) name them.
#[derive(Clone, Default)]
pub struct ImageAddresses {
    base: String,
    links: Option<ImageLinks>,
}

impl ImageAddresses {
    /// Addresses under `base` (`https://host`, no trailing `/`; empty: the path
    /// alone), signed with `links` when given.
    pub fn new(base: String, links: Option<ImageLinks>) -> Self {
        Self { base, links }
    }

    /// What addresses are under; empty when they are paths alone.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The signer, when addresses are signed.
    pub fn links(&self) -> Option<&ImageLinks> {
        self.links.as_ref()
    }

    /// The address of upload `id`'s output stored at `key` (an
    /// [`crate::keys::OutputFile`]'s key), with the signature that opens it at `now`
    /// when addresses are signed.
    pub fn address(&self, id: UploadId, key: &str, now: u64) -> String {
        let path = crate::keys::image_path(key);
        match &self.links {
            Some(links) => format!("{}{path}?{}", self.base, links.query(id, now)),
            None => format!("{}{path}", self.base),
        }
    }
}

/// Seconds since the Unix epoch: the `now` links are made and checked at.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `name`'s value in a URL query (`a=1&b=2`), undecoded (signed links need no
/// decoding: digits and hex).
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(links: &ImageLinks, id: UploadId, query: &str, now: u64) -> Result<u64, LinkError> {
        links.check(
            id,
            query_value(query, "expires"),
            query_value(query, "signature"),
            now,
        )
    }

    #[test]
    fn a_link_opens_its_uploads_images_until_it_expires_and_nothing_else() {
        let links = ImageLinks::new(b"0123456789abcdef0123".to_vec(), 3600);
        let id = UploadId::new(chrono::Utc::now());
        let other = UploadId::new(chrono::Utc::now());
        let now = 1_000_000;
        let query = links.query(id, now);
        let left = open(&links, id, &query, now).unwrap();
        assert!((3600..=7200).contains(&left), "{left}");
        // The same address all through a window: a browser's copy stays good.
        assert_eq!(links.query(id, now - now % 3600), query);
        assert_eq!(links.query(id, now - now % 3600 + 3599), query);
        assert_ne!(links.query(id, now - now % 3600 + 3600), query);

        assert_eq!(open(&links, other, &query, now), Err(LinkError::Invalid));
        assert_eq!(
            open(&links, id, &query, now + left),
            Err(LinkError::Expired)
        );
        let expires = query_value(&query, "expires").unwrap();
        let later: u64 = expires.parse::<u64>().unwrap() + 3600;
        let moved = query.replace(expires, &later.to_string());
        assert_eq!(open(&links, id, &moved, now), Err(LinkError::Invalid));
        let another_secret = ImageLinks::new(b"fedcba9876543210fedc".to_vec(), 3600);
        assert_eq!(
            open(&another_secret, id, &query, now),
            Err(LinkError::Invalid)
        );
        for broken in ["", "expires=1", "signature=00", "expires=x&signature=00"] {
            assert_eq!(open(&links, id, broken, now), Err(LinkError::Invalid));
        }
    }

    #[test]
    fn an_address_is_the_base_the_path_and_the_signature_when_signed() {
        let id = UploadId::new(chrono::Utc::now());
        let key = format!("{id}/large.jpg");
        let now = 1_000_000;
        let plain = ImageAddresses::new("https://photos.example".into(), None);
        assert_eq!(
            plain.address(id, &key, now),
            format!("https://photos.example/i/{id}/large.jpg")
        );
        assert_eq!(
            ImageAddresses::default().address(id, &key, now),
            format!("/i/{id}/large.jpg")
        );
        let links = ImageLinks::new(b"0123456789abcdef0123".to_vec(), 3600);
        let signed = ImageAddresses::new("https://photos.example".into(), Some(links.clone()));
        let address = signed.address(id, &key, now);
        let (path, query) = address.split_once('?').unwrap();
        assert_eq!(path, format!("https://photos.example/i/{id}/large.jpg"));
        assert!(open(&links, id, query, now).is_ok(), "{address}");
    }
}
