//! `minilab process`: the pipeline on a local file, with recipes from YAML.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use minilab_tests::{minilab_bin, photo_path, stdout_of};
use std::path::PathBuf;
use std::process::Command;

#[test]
fn a_yaml_recipe_drives_minilab_process() {
    let dir = tempfile::tempdir().unwrap();
    let recipes = dir.path().join("recipes.yaml");
    std::fs::write(
        &recipes,
        "recipes:\n  - name: avatar\n    description: a grey square\n    outputs:\n      - name: square\n        operations: [{op: resize, width: 96, height: 96, fit: cover}, {op: grayscale}]\n        format: png\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let stdout = stdout_of(
        Command::new(minilab_bin())
            .arg("process")
            .arg(photo_path("photo-exif-rotate6.jpg"))
            .args(["--recipe", "avatar", "--recipes"])
            .arg(&recipes)
            .arg("-o")
            .arg(&out),
    );
    assert!(stdout.contains("square.png\t96x96"), "{stdout}");
    let image = image::open(out.join("square.png")).unwrap();
    assert_eq!((image.width(), image.height()), (96, 96));
    assert!(!image.color().has_color());
}

#[test]
fn a_mistake_in_the_recipes_file_is_reported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let recipes = dir.path().join("recipes.yaml");
    std::fs::write(
        &recipes,
        "recipes:\n  - name: avatar\n    description: d\n    outputs:\n      - {name: square, format: jpeg, quality: 0}\n",
    )
    .unwrap();
    let done = Command::new(minilab_bin())
        .arg("process")
        .arg(photo_path("photo-small.jpg"))
        .args(["--recipe", "avatar", "--recipes"])
        .arg(&recipes)
        .arg("-o")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!done.status.success());
    let stderr = String::from_utf8(done.stderr).unwrap();
    assert!(
        stderr.contains("recipes.yaml")
            && stderr.contains("recipe \"avatar\", output \"square\": quality: must be 1-100"),
        "{stderr}"
    );
}

#[test]
fn limit_flags_and_their_environment_twins_refuse_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let done = Command::new(minilab_bin())
            .arg("process")
            .arg(photo_path("photo-small.jpg"))
            .args(["--recipe", "large", "-o"])
            .arg(dir.path().join("out"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            done.status.success(),
            String::from_utf8_lossy(&done.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(&["--max-width", "100"], &[]);
    assert!(!ok && stderr.contains("dimensions-too-large"), "{stderr}");
    let (ok, stderr) = run(&[], &[("MINILAB_MAX_PIXELS", "1000")]);
    assert!(!ok && stderr.contains("too-many-pixels"), "{stderr}");
    let (ok, stderr) = run(&["--max-upload-bytes", "1000"], &[]);
    assert!(!ok && stderr.contains("file-too-large"), "{stderr}");
    let (ok, stderr) = run(&["--max-frames", "0"], &[]);
    assert!(
        !ok && stderr.contains("--max-frames"),
        "zero is refused: {stderr}"
    );
    let (ok, stderr) = run(&[], &[]);
    assert!(ok, "the defaults take the photo: {stderr}");
}

/// The chart renders the CRD from charts/minilab/files/imagejobs.yaml; it must be
/// exactly what `minilab crd` prints (regenerate with `minilab crd > ...`).
#[test]
#[cfg_attr(
    not(feature = "cluster"),
    ignore = "`minilab crd` is in builds with the cluster feature: ./tests/run builds it"
)]
fn the_charts_crd_is_what_minilab_crd_prints() {
    let done = Command::new(minilab_bin()).arg("crd").output().unwrap();
    assert!(done.status.success());
    let printed = String::from_utf8(done.stdout).unwrap();
    let path = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../charts/minilab/files/imagejobs.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        printed == committed,
        "{} differs from `minilab crd`: run `cargo run --features cluster -- crd > charts/minilab/files/imagejobs.yaml`",
        path.display()
    );
    assert!(printed.contains("name: imagejobs.minilab.dev"));
}
