#!/usr/bin/env bash
# Install rerankd with everything its tests need, on a fresh machine, and run them.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# The cache tests start a real redis-server.
if ! command -v redis-server >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

# The playground's browser test drives Debian's chromium through its driver, and runs the page's curl command.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! command -v curl >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver curl >/dev/null
fi

VENV="${RERANKD_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip

# torch first, pinned to the CPU build (see DEVELOPERS.md): a bare `torch`
# requirement would otherwise pull a multi-GB CUDA build. The project itself
# only asks for torch>=2.4, which this satisfies.
python -m pip install --quiet "${RERANKD_TORCH_SPEC:-torch==2.13.0}"
python -m pip install --quiet -e ".[dev]"

python -m pytest "$@"
