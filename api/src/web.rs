//! The upload page: plain HTML, CSS and JavaScript from `web/`, embedded in the
//! binary so that `minilab up` needs no other files.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

pub const INDEX_HTML: &str = include_str!("../../web/index.html");
pub const APP_JS: &str = include_str!("../../web/app.js");
pub const STYLE_CSS: &str = include_str!("../../web/style.css");

/// Every file of the page: path, content type, body.
pub const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", INDEX_HTML),
    ("app.js", "text/javascript; charset=utf-8", APP_JS),
    ("style.css", "text/css; charset=utf-8", STYLE_CSS),
];

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let serve = |content_type: &'static str, body: &'static str| {
        get(move || async move {
            (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, "no-cache"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                body,
            )
                .into_response()
        })
    };
    let mut router = Router::new().route("/", serve(FILES[0].1, FILES[0].2));
    for (path, content_type, body) in FILES {
        router = router.route(&format!("/{path}"), serve(content_type, body));
    }
    router
}
