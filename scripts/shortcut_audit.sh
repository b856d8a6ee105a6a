#!/usr/bin/env bash
# The shortcut audit: does an explanation reveal a Clever-Hans cue? Trains SoftCAM (sparse) and the
# black box on the demo's `shortcut` variant (a corner marker on 90 % of the lesion images and 10 %
# of the others in train/val, on a random half of the test images), evaluates both on the test
# split, then runs the explanation report twice on the test split:
#   lesion/  against the lesion masks (where the evidence should be);
#   marker/  against the marker's own masks (marker_mask): on the test images that carry a marker,
#            `activation precision` is then the share of the lesion-class evidence ON THE MARKER and
#            `pointing game` (tolerance 0) how often the map's maximum lies on it.
#   bash scripts/shortcut_audit.sh [OUTPUT_DIR] [EPOCHS]   (default: shortcut_audit/, 12 epochs)
set -euo pipefail
# shellcheck source=scripts/setup_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
OUT="$(python -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "${1:-shortcut_audit}")"
EPOCHS="${2:-12}"
TRAIN=bundle/configs/train.yaml
SHORTCUT=configs/demo_shortcut.yaml
common=(--demo_dir "$OUT/data" --epochs "$EPOCHS")
# its own folders: a re-run replaces the models (--replace true)
python -m monai.bundle run training --config_file "['$TRAIN','$SHORTCUT']" --bundle_root "$OUT/sparse" "${common[@]}" \
    --replace true
python -m monai.bundle run training --config_file "['$TRAIN','$SHORTCUT','configs/blackbox.yaml']" \
    --bundle_root "$OUT/blackbox" "${common[@]}" --replace true
for model in sparse blackbox; do
    python -m monai.bundle run evaluate --config_file "['$TRAIN','bundle/configs/evaluate.yaml','$SHORTCUT']" \
        --bundle_root "$OUT/$model" --demo_dir "$OUT/data"
done
report=(--config_file "['$TRAIN','bundle/configs/evaluate.yaml','bundle/configs/explain.yaml','$SHORTCUT','configs/shortcut_audit.yaml']"
        --bundle_root "$OUT/sparse" --demo_dir "$OUT/data")
python -m monai.bundle run explain_eval "${report[@]}" "--explain#output_dir" "$OUT/lesion"
python -m monai.bundle run explain_eval "${report[@]}" "--explain#output_dir" "$OUT/marker" \
    "--data#mask_column" marker_mask "--explanation#pointing_tolerance" 0
echo "test accuracy (the marker is independent of the label on test):"
for model in sparse blackbox; do
    python -c "import json,sys; m=json.load(open(sys.argv[1]))['metrics']; print(f'  {sys.argv[2]:<9} accuracy {m[\"accuracy\"]:.3f}  auc {m[\"auc\"]:.3f}')" \
        "$OUT/$model/eval/metrics_test.json" "$model"
done
echo "evidence against the lesion masks:"; cat "$OUT/lesion/table.md"
echo "evidence ON THE MARKER (test images with a marker):"; cat "$OUT/marker/table.md"
