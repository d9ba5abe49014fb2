//! The OpenAPI document `minilab up` serves covers every route the API has: each
//! route registered in api/src is a path in the document, each path in the document
//! is served, and the error code schema lists every code.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use minilab_tests::Lab;
use std::path::{Path, PathBuf};

/// The path literal of every `.route("...", ...)` in the API's sources; a `.route(`
/// without a literal is only allowed where the page's files are routed (web.rs) and
/// for the workers' word (its path is a constant the worker shares).
fn routes_in_sources() -> Vec<String> {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../api/src");
    let mut files = Vec::new();
    collect_rust_files(&root, &mut files);
    let mut routes = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices(".route(") {
            let rest = text[at + ".route(".len()..].trim_start();
            match rest.strip_prefix('"') {
                Some(literal) => routes.push(literal[..literal.find('"').unwrap()].to_owned()),
                // The workers' word, whose path the worker posts to: defined once.
                None if rest.starts_with("minilab_service::peer_words::CHANGES_PATH") => {
                    routes.push(minilab_service::peer_words::CHANGES_PATH.to_owned())
                }
                None => assert!(
                    file.ends_with("web.rs"),
                    "{}: a route whose path is not a literal; list it in the document \
                     and teach this test to find it",
                    file.display()
                ),
            }
        }
    }
    routes.extend(minilab_api::web::paths());
    routes
}

fn collect_rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_covers_every_route_and_error_code() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &[]);
    let doc = lab.get_json("/api/v1/openapi.json").await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();

    let routes = routes_in_sources();
    assert!(routes.len() >= 8, "found only {routes:?}");
    for route in &routes {
        assert!(
            paths.contains_key(route),
            "{route} is served but not in the document"
        );
    }

    // Every path in the document is served: none falls through to the fallback. The
    // internal ones are `minilab api --peer-secret`'s (tests/tests/aws.rs tries them).
    let id = minilab_core::UploadId::new(chrono::Utc::now()).to_string();
    for (path, item) in paths {
        let url = format!("{}{}", lab.url, path.replace("{id}", &id));
        for (method, operation) in item.as_object().unwrap() {
            if operation["tags"][0] == "internal" {
                continue;
            }
            let response = match method.as_str() {
                "get" => lab.http.get(&url).send().await.unwrap(),
                "post" => lab
                    .http
                    .post(&url)
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .unwrap(),
                "delete" => lab.http.delete(&url).send().await.unwrap(),
                other => panic!("{path}: a {other} the test does not try"),
            };
            // (An event stream's body is not read: it stays open.)
            if response.status() == 404 {
                let body = response.text().await.unwrap_or_default();
                assert!(
                    !body.contains("no such endpoint"),
                    "{method} {path} is in the document but not served"
                );
            }
        }
    }

    // The error codes: the schema lists exactly the API's codes.
    let listed: Vec<&str> = doc["components"]["schemas"]["Code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let codes: Vec<&str> = minilab_api::error::Code::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(listed, codes);
    for schema in [
        "UploadStatus",
        "UploadTicket",
        "CreateUpload",
        "RecipeList",
        "ErrorBody",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "no {schema} schema"
        );
    }
}
