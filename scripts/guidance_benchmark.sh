#!/usr/bin/env bash
# The evidence-guidance benchmark on the demo's shortcut variant (benchmarks/guidance.py says what it runs and
# measures): SoftCAM unguided and guided (outside at 0.05/0.1/0.25/1.0, avoid on the marker at 0.1), the black box
# unguided, CAM-guided and RRR-guided at 0.1, and the default demo without and with guidance. Run it again to
# resume: finished runs are kept.
#   bash scripts/guidance_benchmark.sh [OUTPUT_DIR] [--quick] [other options of benchmarks/guidance.py]
#   (default guidance_benchmark/; the full form trains 3 seeds x 11 runs at 96 px, 12 epochs each)
set -euo pipefail
# shellcheck source=scripts/setup_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
OUT="guidance_benchmark"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then OUT="$1"; shift; fi
python benchmarks/guidance.py "$OUT" --rrr_lambda 1000 "$@"
