//! Optional sign-in: OIDC bearer tokens (JWTs) checked against the issuer's keys.
//!
//! Off unless an issuer is configured (`minilab api --oidc-issuer`, in builds with
//! the `sign-in` feature: [`oidc`]). When on, every upload request and status read
//! must carry `Authorization: Bearer <JWT>` signed by one of the issuer's keys, with
//! this API as its audience, the configured issuer, an `exp` in the future and any
//! `nbf` in the past. The token's `sub` becomes the client for the per-client
//! limits and owns the uploads it creates: another subject reading one gets
//! `not-found`. Each refusal has a code of its own ([`AuthError`]). Refusals cost
//! the client's address: one that keeps sending bad tokens is answered 429
//! `rate-limited` before its tokens are checked ([`FAILURES`]).

use crate::error::{ApiError, Code};
use axum::http::{HeaderMap, header};

#[cfg(feature = "sign-in")]
pub mod oidc;
#[cfg(feature = "test-issuer")]
pub mod test_issuer;

/// The subject a verified token names: who owns the uploads it creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject(pub String);

/// Why a request was not signed in; each has a stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    Missing,
    /// No bearer token in the header, or not a JWT with the claims required (`sub`,
    /// `exp`, `iss`, `aud`).
    Malformed,
    /// Its `exp` has passed.
    Expired,
    /// Its `nbf` has not come yet.
    NotYetValid,
    /// Not meant for this API (`aud`).
    WrongAudience,
    /// Not from the configured issuer (`iss`).
    WrongIssuer,
    /// Its signature does not verify, or its algorithm is not accepted.
    BadSignature,
    /// Signed with a key the issuer does not list.
    UnknownKey,
    /// The issuer's keys could not be fetched.
    KeysUnavailable,
}

impl AuthError {
    pub fn code(self) -> Code {
        match self {
            AuthError::Missing => Code::TokenMissing,
            AuthError::Malformed => Code::TokenMalformed,
            AuthError::Expired => Code::TokenExpired,
            AuthError::NotYetValid => Code::TokenNotYetValid,
            AuthError::WrongAudience => Code::TokenWrongAudience,
            AuthError::WrongIssuer => Code::TokenWrongIssuer,
            AuthError::BadSignature => Code::TokenBadSignature,
            AuthError::UnknownKey => Code::TokenUnknownKey,
            AuthError::KeysUnavailable => Code::SignInUnavailable,
        }
    }

    fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "sign in first: this API needs an Authorization: Bearer token",
            AuthError::Malformed => "the bearer token is not a JWT with sub and exp claims",
            AuthError::Expired => "the bearer token has expired; sign in again",
            AuthError::NotYetValid => "the bearer token is not valid yet (its nbf is ahead)",
            AuthError::WrongAudience => "the bearer token is not meant for this API",
            AuthError::WrongIssuer => "the bearer token is not from this API's issuer",
            AuthError::BadSignature => "the bearer token's signature does not verify",
            AuthError::UnknownKey => {
                "the bearer token is signed with a key the issuer does not list"
            }
            AuthError::KeysUnavailable => "sign-in is unavailable right now; try again shortly",
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        ApiError::new(err.code(), err.message())
    }
}

/// The `Authorization: Bearer` token of a request.
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token.trim())
}

/// Verifies a request's credentials: [`oidc::SignIn`] in builds with `sign-in`.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Subject, AuthError>;
}

/// Sign-in in front of the upload routes: verifies the request and hands its
/// [`Subject`] to the limits and the handlers, or answers 401 (503 while the issuer's
/// keys cannot be had) with the reason's code.
pub async fn require(
    axum::extract::State(state): axum::extract::State<crate::ApiState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(sign_in) = &state.sign_in else {
        return next.run(request).await;
    };
    let address = crate::limits::address_of(&request, state.config.rate_limits.trusted_hops);
    let now = std::time::Instant::now();
    if let Err(wait) = state.sign_in_failures.0.ready(address, now) {
        state.metrics.refused(Code::RateLimited);
        let seconds = crate::limits::retry_after(wait);
        return ApiError::too_many(
            Code::RateLimited,
            format!("too many refused sign-ins from this address; try again in {seconds} s"),
            seconds,
        )
        .into_response();
    }
    match sign_in.authenticate(request.headers()).await {
        Ok(subject) => {
            request.extensions_mut().insert(subject);
            next.run(request).await
        }
        Err(err) => {
            // A token checked and refused costs; no token, or no keys to check it
            // with, does not.
            if !matches!(err, AuthError::Missing | AuthError::KeysUnavailable) {
                let _ = state.sign_in_failures.0.check(address, now);
            }
            state.metrics.refused(err.code());
            ApiError::from(err).into_response()
        }
    }
}

/// Refused sign-ins one address may make: [`FAILURES`]'s burst at once, then its
/// rate. Checked before a token is (a signature check costs CPU, an unknown key a
/// fetch of the issuer's keys).
pub struct SignInFailures(pub crate::limits::Limiter);

/// The rate of [`SignInFailures`]: a person mistyping or signing in again never
/// reaches it; a script trying tokens does.
pub const FAILURES: crate::limits::Rate = crate::limits::Rate {
    per_minute: 30,
    burst: 30,
};

impl Default for SignInFailures {
    fn default() -> Self {
        Self(crate::limits::Limiter::new(FAILURES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header() {
        assert_eq!(bearer(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(bearer(&headers("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer(&headers("bearer  abc ")), Ok("abc"));
        assert_eq!(
            bearer(&headers("Basic dXNlcjpwdw==")),
            Err(AuthError::Malformed)
        );
        assert_eq!(bearer(&headers("Bearer ")), Err(AuthError::Malformed));
    }
}
