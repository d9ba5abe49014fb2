"""`helm install`, `upgrade` and `uninstall` of charts/minilab with the real Helm
engine (Helm v4's SDK), against the cluster KUBECONFIG names, for the node tests:

    helm.py install|upgrade RELEASE NAMESPACE VALUES_JSON    prints the release as JSON
    helm.py uninstall RELEASE NAMESPACE

No waiting here: the tests wait for what they check, and time it."""
import json
import sys
from pathlib import Path

import helm_python as hp

CHART = Path(__file__).resolve().parents[2] / "charts" / "minilab"


def main(action, release, namespace, values="{}"):
    helm = hp.Config(namespace=namespace)
    if action == "uninstall":
        helm.uninstall(release, ignore_not_found=True)
        return
    if action not in ("install", "upgrade"):
        raise SystemExit(f"unknown action {action}")
    done = getattr(helm, action)(str(CHART), release, json.loads(values), namespace=namespace, timeout=120)
    json.dump(done, sys.stdout)


if __name__ == "__main__":
    main(*sys.argv[1:])
