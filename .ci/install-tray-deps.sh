#!/usr/bin/env bash
# What the tray's end-to-end tests (tests/e2e/test_tray_x11.py) need, on Debian 12:
#   - an X server, a tray host, input/screen tools, a D-Bus session: xvfb trayer xdotool dbus dbus-x11 x11-utils
#   - GTK 3 and AppIndicator typelibs for pystray's gtk/appindicator backends
#   - what pip needs to build PyGObject and pycairo from source (no wheels on PyPI for Linux)
# then PyGObject (<3.51: 3.51+ needs girepository-2.0, which Debian 12 lacks) and pystray into .venv,
# the virtualenv the README test command creates and reuses. Run it BEFORE that command.
# Without these the tray e2e tests skip (saying what is missing); everything else runs either way.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    xvfb trayer xdotool dbus dbus-x11 x11-utils libnotify-bin
    gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1
    libgirepository1.0-dev libcairo2-dev pkg-config gcc libc6-dev python3-dev
)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-tray-deps: apt-get install ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# find_spec, not import: importing pystray without a display fails even when it is installed.
if ! .venv/bin/python -c "import gi, importlib.util as u; assert u.find_spec('pystray')" 2>/dev/null; then
    echo "install-tray-deps: pip install PyGObject<3.51 pystray into .venv"
    .venv/bin/python -m pip install -q "PyGObject<3.51" "pystray>=0.19"
fi
.venv/bin/python -c "import gi; gi.require_version('Gtk', '3.0'); from gi.repository import Gtk; print('install-tray-deps: GTK', Gtk.get_major_version(), Gtk.get_minor_version(), 'ready')"
