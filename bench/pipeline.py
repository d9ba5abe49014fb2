#!/usr/bin/env python3
"""Speed and memory of `minilab process` against vipsthumbnail and ImageMagick.

Runs every tool on the same photos from tests/data/images, interleaved, for several
rounds, and prints the median wall time, the peak RSS and the ratios to
vipsthumbnail. Not a test: numbers depend on the machine.

    bench/pipeline.py [--rounds 9]

Three variants of minilab run: `minilab`, the container image's build (the `dist`
profile, thin LTO; JPEGs decoded by libjpeg-turbo); `minilab-rust`, the same binary
with MINILAB_JPEG_DECODER=rust (the pure-Rust decoders, what a build on a machine
without libjpeg-turbo uses); and `minilab-release`, the `release` profile without LTO
that `cargo run --release -- up` builds, to show what LTO buys at run time.

`photo-12mp-p3.jpg` is photo-12mp.jpg converted to Display P3 with its profile
embedded (made by vips at the start, 4:2:0 like the original), as iPhones write
photos: minilab converts it to sRGB, and vipsthumbnail does too (`--export-profile
srgb`). `photo-12mp-p3-untagged.jpg` is the same file without its profile: the ratio
of the two times is the cost of colour conversion.

The `large-avif` task is AVIF's cost beside the others (minilab: libavif + libaom at
speed 9; vipsthumbnail and ImageMagick: libheif + libaom at their fastest settings).

Needs libvips-tools, imagemagick, libturbojpeg0-dev and libavif-dev (apt; installed
when missing);
builds minilab with both profiles.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = Path(os.environ.get("MINILAB_IMAGES", ROOT / "tests" / "data" / "images"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/minilab-target"))
PROFILES = {"dist": TARGET / "dist" / "minilab", "release": TARGET / "release" / "minilab"}
# How each variant is run: its binary (by profile) and the environment it gets.
MINILABS = {
    "minilab": ["env", str(PROFILES["dist"])],
    "minilab-rust": ["env", "MINILAB_JPEG_DECODER=rust", str(PROFILES["dist"])],
    "minilab-release": ["env", str(PROFILES["release"])],
}
TOOLS = (*MINILABS, "vipsthumbnail", "imagemagick")
VIPS = "/usr/bin/vipsthumbnail"
MAGICK = "/usr/bin/convert-im6.q16"
PHOTOS = ["photo-12mp.jpg", "photo-12mp-p3.jpg", "photo-12mp-p3-untagged.jpg", "photo-24mp.jpg",
          "photo-8mp-progressive.jpg"]
# Photos made at the start, in the output folder, from the repository's own.
MADE = ("photo-12mp-p3.jpg", "photo-12mp-p3-untagged.jpg")


def photo_path(photo, out):
    return Path(out) / photo if photo in MADE else IMAGES / photo


def without_icc(jpeg):
    """The JPEG's bytes without its APP2 (ICC profile) segments."""
    out, at = bytearray(jpeg[:2]), 2
    while jpeg[at + 1] != 0xDA:  # up to the first scan
        length = int.from_bytes(jpeg[at + 2:at + 4], "big")
        if jpeg[at + 1] != 0xE2:
            out += jpeg[at:at + 2 + length]
        at += 2 + length
    return bytes(out + jpeg[at:])


def make_photos(out):
    (Path(out) / "avif.yaml").write_text(AVIF_RECIPE)
    p3, untagged = (photo_path(photo, out) for photo in MADE)
    subprocess.run(["vips", "icc_transform", str(IMAGES / "photo-12mp.jpg"),
                    f"{p3}[Q=92,subsample_mode=on]", "p3", "--input-profile", "srgb"], check=True)
    untagged.write_bytes(without_icc(p3.read_bytes()))


def ensure_tools():
    missing = [p for p in ("libvips-tools", "imagemagick") if not shutil.which({"libvips-tools": "vipsthumbnail", "imagemagick": "convert-im6.q16"}[p])]
    if subprocess.run(["pkg-config", "--exists", "libturbojpeg"]).returncode != 0:
        missing += ["pkg-config", "libturbojpeg0-dev"]
    if subprocess.run(["pkg-config", "--exists", "libavif"]).returncode != 0:
        missing += ["pkg-config", "libavif-dev"]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    for profile in PROFILES:
        subprocess.run(["cargo", "build", "--quiet", "--profile", profile, "--locked", "-p", "minilab",
                        "--features", "turbojpeg,avif"], cwd=ROOT,
                       check=True, env={**os.environ, "CARGO_TARGET_DIR": str(TARGET)})


def run(commands):
    """Runs commands one after the other; returns (wall seconds, peak RSS KiB of any)."""
    peak = 0
    start = time.perf_counter()
    for command in commands:
        done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{command[0]} failed: {done.stderr}")
        peak = max(peak, int(done.stderr.strip().splitlines()[-1]))
    return time.perf_counter() - start, peak


# AVIF is not a built-in recipe: this one is given to minilab with --recipes.
AVIF_RECIPE = """recipes:
  - name: large-avif
    description: fit within 1024, AVIF q80 (libaom speed 9)
    outputs:
      - name: large
        operations: [{op: resize, width: 1024, height: 1024, fit: fit}]
        format: avif
"""


def tasks(photo, out):
    src = str(photo_path(photo, out))
    # vipsthumbnail leaves a profile as it is unless asked; minilab always makes sRGB.
    srgb = ["--export-profile", "srgb"] if photo == "photo-12mp-p3.jpg" else []
    return {
        "large (fit 1024, JPEG q80)": {
            **{name: [[*minilab, "process", src, "--recipe", "large", "-o", f"{out}/m"]]
               for name, minilab in MINILABS.items()},
            "vipsthumbnail": [[VIPS, src, "-s", "1024x1024>", *srgb, "-o", f"{out}/v.jpg[Q=80]"]],
            "imagemagick": [[MAGICK, src, "-resize", "1024x1024>", "-quality", "80", f"{out}/i.jpg"]],
        },
        # libvips's AVIF goes through libheif to libaom as well; effort 0 is its fastest.
        "large-avif (fit 1024, AVIF q80, libaom speed 9)": {
            **{name: [[*minilab, "process", src, "--recipes", f"{out}/avif.yaml", "--recipe", "large-avif",
                       "-o", f"{out}/m"]] for name, minilab in MINILABS.items()},
            "vipsthumbnail": [[VIPS, src, "-s", "1024x1024>", *srgb, "-o", f"{out}/v.avif[Q=60,effort=0]"]],
            "imagemagick": [[MAGICK, src, "-resize", "1024x1024>", "-quality", "60", f"{out}/i.avif"]],
        },
        # vipsthumbnail writes one file per run, each from the source (shrink-on-load);
        # ImageMagick resizes once to 1024 and derives 256 from it, as minilab does.
        "web (fit 1024 + fit 256, each JPEG q80 + WebP q80)": {
            **{name: [[*minilab, "process", src, "--recipe", "web", "-o", f"{out}/m"]]
               for name, minilab in MINILABS.items()},
            "vipsthumbnail": [
                [VIPS, src, "-s", f"{size}x{size}>", *srgb, "-o", f"{out}/v{size}.{ext}[Q=80]"]
                for size in (1024, 256) for ext in ("jpg", "webp")
            ],
            "imagemagick": [[MAGICK, src, "-resize", "1024x1024>", "-quality", "80",
                             "-write", f"{out}/i1.jpg", "-write", f"{out}/i1.webp",
                             "-resize", "256x256>", "-write", f"{out}/i2.jpg", f"{out}/i2.webp"]],
        },
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    ensure_tools()
    results = {}
    with tempfile.TemporaryDirectory() as out:
        make_photos(out)
        for round_ in range(args.rounds):
            for photo in PHOTOS:
                for task, tools in tasks(photo, out).items():
                    # Interleaved, and in a rotating order, so drift hits every tool alike.
                    names = list(tools)
                    names = names[round_ % len(names):] + names[:round_ % len(names)]
                    for tool in names:
                        results.setdefault((photo, task, tool), []).append(run(tools[tool]))
    print(f"{args.rounds} rounds, interleaved; median wall time, peak RSS; ratio = ours / other")
    for photo in PHOTOS:
        for task in tasks(photo, "/tmp"):
            print(f"\n{photo} — {task}")
            median = {}
            for tool in TOOLS:
                runs = results[(photo, task, tool)]
                median[tool] = (statistics.median(r[0] for r in runs), max(r[1] for r in runs))
                print(f"  {tool:15} {median[tool][0] * 1e3:7.1f} ms  {median[tool][1] / 1024:6.1f} MiB")
            for ours in MINILABS:
                for other in ("vipsthumbnail", "imagemagick"):
                    print(f"  {ours:15} / {other:13} time {median[ours][0] / median[other][0]:.2f}×"
                          f"  peak RSS {median[ours][1] / median[other][1]:.2f}×")
            print(f"  {'minilab-release':15} / {'minilab':13} time "
                  f"{median['minilab-release'][0] / median['minilab'][0]:.2f}×  (no LTO / thin LTO)")
    print("\nColour conversion (photo-12mp-p3.jpg / the same file untagged):")
    for task in tasks("photo-12mp.jpg", "/tmp"):
        for tool in ("minilab", "vipsthumbnail"):
            p3, untagged = (statistics.median(r[0] for r in results[(photo, task, tool)]) for photo in MADE)
            print(f"  {task.split(' (')[0]:10} {tool:15} {p3 * 1e3:7.1f} ms / {untagged * 1e3:7.1f} ms = {p3 / untagged:.2f}×")


if __name__ == "__main__":
    main()
