//! API errors: JSON `{error: {code, message}}` with a stable kebab-case [`Code`].
//! Internal errors are logged with their cause and answered with a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Every code the API answers an error with, and the status each one goes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The request's body, query or path could not be read.
    InvalidRequest,
    /// The upload names no recipe the API has.
    UnknownRecipe,
    /// The file's content type is not one the pipeline reads.
    UnsupportedType,
    /// The file has no bytes.
    EmptyFile,
    /// The file is larger than the upload limit.
    TooLarge,
    /// The upload names a webhook URL this deployment does not allow.
    WebhookNotAllowed,
    /// No such upload (or not this subject's), or no such endpoint.
    NotFound,
    /// A DELETE without the upload's delete token.
    DeleteTokenInvalid,
    /// A DELETE of an upload still being processed.
    NotFinished,
    /// An image address without the signature its status gave (signed links on).
    ImageLinkInvalid,
    /// A signed image address past its expiry.
    ImageLinkExpired,
    /// Too many requests from this client; see `Retry-After`.
    RateLimited,
    /// This client's upload bytes per hour are spent; see `Retry-After`.
    UploadBudgetExceeded,
    /// Sign-in is on and the request has no bearer token.
    TokenMissing,
    /// The bearer token is not a JWT with the claims required.
    TokenMalformed,
    TokenExpired,
    TokenWrongAudience,
    TokenWrongIssuer,
    TokenBadSignature,
    TokenUnknownKey,
    /// The issuer's keys cannot be fetched right now.
    SignInUnavailable,
    /// The bearer token's `nbf` has not come yet.
    TokenNotYetValid,
    /// Word of a change (internal) not signed with the peer secret.
    BadSignature,
    /// Word of a change (internal) taken already: a replay.
    Replayed,
    /// `minilab up` on loopback: the request names another host (DNS rebinding).
    HostNotAllowed,
    /// The instance is shutting down (`/readyz`).
    Draining,
    /// Too many requests in flight; try again shortly.
    Overloaded,
    /// The request took longer than the API allows.
    Timeout,
    /// Something failed on the API's side (logged, not described).
    Internal,
}

impl Code {
    /// Every code, for documentation and tests.
    pub const ALL: [Code; 29] = [
        Code::InvalidRequest,
        Code::UnknownRecipe,
        Code::UnsupportedType,
        Code::EmptyFile,
        Code::TooLarge,
        Code::WebhookNotAllowed,
        Code::NotFound,
        Code::DeleteTokenInvalid,
        Code::NotFinished,
        Code::ImageLinkInvalid,
        Code::ImageLinkExpired,
        Code::RateLimited,
        Code::UploadBudgetExceeded,
        Code::TokenMissing,
        Code::TokenMalformed,
        Code::TokenExpired,
        Code::TokenWrongAudience,
        Code::TokenWrongIssuer,
        Code::TokenBadSignature,
        Code::TokenUnknownKey,
        Code::SignInUnavailable,
        Code::TokenNotYetValid,
        Code::BadSignature,
        Code::Replayed,
        Code::HostNotAllowed,
        Code::Draining,
        Code::Overloaded,
        Code::Timeout,
        Code::Internal,
    ];

    /// The code as it appears in answers and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid-request",
            Code::UnknownRecipe => "unknown-recipe",
            Code::UnsupportedType => "unsupported-type",
            Code::EmptyFile => "empty-file",
            Code::TooLarge => "too-large",
            Code::WebhookNotAllowed => "webhook-not-allowed",
            Code::NotFound => "not-found",
            Code::DeleteTokenInvalid => "delete-token-invalid",
            Code::NotFinished => "not-finished",
            Code::ImageLinkInvalid => "image-link-invalid",
            Code::ImageLinkExpired => "image-link-expired",
            Code::RateLimited => "rate-limited",
            Code::UploadBudgetExceeded => "upload-budget-exceeded",
            Code::TokenMissing => "token-missing",
            Code::TokenMalformed => "token-malformed",
            Code::TokenExpired => "token-expired",
            Code::TokenWrongAudience => "token-wrong-audience",
            Code::TokenWrongIssuer => "token-wrong-issuer",
            Code::TokenBadSignature => "token-bad-signature",
            Code::TokenUnknownKey => "token-unknown-key",
            Code::SignInUnavailable => "sign-in-unavailable",
            Code::TokenNotYetValid => "token-not-yet-valid",
            Code::BadSignature => "bad-signature",
            Code::Replayed => "replayed",
            Code::HostNotAllowed => "host-not-allowed",
            Code::Draining => "draining",
            Code::Overloaded => "overloaded",
            Code::Timeout => "timeout",
            Code::Internal => "internal",
        }
    }

    /// The HTTP status an error with this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidRequest
            | Code::UnknownRecipe
            | Code::EmptyFile
            | Code::WebhookNotAllowed => StatusCode::BAD_REQUEST,
            Code::UnsupportedType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::DeleteTokenInvalid | Code::ImageLinkInvalid | Code::ImageLinkExpired => {
                StatusCode::FORBIDDEN
            }
            Code::NotFinished => StatusCode::CONFLICT,
            Code::Replayed => StatusCode::CONFLICT,
            Code::HostNotAllowed => StatusCode::MISDIRECTED_REQUEST,
            Code::RateLimited | Code::UploadBudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
            Code::TokenMissing
            | Code::TokenMalformed
            | Code::TokenExpired
            | Code::TokenWrongAudience
            | Code::TokenWrongIssuer
            | Code::TokenBadSignature
            | Code::TokenNotYetValid
            | Code::BadSignature
            | Code::TokenUnknownKey => StatusCode::UNAUTHORIZED,
            Code::SignInUnavailable | Code::Draining | Code::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Code::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: Code,
    /// For people: what went wrong and what to do.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// An error with `code`, answered with the code's status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error answered with another status (axum's own rejections pick
    /// theirs: 415 for a missing JSON content type, 422 for a body of the wrong shape).
    pub fn with_status(self, status: StatusCode) -> Self {
        Self { status, ..self }
    }

    /// `code` (a 429 one), asking to come back in `seconds`.
    pub fn too_many(code: Code, message: impl Into<String>, seconds: u64) -> Self {
        Self {
            retry_after: Some(seconds),
            ..Self::new(code, message)
        }
    }

    /// The answer's body.
    pub fn into_body(self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        }
    }

    /// Logs `cause` and hides it from the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            Code::Internal,
            "something went wrong on our side; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, retry_after) = (self.status, self.retry_after);
        let mut response = (status, Json(self.into_body())).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_reads_as_its_name() {
        for code in Code::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
        let names: std::collections::HashSet<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Code::ALL.len());
    }
}
