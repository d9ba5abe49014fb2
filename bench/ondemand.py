#!/usr/bin/env python3
"""Sizes on demand, measured: how long the first request for an allowed width takes
(the output read, resized, encoded and stored), how long later ones take (read as
stored), and what a make costs: the CPU `minilab up` spends per make (from /proc,
all its threads, while only makes run) and the S3 requests each needs, priced from
bench/prices.toml.

Starts `minilab up` (release build) with a recipe whose `large` (JPEG) and
`large-webp` outputs, fit within 1024 px, allow 8 smaller widths each; uploads
--images photos (12 MP) under it; then asks for every (output, width) of each once
(a make) and again (stored), one request at a time, on loopback. Not a test: the
numbers depend on the machine.

    bench/ondemand.py [--images 5]
"""
import argparse
import http.client
import statistics
import sys
import tempfile
import time
import tomllib
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import service  # noqa: E402  (bench/service.py: the release build, `minilab up`, its CPU)

WIDTHS = [160, 240, 320, 400, 480, 560, 640, 800]
OUTPUTS = {"large": "jpg", "large-webp": "webp"}
RECIPES = f"""recipes:
  - name: ondemand
    outputs:
      - name: large
        operations: [{{op: resize, width: 1024, height: 1024, fit: fit}}]
        format: jpeg
        widths: {WIDTHS}
      - name: large-webp
        operations: [{{op: resize, width: 1024, height: 1024, fit: fit}}]
        format: webp
        widths: {WIDTHS}
"""
# What one make asks of S3: the miss (GET), the manifest (GET), the output (GET), the
# variant (PUT). A stored variant is one GET.
MAKE_REQUESTS = {"get": 3, "put": 1}


def upload(api, photo):
    """One photo under the recipe, processed; returns its id."""
    ticket = service.json_call(api, "POST", "/api/v1/uploads", {
        "filename": "photo.jpg", "contentType": "image/jpeg", "size": len(photo),
        "recipe": "ondemand"})
    target = urllib.parse.urlsplit(ticket["upload"]["url"])
    store = http.client.HTTPConnection(target.netloc, timeout=60)
    body, content_type = service.multipart(ticket["upload"]["fields"], photo)
    store.request("POST", target.path, body=body, headers={"content-type": content_type})
    response = store.getresponse()
    response.read()
    if response.status >= 300:
        sys.exit(f"the store refused the upload: {response.status}")
    while True:
        status = service.json_call(api, "GET", f"{ticket['statusUrl']}?wait=20")
        if status["state"] not in ("awaiting_upload", "processing"):
            break
    if status["state"] != "succeeded":
        sys.exit(f"the upload ended {status['state']}")
    return ticket["id"]


def timed_get(api, path):
    started = time.perf_counter()
    api.request("GET", path)
    response = api.getresponse()
    body = response.read()
    if response.status != 200 or not body:
        sys.exit(f"GET {path}: {response.status}")
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    args = parser.parse_args()
    service.build_minilab()
    prices = tomllib.loads((service.ROOT / "bench" / "prices.toml").read_text())
    photo = (service.IMAGES / service.PHOTO).read_bytes()
    with tempfile.TemporaryDirectory(prefix="minilab-ondemand-") as scratch:
        recipes = Path(scratch) / "recipes.yaml"
        recipes.write_text(RECIPES)
        lab = service.Minilab(scratch, ["--recipes", str(recipes)])
        try:
            api = http.client.HTTPConnection(lab.api, timeout=60)
            ids = [upload(api, photo) for _ in range(args.images)]
            paths = [f"/i/{id_}/{name}.w{w}.{ext}" for id_ in ids
                     for name, ext in OUTPUTS.items() for w in WIDTHS]
            cpu_before = service.cpu_seconds(lab.pids())
            makes = [timed_get(api, path) for path in paths]
            cpu_makes = service.cpu_seconds(lab.pids()) - cpu_before
            cpu_before = service.cpu_seconds(lab.pids())
            stored = [timed_get(api, path) for path in paths]
            cpu_stored = service.cpu_seconds(lab.pids()) - cpu_before
        finally:
            lab.stop()
    report(makes, stored, cpu_makes, cpu_stored, prices)


def report(makes, stored, cpu_makes, cpu_stored, prices):
    n = len(makes)
    s3 = prices["s3"]
    requests = (MAKE_REQUESTS["get"] * s3["get_per_1000"] + MAKE_REQUESTS["put"] * s3["put_per_1000"]) / 1000
    print(f"{n} makes from {service.PHOTO} outputs (1024 px, JPEG q80 and WebP q80) to "
          f"{WIDTHS[0]}-{WIDTHS[-1]} px, one request at a time, on loopback")
    print(f"  first request (made): p50 {service.percentile(makes, 50) * 1000:.1f} ms, "
          f"p99 {service.percentile(makes, 99) * 1000:.1f} ms, mean {statistics.mean(makes) * 1000:.1f} ms")
    print(f"  later request (stored): p50 {service.percentile(stored, 50) * 1000:.1f} ms, "
          f"p99 {service.percentile(stored, 99) * 1000:.1f} ms")
    per_make = cpu_makes / n
    print(f"  CPU per make: {per_make * 1000:.1f} ms (minilab up, all threads); "
          f"per stored read: {cpu_stored / n * 1000:.2f} ms")
    print(f"  $ per million makes, us-east-1 ({prices['date']}):")
    for arch in ("x86", "arm"):
        for market in ("on_demand", "spot"):
            cpu = per_make * prices["ec2"][f"{arch}_{market}"] / 3600
            print(f"    {arch:>3} {market:<9}: {1e6 * (cpu + requests):7.2f} "
                  f"(CPU {1e6 * cpu:.2f}, S3 requests {1e6 * requests:.2f}: "
                  f"{MAKE_REQUESTS['get']} GET, {MAKE_REQUESTS['put']} PUT)")
    print("  (the Graviton rows price the x86 CPU time at Graviton's rate: no arm machine here)")


if __name__ == "__main__":
    main()
