#!/usr/bin/env bash
# Run the test suite (sets up .venv first), in one pytest-xdist worker per core (a test file stays in one
# worker, so its module fixtures are made once).
#   bash scripts/test.sh            the fast tier: every test not marked slow (about 7 minutes on 2 cores)
#   bash scripts/test.sh --all      the whole suite, slow end-to-end tests included (what CI runs)
# Other arguments go to pytest, e.g.  bash scripts/test.sh -k bundle   or   bash scripts/test.sh --all -n 0 -x
set -euo pipefail
# shellcheck source=scripts/setup_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
tier=(-m "not slow")
args=()
for arg in "$@"; do
  if [ "$arg" = "--all" ]; then tier=(); else args+=("$arg"); fi
done
python -m pytest -q -n auto --dist loadfile "${tier[@]}" "${args[@]}"
