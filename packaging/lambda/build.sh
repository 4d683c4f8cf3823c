#!/usr/bin/env bash
# Build the AWS Lambda deployment zip of thumbdrop's worker.
#
#   packaging/lambda/build.sh                  # x86_64, Python 3.12 runtime
#   ARCH=arm64 PYTHON_VERSION=3.13 packaging/lambda/build.sh
#   OUT=/tmp/worker.zip packaging/lambda/build.sh
#
# Pillow and PyAV (video posters and previews; its wheel bundles FFmpeg) come as manylinux wheels for the Lambda runtime (whatever this machine
# is); boto3 is in the runtime already, so it is left out (and so is watchdog,
# which only the uploader needs).
set -euo pipefail

arch=${ARCH:-x86_64}
py=${PYTHON_VERSION:-3.12}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$root/dist/thumbdrop-lambda-$arch.zip}
case "$arch" in
    x86_64) platforms=(--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64) ;;
    arm64) platforms=(--platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64) ;;
    *) echo "ARCH must be x86_64 or arm64, not $arch" >&2; exit 2 ;;
esac

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
python3 -m pip install --quiet --disable-pip-version-check --target "$build" "${platforms[@]}" \
    --implementation cp --python-version "$py" --only-binary=:all: Pillow PyYAML tenacity platformdirs av
# The agent package is pure Python: copied as it is (a pip build would leave build/ in the work tree).
cp -r "$root/agent" "$build/agent"
rm -rf "$build/agent/tray"
cp "$here/handler.py" "$build/"
rm -rf "$build/bin"
find "$build" -name __pycache__ -prune -exec rm -rf {} +

mkdir -p "$(dirname "$out")"
python3 - "$build" "$out" <<'PY'
import shutil
import sys

build, out = sys.argv[1], sys.argv[2]
shutil.make_archive(out.removesuffix(".zip"), "zip", build)
PY
echo "built $out ($(du -h "$out" | cut -f1)); handler: handler.handler, runtime python$py, architecture $arch"
