#!/usr/bin/env bash
# The test command from the README. Creates (or reuses) the virtual environment .venv in the checkout with
# python3 (for another interpreter, create .venv with it first), installs slmrag with its test extras there (CPU-only torch
# from the pin), installs Debian's Chromium for the browser test when it is missing, then runs the suite in
# .venv; arguments go to pytest. A virtual environment because Debian/Ubuntu's system Python refuses
# `pip install` outside one (PEP 668); the README's chat command uses the same .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
VENV="$PWD/.venv"

# A .venv without a working pip (e.g. left by a `python3 -m venv` that failed for want of ensurepip) is
# completed by running venv again over it.
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  if ! "$PY" -m venv "$VENV"; then
    echo "error: could not create the virtual environment $VENV with $PY." >&2
    echo "       On Debian/Ubuntu install Python's venv module first (sudo apt install python3-venv), then run $0 again." >&2
    exit 1
  fi
fi
"$VENV/bin/python" -m pip install -q -e ".[test]"
if [ -f .ci/install_browser.sh ]; then
  bash .ci/install_browser.sh || echo "note: Chromium could not be installed; the browser test will be skipped"
fi
# As if activated: tests that run `slmrag` or `python` find the ones in .venv.
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
exec "$VENV/bin/python" -m pytest "$@"
