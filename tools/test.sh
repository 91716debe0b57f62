#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run them all.
#   1. Debian packages (nmap, masscan for side-by-side checks; nftables, iproute2 for the lab;
#      lua5.1 for the Argo CD health scripts; buildah, runc, mmdebstrap for the image)
#   2. a virtualenv in .venv with Portolan and its test extras
#   3. the test control plane and promtool, built from Go modules (cached by go.sum hash);
#      the image is built from the Dockerfile by its test (buildah, cached by content hash)
#   4. ruff, mypy --strict, import-linter contracts, pytest (warnings are errors)
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(nmap masscan nftables iproute2 libpcap-dev tcpdump ca-certificates lua5.1 buildah runc mmdebstrap)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
echo "== installing Portolan into .venv"
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'

if [ -x tools/k8s/build.sh ]; then
    echo "== building the test control plane"
    tools/k8s/build.sh
fi
echo "== building promtool (alert rule checks)"
tools/promtool/build.sh

echo "== ruff"
.venv/bin/ruff check operator tests bench
echo "== mypy --strict"
.venv/bin/mypy
echo "== import contracts (.importlinter: layers, independent programs, no cluster libraries below the boundary)"
PYTHONPATH=operator .venv/bin/lint-imports
echo "== pytest"
exec .venv/bin/pytest "$@"
