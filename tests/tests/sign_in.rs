//! Sign-in: the real `minilab api` against LocalStack with OIDC bearer tokens checked
//! against an issuer's JWKS served over HTTP on loopback.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use minilab_api::auth::test_issuer::TestIssuer;
use minilab_tests::aws::{Env, EnvOptions, Stack, metric};
use minilab_tests::photo;
use serde_json::{Value, json};

const ISSUER: &str = "https://id.minilab.test";
const AUDIENCE: &str = "minilab-api";

/// Serves `jwks` at `/jwks` on a free loopback port; returns its URL.
async fn serve_jwks(jwks: Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// `POST /api/v1/uploads` for a `size`-byte JPEG with `token` as the bearer, if any.
async fn ticket(api: &minilab_tests::Api, token: Option<&str>, size: usize) -> (u16, Value) {
    let mut request = api
        .http
        .post(format!("{}/api/v1/uploads", api.url))
        .json(&json!({
            "filename": "a.jpg", "contentType": "image/jpeg", "size": size, "recipe": "web"
        }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// `GET /api/v1/uploads/{id}` with `token` as the bearer.
async fn status(api: &minilab_tests::Api, id: &str, token: &str) -> (u16, Value) {
    let response = api
        .http
        .get(format!("{}/api/v1/uploads/{id}", api.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// An issuer, its keys served on loopback, and a LocalStack environment for the API.
async fn issuer_and_stack() -> (TestIssuer, String, Stack, Env) {
    let issuer = TestIssuer::new(ISSUER, "key-1");
    let jwks_url = serve_jwks(issuer.jwks()).await;
    let stack = Stack::connect().await;
    let env = stack.env(EnvOptions::default()).await;
    (issuer, jwks_url, stack, env)
}

/// The flags that turn sign-in on with the issuer whose keys are at `jwks_url`.
fn sign_in_args(jwks_url: &str) -> [&str; 6] {
    [
        "--oidc-issuer",
        ISSUER,
        "--oidc-audience",
        AUDIENCE,
        "--oidc-jwks-url",
        jwks_url,
    ]
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn with_sign_in_uploads_need_a_good_token_and_belong_to_their_subject() {
    let (issuer, jwks_url, stack, env) = issuer_and_stack().await;
    let mut args = sign_in_args(&jwks_url).to_vec();
    args.extend([
        "--tickets-per-minute",
        "60",
        "--ticket-burst",
        "2",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let (mut process, api) = stack.api(&env, &args);
    let metrics = process.wait_line("minilab api metrics on ");
    let photo = photo("photo-small.jpg");

    // Each bad token is refused with a code of its own; the recipes stay open.
    let stranger = TestIssuer::new(ISSUER, "key-1");
    let now = chrono::Utc::now().timestamp();
    let not_yet = issuer.sign(&json!({
        "iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "exp": now + 900, "nbf": now + 600,
    }));
    let refusals = [
        (Some(not_yet), "token-not-yet-valid"),
        (None, "token-missing"),
        (Some("not.a.jwt".to_owned()), "token-malformed"),
        (Some(issuer.token("alice", AUDIENCE, -300)), "token-expired"),
        (
            Some(issuer.token("alice", "another-api", 300)),
            "token-wrong-audience",
        ),
        (
            Some(stranger.token("alice", AUDIENCE, 300)),
            "token-bad-signature",
        ),
    ];
    for (token, expected) in &refusals {
        let (code_, body) = ticket(&api, token.as_deref(), photo.len()).await;
        assert_eq!((code_, code(&body)), (401, *expected), "{body}");
    }
    let recipes = api
        .http
        .get(format!("{}/api/v1/recipes", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(recipes.status(), 200);

    // Alice's upload is hers: she sees it, Bob gets not-found, as for no upload at all.
    let alice = issuer.token("alice", AUDIENCE, 300);
    let bob = issuer.token("bob", AUDIENCE, 300);
    let (created, ticket_body) = ticket(&api, Some(&alice), photo.len()).await;
    assert_eq!(created, 201, "{ticket_body}");
    api.upload(&ticket_body, photo.clone(), "image/jpeg").await;
    let id = ticket_body["id"].as_str().unwrap();
    let (seen, body) = status(&api, id, &alice).await;
    assert_eq!((seen, body["id"].as_str()), (200, Some(id)), "{body}");
    assert_ne!(body["state"], "awaiting_upload", "the file arrived: {body}");
    let (hidden, body) = status(&api, id, &bob).await;
    assert_eq!((hidden, code(&body)), (404, "not-found"), "{body}");

    // Limits are per subject, not per address: Alice used her burst of 2, Bob has his.
    assert_eq!(ticket(&api, Some(&alice), 1000).await.0, 201);
    let (limited, body) = ticket(&api, Some(&alice), 1000).await;
    assert_eq!((limited, code(&body)), (429, "rate-limited"), "{body}");
    assert_eq!(ticket(&api, Some(&bob), 1000).await.0, 201);

    for (_, reason) in &refusals {
        let sample = format!("minilab_api_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&api.http, &metrics, &sample).await, 1.0, "{sample}");
    }

    // An address that keeps sending bad tokens is refused before they are checked,
    // good ones too; another address is served.
    let burst = minilab_api::auth::FAILURES.burst as usize;
    let mut answers = Vec::new();
    for _ in 0..burst {
        answers.push(ticket(&api, Some("not.a.jwt"), 1000).await.0);
    }
    assert_eq!(answers.last(), Some(&429), "{answers:?}");
    let (limited, body) = ticket(&api, Some(&alice), 1000).await;
    assert_eq!((limited, code(&body)), (429, "rate-limited"), "{body}");
    let elsewhere = api.from_another_address();
    assert_eq!(ticket(&elsewhere, Some(&bob), 1000).await.0, 201);
}

/// Signed-in uploads are private: an API with sign-in does not start serving images
/// at unsigned stable addresses, which anyone holding one could read for ever.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn unsigned_image_addresses_are_refused_with_sign_in() {
    let (_issuer, jwks_url, stack, env) = issuer_and_stack().await;
    let mut command = stack.command("api", &env);
    command
        .args(["--listen", "127.0.0.1:0", "--serve-images"])
        .args(sign_in_args(&jwks_url));
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::process::Command::from(command).output(),
    )
    .await
    .expect("minilab api did not stop")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--serve-images with sign-in needs --image-link-secret"),
        "{stderr}"
    );
}

/// With sign-in and `--image-link-secret`, the owner's statuses name signed image
/// addresses: those open the upload's images (any of its files, `private` to the
/// browser, for a while), and nothing else does. The webhook the owner asked for
/// names signed ones too (the worker holds the same secret).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs LocalStack: ./tests/run starts it and runs this"]
async fn private_images_open_only_at_the_signed_addresses_their_owner_is_given() {
    const LINK_SECRET: &str = "twenty bytes of secret";
    let (issuer, jwks_url, stack, env) = issuer_and_stack().await;
    let (hooks, mut delivered) =
        minilab_tests::webhook_receiver(|_| axum::http::StatusCode::NO_CONTENT).await;
    let mut args = sign_in_args(&jwks_url).to_vec();
    args.extend([
        "--serve-images",
        "--image-link-secret",
        LINK_SECRET,
        "--webhook-allow",
        &hooks,
    ]);
    let (_api, api) = stack.api(&env, &args);
    let (_worker, _) = stack.worker(
        &env,
        &[
            "--webhook-allow",
            &hooks,
            "--webhook-secret",
            "a-webhook-secret-of-some-length",
            "--image-base-url",
            &api.url,
            "--image-link-secret",
            LINK_SECRET,
        ],
    );
    let alice = issuer.token("alice", AUDIENCE, 300);
    let photo = photo("photo-small.jpg");
    let ticket_body: Value = api
        .http
        .post(format!("{}/api/v1/uploads", api.url))
        .bearer_auth(&alice)
        .json(&json!({
            "filename": "a.jpg", "contentType": "image/jpeg", "size": photo.len(),
            "recipe": "web", "webhook": format!("{hooks}done"),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    api.upload(&ticket_body, photo, "image/jpeg").await;
    let id = ticket_body["id"].as_str().unwrap();
    let status = api.signed_in(&alice).wait_final(id).await;
    let address = status["outputs"][0]["imageUrl"].as_str().unwrap();
    let (path, query) = address.split_once('?').expect("a signed address");
    assert_eq!(path, format!("/i/{id}/large.jpg"));

    let get = |path: String| {
        let api = &api;
        async move { api.get(&path).await }
    };
    // The webhook's address opens the image, as the status's does.
    let (_, body) = tokio::time::timeout(std::time::Duration::from_secs(60), delivered.recv())
        .await
        .expect("the webhook within 60 s")
        .unwrap();
    let hooked: Value = serde_json::from_str(&body).unwrap();
    let hooked_address = hooked["outputs"][0]["imageUrl"].as_str().unwrap();
    let hooked_path = hooked_address.strip_prefix(api.url.as_str()).unwrap();
    let opened = get(hooked_path.to_owned()).await;
    assert_eq!(opened.status(), 200, "{hooked_address}");

    let opened = get(address.to_owned()).await;
    assert_eq!(opened.status(), 200);
    let caching = opened.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    let max_age: u64 = caching
        .strip_prefix("private, max-age=")
        .unwrap_or_else(|| panic!("{caching}"))
        .parse()
        .unwrap();
    assert!((3600..=7200).contains(&max_age), "{caching}");
    assert!(!opened.bytes().await.unwrap().is_empty());
    // One signature opens every file of the upload.
    let auto = get(format!("/i/{id}/large.auto?{query}")).await;
    assert_eq!(auto.status(), 200);

    let expires = query
        .split('&')
        .find_map(|p| p.strip_prefix("expires="))
        .unwrap();
    let later = (expires.parse::<u64>().unwrap() + 3600).to_string();
    for refused in [
        path.to_owned(),
        format!("{path}?{}", query.replace(expires, &later)),
        format!("{path}?expires={expires}"),
    ] {
        let response = get(refused.clone()).await;
        assert_eq!(response.status(), 403, "{refused}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(code(&body), "image-link-invalid", "{refused}");
    }
}
