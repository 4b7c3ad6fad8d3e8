#!/usr/bin/env bash
# Builds the Kubernetes API server that the Kubernetes tests run (crates/cli/tests/support/k8s.rs,
# docs/kubernetes.md): kube-apiserver v1.20.2, from Debian 12 (bookworm)'s own `kubernetes`
# source package, with Debian's Go 1.19. Nothing but Debian's package archive is needed: no
# container images, no release downloads, no Go module proxy.
#
#   tests/k8s/build.sh     prints the binary's path when done (or when it was already there)
#
# The result is a per-machine cache, built only when missing:
#   ${MESHGUARD_K8S_DIR:-$HOME/.cache/meshguard-k8s}/bin/kube-apiserver
# A fresh build took 4 min 35 s on a busy 2-core machine, 6 min 7 s with the installs of Go
# and the rest; with the binary present the script only checks the run-time packages (0.1 s).
#
# Also installs, with apt-get when absent (sudo when not root), what the tests need at run time:
# etcd-server (etcd 3.4), kubernetes-client (kubectl, when none is on PATH), openssl, curl.
#
# Why it is built this way:
# - Debian bookworm's `kubernetes` source package (1.20.5+really1.20.2) is the newest one whose
#   orig tarball keeps the upstream tree with vendor/; later Debian releases ship a tree stripped
#   down to kubectl. It is fetched with `apt-get source` through a private deb-src list, so the
#   machine's apt sources are left as they are.
# - Debian's three patches touch only kubectl's printing code; they are not applied.
# - The vendored github.com/modern-go/reflect2 1.0.1 crashes when built with Go >= 1.18
#   ("fatal error: fault" in mapiterinit, at the first JSON decode); it is replaced by Debian's
#   reflect2 1.0.2 (golang-github-modern-go-reflect2-dev), the fixed release.
# - `make WHAT=cmd/kube-apiserver`, as debian/rules does: Kubernetes' own build scripts build in
#   GOPATH mode and generate the OpenAPI code first; a plain `go build` in module mode refuses the
#   vendor tree ("updates to go.mod needed").
set -euo pipefail

k8s_dir=${MESHGUARD_K8S_DIR:-$HOME/.cache/meshguard-k8s}
bin=$k8s_dir/bin/kube-apiserver
version=v1.20.2
orig=kubernetes_1.20.5+really1.20.2.orig.tar.gz
start=$SECONDS

log() { echo "k8s-build: $*" >&2; }

sudo=()
[[ $(id -u) -ne 0 ]] && sudo=(sudo)
apt_updated=false
apt_install() {
  if ! $apt_updated; then
    "${sudo[@]}" apt-get update -qq
    apt_updated=true
  fi
  log "installing $*"
  # (env after sudo: sudo resets the environment.)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Run-time packages of the tests.
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
[[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"

if [[ -x $bin ]] && "$bin" --version 2>/dev/null | grep -qx "Kubernetes $version"; then
  log "$bin is already built ($version), nothing to do ($((SECONDS - start)) s)"
  echo "$bin"
  exit 0
fi

# Build packages. Go comes from /usr/lib/go (Debian's default Go, 1.19 on bookworm), first on
# PATH so that another Go on the machine does not take its place.
missing=()
[[ -x /usr/lib/go/bin/go ]] || missing+=(golang-go)
dpkg -s golang-github-modern-go-reflect2-dev >/dev/null 2>&1 ||
  missing+=(golang-github-modern-go-reflect2-dev)
for tool in make rsync jq; do
  command -v $tool >/dev/null 2>&1 || missing+=("$tool")
done
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
[[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"
export PATH=/usr/lib/go/bin:$PATH
log "$(go version)"

# The source package, through a private apt state in $k8s_dir/apt: deb-src lines for bookworm
# and bookworm-security on the Debian mirrors this machine already uses (deb.debian.org when it
# names none).
deb=$k8s_dir/deb
if [[ ! -f $deb/$orig ]]; then
  t=$SECONDS
  apt_dir=$k8s_dir/apt
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$deb"
  main_uri=http://deb.debian.org/debian
  security_uri=http://deb.debian.org/debian-security
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    for uri in $(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; break } }
                      $1 == "URIs:" { print $2 }' "$f"); do
      case $uri in
        */debian-security | */debian-security/) security_uri=${uri%/} ;;
        */debian | */debian/) main_uri=${uri%/} ;;
      esac
    done
  done
  printf 'deb-src %s bookworm main\ndeb-src %s bookworm-security main\n' \
    "$main_uri" "$security_uri" >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -qq)
  [[ $(id -u) -eq 0 ]] && apt_opts+=(-o APT::Sandbox::User=root)
  log "fetching Debian's kubernetes source package from $main_uri"
  apt-get "${apt_opts[@]}" update
  (cd "$deb" && apt-get "${apt_opts[@]}" source --download-only kubernetes)
  [[ -f $deb/$orig ]] || {
    log "the source package has no $orig: $(ls "$deb")"
    exit 1
  }
  log "source package fetched ($((SECONDS - t)) s)"
fi

# A fresh tree every time: a half-built one from an interrupted run is not trusted.
src=$k8s_dir/src
rm -rf "$src"
mkdir -p "$src"
tar xzf "$deb/$orig" -C "$src" --strip-components=1

# reflect2 1.0.1 -> 1.0.2.
r=$src/vendor/github.com/modern-go/reflect2
reflect2_go=$(dpkg -L golang-github-modern-go-reflect2-dev | grep '/reflect2/reflect2\.go$')
rm -rf "$r" && mkdir "$r"
cp "$(dirname "$reflect2_go")"/*.go "$(dirname "$reflect2_go")"/*.s "$r"/
rm -f "$r"/*_test.go
sed -i 's#^\# github.com/modern-go/reflect2 v1.0.1 => github.com/modern-go/reflect2 v1.0.1$#\# github.com/modern-go/reflect2 v1.0.2 => github.com/modern-go/reflect2 v1.0.2#' \
  "$src/vendor/modules.txt"

# The tarball is a `git archive` of v1.20.2: hack/lib/version.sh reads the version from it.
# GOPROXY=off: nothing may be fetched from outside the tree.
t=$SECONDS
log "make WHAT=cmd/kube-apiserver (a few minutes)"
home=$(mktemp -d)
(cd "$src" && env -u GOPATH -u GOFLAGS -u GOROOT HOME="$home" CGO_ENABLED=0 GOPROXY=off \
  make WHAT=cmd/kube-apiserver) >"$k8s_dir/build.log" 2>&1 || {
  tail -40 "$k8s_dir/build.log" >&2
  log "the build failed; the whole log is $k8s_dir/build.log"
  exit 1
}
rm -rf "$home"
log "make took $((SECONDS - t)) s"

mkdir -p "$k8s_dir/bin"
cp "$src/_output/local/bin/linux/$(go env GOARCH)/kube-apiserver" "$bin.tmp"
mv "$bin.tmp" "$bin"
# The tree and its Go build cache (about 2 GB) are not needed any more.
rm -rf "$src"
"$bin" --version >&2
log "built $bin in $((SECONDS - start)) s"
echo "$bin"
