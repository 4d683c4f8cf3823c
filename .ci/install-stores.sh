#!/usr/bin/env bash
# The extra S3 implementations tests/stores runs against (tests/stores/conftest.py starts and stops them):
#   - LocalStack (S3, SQS, SNS): localstack-core[runtime] 2026.3.0 needs Python >= 3.12; it goes into its own
#     virtualenv .venv-localstack (gitignored), made with the first python3.13/python3.12 found (pyenv's too).
#   - s3rver 3.7.1 (S3 only, Node.js): into .ci/stores/node_modules (gitignored).
# Without them the store tests skip locally and FAIL in CI (CI=true). Run it BEFORE the README test command.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCALSTACK_PINS=("localstack-core[runtime]==2026.3.0" "cbor2<6" "pyopenssl==24.3.0" "cryptography==44.0.3" "service-identity")

find_python() {
    for candidate in python3.13 python3.12 "$HOME"/.pyenv/versions/3.13*/bin/python "$HOME"/.pyenv/versions/3.12*/bin/python; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if ! .venv-localstack/bin/python -c "import localstack.runtime.main, rolo" 2>/dev/null; then
    py=$(find_python) || { echo "install-stores: no Python >= 3.12 found for LocalStack" >&2; exit 1; }
    echo "install-stores: LocalStack into .venv-localstack with $py"
    rm -rf .venv-localstack
    "$py" -m venv .venv-localstack
    .venv-localstack/bin/python -m pip install -q "${LOCALSTACK_PINS[@]}"
fi
.venv-localstack/bin/python -c "import localstack, importlib.metadata as m; print('install-stores: LocalStack', m.version('localstack-core'), 'ready')"

command -v node >/dev/null 2>&1 || { echo "install-stores: Node.js is missing (s3rver needs it)" >&2; exit 1; }
if [ ! -x .ci/stores/node_modules/.bin/s3rver ]; then
    echo "install-stores: npm install s3rver@3.7.1 into .ci/stores"
    mkdir -p .ci/stores
    npm install --prefix .ci/stores --no-save --no-audit --no-fund --loglevel=error s3rver@3.7.1
fi
echo "install-stores: s3rver $(node -p "require('./.ci/stores/node_modules/s3rver/package.json').version") ready (node $(node --version))"
