#!/usr/bin/env python3
"""Which AVIF encoder minilab can afford: time and size at the SSIM of JPEG q80.

For photo-12mp.jpg fitted to 1024x768 (what the `large` output is), encodes JPEG q80
(libjpeg-turbo through vips), then AVIF with each encoder Debian's libavif 0.11 has
(libaom 3.6, rav1e 0.5 with its assembly, SVT-AV1 1.4) at several speeds, one thread
each (a worker encodes one image per core). For each, a binary search over the
quantizer finds the smallest file whose SSIM (luma, 8x8 windows at a stride of 4, as
core's tests compute it) is at least JPEG q80's; the time is the median of three
encodes at that quantizer. Prints one table row per encoder and speed, with the
ratio of its time to JPEG's and of its size to JPEG's.

    bench/avif.py [--photo tests/data/images/photo-12mp.jpg]

Needs libvips-tools and libavif-bin (apt; installed when missing). Not a test:
numbers depend on the machine.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = Path(os.environ.get("MINILAB_IMAGES", ROOT / "tests" / "data" / "images"))
CANDIDATES = [("aom", s) for s in (6, 8, 9)] + [("rav1e", s) for s in (8, 10)] + [("svt", s) for s in (8, 10, 12)]


def ensure_tools():
    missing = [pkg for tool, pkg in (("vips", "libvips-tools"), ("avifenc", "libavif-bin")) if not shutil.which(tool)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def luma(path, work):
    """The image's luma as (width, height, bytes), through vips."""
    pgm = Path(work) / "luma.pgm"
    subprocess.run(["vips", "colourspace", str(path), str(pgm), "b-w"], check=True, capture_output=True)
    data = pgm.read_bytes()
    fields, at = [], 2
    while len(fields) < 3:
        while data[at] in b" \t\r\n":
            at += 1
        if data[at] == ord("#"):
            at = data.index(b"\n", at) + 1
            continue
        end = at
        while data[end] not in b" \t\r\n":
            end += 1
        fields.append(int(data[at:end]))
        at = end
    width, height, _ = fields
    return width, height, data[at + 1:at + 1 + width * height]


def ssim(a, b):
    """Mean SSIM of two same-sized luma images over 8x8 windows at a stride of 4."""
    (w, h, pa), (w2, h2, pb) = a, b
    assert (w, h) == (w2, h2)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    total, windows = 0.0, 0
    for y in range(0, h - 7, 4):
        for x in range(0, w - 7, 4):
            sa = sb = saa = sbb = sab = 0
            for dy in range(8):
                row = (y + dy) * w + x
                ra, rb = pa[row:row + 8], pb[row:row + 8]
                sa += sum(ra)
                sb += sum(rb)
                saa += sum(v * v for v in ra)
                sbb += sum(v * v for v in rb)
                sab += sum(u * v for u, v in zip(ra, rb))
            ma, mb = sa / 64, sb / 64
            va, vb, cov = saa / 64 - ma * ma, sbb / 64 - mb * mb, sab / 64 - ma * mb
            total += ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
            windows += 1
    return total / windows


def timed(command, rounds=3):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def avif_command(source, out, codec, speed, quantizer):
    return ["avifenc", "--codec", codec, "--speed", str(speed), "--jobs", "1",
            "--min", str(quantizer), "--max", str(quantizer), "--yuv", "420",
            str(source), str(out)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--photo", default=str(IMAGES / "photo-12mp.jpg"))
    args = parser.parse_args()
    ensure_tools()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        source = work / "source.png"
        subprocess.run(["vips", "thumbnail", args.photo, str(source), "1024"], check=True)
        reference = luma(source, work)
        jpeg = work / "q80.jpg"
        jpeg_command = ["vips", "jpegsave", str(source), str(jpeg), "--Q", "80"]
        jpeg_time = timed(jpeg_command)
        target = ssim(reference, luma(jpeg, work))
        jpeg_size = jpeg.stat().st_size
        print(f"{reference[0]}x{reference[1]}, JPEG q80 (libjpeg-turbo): SSIM {target:.4f}, "
              f"{jpeg_size / 1024:.1f} KiB, {jpeg_time * 1e3:.0f} ms (vips, including its start)")
        print(f"{'encoder':8} {'speed':>5} {'quantizer':>9} {'SSIM':>7} {'KiB':>7} {'size/JPEG':>9} {'ms':>6} {'time/JPEG':>9}")
        for codec, speed in CANDIDATES:
            out = work / f"{codec}-{speed}.avif"
            low, high, best = 0, 63, None  # the largest quantizer still at the target
            while low <= high:
                quantizer = (low + high) // 2
                subprocess.run(avif_command(source, out, codec, speed, quantizer), check=True, capture_output=True)
                score = ssim(reference, luma(out, work))
                if score >= target:
                    best, low = (quantizer, score, out.stat().st_size), quantizer + 1
                else:
                    high = quantizer - 1
            if best is None:
                print(f"{codec:8} {speed:5} never reaches SSIM {target:.4f}")
                continue
            quantizer, score, size = best
            seconds = timed(avif_command(source, out, codec, speed, quantizer))
            print(f"{codec:8} {speed:5} {quantizer:9} {score:7.4f} {size / 1024:7.1f} {size / jpeg_size:9.2f} "
                  f"{seconds * 1e3:6.0f} {seconds / jpeg_time:9.1f}")


if __name__ == "__main__":
    main()
