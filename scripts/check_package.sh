#!/usr/bin/env bash
# Build the sdist and the wheel from a clean clone of HEAD, check them with twine, check that the
# wheel holds the package only (no tests, no data), and install the wheel in a fresh venv (torch
# first, as scripts/setup_env.sh does), then import it and run its command line.
#   bash scripts/check_package.sh [WORKDIR]      (needs the package registry; a few minutes)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
PY="${PYTHON:-python3}"
git clone -q "$ROOT" "$WORK/src"
"$PY" -m venv "$WORK/tools" && "$WORK/tools/bin/pip" install -q build twine
(cd "$WORK/src" && "$WORK/tools/bin/python" -m build --outdir "$WORK/dist" >/dev/null)
"$WORK/tools/bin/python" -m twine check "$WORK"/dist/*
"$WORK/tools/bin/python" - "$WORK"/dist/*.whl <<'PYEOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
strays = [n for n in names if not (n.startswith("monai_softcam/") or ".dist-info/" in n)]
assert not strays, f"the wheel holds files outside the package: {strays}"
assert all(n.endswith(".py") for n in names if n.startswith("monai_softcam/")), "non-Python files in the package"
print(f"wheel: {len(names)} files, package only")
PYEOF
"$PY" -m venv "$WORK/fresh"
"$WORK/fresh/bin/pip" install -q "torch==${TORCH_VERSION:-2.13.0}"
"$WORK/fresh/bin/pip" install -q "$WORK"/dist/*.whl
(cd "$WORK" && "$WORK/fresh/bin/python" -c "import monai_softcam; print('installed', monai_softcam.__version__, monai_softcam.__file__)")
"$WORK/fresh/bin/monai-softcam" --help >/dev/null && echo "monai-softcam command line runs"
