#!/usr/bin/env python3
"""The service side by side with thumbor: throughput, latency and CPU per image.

Starts `minilab up` (the release build `cargo run --release -- up` makes, default
features) and thumbor (its own venv, two processes, file loader, no result storage),
and drives both with the same Python client on loopback, the same photo, at each
client concurrency, in interleaved rounds:

- minilab: ask for a ticket, POST the photo to the embedded store, long-poll the
  status until it is final (what the page does when its event stream breaks; the
  stream wakes at the same moment). Latency is from the upload's end to the answer.
- thumbor: GET /unsafe/fit-in/1024x1024/filters:quality(80)/<photo>. Latency is the
  whole request: thumbor has no upload step.

Both make one 1024-pixel JPEG at quality 80 from the photo (minilab's `large`
recipe). It prints img/s and latency p50/p99 for each and the throughput ratio, and
the CPU `minilab up` spends per image (from /proc, all its threads) against `minilab
process` and against sharp's bare pipeline (sharp 0.34 from npm, the library AWS's
Lambda image solution runs: a warm Node process, one image at a time, same photo,
same task; bench/sharp_pipeline.mjs), with the goals' ratios. Not a test: the
numbers depend on the machine.

    bench/service.py [--photo photo-12mp.jpg] [--display-p3] [--rounds 3] [--images 40] [--concurrency 1,2,8]

Needs python3-venv; installs thumbor (pip) into /var/tmp/minilab-bench/thumbor-venv
the first time ($THUMBOR_VENV to put it elsewhere).
"""
import argparse
import http.client
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = Path(os.environ.get("MINILAB_IMAGES", ROOT / "tests" / "data" / "images"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/minilab-target"))
MINILAB = TARGET / "release" / "minilab"
VENV = Path(os.environ.get("THUMBOR_VENV", "/var/tmp/minilab-bench/thumbor-venv"))
THUMBOR_VERSION = "7.7.*"
PHOTO = "photo-12mp.jpg"
RECIPE = "large"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def build_minilab():
    print("building minilab (release, default features) ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--quiet", "--release", "--locked", "-p", "minilab"],
                   cwd=ROOT, check=True, env={**os.environ, "CARGO_TARGET_DIR": str(TARGET)})


def install_thumbor():
    thumbor = VENV / "bin" / "thumbor"
    if thumbor.exists():
        return thumbor
    print(f"installing thumbor {THUMBOR_VERSION} into {VENV} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", f"thumbor=={THUMBOR_VERSION}"],
                   check=True)
    return thumbor


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what, limit=60.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    sys.exit(f"{what} did not come up within {limit:.0f} s")


class Minilab:
    """`minilab up` on free loopback ports in a scratch data directory."""

    def __init__(self, scratch, extra=()):
        env = {**os.environ, "MINILAB_LOG": "warn,s3s=off"}
        self.process = subprocess.Popen(
            [str(MINILAB), "up", "--listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0",
             "--data-dir", str(Path(scratch) / "minilab-data"), *extra],
            stdout=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 60
        self.url = None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                sys.exit("minilab up exited before it was up")
            match = re.match(r"minilab is up: open (\S+)", line)
            if match:
                self.url = match.group(1).rstrip("/")
                break
        if not self.url:
            sys.exit("minilab up did not come up")
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        self.api = urllib.parse.urlsplit(self.url).netloc

    def pids(self):
        return [self.process.pid]

    def stop(self):
        self.process.kill()
        self.process.wait()


class Thumbor:
    """thumbor with two processes, reading the photos straight from disk."""

    def __init__(self, binary, scratch):
        self.port = free_port()
        config = Path(scratch) / "thumbor.conf"
        config.write_text("\n".join([
            "LOADER = 'thumbor.loaders.file_loader'",
            f"FILE_LOADER_ROOT_PATH = {str(IMAGES)!r}",
            "STORAGE = 'thumbor.storages.no_storage'",
            "RESULT_STORAGE = None",
            "ALLOW_UNSAFE_URL = True",
            "QUALITY = 80",
            "AUTO_WEBP = False",
            "RESPECT_ORIENTATION = True",
            "",
        ]))
        self.process = subprocess.Popen(
            [str(binary), "--ip", "127.0.0.1", "--port", str(self.port), "--conf", str(config),
             "--processes", "2", "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(self.healthy, "thumbor")

    def healthy(self):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", "/healthcheck")
            return connection.getresponse().status == 200
        except OSError:
            return False

    def pids(self):
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                                  text=True).stdout.split()
        return [self.process.pid, *map(int, children)]

    def stop(self):
        os.killpg(self.process.pid, 9)
        self.process.wait()


def cpu_seconds(pids):
    """User and system CPU of these processes (all threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def multipart(fields, photo_bytes):
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                     .encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{PHOTO}"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n".encode())
    parts.append(photo_bytes)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def json_call(connection, method, path, body=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    connection.request(method, path, body=json.dumps(body) if body is not None else None,
                       headers=headers)
    response = connection.getresponse()
    data = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
    return json.loads(data)


class MinilabClient:
    def __init__(self, lab, photo_bytes):
        self.lab = lab
        self.photo = photo_bytes

    def connect(self):
        return {"api": http.client.HTTPConnection(self.lab.api, timeout=60), "store": None}

    def one(self, connections):
        """One image: returns the latency from the end of the upload to the result."""
        api = connections["api"]
        ticket = json_call(api, "POST", "/api/v1/uploads",
                           {"filename": PHOTO, "contentType": "image/jpeg", "size": len(self.photo),
                            "recipe": RECIPE})
        target = urllib.parse.urlsplit(ticket["upload"]["url"])
        if connections["store"] is None:
            connections["store"] = http.client.HTTPConnection(target.netloc, timeout=60)
        store = connections["store"]
        body, content_type = multipart(ticket["upload"]["fields"], self.photo)
        store.request("POST", target.path, body=body, headers={"content-type": content_type})
        response = store.getresponse()
        response.read()
        if response.status >= 300:
            raise RuntimeError(f"the store refused the upload: {response.status}")
        uploaded = time.perf_counter()
        while True:
            status = json_call(api, "GET", f"{ticket['statusUrl']}?wait=20")
            if status["state"] not in ("awaiting_upload", "processing"):
                break
        if status["state"] != "succeeded":
            raise RuntimeError(f"the upload ended {status['state']}: {status.get('error')}")
        return time.perf_counter() - uploaded


class ThumborClient:
    def __init__(self, thumbor):
        self.thumbor = thumbor
        self.PATH = f"/unsafe/fit-in/1024x1024/filters:quality(80)/{PHOTO}"

    def connect(self):
        return http.client.HTTPConnection("127.0.0.1", self.thumbor.port, timeout=60)

    def one(self, connection):
        started = time.perf_counter()
        connection.request("GET", self.PATH)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200 or body[:3] != b"\xff\xd8\xff":
            raise RuntimeError(f"thumbor answered {response.status}")
        return time.perf_counter() - started


def run_round(client, images, concurrency):
    """`images` requests from `concurrency` threads; returns (seconds, latencies)."""
    latencies, errors = [], []
    lock = threading.Lock()
    remaining = [images]

    def work():
        connection = client.connect()
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            try:
                latency = client.one(connection)
            except Exception as error:  # reported below; the round is void
                with lock:
                    errors.append(error)
                return
            with lock:
                latencies.append(latency)

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        sys.exit(f"{type(client).__name__}: {errors[0]}")
    return time.perf_counter() - started, latencies


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def install_sharp():
    """sharp 0.34 (npm's prebuilt libvips) in /var/tmp/minilab-bench/sharp, installed the
    first time ($SHARP_DIR: elsewhere); its package folder."""
    sharp = Path(os.environ.get("SHARP_DIR", "/var/tmp/minilab-bench/sharp/node_modules/sharp"))
    if not sharp.exists():
        print(f"installing sharp 0.34 into {sharp.parent.parent} ...", file=sys.stderr)
        sharp.parent.parent.mkdir(parents=True, exist_ok=True)
        (sharp.parent.parent / "package.json").write_text('{"private": true}\n')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "sharp@0.34"],
                       cwd=sharp.parent.parent, check=True)
    return sharp


def in_display_p3(photo, folder):
    """`photo` (sRGB) converted into Display P3 with its profile embedded, as a phone
    writes it (sharp's built-in P3 profile, JPEG q92, 4:2:0), saved under the same name
    in `folder`: the same pixels as the sRGB photo, so the runs compare."""
    script = ("import { createRequire } from 'node:module';"
              "const sharp = createRequire(process.argv[1] + '/')('sharp');"
              "await sharp(process.argv[2]).withIccProfile('p3')"
              ".jpeg({ quality: 92, chromaSubsampling: '4:2:0' }).toFile(process.argv[3]);")
    target = Path(folder) / photo.name
    subprocess.run(["node", "--input-type=module", "-e", script, str(install_sharp()), str(photo), str(target)],
                   check=True)
    return target


def sharp_cpu(photo, recipe, rounds):
    """sharp's bare pipeline on `photo` for `recipe` (large or web), warm, one image at a
    time: {sharp, vips, cpu_ms, wall_ms} per image. Installs sharp 0.34 (npm's prebuilt
    libvips) into /var/tmp/minilab-bench/sharp the first time ($SHARP_DIR: elsewhere)."""
    sharp = install_sharp()
    out = subprocess.run(["node", str(ROOT / "bench" / "sharp_pipeline.mjs"), str(photo), recipe, str(rounds)],
                         env={**os.environ, "SHARP_DIR": str(sharp)}, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def process_cpu(runs, scratch):
    """CPU seconds per image of `minilab process` on the photo with the recipe."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        subprocess.run([str(MINILAB), "process", "--recipe", RECIPE, "-o", str(Path(scratch) / "out"),
                        str(IMAGES / PHOTO)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / runs


def main():
    global PHOTO, IMAGES
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=40, help="images per round and concurrency")
    parser.add_argument("--concurrency", default="1,2,8")
    parser.add_argument("--photo", default=PHOTO, help="a photo in tests/data/images ($MINILAB_IMAGES)")
    parser.add_argument("--display-p3", action="store_true",
                        help="convert the photo into Display P3 first (profile embedded, as phones write)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    PHOTO = args.photo

    build_minilab()
    thumbor_bin = install_thumbor()
    scratch = tempfile.mkdtemp(prefix="minilab-bench-service-")
    if args.display_p3:
        IMAGES = in_display_p3(IMAGES / PHOTO, scratch).parent
    photo_bytes = (IMAGES / PHOTO).read_bytes()
    lab = thumbor = None
    try:
        lab = Minilab(scratch)
        thumbor = Thumbor(thumbor_bin, scratch)
        clients = {"minilab": MinilabClient(lab, photo_bytes), "thumbor": ThumborClient(thumbor)}
        servers = {"minilab": lab, "thumbor": thumbor}
        # Warm both up (first requests load code and caches).
        for name, client in clients.items():
            run_round(client, 4, 2)

        results = {(name, c): {"seconds": 0.0, "images": 0, "latencies": [], "cpu": 0.0}
                   for name in clients for c in levels}
        for round_ in range(args.rounds):
            for concurrency in levels:
                for name, client in clients.items():
                    cpu_before = cpu_seconds(servers[name].pids())
                    seconds, latencies = run_round(client, args.images, concurrency)
                    cpu = cpu_seconds(servers[name].pids()) - cpu_before
                    entry = results[(name, concurrency)]
                    entry["seconds"] += seconds
                    entry["images"] += len(latencies)
                    entry["latencies"] += latencies
                    entry["cpu"] += cpu
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        process = process_cpu(max(10, args.images // 2), scratch)
        sharp = sharp_cpu(IMAGES / PHOTO, RECIPE, max(10, args.images // 2))
    finally:
        for server in (lab, thumbor):
            if server:
                server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    profile = " in Display P3" if args.display_p3 else ""
    print(f"\n{PHOTO}{profile} ({len(photo_bytes) / 1e6:.1f} MB) → 1024 px JPEG q80, {args.rounds} interleaved rounds of {args.images} images, "
          f"{os.cpu_count()} cores\n")
    print("| concurrency | minilab img/s | thumbor img/s | ratio | minilab p50 / p99 ms "
          "| thumbor p50 / p99 ms | minilab CPU ms/img | thumbor CPU ms/img |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    cpu_up = []
    for concurrency in levels:
        m, t = results[("minilab", concurrency)], results[("thumbor", concurrency)]
        m_rate, t_rate = m["images"] / m["seconds"], t["images"] / t["seconds"]
        cpu_up.append(m["cpu"] / m["images"])
        print(f"| {concurrency} | {m_rate:.1f} | {t_rate:.1f} | {m_rate / t_rate:.2f}× "
              f"| {percentile(m['latencies'], 50) * 1e3:.0f} / {percentile(m['latencies'], 99) * 1e3:.0f} "
              f"| {percentile(t['latencies'], 50) * 1e3:.0f} / {percentile(t['latencies'], 99) * 1e3:.0f} "
              f"| {m['cpu'] / m['images'] * 1e3:.0f} | {t['cpu'] / t['images'] * 1e3:.0f} |")
    per_image = statistics.median(cpu_up)
    print(f"\nCPU per image inside `minilab up` (median over concurrencies): {per_image * 1e3:.0f} ms; "
          f"`minilab process --recipe {RECIPE}`: {process * 1e3:.0f} ms → {per_image / process:.2f}×")
    sharp_ms = sharp["cpu_ms"] / 1e3
    print(f"sharp {sharp['sharp']} (libvips {sharp['vips']}), bare pipeline, warm, one image at a time: "
          f"{sharp['cpu_ms']:.0f} ms CPU per image → minilab up / sharp: {per_image / sharp_ms:.2f}× "
          f"(goal ≤ 0.67×); minilab process / sharp: {process / sharp_ms:.2f}×")
    best = max(results[("minilab", c)]["images"] / results[("minilab", c)]["seconds"]
               / (results[("thumbor", c)]["images"] / results[("thumbor", c)]["seconds"]) for c in levels)
    worst = min(results[("minilab", c)]["images"] / results[("minilab", c)]["seconds"]
                / (results[("thumbor", c)]["images"] / results[("thumbor", c)]["seconds"]) for c in levels)
    print(f"throughput against thumbor: {worst:.2f}× to {best:.2f}× (goal ≥ 1.5× at every concurrency)")
    print("minilab latency: upload finished → the API answers succeeded; "
          "thumbor latency: the whole request.")


if __name__ == "__main__":
    main()
