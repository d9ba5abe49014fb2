//! `minilab up` over HTTP only: the whole upload → process → download path, bad
//! files, refused uploads, and a restart with work outstanding.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use base64::Engine;
use minilab_core::Limits;
use minilab_core::pipeline::fitted_size;
use minilab_core::recipe::Fit;
use minilab_tests::{Lab, Process, minilab_bin, photo};
use serde_json::Value;

fn state(status: &Value) -> &str {
    status["state"].as_str().unwrap_or_default()
}

/// The size a photo has once its EXIF orientation is applied.
fn oriented_size(bytes: &[u8]) -> (u32, u32) {
    let (_, image) =
        minilab_core::pipeline::decode(bytes, &Limits::default()).expect("test photo decodes");
    (image.width(), image.height())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_photo_goes_up_through_the_web_recipe_and_comes_back_in_both_sizes_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &[]);
    for name in ["photo-12mp.jpg", "photo-exif-rotate6.jpg"] {
        let bytes = photo(name);
        let (width, height) = oriented_size(&bytes);
        let ticket = lab.ticket(name, "image/jpeg", &bytes, "web").await;
        let id = ticket["id"].as_str().unwrap();
        assert_eq!(state(&lab.status(id, 0).await), "awaiting_upload");
        lab.upload(&ticket, bytes, "image/jpeg").await;

        let status = lab.wait_final(id).await;
        assert_eq!(state(&status), "succeeded", "{status}");
        let outputs = status["outputs"].as_array().unwrap();
        let names: Vec<_> = outputs
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["large", "large-webp", "thumb", "thumb-webp"]);
        let placeholder = &status["placeholder"];
        let hash = placeholder["thumbhash"].as_str().unwrap();
        assert!(
            (20..=40).contains(&hash.len()),
            "a ThumbHash, base64: {hash}"
        );
        let colour = placeholder["dominantColor"].as_str().unwrap();
        assert!(
            colour.len() == 7
                && colour.starts_with('#')
                && colour[1..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{colour}"
        );
        for (output, size, ext, format) in [
            (1024, "jpg", image::ImageFormat::Jpeg),
            (1024, "webp", image::ImageFormat::WebP),
            (256, "jpg", image::ImageFormat::Jpeg),
            (256, "webp", image::ImageFormat::WebP),
        ]
        .into_iter()
        .zip(outputs)
        .map(|((size, ext, format), output)| (output, size, ext, format))
        {
            let response = lab
                .http
                .get(output["url"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let disposition = response.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .to_owned();
            let stem = name.trim_end_matches(".jpg");
            assert_eq!(
                disposition,
                format!(
                    "attachment; filename=\"{stem}-{}.{ext}\"",
                    output["name"].as_str().unwrap()
                )
            );
            let body = response.bytes().await.unwrap();
            assert_eq!(body.len() as u64, output["bytes"].as_u64().unwrap());
            assert_eq!(
                output["contentType"].as_str().unwrap(),
                format.to_mime_type()
            );
            let decoded = image::load_from_memory_with_format(&body, format).unwrap();
            let expected = fitted_size(width, height, size, size, Fit::Fit, false);
            assert_eq!(
                (decoded.width(), decoded.height()),
                expected,
                "{name} {}",
                output["name"]
            );
            assert_eq!(
                (
                    output["width"].as_u64().unwrap(),
                    output["height"].as_u64().unwrap()
                ),
                (u64::from(expected.0), u64::from(expected.1))
            );
        }
    }
}

/// Each output stays at a stable address a website can put in `<img src>`: the same
/// bytes as the download, its type, a year's immutable caching and an ETag that
/// answers 304; nothing but an upload's outputs is served there.
#[tokio::test(flavor = "multi_thread")]
async fn outputs_are_served_at_stable_cacheable_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &[]);
    let id = lab
        .upload_jpeg("stable.jpg", &photo("photo-small.jpg"), "web")
        .await;
    let status = lab.wait_final(&id).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    let downloads = lab.download_outputs(&status).await;
    for (output, (name, downloaded)) in status["outputs"].as_array().unwrap().iter().zip(downloads)
    {
        let path = output["imageUrl"].as_str().unwrap();
        let extension = output["contentType"]
            .as_str()
            .unwrap()
            .trim_start_matches("image/");
        let extension = if extension == "jpeg" {
            "jpg"
        } else {
            extension
        };
        assert_eq!(path, format!("/i/{id}/{name}.{extension}"));
        let response = lab.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(
            headers["content-type"],
            output["contentType"].as_str().unwrap()
        );
        assert_eq!(
            headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(
            headers.get("content-disposition").is_none(),
            "shown, not downloaded"
        );
        assert_eq!(
            response.bytes().await.unwrap().to_vec(),
            downloaded,
            "{path}"
        );

        let etag = headers["etag"].to_str().unwrap();
        let again = lab
            .http
            .get(format!("{}{path}", lab.url))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
    }

    let other = minilab_core::UploadId::new(chrono::Utc::now());
    for path in [
        format!("/i/{id}/manifest.json"),
        format!("/i/{id}/claim"),
        format!("/i/{id}/large.png"),
        format!("/i/{id}/nothing.jpg"),
        format!("/i/{other}/large.jpg"),
        "/i/not-an-id/large.jpg".to_owned(),
        format!("/i/{id}/..%2Fmanifest.json"),
    ] {
        let response = lab.get(&path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not-found", "{path}");
    }
}

/// A width the output's recipe allows is made the first time it is asked for (once,
/// however many ask at once), stored and then served as stored; widths not allowed
/// are not-found, a width past the output's is the output, and each client's makes
/// are limited like its tickets.
#[tokio::test(flavor = "multi_thread")]
async fn allowed_widths_are_made_once_on_demand_and_others_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let recipes = dir.path().join("recipes.yaml");
    std::fs::write(
        &recipes,
        "recipes:\n  - name: sizes\n    outputs:\n      - name: large\n        \
         operations: [{op: resize, width: 1024, height: 1024, fit: fit}]\n        \
         format: jpeg\n        widths: [320, 640, 800, 2000]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let lab = Lab::start(
        &data,
        &[
            "--recipes",
            recipes.to_str().unwrap(),
            "--tickets-per-minute",
            "1",
            "--ticket-burst",
            "2",
        ],
    );
    let id = lab
        .upload_jpeg("sizes.jpg", &photo("photo-12mp.jpg"), "sizes")
        .await;
    assert_eq!(state(&lab.wait_final(&id).await), "succeeded");
    let jpeg = |bytes: &[u8]| {
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).unwrap()
    };

    // Asked for twice at once: made once (one make charged), the same bytes to both.
    let path = format!("/i/{id}/large.w320.jpg");
    let (first, second) = tokio::join!(lab.get(&path), lab.get(&path));
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    assert_eq!(first.headers()["content-type"], "image/jpeg");
    assert_eq!(
        first.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let (first, second) = (first.bytes().await.unwrap(), second.bytes().await.unwrap());
    assert_eq!(first, second);
    let small = jpeg(&first);
    assert_eq!((small.width(), small.height()), (320, 240));
    let stored = data.join(format!("s3/minilab-processed/{id}/large.w320.jpg"));
    assert_eq!(std::fs::read(&stored).unwrap(), first.to_vec(), "stored");

    let wider = lab.get(&format!("/i/{id}/large.w640.jpg")).await;
    assert_eq!(wider.status(), 200);
    assert_eq!(jpeg(&wider.bytes().await.unwrap()).width(), 640);
    // Not allowed, or not this output's format: nothing is made.
    for path in [
        format!("/i/{id}/large.w480.jpg"),
        format!("/i/{id}/large.w640.webp"),
        format!("/i/{id}/thumb.w320.jpg"),
    ] {
        let refused = lab.get(&path).await;
        assert_eq!(refused.status(), 404, "{path}");
    }
    // Past the output's width: the output itself, never enlarged, nothing made.
    let past = lab.get(&format!("/i/{id}/large.w2000.jpg")).await;
    assert_eq!(past.status(), 200);
    assert_eq!(
        jpeg(&past.bytes().await.unwrap()).width(),
        1024,
        "never enlarged"
    );
    // The allowance (a burst of 2; tickets have their own) is spent: the next make is
    // refused, while what is stored is still served.
    let spent = lab.get(&format!("/i/{id}/large.w800.jpg")).await;
    assert_eq!(spent.status(), 429);
    let body: Value = spent.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate-limited");
    assert_eq!(lab.get(&path).await.status(), 200, "stored, not made again");
}

/// The upload's progress comes as Server-Sent Events, one per state, ending after the
/// final one; the stream is woken by the worker's word (in `minilab up`, the same
/// process), not by its next read of the store.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_is_deleted_with_its_token_and_nothing_of_it_is_served_after() {
    let dir = tempfile::tempdir().unwrap();
    let recipes = dir.path().join("recipes.yaml");
    std::fs::write(
        &recipes,
        "recipes:\n  - name: sizes\n    outputs:\n      - name: large\n        \
         operations: [{op: resize, width: 640, height: 640, fit: fit}]\n        \
         format: jpeg\n        widths: [320]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let lab = Lab::start(&data, &["--recipes", recipes.to_str().unwrap()]);
    let bytes = photo("photo-small.jpg");
    let ticket = lab.ticket("gone.jpg", "image/jpeg", &bytes, "sizes").await;
    let id = ticket["id"].as_str().unwrap().to_owned();
    let token = ticket["deleteToken"].as_str().unwrap().to_owned();
    let delete = |token: Option<&str>| {
        let mut request = lab.http.delete(format!("{}/api/v1/uploads/{id}", lab.url));
        if let Some(token) = token {
            request = request.header("x-delete-token", token);
        }
        async move { request.send().await.unwrap() }
    };
    // Nothing to delete before the upload.
    assert_eq!(delete(Some(&token)).await.status(), 404);
    lab.upload(&ticket, bytes, "image/jpeg").await;
    let status = lab.wait_final(&id).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    let image = status["outputs"][0]["imageUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let smaller = image.replace(".jpg", ".w320.jpg");
    assert_eq!(lab.get(&smaller).await.status(), 200, "made on demand");
    let stored = |what: &str| {
        walk(&data)
            .into_iter()
            .filter(|path| path.contains(&id) && path.contains(what))
            .count()
    };
    assert_eq!(stored(".jpg"), 2, "the output and its smaller size");
    assert_eq!(stored("uploads"), 1, "the source");

    for wrong in [None, Some("not-the-token"), Some(id.as_str())] {
        let refused = delete(wrong).await;
        assert_eq!(refused.status(), 403);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "delete-token-invalid", "{body}");
    }
    assert_eq!(lab.get(&image).await.status(), 200, "still there");

    assert_eq!(delete(Some(&token)).await.status(), 204);
    let status = lab.status(&id, 0).await;
    assert_eq!(state(&status), "deleted", "{status}");
    assert_eq!(status["outputs"], Value::Array(Vec::new()));
    for path in [&image, &smaller] {
        let gone = lab.get(path).await;
        assert_eq!(gone.status(), 404, "{path}");
    }
    assert_eq!(stored(".jpg"), 0, "outputs and sizes made on demand");
    assert_eq!(stored("uploads"), 0, "the source");
    // Deleting again is no error.
    assert_eq!(delete(Some(&token)).await.status(), 204);
}

/// Every file under `dir`, as paths.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path.to_string_lossy().into_owned());
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tickets_focal_point_places_the_crops_its_recipe_asks_to_focus() {
    let dir = tempfile::tempdir().unwrap();
    let recipes = dir.path().join("recipes.yaml");
    std::fs::write(
        &recipes,
        "recipes:\n  - name: square\n    outputs:\n      - name: square\n        \
         operations: [{op: crop, width: 200, height: 200, gravity: focus}]\n        \
         format: png\n",
    )
    .unwrap();
    let lab = Lab::start(
        &dir.path().join("data"),
        &["--recipes", recipes.to_str().unwrap()],
    );
    let bytes = photo("photo-small.jpg");
    let (_, source) = minilab_core::pipeline::decode(&bytes, &Limits::default()).unwrap();
    assert_eq!((source.width(), source.height()), (800, 600));
    let ask = |focus: Value| {
        let body = serde_json::json!({
            "filename": "f.jpg", "contentType": "image/jpeg", "size": bytes.len(),
            "recipe": "square", "focus": focus,
        });
        let request = lab
            .http
            .post(format!("{}/api/v1/uploads", lab.url))
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    // Centred on the point as nearly as the edges allow: x 80 → 0, x 720 → 600.
    for (x, left) in [(0.1, 0), (0.9, 600)] {
        let ticket: Value = ask(serde_json::json!({"x": x, "y": 0.5}))
            .await
            .json()
            .await
            .unwrap();
        lab.upload(&ticket, bytes.clone(), "image/jpeg").await;
        let status = lab.wait_final(ticket["id"].as_str().unwrap()).await;
        assert_eq!(state(&status), "succeeded", "{status}");
        let path = status["outputs"][0]["imageUrl"].as_str().unwrap();
        let made = image::load_from_memory(&lab.get(path).await.bytes().await.unwrap())
            .unwrap()
            .to_rgb8();
        let expected = source.crop_imm(left, 200, 200, 200).to_rgb8();
        let difference = made
            .as_raw()
            .iter()
            .zip(expected.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / made.as_raw().len() as f64;
        assert!(
            difference < 1.0,
            "x {x}: {difference} from the window at {left}"
        );
    }
    let refused = ask(serde_json::json!({"x": 1.5, "y": 0.5})).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid-request", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_serves_the_format_the_browser_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let recipes = dir.path().join("recipes.yaml");
    let output = |name: &str, format: &str, size: u32| {
        format!(
            "      - name: {name}\n        operations: [{{op: resize, width: {size}, height: {size}, \
             fit: fit}}]\n        format: {format}\n        widths: [160]\n"
        )
    };
    let yaml = format!(
        "recipes:\n  - name: pair\n    outputs:\n{}{}{}",
        output("large", "jpeg", 640),
        output("large-webp", "webp", 640),
        output("thumb", "jpeg", 320)
    );
    std::fs::write(&recipes, yaml).unwrap();
    let lab = Lab::start(
        &dir.path().join("data"),
        &["--recipes", recipes.to_str().unwrap()],
    );
    let id = lab
        .upload_jpeg("pair.jpg", &photo("photo-small.jpg"), "pair")
        .await;
    assert_eq!(state(&lab.wait_final(&id).await), "succeeded");
    let get = |path: String, accept: Option<&'static str>| {
        let mut request = lab.http.get(format!("{}{path}", lab.url));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        async move { request.send().await.unwrap() }
    };
    let stored = |file: &str| {
        let response = get(format!("/i/{id}/{file}"), None);
        async move { response.await.bytes().await.unwrap() }
    };
    let webp = Some("image/webp,*/*");
    for (file, accept, expected_type, same_as) in [
        ("large.auto", webp, "image/webp", "large-webp.webp"),
        ("large.auto", Some("*/*"), "image/jpeg", "large.jpg"),
        ("large.auto", None, "image/jpeg", "large.jpg"),
        (
            "large.auto",
            Some("image/webp;q=0,*/*"),
            "image/jpeg",
            "large.jpg",
        ),
        // No WebP of thumb's size: its JPEG, whatever the browser takes.
        ("thumb.auto", webp, "image/jpeg", "thumb.jpg"),
        // A width on demand, in the format chosen.
        (
            "large.w160.auto",
            webp,
            "image/webp",
            "large-webp.w160.webp",
        ),
    ] {
        let response = get(format!("/i/{id}/{file}"), accept).await;
        assert_eq!(response.status(), 200, "{file} {accept:?}");
        assert_eq!(
            response.headers()["content-type"],
            expected_type,
            "{file} {accept:?}"
        );
        assert_eq!(response.headers()["vary"], "Accept", "{file}");
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let bytes = response.bytes().await.unwrap();
        assert_eq!(
            bytes,
            stored(same_as).await,
            "{file} {accept:?} is {same_as}"
        );
    }
    for file in ["nothing.auto", "manifest.auto", "large.w7.auto", ".auto"] {
        assert_eq!(
            get(format!("/i/{id}/{file}"), webp).await.status(),
            404,
            "{file}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_follows_an_upload_to_its_end_on_the_workers_word() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &[]);
    let bytes = photo("photo-12mp.jpg");
    let ticket = lab.ticket("photo.jpg", "image/jpeg", &bytes, "web").await;
    let id = ticket["id"].as_str().unwrap();
    let mut events = lab.events(id).await;
    let (name, first) = events.next().await.expect("a first event at once");
    assert_eq!(
        (name.as_str(), state(&first)),
        ("status", "awaiting_upload")
    );

    lab.upload(&ticket, bytes, "image/jpeg").await;
    let mut states = vec![state(&first).to_owned()];
    let mut last = first;
    while let Some((name, status)) = events.next().await {
        assert_eq!(name, "status", "{status}");
        states.push(state(&status).to_owned());
        last = status;
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some("succeeded"),
        "{states:?}"
    );
    let mut distinct = states.clone();
    distinct.dedup();
    assert_eq!(distinct, states, "one event per state");
    assert_eq!(last["outputs"].as_array().unwrap().len(), 4, "{last}");
    assert_eq!(
        last["source"]["bytes"].as_u64(),
        Some(photo("photo-12mp.jpg").len() as u64)
    );
    assert!(last["processingMs"].as_f64().unwrap() > 0.0, "{last}");

    let woken_by_word = minilab_tests::aws::metric(
        &lab.http,
        &lab.url,
        "minilab_api_status_wakes_total{by=\"word\"}",
    )
    .await;
    assert!(
        woken_by_word >= 1.0,
        "the stream was never woken by the worker"
    );
}

/// An upload that names an allowed webhook has its final status POSTed there, signed
/// with the secret, and retried after a failure; a URL outside the allow-list is
/// refused when the upload is issued.
#[tokio::test(flavor = "multi_thread")]
async fn the_final_status_goes_to_the_uploads_webhook_signed_and_retried() {
    use axum::http::StatusCode;
    const SECRET: &str = "a-webhook-secret-of-some-length";
    // The receiver: refuses the first delivery, takes the next.
    let (hooks, mut received) = minilab_tests::webhook_receiver(|n| {
        if n == 0 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::NO_CONTENT
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(
        dir.path(),
        &["--webhook-allow", &hooks, "--webhook-secret", SECRET],
    );
    let bytes = photo("photo-small.jpg");
    let ask = |webhook: String| {
        lab.http
            .post(format!("{}/api/v1/uploads", lab.url))
            .json(&serde_json::json!({
                "filename": "photo.jpg", "contentType": "image/jpeg", "size": bytes.len(),
                "recipe": "web", "webhook": webhook,
            }))
            .send()
    };
    let refused = ask("http://127.0.0.1:1/elsewhere".into()).await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "webhook-not-allowed", "{body}");

    let ticket: Value = ask(format!("{hooks}done"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = ticket["id"].as_str().unwrap();
    lab.upload(&ticket, bytes.clone(), "image/jpeg").await;
    assert_eq!(state(&lab.wait_final(id).await), "succeeded");

    let wait = std::time::Duration::from_secs(30);
    let (_, first) = tokio::time::timeout(wait, received.recv())
        .await
        .unwrap()
        .unwrap();
    let (headers, body) = tokio::time::timeout(wait, received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, body, "the retry sends the same body");
    assert_eq!(headers["minilab-delivery"], id);
    let signature = headers["minilab-signature"].to_str().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(minilab_core::webhook::verify(
        SECRET.as_bytes(),
        signature,
        body.as_bytes(),
        now,
        300
    ));
    assert!(!minilab_core::webhook::verify(
        b"another secret!!",
        signature,
        body.as_bytes(),
        now,
        300
    ));
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["event"], "upload.finished");
    assert_eq!(status["id"], id);
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["outputs"].as_array().unwrap().len(), 4);
    assert_eq!(status["statusUrl"], format!("/api/v1/uploads/{id}"));
    // Each output's stable address, where this process serves it.
    let large = &status["outputs"][0];
    let image_url = large["imageUrl"].as_str().unwrap();
    assert_eq!(image_url, format!("{}/i/{id}/large.jpg", lab.url));
    let served = lab.http.get(image_url).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.bytes().await.unwrap().len() as u64,
        large["bytes"].as_u64().unwrap()
    );
}

/// An iPhone's HEIC goes up as `image/heic` and comes back turned by its `irot`.
/// `./tests/run` builds with libheif; a build without it refuses the type.
#[tokio::test(flavor = "multi_thread")]
async fn a_heic_photo_is_accepted_and_processed() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &[]);
    let bytes = photo("heic-rotate6.heic");
    let recipes = lab.recipes().await;
    let accepted = recipes["acceptedContentTypes"].as_array().unwrap();
    if !minilab_core::accepted_content_types().contains(&"image/heic") {
        eprintln!("skipped: this build has no libheif");
        assert!(!accepted.contains(&Value::from("image/heic")));
        return;
    }
    assert!(accepted.contains(&Value::from("image/heic")), "{recipes}");
    let ticket = lab
        .ticket("IMG_0001.HEIC", "image/heic", &bytes, "web")
        .await;
    lab.upload(&ticket, bytes, "image/heic").await;
    let status = lab.wait_final(ticket["id"].as_str().unwrap()).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    let large = &status["outputs"][0];
    assert_eq!(
        (large["width"].as_u64(), large["height"].as_u64()),
        (Some(768), Some(1024))
    );
}

/// An animated GIF of four 480×320 windows moving across a real photo, 120 ms each.
fn animated_gif() -> Vec<u8> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let photo = image::load_from_memory(&photo("photo-small.jpg")).unwrap();
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, 10);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        for step in 0..4 {
            let window = photo.crop_imm(step * 40, step * 20, 480, 320).to_rgba8();
            let delay = image::Delay::from_numer_denom_ms(120, 1);
            encoder
                .encode_frame(image::Frame::from_parts(window, 0, 0, delay))
                .unwrap();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_animated_gif_is_served_as_animated_webp_beside_a_still_jpeg() {
    use image::AnimationDecoder;
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &[]);
    let bytes = animated_gif();
    let ticket = lab.ticket("moving.gif", "image/gif", &bytes, "web").await;
    lab.upload(&ticket, bytes, "image/gif").await;
    let status = lab.wait_final(ticket["id"].as_str().unwrap()).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    assert_eq!(status["source"]["frames"], 4, "{status}");
    for output in status["outputs"].as_array().unwrap() {
        let path = output["imageUrl"].as_str().unwrap();
        let served = lab.get(path).await.bytes().await.unwrap();
        if output["contentType"] == "image/jpeg" {
            assert!(output.get("frames").is_none(), "{output}");
            continue;
        }
        assert_eq!(output["frames"], 4, "{output}");
        let decoder =
            image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&served[..])).unwrap();
        let frames = decoder.into_frames().collect_frames().unwrap();
        let delays: Vec<_> = frames.iter().map(|f| f.delay().numer_denom_ms()).collect();
        assert_eq!(delays, [(120, 1); 4], "{path}");
        assert_eq!(
            frames[0].buffer().dimensions(),
            (
                output["width"].as_u64().unwrap() as u32,
                output["height"].as_u64().unwrap() as u32
            )
        );
        assert_ne!(
            frames[0].buffer(),
            frames[3].buffer(),
            "{path}: the frames differ"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_are_not_good_images_fail_with_distinct_codes() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &[]);
    let html = b"<!doctype html><html><head><title>x</title></head><body><script>alert(1)</script></body></html>".to_vec();
    let whole = photo("photo-small.jpg");
    let truncated = whole[..whole.len() / 2].to_vec();
    let mut codes = Vec::new();
    for (name, bytes) in [("page.jpg", html), ("truncated.jpg", truncated)] {
        let ticket = lab.ticket(name, "image/jpeg", &bytes, "web").await;
        lab.upload(&ticket, bytes, "image/jpeg").await;
        let status = lab.wait_final(ticket["id"].as_str().unwrap()).await;
        assert_eq!(state(&status), "failed", "{status}");
        assert!(status["outputs"].as_array().unwrap().is_empty());
        assert!(!status["error"]["message"].as_str().unwrap().is_empty());
        codes.push(status["error"]["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes, ["unsupported-format", "corrupt-image"]);
}

/// The fields of a ticket, to tamper with.
fn fields(ticket: &Value) -> serde_json::Map<String, Value> {
    ticket["upload"]["fields"].as_object().unwrap().clone()
}

async fn refused(
    lab: &Lab,
    ticket: &Value,
    fields: &serde_json::Map<String, Value>,
    bytes: Vec<u8>,
) -> String {
    let url = ticket["upload"]["url"].as_str().unwrap();
    let (status, body) = lab.post_form(url, fields, bytes, "image/jpeg").await;
    assert!(
        (400..500).contains(&status),
        "the store accepted it: {status} {body}"
    );
    // Nothing was stored: the upload is still awaited.
    assert_eq!(
        state(&lab.status(ticket["id"].as_str().unwrap(), 0).await),
        "awaiting_upload"
    );
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_refuses_uploads_outside_their_policy() {
    let dir = tempfile::tempdir().unwrap();
    // A 1 MB limit keeps the oversized upload small; the 12 MP photo has 1.9 MB.
    let lab = Lab::start(dir.path(), &["--max-upload-bytes", "1000000"]);
    let small = photo("photo-small.jpg");
    let big = photo("photo-12mp.jpg");

    // The store answers EntityTooLarge as soon as the limit is passed; the client
    // may still be sending and see the connection close instead. Either way, nothing
    // may be stored.
    let ticket = lab.ticket("a.jpg", "image/jpeg", &small, "web").await;
    let url = ticket["upload"]["url"].as_str().unwrap();
    match lab
        .try_post_form(url, &fields(&ticket), big, "image/jpeg")
        .await
    {
        Ok((status, body)) => assert!(
            status == 400 && body.contains("EntityTooLarge"),
            "{status} {body}"
        ),
        Err(err) => assert!(err.is_request(), "{err}"),
    }
    assert_eq!(
        state(&lab.status(ticket["id"].as_str().unwrap(), 0).await),
        "awaiting_upload"
    );

    // The policy pins the declared size exactly: one byte more or less, within the
    // store's limit, is refused (the budget charged the declared size).
    let ticket = lab.ticket("a.jpg", "image/jpeg", &small, "web").await;
    let longer = [small.as_slice(), b"\0"].concat();
    let body = refused(&lab, &ticket, &fields(&ticket), longer).await;
    assert!(body.contains("EntityTooLarge"), "{body}");
    let body = refused(
        &lab,
        &ticket,
        &fields(&ticket),
        small[..small.len() - 1].to_vec(),
    )
    .await;
    assert!(body.contains("EntityTooSmall"), "{body}");

    // A policy edited to allow more no longer matches its signature.
    let ticket = lab.ticket("a.jpg", "image/jpeg", &small, "web").await;
    let mut tampered = fields(&ticket);
    let engine = base64::engine::general_purpose::STANDARD;
    let policy =
        String::from_utf8(engine.decode(tampered["policy"].as_str().unwrap()).unwrap()).unwrap();
    let size = small.len();
    let widened = policy.replace(&format!("{size},{size}]"), &format!("{size},9000000000]"));
    assert_ne!(policy, widened);
    tampered.insert("policy".into(), engine.encode(widened).into());
    let body = refused(&lab, &ticket, &tampered, small.clone()).await;
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");

    // Another key, or another Content-Type, than the signed ones.
    for (field, value) in [
        ("key", "uploads/somewhere-else"),
        ("Content-Type", "text/html"),
    ] {
        let ticket = lab.ticket("a.jpg", "image/jpeg", &small, "web").await;
        let mut tampered = fields(&ticket);
        tampered.insert(field.into(), value.into());
        refused(&lab, &ticket, &tampered, small.clone()).await;
    }

    // An expired policy, signed with the store's real credentials.
    let ticket = lab.ticket("a.jpg", "image/jpeg", &small, "web").await;
    let credentials: Value = serde_json::from_str(
        &std::fs::read_to_string(lab.data_dir.join("credentials.json")).unwrap(),
    )
    .unwrap();
    let credentials = aws_credential_types::Credentials::new(
        credentials["accessKeyId"].as_str().unwrap(),
        credentials["secretAccessKey"].as_str().unwrap(),
        None,
        None,
        "test",
    );
    let issued = fields(&ticket);
    let now = chrono::Utc::now();
    let expired = minilab_api::post_policy::PostPolicy {
        bucket: "minilab-uploads",
        key: issued["key"].as_str().unwrap(),
        content_type: "image/jpeg",
        size: small.len() as u64,
        metadata: &[("recipe", "web")],
        expires_at: now - chrono::Duration::seconds(1),
    }
    .sign(
        &credentials,
        "us-east-1",
        now - chrono::Duration::minutes(1),
    );
    let expired: serde_json::Map<String, Value> = expired
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let body = refused(&lab, &ticket, &expired, small.clone()).await;
    assert!(body.to_lowercase().contains("expired"), "{body}");

    // The same policy, unexpired, is accepted: the refusals above were for cause.
    let fresh = minilab_api::post_policy::PostPolicy {
        bucket: "minilab-uploads",
        key: issued["key"].as_str().unwrap(),
        content_type: "image/jpeg",
        size: small.len() as u64,
        metadata: &[("recipe", "web")],
        expires_at: now + chrono::Duration::minutes(5),
    }
    .sign(&credentials, "us-east-1", now);
    let fresh: serde_json::Map<String, Value> = fresh
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let url = ticket["upload"]["url"].as_str().unwrap();
    let (status, body) = lab
        .post_form(url, &fresh, small.clone(), "image/jpeg")
        .await;
    assert!((200..300).contains(&status), "{status} {body}");

    // A ticket uploads once: the same form again is refused, the upload stays.
    let id = ticket["id"].as_str().unwrap();
    let first = lab.wait_final(id).await;
    let (status, body) = lab.post_form(url, &fresh, small, "image/jpeg").await;
    assert_eq!(status, 412, "{body}");
    assert!(body.contains("PreconditionFailed"), "{body}");
    assert_eq!(lab.status(id, 0).await["state"], first["state"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_bad_requests_with_stable_codes() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &[]);
    let cases = [
        (
            lab.create_upload("a.jpg", "image/jpeg", 10, "no-such-recipe")
                .await,
            400,
            "unknown-recipe",
        ),
        (
            lab.create_upload("a.txt", "text/plain", 10, "web").await,
            415,
            "unsupported-type",
        ),
        (
            lab.create_upload("a.jpg", "image/jpeg", 26 * 1024 * 1024, "web")
                .await,
            413,
            "too-large",
        ),
        (
            lab.create_upload("a.jpg", "image/jpeg", 0, "web").await,
            400,
            "empty-file",
        ),
    ];
    for ((status, body), expected_status, code) in cases {
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap()),
            (expected_status, code),
            "{body}"
        );
    }
    let response = lab
        .http
        .post(format!("{}/api/v1/uploads", lab.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid-request");

    let huge = format!("{{\"filename\":\"{}\"}}", "a".repeat(100_000));
    let response = lab
        .http
        .post(format!("{}/api/v1/uploads", lab.url))
        .header("content-type", "application/json")
        // The API refuses before reading it all and drops the connection: not one to reuse.
        .header("connection", "close")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    for id in ["nope", "../../etc/passwd", "zzzzzzzzzzzzzzzzzzzzzzzzzz"] {
        let response = lab.get(&format!("/api/v1/uploads/{id}")).await;
        assert_eq!(response.status(), 404, "{id}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not-found");
    }
    let recipes = lab.recipes().await;
    let names: Vec<_> = recipes["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"web") && names.contains(&"grayscale"),
        "{names:?}"
    );
    for path in ["/livez", "/readyz"] {
        assert_eq!(
            lab.http
                .get(format!("{}{path}", lab.url))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_stored_before_a_stop_is_processed_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = photo("photo-small.jpg");
    // No workers: the upload is stored and its event queued, but nothing runs it.
    let lab = Lab::start(dir.path(), &["--workers", "0"]);
    let ticket = lab
        .ticket("kept.jpg", "image/jpeg", &bytes, "grayscale")
        .await;
    let id = ticket["id"].as_str().unwrap().to_owned();
    lab.upload(&ticket, bytes, "image/jpeg").await;
    assert_eq!(state(&lab.status(&id, 0).await), "processing");
    lab.kill();

    let lab = Lab::start(dir.path(), &[]);
    let status = lab.wait_final(&id).await;
    assert_eq!(state(&status), "succeeded", "{status}");
    assert_eq!(status["recipe"], "grayscale");
    let url = status["outputs"][0]["url"].as_str().unwrap();
    let body = lab
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(!image::load_from_memory(&body).unwrap().color().has_color());
}

/// One client holding all the requests it may have waiting leaves the probes and
/// other clients served: its next event stream is refused (429 `rate-limited`), its
/// next long poll answers at once, while another client's long poll still waits.
#[tokio::test(flavor = "multi_thread")]
async fn one_client_cannot_hold_every_waiting_request() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &[]);
    let small = photo("photo-small.jpg");
    // Never uploaded: it stays awaiting_upload, so every wait lasts.
    let ticket = lab.ticket("a.jpg", "image/jpeg", &small, "web").await;
    let id = ticket["id"].as_str().unwrap();
    let mut streams = Vec::new();
    for _ in 0..minilab_api::limits::MAX_WAITS_PER_CLIENT {
        streams.push(lab.events(id).await);
    }
    let refused = lab
        .http
        .get(format!("{}/api/v1/uploads/{id}/events", lab.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate-limited", "{body}");

    let started = std::time::Instant::now();
    assert_eq!(state(&lab.status(id, 20).await), "awaiting_upload");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    for probe in ["/livez", "/readyz"] {
        let answer = lab
            .http
            .get(format!("{}{probe}", lab.url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{probe}");
    }

    // Another client (another loopback address) waits as asked.
    let other = lab.from_another_address();
    let started = std::time::Instant::now();
    assert_eq!(state(&other.status(id, 2).await), "awaiting_upload");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    drop(streams);
}

/// A long poll pays a read for every second it waits: a client with 3 reads at once
/// and one more every 2 s runs dry within its `?wait=10`, which then answers early,
/// and its next read is refused (429 `rate-limited`). Unpaid, the wait would have
/// lasted 10 s and refilled the bucket.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_pays_a_read_per_second_waited() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(
        dir.path(),
        &["--reads-per-minute", "30", "--read-burst", "3"],
    );
    let small = photo("photo-small.jpg");
    // Never uploaded: it stays awaiting_upload, so the wait lasts.
    let ticket = lab.ticket("a.jpg", "image/jpeg", &small, "web").await;
    let id = ticket["id"].as_str().unwrap();
    let started = std::time::Instant::now();
    assert_eq!(state(&lab.status(id, 10).await), "awaiting_upload");
    let waited = started.elapsed();
    let next = lab
        .http
        .get(format!("{}/api/v1/uploads/{id}", lab.url))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 429, "after a wait of {waited:?}");
    let body: Value = next.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate-limited", "{body}");
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
}

/// What `minilab up --workers 0` (which warns at start) writes to a log file, with
/// `extra` flags.
fn up_logs(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("minilab.log");
    let file = std::fs::File::create(&path).unwrap();
    let process = Process::start_logging_to(
        std::process::Command::new(minilab_bin())
            .args(["up", "--workers", "0", "--listen", "127.0.0.1:0"])
            .args(["--s3-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra),
        "minilab is up: open ",
        file.into(),
    );
    process.kill();
    std::fs::read_to_string(path).unwrap()
}

/// Logs written to a file carry no terminal colour codes; `--log-format json`
/// writes one JSON object per line, with the level and message as fields.
#[test]
fn logs_to_a_file_are_plain_text_or_json_lines() {
    let text = up_logs(&[]);
    assert!(text.contains("--workers 0: uploads are stored"), "{text}");
    assert!(!text.contains('\x1b'), "colour codes in a file: {text:?}");

    let json = up_logs(&["--log-format", "json"]);
    let lines: Vec<Value> = json
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let warning = lines
        .iter()
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("--workers 0"))
        })
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(warning["level"], "WARN");
}

/// The data directory (photos, outputs, the store's credentials) is made readable
/// by its owner only.
#[tokio::test(flavor = "multi_thread")]
async fn the_data_directory_is_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("minilab");
    let _lab = Lab::start(&data, &[]);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

/// On loopback, the API and the store answer only requests for localhost or a
/// loopback address: a page elsewhere whose name points at 127.0.0.1 (DNS
/// rebinding) gets 421 `host-not-allowed` from both.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_for_another_host_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &[]);
    let port = |url: &str| {
        url.rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_owned()
    };
    for base in [lab.url.clone(), lab.s3.clone()] {
        let get = |host: String| lab.http.get(format!("{base}/")).header("host", host).send();
        let refused = get(format!("rebound.example:{}", port(&base)))
            .await
            .unwrap();
        assert_eq!(refused.status(), 421, "{base}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "host-not-allowed", "{base}: {body}");
        let local = get(format!("localhost:{}", port(&base))).await.unwrap();
        assert_ne!(local.status(), 421, "{base}");
    }
}
