# A single-node Kubernetes for the tests: Kubernetes v1.20.2 (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy built from Debian's
# source package by build-kube), etcd from PyPI, containerd + runc + the bridge CNI
# plugin from Debian, kube-proxy in iptables mode, and dnsmasq on the bridge serving
# the Services' names. Pods run for real. Source it, then call start_node: it exports
# MINILAB_NODE_KUBECONFIG (an admin's), MINILAB_NODE_KUBECTL (kubectl behind the
# bridge check below), MINILAB_NODE_GW (the bridge's address, where the host's
# services are reachable from pods) and MINILAB_NODE_CTR (containerd's socket);
# stop_node runs when the calling shell exits. `tests/kube/up --node` does this by hand.
#
# Run as root. One node per machine (state in $MINILAB_NODE_DIR, a lock beside it):
# the kubelet and containerd keep some state at fixed paths.
#
# Traffic stays on this machine:
# - `unreachable` routes for the pod and service ranges are installed before anything
#   starts, so without the bridge nothing of 10.88/16 or 10.96.0/24 takes the default
#   route; nothing is masqueraded;
# - the FORWARD chain rejects anything entering or leaving the bridge from or to
#   another interface (pods reach the host's own address and each other only);
# - the kubectl the tests get refuses to run unless the bridge holds its address;
# - stop_node removes every route, iptables rule (ours and kube-proxy's), mount,
#   network namespace and sysctl it changed, and the bridge.

. "$(dirname "${BASH_SOURCE[0]}")/kube.sh"

NODE_NAME=minilab-node
NODE_BRIDGE=minilab0
NODE_GW=10.88.0.1
NODE_POD_CIDR=10.88.0.0/16
NODE_SVC_CIDR=10.96.0.0/24
NODE_MARK="minilab-node"  # the comment on our own iptables rules

node_tools() {
  kube_tools
  local here missing="" tool
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  for tool in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    [ -x "$KUBE_BIN/$tool" ] || missing="$missing $tool"
  done
  if [ -n "$missing" ]; then
    echo "Kubernetes $KUBE_VERSION:$missing not built yet; building from Debian's source package"
    # shellcheck disable=SC2086
    "$here/build-kube" "$KUBE_BIN" $missing
  fi
  missing=""
  for tool in containerd:containerd runc:runc dnsmasq:dnsmasq-base iptables:iptables mmdebstrap:mmdebstrap gcc:gcc; do
    command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool#*:}"
  done
  [ -x /usr/lib/cni/bridge ] || missing="$missing containernetworking-plugins"
  [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing="$missing libc6-dev"
  if [ -n "$missing" ]; then
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
  # The sandbox ("pause") image: a static program that waits for a signal.
  NODE_PAUSE="$KUBE_TOOLS/pause.tar"
  if [ ! -f "$NODE_PAUSE" ]; then
    local root
    root="$(mktemp -d)"
    gcc -static -Os -s -o "$root/pause" "$here/node/pause.c"
    python3 "$here/node/mkoci.py" --layer "$root" --name minilab.local/pause:1 --entrypoint '["/pause"]' -o "$NODE_PAUSE.part"
    mv "$NODE_PAUSE.part" "$NODE_PAUSE"
    rm -rf "$root"
  fi
}

# kubectl for the node's tests: refuses while the bridge lacks its address (requests
# to 10.88.0.1 would otherwise leave by the default route).
node_guard() {
  ip -4 addr show "$NODE_BRIDGE" 2>/dev/null | grep -q "inet $NODE_GW/" || {
    echo "$NODE_BRIDGE has no $NODE_GW: refusing to talk to the node's API server" >&2
    return 1
  }
}

start_node() {
  [ "$(id -u)" -eq 0 ] || { echo "the node needs root (containerd, kubelet, iptables)" >&2; exit 1; }
  node_tools
  MINILAB_NODE_DIR="${MINILAB_NODE_DIR:-/var/tmp/minilab-node}"
  mkdir -p "$(dirname "$MINILAB_NODE_DIR")"
  exec {node_lock}>"$MINILAB_NODE_DIR.lock"
  flock -n "$node_lock" || { echo "another node runs on this machine ($MINILAB_NODE_DIR.lock)" >&2; exit 1; }
  local started
  started=$(date +%s.%N)
  node_cleanup  # whatever an earlier run left behind (a killed run, say)
  on_exit stop_node
  node_network
  node_files
  local dir="$MINILAB_NODE_DIR"

  node_start etcd "$ETCD" --name "$NODE_NAME" --data-dir "$dir/etcd" \
    --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:23800" --unsafe-no-fsync
  node_start kube-apiserver "$KUBE_BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:23790 \
    --bind-address="$NODE_GW" --advertise-address="$NODE_GW" --secure-port=6443 --insecure-port=0 \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" --token-auth-file="$dir/pki/tokens.csv" --anonymous-auth=false \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/pki/sa.pub" --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range="$NODE_SVC_CIDR" --service-node-port-range=30000-32767 \
    --kubelet-client-certificate="$dir/pki/kubelet-client.crt" --kubelet-client-key="$dir/pki/kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP --enable-priority-and-fairness=false
  node_start containerd /usr/bin/containerd --config "$dir/containerd.toml"
  export MINILAB_NODE_KUBECONFIG="$dir/conf/admin.kubeconfig" MINILAB_NODE_KUBECTL="$dir/bin/kubectl"
  local kubectl=(env KUBECONFIG="$MINILAB_NODE_KUBECONFIG" "$MINILAB_NODE_KUBECTL")
  node_wait 240 "the API server" "${kubectl[@]}" get --raw /readyz
  node_start kube-controller-manager "$KUBE_BIN/kube-controller-manager" --kubeconfig="$dir/conf/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$dir/conf/controller-manager.kubeconfig" --authorization-kubeconfig="$dir/conf/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10257 --port=0 --leader-elect=false \
    --service-account-private-key-file="$dir/pki/sa.key" --root-ca-file="$dir/pki/ca.crt" --use-service-account-credentials=true \
    --cluster-signing-cert-file="$dir/pki/ca.crt" --cluster-signing-key-file="$dir/pki/ca.key" \
    --service-cluster-ip-range="$NODE_SVC_CIDR" --cluster-cidr="$NODE_POD_CIDR" --allocate-node-cidrs=false
  node_start kube-scheduler "$KUBE_BIN/kube-scheduler" --kubeconfig="$dir/conf/scheduler.kubeconfig" \
    --authentication-kubeconfig="$dir/conf/scheduler.kubeconfig" --authorization-kubeconfig="$dir/conf/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --port=0 --leader-elect=false
  MINILAB_NODE_CTR="$dir/containerd/containerd.sock"
  node_wait 40 "containerd" test -S "$MINILAB_NODE_CTR"
  ctr -a "$MINILAB_NODE_CTR" -n k8s.io images import "$NODE_PAUSE" >/dev/null
  node_start dns env KUBECONFIG="$MINILAB_NODE_KUBECONFIG" KUBECTL="$MINILAB_NODE_KUBECTL" \
    "$(dirname "${BASH_SOURCE[0]}")/node/dns-sync" "$dir" "$NODE_GW"
  node_start kubelet "$KUBE_BIN/kubelet" --config="$dir/kubelet.yaml" --kubeconfig="$dir/conf/kubelet.kubeconfig" \
    --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_GW" \
    --container-runtime=remote --container-runtime-endpoint="unix://$MINILAB_NODE_CTR" --runtime-request-timeout=5m --v=1
  node_start kube-proxy "$KUBE_BIN/kube-proxy" --kubeconfig="$dir/conf/kube-proxy.kubeconfig" --proxy-mode=iptables \
    --hostname-override="$NODE_NAME" --bind-address="$NODE_GW" --cluster-cidr="$NODE_POD_CIDR" \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 \
    --nodeport-addresses="127.0.0.0/8,$NODE_POD_CIDR" \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0
  node_wait 240 "the node to be Ready" node_ready
  node_wait 60 "kube-proxy's rules" iptables -C FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
  node_fence
  export MINILAB_NODE_GW="$NODE_GW" MINILAB_NODE_CTR
  echo "Kubernetes $KUBE_VERSION node Ready after $(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$started" "$(date +%s.%N)") s (state in $dir)"
}

node_ready() {
  KUBECONFIG="$MINILAB_NODE_KUBECONFIG" "$MINILAB_NODE_KUBECTL" get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True
}

# The bridge, its routes, the FORWARD fence and the sysctls kube-proxy and the bridge
# plugin need (their old values kept for stop_node).
node_network() {
  local dir="$MINILAB_NODE_DIR" cidr
  mkdir -p "$dir"
  for cidr in "$NODE_POD_CIDR" "$NODE_SVC_CIDR"; do
    ip route show | grep -q "^unreachable $cidr " || ip route add unreachable "$cidr" metric 4000
  done
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
  ip addr show "$NODE_BRIDGE" | grep -q "inet $NODE_GW/" || ip addr add "$NODE_GW/16" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # The host's own requests to a ClusterIP: the route lookup before kube-proxy's DNAT
  # must pick the bridge, not the default route.
  ip route replace "$NODE_SVC_CIDR" dev "$NODE_BRIDGE" src "$NODE_GW"
  node_fence
  modprobe br_netfilter 2>/dev/null || true
  [ -f "$dir/sysctl.orig" ] || sysctl net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables \
    net.ipv4.conf.all.route_localnet | tr -d ' ' >"$dir/sysctl.orig"
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
}

# FORWARD rejects whatever crosses between the bridge and another interface, ahead of
# every other rule (kube-proxy inserts its own jumps at the top when it starts, and
# leaves them be once they exist: the fence is put back in front after it).
node_fence() {
  local rule
  for rule in "-i $NODE_BRIDGE ! -o $NODE_BRIDGE" "-o $NODE_BRIDGE ! -i $NODE_BRIDGE"; do
    # shellcheck disable=SC2086
    while iptables -D FORWARD $rule -m comment --comment "$NODE_MARK" -j REJECT 2>/dev/null; do :; done
    # shellcheck disable=SC2086
    iptables -I FORWARD 1 $rule -m comment --comment "$NODE_MARK" -j REJECT
  done
}

# Certificates, tokens, kubeconfigs and the components' configuration files.
node_files() {
  local dir="$MINILAB_NODE_DIR"
  rm -rf "$dir/pki" "$dir/conf" "$dir/etcd" "$dir/logs" "$dir/pids" "$dir/cni-ipam" "$dir/dns"
  mkdir -p "$dir/pki" "$dir/conf" "$dir/logs" "$dir/pids" "$dir/containerd" "$dir/cni" "$dir/bin"
  (
    cd "$dir/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 7 -subj /CN=minilab-node-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
      "$NODE_GW" "${NODE_SVC_CIDR%.0/*}.1" >san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 7 -extfile san.ext 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
      -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out kubelet-client.crt -days 7 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    : >tokens.csv
  )
  local who
  for who in "admin admin system:masters" "controller-manager system:kube-controller-manager" \
    "scheduler system:kube-scheduler" "kubelet system:node:$NODE_NAME system:nodes" "kube-proxy system:kube-proxy"; do
    # shellcheck disable=SC2086
    node_identity $who
  done
  cat >"$dir/containerd.toml" <<TOML
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd/containerd.sock"
[ttrpc]
  address = "$dir/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "minilab.local/pause:1"
  disable_apparmor = true
  # This VM grants no CAP_SYS_RESOURCE: sandboxes (-998) and Guaranteed pods (-997)
  # could not lower their oom_score_adj.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
        Root = "$dir/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
    max_conf_num = 1
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
TOML
  cat >"$dir/cni/10-minilab.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "minilab",
  "plugins": [
    {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$dir/cni-ipam",
              "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_GW"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
JSON
  echo "nameserver $NODE_GW" >"$dir/resolv.conf"
  cat >"$dir/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_GW
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$NODE_GW]
resolvConf: $dir/resolv.conf
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
YAML
  cat >"$dir/bin/kubectl" <<SH
#!/bin/sh
# kubectl for the node: refuses unless the bridge holds $NODE_GW.
ip -4 addr show $NODE_BRIDGE 2>/dev/null | grep -q "inet $NODE_GW/" || {
  echo "$NODE_BRIDGE has no $NODE_GW: refusing to talk to the node's API server" >&2; exit 1; }
exec "$KUBECTL" "\$@"
SH
  chmod +x "$dir/bin/kubectl"
}

# A static token and its kubeconfig: node_identity NAME USER [GROUP]
node_identity() {
  local dir="$MINILAB_NODE_DIR" token
  token="$(openssl rand -hex 24)"
  echo "$token,$2,$2${3:+,\"$3\"}" >>"$dir/pki/tokens.csv"
  cat >"$dir/conf/$1.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: minilab-node
    cluster: {server: "https://$NODE_GW:6443", certificate-authority: "$dir/pki/ca.crt"}
users:
  - name: $1
    user: {token: "$token"}
contexts:
  - name: minilab-node
    context: {cluster: minilab-node, user: $1}
current-context: minilab-node
YAML
}

# node_start NAME COMMAND...: a component in a session of its own, its log and PID kept.
node_start() {
  local name="$1"
  shift
  setsid "$@" >"$MINILAB_NODE_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$MINILAB_NODE_DIR/pids/$name.pid"
}

# node_wait HALF_SECONDS WHAT COMMAND...: until COMMAND succeeds, or fail with the logs.
node_wait() {
  local tries="$1" what="$2" _
  shift 2
  for _ in $(seq 1 "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "timed out waiting for $what; the last lines of each component's log:" >&2
  tail -n 15 "$MINILAB_NODE_DIR"/logs/*.log >&2
  exit 1
}

# Signals the component NAME started, if its PID still runs one of our programs.
node_signal() {
  local pid
  pid="$(cat "$MINILAB_NODE_DIR/pids/$2.pid" 2>/dev/null)" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE "$MINILAB_NODE_DIR|$KUBE_TOOLS|containerd|dns-sync" && kill "-$1" "$pid"
}

stop_node() {
  node_cleanup
  [ -n "${MINILAB_KEEP_NODE_DIR:-}" ] || rm -rf "${MINILAB_NODE_DIR:?}/etcd" "$MINILAB_NODE_DIR/containerd" "$MINILAB_NODE_DIR/kubelet"
  return 0
}

# Stops every component and undoes what start_node changed on the machine; safe to run
# when nothing runs.
node_cleanup() {
  local dir="${MINILAB_NODE_DIR:?}" name task ipt table chain mount ns _
  [ -d "$dir" ] || return 0
  for name in dns kube-proxy kubelet kube-scheduler kube-controller-manager; do node_signal TERM "$name" || true; done
  # Pod containers, before containerd goes (their shims belong to no one else).
  if [ -S "$dir/containerd/containerd.sock" ]; then
    local ctr_=(ctr -a "$dir/containerd/containerd.sock" -n k8s.io)
    for task in $("${ctr_[@]}" tasks ls -q 2>/dev/null); do "${ctr_[@]}" tasks kill -s KILL "$task" >/dev/null 2>&1 || true; done
    for _ in $(seq 1 20); do
      [ -z "$("${ctr_[@]}" tasks ls -q 2>/dev/null | head -1)" ] && break
      for task in $("${ctr_[@]}" tasks ls -q 2>/dev/null); do "${ctr_[@]}" tasks delete -f "$task" >/dev/null 2>&1 || true; done
      sleep 0.25
    done
  fi
  for name in containerd kube-apiserver etcd; do node_signal TERM "$name" || true; done
  for _ in $(seq 1 40); do
    local alive=0
    for name in dns kube-proxy kubelet kube-scheduler kube-controller-manager containerd kube-apiserver etcd; do
      node_signal 0 "$name" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.25
  done
  for name in dns kube-proxy kubelet kube-scheduler kube-controller-manager containerd kube-apiserver etcd; do
    node_signal KILL "$name" 2>/dev/null || true
  done
  rm -f "$dir"/pids/*.pid
  local dnsmasq
  dnsmasq="$(cat "$dir/dns/dnsmasq.pid" 2>/dev/null)" && grep -q dnsmasq "/proc/$dnsmasq/cmdline" 2>/dev/null && kill "$dnsmasq"
  # kube-proxy's chains (KUBE-*) and our own FORWARD fence.
  for ipt in iptables ip6tables; do
    for table in filter nat mangle; do
      { $ipt -t "$table" -S 2>/dev/null || true; } | { grep -E "^-A .*(KUBE-|\"?$NODE_MARK\"?)" || true; } |
        sed 's/^-A/-D/' | while read -r rule; do eval "$ipt -t $table $rule" 2>/dev/null || true; done
      for chain in $($ipt -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do $ipt -t "$table" -F "$chain" 2>/dev/null || true; done
      for chain in $($ipt -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do $ipt -t "$table" -X "$chain" 2>/dev/null || true; done
    done
  done
  if [ -f "$dir/sysctl.orig" ]; then sysctl -q -p "$dir/sysctl.orig" && rm -f "$dir/sysctl.orig"; fi
  for ns in /var/run/netns/cni-*; do
    [ -e "$ns" ] && { umount "$ns" 2>/dev/null || true; rm -f "$ns"; }
  done
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  ip route del "$NODE_SVC_CIDR" dev "$NODE_BRIDGE" 2>/dev/null || true
  ip route del unreachable "$NODE_POD_CIDR" metric 4000 2>/dev/null || true
  ip route del unreachable "$NODE_SVC_CIDR" metric 4000 2>/dev/null || true
  # The kubelet's secret and projected volumes, containerd's overlay and shm mounts:
  # deepest first.
  { grep -o " $dir/[^ ]*" /proc/mounts || true; } | sort -r | while read -r mount; do
    umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true
  done
  # Paths the kubelet 1.20 and containerd's CNI hard-code outside the state folder.
  rm -rf /var/log/pods /var/log/containers /var/lib/kubelet
  rm -f /var/lib/cni/results/minilab-* /var/lib/cni/results/cni-loopback-*
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  # The kubelet's QoS and pod cgroups, empty once the containers are gone.
  for chain in /sys/fs/cgroup/*/kubepods; do
    [ -d "$chain" ] && find "$chain" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  return 0
}

# node_image PYTHON BINARY: the container image (tests/kube/node/image.py, from the
# Dockerfile's runtime stage and BINARY) imported into the node's containerd; exports
# MINILAB_NODE_IMAGE. PYTHON has the `dockerfile` package (the chart tests' venv).
node_image() {
  local here archive
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  archive="$MINILAB_NODE_DIR/image.tar"
  MINILAB_NODE_IMAGE=minilab.local/minilab:test
  "$1" "$here/node/image.py" --dockerfile "$here/../../Dockerfile" --binary "$2" --cache "$KUBE_TOOLS" \
    --name "$MINILAB_NODE_IMAGE" -o "$archive"
  ctr -a "$MINILAB_NODE_CTR" -n k8s.io images import "$archive" >/dev/null
  rm -f "$archive"
  export MINILAB_NODE_IMAGE
}
