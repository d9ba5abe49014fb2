//! `minilab up` on a loopback address answers only requests addressed to loopback:
//! a web page elsewhere can point its own name at 127.0.0.1 (DNS rebinding) and
//! reach the API and the store, but the browser then sends that name as `Host`.
//! Listening on another address (`--listen 0.0.0.0:8080`) opens it on purpose:
//! then any host is answered.

use axum::http::{HeaderMap, header};
use minilab_api::error::{ApiError, Code};
use std::net::{IpAddr, SocketAddr};

/// Whether a request with `host` (the `Host` header, `None` when absent) may be
/// answered by a server listening on `listen`.
pub fn allowed(host: Option<&str>, listen: SocketAddr) -> bool {
    if !listen.ip().is_loopback() {
        return true;
    }
    let Some(host) = host else {
        // No Host (HTTP/1.0): not a browser's request.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Middleware: answers 421 `host-not-allowed` to requests [`allowed`] refuses.
pub async fn check(
    axum::extract::State(listen): axum::extract::State<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if allowed(host(request.headers()), listen) {
        return next.run(request).await;
    }
    ApiError::new(
        Code::HostNotAllowed,
        format!(
            "this server on {listen} answers only requests for localhost or a loopback address"
        ),
    )
    .into_response()
}

fn host(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_loopback_only_loopback_names_are_answered() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        for host in [
            "localhost:8080",
            "LOCALHOST",
            "127.0.0.1:8080",
            "127.0.0.2",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(allowed(Some(host), listen), "{host}");
        }
        for host in [
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[2001:db8::1]:8080",
            "",
        ] {
            assert!(!allowed(Some(host), listen), "{host}");
        }
        assert!(allowed(None, listen));
    }

    #[test]
    fn on_another_address_every_name_is_answered() {
        let listen: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(allowed(Some("photos.example:8080"), listen));
    }
}
