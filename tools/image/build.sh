#!/usr/bin/env bash
# Build the Dockerfile the way users build it, with buildah (--isolation chroot, never pulling),
# then unpack the image for runc. No image registry is reachable on the build machines, so the
# Dockerfile's base (debian:bookworm-slim) is made here: mmdebstrap's minbase variant with the
# slim image's dpkg excludes (no docs, man pages, locales), committed by buildah under the same name.
#
# Cached by content hash (like the control plane in tools/k8s):
#   ~/.cache/portolan-image/base-<key>.tar   the base root filesystem (key: this script)
#   ~/.cache/portolan-image/<key>/           key: the base, the Dockerfile and every file it copies
#       rootfs/      the final image unpacked (what runc runs)
#       image.json   buildah inspect of the image (its OCI config: user, env, entrypoint)
#       size         "<uncompressed bytes> <compressed bytes>" (layers as pushed, gzip)
# Prints the image folder on stdout; progress goes to stderr.
#   tools/image/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="${PORTOLAN_IMAGE_CACHE:-$HOME/.cache/portolan-image}"
mkdir -p "$cache"
log() { echo "image: $*" >&2; }

base_key=$(sha256sum "$0" | cut -c1-16)
base_name=docker.io/library/debian:bookworm-slim
base_tar="$cache/base-$base_key.tar"
if [ ! -s "$base_tar" ]; then
    log "making $base_name with mmdebstrap"
    mmdebstrap --quiet --variant=minbase --mode=root \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/groff/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --dpkgopt='path-exclude=/usr/share/linda/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$base_tar.tmp" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main" >&2
    mv "$base_tar.tmp" "$base_tar"
fi
if [ "$(buildah inspect --type image --format '{{index .ImageAnnotations "dev.portolan.base"}}' "$base_name" 2>/dev/null)" != "$base_key" ]; then
    log "importing $base_name"
    ctr=$(buildah from --pull=never scratch)
    buildah add --quiet "$ctr" "$base_tar" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash \
        --annotation "dev.portolan.base=$base_key" "$ctr"
    buildah commit --quiet --rm "$ctr" "$base_name" >/dev/null
fi

# Everything the Dockerfile copies, minus what .dockerignore leaves out.
key=$( { echo "$base_key"
         sha256sum Dockerfile .dockerignore requirements.lock pyproject.toml README.md tools/image-install.sh
         find operator -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
       } | sha256sum | cut -c1-16)
out="$cache/$key"
if [ -f "$out/size" ]; then
    echo "$out"
    exit 0
fi

tag="localhost/portolan:$key"
log "building $tag from the Dockerfile"
args=(--isolation chroot --pull=never --layers=false -t "$tag" -f Dockerfile)
# A machine behind a TLS-intercepting proxy (like the build machines) tells pip its CA bundle;
# the bundle is mounted for the build only and never lands in an image layer.
pip_cert="${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}"
if [ -n "$pip_cert" ] && [ -f "$pip_cert" ]; then
    args+=(-v "$pip_cert:/run/build-ca.pem:ro" --build-arg PIP_CERT=/run/build-ca.pem)
fi
buildah bud "${args[@]}" . >&2

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
ctr=$(buildah from --pull=never "$tag")
trap 'buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
cp -a "$(buildah mount "$ctr")/." "$out.tmp/rootfs/"
buildah inspect --type image "$tag" >"$out.tmp/image.json"
buildah push --quiet "$tag" "oci:$out.tmp/oci" >/dev/null
uncompressed=$(du -sb "$out.tmp/rootfs" | cut -f1)
compressed=$(python3 - "$out.tmp/oci" <<'PY'
import json, pathlib, sys
oci = pathlib.Path(sys.argv[1])
blob = lambda d: json.loads((oci / "blobs" / d.replace(":", "/", 1)).read_text())
manifest = blob(json.loads((oci / "index.json").read_text())["manifests"][0]["digest"])
print(sum(layer["size"] for layer in manifest["layers"]))
PY
)
rm -rf "$out.tmp/oci"
echo "$uncompressed $compressed" >"$out.tmp/size"
mv "$out.tmp" "$out"
for old in $(buildah images --noheading --format '{{.Name}}:{{.Tag}}' | grep '^localhost/portolan:' | grep -v ":$key\$"); do
    buildah rmi "$old" >/dev/null 2>&1 || true
done
echo "$out"
