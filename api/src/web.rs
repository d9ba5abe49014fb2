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

/// The page's Content-Security-Policy: its own script and style sheet only (no inline
/// script, no eval), images also from the store's presigned URLs and the placeholders'
/// `data:` URLs, requests to the API and the store (either may be another origin:
/// `minilab-api`, the bucket), never in a frame (clickjacking), no plugins, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data: blob: http: https:; \
    connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let serve = |content_type: &'static str, body: &'static str| {
        get(move || async move {
            (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, "no-cache"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
                    (header::X_FRAME_OPTIONS, "DENY"),
                ],
                body,
            )
                .into_response()
        })
    };
    let mut router = Router::new();
    for path in paths() {
        let (_, content_type, body) = file(&path).expect("every path names a file");
        router = router.route(&path, serve(content_type, body));
    }
    router
}

/// The page's paths: `/` (index.html) and `/{file}` for each file.
pub fn paths() -> Vec<String> {
    std::iter::once("/".to_owned())
        .chain(FILES.iter().map(|(name, _, _)| format!("/{name}")))
        .collect()
}

/// The content type served at `path`, one of [`paths`].
pub fn content_type(path: &str) -> Option<&'static str> {
    file(path).map(|(_, content_type, _)| content_type)
}

fn file(path: &str) -> Option<(&'static str, &'static str, &'static str)> {
    let name = match path {
        "/" => "index.html",
        other => other.strip_prefix('/')?,
    };
    FILES.iter().find(|(n, _, _)| *n == name).copied()
}

/// One file of the page as published to a bucket (`minilab publish-web`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteFile {
    pub key: String,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub body: Vec<u8>,
}

/// Cache headers of the published page: the script and the style sheet have their
/// content's hash in their names and never change; index.html is revalidated on
/// every visit so a new release shows at once.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
pub const REVALIDATE: &str = "no-cache";

/// The page for a bucket behind a CDN: `app.{hash}.js` and `style.{hash}.css`, then
/// `index.html` pointing at them with `api_base` in its `minilab-api` meta tag ("" for
/// the page's own origin, as behind CloudFront with `/api/*` routed to the API). In
/// upload order: index.html last, so it never names a file not yet there.
pub fn site(api_base: &str) -> Result<Vec<SiteFile>, String> {
    let api_base = api_base.trim_end_matches('/');
    if !(api_base.is_empty()
        || ((api_base.starts_with("https://") || api_base.starts_with("http://"))
            && !api_base.contains(|c: char| c.is_whitespace() || "\"'<>&\\`".contains(c))))
    {
        return Err(format!(
            "the API base URL must be empty (the page's own origin) or an http(s) URL without quotes, spaces or markup; got {api_base:?}"
        ));
    }
    let hashed = |stem: &str, extension: &str, body: &str| {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(body.as_bytes());
        format!("{stem}.{}.{extension}", &hex::encode(digest)[..12])
    };
    let script = hashed("app", "js", APP_JS);
    let style = hashed("style", "css", STYLE_CSS);
    let mut index = INDEX_HTML.to_owned();
    for (from, to) in [
        (r#"src="app.js""#, format!(r#"src="{script}""#)),
        (r#"href="style.css""#, format!(r#"href="{style}""#)),
        (
            r#"<meta name="minilab-api" content="">"#,
            format!(r#"<meta name="minilab-api" content="{api_base}">"#),
        ),
    ] {
        if index.matches(from).count() != 1 {
            return Err(format!("web/index.html must contain {from} exactly once"));
        }
        index = index.replace(from, &to);
    }
    Ok(vec![
        SiteFile {
            key: script,
            content_type: FILES[1].1,
            cache_control: IMMUTABLE,
            body: APP_JS.as_bytes().to_vec(),
        },
        SiteFile {
            key: style,
            content_type: FILES[2].1,
            cache_control: IMMUTABLE,
            body: STYLE_CSS.as_bytes().to_vec(),
        },
        SiteFile {
            key: "index.html".to_owned(),
            content_type: FILES[0].1,
            cache_control: REVALIDATE,
            body: index.into_bytes(),
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(file: &SiteFile) -> &str {
        std::str::from_utf8(&file.body).unwrap()
    }

    #[test]
    fn the_published_page_names_its_hashed_files_and_the_api_base() {
        let files = site("https://api.example.com/").unwrap();
        let [script, style, index] = files.as_slice() else {
            panic!("three files: {files:?}");
        };
        assert_eq!(index.key, "index.html");
        assert_eq!(index.cache_control, "no-cache");
        assert!(index.content_type.starts_with("text/html"));
        for asset in [script, style] {
            assert_eq!(asset.cache_control, IMMUTABLE);
            assert!(
                text(index).contains(&format!("\"{}\"", asset.key)),
                "{}",
                asset.key
            );
        }
        assert!(
            script.key.starts_with("app.") && script.content_type.starts_with("text/javascript")
        );
        assert!(style.key.starts_with("style.") && style.content_type.starts_with("text/css"));
        assert_eq!(script.body, APP_JS.as_bytes());
        assert!(
            text(index).contains(r#"<meta name="minilab-api" content="https://api.example.com">"#)
        );
        assert!(!text(index).contains(r#"src="app.js""#));
        // Same content, same names; the page's own origin by default.
        let again = site("").unwrap();
        assert_eq!(again[0].key, script.key);
        assert!(text(&again[2]).contains(r#"<meta name="minilab-api" content="">"#));
    }

    #[test]
    fn an_api_base_that_could_break_out_of_the_attribute_is_refused() {
        for bad in [
            "javascript:alert(1)",
            "https://x\" onload=\"alert(1)",
            "https://x/<script>",
            "ftp://example.com",
            "https://a b",
        ] {
            assert!(site(bad).is_err(), "{bad}");
        }
    }
}
