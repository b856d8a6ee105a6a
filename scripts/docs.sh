#!/usr/bin/env bash
# Build the documentation site into docs/_build/html (sets up .venv first), offline, warnings as
# errors: every public name must have a docstring (interrogate), the tutorial is executed at a small
# size into docs/tutorial.ipynb, and Sphinx builds with -W (a broken link or cross-reference fails it).
#   bash scripts/docs.sh            build
#   bash scripts/docs.sh serve      build, then serve on http://127.0.0.1:8000
set -euo pipefail
# shellcheck source=scripts/setup_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
echo "== docstrings (interrogate)"
interrogate monai_softcam  # its settings: pyproject.toml [tool.interrogate]
echo "== the tutorial, executed at its small size"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
TUTORIAL_SIZE=small TUTORIAL_DIR="$work/run" MPLBACKEND=Agg TQDM_DISABLE=1 \
  jupytext --to ipynb --execute --output docs/tutorial.ipynb tutorials/softcam_tutorial.py
echo "== sphinx-build -W"
rm -rf docs/_build docs/reference
python -m sphinx -W --keep-going -q -b html docs docs/_build/html
echo "built docs/_build/html/index.html"
if [ "${1:-}" = "serve" ]; then
  python -m http.server --directory docs/_build/html --bind 127.0.0.1 8000
fi
