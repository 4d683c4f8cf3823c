#!/usr/bin/env bash
# System packages the service tests use: systemd-analyze (package "systemd") checks the unit files.
# Without it those tests are skipped with a reason; everything else needs nothing from apt.
set -euo pipefail
if command -v systemd-analyze >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-service-deps: not root or no apt-get; the systemd-analyze tests will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: the tools only; nothing here runs systemd as PID 1.
apt-get install -y -qq --no-install-recommends systemd >/dev/null
