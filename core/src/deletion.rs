//! Who may delete an upload without signing in: whoever holds the delete token its
//! ticket carried. Nothing of the token is kept by the API: its SHA-256 (the delete
//! key) rides with the upload as user metadata, fixed by the POST policy so the
//! browser cannot change it, and a DELETE's token is checked against it.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The user-metadata name (after `x-amz-meta-`) that carries the delete key.
pub const DELETE_KEY_METADATA: &str = "delete-key";

/// A new delete token: 128 random bits, base64url without padding (22 characters).
pub fn new_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The delete key of `token`: its SHA-256, lowercase hex.
pub fn key_of(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `token` is the one whose key is `key`, compared in constant time.
pub fn token_matches(token: &str, key: &str) -> bool {
    let expected = key_of(token);
    expected.len() == key.len()
        && expected
            .bytes()
            .zip(key.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_matches_its_key() {
        let token = new_token();
        assert_eq!(token.len(), 22);
        let key = key_of(&token);
        assert_eq!(key.len(), 64);
        assert!(token_matches(&token, &key));
        assert!(!token_matches(&new_token(), &key));
        assert!(!token_matches(&token, &key[..63]));
        assert!(!token_matches(&token, ""));
        assert!(!token_matches("", &key));
        assert_ne!(new_token(), token);
    }
}
