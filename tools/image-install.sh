#!/usr/bin/env bash
# The image's install steps (the Dockerfile's build stage runs them): a venv at PREFIX with the
# pinned dependencies of requirements.lock, then Portolan itself without resolving anything else,
# then the installers removed (the final image installs nothing).
#   tools/image-install.sh PREFIX SOURCE_DIR
set -euo pipefail
prefix="$1"
src="$2"
python3 -m venv "$prefix"
"$prefix/bin/pip" install --no-cache-dir --quiet --upgrade pip
"$prefix/bin/pip" install --no-cache-dir --quiet --no-deps -r "$src/requirements.lock"
"$prefix/bin/pip" install --no-cache-dir --quiet --no-deps "$src"
"$prefix/bin/pip" check
"$prefix/bin/pip" uninstall --quiet --yes pip setuptools
