#!/usr/bin/env bash
# Build the test control plane from Go modules: kube-apiserver, kube-controller-manager,
# kube-scheduler, kube-proxy and kubectl (k8s.io/kubernetes v1.37.2 via the wrapper module here),
# etcd v3.6.8 (etcd/), helm, and the test bed's outside judge of NetworkPolicies: cyclonus. Binaries go to a cache keyed by the hash of the module files and of
# this script, so a second run on the same machine does not rebuild; tools/k8s/bin links to it.
# Prints the binary directory on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION=v1.37.2
HELM_VERSION=v3.22.0
CYCLONUS_VERSION=v0.5.6
key=$(cat "$here/go.mod" "$here/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
cache="${PORTOLAN_K8S_CACHE:-$HOME/.cache/portolan-k8s}/$key"
if [ -f "$cache/.complete" ]; then
    ln -sfn "$cache" "$here/bin"
    echo "control plane: cached build"
    echo "$cache"
    exit 0
fi
mkdir -p "$cache"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
echo "control plane: building kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, kubectl)"
(cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$cache/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kubectl)
echo "control plane: building etcd"
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$cache/etcd" go.etcd.io/etcd/server/v3)
echo "control plane: building helm $HELM_VERSION"
GOBIN="$cache" GOFLAGS= go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "control plane: building cyclonus $CYCLONUS_VERSION"
GOBIN="$cache" GOFLAGS= go install -trimpath -ldflags "-s -w" "github.com/mattfenwick/cyclonus/cmd/cyclonus@$CYCLONUS_VERSION"
touch "$cache/.complete"
ln -sfn "$cache" "$here/bin"
echo "control plane: built in $(( $(date +%s) - start )) s"
echo "$cache"
