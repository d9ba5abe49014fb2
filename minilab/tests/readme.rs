//! The README as written: its `process` command, its recipe example, its webhook
//! snippet, its API table and the flags it names, each run against the real binary,
//! so that the README cannot drift from what minilab does. (Its first command,
//! `cargo run --release -- up` from the root, is run by `./tests/run`.)
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use minilab_tests::{Lab, minilab_bin, photo, photo_path, stdout_of};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../../README.md");

/// The README's fenced code blocks: (language, text).
fn blocks() -> Vec<(&'static str, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(&str, String)> = None;
    for line in README.lines() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(language)) => open = Some((language.trim(), String::new())),
            (Some(block), Some(_)) => blocks.push(block),
            (Some((language, mut text)), None) => {
                text.push_str(line);
                text.push('\n');
                open = Some((language, text));
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The one block in `language` that holds `marker`.
fn block(language: &str, marker: &str) -> String {
    let found: Vec<String> = blocks()
        .into_iter()
        .filter(|(l, text)| *l == language && text.contains(marker))
        .map(|(_, text)| text)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "README blocks in {language} with {marker:?}"
    );
    found.into_iter().next().unwrap()
}

/// The words of a README command line, its comment left out (these lines quote
/// nothing, so whitespace splits them as a shell would).
fn words(line: &str) -> Vec<&str> {
    line.split(" #")
        .next()
        .unwrap()
        .split_whitespace()
        .collect()
}

/// The README's paragraph (or table row) that starts with `start`.
fn paragraph(start: &str) -> &'static str {
    let at = README
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in the README"));
    let rest = &README[at..];
    let end = ["\n\n", "\n|"]
        .iter()
        .filter_map(|end| rest.find(end))
        .min()
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Every `--flag` named in `text`.
fn flags(text: &str) -> Vec<String> {
    let mut flags: Vec<String> = text
        .match_indices("--")
        .map(|(at, _)| {
            text[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|name| name.starts_with(|c: char| c.is_ascii_lowercase()))
        .map(|name| format!("--{name}"))
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

/// `minilab ARGS` in `dir`: its stdout, or a panic with its stderr.
fn minilab(dir: &Path, args: &[&str]) -> String {
    stdout_of(Command::new(minilab_bin()).current_dir(dir).args(args))
}

#[test]
fn the_first_commands_run_everything_and_every_test() {
    let (language, first) = blocks().into_iter().next().unwrap();
    assert_eq!(language, "sh");
    let commands: Vec<Vec<&str>> = first.lines().map(words).collect();
    assert_eq!(
        commands,
        [
            vec!["cargo", "run", "--release", "--", "up"],
            vec!["./tests/run"]
        ]
    );
    let ci = include_str!("../../.ci/run");
    assert!(ci.lines().any(|line| line == "exec ./tests/run"), "{ci}");
}

#[test]
fn the_process_example_writes_the_recipes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(photo_path("photo-12mp.jpg"), dir.path().join("photo.jpg")).unwrap();
    let line = block("sh", "-- process ");
    let command = words(line.trim());
    let after = command.iter().position(|w| *w == "--").unwrap();
    assert_eq!(&command[..after], ["cargo", "run", "--release"]);
    let stdout = minilab(dir.path(), &command[after + 1..]);
    let written: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        written.len(),
        4,
        "the web recipe's four outputs: {written:?}"
    );
    for name in &written {
        assert!(stdout.contains(name.as_str()), "{name} in {stdout}");
    }
}

#[test]
fn the_recipe_example_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = block("yaml", "name: avatar");
    std::fs::write(dir.path().join("recipes.yaml"), &yaml).unwrap();
    let name = |line: &str| {
        let named = line.trim().strip_prefix("- name: ")?;
        Some(named.split(" #").next().unwrap().trim().to_owned())
    };
    let recipe = yaml.lines().find_map(name).unwrap();
    let photo = photo_path("photo-exif-rotate6.jpg");
    let stdout = minilab(
        dir.path(),
        &[
            "process",
            photo.to_str().unwrap(),
            "--recipe",
            &recipe,
            "--recipes",
            "recipes.yaml",
            "-o",
            "out",
        ],
    );
    // Every output the example names is written.
    let outputs: Vec<String> = yaml.lines().skip(2).filter_map(name).collect();
    assert_eq!(outputs.len(), 4, "{yaml}");
    for output in &outputs {
        assert!(
            stdout.contains(&format!("{output}.")),
            "{output} in {stdout}"
        );
    }
}

#[test]
fn every_flag_the_readme_names_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let help = |command: &str| minilab(dir.path(), &[command, "--help"]);
    let mut named = vec![("up", paragraph("`minilab up` flags"))];
    // The cluster subcommands: in builds with them (./tests/run builds every feature).
    if minilab(dir.path(), &["--help"]).contains("operator") {
        let both = paragraph("| both |");
        named.extend([
            ("api", both),
            ("worker", both),
            ("api", paragraph("| `minilab api` |")),
            ("worker", paragraph("| `minilab worker` |")),
            ("operator", paragraph("`minilab operator` flags")),
        ]);
    }
    for (command, text) in named {
        let help = help(command);
        let flags = flags(text);
        assert!(flags.len() >= 3, "{command}: {text}");
        for flag in flags {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "the README names `minilab {command} {flag}`, which it does not have"
            );
        }
    }
}

/// The routes of the README's API table, each as (method, path).
fn api_table() -> Vec<(String, String)> {
    let section = &README[README.find("## The API").unwrap()..];
    let table = &section[section.find("\n|").unwrap()..];
    let table = &table[..table.find("\n\n").unwrap()];
    let mut routes = Vec::new();
    for row in table.lines().filter(|line| line.starts_with("| `")) {
        let first = row.split(" | ").next().unwrap();
        for route in first.split('`').skip(1).step_by(2) {
            let (method, path) = route.split_once(' ').unwrap();
            routes.push((method.to_owned(), path.to_owned()));
        }
    }
    routes
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_in_the_api_table_answers_on_up() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), &[]);
    let small = photo("photo-small.jpg");
    let mut routes = api_table();
    assert!(routes.len() >= 8, "{routes:?}");
    // A DELETE last: it takes the upload the others read.
    routes.sort_by_key(|(method, _)| method == "DELETE");
    let mut id = String::new();
    let mut ticket = Value::Null;
    // The workers' signed word is refused unsigned: the peers tests cover it.
    for (method, path) in routes
        .iter()
        .filter(|(_, path)| !path.starts_with("/internal/"))
    {
        // An output's stable address: the ticket's photo, uploaded and processed.
        if path.contains("{file}") {
            lab.upload(&ticket, small.clone(), "image/jpeg").await;
            lab.wait_final(&id).await;
        }
        let path = path.replace("{id}", &id).replace("{file}", "large.jpg");
        let url = format!("{}{path}", lab.url);
        let answer = match method.as_str() {
            "POST" => lab
                .http
                .post(url)
                .json(&serde_json::json!({
                    "filename": "a.jpg", "contentType": "image/jpeg",
                    "size": small.len(), "recipe": "web",
                }))
                .send()
                .await
                .unwrap(),
            "GET" => lab.http.get(url).send().await.unwrap(),
            "DELETE" => lab
                .http
                .delete(url)
                .header("x-delete-token", ticket["deleteToken"].as_str().unwrap())
                .send()
                .await
                .unwrap(),
            other => panic!("{other} {path}"),
        };
        assert!(
            answer.status().is_success(),
            "{method} {path}: {}",
            answer.status()
        );
        if method == "POST" {
            ticket = answer.json::<Value>().await.unwrap();
            id = ticket["id"].as_str().unwrap().to_owned();
        }
    }
    // ... and every route of the API's contract is in the table.
    let contract = lab.get_json("/api/v1/openapi.json").await;
    for (path, operations) in contract["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            let route = (method.to_uppercase(), path.clone());
            assert!(routes.contains(&route), "{route:?} is not in the README");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_snippet_verifies_a_real_delivery() {
    const SECRET: &str = "a-webhook-secret-of-some-length";
    let (hooks, mut received) =
        minilab_tests::webhook_receiver(|_| axum::http::StatusCode::NO_CONTENT).await;
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(
        dir.path(),
        &["--webhook-allow", &hooks, "--webhook-secret", SECRET],
    );
    let bytes = photo("photo-small.jpg");
    let ticket: Value = lab
        .http
        .post(format!("{}/api/v1/uploads", lab.url))
        .json(&serde_json::json!({
            "filename": "photo.jpg", "contentType": "image/jpeg", "size": bytes.len(),
            "recipe": "thumbnail", "webhook": format!("{hooks}done"),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    lab.upload(&ticket, bytes, "image/jpeg").await;
    let (headers, body) = tokio::time::timeout(std::time::Duration::from_secs(60), received.recv())
        .await
        .unwrap()
        .unwrap();
    let signature = headers["minilab-signature"].to_str().unwrap();

    // The snippet as written, asked about the delivery and about a forged body.
    let snippet = block("python", "def verify");
    let script = format!(
        "{snippet}\nimport sys\nsecret, header, body = (a.encode() for a in sys.argv[1:])\n\
         print(verify(secret, header.decode(), body), verify(secret, header.decode(), body + b' '))\n"
    );
    let printed =
        stdout_of(Command::new("python3").args(["-c", &script, SECRET, signature, &body]));
    assert_eq!(printed, "True False\n");
}
