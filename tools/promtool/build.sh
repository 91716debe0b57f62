#!/usr/bin/env bash
# Build promtool (github.com/prometheus/prometheus/cmd/promtool v0.316.0) from the wrapper module
# here into a cache keyed by the hash of the module files and this script; tools/promtool/bin
# links to it. Prints the binary directory on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
cache="${PORTOLAN_PROMTOOL_CACHE:-$HOME/.cache/portolan-promtool}/$key"
if [ -f "$cache/.complete" ]; then
    ln -sfn "$cache" "$here/bin"
    echo "promtool: cached build"
    echo "$cache"
    exit 0
fi
mkdir -p "$cache"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)
(cd "$here" && go build -trimpath -ldflags "-s -w" -o "$cache/" github.com/prometheus/prometheus/cmd/promtool)
touch "$cache/.complete"
ln -sfn "$cache" "$here/bin"
echo "promtool: built in $(( $(date +%s) - start )) s"
echo "$cache"
