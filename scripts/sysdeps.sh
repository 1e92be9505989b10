#!/usr/bin/env bash
# System packages the test suite needs beyond Python: Debian's Chromium for the browser test
# (Playwright drives /usr/bin/chromium and never downloads a browser) and the shared
# libraries Qt (PySide6) loads offscreen. Installs only what is missing, only as root with
# apt-get; otherwise prints one line naming what is missing and exits 0 (those tests then
# skip with a reason).
set -euo pipefail

# Qt offscreen: libEGL/libGL (QtGui links them even offscreen), xkbcommon, fontconfig +
# freetype + a font (text in widgets and screenshots), glib, dbus, X11 client libs.
PACKAGES=(chromium libegl1 libgl1 libxkbcommon0 libfontconfig1 libfreetype6 fonts-dejavu-core
          libglib2.0-0 libdbus-1-3 libx11-6 libx11-xcb1)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "sysdeps: not a Debian system; install Chromium (at /usr/bin/chromium or set CHROMIUM) and Qt's libraries yourself"
  exit 0
fi
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "sysdeps: missing Debian packages ${missing[*]}; as root: apt-get install ${missing[*]} (browser/desktop tests skip without them)"
  exit 0
fi
echo "sysdeps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# a registry hiccup must not fail the suite: the tests that need these skip with a reason
if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
  echo "sysdeps: apt-get could not install ${missing[*]}; browser/desktop tests will skip with a reason"
fi
