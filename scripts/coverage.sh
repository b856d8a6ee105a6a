#!/usr/bin/env bash
# Line coverage of monai_softcam by the whole test suite, code run in subprocesses included (.coveragerc:
# parallel data files, `patch = subprocess`). Extra arguments go to pytest.
set -euo pipefail
# shellcheck source=scripts/setup_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
rm -rf .coverage_data && mkdir -p .coverage_data
export COVERAGE_RCFILE="$PWD/.coveragerc"
python -m coverage run -m pytest -q "$@"
python -m coverage combine -q
python -m coverage report | tail -1
