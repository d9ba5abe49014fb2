"""The CRDs of tests/data/crds as the tests' Kubernetes 1.20 (the bare API server and
the node) takes them, for the chart tests and, printed as YAML, for the node tests:

    crds.py > crds.yaml    then    kubectl apply --server-side --force-conflicts --validate=false -f crds.yaml"""
import sys
from pathlib import Path

import yaml

CRD_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "crds"


def crds_for_1_20():
    """The CRDs of tests/data/crds as kube-apiserver 1.20 accepts them: without
    CEL rules and list-map markers (1.25+ and server-side-apply merge hints, neither a
    check on the objects' shape), without `default: ""`, which 1.20 reads as null, and
    with strings nullable: 1.20's server-side apply (Helm's) turns an empty string of a
    custom resource into null, which newer servers keep as "" (see test_chart.for_1_20)."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()
                    if k not in ("x-kubernetes-validations", "x-kubernetes-list-map-keys", "x-kubernetes-list-type")
                    and not (k == "default" and v == "")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    def nullable_strings(schema):
        if schema.get("type") == "string":
            schema["nullable"] = True
        for child in [*schema.get("properties", {}).values(), schema.get("items"), schema.get("additionalProperties")]:
            if isinstance(child, dict):
                nullable_strings(child)

    crds = [strip(yaml.safe_load(path.read_text())) for path in sorted(CRD_DIR.glob("*.yaml"))]
    for crd in crds:
        if crd["spec"]["group"].endswith(".services.k8s.aws"):  # the kinds Helm applies here with ""
            for version in crd["spec"]["versions"]:
                nullable_strings(version["schema"]["openAPIV3Schema"])
    return crds


if __name__ == "__main__":
    sys.stdout.write(yaml.safe_dump_all(crds_for_1_20()))
