#!/usr/bin/env bash
# Starts a Kubernetes API server for trying meshguard's Kubernetes mode by hand
# (docs/kubernetes.md): etcd and the kube-apiserver built by tests/k8s/build.sh, both on free
# ports of 127.0.0.1, everything (etcd data, certificates, tokens, logs, kubeconfigs) in one
# directory. No scheduler, controller manager or kubelet: API objects only (CRDs and custom
# resources, namespaces, RBAC, watches, server-side dry runs); pods are stored, never run.
#
#   tests/k8s/start-apiserver.sh [DIR]    DIR defaults to $MESHGUARD_K8S_DIR/run
#   tests/k8s/stop-apiserver.sh [DIR]
#
# Prints the admin kubeconfig's path on stdout (export KUBECONFIG=$(tests/k8s/start-apiserver.sh)).
# DIR also gets kubeconfig-meshguard: the user `meshguard`, authenticated but with no rights
# until a RoleBinding gives it some (for RBAC checks).
#
# Authentication: static bearer tokens (DIR/tokens.csv): `admin` in group system:masters, and
# `meshguard`; ServiceAccount tokens (TokenRequest) are signed with DIR/pki/sa.key.
# Authorization: RBAC. The serving certificate is issued by a CA of its own (DIR/pki/ca.crt):
# webpki, which rustls clients use, refuses a self-signed CA certificate as a server's.
# etcd and the API server run in sessions of their own: closing the terminal leaves them running.
# The crates/cli/tests/support/k8s.rs harness starts the same server with the same flags.
set -euo pipefail

k8s_dir=${MESHGUARD_K8S_DIR:-$HOME/.cache/meshguard-k8s}
apiserver=$k8s_dir/bin/kube-apiserver
dir=${1:-$k8s_dir/run}
ready_timeout=${READY_TIMEOUT:-60}
start_ms=$(date +%s%3N)

log() { echo "start-apiserver: $*" >&2; }
die() {
  log "$*"
  exit 1
}

[[ -x $apiserver ]] || die "$apiserver is missing: run tests/k8s/build.sh"
for tool in etcd openssl curl; do
  command -v $tool >/dev/null || die "$tool is missing: run tests/k8s/build.sh"
done
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if alive "$dir/etcd.pid" || alive "$dir/kube-apiserver.pid"; then
  die "already running in $dir: stop it first with tests/k8s/stop-apiserver.sh $dir"
fi

# Three free ports on 127.0.0.1: below the range the kernel picks the local ports of outgoing
# connections from (a port there can be taken by any connection in the meantime), and nothing
# answers a connection to them now.
ephemeral_low=32768
[[ -r /proc/sys/net/ipv4/ip_local_port_range ]] &&
  read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range
ports=()
while [[ ${#ports[@]} -lt 3 ]]; do
  p=$((10000 + RANDOM % (ephemeral_low - 10000)))
  [[ " ${ports[*]} " == *" $p "* ]] && continue
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
  ports+=("$p")
done
etcd_port=${ports[0]} peer_port=${ports[1]} api_port=${ports[2]}

rm -rf "$dir/etcd" "$dir/pki" "$dir"/*.log
mkdir -p "$dir/pki"
chmod 700 "$dir"
pki=$dir/pki

openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=meshguard-test-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
  -keyout "$pki/serving.key" -out "$pki/serving.csr" 2>/dev/null
printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
  extendedKeyUsage=serverAuth subjectAltName=IP:127.0.0.1,DNS:localhost >"$pki/serving.ext"
openssl x509 -req -in "$pki/serving.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 365 -extfile "$pki/serving.ext" -out "$pki/serving.crt" 2>/dev/null
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
admin_token=$(openssl rand -hex 24)
user_token=$(openssl rand -hex 24)
printf '%s,admin,admin,"system:masters"\n%s,meshguard,meshguard\n' "$admin_token" "$user_token" \
  >"$dir/tokens.csv"

setsid etcd --name meshguard-test --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "meshguard-test=http://127.0.0.1:$peer_port" \
  >"$dir/etcd.log" 2>&1 </dev/null &
echo $! >"$dir/etcd.pid"

setsid "$apiserver" \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
  --secure-port="$api_port" --insecure-port=0 \
  --tls-cert-file="$pki/serving.crt" --tls-private-key-file="$pki/serving.key" \
  --cert-dir="$dir/certs" \
  --token-auth-file="$dir/tokens.csv" --anonymous-auth=false \
  --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --api-audiences=https://kubernetes.default.svc \
  --service-cluster-ip-range=10.0.0.0/24 \
  --endpoint-reconciler-type=none \
  --disable-admission-plugins=ServiceAccount \
  --profiling=false \
  >"$dir/kube-apiserver.log" 2>&1 </dev/null &
echo $! >"$dir/kube-apiserver.pid"

kubeconfig() { # USER TOKEN
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: meshguard-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: $1
  user:
    token: $2
contexts:
- name: $1
  context:
    cluster: meshguard-test
    user: $1
    namespace: default
current-context: $1
EOF
}
umask 077
kubeconfig admin "$admin_token" >"$dir/kubeconfig"
kubeconfig meshguard "$user_token" >"$dir/kubeconfig-meshguard"

deadline=$((SECONDS + ready_timeout))
until [[ $(curl -sS --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_token" \
  "https://127.0.0.1:$api_port/readyz" 2>/dev/null) == ok ]]; do
  for p in etcd kube-apiserver; do
    alive "$dir/$p.pid" || {
      tail -20 "$dir/$p.log" >&2
      "$(dirname "$0")/stop-apiserver.sh" "$dir" >&2
      die "$p exited (log: $dir/$p.log)"
    }
  done
  if [[ $SECONDS -ge $deadline ]]; then
    tail -20 "$dir/kube-apiserver.log" >&2
    "$(dirname "$0")/stop-apiserver.sh" "$dir" >&2
    die "not ready after ${ready_timeout} s"
  fi
  sleep 0.2
done
log "ready in $(($(date +%s%3N) - start_ms)) ms: https://127.0.0.1:$api_port (etcd 127.0.0.1:$etcd_port), logs in $dir"
log "admin:     export KUBECONFIG=$dir/kubeconfig"
log "meshguard: $dir/kubeconfig-meshguard (no rights until bound)"
log "stop:      tests/k8s/stop-apiserver.sh $dir"
echo "$dir/kubeconfig"
