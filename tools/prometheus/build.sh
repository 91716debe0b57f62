#!/usr/bin/env bash
# Build promtool (alert rule checks and unit tests) from the Go module, cached by the hash of
# this script under ~/.cache/portolan-promtool/<key>/promtool. Prints that directory.
# Built with -tags remove_all_sd: promtool needs no service discovery, and one discovery
# plugin's dependency (hashicorp/nomad/api) is not served by the Go module proxy.
# tools/k8s/build.sh builds promtool too; this is the fallback while its build fails on that.
set -euo pipefail
PROMETHEUS_VERSION=v0.316.0
key=$(sha256sum "$0" | cut -c1-16)
cache="${PORTOLAN_PROMTOOL_CACHE:-$HOME/.cache/portolan-promtool}/$key"
if [ ! -x "$cache/promtool" ]; then
    echo "promtool: building $PROMETHEUS_VERSION" >&2
    mkdir -p "$cache"
    GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS= GOBIN="$cache" go install -trimpath -tags remove_all_sd \
        -ldflags "-s -w" "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" >&2
fi
echo "$cache"
