//! `minilab process`: the pipeline on a local file, with recipes from YAML.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use minilab_tests::minilab_bin;
use std::path::PathBuf;
use std::process::Command;

fn photo_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/images")
        .join(name)
}

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
    let done = Command::new(minilab_bin())
        .arg("process")
        .arg(photo_path("photo-exif-rotate6.jpg"))
        .args(["--recipe", "avatar", "--recipes"])
        .arg(&recipes)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let stdout = String::from_utf8(done.stdout).unwrap();
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
