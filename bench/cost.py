"""What one image costs on AWS: every request minilab makes, counted, and its CPU, in
dollars per million images beside the Lambda design counted the same way (run by
bench/cost, which starts LocalStack and kube-apiserver and builds the release binary).

minilab api, worker and operator talk to LocalStack through a counting proxy on
loopback, which classifies each request (S3 by method and path, SQS by its target) the
way AWS bills it. Scenarios, each for `large` (one output) and `web` (four):
- an upload: ticket, the browser's POST, the page waiting with ?wait=20 until final
  (with push, as the chart runs it), with ImageJob tracking off and on;
- an abandoned ticket (tracking on, a 60 s ticket): what the operator spends on it;
- a batch item: an ImageJob over a prefix of photos (--batch-images copies of
  --batch-photo: what a look at a batch costs grows with its size).
CPU seconds per image are read from /proc for each process. The Lambda design: API
Gateway and a presign function, the same POST, S3 invoking the resize function
(1,769 MB: one vCPU) for sharp's measured time (bench/sharp_pipeline.mjs, same photo,
same outputs), its GET and PUTs, and the page polling the processed bucket each second.
Prices: bench/prices.toml (dated)."""
import argparse
import http.client
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.parse
import uuid
from collections import Counter
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from operator_cost import install, kubectl, service_account_kubeconfig  # noqa: E402
import service  # noqa: E402  (bench/service.py: sharp's bare pipeline)

ROOT = Path(__file__).resolve().parent.parent
IMAGES = Path(os.environ.get("MINILAB_IMAGES", ROOT / "tests" / "data" / "images"))
PHOTO = "photo-12mp.jpg"
REGION = "us-east-1"
SECRET = "bench-peer-secret-" + uuid.uuid4().hex
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NAMESPACE = "minilab-cost"  # also the release: service accounts minilab-cost-api, -operator
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
# S3 operations billed at the PUT price (the rest but DELETE at the GET price).
S3_PUT_CLASS = {"PutObject", "CopyObject", "PostObject", "ListObjectsV2", "ListObjects", "CreateMultipartUpload",
                "UploadPart", "CompleteMultipartUpload", "PutBucket"}
S3_FREE = {"DeleteObject", "DeleteObjects"}


def classify(method, path, query, headers, body):
    """(service, operation) of one request, as AWS bills it."""
    target = headers.get("X-Amz-Target", "")
    if target.startswith("AmazonSQS."):
        return "SQS", target.split(".", 1)[1]
    if "x-www-form-urlencoded" in headers.get("Content-Type", "") and b"Action=" in body:
        action = urllib.parse.parse_qs(body.decode())["Action"][0]
        return ("STS" if action.startswith(("AssumeRole", "GetCallerIdentity")) else "SQS"), action
    parts = [p for p in path.split("/") if p]
    has_key = len(parts) >= 2
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    params.pop("x-id", None)  # the SDK names the operation in the query; not a sub-resource
    if has_key and method in ("GET", "HEAD", "PUT") and not params:
        verb = {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject"}[method]
        if not (method == "PUT" and "x-amz-copy-source" in headers):
            return "S3", f"{verb} {object_kind('/'.join(parts[1:]))}"
    if method == "POST":
        if "multipart/form-data" in headers.get("Content-Type", ""):
            return "S3", "PostObject"
        return "S3", "DeleteObjects" if "delete" in params else "CompleteMultipartUpload"
    if method == "PUT":
        if "x-amz-copy-source" in headers:
            return "S3", "CopyObject"
        return "S3", ("UploadPart" if "partNumber" in params else "PutObject") if has_key else "PutBucket"
    if method == "GET":
        return "S3", "GetObject" if has_key else ("ListObjectsV2" if "list-type" in params else "GetBucket")
    if method == "HEAD":
        return "S3", "HeadObject" if has_key else "HeadBucket"
    return "S3", "DeleteObject" if method == "DELETE" else method


def object_kind(key):
    """What an object is to minilab, by its key: a source, a manifest, a claim or an output."""
    if key.startswith(("uploads/", "batch-")) and "/batches/" not in key:
        return "source"
    if key.endswith("manifest.json"):
        return "manifest"
    return "claim" if key.endswith("/claim") else "output"


class CountingProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to `upstream` unchanged (signatures hold: the Host header
    is kept) and counts it by (service, operation)."""
    daemon_threads = True

    def __init__(self, upstream):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream = urllib.parse.urlsplit(upstream).netloc
        self.counts = Counter()
        self.lock = threading.Lock()
        self.local = threading.local()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def count(self, key):
        with self.lock:
            self.counts[key] += 1

    def snapshot(self):
        with self.lock:
            return Counter(self.counts)

    def connection(self):
        if not hasattr(self.local, "conn"):
            self.local.conn = http.client.HTTPConnection(self.upstream, timeout=60)
        return self.local.conn


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def forward(self):
        try:
            self.relay()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went first (a long poll given up)

    def relay(self):
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        body = read_chunked(self.rfile) if chunked else self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urllib.parse.urlsplit(self.path)
        self.server.count(classify(self.command, url.path, url.query, self.headers, body))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        if chunked:
            headers["Content-Length"] = str(len(body))
        conn = self.server.connection()
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
        except (http.client.HTTPException, OSError):  # a stale keep-alive connection: once more
            conn.close()
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
        data = response.read()
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP and (self.command == "HEAD" or name.lower() != "content-length"):
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

    def log_message(self, *args):
        pass


def read_chunked(stream):
    body = b""
    while True:
        size = int(stream.readline().split(b";")[0], 16)
        if size == 0:
            stream.readline()
            return body
        body += stream.read(size)
        stream.readline()


class Minilab:
    """A running `minilab SUBCOMMAND`: its process, its printed addresses, its CPU."""

    def __init__(self, args, env, ready):
        self.process = subprocess.Popen([os.environ["MINILAB_BIN"], *args], env=env, stdout=subprocess.PIPE, text=True)
        self.lines = []
        while not any(line.startswith(ready) for line in self.lines):
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"minilab {args[0]} ended before printing {ready!r}")
            self.lines.append(line.strip())
        threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()

    def address(self, label):
        return next(re.search(rf"{label} (?:on )?http://(\S+?)[,\s]", line + " ").group(1)
                    for line in self.lines if re.search(rf"{label} (?:on )?http://", line))

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


class Bench:
    def __init__(self, localstack, workdir):
        self.proxy = CountingProxy(localstack)
        session = dict(endpoint_url=localstack, region_name=REGION, aws_access_key_id="test",
                       aws_secret_access_key="test")
        self.s3, self.sqs = boto3.client("s3", **session), boto3.client("sqs", **session)
        self.uploads, self.processed = f"cost-up-{uuid.uuid4().hex[:8]}", f"cost-out-{uuid.uuid4().hex[:8]}"
        for bucket in (self.uploads, self.processed):
            self.s3.create_bucket(Bucket=bucket)
        dlq = self.sqs.create_queue(QueueName=f"{self.uploads}-dlq")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue = self.sqs.create_queue(QueueName=f"{self.uploads}-events", Attributes={
            "VisibilityTimeout": "60",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})})["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.s3.put_bucket_notification_configuration(Bucket=self.uploads, NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": {
                "Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}}}]})
        self.direct_queue = queue  # past the proxy: the bench's own reads are not counted
        self.queue = urllib.parse.urlsplit(queue)._replace(netloc=self.proxy.url.removeprefix("http://")).geturl()
        self.photo = (IMAGES / PHOTO).read_bytes()
        self.env = {**os.environ, "AWS_ENDPOINT_URL": self.proxy.url, "AWS_REGION": REGION,
                    "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "MINILAB_LOG": "warn",
                    "MINILAB_UPLOADS_BUCKET": self.uploads, "MINILAB_PROCESSED_BUCKET": self.processed,
                    "MINILAB_S3_PATH_STYLE": "true"}
        install(NAMESPACE)
        self.kubeconfigs = {account: service_account_kubeconfig(NAMESPACE, f"{NAMESPACE}-{account}", workdir)
                            for account in ("api", "operator")}
        self.operator = Minilab(["operator", "--watch-namespace", NAMESPACE, "--queue-url", self.queue,
                                 "--metrics-listen", "127.0.0.1:0", "--peer-secret", SECRET],
                                {**self.env, "KUBECONFIG": str(self.kubeconfigs["operator"]),
                                 "POD_NAMESPACE": NAMESPACE}, "minilab operator")
        self.api = self.worker = None

    def start(self, tracking, upload_ttl=900):
        for running in (self.worker, self.api):
            if running:
                running.stop()
        flags = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--peer-secret", SECRET,
                 "--upload-url", f"{self.proxy.url}/{self.uploads}", "--upload-ttl", str(upload_ttl),
                 "--tickets-per-minute", "0", "--reads-per-minute", "0", "--upload-bytes-per-hour", "0"]
        env = {**self.env, "KUBECONFIG": str(self.kubeconfigs["api"])}
        self.api = Minilab(["api", *flags, *(["--kube-tracking"] if tracking else [])], env, "minilab api metrics")
        self.worker = Minilab(["worker", "--queue-url", self.queue, "--metrics-listen", "127.0.0.1:0",
                               "--concurrency", "2",
                               "--announce-to", f"{self.api.address('metrics')},{self.operator.address('metrics')}",
                               "--peer-secret", SECRET], self.env, "minilab worker consuming")

    def request(self, method, path, body=None):
        conn = http.client.HTTPConnection(self.api.address("listening"), timeout=60)
        conn.request(method, path, body=json.dumps(body) if body else None,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = json.loads(response.read() or b"null")
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data}")
        return data

    def ticket(self, recipe):
        return self.request("POST", "/api/v1/uploads", {"filename": PHOTO, "contentType": "image/jpeg",
                                                        "size": len(self.photo), "recipe": recipe})

    def upload(self, recipe):
        """One upload as the page makes it; its id once its status is final."""
        ticket = self.ticket(recipe)
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in ticket["upload"]["fields"].items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{PHOTO}"\r\n'
                     f"Content-Type: image/jpeg\r\n\r\n".encode() + self.photo + f"\r\n--{boundary}--\r\n".encode())
        url = urllib.parse.urlsplit(ticket["upload"]["url"])
        conn = http.client.HTTPConnection(url.netloc, timeout=60)
        conn.request("POST", url.path, body=b"".join(parts),
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = conn.getresponse()
        response.read()
        if response.status >= 300:
            raise RuntimeError(f"POST to the bucket: {response.status}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.request("GET", f"/api/v1/uploads/{ticket['id']}?wait=20")["state"] in ("succeeded", "failed"):
                return ticket["id"]
        raise RuntimeError(f"upload {ticket['id']} not final within 120 s")

    def jobs_finished(self, names, limit=300):
        """Waits (bounded) until every ImageJob named is in a finished phase."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            items = json.loads(kubectl("get", "imagejobs", "-n", NAMESPACE, "-o", "json"))["items"]
            phases = {j["metadata"]["name"]: j.get("status", {}).get("phase") for j in items}
            if all(phases.get(n) in ("Succeeded", "Failed", "Expired") for n in names):
                return
            time.sleep(1)
        raise RuntimeError(f"ImageJobs not finished within {limit} s")

    def queue_drained(self, limit=60):
        """Waits (bounded) until the events queue holds no message, in flight or not:
        the worker has deleted (in batches) every message it took."""
        deadline = time.monotonic() + limit
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        while time.monotonic() < deadline:
            attributes = self.sqs.get_queue_attributes(QueueUrl=self.direct_queue, AttributeNames=names)["Attributes"]
            if all(attributes[name] == "0" for name in names):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the events queue still holds messages after {limit} s")

    def reconciles(self):
        """The operator's reconciles so far (its /metrics)."""
        conn = http.client.HTTPConnection(self.operator.address("metrics"), timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        return sum(float(v) for v in re.findall(r"^minilab_operator_reconciles_total\{[^}]*\} (\S+)$", text, re.M))

    def measure(self, images, work):
        """Requests, CPU seconds and operator reconciles per image while `work` runs,
        and until the queue is idle."""
        before = self.proxy.snapshot()
        processes = [p for p in (self.api, self.worker, self.operator) if p]
        cpu = [p.cpu_seconds() for p in processes]
        reconciles = self.reconciles()
        work()
        self.queue_drained()
        counts = self.proxy.snapshot() - before
        return {"requests": {f"{s} {op}": n / images for (s, op), n in sorted(counts.items())},
                "cpu": {name: (p.cpu_seconds() - c) / images
                        for name, p, c in zip(("api", "worker", "operator"), processes, cpu)},
                "reconciles": (self.reconciles() - reconciles) / images}


def sharp_ms(recipe, rounds):
    return service.sharp_cpu(IMAGES / PHOTO, recipe, rounds)


def dollars(requests, cpu_seconds, prices, arch, market):
    """$ for one image: its requests and the vCPU-seconds of its processes."""
    s3, sqs = prices["s3"], prices["sqs"]
    total = 0.0
    for name, n in requests.items():
        service, op = name.split(" ", 1)
        verb = op.split(" ")[0]
        if service == "S3" and verb not in S3_FREE:
            total += n * (s3["put_per_1000"] if verb in S3_PUT_CLASS else s3["get_per_1000"]) / 1000
        elif service == "SQS":
            total += n * sqs["per_million"] / 1e6
    return total + cpu_seconds * prices["ec2"][f"{arch}_{market}"] / 3600


def lambda_dollars(outputs, sharp, prices, arch, polls):
    """$ for one image in the Lambda design: API Gateway + presign function, the POST,
    the resize function at 1,769 MB for sharp's time (GET + PUTs), the page's polls."""
    s3, lam = prices["s3"], prices["lambda"]
    gb_seconds = 1.769 * sharp["wall_ms"] / 1000 + 0.128 * 0.02  # resize; presign ~20 ms at 128 MB
    requests = (prices["apigateway"]["per_million"] / 1e6 + 2 * lam["per_million_requests"] / 1e6
                + (1 + outputs) * s3["put_per_1000"] / 1000          # POST, output PUTs
                + (1 + polls) * s3["get_per_1000"] / 1000)           # source GET, the page's polls
    return requests + gb_seconds * lam[f"{arch}_per_gb_second"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--polls", type=int, default=2, help="the Lambda design's page polls per image")
    parser.add_argument("--batch-images", type=int,
                        help="images in each batch job (default: --images): what a look costs grows with it")
    parser.add_argument("--batch-photo", default=PHOTO, help="the photo each batch image is a copy of")
    args = parser.parse_args()
    batch_images = args.batch_images or args.images
    batch_photo = (IMAGES / args.batch_photo).read_bytes()
    prices = tomllib.loads((ROOT / "bench" / "prices.toml").read_text())
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        bench = Bench(os.environ["MINILAB_LOCALSTACK_URL"], workdir)
        try:
            for tracking in (False, True):
                bench.start(tracking)
                bench.upload("web")  # not counted: the processes' first connections
                for recipe in ("large", "web"):
                    ids = []
                    result = bench.measure(args.images, lambda: (
                        ids.extend(bench.upload(recipe) for _ in range(args.images)),
                        tracking and bench.jobs_finished([f"upload-{i}" for i in ids])))
                    # S3 sends each upload's event to the queue inside LocalStack, past the
                    # proxy; SQS bills it like any request.
                    result["requests"]["SQS SendMessage (S3's event)"] = 1.0
                    results[(recipe, "upload", tracking)] = result
            bench.start(True, upload_ttl=60)
            abandoned = []
            results[("web", "abandoned ticket (60 s)", True)] = bench.measure(1, lambda: (
                abandoned.append(bench.ticket("web")["id"]),
                bench.jobs_finished([f"upload-{abandoned[0]}"], limit=300)))
            for recipe in ("large", "web"):
                prefix = f"batch-{recipe}/"
                for i in range(batch_images):
                    bench.s3.put_object(Bucket=bench.uploads, Key=f"{prefix}{i:05d}.jpg", Body=batch_photo)
                name = f"cost-batch-{recipe}"
                job = {"apiVersion": "minilab.dev/v1alpha1", "kind": "ImageJob", "metadata": {"name": name},
                       "spec": {"source": {"bucket": bench.uploads, "prefix": prefix}, "recipe": recipe,
                                "destination": {"bucket": bench.processed, "prefix": f"batches/{name}/"}}}
                scenario = f"batch item (of {batch_images}, {args.batch_photo})"
                results[(recipe, scenario, True)] = bench.measure(batch_images, lambda: (
                    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(job)),
                    bench.jobs_finished([name], limit=300 + batch_images // 4)))
        finally:
            for running in (bench.worker, bench.api, bench.operator):
                if running:
                    running.stop()
    report(results, prices, args)


def report(results, prices, args):
    print(f"AWS requests per image through a counting proxy (LocalStack), {PHOTO}; prices {prices['date']} "
          f"{prices['region']} (bench/prices.toml)")
    for (recipe, scenario, tracking), result in results.items():
        print(f"\n{recipe}, {scenario}, ImageJob tracking {'on' if tracking else 'off'}:")
        for name, n in result["requests"].items():
            print(f"  {name:<34} {n:6.2f}")
        essential = sum(n for name, n in result["requests"].items()
                        if name in ("S3 PostObject", "S3 GetObject source", "S3 PutObject output"))
        print(f"  {'beyond the upload, source GET and output PUTs':<34} "
              f"{sum(result['requests'].values()) - essential:6.2f}")
        print("  CPU seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in result["cpu"].items())
              + f"; operator reconciles {result['reconciles']:.1f}")
    print(f"\n$ per million images (minilab on EC2 vCPU-seconds; Lambda at 1,769 MB, sharp's time, "
          f"{args.polls} page polls):")
    print(f"{'recipe':<7} {'tracking':<9} {'arch':<4} {'minilab on-demand':>18} {'minilab Spot':>13} "
          f"{'Lambda':>9} {'ratio (on-demand)':>18}")
    for recipe, outputs in (("large", 1), ("web", 4)):
        sharp = sharp_ms(recipe, 20)
        print(f"  (sharp {sharp['sharp']}, libvips {sharp['vips']}: {sharp['cpu_ms']:.1f} ms CPU, "
              f"{sharp['wall_ms']:.1f} ms per image for {recipe})")
        for tracking in (False, True):
            result = results[(recipe, "upload", tracking)]
            cpu = sum(result["cpu"].values())
            for arch in ("x86", "arm"):
                ours = dollars(result["requests"], cpu, prices, arch, "on_demand") * 1e6
                spot = dollars(result["requests"], cpu, prices, arch, "spot") * 1e6
                theirs = lambda_dollars(outputs, sharp, prices, arch, args.polls) * 1e6
                print(f"{recipe:<7} {'on' if tracking else 'off':<9} {arch:<4} {ours:>18.2f} {spot:>13.2f} "
                      f"{theirs:>9.2f} {ours / theirs:>18.2f}")


if __name__ == "__main__":
    main()
