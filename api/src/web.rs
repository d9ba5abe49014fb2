//! The upload page: plain HTML, CSS and JavaScript from `web/`, embedded in the
//! binary so that `minilab up` needs no other files.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

pub const INDEX_HTML: &str = include_str!("../../web/index.html");
pub const APP_JS: &str = include_str!("../../web/app.js");
pub const STYLE_CSS: &str = include_str!("../../web/style.css");
/// evanw's ThumbHash decoder (MIT, web/vendor/LICENSE-thumbhash).
pub const THUMBHASH_JS: &str = include_str!("../../web/vendor/thumbhash.js");

const SCRIPT: &str = "text/javascript; charset=utf-8";

/// Every file of the page: path, content type, body; index.html first, then the
/// files it names.
pub const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", INDEX_HTML),
    ("vendor/thumbhash.js", SCRIPT, THUMBHASH_JS),
    ("app.js", SCRIPT, APP_JS),
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

/// Why the page could not be made for a bucket.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(
        "the API base URL must be empty (the page's own origin) or an http(s) URL without quotes, spaces or markup; got {0:?}"
    )]
    BadApiBase(String),
    #[error("web/index.html must contain {0} exactly once")]
    IndexLacks(String),
}

/// The page for a bucket behind a CDN: each file index.html names under a name with
/// its content's hash (`app.{hash}.js`, `style.{hash}.css`, ...), then `index.html`
/// pointing at them with `api_base` in its `minilab-api` meta tag ("" for the page's
/// own origin, as behind CloudFront with `/api/*` routed to the API). In upload
/// order: index.html last, so it never names a file not yet there.
pub fn site(api_base: &str) -> Result<Vec<SiteFile>, SiteError> {
    let api_base = checked_api_base(api_base)?;
    let (index, assets) = FILES.split_first().expect("index.html and its files");
    let mut html = index.2.to_owned();
    let mut files = Vec::with_capacity(FILES.len());
    for &(name, content_type, body) in assets {
        let key = hashed_name(name, body);
        let attribute = if name.ends_with(".css") {
            "href"
        } else {
            "src"
        };
        html = replace_once(
            &html,
            &format!(r#"{attribute}="{name}""#),
            &format!(r#"{attribute}="{key}""#),
        )?;
        files.push(SiteFile {
            key,
            content_type,
            cache_control: IMMUTABLE,
            body: body.as_bytes().to_vec(),
        });
    }
    html = replace_once(
        &html,
        r#"<meta name="minilab-api" content="">"#,
        &format!(r#"<meta name="minilab-api" content="{api_base}">"#),
    )?;
    files.push(SiteFile {
        key: index.0.to_owned(),
        content_type: index.1,
        cache_control: REVALIDATE,
        body: html.into_bytes(),
    });
    Ok(files)
}

/// `api_base` without its trailing slashes, if it cannot break out of an attribute.
fn checked_api_base(api_base: &str) -> Result<&str, SiteError> {
    let api_base = api_base.trim_end_matches('/');
    let is_url = (api_base.starts_with("https://") || api_base.starts_with("http://"))
        && !api_base.contains(|c: char| c.is_whitespace() || "\"'<>&\\`".contains(c));
    if api_base.is_empty() || is_url {
        Ok(api_base)
    } else {
        Err(SiteError::BadApiBase(api_base.to_owned()))
    }
}

/// `dir/stem.{sha256:12}.ext` for `dir/stem.ext`.
fn hashed_name(name: &str, body: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    let (stem, extension) = name.rsplit_once('.').expect("page files have extensions");
    format!("{stem}.{}.{extension}", &digest[..12])
}

fn replace_once(html: &str, from: &str, to: &str) -> Result<String, SiteError> {
    if html.matches(from).count() != 1 {
        return Err(SiteError::IndexLacks(from.to_owned()));
    }
    Ok(html.replace(from, to))
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
        let [thumbhash, script, style, index] = files.as_slice() else {
            panic!("four files: {files:?}");
        };
        assert_eq!(index.key, "index.html");
        assert_eq!(index.cache_control, "no-cache");
        assert!(index.content_type.starts_with("text/html"));
        for asset in [thumbhash, script, style] {
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
        assert!(thumbhash.key.starts_with("vendor/thumbhash.") && thumbhash.key.ends_with(".js"));
        assert!(style.key.starts_with("style.") && style.content_type.starts_with("text/css"));
        assert_eq!(script.body, APP_JS.as_bytes());
        assert!(
            text(index).contains(r#"<meta name="minilab-api" content="https://api.example.com">"#)
        );
        assert!(!text(index).contains(r#"src="app.js""#));
        // The decoder loads before the page's script, which calls it.
        let at = |key: &str| text(index).find(key).unwrap();
        assert!(at(&thumbhash.key) < at(&script.key));
        // Same content, same names; the page's own origin by default.
        let again = site("").unwrap();
        assert_eq!(again[1].key, script.key);
        assert!(text(&again[3]).contains(r#"<meta name="minilab-api" content="">"#));
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
