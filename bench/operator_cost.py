"""The operator's memory and S3 requests as ImageJobs pile up (run by bench/operator-cost,
which starts LocalStack and kube-apiserver and exports their addresses)."""
import concurrent.futures
import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
UNFINISHED = 100
MINUTE = 60


class Kube:
    """The admin's connection to the API server, one keep-alive connection per thread."""

    def __init__(self):
        self.server = os.environ["MINILAB_KUBE_SERVER"].removeprefix("https://")
        self.token = os.environ["MINILAB_KUBE_ADMIN_TOKEN"]
        self.context = ssl.create_default_context(cafile=os.environ["MINILAB_KUBE_DIR"] + "/ca.crt")
        self.local = threading.local()

    def request(self, method, path, body=None, content_type="application/json"):
        if not hasattr(self.local, "conn"):
            self.local.conn = http.client.HTTPSConnection(self.server, context=self.context, timeout=60)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type}
        self.local.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = self.local.conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else None


def kubectl(*args, stdin=None):
    done = subprocess.run([os.environ.get("KUBECTL", "kubectl"), *args], input=stdin, text=True, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr}")
    return done.stdout


def install(namespace):
    kubectl("create", "namespace", namespace)
    rendered = subprocess.run([os.environ["MINILAB_CHART_PYTHON"], ROOT / "tests/chart/render.py", namespace, namespace],
                              check=True, capture_output=True, text=True).stdout
    kubectl("apply", "-n", namespace, "-f", "-", stdin=rendered)
    kubectl("wait", "--for=condition=Established", "crd/imagejobs.minilab.dev")


def service_account_kubeconfig(namespace, account, directory):
    """A kubeconfig for the ServiceAccount `account` of `namespace` (a token for 2 hours),
    its namespace the default, written into `directory`: the chart's RBAC, as a pod has it."""
    token = kubectl("create", "token", account, "-n", namespace, "--duration=2h").strip()
    config = json.loads(kubectl("config", "view", "--raw", "-o", "json"))
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"] = [{"name": "bench", "context": {"cluster": config["clusters"][0]["name"], "user": account,
                                                          "namespace": namespace}}]
    config["current-context"] = "bench"
    path = Path(directory) / f"{account}.kubeconfig"
    path.write_text(json.dumps(config))
    return path


def create_jobs(kube, namespace, total, uploads, processed):
    """`total` upload jobs, all but the last UNFINISHED of them Succeeded (status written
    by the admin, as a finished job's would be); the unfinished ones are created last,
    so they are as young whatever the total, and poll S3 as often."""
    base = f"/apis/minilab.dev/v1alpha1/namespaces/{namespace}/imagejobs"
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))

    def one(i):
        name = f"upload-{i:06d}"
        kube.request("POST", base, {
            "apiVersion": "minilab.dev/v1alpha1", "kind": "ImageJob",
            "metadata": {"name": name, "labels": {"minilab.dev/origin": "upload"}},
            "spec": {"source": {"bucket": uploads, "key": f"uploads/{i:06d}", "uploadExpiresAt": expires},
                     "recipe": "web", "destination": {"bucket": processed, "prefix": f"{i:06d}/"}}})
        if i < total - UNFINISHED:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            kube.request("PATCH", f"{base}/{name}/status", {"status": {
                "phase": "Succeeded", "total": 1, "succeeded": 1, "failed": 0, "progress": "1/1",
                "startTime": now, "completionTime": now, "source": f"s3://{uploads}/uploads/{i:06d}",
                "conditions": [{"type": "Complete", "status": "True", "reason": "Processed", "lastTransitionTime": now}],
                "outputs": [{"name": "large", "key": f"{i:06d}/large.jpg", "width": 1024, "height": 768,
                             "bytes": 150000, "contentType": "image/jpeg"}]}},
                content_type="application/merge-patch+json")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(total)))


def metrics(url):
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r"^(minilab_operator_\w+)(\{[^}]*\})? (\S+)$", line)
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


def s3_requests(values):
    return sum(v for k, v in values.items() if k.startswith("minilab_operator_s3_requests_total"))


def rss_mib(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    field = lambda name: int(re.search(rf"^{name}:\s+(\d+) kB", status, re.M).group(1)) / 1024
    return field("VmRSS"), field("VmHWM")


def measure(total, kube, s3, sqs, token_dir):
    namespace = f"minilab-bench-{total}"  # the release too: its accounts are {namespace}-operator, ...
    install(namespace)
    uploads, processed = f"{namespace}-up", f"{namespace}-out"
    for bucket in (uploads, processed):
        s3.create_bucket(Bucket=bucket)
    queue = sqs.create_queue(QueueName=f"{namespace}-work")["QueueUrl"]
    started = time.time()
    create_jobs(kube, namespace, total, uploads, processed)
    print(f"  {total} ImageJobs created in {time.time() - started:.0f} s", file=sys.stderr)

    path = service_account_kubeconfig(namespace, f"{namespace}-operator", Path(token_dir))
    env = {**os.environ, "KUBECONFIG": str(path), "MINILAB_LOG": "warn", "AWS_ENDPOINT_URL": os.environ["MINILAB_LOCALSTACK_URL"],
           "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    operator = subprocess.Popen([os.environ["MINILAB_BIN"], "operator", "--watch-namespace", namespace,
                                 "--queue-url", queue, "--s3-path-style", "--metrics-listen", "127.0.0.1:0"],
                                env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = operator.stdout.readline()
        url = re.search(r"metrics on (http://[^,]+),", line).group(1)
        # Every job reconciled once (finished ones cost no S3 request), then a minute.
        deadline = time.time() + 600
        while metrics(url).get("minilab_operator_reconcile_seconds_count", 0) < total:
            if time.time() > deadline:
                raise RuntimeError("the operator did not reconcile every job within 10 minutes")
            time.sleep(1)
        synced = time.time() - started
        before = metrics(url)
        time.sleep(MINUTE)
        after = metrics(url)
        rss, peak = rss_mib(operator.pid)
        per_minute = s3_requests(after) - s3_requests(before)
        reconciles = after["minilab_operator_reconcile_seconds_count"] - before["minilab_operator_reconcile_seconds_count"]
        return {"jobs": total, "unfinished": UNFINISHED, "rss": rss, "peak": peak, "s3": per_minute,
                "s3_first": s3_requests(before), "reconciles": reconciles, "synced": synced}
    finally:
        operator.terminate()
        operator.wait(timeout=30)


def main(sizes):
    kube = Kube()
    endpoint = os.environ["MINILAB_LOCALSTACK_URL"]
    session = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    s3, sqs = boto3.client("s3", **session), boto3.client("sqs", **session)
    rows = []
    with tempfile.TemporaryDirectory() as token_dir:
        for size in sizes:
            print(f"measuring {size} ImageJobs ({UNFINISHED} unfinished)...", file=sys.stderr)
            rows.append(measure(size, kube, s3, sqs, token_dir))
    print(f"{'jobs':>7} {'unfinished':>10} {'RSS MiB':>8} {'peak MiB':>9} {'S3 req/min':>11} {'reconciles/min':>15} {'S3 req at start':>16}")
    for r in rows:
        print(f"{r['jobs']:>7} {r['unfinished']:>10} {r['rss']:>8.1f} {r['peak']:>9.1f} {r['s3']:>11.0f} {r['reconciles']:>15.0f} {r['s3_first']:>16.0f}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"ratio {last['jobs'] // first['jobs']}x jobs: RSS {last['rss'] / first['rss']:.2f}x, "
              f"S3 requests/min {last['s3'] / max(first['s3'], 1):.2f}x")


if __name__ == "__main__":
    main([int(a) for arg in sys.argv[1:] for a in arg.split()])
