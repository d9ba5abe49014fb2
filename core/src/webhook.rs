//! Webhooks: where an upload's final status may be sent (an allow-list of URL
//! prefixes the operator sets), and how a delivery is signed so that the receiver can
//! tell it came from this deployment and was not replayed.
//!
//! A delivery carries `Minilab-Signature: t=<unix seconds>,v1=<hex>`, where the hex
//! is HMAC-SHA256 with the shared secret over `<t>.<body>` (the timestamp, a dot and
//! the raw body bytes). A receiver recomputes it, compares in constant time, and
//! refuses a timestamp too far from its own clock ([`verify`]).

use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// The user-metadata name that carries an upload's webhook URL.
pub const WEBHOOK_METADATA: &str = "webhook";
/// The header with the signature.
pub const SIGNATURE_HEADER: &str = "minilab-signature";
/// The longest webhook URL accepted.
pub const MAX_URL_BYTES: usize = 512;

/// Why an allow-list entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListError {
    #[error("webhook prefix {0:?} is not an http:// or https:// URL")]
    NotHttp(String),
    #[error("webhook prefix {0:?} must be scheme://host[:port]/path/ (ending in /)")]
    NotAPrefix(String),
}

/// A signing secret too short to sign with; names the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} must have at least {MIN_SECRET_BYTES} bytes")]
pub struct SecretTooShort(pub &'static str);

/// URL prefixes webhooks may be sent to; empty: webhooks are off. Each is kept
/// parsed: a URL is allowed when, parsed and normalised the same way (WHATWG: dot
/// segments resolved, `%2e%2e` included), it has a prefix's scheme, host and port
/// and its path starts with the prefix's path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(Vec<url::Url>);

impl AllowList {
    /// Each entry is `http://` or `https://`, a host (and port), and a path ending in
    /// `/`, without user, query or fragment.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowListError> {
        let mut prefixes = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let prefix = url::Url::parse(entry)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| AllowListError::NotHttp(entry.to_owned()))?;
            if prefix.host_str().is_none_or(str::is_empty)
                || !prefix.username().is_empty()
                || prefix.password().is_some()
                || prefix.query().is_some()
                || prefix.fragment().is_some()
                || !entry.ends_with('/')
                || !prefix.path().ends_with('/')
            {
                return Err(AllowListError::NotAPrefix(entry.to_owned()));
            }
            prefixes.push(prefix);
        }
        Ok(Self(prefixes))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `url` parsed and normalised, if it may receive webhooks: under an allowed
    /// prefix, without user or password, and with nothing a parser could read two
    /// ways (control characters, spaces, `\`). Send to what this returns, never to
    /// the string given.
    pub fn allowed(&self, url: &str) -> Option<url::Url> {
        if url.len() > MAX_URL_BYTES || !url.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
            return None;
        }
        let parsed = url::Url::parse(url).ok()?;
        let under = |prefix: &url::Url| {
            prefix.scheme() == parsed.scheme()
                && prefix.host() == parsed.host()
                && prefix.port_or_known_default() == parsed.port_or_known_default()
                && parsed.path().starts_with(prefix.path())
        };
        let plain = parsed.username().is_empty() && parsed.password().is_none();
        (plain && self.0.iter().any(under)).then_some(parsed)
    }

    /// Whether `url` may receive webhooks ([`AllowList::allowed`]).
    pub fn allows(&self, url: &str) -> bool {
        self.allowed(url).is_some()
    }
}

/// The fewest bytes a signing secret may have (webhooks and the peers' word alike).
pub const MIN_SECRET_BYTES: usize = 16;

/// `secret`, if it is long enough to sign with; `what` names it in the error.
pub fn signing_secret(secret: &[u8], what: &'static str) -> Result<Vec<u8>, SecretTooShort> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(SecretTooShort(what));
    }
    Ok(secret.to_vec())
}

/// The `Minilab-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body))
    )
}

/// Whether `header` is a valid signature of `body` by `secret`, made within
/// `tolerance_seconds` of `now` (unix seconds).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_seconds: i64) -> bool {
    let (Some(timestamp), Some(signature)) = (signed_at(header), part(header, "v1")) else {
        return false;
    };
    if (now - timestamp).abs() > tolerance_seconds {
        return false;
    }
    let Ok(given) = hex::decode(signature) else {
        return false;
    };
    let mut check = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("any key");
    check.update(format!("{timestamp}.").as_bytes());
    check.update(body);
    check.verify_slice(&given).is_ok()
}

/// The time (unix seconds) a `Minilab-Signature` header says it was signed at.
pub fn signed_at(header: &str) -> Option<i64> {
    part(header, "t")?.parse().ok()
}

/// The value of `name=` in a `Minilab-Signature` header.
fn part<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(',')
        .filter_map(|part| part.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("any key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_too_short_to_sign_with_is_refused() {
        let refused = signing_secret(&[7; 15], "the test secret").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the test secret must have at least 16 bytes"
        );
        assert_eq!(
            signing_secret(&[7; 16], "the test secret").unwrap(),
            [7; 16]
        );
    }

    #[test]
    fn prefixes_must_name_a_host_and_end_in_a_slash() {
        assert!(AllowList::parse(&["https://hooks.example/"]).is_ok());
        assert!(AllowList::parse(&["http://127.0.0.1:9000/minilab/"]).is_ok());
        for bad in [
            "ftp://hooks.example/",
            "https://hooks.example",
            "https://hooks.example/in",
            "https:///",
            "https://user@hooks.example/",
        ] {
            assert!(AllowList::parse(&[bad]).is_err(), "{bad} was accepted");
        }
        assert!(AllowList::parse::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn only_urls_under_an_allowed_prefix_are_allowed() {
        let allow = AllowList::parse(&["https://hooks.example/minilab/"]).unwrap();
        assert!(allow.allows("https://hooks.example/minilab/done?x=1"));
        assert!(!allow.allows("https://hooks.example.evil/minilab/"));
        assert!(!allow.allows("https://hooks.example/other"));
        assert!(!allow.allows("http://hooks.example/minilab/"));
        assert!(!allow.allows("https://hooks.example/minilab/a b"));
        assert!(!allow.allows("https://hooks.example/minilab/\\@evil"));
        // Dot segments, plain or percent-encoded, are resolved before the comparison,
        // and the URL sent is the resolved one.
        for escape in [
            "https://hooks.example/minilab/%2e%2e/admin/x",
            "https://hooks.example/minilab/%2E./admin/x",
            "https://hooks.example/minilab/../admin/x",
            "https://hooks.example/minilab/./../admin/x",
        ] {
            assert!(!allow.allows(escape), "{escape} was allowed");
        }
        assert_eq!(
            allow
                .allowed("https://hooks.example/minilab/a/%2e%2e/done")
                .map(String::from),
            Some("https://hooks.example/minilab/done".to_owned())
        );
        assert!(!allow.allows("https://user:pw@hooks.example/minilab/"));
        assert!(!allow.allows("https://hooks.example:8443/minilab/"));
        assert!(allow.allows("https://hooks.example:443/minilab/x"));
        let long = format!("https://hooks.example/minilab/{}", "a".repeat(600));
        assert!(!allow.allows(&long));
        assert!(!AllowList::default().allows("https://hooks.example/minilab/"));
    }

    #[test]
    fn a_signature_verifies_with_its_secret_body_and_time_only() {
        let body = br#"{"id":"x","state":"succeeded"}"#;
        let header = sign(b"secret", 1_700_000_000, body);
        // The documented recipe, by hand: HMAC-SHA256 over "<t>.<body>".
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        assert!(verify(b"secret", &header, body, 1_700_000_100, 300));
        assert!(!verify(b"other", &header, body, 1_700_000_100, 300));
        assert!(!verify(b"secret", &header, b"{}", 1_700_000_100, 300));
        assert!(
            !verify(b"secret", &header, body, 1_700_001_000, 300),
            "replayed late"
        );
        let forged = header.replace("t=1700000000", "t=1700000900");
        assert!(!verify(b"secret", &forged, body, 1_700_000_900, 300));
        assert!(!verify(b"secret", "v1=00", body, 1_700_000_000, 300));
    }
}
