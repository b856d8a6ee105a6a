#!/usr/bin/env bash
# The Model Zoo's code-format check (its `runtests.sh --codeformat`: isort, black, flake8) on the whole tree,
# with the Zoo's settings (pyproject.toml: black and isort; .flake8: flake8 and its plugins).
#   bash scripts/lint.sh             check (what CI runs): exits non-zero on the first tool that finds a problem
#   bash scripts/lint.sh --autofix   rewrite the tree with isort and black, then check
set -euo pipefail
# shellcheck source=scripts/setup_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
if [ "${1:-}" = "--autofix" ]; then
  python -m isort -q .
  python -m black -q .
fi
python -m isort --check-only --diff .
python -m black --check .
python -m flake8 . --count --statistics
echo "lint: isort, black and flake8 pass"
