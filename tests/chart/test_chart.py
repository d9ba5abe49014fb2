"""The Helm chart rendered by the real Helm engine (helm-python-sdk) and validated
strictly with kubernetes-validate; run by ./tests/run (which installs both)."""
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import unittest
from pathlib import Path

import dockerfile
import helm_python as hp
import jsonschema
import kubernetes_validate
import yaml

from crds import crds_for_1_20

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "minilab"
KUBE_VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]
MINILAB_BIN = os.environ.get("MINILAB_BIN", str(Path(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/minilab-target")) / "debug" / "minilab"))
# Resources made by the user, IRSA roles included (each one required without ACK).
BASE = {"buckets": {"uploads": "photos-up", "processed": "photos-out"},
        "queueUrl": "https://sqs.eu-west-1.amazonaws.com/111122223333/minilab-events",
        "region": "eu-west-1",
        **{component: {"roleArn": f"arn:aws:iam::111122223333:role/minilab-{component}"}
           for component in ("api", "worker", "operator")}}


CRD_DIR = ROOT / "tests" / "data" / "crds"


def strict_schema(schema):
    """A CRD's openAPIV3Schema as a JSON Schema that, like `kubectl apply
    --validate=strict`, refuses fields the CRD does not declare."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict_schema(sub) for sub in value]
        elif not key.startswith("x-kubernetes-"):
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_crds():
    """(apiVersion, kind) → a validator for every CRD in tests/data/crds."""
    validators = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            schema = strict_schema(version["schema"]["openAPIV3Schema"])
            schema.setdefault("properties", {})["metadata"] = {
                "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
            schema["properties"]["apiVersion"] = {"type": "string"}
            schema["properties"]["kind"] = {"type": "string"}
            schema["additionalProperties"] = False
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            validators[key] = jsonschema.Draft4Validator(schema)
    return validators


CRDS = load_crds()
# (apiVersion, kind) → the CRD's plural, as RBAC names it.
CRD_PLURALS = {(f"{crd['spec']['group']}/{v['name']}", crd["spec"]["names"]["kind"]): crd["spec"]["names"]["plural"]
               for crd in (yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.yaml")))
               for v in crd["spec"]["versions"]}

# The ACK CloudWatch controller's MetricAlarm, for the fields the chart sets: written
# from its API reference (the CRD is not among tests/data/crds). Its spelling is
# ACK's (`oKActions`); an unknown field is an error, as the server's pruning would
# silently drop it.
METRIC_ALARM = jsonschema.Draft4Validator({
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {"spec": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
        **{key: {"type": "string"} for key in (
            "name", "alarmDescription", "namespace", "metricName", "statistic", "comparisonOperator", "treatMissingData")},
        **{key: {"type": "integer"} for key in ("period", "evaluationPeriods", "datapointsToAlarm")},
        "threshold": {"type": "number"},
        "actionsEnabled": {"type": "boolean"},
        **{key: {"type": "array", "items": {"type": "string"}} for key in ("alarmActions", "oKActions")},
        "dimensions": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                  "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}},
    }}},
})
CRDS[("cloudwatch.services.k8s.aws/v1alpha1", "MetricAlarm")] = METRIC_ALARM


def validate(doc, version):
    """Kubernetes kinds strictly by kubernetes-validate; custom kinds by their CRDs."""
    custom = CRDS.get((doc["apiVersion"], doc["kind"]))
    if custom:
        errors = sorted(custom.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            raise AssertionError("; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors))
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def render(values, namespace="media"):
    chart = hp.Chart.load(str(CHART))
    out = chart.render(values, name="demo", namespace=namespace)
    docs = [doc for name, text in out.items() if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]
    return docs


def notes(values):
    return hp.Chart.load(str(CHART)).render(values, name="demo", namespace="media")["minilab/templates/NOTES.txt"]


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
        "webhooks": {"allow": ["https://hooks.example.com/minilab/"], "secretName": "hook-signing"},
    }),
    "no-tracking": merged(BASE, {"api": {"kubeTracking": False}}),
    "keda": merged(BASE, {
        "keda": {"enabled": True},
        "worker": {"roleArn": "arn:aws:iam::111122223333:role/minilab-worker"},
    }),
    "ingress-netpol-monitor": merged(BASE, {
        "ingress": {"enabled": True, "host": "api.photos.example.com",
                    "certificateArn": "arn:aws:acm:eu-west-1:111122223333:certificate/abc"},
        "networkPolicy": {"enabled": True, "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}, "dashboard": True},
        "api": {"serveWeb": True},
    }),
    "aws": merged({k: v for k, v in BASE.items() if k not in ("queueUrl", "api", "worker", "operator")}, {
        "buckets": {"site": "photos-site"},
        "domain": "photos.example.com",
        "certificateArn": "arn:aws:acm:us-east-1:111122223333:certificate/site",
        "ingress": {"enabled": True, "host": "api.photos.example.com",
                    "certificateArn": "arn:aws:acm:eu-west-1:111122223333:certificate/api",
                    "prefixListIds": ["pl-4fa04526"]},
        "keda": {"enabled": True},
        "ack": {"enabled": True, "accountId": "111122223333",
                "oidcProvider": "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B7",
                "batchSources": ["archive"],
                "cloudfront": {"enabled": True, "originAccessControlId": "E2QWRUHEXAMPLE",
                               "distributionDomainName": "d111111abcdef8.cloudfront.net"},
                "route53": {"enabled": True, "hostedZoneId": "Z0123456789ABC", "zoneName": "example.com"}},
    }),
}
VALUE_SETS["pod-identity-and-placement"] = merged(VALUE_SETS["aws"], {
    "awsIdentity": "podIdentity",
    "ack": {"oidcProvider": "", "clusterName": "media-prod"},
    "keda": {"operatorRoleArn": "arn:aws:iam::111122223333:role/keda-operator"},
    "nodeSelector": {"pool": "general"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "media", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 50, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                          "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "minilab"}}}}]}},
    "priorityClassName": "media-high",
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "podLabels": {"team": "media", "app.kubernetes.io/component": "not-this"},
    "podAnnotations": {"example.com/owner": "media"},
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"}],
    "worker": {"nodeSelector": {"pool": "compute"}, "extraEnv": [{"name": "RUST_LOG", "value": "info"}]},
    # Images at stable addresses, through the Ingress and CloudFront.
    "api": {"serveImages": True},
})
ACCOUNT = "111122223333"


def flat_png(width, height):
    """A 16-bit RGBA PNG (a horizontal gradient) that compresses to almost nothing: the
    most memory per pixel a decoder may need, in a file far below the upload limit."""
    import struct
    import zlib
    row = b"".join((x * 65535 // (width - 1)).to_bytes(2, "big") * 4 for x in range(width))
    z = zlib.compressobj(6)
    up = b"\2" + bytes(len(row))  # filter Up: every later row equals the first
    body = z.compress(b"\0" + row) + b"".join(z.compress(up) for _ in range(height - 1)) + z.flush()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def iam_allows(statements, action, resource):
    """Whether Allow statements (no Deny, no conditions here) grant `action` on
    `resource`, with ARN wildcards as IAM reads them."""
    import fnmatch
    for st in statements:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        assert "Condition" not in st, st
        if action in actions and any(fnmatch.fnmatchcase(resource, r) for r in resources):
            return True
    return False


def by_kind(docs, kind, group=""):
    """Rendered objects of one kind (of one API group: IAM and RBAC both have Role)."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind and d["apiVersion"].startswith(group)}


class ChartTest(unittest.TestCase):
    def test_lint_has_no_errors(self):
        for name, values in VALUE_SETS.items():
            with self.subTest(values=name):
                result = hp.lint(str(CHART), values, strict=True)
                self.assertEqual(result["total_charts_linted"], 1)
                # Helm's severities: 1 info, 2 warning, 3 error.
                errors = [m for m in result["messages"] if m["severity"] >= 3] + list(result["errors"])
                self.assertEqual(errors, [], result)

    def test_every_object_validates_strictly(self):
        for name, values in VALUE_SETS.items():
            for doc in render(values):
                for version in KUBE_VERSIONS:
                    with self.subTest(values=name, kind=doc["kind"], name=doc["metadata"]["name"], version=version):
                        validate(doc, version)

    def test_containers_are_restricted(self):
        workloads = [(name, d) for name, values in VALUE_SETS.items() for d in render(values)
                     if d["kind"] in ("Deployment", "Job")]
        self.assertIn("Job", {d["kind"] for _, d in workloads})
        for values, doc in workloads:
            pod = doc["spec"]["template"]["spec"]
            where = f"{values}: {doc['metadata']['name']}"
            self.assertTrue(pod["securityContext"]["runAsNonRoot"], where)
            self.assertGreater(pod["securityContext"]["runAsUser"], 0, where)
            self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
            for container in pod["containers"]:
                context = container["securityContext"]
                self.assertTrue(context["readOnlyRootFilesystem"], where)
                self.assertFalse(context["allowPrivilegeEscalation"], where)
                self.assertEqual(context["capabilities"]["drop"], ["ALL"], where)
                if doc["kind"] == "Deployment":
                    self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/livez")
                    self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/readyz")
            if doc["metadata"]["name"].endswith("-worker"):
                drain = next(e["value"] for e in pod["containers"][0]["env"] if e["name"] == "MINILAB_DRAIN_TIMEOUT")
                self.assertGreater(pod["terminationGracePeriodSeconds"], int(drain))

    def test_every_port_names_its_protocol(self):
        # Helm 4 installs by server-side apply, whose port lists are keyed by port and
        # protocol; servers before 1.22 do not default the protocol and refuse the
        # apply (seen on the tests' 1.20 node).
        ports = []
        for name, values in VALUE_SETS.items():
            for doc in render(values):
                spec = doc.get("spec", {})
                if doc["kind"] == "Service":
                    ports += [(name, doc["metadata"]["name"], p) for p in spec["ports"]]
                pod = spec.get("template", {}).get("spec", {})
                for container in pod.get("containers", []):
                    ports += [(name, doc["metadata"]["name"], p) for p in container.get("ports", [])]
        self.assertGreater(len(ports), 10)
        for where in ports:
            self.assertEqual(where[2].get("protocol"), "TCP", where)

    def test_rbac_is_least_privilege(self):
        docs = render(VALUE_SETS["defaults"])
        rules = {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] in ("Role", "ClusterRole") and d["apiVersion"].startswith("rbac.")}
        for name, role_rules in rules.items():
            for rule in role_rules:
                for field in ("apiGroups", "resources", "verbs"):
                    self.assertNotIn("*", rule[field], f"{name}: {rule}")
        self.assertEqual(rules["demo-minilab-api"], [{"apiGroups": ["minilab.dev"], "resources": ["imagejobs"], "verbs": ["create", "delete"]}])
        bound = {s["name"] for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in d["subjects"]}
        self.assertNotIn("demo-minilab-worker", bound, "the worker gets no Kubernetes permissions")
        no_tracking = render(VALUE_SETS["no-tracking"])
        self.assertNotIn("demo-minilab-api", {d["metadata"]["name"] for d in no_tracking if d["kind"] == "Role"})

    def test_the_operator_reads_every_ack_object_the_chart_makes(self):
        # For the PrometheusRule's Terminal/NotSynced alerts: the operator is told every
        # ACK kind the chart renders, selects this release's objects, and may read them.
        everything = merged(VALUE_SETS["aws"], {"ack": {"cloudwatch": {"enabled": True}}})
        for values in (everything, merged(everything, {"queueUrl": "https://sqs.eu-west-1.amazonaws.com/444455556666/q",
                                                       "ack": {"manage": {"queues": False, "buckets": False}}})):
            docs = render(values)
            made = {(d["apiVersion"], d["kind"]) for d in docs if d["apiVersion"].endswith(".services.k8s.aws/v1alpha1")}
            operator = by_kind(docs, "Deployment")["demo-minilab-operator"]["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in operator["env"]}
            told = {tuple(k.rsplit("/", 1)) for k in env["MINILAB_AWS_RESOURCES"].split(",")}
            self.assertEqual(told, made)
            self.assertEqual(env["MINILAB_AWS_RESOURCES_SELECTOR"], "app.kubernetes.io/instance=demo")
            for doc in docs:
                if (doc["apiVersion"], doc["kind"]) in made:
                    self.assertEqual(doc["metadata"]["labels"]["app.kubernetes.io/instance"], "demo", doc["metadata"]["name"])
            [own] = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "demo-minilab-operator-own"]
            readable = {(group, resource) for rule in own["rules"] if rule["verbs"] == ["get", "list", "watch"]
                        for group in rule["apiGroups"] for resource in rule["resources"]}
            for api_version, kind in made:
                plural = CRD_PLURALS.get((api_version, kind), kind.lower() + "s")
                self.assertIn((api_version.split("/")[0], plural), readable, kind)
            [binding] = [d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "demo-minilab-operator-own"]
            self.assertEqual(binding["subjects"][0]["name"], "demo-minilab-operator")
        without = by_kind(render(VALUE_SETS["defaults"]), "Deployment")["demo-minilab-operator"]["spec"]["template"]["spec"]["containers"][0]
        self.assertNotIn("MINILAB_AWS_RESOURCES", {e["name"] for e in without["env"]})
        # The alerts on what the operator counts come with ACK.
        monitored = merged(everything, {"serviceMonitor": {"enabled": True}, "networkPolicy": {"metricsFrom": [{"podSelector": {}}]}})
        [rule] = by_kind(render(monitored), "PrometheusRule", "monitoring.coreos.com/").values()
        alerts = {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}
        self.assertIn('state="terminal"', alerts["MinilabAwsResourceTerminal"])
        self.assertIn("MinilabAwsResourceNotSynced", alerts)

    def test_the_operator_watches_its_own_namespace_unless_told_otherwise(self):
        # Two releases in one cluster must never both reconcile a job: by default the
        # operator gets a Role in the release namespace and is told to watch only it.
        def operator(values):
            docs = render(values)
            rbac = {(d["kind"], d["metadata"]["name"]) for d in docs if d["apiVersion"].startswith("rbac.")}
            pod = by_kind(docs, "Deployment")["demo-minilab-operator"]["spec"]["template"]["spec"]
            env = {e["name"]: e for e in pod["containers"][0]["env"]}
            return rbac, env.get("MINILAB_WATCH_NAMESPACE")
        rbac, watch = operator(VALUE_SETS["defaults"])
        self.assertIn(("Role", "demo-minilab-operator"), rbac)
        self.assertIn(("RoleBinding", "demo-minilab-operator"), rbac)
        self.assertEqual({kind for kind, _ in rbac} & {"ClusterRole", "ClusterRoleBinding"}, set())
        self.assertEqual(watch["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace")
        rbac, watch = operator(merged(VALUE_SETS["defaults"], {"operator": {"watchAllNamespaces": True}}))
        self.assertIn(("ClusterRole", "demo-minilab-operator"), rbac)
        self.assertIn(("ClusterRoleBinding", "demo-minilab-operator"), rbac)
        self.assertNotIn(("Role", "demo-minilab-operator"), rbac)
        self.assertIsNone(watch)

    def test_irsa_annotations_and_recipes_checksum(self):
        docs = render(VALUE_SETS["irsa-and-recipes"])
        accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
        for component in ("api", "worker", "operator"):
            self.assertEqual(accounts[f"demo-minilab-{component}"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
                             f"arn:aws:iam::111122223333:role/minilab-{component}")
        def checksums(docs):
            return {d["metadata"]["name"]: d["spec"]["template"]["metadata"].get("annotations", {}).get("minilab.dev/recipes-checksum")
                    for d in docs if d["kind"] == "Deployment"}
        changed = render(merged(VALUE_SETS["irsa-and-recipes"], {"recipes": "recipes: []\n"}))
        before, after = checksums(docs), checksums(changed)
        self.assertEqual(before.keys(), after.keys())
        for name in before:
            self.assertNotEqual(before[name], after[name], f"{name} must roll when the recipes change")
        config = next(d for d in docs if d["kind"] == "ConfigMap")
        self.assertIn("name: tiny", config["data"]["recipes.yaml"])
        # The api, the worker and the operator (which checks recipe names) read it from
        # the mounted ConfigMap; without recipes nothing is mounted.
        for values, mounted in ((docs, {"demo-minilab-api", "demo-minilab-worker", "demo-minilab-operator"}),
                                (render(BASE), set())):
            readers = set()
            for name, deployment in by_kind(values, "Deployment").items():
                pod = deployment["spec"]["template"]["spec"]
                mounts = pod["containers"][0].get("volumeMounts") or []
                env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
                if mounts:
                    [mount] = mounts
                    [volume] = pod["volumes"]
                    self.assertEqual(volume["configMap"]["name"], config["metadata"]["name"])
                    self.assertEqual(env["MINILAB_RECIPES"], mount["mountPath"] + "/recipes.yaml")
                    readers.add(name)
                else:
                    self.assertNotIn("MINILAB_RECIPES", env)
            self.assertEqual(readers, mounted)

    def test_custom_kinds_are_checked_against_their_crds(self):
        self.assertIn(("keda.sh/v1alpha1", "ScaledObject"), CRDS)
        scaled = next(d for d in render(VALUE_SETS["keda"]) if d["kind"] == "ScaledObject")
        validate(scaled, KUBE_VERSIONS[0])
        for broken in (merged(scaled, {"spec": {"minReplicas": 0}}),
                       merged(scaled, {"spec": {"triggers": [{"type": "aws-sqs-queue", "metadata": {"queueLength": 5}}]}}),
                       merged(scaled, {"spec": {"scaleTargetRef": {"nam": "x"}}})):
            with self.assertRaises(AssertionError):
                validate(broken, KUBE_VERSIONS[0])
        # A kind with neither a CRD here nor a Kubernetes schema is an error, not a pass.
        with self.assertRaises(kubernetes_validate.SchemaNotFoundError):
            validate({"apiVersion": "example.com/v1", "kind": "Unknown", "metadata": {"name": "x"}}, KUBE_VERSIONS[0])

    def test_keda_scales_the_workers_on_the_queue_instead_of_the_hpa(self):
        docs = render(VALUE_SETS["keda"])
        kinds = [d["kind"] for d in docs]
        self.assertNotIn("HorizontalPodAutoscaler", kinds)
        self.assertIn("HorizontalPodAutoscaler", [d["kind"] for d in render(BASE)])
        scaled = next(d for d in docs if d["kind"] == "ScaledObject")
        self.assertEqual(scaled["spec"]["scaleTargetRef"]["name"], "demo-minilab-worker")
        self.assertEqual(scaled["spec"]["minReplicaCount"], 0)
        [trigger] = scaled["spec"]["triggers"]
        self.assertEqual(trigger["type"], "aws-sqs-queue")
        self.assertEqual(trigger["metadata"]["queueURL"], BASE["queueUrl"])
        self.assertEqual(trigger["metadata"]["awsRegion"], "eu-west-1")
        self.assertEqual(trigger["metadata"]["scaleOnInFlight"], "true")
        auth = next(d for d in docs if d["kind"] == "TriggerAuthentication")
        self.assertEqual(trigger["authenticationRef"]["name"], auth["metadata"]["name"])
        self.assertEqual(auth["spec"]["podIdentity"], {"provider": "aws", "identityOwner": "workload"})
        role = "arn:aws:iam::111122223333:role/keda-sqs"
        auth = next(d for d in render(merged(VALUE_SETS["keda"], {"keda": {"roleArn": role}}))
                    if d["kind"] == "TriggerAuthentication")
        self.assertEqual(auth["spec"]["podIdentity"], {"provider": "aws", "roleArn": role})
        # Blind to the queue, KEDA keeps the fallback's workers instead of none.
        self.assertEqual(scaled["spec"]["fallback"], {"failureThreshold": 3, "replicas": 2})
        # With no role to read the queue as, KEDA could never scale: refused, not rendered.
        with self.assertRaises(Exception) as refused:
            render(merged(VALUE_SETS["keda"], {"worker": {"roleArn": ""}}))
        self.assertIn("keda.enabled needs an AWS identity", str(refused.exception))
        # NOTES says what KEDA needs for the identity the chart chose.
        self.assertIn("podIdentity.aws.irsa.enabled=true", notes(VALUE_SETS["keda"]))
        self.assertIn("its trust policy must let KEDA in", notes(VALUE_SETS["keda"]))
        self.assertIn("which trusts system:serviceaccount:keda:keda-operator", notes(VALUE_SETS["aws"]))

    def test_worker_slots_follow_the_cpu_request_and_size_the_memory_limit(self):
        # A worker decodes as many images at once as it has slots; with the node's core
        # count (the binary's default) one pod on a 32-core node would hold 32 decodes
        # against one memory limit. Slots come from the CPU request, and the memory
        # limit from the slots times the most one image may hold.
        def worker(values):
            docs = render(values)
            container = by_kind(docs, "Deployment")["demo-minilab-worker"]["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e for e in container["env"]}
            scaled = [d["spec"]["triggers"][0]["metadata"]["queueLength"] for d in docs if d["kind"] == "ScaledObject"]
            return container, env, scaled
        per_image = 100_000_000 * 12 // 2**20 + 97
        container, env, _ = worker(BASE)
        self.assertEqual(env["MINILAB_CONCURRENCY"]["valueFrom"]["resourceFieldRef"],
                         {"containerName": container["name"], "resource": "requests.cpu", "divisor": "1"})
        self.assertEqual(env["MINILAB_MAX_PIXELS"]["value"], "100000000")
        for cpu, slots in (("1000m", 1), ("2500m", 3), (2, 2), ("0.5", 1), ("250m", 1)):
            with self.subTest(cpu=cpu):
                container, _, scaled = worker(merged(VALUE_SETS["keda"], {"worker": {"resources": {"requests": {"cpu": cpu}}}}))
                self.assertEqual(container["resources"]["limits"]["memory"], f"{128 + slots * per_image}Mi")
                # Requested whole: a node never holds more images than it has memory for.
                self.assertEqual(container["resources"]["requests"]["memory"], f"{128 + slots * per_image}Mi")
                self.assertEqual(container["resources"]["requests"]["cpu"], cpu)
                self.assertEqual(scaled, [str(slots)], "KEDA aims at one message per slot")
        container, env, scaled = worker(merged(VALUE_SETS["keda"], {
            "worker": {"concurrency": 3, "maxPixels": 50_000_000, "memoryBaseMi": 200}, "keda": {"queueLength": 5}}))
        self.assertEqual(env["MINILAB_CONCURRENCY"], {"name": "MINILAB_CONCURRENCY", "value": "3"})
        self.assertEqual(container["resources"]["limits"]["memory"], f"{200 + 3 * (50_000_000 * 12 // 2**20 + 97)}Mi")
        self.assertEqual(scaled, ["5"])
        container, _, _ = worker(merged(BASE, {"worker": {"resources": {"limits": {"memory": "4Gi", "cpu": "2"}}}}))
        self.assertEqual(container["resources"]["limits"], {"memory": "4Gi", "cpu": "2"})
        self.assertEqual(container["resources"]["requests"], {"memory": "4Gi", "cpu": "1000m"})
        self.assertEqual(yaml.safe_load((CHART / "values.yaml").read_text())["worker"]["resources"]["limits"], {},
                         "the chart's values leave the limit to the arithmetic")
        with self.assertRaises(hp.HelmValuesError):
            render(merged(BASE, {"worker": {"resources": {"requests": {"cpu": "two"}}}}))

    def test_the_per_image_memory_bound_holds_for_the_worst_image_allowed(self):
        # The largest image the default limits allow, in its most expensive form
        # (16-bit RGBA), through the real pipeline: its peak memory stays inside what
        # the chart gives one slot (memoryBaseMi + the per-image bound).
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "worst.png"
            source.write_bytes(flat_png(10_000, 10_000))
            child = subprocess.Popen([MINILAB_BIN, "process", "--recipe", "large", "-o", tmp, str(source)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(child.pid, 0)  # reaped here, for its peak memory
            child.returncode = os.waitstatus_to_exitcode(status)
            with child.stderr:
                self.assertEqual(child.returncode, 0, child.stderr.read())
        peak_mib = usage.ru_maxrss / 1024
        limit = by_kind(render(BASE), "Deployment")["demo-minilab-worker"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        self.assertLess(peak_mib, int(limit.removesuffix("Mi")), f"peak {peak_mib:.0f} MiB")
        print(f"\n  worst image (100 MP, 16-bit RGBA): peak {peak_mib:.0f} MiB, one slot's limit {limit}", file=sys.stderr)

    def test_the_ingress_the_network_policies_and_the_service_monitor(self):
        docs = render(VALUE_SETS["ingress-netpol-monitor"])
        ingress = next(d for d in docs if d["kind"] == "Ingress")
        notes = ingress["metadata"]["annotations"]
        self.assertEqual(ingress["spec"]["ingressClassName"], "alb")
        self.assertEqual(notes["external-dns.alpha.kubernetes.io/hostname"], "api.photos.example.com")
        self.assertEqual(notes["alb.ingress.kubernetes.io/target-type"], "ip")
        self.assertTrue(notes["alb.ingress.kubernetes.io/certificate-arn"].startswith("arn:aws:acm:"))
        self.assertEqual(notes["alb.ingress.kubernetes.io/ssl-policy"], "ELBSecurityPolicy-TLS13-1-2-2021-06")
        self.assertEqual(notes["alb.ingress.kubernetes.io/target-group-attributes"], "deregistration_delay.timeout_seconds=30")
        self.assertNotIn("alb.ingress.kubernetes.io/security-group-prefix-lists", notes)
        [rule] = ingress["spec"]["rules"]
        self.assertEqual(rule["host"], "api.photos.example.com")
        services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
        # Only the API and the page's files are routed: never the probes or /metrics.
        paths = {(p["path"], p["pathType"]) for p in rule["http"]["paths"]}
        web = ROOT / "web"
        page = {("/", "Exact")} | {
            (f"/{f.relative_to(web)}", "Exact") for f in web.rglob("*") if f.suffix in {".html", ".js", ".css"}
        }
        self.assertEqual(paths, {("/api/", "Prefix")} | page)
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            self.assertEqual(backend["port"]["name"], "http")
            self.assertIn("http", [p["name"] for p in services[backend["name"]]["spec"]["ports"]])
        without_page = next(d for d in render(merged(VALUE_SETS["ingress-netpol-monitor"], {"api": {"serveWeb": False}}))
                            if d["kind"] == "Ingress")
        self.assertEqual([p["path"] for p in without_page["spec"]["rules"][0]["http"]["paths"]], ["/api/"])
        # Every component's metrics on their own port, which the API's HTTP port is not.
        deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
        for name, deployment in deployments.items():
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            env = {e["name"]: e.get("value") for e in container["env"]}
            self.assertEqual(env["MINILAB_METRICS_LISTEN"], f"0.0.0.0:{ports['metrics']}", name)
            if name.endswith("-api"):
                self.assertNotEqual(ports["http"], ports["metrics"])
        # The API serves on for its shutdown delay after SIGTERM; the grace period
        # covers the delay and the longest request.
        api = deployments["demo-minilab-api"]["spec"]["template"]["spec"]
        delay = int(next(e["value"] for e in api["containers"][0]["env"] if e["name"] == "MINILAB_SHUTDOWN_DELAY"))
        self.assertEqual(delay, 15)
        self.assertGreaterEqual(api["terminationGracePeriodSeconds"], delay + 30)

        policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
        self.assertEqual(sorted(policies), ["demo-minilab-api", "demo-minilab-operator", "demo-minilab-worker"])
        scrapers = VALUE_SETS["ingress-netpol-monitor"]["networkPolicy"]["metricsFrom"]
        for name, policy in policies.items():
            pod = deployments[name]["spec"]["template"]
            self.assertEqual(policy["spec"]["podSelector"]["matchLabels"], pod["metadata"]["labels"])
            opened = {}
            for rule in policy["spec"]["ingress"]:
                for port in rule["ports"]:
                    opened.setdefault(port["port"], []).append(rule.get("from"))
            ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
            self.assertEqual(set(opened), set(ports.values()))
            # Metrics only to the scrapers; the API's and the operator's also to the
            # workers' word of changes.
            workers = [{"podSelector": {"matchLabels": deployments["demo-minilab-worker"]["spec"]["selector"]["matchLabels"]}}]
            expected = [scrapers] if name == "demo-minilab-worker" else [scrapers, workers]
            self.assertEqual(opened[ports["metrics"]], expected, name)
            if "http" in ports:
                self.assertEqual(opened[ports["http"]], [None], "the API's HTTP from anywhere")

        monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
        self.assertEqual(monitor["metadata"]["labels"]["release"], "prometheus")
        selected = [s for s in services.values()
                    if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        self.assertEqual(sorted(s["metadata"]["name"] for s in selected),
                         ["demo-minilab-api", "demo-minilab-operator-metrics", "demo-minilab-worker-metrics"])
        self.assertEqual([(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]], [("metrics", "/metrics")])
        for service in selected:
            self.assertIn("metrics", [p["name"] for p in service["spec"]["ports"]], service["metadata"]["name"])
        with self.assertRaises(Exception) as refused:
            render(merged(BASE, {"ingress": {"enabled": True}}))
        self.assertIn("ingress.enabled needs ingress.host", str(refused.exception))

    def test_network_policies_are_on_and_keep_pods_from_the_instance_metadata(self):
        import ipaddress
        imds = [ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")]

        def reaches(peer, address):
            block = peer.get("ipBlock")
            if block is None:
                return False  # a pod or namespace selector: never the host's metadata
            network = ipaddress.ip_network(block["cidr"])
            return (address.version == network.version and address in network
                    and not any(address in ipaddress.ip_network(e) for e in block.get("except", [])))

        def egress_ports(policy):
            return {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}

        values = merged(BASE, {"webhooks": {"allow": ["https://hooks.example/minilab/", "http://10.1.2.3:8081/in/"],
                                            "secretName": "hooks"}})
        for name, values in [("defaults", BASE), ("webhooks", values),
                             ("pod identity", VALUE_SETS["pod-identity-and-placement"])]:
            docs = render(values)
            policies = {d["metadata"]["name"].removeprefix("demo-minilab-"): d
                        for d in docs if d["kind"] == "NetworkPolicy"}
            self.assertEqual(sorted(policies), ["api", "operator", "worker"], name)
            for component, policy in policies.items():
                self.assertEqual(policy["spec"]["policyTypes"], ["Ingress", "Egress"])
                for rule in policy["spec"]["egress"]:
                    for peer in rule.get("to", []):
                        for address in imds:
                            self.assertFalse(reaches(peer, address), f"{name}: {component} reaches {address}: {rule}")
                # No scrapers named: metrics open to nobody but the workers' word.
                for rule in policy["spec"]["ingress"] or []:  # none: nothing may connect
                    if any(p["port"] == 9090 for p in rule["ports"]):
                        self.assertIn(component, ("api", "operator"), f"{name}: {rule}")
                        self.assertEqual([list(peer) for peer in rule["from"]], [["podSelector"]])
            self.assertLessEqual({53, 443}, egress_ports(policies["worker"]))
            extra = egress_ports(policies["worker"]) - {53, 443, 9090}
            if name == "pod identity":
                self.assertEqual(extra, {80}, "the Pod Identity agent")
            else:
                self.assertEqual(extra, {8081} if name == "webhooks" else set(), name)
        # A ServiceMonitor whose scrapes the policies would drop is refused.
        with self.assertRaises(Exception) as refused:
            render(merged(BASE, {"serviceMonitor": {"enabled": True}}))
        self.assertIn("networkPolicy.metricsFrom", str(refused.exception))

    def test_disruptions_never_take_every_api_replica_nor_block_a_drain(self):
        docs = render(BASE)
        deployments = by_kind(docs, "Deployment")
        spread = {name: {(c["topologyKey"], c["whenUnsatisfiable"]) for c in d["spec"]["template"]["spec"]["topologySpreadConstraints"]}
                  for name, d in deployments.items()}
        self.assertEqual(spread["demo-minilab-api"], {("topology.kubernetes.io/zone", "ScheduleAnyway"),
                                                      ("kubernetes.io/hostname", "ScheduleAnyway")})
        self.assertEqual(spread["demo-minilab-worker"], {("topology.kubernetes.io/zone", "ScheduleAnyway")})
        budgets = by_kind(docs, "PodDisruptionBudget", "policy/")
        self.assertEqual(len(budgets), 3)
        for name, budget in budgets.items():
            self.assertEqual(budget["apiVersion"], "policy/v1")
            # A crash-looping pod (not ready) must not hold a node's drain.
            self.assertEqual(budget["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow", name)

    def test_alerts_name_only_metrics_minilab_exports(self):
        # What each crate registers: Registry::with_prefix("p") and register("name", ...)
        # in the same file; counters get _total, histograms _bucket/_sum/_count.
        # Each also registers the count of its S3 requests (service/src/s3_requests.rs).
        exported = set()
        shared = re.findall(r'register\(\s*"(\w+)"', (ROOT / "service/src/s3_requests.rs").read_text())
        for source in ["api/src/metrics.rs", "worker/src/metrics.rs", "operator/src/metrics.rs"]:
            text = (ROOT / source).read_text()
            [prefix] = re.findall(r'Registry::with_prefix\("(\w+)"\)', text)
            names = re.findall(r'register\(\s*"(\w+)"', text)
            names += shared if "s3_requests.register(&mut registry)" in text else []
            for name in names:
                exported |= {f"{prefix}_{name}{suffix}" for suffix in ("", "_total", "_bucket", "_sum", "_count")}
        values = merged(VALUE_SETS["ingress-netpol-monitor"], {"keda": {"enabled": True, "roleArn": f"arn:aws:iam::{ACCOUNT}:role/keda"}})
        [rule] = by_kind(render(values), "PrometheusRule", "monitoring.coreos.com/").values()
        self.assertEqual(rule["metadata"]["labels"]["release"], "prometheus", "selected like the ServiceMonitor")
        alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
        self.assertLessEqual({"MinilabInternalFailures", "MinilabQueueBehind", "MinilabApiOverloaded",
                              "MinilabOperatorErrors", "MinilabKedaCannotReadQueue"}, set(alerts))
        for name, alert in alerts.items():
            used = set(re.findall(r"\b(minilab_\w+)\{", alert["expr"]))
            self.assertTrue(used or "keda_" in alert["expr"], name)
            self.assertLessEqual(used, exported, name)
            self.assertIn('namespace="media"', alert["expr"], f"{name}: this release's series only")
        # The dashboard's queries likewise, on this release's namespace.
        [board] = [d for d in render(merged(values, {"serviceMonitor": {"dashboard": True}}))
                   if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
        self.assertEqual(board["metadata"]["labels"]["grafana_dashboard"], "1")
        dashboard = json.loads(board["data"]["minilab.json"])
        queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        self.assertGreaterEqual(len(queries), 11)
        for query in queries:
            self.assertLessEqual(set(re.findall(r"\b(minilab_\w+)\{", query)), exported, query)
            self.assertIn('namespace="media"', query)
        self.assertNotIn("MinilabKedaCannotReadQueue",
                         {r["alert"] for d in render(VALUE_SETS["ingress-netpol-monitor"]) if d["kind"] == "PrometheusRule"
                          for g in d["spec"]["groups"] for r in g["rules"]})

    def test_with_cloudfront_only_cloudfront_reaches_the_load_balancer(self):
        docs = render(VALUE_SETS["aws"])
        ingress = next(d for d in docs if d["kind"] == "Ingress")
        notes = ingress["metadata"]["annotations"]
        self.assertEqual(notes["alb.ingress.kubernetes.io/security-group-prefix-lists"], "pl-4fa04526")
        # The controller adds each prefix list once per listener port, and CloudFront's
        # origin-facing list weighs 55 of a security group's 60 rules: one port only,
        # HTTPS (CloudFront's origin protocol), and no redirect listener.
        ports = json.loads(notes["alb.ingress.kubernetes.io/listen-ports"])
        self.assertEqual(ports, [{"HTTPS": 443}])
        self.assertLessEqual(55 * len(ports), 60)
        self.assertNotIn("alb.ingress.kubernetes.io/ssl-redirect", notes)
        distribution = next(d for d in docs if d["kind"] == "Distribution")
        [api_origin] = [o for o in distribution["spec"]["distributionConfig"]["origins"]["items"]
                        if "customOriginConfig" in o]
        self.assertEqual(api_origin["customOriginConfig"]["originProtocolPolicy"], "https-only")
        with self.assertRaises(Exception) as refused:
            render(merged(VALUE_SETS["aws"], {"ingress": {"prefixListIds": []}}))
        self.assertIn("com.amazonaws.global.cloudfront.origin-facing", str(refused.exception))
        with self.assertRaises(Exception) as refused:
            render(merged(VALUE_SETS["aws"], {"ingress": {"certificateArn": ""}}))
        self.assertIn("needs ingress.certificateArn", str(refused.exception))

    def test_every_ack_resource_names_its_region_and_what_uninstall_does(self):
        # Without the region annotation ACK uses its controller's region, while the
        # chart's ARNs and URLs use .Values.region; without a deletion policy
        # `helm uninstall` deletes the buckets and queues with the images and messages.
        def ack(docs):
            return [d for d in docs if ".services.k8s.aws/" in d["apiVersion"]]
        resources = ack(render(VALUE_SETS["aws"]))
        kinds = {d["kind"] for d in resources}
        self.assertEqual(kinds, {"Bucket", "Queue", "Role", "OriginAccessControl", "Distribution", "RecordSet"})
        holds_data = {"Bucket", "Queue"}
        # Made by later install steps: a rollback to a revision without them (or an
        # --atomic upgrade that fails) must not delete the distribution or its DNS.
        later_steps = {"Distribution", "RecordSet"}
        for doc in resources:
            annotations = doc["metadata"].get("annotations", {})
            with self.subTest(kind=doc["kind"], name=doc["metadata"]["name"]):
                self.assertEqual(annotations.get("services.k8s.aws/region"), "eu-west-1")
                self.assertEqual(annotations.get("services.k8s.aws/deletion-policy"),
                                 "retain" if doc["kind"] in holds_data | later_steps else "delete")
                self.assertEqual(annotations.get("helm.sh/resource-policy"),
                                 "keep" if doc["kind"] in later_steps else None)
                self.assertEqual(doc["metadata"]["labels"]["app.kubernetes.io/instance"], "demo")
        flipped = ack(render(merged(VALUE_SETS["aws"], {"ack": {"deletionPolicy": {"data": "delete", "other": "retain"}}})))
        for doc in flipped:
            expected = "retain" if doc["kind"] in later_steps else "delete" if doc["kind"] in holds_data else "retain"
            self.assertEqual(doc["metadata"]["annotations"]["services.k8s.aws/deletion-policy"], expected,
                             doc["metadata"]["name"])
        with self.assertRaises(Exception) as refused:
            render(merged(VALUE_SETS["aws"], {"ack": {"deletionPolicy": {"data": "keep"}}}))
        self.assertIn("deletionPolicy", str(refused.exception))

    def test_ack_buckets_queue_and_notification(self):
        docs = render(VALUE_SETS["aws"])
        buckets = {d["spec"]["name"]: d["spec"] for d in by_kind(docs, "Bucket").values()}
        self.assertEqual(sorted(buckets), ["photos-out", "photos-site", "photos-up"])
        for name, bucket in buckets.items():
            self.assertEqual(set(bucket["publicAccessBlock"].values()), {True}, name)
            self.assertEqual(len(bucket["publicAccessBlock"]), 4, name)
            self.assertEqual(bucket["encryption"]["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"], "AES256")
        uploads = buckets["photos-up"]
        [cors] = uploads["cors"]["corsRules"]
        self.assertEqual(cors["allowedOrigins"], ["https://photos.example.com"])
        self.assertIn("POST", cors["allowedMethods"])
        [expiry] = uploads["lifecycle"]["rules"]
        self.assertEqual((expiry["filter"]["prefix"], expiry["expiration"]["days"], expiry["status"]), ("uploads/", 7, "Enabled"))

        queues = {d["spec"]["queueName"]: d["spec"] for d in by_kind(docs, "Queue").values()}
        queue_arn = f"arn:aws:sqs:eu-west-1:{ACCOUNT}:media-demo-minilab-events"
        [notification] = uploads["notification"]["queueConfigurations"]
        self.assertEqual(notification["queueARN"], queue_arn)
        self.assertEqual(notification["events"], ["s3:ObjectCreated:*"])
        # S3 reports the rule's name as "Prefix": any other spelling is a difference,
        # and a PutBucketNotificationConfiguration, at every resync.
        self.assertEqual(notification["filter"]["key"]["filterRules"], [{"name": "Prefix", "value": "uploads/"}])
        queue = queues[queue_arn.rsplit(":", 1)[1]]
        [statement] = json.loads(queue["policy"])["Statement"]
        self.assertEqual(statement["Principal"], {"Service": "s3.amazonaws.com"})
        self.assertEqual(statement["Action"], "sqs:SendMessage")
        self.assertEqual(statement["Resource"], queue_arn)
        self.assertEqual(statement["Condition"]["ArnEquals"]["aws:SourceArn"], "arn:aws:s3:::photos-up")
        self.assertNotIn("redrivePolicy", queue, "named before the dead-letter queue exists")
        attached = next(d["spec"] for d in render(merged(VALUE_SETS["aws"], {"ack": {"redrivePolicy": "always"}}))
                        if d["kind"] == "Queue" and d["spec"]["queueName"] == "media-demo-minilab-events")
        self.assertEqual(json.loads(attached["redrivePolicy"]), {"deadLetterTargetArn": queue_arn + "-dlq", "maxReceiveCount": 5})
        self.assertIn("media-demo-minilab-events-dlq", queues)
        self.assertEqual(queue["visibilityTimeout"], "60")
        self.assertEqual(queue["messageRetentionPeriod"], str(14 * 86400), "SQS's longest, not its 4 days")

        # The workers and KEDA use the queue the chart creates.
        url = f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/media-demo-minilab-events"
        worker = by_kind(docs, "Deployment")["demo-minilab-worker"]["spec"]["template"]["spec"]["containers"][0]
        self.assertIn({"name": "MINILAB_QUEUE_URL", "value": url}, worker["env"])
        self.assertEqual(next(iter(by_kind(docs, "ScaledObject").values()))["spec"]["triggers"][0]["metadata"]["queueURL"], url)

    def test_cloudwatch_alarms_on_the_dead_letter_queue_and_the_queues_age(self):
        alarms_on = {"ack": {"cloudwatch": {"enabled": True, "alarmActions": [f"arn:aws:sns:eu-west-1:{ACCOUNT}:oncall"]}}}
        alarms = by_kind(render(merged(VALUE_SETS["aws"], alarms_on)), "MetricAlarm", "cloudwatch.services.k8s.aws/")
        self.assertEqual(sorted(alarms), ["demo-minilab-dead-letters", "demo-minilab-queue-behind"])
        for alarm in alarms.values():
            validate(alarm, KUBE_VERSIONS[0])
            spec = alarm["spec"]
            self.assertEqual((spec["namespace"], spec["statistic"], spec["comparisonOperator"]),
                             ("AWS/SQS", "Maximum", "GreaterThanThreshold"))
            self.assertEqual(spec["alarmActions"], [f"arn:aws:sns:eu-west-1:{ACCOUNT}:oncall"])
            self.assertEqual(spec["oKActions"], spec["alarmActions"])
            self.assertEqual(spec["treatMissingData"], "notBreaching", "an idle queue sends no data")
            self.assertTrue(spec["name"].startswith("media-demo-minilab-"), "unique in the account and region")
            self.assertEqual(alarm["metadata"]["annotations"]["services.k8s.aws/region"], "eu-west-1")
        dead = alarms["demo-minilab-dead-letters"]["spec"]
        self.assertEqual((dead["metricName"], dead["threshold"], dead["evaluationPeriods"]),
                         ("ApproximateNumberOfMessagesVisible", 0, 1), "one message in the dead-letter queue alarms")
        self.assertEqual(dead["dimensions"], [{"name": "QueueName", "value": "media-demo-minilab-events-dlq"}])
        behind = alarms["demo-minilab-queue-behind"]["spec"]
        self.assertEqual((behind["metricName"], behind["threshold"], behind["period"] * behind["evaluationPeriods"]),
                         ("ApproximateAgeOfOldestMessage", 900, 900))
        self.assertEqual(behind["dimensions"], [{"name": "QueueName", "value": "media-demo-minilab-events"}])
        # A queue you bring: its age is alarmed under its own name; its dead-letter
        # queue is yours.
        existing = "https://sqs.eu-west-1.amazonaws.com/444455556666/shared-photo-events"
        yours = by_kind(render(merged(VALUE_SETS["aws"], alarms_on, {"queueUrl": existing, "ack": {"manage": {"queues": False}}})),
                        "MetricAlarm", "cloudwatch.services.k8s.aws/")
        self.assertEqual([a["spec"]["dimensions"][0]["value"] for a in yours.values()], ["shared-photo-events"])
        self.assertEqual(by_kind(render(VALUE_SETS["aws"]), "MetricAlarm", "cloudwatch.services.k8s.aws/"), {}, "off by default")

    def test_ack_iam_roles_are_least_privilege_and_trusted_by_one_service_account(self):
        docs = render(VALUE_SETS["aws"])
        roles = by_kind(docs, "Role", "iam.services.k8s.aws/")
        accounts = by_kind(docs, "ServiceAccount")
        self.assertEqual(sorted(roles), ["demo-minilab-api", "demo-minilab-operator", "demo-minilab-publish", "demo-minilab-worker"])
        for name, role in roles.items():
            with self.subTest(role=name):
                arn = f"arn:aws:iam::{ACCOUNT}:role/{role['spec']['name']}"
                if name in accounts:
                    self.assertEqual(accounts[name]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], arn)
                statements = json.loads(role["spec"]["assumeRolePolicyDocument"])["Statement"]
                provider = VALUE_SETS["aws"]["ack"]["oidcProvider"]
                for trust in statements:
                    self.assertEqual(trust["Action"], "sts:AssumeRoleWithWebIdentity")
                    self.assertEqual(trust["Principal"]["Federated"], f"arn:aws:iam::{ACCOUNT}:oidc-provider/{provider}")
                    self.assertEqual(trust["Condition"]["StringEquals"][f"{provider}:aud"], "sts.amazonaws.com")
                # Its own service account; the worker's also KEDA's (keda.enabled), which
                # reads the queue's depth as the worker.
                self.assertEqual([t["Condition"]["StringEquals"][f"{provider}:sub"] for t in statements],
                                 [f"system:serviceaccount:media:{name}"]
                                 + (["system:serviceaccount:keda:keda-operator"] if name.endswith("-worker") else []))
                for policy in role["spec"]["inlinePolicies"].values():
                    for statement in json.loads(policy)["Statement"]:
                        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                        self.assertEqual(statement["Effect"], "Allow")
                        self.assertFalse([a for a in actions if "*" in a], statement)
                        self.assertFalse([r for r in resources if r == "*" or r.endswith(":::*")], statement)
        def allowed(role):
            granted = set()
            for policy in roles[role]["spec"]["inlinePolicies"].values():
                for st in json.loads(policy)["Statement"]:
                    for action in st["Action"] if isinstance(st["Action"], list) else [st["Action"]]:
                        for resource in st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]:
                            granted.add((action, resource))
            return granted
        # With KEDA's operator role named, the worker role (only) trusts it as well.
        keda_role = f"arn:aws:iam::{ACCOUNT}:role/keda-operator"
        trusted = by_kind(render(merged(VALUE_SETS["aws"], {"keda": {"operatorRoleArn": keda_role}})),
                          "Role", "iam.services.k8s.aws/")
        for name, role in trusted.items():
            statements = json.loads(role["spec"]["assumeRolePolicyDocument"])["Statement"]
            extra = [st for st in statements if st["Action"] == "sts:AssumeRole"]
            self.assertEqual([st["Principal"] for st in extra], [{"AWS": keda_role}] if name.endswith("-worker") else [], name)
        # With keda.roleArn KEDA reads the queue as that role: the worker role trusts only its pods.
        own = by_kind(render(merged(VALUE_SETS["aws"], {"keda": {"roleArn": keda_role}})), "Role", "iam.services.k8s.aws/")
        self.assertEqual(len(json.loads(own["demo-minilab-worker"]["spec"]["assumeRolePolicyDocument"])["Statement"]), 1)
        queue = f"arn:aws:sqs:eu-west-1:{ACCOUNT}:media-demo-minilab-events"
        self.assertIn(("s3:PutObject", "arn:aws:s3:::photos-up/uploads/*"), allowed("demo-minilab-api"))
        # The API deletes uploads (DELETE /api/v1/uploads/{id}: the source, the outputs,
        # a tombstone manifest written) and stores the sizes it makes on demand.
        for grant in [("s3:DeleteObject", "arn:aws:s3:::photos-up/uploads/*"), ("s3:DeleteObject", "arn:aws:s3:::photos-out/*"),
                      ("s3:PutObject", "arn:aws:s3:::photos-out/*")]:
            self.assertIn(grant, allowed("demo-minilab-api"))
        self.assertFalse({a for a, _ in allowed("demo-minilab-api")} & {"sqs:SendMessage", "sqs:ReceiveMessage"})
        # The worker deletes only outputs in the processed bucket (a reprocessing's that no
        # manifest names), never a source; the operator deletes nothing.
        self.assertEqual({r for a, r in allowed("demo-minilab-worker") if a == "s3:DeleteObject"},
                         {"arn:aws:s3:::photos-out/*"})
        self.assertFalse({a for a, _ in allowed("demo-minilab-operator")} & {"s3:DeleteObject"})
        self.assertIn(("sqs:ReceiveMessage", queue), allowed("demo-minilab-worker"))
        self.assertIn(("s3:PutObject", "arn:aws:s3:::photos-out/*"), allowed("demo-minilab-worker"))
        self.assertIn(("s3:GetObject", "arn:aws:s3:::archive/*"), allowed("demo-minilab-worker"))
        self.assertNotIn(("s3:PutObject", "arn:aws:s3:::photos-up/uploads/*"), allowed("demo-minilab-worker"))
        self.assertEqual({a for a, r in allowed("demo-minilab-operator") if r == queue}, {"sqs:SendMessage"})
        self.assertEqual(allowed("demo-minilab-publish"), {("s3:PutObject", "arn:aws:s3:::photos-site/*")})

    def test_two_releases_in_one_account_never_share_an_aws_name(self):
        # ACK adopts an existing AWS resource of the same name and overwrites it: the
        # names the chart makes carry the namespace (or ack.namePrefix).
        def aws_names(values, namespace="media"):
            docs = render(values, namespace)
            names = set()
            for d in docs:
                if d["kind"] == "Queue":
                    names.add(("queue", d["spec"]["queueName"]))
                elif d["kind"] == "Role" and d["apiVersion"].startswith("iam."):
                    names.add(("role", d["spec"]["name"]))
                elif d["kind"] == "OriginAccessControl":
                    names.add(("oac", d["spec"]["originAccessControlConfig"]["name"]))
            return names
        media, other = aws_names(VALUE_SETS["aws"]), aws_names(VALUE_SETS["aws"], "media-staging")
        self.assertEqual(len(media), 7)
        self.assertEqual(media & other, set(), "one release name in two namespaces")
        self.assertIn(("queue", "media-demo-minilab-events"), media)
        prefixed = aws_names(merged(VALUE_SETS["aws"], {"ack": {"namePrefix": "photos-prod"}}))
        self.assertIn(("role", "photos-prod-worker"), prefixed)
        self.assertIn(("queue", "photos-prod-events-dlq"), prefixed)
        # Long namespaces: names stay within AWS's limits (IAM roles and access
        # controls 64 characters, SQS queues 80) and distinct.
        long_a = aws_names(VALUE_SETS["aws"], "a" * 50 + "-one")
        long_b = aws_names(VALUE_SETS["aws"], "a" * 50 + "-two")
        for kind, name in long_a | long_b:
            self.assertLessEqual(len(name), 80 if kind == "queue" else 64, name)
        self.assertEqual(long_a & long_b, set())
        # Service accounts' role annotations and the workers' queue follow the names.
        docs = render(merged(VALUE_SETS["aws"], {"ack": {"namePrefix": "photos-prod"}}))
        account = by_kind(docs, "ServiceAccount")["demo-minilab-worker"]
        self.assertEqual(account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
                         f"arn:aws:iam::{ACCOUNT}:role/photos-prod-worker")
        worker = by_kind(docs, "Deployment")["demo-minilab-worker"]["spec"]["template"]["spec"]["containers"][0]
        self.assertIn({"name": "MINILAB_QUEUE_URL", "value": f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/photos-prod-events"},
                      worker["env"])

    def test_existing_buckets_and_queues_are_used_not_managed(self):
        existing = "https://sqs.eu-west-1.amazonaws.com/444455556666/shared-photo-events"
        values = merged(VALUE_SETS["aws"], {"queueUrl": existing, "ack": {"manage": {"buckets": False, "queues": False}}})
        docs = render(values)
        self.assertEqual(by_kind(docs, "Bucket"), {})
        self.assertEqual(by_kind(docs, "Queue"), {})
        roles = by_kind(docs, "Role", "iam.services.k8s.aws/")
        worker = [st for p in roles["demo-minilab-worker"]["spec"]["inlinePolicies"].values() for st in json.loads(p)["Statement"]]
        operator = [st for p in roles["demo-minilab-operator"]["spec"]["inlinePolicies"].values() for st in json.loads(p)["Statement"]]
        arn = "arn:aws:sqs:eu-west-1:444455556666:shared-photo-events"
        self.assertTrue(iam_allows(worker, "sqs:ReceiveMessage", arn))
        self.assertTrue(iam_allows(operator, "sqs:SendMessage", arn))
        self.assertTrue(iam_allows(worker, "s3:GetObject", "arn:aws:s3:::photos-up/uploads/a.jpg"))
        env = {e["name"]: e.get("value") for e in by_kind(docs, "Deployment")["demo-minilab-worker"]["spec"]["template"]["spec"]["containers"][0]["env"]}
        self.assertEqual(env["MINILAB_QUEUE_URL"], existing)
        text = notes(values)
        self.assertNotIn("dead-letter", text)
        # The queue is the user's: the notes give the policy S3 needs to send to it,
        # the same the chart sets on a queue it makes.
        policy = json.loads(next(line for line in text.splitlines() if line.startswith("  {")))
        [send] = policy["Statement"]
        self.assertEqual((send["Principal"], send["Action"], send["Resource"]),
                         ({"Service": "s3.amazonaws.com"}, "sqs:SendMessage", arn))
        self.assertEqual(send["Condition"], {"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::photos-up"},
                                             "StringEquals": {"aws:SourceAccount": "444455556666"}})
        self.assertIn("s3:ObjectCreated:* notification", text)
        self.assertNotIn("Your queue", notes(VALUE_SETS["aws"]), "the chart's own queue has its policy")
        # Only the buckets kept: the chart's queue is still made, and the (existing)
        # uploads bucket's notification is the user's to point at it.
        only_buckets = render(merged(VALUE_SETS["aws"], {"ack": {"manage": {"buckets": False}}}))
        self.assertEqual(by_kind(only_buckets, "Bucket"), {})
        self.assertEqual(len(by_kind(only_buckets, "Queue")), 2)
        for bad, message in [
            (merged(VALUE_SETS["aws"], {"ack": {"manage": {"queues": False}}}), "queueUrl must name the existing queue"),
            (merged(VALUE_SETS["aws"], {"queueUrl": existing}), "set ack.manage.queues to false"),
        ]:
            with self.assertRaises(Exception) as refused:
                render(bad)
            self.assertIn(message, str(refused.exception))

    def test_the_readmes_batch_can_read_its_source_and_nothing_more(self):
        # The README's values and its batch ImageJob, rendered: the worker and the
        # operator may read exactly the batch sources named (listing covers the bucket,
        # so that a vanished source is a 404, not an AccessDenied).
        blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
        values = next(yaml.safe_load(b) for b in blocks if b.startswith("# photos.yaml"))
        job = next(yaml.safe_load(b) for b in blocks if "kind: ImageJob" in b)["spec"]
        roles = by_kind(render(values), "Role", "iam.services.k8s.aws/")
        policy = {name: [st for p in role["spec"]["inlinePolicies"].values() for st in json.loads(p)["Statement"]]
                  for name, role in roles.items()}
        source, destination = job["source"], job["destination"]
        photo = f"arn:aws:s3:::{source['bucket']}/{source['prefix']}day1/img_001.jpg"
        # The operator lists the source, the workers read each image.
        self.assertTrue(iam_allows(policy["demo-minilab-operator"], "s3:ListBucket", f"arn:aws:s3:::{source['bucket']}"))
        self.assertTrue(iam_allows(policy["demo-minilab-worker"], "s3:GetObject", photo))
        for component in ("worker", "operator"):
            with self.subTest(component=component):
                self.assertFalse(iam_allows(policy[f"demo-minilab-{component}"], "s3:GetObject",
                                            f"arn:aws:s3:::{source['bucket']}/private/a.jpg"))
        self.assertTrue(iam_allows(policy["demo-minilab-worker"], "s3:PutObject",
                                   f"arn:aws:s3:::{destination['bucket']}/{destination['prefix']}day1/img_001.jpg/large.jpg"))
        # A whole bucket: everything in it, listed anywhere.
        whole = by_kind(render(merged(values, {"ack": {"batchSources": ["archive"]}})), "Role", "iam.services.k8s.aws/")
        statements = [st for p in whole["demo-minilab-worker"]["spec"]["inlinePolicies"].values() for st in json.loads(p)["Statement"]]
        self.assertTrue(iam_allows(statements, "s3:GetObject", "arn:aws:s3:::archive/2019/a.jpg"))
        self.assertTrue(iam_allows(statements, "s3:ListBucket", "arn:aws:s3:::archive"))
        self.assertFalse(iam_allows(statements, "s3:GetObject", f"arn:aws:s3:::{source['bucket']}/{source['prefix']}a.jpg"))
        with self.assertRaises(hp.HelmValuesError):
            render(merged(values, {"ack": {"batchSources": ["photos.example.com"]}}))

    def test_cloudfront_routes_the_api_to_the_load_balancer_and_the_rest_to_the_site_bucket(self):
        docs = render(VALUE_SETS["aws"])
        [distribution] = by_kind(docs, "Distribution").values()
        config = distribution["spec"]["distributionConfig"]
        origins = {o["id"]: o for o in config["origins"]["items"]}
        self.assertEqual(config["aliases"]["items"], ["photos.example.com"])
        self.assertEqual(config["viewerCertificate"]["acmCertificateARN"], VALUE_SETS["aws"]["certificateArn"])
        default = config["defaultCacheBehavior"]
        site = origins[default["targetOriginID"]]
        self.assertEqual(site["domainName"], "photos-site.s3.eu-west-1.amazonaws.com")
        self.assertEqual(site["originAccessControlID"], "E2QWRUHEXAMPLE")
        self.assertIn(default["viewerProtocolPolicy"], ("redirect-to-https", "https-only"))
        [api] = config["cacheBehaviors"]["items"]
        self.assertEqual(api["pathPattern"], "/api/*")
        load_balancer = origins[api["targetOriginID"]]
        ingress = next(iter(by_kind(docs, "Ingress").values()))
        self.assertEqual(load_balancer["domainName"], ingress["spec"]["rules"][0]["host"])
        self.assertEqual(load_balancer["customOriginConfig"]["originProtocolPolicy"], "https-only")
        self.assertEqual(api["cachePolicyID"], "4135ea2d-6df8-44a3-9df3-4b5a84be39ad")  # Managed-CachingDisabled
        self.assertEqual(api["viewerProtocolPolicy"], "https-only")
        self.assertIn("POST", api["allowedMethods"]["items"])
        [oac] = by_kind(docs, "OriginAccessControl").values()
        self.assertEqual(oac["spec"]["originAccessControlConfig"]["originAccessControlOriginType"], "s3")
        site_bucket = next(d["spec"] for d in by_kind(docs, "Bucket").values() if d["spec"]["name"] == "photos-site")
        [read] = json.loads(site_bucket["policy"])["Statement"]
        self.assertEqual(read["Principal"], {"Service": "cloudfront.amazonaws.com"})
        self.assertEqual(read["Action"], "s3:GetObject")

        records = by_kind(docs, "RecordSet")
        self.assertEqual(sorted(r["spec"]["recordType"] for r in records.values()), ["A", "AAAA"])
        for record in records.values():
            # The ACK controller appends the zone's name.
            self.assertEqual(record["spec"]["name"] + ".example.com", "photos.example.com")
            self.assertEqual(record["spec"]["aliasTarget"]["dnsName"], "d111111abcdef8.cloudfront.net")

        # Before AWS assigned the access control's ID (first install, nothing to look
        # up), there is no distribution and no record yet; the access control is there.
        first = render(merged(VALUE_SETS["aws"], {"ack": {"cloudfront": {"originAccessControlId": "", "distributionDomainName": ""}}}))
        self.assertEqual(list(by_kind(first, "Distribution")), [])
        self.assertEqual(list(by_kind(first, "RecordSet")), [])
        self.assertEqual(len(by_kind(first, "OriginAccessControl")), 1)
        first_notes = notes(merged(VALUE_SETS["aws"], {"ack": {"cloudfront": {"originAccessControlId": ""}}}))
        self.assertIn("originaccesscontrol/demo-minilab-site", first_notes)
        self.assertIn("creates the CloudFront distribution", first_notes)
        self.assertIn("one more upgrade creates the Route 53 records for photos.example.com", first_notes)
        self.assertIn("helm upgrade demo CHART -n media -f VALUES.yaml", first_notes)
        self.assertNotIn("--reuse-values", first_notes)
        # Everything AWS assigns is known: the site is announced, with what to wait for
        # before its name resolves, never as if it already answered.
        last_notes = notes(VALUE_SETS["aws"] | {"ack": VALUE_SETS["aws"]["ack"] | {"redrivePolicy": "always"}})
        self.assertNotIn("NEXT", last_notes)
        self.assertIn("The site: https://photos.example.com", last_notes)
        self.assertIn("recordset/demo-minilab-site-a recordset/demo-minilab-site-aaaa distribution/demo-minilab-site",
                      last_notes)
        for bad, message in [
            ({"ack": {"route53": {"zoneName": "example.org"}}}, "is not in the hosted zone"),
            ({"ingress": {"certificateArn": ""}}, "ingress.certificateArn"),
            ({"ack": {"accountId": ""}}, "ack.accountId"),
        ]:
            with self.subTest(bad=bad):
                with self.assertRaises(Exception) as refused:
                    render(merged(VALUE_SETS["aws"], bad))
                self.assertIn(message, str(refused.exception))

    def test_the_distribution_spells_out_what_cloudfront_fills_in(self):
        # The CloudFront controller compares the spec with what GetDistribution
        # reports and has no late initialisation for distributions: a field left out
        # that CloudFront fills in is a difference, and an update, on every resync.
        [distribution] = by_kind(render(VALUE_SETS["aws"]), "Distribution").values()
        config = distribution["spec"]["distributionConfig"]
        filled_in = {"originPath": "", "connectionAttempts": 3, "connectionTimeout": 10,
                     "customHeaders": {}, "originShield": {"enabled": False}}
        for origin in config["origins"]["items"]:
            with self.subTest(origin=origin["id"]):
                self.assertEqual({k: origin.get(k) for k in filled_in}, filled_in)
        api_origin = next(o for o in config["origins"]["items"] if o["id"] == "api")
        self.assertEqual(api_origin.get("originAccessControlID"), "")
        api = api_origin["customOriginConfig"]
        self.assertEqual((api.get("originReadTimeout"), api.get("originKeepaliveTimeout")), (30, 5))
        behaviour = {"smoothStreaming": False, "fieldLevelEncryptionID": "", "trustedSigners": {"enabled": False},
                     "trustedKeyGroups": {"enabled": False}, "lambdaFunctionAssociations": {},
                     "functionAssociations": {}}
        for cache in [config["defaultCacheBehavior"], *config["cacheBehaviors"]["items"]]:
            with self.subTest(behaviour=cache["targetOriginID"]):
                self.assertEqual({k: cache.get(k) for k in behaviour}, behaviour)
        distribution_level = {"logging": {"enabled": False, "includeCookies": False, "bucket": "", "prefix": ""},
                              "restrictions": {"geoRestriction": {"restrictionType": "none"}},
                              "customErrorResponses": {}, "originGroups": {}, "webACLID": "",
                              "staging": False, "continuousDeploymentPolicyID": ""}
        self.assertEqual({k: config.get(k) for k in distribution_level}, distribution_level)
        certificate = config["viewerCertificate"]
        self.assertEqual((certificate.get("certificate"), certificate.get("certificateSource"),
                          certificate.get("cloudFrontDefaultCertificate")),
                         (certificate["acmCertificateARN"], "acm", False))

    def test_a_hook_job_publishes_the_page_to_the_site_bucket(self):
        self.assertEqual(by_kind(render(BASE), "Job"), {})
        docs = render(merged(VALUE_SETS["aws"], {"publish": {"apiBase": "https://api.photos.example.com"}}))
        [job] = by_kind(docs, "Job").values()
        hooks = job["metadata"]["annotations"]
        self.assertEqual(set(hooks["helm.sh/hook"].split(",")), {"post-install", "post-upgrade"})
        self.assertIn("before-hook-creation", hooks["helm.sh/hook-delete-policy"])
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        self.assertEqual(container["args"], ["publish-web"])
        env = {e["name"]: e["value"] for e in container["env"]}
        self.assertEqual(env["MINILAB_SITE_BUCKET"], "photos-site")
        self.assertEqual(env["MINILAB_API_BASE"], "https://api.photos.example.com")
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertTrue(container["securityContext"]["readOnlyRootFilesystem"])
        self.assertFalse(container["securityContext"]["allowPrivilegeEscalation"])
        self.assertEqual(container["securityContext"]["capabilities"]["drop"], ["ALL"])
        self.assertGreater(job["spec"]["activeDeadlineSeconds"], 0)
        # Its own service account, with the role that may only put into the site bucket.
        account = by_kind(docs, "ServiceAccount")[pod["serviceAccountName"]]
        role = by_kind(docs, "Role", "iam.services.k8s.aws/")[pod["serviceAccountName"]]
        self.assertEqual(account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
                         f"arn:aws:iam::{ACCOUNT}:role/{role['spec']['name']}")
        with self.assertRaises(hp.HelmValuesError):
            render(merged(BASE, {"publish": {"apiBase": "javascript:alert(1)"}}))
        # With Pod Identity the associations are made after the install (the notes
        # say how): a hook would fail the install before the notes are printed, so
        # the Job is an ordinary one, per revision, retrying for longer.
        values = VALUE_SETS["pod-identity-and-placement"]
        [job] = by_kind(render(values), "Job").values()
        self.assertNotIn("helm.sh/hook", job["metadata"].get("annotations") or {})
        self.assertEqual(job["metadata"]["name"], "demo-minilab-publish-web-1")
        self.assertGreaterEqual(job["spec"]["activeDeadlineSeconds"], 1800)
        text = notes(values)
        self.assertIn("kubectl rollout restart deployment -n media -l app.kubernetes.io/instance=demo", text)
        self.assertIn("job/demo-minilab-publish-web-1", text)

    def test_every_pod_logs_json_lines_unless_told_otherwise(self):
        values = merged(VALUE_SETS["aws"], {"publish": {"apiBase": "https://api.photos.example.com"}})
        for format in (None, "text"):
            docs = render(merged(values, {"logFormat": format}) if format else values)
            workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "Job")}
            self.assertEqual(len(workloads), 4)
            for name, workload in workloads.items():
                env = {e["name"]: e.get("value") for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}
                self.assertEqual(env["MINILAB_LOG_FORMAT"], format or "json", name)

    def test_the_defaults_alone_never_render_a_release_that_cannot_work(self):
        # Without buckets or a queue the pods would start and fail; refuse instead.
        for values, message in [
            ({}, "buckets.uploads and buckets.processed are required"),
            ({"buckets": {"uploads": "photos-up"}}, "buckets.uploads and buckets.processed are required"),
            (merged(BASE, {"queueUrl": ""}), "queueUrl is required"),
            (merged(VALUE_SETS["keda"], {"queueUrl": ""}), "queueUrl is required"),
            # A pod without a role would fall back to the node's (blocked): say so.
            (merged(BASE, {"worker": {"roleArn": ""}}), "worker.roleArn is required with awsIdentity irsa"),
            (merged(BASE, {"buckets": {"site": "photos-site"}}), "publish.roleArn is required"),
            (merged(VALUE_SETS["aws"], {"awsIdentity": "none"}), "ack.enabled makes IAM roles for awsIdentity irsa"),
        ]:
            with self.subTest(values=values):
                with self.assertRaises(Exception) as refused:
                    render(values)
                self.assertIn(message, str(refused.exception))
        # Credentials another way (extraEnv, as the node's tests give them): no roles.
        without_roles = {k: v for k, v in BASE.items() if k not in ("api", "worker", "operator")}
        self.assertTrue(by_kind(render(merged(without_roles, {"awsIdentity": "none"})), "Deployment"))
        # A dotted bucket name breaks the browser's HTTPS POST to
        # BUCKET.s3.REGION.amazonaws.com (the certificate is *.s3.REGION.amazonaws.com).
        for bucket in ("uploads", "processed", "site"):
            with self.subTest(bucket=bucket):
                with self.assertRaises(hp.HelmValuesError) as refused:
                    render(merged(BASE, {"buckets": {bucket: "photos.example.com"}}))
                self.assertIn(f"/buckets/{bucket}", str(refused.exception))

    def test_every_pod_takes_the_placement_metadata_and_environment_asked_for(self):
        values = VALUE_SETS["pod-identity-and-placement"]
        workloads = {d["metadata"]["name"]: d for d in render(values) if d["kind"] in ("Deployment", "Job")}
        self.assertEqual(len(workloads), 4)
        for name, workload in workloads.items():
            pod = workload["spec"]["template"]
            spec = pod["spec"]
            with self.subTest(workload=name):
                own = "compute" if name.endswith("-worker") else "general"
                self.assertEqual(spec["nodeSelector"], {"pool": own})
                self.assertEqual(spec["tolerations"], values["tolerations"])
                self.assertEqual(spec["affinity"], values["affinity"])
                self.assertEqual(spec["priorityClassName"], "media-high")
                self.assertEqual(spec["imagePullSecrets"], [{"name": "registry-credentials"}])
                self.assertEqual(pod["metadata"]["labels"]["team"], "media")
                self.assertNotEqual(pod["metadata"]["labels"]["app.kubernetes.io/component"], "not-this",
                                    "the selector's labels win")
                self.assertEqual(pod["metadata"]["annotations"]["example.com/owner"], "media")
                env = [e["name"] for e in spec["containers"][0]["env"]]
                self.assertIn("HTTPS_PROXY", env)
                self.assertEqual("RUST_LOG" in env, name.endswith("-worker"))
                if workload["kind"] == "Deployment":
                    self.assertEqual(workload["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items(), True)
                    self.assertIn("minilab.dev/recipes-checksum", pod["metadata"]["annotations"])
        # Nothing asked for, nothing rendered.
        spec = by_kind(render(BASE), "Deployment")["demo-minilab-api"]["spec"]["template"]["spec"]
        self.assertFalse({"nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"} & spec.keys())

    def test_eks_pod_identity_instead_of_irsa(self):
        values = VALUE_SETS["pod-identity-and-placement"]
        docs = render(values)
        for name, account in by_kind(docs, "ServiceAccount").items():
            self.assertNotIn("eks.amazonaws.com/role-arn", account["metadata"].get("annotations") or {}, name)
        for name, role in by_kind(docs, "Role", "iam.services.k8s.aws/").items():
            with self.subTest(role=name):
                trust, *others = json.loads(role["spec"]["assumeRolePolicyDocument"])["Statement"]
                self.assertEqual(trust["Principal"], {"Service": "pods.eks.amazonaws.com"})
                self.assertEqual(sorted(trust["Action"]), ["sts:AssumeRole", "sts:TagSession"])
                # Pods of this cluster only: another cluster of the account with a
                # namespace and service account of these names gets nothing.
                self.assertEqual(trust["Condition"]["StringEquals"], {
                    "aws:RequestTag/kubernetes-namespace": "media", "aws:RequestTag/kubernetes-service-account": name,
                    "aws:RequestTag/eks-cluster-arn": f"arn:aws:eks:eu-west-1:{ACCOUNT}:cluster/media-prod"})
                # KEDA cannot find a role without the IRSA annotation: it assumes the
                # worker's with its own, which the worker role trusts, session tags
                # included (Pod Identity's tags are transitive).
                self.assertEqual([(o["Principal"], sorted(o["Action"])) for o in others],
                                 [({"AWS": values["keda"]["operatorRoleArn"]}, ["sts:AssumeRole", "sts:TagSession"])]
                                 if name.endswith("-worker") else [])
        [auth] = by_kind(docs, "TriggerAuthentication").values()
        self.assertEqual(auth["spec"]["podIdentity"],
                         {"provider": "aws", "roleArn": f"arn:aws:iam::{ACCOUNT}:role/media-demo-minilab-worker"})
        text = notes(values)
        for component in ("api", "worker", "operator", "publish"):
            self.assertIn(f"--cluster-name media-prod --namespace media --service-account demo-minilab-{component} "
                          f"--role-arn arn:aws:iam::{ACCOUNT}:role/media-demo-minilab-{component}", text)
        with self.assertRaises(Exception) as refused:
            render(merged(values, {"keda": {"operatorRoleArn": ""}}))
        self.assertIn("set keda.operatorRoleArn", str(refused.exception))
        with self.assertRaises(Exception) as refused:
            render(merged(values, {"ack": {"clusterName": ""}}))
        self.assertIn("ack.enabled needs ack.clusterName", str(refused.exception))

    def test_the_api_knows_how_many_proxies_stand_before_it(self):
        # The client's address is the entry the nearest trusted proxy appended to
        # X-Forwarded-For: counting one proxy too many would let a client pick its own.
        def api_env(values):
            container = by_kind(render(values), "Deployment")["demo-minilab-api"]["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: e.get("value") for e in container["env"]}
        self.assertEqual(api_env(BASE)["MINILAB_TRUSTED_PROXY_HOPS"], "0")
        self.assertEqual(api_env(VALUE_SETS["ingress-netpol-monitor"])["MINILAB_TRUSTED_PROXY_HOPS"], "1")
        self.assertEqual(api_env(VALUE_SETS["aws"])["MINILAB_TRUSTED_PROXY_HOPS"], "2")
        self.assertEqual(api_env(merged(VALUE_SETS["aws"], {"api": {"trustedProxyHops": 3}}))["MINILAB_TRUSTED_PROXY_HOPS"], "3")
        env = api_env(merged(BASE, {"api": {"rateLimits": {"ticketsPerMinute": 5, "ticketBurst": 2}}}))
        self.assertEqual((env["MINILAB_TICKETS_PER_MINUTE"], env["MINILAB_TICKET_BURST"]), ("5", "2"))
        self.assertEqual((env["MINILAB_READS_PER_MINUTE"], env["MINILAB_READ_BURST"]), ("600", "120"))
        self.assertEqual(env["MINILAB_UPLOAD_BYTES_PER_HOUR"], "2147483648")

    def test_workers_tell_every_ready_api_and_operator_pod_with_the_shared_secret(self):
        docs = render(BASE)
        deployments = by_kind(docs, "Deployment")
        def env(component):
            container = deployments[f"demo-minilab-{component}"]["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: e for e in container["env"]}
        targets = []
        for component in ("api", "operator"):
            peers = by_kind(docs, "Service")[f"demo-minilab-{component}-peers"]["spec"]
            # Headless (one address per pod), ready pods only, the pods' metrics port.
            self.assertEqual(peers["clusterIP"], "None")
            self.assertFalse(peers["publishNotReadyAddresses"])
            deployment = deployments[f"demo-minilab-{component}"]
            self.assertEqual(peers["selector"], deployment["spec"]["selector"]["matchLabels"])
            ports = {p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
            [port] = peers["ports"]
            self.assertEqual((port["port"], port["targetPort"]), (ports["metrics"], "metrics"))
            self.assertEqual(env(component)["MINILAB_METRICS_LISTEN"]["value"], f"0.0.0.0:{ports['metrics']}")
            targets.append(f"demo-minilab-{component}-peers.media.svc:{port['port']}")
        self.assertEqual(env("worker")["MINILAB_ANNOUNCE_TO"]["value"].split(","), targets)
        # One secret, the chart's own, given to every side.
        [secret] = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "demo-minilab-peers"]
        self.assertGreaterEqual(len(base64.b64decode(secret["data"]["secret"])), 16)
        for component in ("api", "worker", "operator"):
            self.assertEqual(env(component)["MINILAB_PEER_SECRET"]["valueFrom"]["secretKeyRef"],
                             {"name": "demo-minilab-peers", "key": "secret"})
        # A Secret of one's own instead; or no push at all (the API then polls S3).
        own = render(merged(BASE, {"push": {"existingSecret": "my-peers"}}))
        self.assertNotIn("demo-minilab-peers", [d["metadata"]["name"] for d in own if d["kind"] == "Secret"])
        worker = by_kind(own, "Deployment")["demo-minilab-worker"]["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(next(e for e in worker["env"] if e["name"] == "MINILAB_PEER_SECRET")["valueFrom"]["secretKeyRef"]["name"],
                         "my-peers")
        off = render(merged(BASE, {"push": {"enabled": False}}))
        self.assertFalse({"demo-minilab-api-peers", "demo-minilab-operator-peers"} & set(by_kind(off, "Service")))
        for deployment in by_kind(off, "Deployment").values():
            names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
            self.assertFalse(names & {"MINILAB_PEER_SECRET", "MINILAB_ANNOUNCE_TO"})

    def test_webhooks_are_off_by_default_and_signed_by_the_worker_when_allowed(self):
        def env(values):
            deployments = by_kind(render(values), "Deployment")
            return {c: {e["name"]: e for e in deployments[f"demo-minilab-{c}"]["spec"]["template"]["spec"]["containers"][0]["env"]}
                    for c in ("api", "worker", "operator")}
        for component in env(BASE).values():
            self.assertFalse([n for n in component if n.startswith("MINILAB_WEBHOOK_")])
        allowed = {"webhooks": {"allow": ["https://hooks.example.com/minilab/", "http://receiver.tools.svc:8080/"],
                                "secretName": "hook-signing"}}
        on = env(merged(BASE, allowed))
        for component in ("api", "worker"):
            self.assertEqual(on[component]["MINILAB_WEBHOOK_ALLOW"]["value"],
                             "https://hooks.example.com/minilab/,http://receiver.tools.svc:8080/")
        self.assertEqual(on["worker"]["MINILAB_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"],
                         {"name": "hook-signing", "key": "secret"})
        self.assertNotIn("MINILAB_WEBHOOK_SECRET", on["api"])
        self.assertFalse([n for n in on["operator"] if n.startswith("MINILAB_WEBHOOK_")])
        with self.assertRaises(Exception) as refused:
            render(merged(BASE, {"webhooks": {"allow": ["https://hooks.example.com/"]}}))
        self.assertIn("webhooks.secretName is required", str(refused.exception))
        with self.assertRaises(hp.HelmValuesError):
            render(merged(BASE, {"webhooks": {"allow": ["https://hooks.example.com"], "secretName": "s"}}))

    def test_images_at_stable_addresses_are_routed_and_cached_at_the_edge(self):
        def api_env(docs):
            container = by_kind(docs, "Deployment")["demo-minilab-api"]["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: e.get("value") for e in container["env"]}
        off = render(VALUE_SETS["aws"])
        self.assertNotIn("MINILAB_SERVE_IMAGES", api_env(off))
        [distribution] = by_kind(off, "Distribution").values()
        self.assertNotIn("/i/*", [b["pathPattern"] for b in distribution["spec"]["distributionConfig"]["cacheBehaviors"]["items"]])

        docs = render(merged(VALUE_SETS["aws"], {"api": {"serveImages": True}}))
        env = api_env(docs)
        self.assertEqual(env["MINILAB_SERVE_IMAGES"], "true")
        # Statuses name the images on the site's domain, where CloudFront serves them.
        self.assertEqual(env["MINILAB_IMAGE_BASE_URL"], "https://photos.example.com")
        [ingress] = by_kind(docs, "Ingress").values()
        paths = {(p["path"], p["pathType"]) for p in ingress["spec"]["rules"][0]["http"]["paths"]}
        self.assertIn(("/i/", "Prefix"), paths)
        [distribution] = by_kind(docs, "Distribution").values()
        config = distribution["spec"]["distributionConfig"]
        behaviours = {b["pathPattern"]: b for b in config["cacheBehaviors"]["items"]}
        images = behaviours["/i/*"]
        self.assertEqual(images["targetOriginID"], behaviours["/api/*"]["targetOriginID"])
        self.assertEqual(images["cachePolicyID"], "658327ea-f89d-4fab-a63d-7e88639e58f6")  # Managed-CachingOptimized
        self.assertEqual(images["allowedMethods"]["items"], ["GET", "HEAD"])
        self.assertNotIn("originRequestPolicyID", images, "no cookies or headers forwarded: one cached copy")
        # /i/*.auto (the format Accept names) is matched before /i/*, and cached per
        # Accept once the cache policy's ID is known; until then not cached at all.
        patterns = [b["pathPattern"] for b in config["cacheBehaviors"]["items"]]
        self.assertLess(patterns.index("/i/*.auto"), patterns.index("/i/*"))
        auto = behaviours["/i/*.auto"]
        self.assertEqual(auto["cachePolicyID"], "4135ea2d-6df8-44a3-9df3-4b5a84be39ad")  # Managed-CachingDisabled
        self.assertEqual(auto["originRequestPolicyID"], "b689b0a8-53d0-40ab-baf2-68738e2966ac")  # AllViewerExceptHostHeader
        [policy] = by_kind(docs, "CachePolicy").values()
        keyed = policy["spec"]["cachePolicyConfig"]["parametersInCacheKeyAndForwardedToOrigin"]
        self.assertEqual(keyed["headersConfig"], {"headerBehavior": "whitelist", "headers": {"items": ["Accept"]}})
        self.assertEqual((keyed["cookiesConfig"]["cookieBehavior"], keyed["queryStringsConfig"]["queryStringBehavior"]), ("none", "none"))
        known = render(merged(VALUE_SETS["aws"], {"api": {"serveImages": True},
                                                  "ack": {"cloudfront": {"autoFormatCachePolicyId": "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"}}}))
        [distribution] = by_kind(known, "Distribution").values()
        auto = {b["pathPattern"]: b for b in distribution["spec"]["distributionConfig"]["cacheBehaviors"]["items"]}["/i/*.auto"]
        self.assertEqual(auto["cachePolicyID"], "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab")
        self.assertNotIn("originRequestPolicyID", auto)
        self.assertEqual(by_kind(off, "CachePolicy"), {})

        # A deleted upload's images are invalidated in the distribution: the API may
        # (any distribution of the account until it synced), and knows its id once
        # `helm upgrade` reads it (or the value names it).
        def api_grants(docs):
            role = by_kind(docs, "Role", "iam.services.k8s.aws/")["demo-minilab-api"]
            return {(st["Action"], st["Resource"]) for p in role["spec"]["inlinePolicies"].values()
                    for st in json.loads(p)["Statement"] if st["Action"] == "cloudfront:CreateInvalidation"}
        self.assertEqual(api_grants(docs), {("cloudfront:CreateInvalidation", f"arn:aws:cloudfront::{ACCOUNT}:distribution/*")})
        self.assertNotIn("MINILAB_CDN_DISTRIBUTION_ID", env)
        named = render(merged(VALUE_SETS["aws"], {"api": {"serveImages": True}, "ack": {"cloudfront": {"distributionId": "E2EXAMPLE1"}}}))
        self.assertEqual(api_env(named)["MINILAB_CDN_DISTRIBUTION_ID"], "E2EXAMPLE1")
        self.assertEqual(api_grants(off), set())
        self.assertNotIn("MINILAB_CDN_DISTRIBUTION_ID", api_env(off))
        # The worker names them in webhooks under the same base.
        worker = by_kind(docs, "Deployment")["demo-minilab-worker"]["spec"]["template"]["spec"]["containers"][0]
        self.assertIn({"name": "MINILAB_IMAGE_BASE_URL", "value": "https://photos.example.com"}, worker["env"])
        # Without CloudFront, on the Ingress's host; without either, no base URL.
        plain = render(merged(VALUE_SETS["ingress-netpol-monitor"], {"api": {"serveImages": True}}))
        self.assertEqual(api_env(plain)["MINILAB_IMAGE_BASE_URL"], "https://api.photos.example.com")
        self.assertNotIn("MINILAB_IMAGE_BASE_URL", api_env(render(merged(BASE, {"api": {"serveImages": True}}))))
        self.assertNotIn("MINILAB_IMAGE_BASE_URL", api_env(render(merged(VALUE_SETS["ingress-netpol-monitor"], {}))))
        # Signed-in uploads are private: no unsigned stable addresses for them.
        sign_in = {"issuer": "https://id.example.com", "audience": "minilab", "jwksUrl": "https://id.example.com/jwks"}
        with self.assertRaises(Exception) as refused:
            render(merged(BASE, {"api": {"serveImages": True, "signIn": sign_in}}))
        self.assertIn("api.serveImages with api.signIn needs api.imageLinks.secretName", str(refused.exception))
        # Signed ones: the key from the Secret, and at the edge nothing cached and the
        # query (the signature) sent on to the API.
        signed = render(merged(VALUE_SETS["aws"], {"api": {"serveImages": True, "signIn": sign_in,
                                                           "imageLinks": {"secretName": "image-links", "windowSeconds": 900}}}))
        container = by_kind(signed, "Deployment")["demo-minilab-api"]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        self.assertEqual(env["MINILAB_IMAGE_LINK_SECRET"]["valueFrom"], {"secretKeyRef": {"name": "image-links", "key": "secret"}})
        self.assertEqual(env["MINILAB_IMAGE_LINK_WINDOW"]["value"], "900")
        self.assertNotIn("MINILAB_IMAGE_LINK_SECRET", api_env(docs))
        # The worker signs its webhooks' addresses with the same key and window.
        worker = by_kind(signed, "Deployment")["demo-minilab-worker"]["spec"]["template"]["spec"]["containers"][0]
        worker_env = {e["name"]: e for e in worker["env"]}
        self.assertEqual(worker_env["MINILAB_IMAGE_LINK_SECRET"], env["MINILAB_IMAGE_LINK_SECRET"])
        self.assertEqual(worker_env["MINILAB_IMAGE_LINK_WINDOW"]["value"], "900")
        unsigned = by_kind(docs, "Deployment")["demo-minilab-worker"]["spec"]["template"]["spec"]["containers"][0]
        self.assertNotIn("MINILAB_IMAGE_LINK_SECRET", {e["name"] for e in unsigned["env"]})
        [distribution] = by_kind(signed, "Distribution").values()
        behaviours = {b["pathPattern"]: b for b in distribution["spec"]["distributionConfig"]["cacheBehaviors"]["items"]}
        for pattern in ["/i/*", "/i/*.auto"]:
            self.assertEqual(behaviours[pattern]["cachePolicyID"], "4135ea2d-6df8-44a3-9df3-4b5a84be39ad", pattern)  # CachingDisabled
            self.assertEqual(behaviours[pattern]["originRequestPolicyID"], "b689b0a8-53d0-40ab-baf2-68738e2966ac", pattern)

    def test_sign_in_is_off_by_default_and_complete_when_on(self):
        def api_env(values):
            container = by_kind(render(values), "Deployment")["demo-minilab-api"]["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: e.get("value") for e in container["env"]}
        self.assertFalse([name for name in api_env(BASE) if name.startswith("MINILAB_OIDC_")])
        sign_in = {"issuer": "https://id.example.com", "audience": "minilab", "jwksUrl": "https://id.example.com/jwks"}
        env = api_env(merged(BASE, {"api": {"signIn": sign_in}}))
        self.assertEqual((env["MINILAB_OIDC_ISSUER"], env["MINILAB_OIDC_AUDIENCE"], env["MINILAB_OIDC_JWKS_URL"]),
                         ("https://id.example.com", "minilab", "https://id.example.com/jwks"))
        with self.assertRaises(Exception) as refused:
            render(merged(BASE, {"api": {"signIn": {"issuer": "https://id.example.com", "audience": "minilab"}}}))
        self.assertIn("api.signIn.jwksUrl is required", str(refused.exception))

    def test_the_schema_rejects_unknown_keys_and_wrong_types(self):
        for bad, where in [
            ({"bukets": {"uploads": "x"}}, "additional properties 'bukets'"),
            ({"api": {"replicas": "two"}}, "/api/replicas"),
            ({"worker": {"hpa": {"maxReplica": 3}}}, "additional properties 'maxReplica'"),
            # The HPA or KEDA sets the workers' count: a value that did nothing is refused.
            ({"worker": {"replicas": 4}}, "additional properties 'replicas'"),
            ({"worker": {"roleArn": "minilab-worker"}}, "/worker/roleArn"),
            ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
            ({"keda": {"enabled": "yes"}}, "/keda/enabled"),
            ({"ingress": {"host": "https://api.example.com"}}, "/ingress/host"),
            ({"ack": {"accountId": "1234"}}, "/ack/accountId"),
            ({"certificateArn": "arn:aws:acm:eu-west-1:111122223333:certificate/x"}, "/certificateArn"),
        ]:
            with self.subTest(values=bad):
                with self.assertRaises(hp.HelmValuesError) as refused:
                    render(merged(BASE, bad))
                self.assertIn(where, str(refused.exception))

    def test_the_charts_crd_is_what_minilab_crd_prints(self):
        printed = subprocess.run([MINILAB_BIN, "crd"], check=True, capture_output=True, text=True).stdout
        self.assertEqual((CHART / "files" / "imagejobs.yaml").read_text(), printed)
        # Rendered as that file, with the release's labels and, with crds.keep, the
        # annotation that keeps it (and every ImageJob) through `helm uninstall`.
        [crd] = by_kind(render(BASE), "CustomResourceDefinition").values()
        expected = yaml.safe_load(printed)
        labels = crd["metadata"].pop("labels")
        self.assertEqual(labels["app.kubernetes.io/instance"], "demo")
        self.assertEqual(crd["metadata"].pop("annotations"), {"helm.sh/resource-policy": "keep"})
        self.assertEqual(crd, expected)
        [dropped] = by_kind(render(merged(BASE, {"crds": {"keep": False}})), "CustomResourceDefinition").values()
        self.assertNotIn("annotations", dropped["metadata"])
        self.assertEqual(by_kind(render(merged(BASE, {"crds": {"install": False}})), "CustomResourceDefinition"), {})
        self.assertEqual(hp.Chart.load(str(CHART)).crds, [])

    def test_every_setting_the_chart_passes_is_one_the_binary_reads(self):
        """Each container's subcommand exists, every MINILAB_* variable it gets is
        one that subcommand reads (a misspelt name would be ignored silently), and
        every option the subcommand requires is set."""
        workloads = [d for name in ("irsa-and-recipes", "aws") for d in render(VALUE_SETS[name])
                     if d["kind"] in ("Deployment", "Job")]
        self.assertIn("Job", [d["kind"] for d in workloads])
        for doc in workloads:
            container = doc["spec"]["template"]["spec"]["containers"][0]
            with self.subTest(workload=doc["metadata"]["name"]):
                help_text = subprocess.run([MINILAB_BIN, *container["args"], "--help"], check=True,
                                           capture_output=True, text=True).stdout
                options = cli_options(help_text)
                read = {env for env, _ in options.values() if env}
                given = {e["name"] for e in container["env"]}
                self.assertEqual({e for e in given if e.startswith("MINILAB_")} - read, set())
                for flag, (env, required) in options.items():
                    if required:
                        self.assertIn(env, given, f"{flag} is required")


KUBECTL = os.environ.get("KUBECTL", "kubectl")
# Kinds the test API server (Kubernetes 1.20) does not serve; kubernetes-validate checks them.
NOT_IN_1_20 = {("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget")}


def kubectl(*args, stdin=None):
    done = subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def complete_hook_jobs(namespace, done):
    """Marks every Job in `namespace` complete, as the job controller would once its pod
    succeeded (the bare API server runs no controllers and no pods), until `done`."""
    while not done.wait(0.5):
        jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json"))["items"]
        for job in jobs:
            if not job.get("status", {}).get("conditions"):
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                kubectl("patch", "job", job["metadata"]["name"], "-n", namespace, "--subresource=status",
                        "--type=merge", "-p", json.dumps({"status": {
                            "startTime": now, "completionTime": now, "succeeded": 1,
                            "conditions": [{"type": "Complete", "status": "True", "lastProbeTime": now,
                                            "lastTransitionTime": now}]}}))


def for_1_20(doc):
    """A custom resource as the 1.20 server can check it: that server reads an empty
    string in a custom resource as null and refuses it where the CRD says string (newer
    servers take it; CloudFront needs `originAccessIdentity: ""` with an access control),
    so empty strings become a placeholder of the same type."""
    def fill(node):
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        return "empty" if node == "" else node
    return fill(doc) if (doc["apiVersion"], doc["kind"]) in CRDS else doc


@unittest.skipUnless(os.environ.get("KUBECONFIG"), "needs a real kube-apiserver: ./tests/run starts one (tests/kube)")
class RealApiServerTest(unittest.TestCase):
    """The chart's objects against a real kube-apiserver (tests/kube) with every CRD of
    tests/data/crds installed: the server's own validation, not a JSON-schema
    library's, and the Helm engine's lookups of what ACK reports."""

    @classmethod
    def setUpClass(cls):
        crds = crds_for_1_20()
        kubectl("apply", "--server-side", "--force-conflicts", "--validate=false", "-f", "-",
                stdin=yaml.safe_dump_all(crds))
        kubectl("wait", "--for=condition=Established", "--timeout=60s",
                *[f"crd/{crd['metadata']['name']}" for crd in crds])

    def namespace(self, prefix):
        name = f"{prefix}-{os.urandom(4).hex()}"
        kubectl("create", "namespace", name)
        self.addCleanup(kubectl, "delete", "namespace", name, "--wait=false")
        return name

    def test_every_object_passes_the_servers_dry_run(self):
        checked = set()
        for name, values in VALUE_SETS.items():
            with self.subTest(values=name):
                namespace = self.namespace("chart")
                docs = [for_1_20(d) for d in render(values, namespace) if (d["apiVersion"], d["kind"]) not in NOT_IN_1_20]
                out = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(docs))
                self.assertEqual(len(out.strip().splitlines()), len(docs), out)
                checked |= {d["kind"] for d in docs}
        self.assertTrue({"ScaledObject", "TriggerAuthentication", "Bucket", "Queue", "Distribution",
                         "RecordSet", "ServiceMonitor", "CustomResourceDefinition"} <= checked, checked)
        # The server refuses what its CRDs refuse: a trigger's metadata holds strings.
        scaled = next(d for d in render(VALUE_SETS["keda"]) if d["kind"] == "ScaledObject")
        scaled["spec"]["triggers"][0]["metadata"]["queueLength"] = 5
        with self.assertRaises(AssertionError) as refused:
            kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(scaled))
        self.assertIn("queueLength", str(refused.exception))

    def test_the_readmes_install_steps_as_written(self):
        # README's photos.yaml, `helm install`, then `helm upgrade` as NOTES.txt says
        # after each step, with what the ACK controllers report in between patched
        # into the status (no controller runs here). Hook Jobs are marked complete as
        # the job controller would (no node here either). The CRD is left out: it is
        # cluster-wide and another test's release owns it.
        readme = (ROOT / "README.md").read_text()
        photos = next(block for block in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "# photos.yaml" in block)
        values = merged(yaml.safe_load(photos), {"crds": {"install": False}})
        namespace = self.namespace("readme")
        helm = hp.Config(namespace=namespace)
        self.addCleanup(helm.uninstall, "photos", ignore_not_found=True)
        done = threading.Event()
        completer = threading.Thread(target=complete_hook_jobs, args=(namespace, done), daemon=True)
        completer.start()
        self.addCleanup(completer.join, 30)
        self.addCleanup(done.set)

        def synced(kind, name, status):
            kubectl("patch", kind, name, "-n", namespace, "--subresource=status", "--type=merge", "-p",
                    json.dumps({"status": {**status, "conditions": [{"type": "ACK.ResourceSynced", "status": "True"}]}}))

        def next_step(notes):
            """The `kubectl wait` targets NOTES.txt names before the next upgrade, and that upgrade."""
            if "NEXT" not in notes:
                return None
            self.assertIn(f"helm upgrade photos CHART -n {namespace} -f VALUES.yaml", notes)
            return set(re.search(r"kubectl wait --for=condition=ACK.ResourceSynced -n \S+ --timeout=\S+ (.*)", notes)
                       .group(1).split())

        first = helm.install(str(CHART), "photos", values, namespace=namespace, timeout=120)
        self.assertEqual(next_step(first["notes"]), {"queue/photos-minilab-events-dlq",
                                                     "originaccesscontrol/photos-minilab-site"})
        self.assertFalse(kubectl("get", "distributions", "-n", namespace, "-o", "name").strip())
        synced("queue", "photos-minilab-events-dlq", {"ackResourceMetadata": {
            "arn": f"arn:aws:sqs:eu-west-1:{ACCOUNT}:{namespace}-photos-minilab-events-dlq",
            "ownerAccountID": ACCOUNT, "region": "eu-west-1"}})
        synced("originaccesscontrol", "photos-minilab-site", {"id": "E2QWRUHEXAMPLE"})

        second = helm.upgrade(str(CHART), "photos", values, namespace=namespace, timeout=120)
        self.assertEqual(next_step(second["notes"]), {"distribution/photos-minilab-site"})
        distribution = json.loads(kubectl("get", "distribution", "photos-minilab-site", "-n", namespace, "-o", "json"))
        site = next(o for o in distribution["spec"]["distributionConfig"]["origins"]["items"] if o["id"] == "site")
        self.assertEqual(site["originAccessControlID"], "E2QWRUHEXAMPLE")
        queue = json.loads(kubectl("get", "queue", "photos-minilab-events", "-n", namespace, "-o", "json"))
        self.assertIn("redrivePolicy", queue["spec"])
        synced("distribution", "photos-minilab-site", {"domainName": "d111111abcdef8.cloudfront.net"})

        third = helm.upgrade(str(CHART), "photos", values, namespace=namespace, timeout=120)
        self.assertIsNone(next_step(third["notes"]), third["notes"])
        self.assertIn("The site: https://photos.example.com", third["notes"])
        records = json.loads(kubectl("get", "recordsets", "-n", namespace, "-o", "json"))["items"]
        self.assertEqual(sorted(r["spec"]["recordType"] for r in records), ["A", "AAAA"])
        for record in records:
            self.assertEqual(record["spec"]["aliasTarget"]["dnsName"], "d111111abcdef8.cloudfront.net")
            self.assertEqual(record["spec"]["name"], "photos")

    def test_a_kind_the_cluster_lacks_fails_the_install_by_name(self):
        # KEDA's CRDs taken away for this test (and put back): with keda.enabled the
        # install fails naming what to install, before anything is applied.
        keda = [crd for crd in crds_for_1_20() if crd["spec"]["group"] == "keda.sh"]
        self.addCleanup(kubectl, "wait", "--for=condition=Established", "--timeout=60s",
                        *[f"crd/{crd['metadata']['name']}" for crd in keda])
        self.addCleanup(kubectl, "apply", "--server-side", "--force-conflicts", "--validate=false", "-f", "-",
                        stdin=yaml.safe_dump_all(keda))
        kubectl("delete", "crd", *[crd["metadata"]["name"] for crd in keda], "--wait=true", "--timeout=60s")
        namespace = self.namespace("kinds")
        helm = hp.Config(namespace=namespace)
        values = merged(VALUE_SETS["keda"], {"crds": {"install": False}})
        with self.assertRaises(hp.HelmError) as refused:
            helm.install(str(CHART), "demo", values, namespace=namespace, timeout=60, dry_run="server")
        self.assertIn("keda.enabled needs KEDA (its CRDs): the cluster does not serve keda.sh/v1alpha1/ScaledObject",
                      str(refused.exception))
        # Rendering without a cluster checks nothing: helm template still works.
        self.assertTrue(by_kind(render(VALUE_SETS["keda"]), "ScaledObject"))
        # No cluster here serves the ACK CloudWatch controller's kind (its CRD is not
        # among tests/data/crds): alarms asked for fail the install by name.
        with self.assertRaises(hp.HelmError) as refused:
            helm.install(str(CHART), "demo", merged(VALUE_SETS["aws"], {"crds": {"install": False}},
                                                    {"ack": {"cloudwatch": {"enabled": True}}, "keda": {"enabled": False}}),
                         namespace=namespace, timeout=60, dry_run="server")
        self.assertIn("ack.cloudwatch.enabled needs the ACK CloudWatch controller: the cluster does not serve "
                      "cloudwatch.services.k8s.aws/v1alpha1/MetricAlarm", str(refused.exception))

    def test_the_events_queue_names_its_dead_letter_queue_once_ack_made_it(self):
        # `helm install`, ACK makes the dead-letter queue, `helm upgrade`: the redrive
        # policy appears only with the upgrade that sees the queue's ARN. The real Helm
        # engine reads the Queue's status from the real API server. The chart is the
        # repository's, unchanged: on 1.20 it picks policy/v1beta1 and
        # autoscaling/v2beta2 by the server's capabilities.
        namespace = self.namespace("ack")
        chart = CHART
        values = merged({k: v for k, v in VALUE_SETS["aws"].items() if k not in ("buckets", "domain")},
                        {"buckets": {"uploads": "photos-up", "processed": "photos-out"},
                         "crds": {"install": False},  # cluster-wide, and other tests own it
                         "ack": {"cloudfront": {"enabled": False}, "route53": {"enabled": False}}})
        helm = hp.Config(namespace=namespace)
        self.addCleanup(helm.uninstall, "demo", ignore_not_found=True)

        def events_queue():
            return json.loads(kubectl("get", "queue", "demo-minilab-events", "-n", namespace, "-o", "json"))["spec"]

        first = helm.install(str(chart), "demo", values, namespace=namespace, timeout=60)
        self.assertNotIn("redrivePolicy", events_queue())
        # The namespace is not labelled for the load balancer's readiness gates yet:
        # the notes say how (and once it is, say nothing more).
        label = f"kubectl label namespace {namespace} elbv2.k8s.aws/pod-readiness-gate-inject=enabled"
        self.assertIn(label, first["notes"])
        kubectl("label", "namespace", namespace, "elbv2.k8s.aws/pod-readiness-gate-inject=enabled")
        self.assertIn(f"kubectl wait --for=condition=ACK.ResourceSynced -n {namespace} --timeout=10m queue/demo-minilab-events-dlq",
                      first["notes"])
        self.assertIn(f"helm upgrade demo CHART -n {namespace} -f VALUES.yaml", first["notes"])
        # What the SQS controller writes (status.ackResourceMetadata, then the synced
        # condition): the ARN alone, not yet synced, is not enough.
        dlq_arn = f"arn:aws:sqs:eu-west-1:{ACCOUNT}:{namespace}-demo-minilab-events-dlq"

        def controller_writes(synced):
            kubectl("patch", "queue", "demo-minilab-events-dlq", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {
                        "ackResourceMetadata": {"arn": dlq_arn, "ownerAccountID": ACCOUNT, "region": "eu-west-1"},
                        "conditions": [{"type": "ACK.ResourceSynced", "status": synced}]}}))

        controller_writes("False")
        helm.upgrade(str(chart), "demo", values, namespace=namespace, timeout=60)
        self.assertNotIn("redrivePolicy", events_queue())
        controller_writes("True")
        kubectl("wait", "--for=condition=ACK.ResourceSynced", "-n", namespace, "--timeout=10s", "queue/demo-minilab-events-dlq")
        upgraded = helm.upgrade(str(chart), "demo", values, namespace=namespace, timeout=60)
        self.assertEqual(json.loads(events_queue()["redrivePolicy"]), {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
        self.assertNotIn("NEXT", upgraded["notes"])
        self.assertNotIn("pod-readiness-gate-inject", upgraded["notes"])


def cli_options(help_text):
    """--flag → (its env variable or None, whether it is required) from clap's help."""
    usage = next(line for line in help_text.splitlines() if line.startswith("Usage:"))
    required = set(re.findall(r"(?<!\[)(--[a-z0-9-]+) <", usage.split("[OPTIONS]")[-1]))
    options, flag = {}, None
    for line in help_text.splitlines():
        found = re.match(r"\s+(?:-\w, )?(--[a-z0-9-]+)", line)
        if found:
            flag = found.group(1)
            options[flag] = (None, flag in required)
        env = re.search(r"\[env: ([A-Z0-9_]+)[=\]]", line)  # a secret's value is hidden: no "="
        if env and flag:
            options[flag] = (env.group(1), flag in required)
    return options


class DockerfileTest(unittest.TestCase):
    """No container engine runs here: the Dockerfile is parsed by BuildKit's own
    parser (the `dockerfile` package) and what matters is asserted."""

    @classmethod
    def setUpClass(cls):
        cls.commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
        cls.stages = []
        for command in cls.commands:
            if command.cmd == "FROM":
                cls.stages.append({"from": command.value, "commands": []})
            elif cls.stages:
                cls.stages[-1]["commands"].append(command)

    def runs(self, stage):
        return " ".join(" ".join(c.value) for c in stage["commands"] if c.cmd == "RUN")

    def test_a_release_build_stage_and_a_slim_runtime_stage(self):
        self.assertEqual([s["from"][-1] for s in self.stages], ["build", "runtime"])
        build, runtime = self.stages
        self.assertTrue(build["from"][0].startswith("rust:"), build["from"])
        self.assertRegex(runtime["from"][0], r"^debian:.*-slim$")
        # The image ships libjpeg-turbo and libheif decoding: the features exist in the
        # binary's manifest, the build links the -dev packages and the runtime has the
        # libraries. It is built with the workspace's `dist` profile (LTO), which must exist.
        features = tomllib.loads((ROOT / "minilab" / "Cargo.toml").read_text())["features"]
        self.assertIn("turbojpeg", features)
        self.assertIn("heif", features)
        self.assertIn("avif", features)
        profiles = tomllib.loads((ROOT / "Cargo.toml").read_text())["profile"]
        self.assertEqual(profiles["dist"]["inherits"], "release")
        self.assertIn("cargo build --profile dist --locked -p minilab --features turbojpeg,heif,avif,cluster", self.runs(build))
        self.assertIn("install -m 0755 target/dist/minilab", self.runs(build))
        self.assertIn("libturbojpeg0-dev", self.runs(build))
        self.assertRegex(self.runs(runtime), r"\blibturbojpeg0\b")
        self.assertIn("libheif-dev", self.runs(build))
        self.assertRegex(self.runs(runtime), r"\blibheif1\b")
        self.assertIn("libavif-dev", self.runs(build))
        self.assertRegex(self.runs(runtime), r"\blibavif15\b")
        self.assertNotRegex(self.runs(runtime), r"-dev\b|cargo|rustc")

    def test_the_runtime_holds_one_binary_run_as_the_charts_non_root_user(self):
        runtime = self.stages[-1]
        copies = [c for c in runtime["commands"] if c.cmd in ("COPY", "ADD")]
        self.assertEqual([(c.cmd, c.flags, c.value) for c in copies],
                         [("COPY", ("--from=build",), ("/minilab", "/usr/local/bin/minilab"))])
        users = [c.value[0] for c in runtime["commands"] if c.cmd == "USER"]
        self.assertEqual(len(users), 1)
        uid, gid = (int(part) for part in users[0].split(":"))
        self.assertGreater(uid, 0)
        context = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
        self.assertEqual((uid, gid), (context["runAsUser"], context["runAsGroup"]))
        entrypoint = [c for c in runtime["commands"] if c.cmd == "ENTRYPOINT"]
        self.assertEqual([(c.json, c.value) for c in entrypoint], [(True, ("/usr/local/bin/minilab",))])
        ignored = (ROOT / ".dockerignore").read_text().split()
        for path in ("target", ".git", "tests/browser/node_modules"):
            self.assertIn(path, ignored)


if __name__ == "__main__":
    sys.exit(unittest.main())
