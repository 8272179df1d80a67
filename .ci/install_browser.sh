#!/usr/bin/env bash
# Install Debian's Chromium (and its driver) plus fonts for the real-browser UI test (tests/test_browser.py).
# Idempotent: does nothing when everything is already installed. Playwright never downloads a browser.
set -euo pipefail

PACKAGES=(chromium chromium-driver fonts-liberation fonts-dejavu-core fonts-noto-color-emoji)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install_browser: chromium and fonts already installed ($(/usr/bin/chromium --version 2>/dev/null || echo '?'))"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install_browser: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install_browser: installed ${missing[*]} ($(/usr/bin/chromium --version 2>/dev/null || echo '?'))"
