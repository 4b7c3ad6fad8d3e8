#!/usr/bin/env bash
# Stops what tests/k8s/start-apiserver.sh started in DIR (default $MESHGUARD_K8S_DIR/run): the
# kube-apiserver, then etcd, by the process ids recorded there, and only while those ids still
# name an etcd and a kube-apiserver. SIGTERM, then SIGKILL for a process still running 10 s
# later. The directory (etcd data, logs, kubeconfigs) stays; the next start empties it.
#
#   tests/k8s/stop-apiserver.sh [DIR]
set -uo pipefail

k8s_dir=${MESHGUARD_K8S_DIR:-$HOME/.cache/meshguard-k8s}
dir=${1:-$k8s_dir/run}

stop() {
  local name=$1 pid_file=$dir/$1.pid pid
  [[ -f $pid_file ]] || return 0
  pid=$(cat "$pid_file")
  rm -f "$pid_file"
  # Only that program: a process id left from an earlier boot may name another process now.
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 0
  kill -TERM "$pid"
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    echo "stop-apiserver: $name (pid $pid) killed"
  else
    echo "stop-apiserver: $name (pid $pid) stopped"
  fi
}
stop kube-apiserver
stop etcd
