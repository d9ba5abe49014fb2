//! Verification of OIDC bearer tokens: [`verify`] (pure) and [`SignIn`], which keeps
//! the issuer's keys (a JWKS from a URL, cached and refreshed, or from a file) and
//! is the middleware in front of the upload routes.
//!
//! Only asymmetric algorithms are accepted (RSA, RSA-PSS, ECDSA, EdDSA), each with a
//! key of its own family: a JWKS can never make an HMAC secret of a public key.

use super::{AuthError, Subject, bearer};
use axum::http::HeaderMap;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Where the issuer's keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A JWKS URL (the `jwks_uri` of the issuer's discovery document).
    Url(String),
    /// A JWKS file, re-read like the URL is re-fetched.
    File(PathBuf),
}

/// What sign-in checks.
#[derive(Clone, Debug)]
pub struct SignInConfig {
    pub issuer: String,
    pub audience: String,
    pub keys: KeySource,
    /// How long fetched keys are used before they are fetched again.
    pub refresh: Duration,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// Algorithms accepted: asymmetric only.
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Seconds of clock skew allowed on `exp`.
const LEEWAY_SECONDS: u64 = 30;

/// Checks `token` against `keys`: the pure part of sign-in.
pub fn verify(
    token: &str,
    keys: &JwkSet,
    issuer: &str,
    audience: &str,
) -> Result<Subject, AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(AuthError::BadSignature);
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        // No key id: usable only when the issuer has a single key.
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or(AuthError::UnknownKey)?;
    let key = decoding_key(jwk).ok_or(AuthError::UnknownKey)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|err| match err
        .kind()
    {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::Crypto(_) => AuthError::BadSignature,
        _ => AuthError::Malformed,
    })?;
    if data.claims.sub.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(Subject(data.claims.sub))
}

/// A verifying key from a JWK, never an HMAC secret.
fn decoding_key(jwk: &Jwk) -> Option<DecodingKey> {
    use jsonwebtoken::jwk::AlgorithmParameters;
    match jwk.algorithm {
        AlgorithmParameters::OctetKey(_) => None,
        _ => DecodingKey::from_jwk(jwk).ok(),
    }
}

#[async_trait::async_trait]
impl super::Authenticator for SignIn {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Subject, AuthError> {
        self.verify_request(headers).await
    }
}

struct Cached {
    keys: Arc<JwkSet>,
    fetched: Instant,
    /// When the last fetch failed, if it did after `fetched`: no fetch is tried
    /// again for [`RETRY_FAILED`], so an issuer outage costs one attempt per
    /// interval, not one per request.
    failed: Option<Instant>,
}

/// Sign-in as a service: the configuration and the issuer's keys, fetched when first
/// needed, again after `refresh`, and again (at most every [`REFETCH_UNKNOWN`]) when a
/// token names a key not among them (the issuer rotated its keys). Keys that were
/// fetched stay in use while a refresh fails.
pub struct SignIn {
    config: SignInConfig,
    http: reqwest::Client,
    cache: RwLock<Option<Cached>>,
    fetching: tokio::sync::Mutex<()>,
}

/// Least time between fetches triggered by unknown key ids.
const REFETCH_UNKNOWN: Duration = Duration::from_secs(30);
/// Least time between fetches after one failed.
const RETRY_FAILED: Duration = Duration::from_secs(30);
/// Largest JWKS read.
const MAX_JWKS_BYTES: usize = 1 << 20;

impl SignIn {
    pub fn new(config: SignInConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client for the issuer's keys")?;
        Ok(Self {
            config,
            http,
            cache: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Fetches the keys now: at start, so a mistake in the configuration is found then.
    pub async fn load(&self) -> anyhow::Result<()> {
        let keys = self.fetch().await?;
        self.store(keys);
        Ok(())
    }

    /// Verifies the request's bearer token.
    async fn verify_request(&self, headers: &HeaderMap) -> Result<Subject, AuthError> {
        let token = bearer(headers)?;
        let (keys, age) = self.keys(false).await?;
        match verify(token, &keys, &self.config.issuer, &self.config.audience) {
            Err(AuthError::UnknownKey) if age >= REFETCH_UNKNOWN => {
                let (keys, _) = self.keys(true).await?;
                verify(token, &keys, &self.config.issuer, &self.config.audience)
            }
            verified => verified,
        }
    }

    /// The keys and their age, fetched first when there are none, when they are older
    /// than the refresh interval, or when `again` asks for it.
    async fn keys(&self, again: bool) -> Result<(Arc<JwkSet>, Duration), AuthError> {
        if let Some(fresh) = self.cached(again) {
            return Ok(fresh);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(fresh) = self.cached(again) {
            return Ok(fresh);
        }
        match self.fetch().await {
            Ok(keys) => {
                self.store(keys);
            }
            Err(err) => {
                tracing::warn!(error = %err, "fetching the issuer's keys failed");
                self.note_failure();
            }
        }
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache
            .as_ref()
            .map(|c| (c.keys.clone(), c.fetched.elapsed()))
            .ok_or(AuthError::KeysUnavailable)
    }

    fn cached(&self, again: bool) -> Option<(Arc<JwkSet>, Duration)> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let cached = cache.as_ref()?;
        let age = cached.fetched.elapsed();
        let due = age >= self.config.refresh || (again && age >= REFETCH_UNKNOWN);
        let backing_off = cached.failed.is_some_and(|at| at.elapsed() < RETRY_FAILED);
        (!due || backing_off).then(|| (cached.keys.clone(), age))
    }

    fn store(&self, keys: JwkSet) {
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(Cached {
            keys: Arc::new(keys),
            fetched: Instant::now(),
            failed: None,
        });
    }

    fn note_failure(&self) {
        if let Some(cached) = self
            .cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            cached.failed = Some(Instant::now());
        }
    }

    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        use anyhow::Context;
        let bytes = match &self.config.keys {
            KeySource::File(path) => tokio::fs::read(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?,
            KeySource::Url(url) => {
                let mut response = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .with_context(|| format!("fetching {url}"))?;
                let mut bytes = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .with_context(|| format!("reading {url}"))?
                {
                    bytes.extend_from_slice(&chunk);
                    anyhow::ensure!(
                        bytes.len() <= MAX_JWKS_BYTES,
                        "the JWKS is larger than 1 MiB"
                    );
                }
                bytes
            }
        };
        anyhow::ensure!(
            bytes.len() <= MAX_JWKS_BYTES,
            "the JWKS is larger than 1 MiB"
        );
        let keys: JwkSet = serde_json::from_slice(&bytes).context("the JWKS is not valid")?;
        anyhow::ensure!(!keys.keys.is_empty(), "the JWKS has no keys");
        Ok(keys)
    }
}

#[cfg(test)]
#[cfg(feature = "test-issuer")]
mod tests {
    use super::*;
    use crate::auth::test_issuer::TestIssuer;

    const ISSUER: &str = "https://id.example.test";
    const AUDIENCE: &str = "minilab";

    fn keys(issuer: &TestIssuer) -> JwkSet {
        serde_json::from_value(issuer.jwks()).unwrap()
    }

    #[test]
    fn a_good_token_names_its_subject() {
        let issuer = TestIssuer::new(ISSUER, "k1");
        let token = issuer.token("alice", AUDIENCE, 300);
        assert_eq!(
            verify(&token, &keys(&issuer), ISSUER, AUDIENCE),
            Ok(Subject("alice".into()))
        );
    }

    #[test]
    fn each_bad_token_is_refused_for_its_own_reason() {
        let issuer = TestIssuer::new(ISSUER, "k1");
        let keys = keys(&issuer);
        let check = |token: &str| verify(token, &keys, ISSUER, AUDIENCE);
        assert_eq!(check("not a token"), Err(AuthError::Malformed));
        assert_eq!(
            check(&issuer.token("alice", AUDIENCE, -120)),
            Err(AuthError::Expired)
        );
        assert_eq!(
            check(&issuer.token("alice", "another-api", 300)),
            Err(AuthError::WrongAudience)
        );
        let stranger = TestIssuer::new("https://elsewhere.test", "k1");
        assert_eq!(
            check(&stranger.token("alice", AUDIENCE, 300)),
            Err(AuthError::BadSignature),
            "same kid, another key"
        );
        let mut claims = serde_json::json!({
            "iss": "https://elsewhere.test", "sub": "alice", "aud": AUDIENCE,
            "exp": chrono::Utc::now().timestamp() + 300,
        });
        assert_eq!(check(&issuer.sign(&claims)), Err(AuthError::WrongIssuer));
        claims["iss"] = ISSUER.into();
        claims.as_object_mut().unwrap().remove("sub");
        assert_eq!(check(&issuer.sign(&claims)), Err(AuthError::Malformed));
        let rotated = TestIssuer::new(ISSUER, "k2");
        assert_eq!(
            check(&rotated.token("alice", AUDIENCE, 300)),
            Err(AuthError::UnknownKey)
        );
    }

    #[test]
    fn a_public_key_is_never_taken_for_an_hmac_secret() {
        // The classic confusion: HS256 "signed" with the public key's bytes.
        let issuer = TestIssuer::new(ISSUER, "k1");
        let keys = keys(&issuer);
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "mallory", "aud": AUDIENCE,
            "exp": chrono::Utc::now().timestamp() + 300,
        });
        let x = issuer.jwk()["x"].as_str().unwrap().to_owned();
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verify(&forged, &keys, ISSUER, AUDIENCE),
            Err(AuthError::BadSignature)
        );
        // And an HMAC key in a JWKS never becomes a verifying key.
        let secret: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}
        ]}))
        .unwrap();
        assert!(decoding_key(&secret.keys[0]).is_none());
        assert!(decoding_key(&keys.keys[0]).is_some());
    }

    #[tokio::test]
    async fn keys_come_from_a_file_and_a_missing_file_is_unavailable() {
        let issuer = TestIssuer::new(ISSUER, "k1");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, issuer.jwks().to_string()).unwrap();
        let config = |path: PathBuf| SignInConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            keys: KeySource::File(path),
            refresh: Duration::from_secs(600),
        };
        let sign_in = SignIn::new(config(path.clone())).unwrap();
        sign_in.load().await.unwrap();
        let mut headers = HeaderMap::new();
        let bearer = format!("Bearer {}", issuer.token("alice", AUDIENCE, 300));
        headers.insert(axum::http::header::AUTHORIZATION, bearer.parse().unwrap());
        assert_eq!(
            sign_in.verify_request(&headers).await,
            Ok(Subject("alice".into()))
        );
        let missing = SignIn::new(config(dir.path().join("missing.json"))).unwrap();
        assert!(missing.load().await.is_err());
        assert_eq!(
            missing.verify_request(&headers).await,
            Err(AuthError::KeysUnavailable)
        );
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_old_keys_and_is_not_retried_at_once() {
        let (old, new) = (TestIssuer::new(ISSUER, "k1"), TestIssuer::new(ISSUER, "k2"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, old.jwks().to_string()).unwrap();
        let sign_in = SignIn::new(SignInConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            keys: KeySource::File(path.clone()),
            refresh: Duration::ZERO, // every request finds the keys due
        })
        .unwrap();
        sign_in.load().await.unwrap();
        let headers = |issuer: &TestIssuer| {
            let mut headers = HeaderMap::new();
            let bearer = format!("Bearer {}", issuer.token("alice", AUDIENCE, 300));
            headers.insert(axum::http::header::AUTHORIZATION, bearer.parse().unwrap());
            headers
        };
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            sign_in.verify_request(&headers(&old)).await,
            Ok(Subject("alice".into())),
            "the issuer is down: the keys fetched before still verify"
        );
        // The issuer is back with new keys, but the failure was just now: no request
        // fetches again before RETRY_FAILED, so the new key is not known yet.
        std::fs::write(&path, new.jwks().to_string()).unwrap();
        assert_eq!(
            sign_in.verify_request(&headers(&new)).await,
            Err(AuthError::UnknownKey)
        );
    }
}
