#!/usr/bin/env bash
# The demo comparison of the README: trains SoftCAM (sparse, dense) and the black box with the same
# backbone and budget on the built-in demo data, then writes the explanation report comparing
# SoftCAM's maps with Grad-CAM, Grad-CAM++ and occlusion on the black box.
#   bash scripts/demo_comparison.sh [OUTPUT_DIR]     (default: comparison/; about 16 min on 2 CPU cores)
set -euo pipefail
# shellcheck source=scripts/setup_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
OUT="$(python -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "${1:-comparison}")"
TRAIN=bundle/configs/train.yaml
common=(--demo_dir "$OUT/data")
python -m monai.bundle run training --config_file "$TRAIN" --bundle_root "$OUT/sparse" "${common[@]}"
python -m monai.bundle run training --config_file "$TRAIN" --bundle_root "$OUT/dense" "${common[@]}" \
    --penalty#lambda1 0.0 --penalty#lambda2 1.0e-4
python -m monai.bundle run training --config_file "['$TRAIN','configs/blackbox.yaml']" --bundle_root "$OUT/blackbox" "${common[@]}"
python -m monai.bundle run explain_eval \
    --config_file "['$TRAIN','bundle/configs/evaluate.yaml','bundle/configs/explain.yaml','configs/demo_comparison.yaml']" \
    --bundle_root "$OUT/sparse" "${common[@]}"
cat "$OUT/report/table.md"
echo "comparison report: $OUT/report/index.html"
