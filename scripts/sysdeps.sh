#!/usr/bin/env bash
# System packages the test suite needs beyond Python: Debian's Chromium for the browser test
# (Playwright drives /usr/bin/chromium and never downloads a browser), the shared libraries
# Qt (PySide6) loads offscreen, and PostgreSQL for the multi-machine test. Installs only
# what is missing, only as root with apt-get; otherwise prints one line naming what is
# missing and exits 0 (those tests then skip with a reason) -- or, under CI=true, exits 1
# with that line: CI must not go green by skipping the browser, desktop and postgres tests.
set -euo pipefail

# ---- CI=true: a dependency that cannot be installed is an error, not a skip
give_up() {  # $1: what is missing and how to get it
  if [[ "${CI:-}" =~ ^(true|TRUE|True|1|yes)$ ]]; then
    echo "sysdeps: error: $1 (CI=true, so this fails instead of skipping those tests)" >&2
    exit 1
  fi
  echo "sysdeps: $1"
  exit 0
}

# Qt offscreen: libEGL/libGL (QtGui links them even offscreen), xkbcommon, fontconfig +
# freetype + a font (text in widgets and screenshots), glib, dbus, X11 client libs.
PACKAGES=(chromium libegl1 libgl1 libxkbcommon0 libfontconfig1 libfreetype6 fonts-dejavu-core
          libglib2.0-0 libdbus-1-3 libx11-6 libx11-xcb1)
# Qt on a real screen (`cifarlab app` with DISPLAY set): its X11 ("xcb") plugin's libraries
PACKAGES+=(libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xkb1
           libxkbcommon-x11-0 libxcb-randr0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0)
# PostgreSQL's server programs: tests/test_postgres.py starts a throwaway server from them
# (initdb/pg_ctl on a loopback port) to check studies and searches shared across machines.
PACKAGES+=(postgresql)

if ! command -v dpkg-query >/dev/null 2>&1; then
  give_up "not a Debian system; install Chromium (at /usr/bin/chromium or set CHROMIUM) and Qt's libraries yourself"
fi
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  give_up "missing Debian packages ${missing[*]}; as root: apt-get install ${missing[*]} (browser/desktop tests skip without them)"
fi
echo "sysdeps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# a registry hiccup must not fail a laptop's suite (the tests that need these skip with a
# reason); under CI=true it fails here, naming the packages
if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
  give_up "apt-get could not install ${missing[*]}; browser/desktop/postgres tests will skip with a reason"
fi
