#!/usr/bin/env bash
# The SoftCAM paper's protocol on one of its datasets, end to end, with the dataset's preset
# (configs/<dataset>.yaml: its epochs, image size, optimiser, schedule and augmentation):
#   1. λ selection (bundle/configs/tune.yaml) for the sparse SoftCAM (a lambda1 grid, lambda2 = 0)
#      and for the dense SoftCAM (a lambda2 grid, lambda1 = 0): one model per λ, and the paper's rule
#      (the best explanation score among the models within epsilon of the best validation accuracy)
#      selects one of each;
#   2. the black box (configs/blackbox.yaml), trained the same way;
#   3. each of the three models evaluated on the test split;
#   4. the explanation report on the test split (configs/reproduce_paper.yaml): both SoftCAM models'
#      own maps against the black box explained by Grad-CAM, Integrated Gradients, Guided Backprop,
#      Score-CAM and LayerCAM.
#
#   bash scripts/reproduce_paper.sh --dataset rsna|fundus|oct --data DIR --pretrained FILE|none [--out DIR]
#       [--lambda1_grid LIST] [--lambda2_grid LIST] [--dry_run] [OVERRIDES...]
#
#   --data DIR        the preset's dataset_dir: the split CSVs and the images (see the preset's header)
#   --pretrained FILE the paper's ImageNet weights, a local file (nothing is downloaded): torchvision's
#                     vgg16-397923af.pth (VGG16_Weights.IMAGENET1K_V1) for rsna, resnet50-11ad3fa6.pth
#                     (ResNet50_Weights.IMAGENET1K_V2) for fundus and oct; its SHA-256 is checked. none:
#                     every model from a random initialisation, on purpose (not the paper's models)
#   --out DIR         where everything goes (default reproduce_<dataset>/)
#   --lambda1_grid    the sparse sweep, a Python list (default [1e-6, 1e-5, 1e-4, 1e-3])
#   --lambda2_grid    the dense sweep (default [1e-5, 1e-4, 1e-3])
#   --dry_run         print the commands instead of running them (the selected trials as placeholders)
#   OVERRIDES         --key value pairs for every python -m monai.bundle command (--epochs 1
#                     --image_size "[64,64]" --device cuda:0); those of explain#... go to the report
#                     only (--explain#sanity_cases 0 skips its randomisation check, which runs every
#                     method again per layer group), those of tune_settings#... to the λ selection
#                     only (--tune_settings#epsilon 0.02). --tune_settings#metric is the explanation
#                     score the selection maximises: by default paper_activation_precision on RSNA,
#                     whose CSVs carry the opacity boxes, and consistency on fundus and OCT, whose
#                     CSVs carry no lesion annotations (with masks: --data#mask_column COLUMN and a
#                     localisation metric).
#
# Writes <out>/tune_sparse/ and <out>/tune_dense/ (trial_<n>/ per λ, results.csv, results.md,
# selected.json, pareto.png), <out>/blackbox/ (models/, eval/), <out>/eval/<model>/metrics_test.json
# for softcam_sparse, softcam_dense and blackbox, and <out>/report/ (report.json, table.md,
# paired.md, index.html, ...). Running the same command again resumes: finished trials are kept and
# the black box continues from its last epoch. Another grid needs another --out.
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }   # the header above
die() { echo "error: $*" >&2; exit 2; }

DATASET="" DATA="" OUT="" METRIC="" PRETRAINED="" DRY_RUN=0
LAMBDA1_GRID="[1e-6, 1e-5, 1e-4, 1e-3]"   # a decade apart, around the paper's choices (lasso 1e-6 to 9e-4)
LAMBDA2_GRID="[1e-5, 1e-4, 1e-3]"         # around the paper's ridge choices (4e-5 to 2e-4)
common=() tune_extra=() report_extra=()
while [ $# -gt 0 ]; do
    arg="$1"
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --dry_run) DRY_RUN=1; shift; continue ;;
        --*=*) key="${arg%%=*}"; key="${key#--}"; value="${arg#*=}"; shift ;;
        --*)
            key="${arg#--}"
            [ $# -ge 2 ] && [ "${2#--}" = "$2" ] || die "$arg needs a value"
            value="$2"; shift 2 ;;
        *) die "unexpected argument '$arg': options and overrides are --key value pairs (--help lists them)" ;;
    esac
    case "$key" in
        dataset) DATASET="$value" ;;
        data) DATA="$value" ;;
        pretrained) PRETRAINED="$value" ;;
        out) OUT="$value" ;;
        lambda1_grid) LAMBDA1_GRID="$value" ;;
        lambda2_grid) LAMBDA2_GRID="$value" ;;
        tune_settings#metric) METRIC="$value" ;;
        tune_settings#search_space*) die "--$key: give the sweeps with --lambda1_grid and --lambda2_grid" ;;
        config_file|bundle_root|dataset_dir|ckpt_dir|output_dir|checkpoint|tune_dir|resume|eval_split|explain#output_dir|explain#models)
            die "--$key is set by this script (see --help)" ;;
        explain|explain#*) report_extra+=("--$key" "$value") ;;
        tune_settings#*) tune_extra+=("--$key" "$value") ;;
        *) common+=("--$key" "$value") ;;
    esac
done
case "$DATASET" in
    rsna|fundus|oct) ;;
    "") die "--dataset is missing: one of rsna, fundus, oct" ;;
    *) die "--dataset '$DATASET' is not one of rsna, fundus, oct" ;;
esac
[ -n "$DATA" ] || die "--data is missing: the folder with the $DATASET split CSVs and images (configs/$DATASET.yaml says what it holds)"
[ -d "$DATA" ] || die "--data '$DATA' is not a folder"
if [ "$DATASET" = rsna ]; then WEIGHTS=vgg16-397923af.pth; else WEIGHTS=resnet50-11ad3fa6.pth; fi
[ -n "$PRETRAINED" ] || die "--pretrained is missing: the paper's models start from ImageNet weights, torchvision's $WEIGHTS for $DATASET (https://download.pytorch.org/models/$WEIGHTS): give the local file, or --pretrained none to train every model from a random initialisation on purpose"
if [ "$PRETRAINED" != none ]; then
    [ -f "$PRETRAINED" ] || die "--pretrained '$PRETRAINED' is not a file"
    PRETRAINED="$(cd "$(dirname "$PRETRAINED")" && pwd)/$(basename "$PRETRAINED")"
fi
common+=(--pretrained "$PRETRAINED")

grid() {  # grid NAME TEXT: TEXT as a Python list of numbers >= 0, else exit 2 naming the option
    "${PYTHON:-python3}" - "$1" "$2" <<'EOF' || exit 2
import ast, math, sys
name, text = sys.argv[1:]
try:
    values = ast.literal_eval(text)
except (ValueError, SyntaxError):
    values = None
if not (isinstance(values, (list, tuple)) and values and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values)):
    sys.exit(f"error: --{name} must be a non-empty list of numbers >= 0, e.g. \"[1e-5, 1e-4]\"; got {text!r}")
print(repr([float(v) for v in values]))
EOF
}
# checked before setup_env.sh, which may take minutes on a first run
LAMBDA1_GRID="$(grid lambda1_grid "$LAMBDA1_GRID")"
LAMBDA2_GRID="$(grid lambda2_grid "$LAMBDA2_GRID")"
# absolute paths: setup_env.sh changes to the repository root
DATA="$(cd "$DATA" && pwd)"
OUT="${OUT:-reproduce_$DATASET}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

# shellcheck source=scripts/setup_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"

# the validation and test reports (metrics_<split>.json) with the paper's metrics beside this
# project's, so that the λ selection can use the paper's activation precision
protocol=(--explanation#protocol both)
if [ -z "$METRIC" ]; then
    # fundus and OCT: no annotations in the presets' CSVs, so no localisation metric; activation
    # consistency (does the sign of the evidence agree with the label) needs none
    if [ "$DATASET" = rsna ]; then METRIC=paper_activation_precision; else METRIC=consistency; fi
fi

TRAIN=bundle/configs/train.yaml
EVALUATE=bundle/configs/evaluate.yaml
PRESET="configs/$DATASET.yaml"
BLACKBOX=configs/blackbox.yaml
data=(--dataset_dir "$DATA")

run() {  # the command, or with --dry_run its words, shell-quoted
    if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}
tune() {  # tune NAME SEARCH_SPACE: one λ sweep in <out>/tune_NAME
    local dir="$OUT/tune_$1" log
    echo "== λ selection, $1 SoftCAM: $2 -> $dir"
    run python -m monai.bundle run tune --config_file "['$TRAIN','$PRESET','bundle/configs/tune.yaml']" \
        --bundle_root "$dir" --tune_dir "$dir" "${data[@]}" --tune_settings#search_space "$2" \
        --tune_settings#metric "$METRIC" ${tune_extra[@]+"${tune_extra[@]}"} "${protocol[@]}" \
        ${common[@]+"${common[@]}"}
    if [ "$DRY_RUN" = 0 ] && [ ! -f "$dir/selected.json" ]; then
        log="$(find "$dir" -name train.log | sort | head -n 1)"
        echo "error: the $1 λ selection selected no trial (did every trial fail?): see $dir/results.md${log:+ and $log, which ends:}" >&2
        [ -z "$log" ] || tail -n 3 "$log" >&2
        exit 1
    fi
}
selected() {  # selected NAME KEY GRID: the models folder of the selected trial, checked to be of GRID
    if [ "$DRY_RUN" = 1 ]; then echo "$OUT/tune_$1/<selected trial>/models"; return; fi
    python - "$OUT/tune_$1/selected.json" "$2" "$3" <<'EOF'
import ast, json, os, sys
path, key, grid = sys.argv[1], sys.argv[2], ast.literal_eval(sys.argv[3])
selected = json.load(open(path))
if not any(abs(selected[key] - v) <= 1e-9 * max(abs(v), 1e-12) for v in grid):
    sys.exit(f"error: {path} selected {key}={selected[key]:g}, which is not in the grid {grid}: that study "
             "was run with another grid (give another --out)")
if not os.path.isfile(os.path.join(selected["ckpt_dir"], "model.pt")):
    sys.exit(f"error: the selected trial's model {selected['ckpt_dir']}/model.pt is missing")
print(selected["ckpt_dir"])
EOF
}
[ "$DRY_RUN" = 1 ] || mkdir -p "$OUT"
if [ "$PRETRAINED" = none ]; then
    echo "== weights: none: every model from a random initialisation (not the paper's ImageNet start)"
else  # the training checks the file against $WEIGHTS's SHA-256 prefix before any work
    echo "== weights: $PRETRAINED (SHA-256 $(sha256sum "$PRETRAINED" | cut -c1-16)...; the paper's: $WEIGHTS)"
fi

# 1. λ selection; the other λ is held at 0, so that each sweep is a pure lasso or a pure ridge
tune sparse "{'penalty#lambda1': $LAMBDA1_GRID, 'penalty#lambda2': [0.0]}"
tune dense "{'penalty#lambda1': [0.0], 'penalty#lambda2': $LAMBDA2_GRID}"
SPARSE="$(selected sparse 'penalty#lambda1' "$LAMBDA1_GRID")"
DENSE="$(selected dense 'penalty#lambda2' "$LAMBDA2_GRID")"

# 2. the black box, resumed from its last epoch when run again
echo "== black box -> $OUT/blackbox"
run python -m monai.bundle run training --config_file "['$TRAIN','$PRESET','$BLACKBOX']" \
    --bundle_root "$OUT/blackbox" "${data[@]}" --resume True ${common[@]+"${common[@]}"}
BLACKBOX_MODELS="$OUT/blackbox/models"

# 3. every model on the test split (evaluate.yaml's), each with the task saved beside it
evaluate() {  # evaluate NAME MODELS_DIR CONFIG_FILES
    echo "== test split, $1 -> $OUT/eval/$1"
    run python -m monai.bundle run evaluate --config_file "$3" --bundle_root "$OUT" "${data[@]}" \
        --ckpt_dir "$2" --output_dir "$OUT/eval/$1" "${protocol[@]}" ${common[@]+"${common[@]}"}
}
evaluate softcam_sparse "$SPARSE" "['$TRAIN','$EVALUATE','$PRESET']"
evaluate softcam_dense "$DENSE" "['$TRAIN','$EVALUATE','$PRESET']"
evaluate blackbox "$BLACKBOX_MODELS" "['$TRAIN','$EVALUATE','$PRESET','$BLACKBOX']"

# 4. the explanation report on the test split
echo "== explanation report -> $OUT/report"
run python -m monai.bundle run explain_eval \
    --config_file "['$TRAIN','$EVALUATE','bundle/configs/explain.yaml','$PRESET','configs/reproduce_paper.yaml']" \
    --bundle_root "$OUT" "${data[@]}" --softcam_sparse_dir "$SPARSE" --softcam_dense_dir "$DENSE" \
    ${report_extra[@]+"${report_extra[@]}"} ${common[@]+"${common[@]}"}
[ "$DRY_RUN" = 0 ] || exit 0

# 5. where everything is, and what came out
python - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
print("\nλ selection (the best validation explanation score within epsilon of the best validation accuracy):")
for name, key in (("sparse", "penalty#lambda1"), ("dense", "penalty#lambda2")):
    folder = os.path.join(out, f"tune_{name}")
    s = json.load(open(os.path.join(folder, "selected.json")))
    print(f"  {name:<6} {key.split('#')[1]} = {s[key]:g} (trial {s['number']}): val accuracy {s['accuracy']:.4f}, "
          f"{s['metric']} {s[s['metric']]:.4f}, epsilon {s['epsilon']:g}; every trial: {os.path.join(folder, 'results.md')}")
print("test split:")
for model in ("softcam_sparse", "softcam_dense", "blackbox"):
    path = os.path.join(out, "eval", model, "metrics_test.json")
    m = json.load(open(path))["metrics"]
    print(f"  {model:<15} accuracy {m['accuracy']:.4f}, auc {m['auc']:.4f} ({path})")
print(f"explanation report: {os.path.join(out, 'report', 'index.html')} (table.md and paired.md below)")
EOF
echo; cat "$OUT/report/table.md"
echo; cat "$OUT/report/paired.md"
