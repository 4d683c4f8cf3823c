#!/usr/bin/env bash
# What the gallery's browser tests (tests/e2e/test_gallery_browser.py) and benchmarks/bench_gallery.py need on
# Debian 12: Debian's chromium and chromium-driver (Selenium drives /usr/bin/chromedriver; nothing is ever
# downloaded), and selenium into .venv. Without them the browser tests skip locally, and fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(chromium chromium-driver)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-gallery-deps: apt-get install ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c "import selenium" 2>/dev/null; then
    echo "install-gallery-deps: pip install selenium into .venv"
    .venv/bin/python -m pip install -q "selenium>=4.20"
fi
echo "install-gallery-deps: $(/usr/bin/chromium --version 2>/dev/null | head -1), $(/usr/bin/chromedriver --version | head -1)"
