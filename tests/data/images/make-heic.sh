#!/usr/bin/env bash
# Makes the HEIC test photos as iPhones write them: HEVC in a HEIF container, the
# orientation as an `irot` transform (not EXIF), a Display P3 profile as `prof`.
# Run from this folder; needs libheif-dev and libheif-examples (1.15.1 made the
# committed files: x265 3.5), libvips-tools and gcc.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# heif-enc cannot set an orientation: tools/make-heic.c is its small cousin that can.
gcc -O1 -o "$work/make-heic" tools/make-heic.c $(pkg-config --cflags --libs libheif)

# photo-exif-rotate6.jpg's stored (unturned) pixels, turned 90° clockwise by irot.
vips copy "photo-exif-rotate6.jpg[autorotate=false]" "$work/rotate6.ppm"
"$work/make-heic" "$work/rotate6.ppm" heic-rotate6.heic 50 6
# colour-p3.jpg with its Display P3 profile, which heif-enc carries over.
heif-enc -q 60 colour-p3.jpg -o heic-p3.heic
