# Installs (once) and starts LocalStack's S3 and SQS on a free loopback port, pinned,
# in a venv on Python 3.13. Source it, then call start_localstack: it exports
# MINILAB_LOCALSTACK_URL and stops LocalStack when the calling shell exits. With a node
# running (tests/kube/node.sh exports MINILAB_NODE_GW), LocalStack listens on the
# bridge's address as well, at the same port, so pods reach it (MINILAB_NODE_LOCALSTACK_URL).

. "$(dirname "${BASH_SOURCE[0]}")/exit.sh"

start_localstack() {
  LOCALSTACK_VENV="${MINILAB_TOOLS:-/var/tmp/minilab-tools}/localstack-4.14.0"
  if [ ! -x "$LOCALSTACK_VENV/bin/python" ] || [ ! -f "$LOCALSTACK_VENV/.installed" ]; then
    python313="$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python3"
    [ -x "$python313" ] || python313="$(command -v python3.13 || true)"
    [ -n "$python313" ] && [ -x "$python313" ] || { echo "LocalStack needs Python 3.13 (pyenv's 3.13.0 or python3.13)" >&2; exit 1; }
    rm -rf "$LOCALSTACK_VENV"
    "$python313" -m venv "$LOCALSTACK_VENV"
    "$LOCALSTACK_VENV/bin/pip" install --quiet --disable-pip-version-check \
      'localstack-core[runtime]==4.14.0' 'cbor2<5.7' 'service_identity==24.2.0' 'pyopenssl==24.3.0' 'cryptography==44.0.3'
    touch "$LOCALSTACK_VENV/.installed"
  fi

  port="$("$LOCALSTACK_VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  localstack_dir="$(mktemp -d)"
  GATEWAY_LISTEN="127.0.0.1:$port${MINILAB_NODE_GW:+,$MINILAB_NODE_GW:$port}" SERVICES=s3,sqs DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 \
    S3_SKIP_SIGNATURE_VALIDATION=0 SQS_ENDPOINT_STRATEGY=path LOCALSTACK_HOST="127.0.0.1:$port" \
    FILESYSTEM_ROOT="$localstack_dir" \
    setsid "$LOCALSTACK_VENV/bin/python" -m localstack.runtime.main >"$localstack_dir/log" 2>&1 &
  localstack_pid=$!
  on_exit 'kill -- "-$localstack_pid" 2>/dev/null || true; rm -rf "$localstack_dir"'
  export MINILAB_LOCALSTACK_URL="http://127.0.0.1:$port"
  [ -z "${MINILAB_NODE_GW:-}" ] || export MINILAB_NODE_LOCALSTACK_URL="http://$MINILAB_NODE_GW:$port"
  healthy() {
    "$LOCALSTACK_VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "$MINILAB_LOCALSTACK_URL/_localstack/health" 2>/dev/null
  }
  for _ in $(seq 1 120); do
    healthy && break
    kill -0 "$localstack_pid" 2>/dev/null || { cat "$localstack_dir/log" >&2; exit 1; }
    sleep 0.5
  done
  healthy || { echo "LocalStack did not start" >&2; cat "$localstack_dir/log" >&2; exit 1; }
  echo "LocalStack 4.14.0 at $MINILAB_LOCALSTACK_URL"
}
