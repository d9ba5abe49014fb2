# syntax=docker/dockerfile:1
# minilab's container image: the one `minilab` binary (api, worker, operator,
# publish-web, process) on a slim Debian, run as a non-root user. The Helm chart
# (charts/minilab) runs it with runAsUser 65532 and a read-only root filesystem.
#
#   docker build -t minilab .
#
# JPEGs are decoded by libjpeg-turbo (required by the `turbojpeg` feature; Debian
# 12's libturbojpeg0), the same library libvips uses; HEIC by libheif with libde265
# (the `heif` feature; libheif1); AVIF outputs by libavif with libaom (the `avif`
# feature; libavif15); see docs/architecture.md. The `dist` profile adds
# thin LTO to the release profile a newcomer builds.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libturbojpeg0-dev libheif-dev libavif-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p minilab --features turbojpeg,heif,avif,cluster \
 && install -m 0755 target/dist/minilab /minilab

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libturbojpeg0 libheif1 libavif15 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /minilab /usr/local/bin/minilab
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/minilab"]
CMD ["--help"]
