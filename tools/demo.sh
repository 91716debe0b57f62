#!/usr/bin/env bash
# The main job: a local scan of the embedded default ScanJob, no cluster.
# Installs Portolan into .venv if needed, then runs `portolan scan` inside a fresh
# network namespace (loopback only, with a small web server listening on 8080 so
# the report has something open), so this machine's own services are never touched.
# Extra arguments go to `portolan scan` (e.g. -o json).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/portolan ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e .
fi
ns="portolan-demo-$$"
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip -n "$ns" link set lo up
ip netns exec "$ns" .venv/bin/python -m http.server 8080 --bind 127.0.0.1 >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    ip netns exec "$ns" .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', 8080), 1)" 2>/dev/null && break
    sleep 0.1
done
ip netns exec "$ns" .venv/bin/portolan scan "$@"
