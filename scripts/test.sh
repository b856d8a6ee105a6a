#!/usr/bin/env bash
# Run the test suite (sets up .venv first).
#   bash scripts/test.sh            the fast tier: every test not marked slow (a few minutes)
#   bash scripts/test.sh --all      the whole suite, slow end-to-end tests included (what CI runs)
# Other arguments go to pytest, e.g.  bash scripts/test.sh -k bundle   or   bash scripts/test.sh --all -x
set -euo pipefail
# shellcheck source=scripts/setup_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
tier=(-m "not slow")
args=()
for arg in "$@"; do
  if [ "$arg" = "--all" ]; then tier=(); else args+=("$arg"); fi
done
python -m pytest -q "${tier[@]}" "${args[@]}"
