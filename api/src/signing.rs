//! The credentials presigned URLs are signed with, and how long a URL may be valid.
//!
//! A presigned URL stops working when the credentials that signed it expire, whatever
//! its own expiry says, and role credentials (IRSA, EKS Pod Identity) last an hour by
//! default. So the API signs with credentials it renews well before they run out,
//! and gives each URL at most what those credentials have left.

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;

/// Credentials with less than this left are renewed before they sign anything, so a
/// URL is valid for at least this long (or its own lifetime, if shorter).
pub const RENEW_BEFORE: Duration = Duration::from_secs(15 * 60);

/// Hands out the current signing credentials, renewing them when they run low (one
/// provider call per renewal, not one per request: with a role that is an STS call).
pub struct Signer {
    provider: SharedCredentialsProvider,
    current: Mutex<Option<Credentials>>,
}

impl Signer {
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            current: Mutex::new(None),
        }
    }

    /// Credentials good for at least [`RENEW_BEFORE`] when the provider can give such.
    pub async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let mut current = self.current.lock().await;
        let now = SystemTime::now();
        if let Some(credentials) = current.as_ref()
            && !needs_renewal(credentials.expiry(), now)
        {
            return Ok(credentials.clone());
        }
        let fresh = self.provider.provide_credentials().await?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }
}

/// Whether credentials expiring at `expiry` must be renewed before signing at `now`.
pub fn needs_renewal(expiry: Option<SystemTime>, now: SystemTime) -> bool {
    expiry.is_some_and(|expiry| expiry <= now + RENEW_BEFORE)
}

/// How long a URL signed at `now` by credentials expiring at `expiry` may be valid:
/// `wanted`, or what the credentials have left if that is shorter.
pub fn lifetime(wanted: Duration, expiry: Option<SystemTime>, now: SystemTime) -> Duration {
    match expiry {
        Some(expiry) => wanted.min(expiry.duration_since(now).unwrap_or_default()),
        None => wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_url_never_outlives_the_credentials_that_signed_it() {
        let now = SystemTime::UNIX_EPOCH + HOUR * 1000;
        assert_eq!(lifetime(HOUR, None, now), HOUR, "long-lived keys");
        assert_eq!(lifetime(HOUR, Some(now + HOUR * 2), now), HOUR);
        let left = Duration::from_secs(1700);
        assert_eq!(lifetime(HOUR, Some(now + left), now), left);
        assert_eq!(lifetime(HOUR, Some(now - HOUR), now), Duration::ZERO);
    }

    #[test]
    fn credentials_are_renewed_before_they_run_low() {
        let now = SystemTime::UNIX_EPOCH + HOUR * 1000;
        assert!(!needs_renewal(None, now));
        assert!(!needs_renewal(
            Some(now + RENEW_BEFORE + Duration::from_secs(1)),
            now
        ));
        assert!(needs_renewal(Some(now + RENEW_BEFORE), now));
        assert!(needs_renewal(Some(now - HOUR), now));
    }

    #[tokio::test]
    async fn the_signer_asks_the_provider_only_when_its_credentials_run_low() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        #[derive(Debug)]
        struct Counting(Arc<AtomicUsize>, Duration);
        impl ProvideCredentials for Counting {
            fn provide_credentials<'a>(
                &'a self,
            ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                self.0.fetch_add(1, Ordering::Relaxed);
                let expiry = SystemTime::now() + self.1;
                aws_credential_types::provider::future::ProvideCredentials::ready(Ok(
                    Credentials::new("k", "s", None, Some(expiry), "test"),
                ))
            }
        }
        for (left, calls) in [(HOUR, 1), (RENEW_BEFORE / 2, 3)] {
            let count = Arc::new(AtomicUsize::new(0));
            let signer = Signer::new(SharedCredentialsProvider::new(Counting(
                count.clone(),
                left,
            )));
            for _ in 0..3 {
                signer.credentials().await.unwrap();
            }
            assert_eq!(count.load(Ordering::Relaxed), calls, "{left:?} left");
        }
    }
}
