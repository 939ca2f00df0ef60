#!/bin/sh
# Build dist/wahookd.pyz: one file holding wahookd and its pinned dependencies.
#
#   packaging/build-pyz.sh [PYTHON [OUTPUT]]   (make pyz: the venv's python, dist/wahookd.pyz)
#
# PYTHON needs shiv installed (it is in the [test] extra).
#
# The zipapp carries compiled wheels (aiohttp, uvloop, cryptography), so build it
# with the same Python minor version and platform as the server it runs on.
# On first start shiv unpacks it to $SHIV_ROOT (default ~/.shiv); the systemd
# unit points that at wahookd's cache directory.
set -eu

PYTHON=${1:-python3}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${2:-"$root/dist/wahookd.pyz"}

mkdir -p "$(dirname "$out")"
"$PYTHON" -m shiv \
    --console-script wahookd \
    --python '/usr/bin/env python3' \
    --output-file "$out" \
    --reproducible \
    --compressed \
    -r "$here/requirements.txt" \
    "$root"
echo "built $out ($(du -h "$out" | cut -f1))"
