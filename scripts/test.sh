#!/usr/bin/env bash
# The test command from the README: installs slmrag with its test extras (CPU-only torch from the pin),
# installs Debian's Chromium for the browser test when it is missing, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test]"
if [ -x .ci/install_browser.sh ] || [ -f .ci/install_browser.sh ]; then
  bash .ci/install_browser.sh || echo "note: Chromium could not be installed; the browser test will be skipped"
fi
exec python -m pytest "$@"
