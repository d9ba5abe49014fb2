"""Prints the chart's cluster-side objects (the CRD, ServiceAccounts and RBAC) as the
Helm engine renders them, for installing into the real API server in the kube tests:

    render.py RELEASE NAMESPACE [VALUES_JSON]

The Deployments are left out: no kubelet runs there, the tests run the components as
processes with the ServiceAccounts' tokens instead."""
import json
import sys
from pathlib import Path

import helm_python as hp
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "minilab"
KINDS = {("apiextensions.k8s.io/v1", "CustomResourceDefinition"), ("v1", "ServiceAccount")} | {
    ("rbac.authorization.k8s.io/v1", kind) for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")}
# The pods of the kube tests get credentials from their environment: no IAM roles.
BASE = {"awsIdentity": "none", "buckets": {"uploads": "uploads", "processed": "processed"},
        "queueUrl": "http://127.0.0.1/000000000000/events", "region": "us-east-1"}


def main(release, namespace, values="{}"):
    values = {**BASE, **json.loads(values)}
    out = hp.Chart.load(str(CHART)).render(values, name=release, namespace=namespace)
    docs = [doc for name, text in sorted(out.items()) if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc and (doc["apiVersion"], doc["kind"]) in KINDS]
    # The CRD first, so the API server knows the kind before anything names it.
    docs.sort(key=lambda doc: doc["kind"] != "CustomResourceDefinition")
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))


if __name__ == "__main__":
    main(*sys.argv[1:])
