#!/usr/bin/env bash
# Run the test control plane for humans: etcd, kube-apiserver, controller-manager, scheduler,
# with its own PKI and RBAC, on free loopback ports; prints `export KUBECONFIG=...`.
#   tools/k8s/up.sh            the control plane only
#   tools/k8s/up.sh --nodes    plus the node agent (edge/cloud Nodes, pods run as processes; root): each pod
#                              gets its own netns and an address from its node's podCIDR in 198.19.0.0/16, one
#                              kube-proxy per node (nftables) serves Services, NetworkPolicies are enforced
#                              (tests/harness/netpolicing.py); `ip netns` lists the node and pod namespaces
# Ctrl-C (or SIGTERM) stops every process and deletes the temporary folder and namespaces.
# Needs the binaries from tools/k8s/build.sh (./tools/test.sh builds them).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root/tests"
exec "$root/.venv/bin/python" -m harness.clusters "$@"
