#!/bin/bash
# Builds a real kube-apiserver and kube-controller-manager (v1.20.2) for the Kubernetes tests,
# offline, from Debian's `kubernetes` source package with Debian's Go (no Go module proxy).
# Once per machine: the binaries are cached outside the checkout, so later runs and CI reuse them.
# Usage: scripts/kube-build.sh   (binaries go to $CAIRN_KUBE_BIN, default /var/tmp/cairn-k8s-bin)
# About 17 minutes on 2 cores from nothing.
set -euo pipefail
WORK=${CAIRN_KUBE_SRC:-/var/tmp/cairn-k8s-src}
OUT=${CAIRN_KUBE_BIN:-/var/tmp/cairn-k8s-bin}
JOBS=${GO_BUILD_JOBS:-2}
BINS="kube-apiserver kube-controller-manager"
missing=0; for b in $BINS; do [ -x "$OUT/$b" ] || missing=1; done
[ $missing = 0 ] && exit 0

export DEBIAN_FRONTEND=noninteractive
if [ -z "$(apt-cache showsrc kubernetes 2>/dev/null)" ]; then
  # enable source packages from the archive the machine already uses
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
    > /etc/apt/sources.list.d/debian-src.sources
  apt-get update -q
fi
apt-get install -y -q golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev etcd-server >/dev/null

mkdir -p "$WORK" "$OUT"
cd "$WORK"
if [ ! -d src ]; then
  apt-get source --download-only kubernetes
  dpkg-source -x kubernetes_*.dsc src
fi
cd src

# Kubernetes 1.20 vendors modern-go/reflect2 1.0.1, which crashes in JSON encoding when built
# with Go >= 1.18: swap in Debian's API-compatible 1.0.2.
R=vendor/github.com/modern-go/reflect2
if [ ! -f "$R/go_above_118.go" ]; then
  find "$R" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -delete
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
    /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$R/"
fi

export GOPATH=$PWD/.go CGO_ENABLED=0 GOPROXY=off GOFLAGS=-p=$JOBS HOME=$WORK/home
mkdir -p .go/src/k8s.io "$HOME"
[ -L .go/src/k8s.io/kubernetes ] || ln -s ../../.. .go/src/k8s.io/kubernetes
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" GOFLAGS=-p=$JOBS
for b in $BINS; do cp "_output/bin/$b" "$OUT/"; done
"$OUT/kube-apiserver" --version
