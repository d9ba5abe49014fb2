"""The Helm chart rendered by the real Helm engine (helm-python-sdk) and validated
strictly with kubernetes-validate; run by ./tests/run (which installs both)."""
import os
import subprocess
import sys
import unittest
from pathlib import Path

import helm_python as hp
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "minilab"
KUBE_VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]
BASE = {"buckets": {"uploads": "photos-up", "processed": "photos-out"},
        "queueUrl": "https://sqs.eu-west-1.amazonaws.com/111122223333/minilab-events",
        "region": "eu-west-1"}


def render(values):
    chart = hp.Chart.load(str(CHART))
    out = chart.render(values, name="demo", namespace="media")
    docs = [doc for name, text in out.items() if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]
    return docs


def merged(*layers):
    result = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merged(result[key], value)
            else:
                result[key] = value
    return result


VALUE_SETS = {
    "defaults": BASE,
    "irsa-and-recipes": merged(BASE, {
        "api": {"roleArn": "arn:aws:iam::111122223333:role/minilab-api"},
        "worker": {"roleArn": "arn:aws:iam::111122223333:role/minilab-worker", "concurrency": 2},
        "operator": {"roleArn": "arn:aws:iam::111122223333:role/minilab-operator"},
        "recipes": "recipes:\n  - {name: tiny, description: d, outputs: [{name: t, format: png}]}\n",
    }),
    "no-tracking": merged(BASE, {"api": {"kubeTracking": False}}),
}


class ChartTest(unittest.TestCase):
    def test_lint_has_no_errors(self):
        result = hp.lint(str(CHART), BASE, strict=True)
        self.assertEqual(result["total_charts_linted"], 1)
        # Helm's severities: 1 info, 2 warning, 3 error.
        errors = [m for m in result["messages"] if m["severity"] >= 3] + list(result["errors"])
        self.assertEqual(errors, [], result)

    def test_every_object_validates_strictly(self):
        for name, values in VALUE_SETS.items():
            for doc in render(values):
                for version in KUBE_VERSIONS:
                    with self.subTest(values=name, kind=doc["kind"], name=doc["metadata"]["name"], version=version):
                        kubernetes_validate.validate(doc, version, strict=True)

    def test_containers_are_restricted(self):
        for doc in render(VALUE_SETS["irsa-and-recipes"]):
            if doc["kind"] != "Deployment":
                continue
            pod = doc["spec"]["template"]["spec"]
            self.assertTrue(pod["securityContext"]["runAsNonRoot"])
            self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
            for container in pod["containers"]:
                context = container["securityContext"]
                self.assertTrue(context["readOnlyRootFilesystem"], doc["metadata"]["name"])
                self.assertFalse(context["allowPrivilegeEscalation"])
                self.assertEqual(context["capabilities"]["drop"], ["ALL"])
                self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/livez")
                self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/readyz")
            if doc["metadata"]["name"].endswith("-worker"):
                drain = next(e["value"] for e in pod["containers"][0]["env"] if e["name"] == "MINILAB_DRAIN_TIMEOUT")
                self.assertGreater(pod["terminationGracePeriodSeconds"], int(drain))

    def test_rbac_is_least_privilege(self):
        docs = render(VALUE_SETS["defaults"])
        rules = {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] in ("Role", "ClusterRole")}
        for name, role_rules in rules.items():
            for rule in role_rules:
                for field in ("apiGroups", "resources", "verbs"):
                    self.assertNotIn("*", rule[field], f"{name}: {rule}")
        self.assertEqual(rules["demo-minilab-api"], [{"apiGroups": ["minilab.dev"], "resources": ["imagejobs"], "verbs": ["create"]}])
        bound = {s["name"] for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in d["subjects"]}
        self.assertNotIn("demo-minilab-worker", bound, "the worker gets no Kubernetes permissions")
        no_tracking = render(VALUE_SETS["no-tracking"])
        self.assertNotIn("demo-minilab-api", {d["metadata"]["name"] for d in no_tracking if d["kind"] == "Role"})

    def test_irsa_annotations_and_recipes_checksum(self):
        docs = render(VALUE_SETS["irsa-and-recipes"])
        accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
        for component in ("api", "worker", "operator"):
            self.assertEqual(accounts[f"demo-minilab-{component}"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
                             f"arn:aws:iam::111122223333:role/minilab-{component}")
        def checksums(docs):
            return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["minilab.dev/recipes-checksum"]
                    for d in docs if d["kind"] == "Deployment"}
        changed = render(merged(VALUE_SETS["irsa-and-recipes"], {"recipes": "recipes: []\n"}))
        before, after = checksums(docs), checksums(changed)
        self.assertEqual(before.keys(), after.keys())
        for name in before:
            self.assertNotEqual(before[name], after[name], f"{name} must roll when the recipes change")
        config = next(d for d in docs if d["kind"] == "ConfigMap")
        self.assertIn("name: tiny", config["data"]["recipes.yaml"])

    def test_the_schema_rejects_unknown_keys_and_wrong_types(self):
        for bad, where in [
            ({"bukets": {"uploads": "x"}}, "additional properties 'bukets'"),
            ({"api": {"replicas": "two"}}, "/api/replicas"),
            ({"worker": {"hpa": {"maxReplica": 3}}}, "additional properties 'maxReplica'"),
            ({"worker": {"roleArn": "minilab-worker"}}, "/worker/roleArn"),
            ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ]:
            with self.subTest(values=bad):
                with self.assertRaises(hp.HelmValuesError) as refused:
                    render(merged(BASE, bad))
                self.assertIn(where, str(refused.exception))

    def test_the_charts_crd_is_what_minilab_crd_prints(self):
        binary = os.environ.get("MINILAB_BIN", str(Path(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/minilab-target")) / "debug" / "minilab"))
        printed = subprocess.run([binary, "crd"], check=True, capture_output=True, text=True).stdout
        self.assertEqual((CHART / "crds" / "imagejobs.yaml").read_text(), printed)
        crds = hp.Chart.load(str(CHART)).crds
        self.assertTrue(any("imagejobs.minilab.dev" in str(c) for c in crds), crds)


if __name__ == "__main__":
    sys.exit(unittest.main())
