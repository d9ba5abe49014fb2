//! The `/metrics` answer every minilab process serves: its registry in the
//! OpenMetrics text format.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `registry` as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The HTTP answer to `GET /metrics`.
pub fn response(registry: &Registry) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], encode(registry)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn a_registry_reads_as_openmetrics_text() {
        let mut registry = Registry::with_prefix("minilab_test");
        let counter = Counter::<u64>::default();
        registry.register("things", "Things counted", counter.clone());
        counter.inc();
        let text = encode(&registry);
        assert!(text.contains("minilab_test_things_total 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
