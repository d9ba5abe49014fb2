#!/usr/bin/env bash
# Makes the colour-managed test photos from photo-12mp.jpg (sRGB, no profile): the
# same pixels converted into Display P3, Adobe RGB (1998) and CMYK, each with its
# profile embedded, as phones, cameras and print workflows write them. Run from this
# folder; needs libvips-tools (vips 8.14.1 made the committed files) and colord-data's
# Adobe RGB profile (fetched with apt-get download, unpacked, never installed).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q colord-data >/dev/null && dpkg -x colord-data_*.deb x)
adobe="$work/x/usr/share/color/icc/colord/AdobeRGB1998.icc"

# vips's built-in `p3` is a compact ICC v2 Display P3 profile (P3 primaries, D65
# white, the sRGB tone curve; "sP3C", CC0); `cmyk` is its built-in CMYK profile
# (a 940 KB LUT profile, as print JPEGs carry).
# The photo's colours pushed towards the edge of sRGB (chroma ×1.8 in LCh), so the
# difference an unmanaged reading makes is plain, as in real phone photos.
vips thumbnail photo-12mp.jpg "$work/thumb.v" 1600
vips colourspace "$work/thumb.v" "$work/lch.v" lch
vips linear "$work/lch.v" "$work/vivid.v" "1 1.8 1" "0 0 0"
vips colourspace "$work/vivid.v" "$work/src.v" srgb
vips icc_transform "$work/src.v" colour-p3.jpg[Q=92] p3 --input-profile srgb
vips icc_transform "$work/src.v" colour-p3.webp[Q=92] p3 --input-profile srgb
vips icc_transform "$work/src.v" colour-adobergb.jpg[Q=92] "$adobe" --input-profile srgb
vips resize "$work/src.v" "$work/small.v" 0.4
vips icc_transform "$work/small.v" colour-p3.png p3 --input-profile srgb
vips resize "$work/src.v" "$work/cmyk.v" 0.5
vips icc_transform "$work/cmyk.v" colour-cmyk.jpg[Q=90] cmyk --input-profile srgb
