#!/usr/bin/env bash
# Source me: creates .venv (once) and installs this project into it.
# torch is installed first and on CPU machines only as a CPU build (a local wheel found by pip, else
# PyTorch's CPU index), so no CUDA packages are pulled where there is no GPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MONAI_SOFTCAM_VENV:-$ROOT/.venv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

quiet_pip() {  # pip without the machine's repeated "Location ... is ignored" notices
  python -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }
  return "${PIPESTATUS[0]}"
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

if ! python -c "import torch" >/dev/null 2>&1; then
  echo "installing torch==$TORCH_VERSION"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    quiet_pip install -q "torch==$TORCH_VERSION"
  else
    quiet_pip install -q --no-deps --no-index "torch==$TORCH_VERSION" \
      || quiet_pip install -q --no-deps "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
    quiet_pip install -q "torch==$TORCH_VERSION"  # its pure-Python dependencies; torch itself is satisfied
  fi
fi

STAMP="$VENV/.monai_softcam-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  echo "installing monai_softcam and its dependencies"
  quiet_pip install -q -e "$ROOT[test]"
  touch "$STAMP"
fi
cd "$ROOT"
