#!/usr/bin/env bash
# The SoftCAM paper's protocol on one of its datasets, end to end, for each of the paper's backbones
# (ResNet-50 and VGG-16, as in its Table 1), with the dataset's preset (configs/<dataset>.yaml: its
# epochs, image size, optimiser, schedule and augmentation; its backbone replaced by the run's). Per backbone:
#   1. λ selection (bundle/configs/tune.yaml) for the sparse SoftCAM (a lambda1 grid, lambda2 = 0)
#      and for the dense SoftCAM (a lambda2 grid, lambda1 = 0): one model per λ, and the paper's rule
#      (the best explanation score among the models within epsilon of the best validation accuracy)
#      selects one of each;
#   2. the black box (configs/blackbox.yaml), trained the same way;
#   3. each of the three models evaluated on the test split;
#   4. the explanation report on the test split (configs/reproduce_paper.yaml): both SoftCAM models'
#      own maps against the black box explained by Grad-CAM, Integrated Gradients, Guided Backprop,
#      Score-CAM and LayerCAM.
# Then one table of every backbone's black box, dense and sparse SoftCAM.
#
#   bash scripts/reproduce_paper.sh --dataset rsna|fundus|oct --data DIR --pretrained DIR|none
#       [--backbones resnet50,vgg16] [--out DIR] [--lambda1_grid LIST] [--lambda2_grid LIST] [--dry_run]
#       [OVERRIDES...]
#
#   --data DIR        the preset's dataset_dir: the split CSVs and the images (see the preset's header)
#   --backbones LIST  the backbones to run, comma-separated, from resnet50 and vgg16 (default: both)
#   --pretrained DIR  the folder holding the paper's ImageNet weights under torchvision's file names (nothing is
#                     downloaded): resnet50-11ad3fa6.pth (ResNet50_Weights.IMAGENET1K_V2) for resnet50,
#                     vgg16-397923af.pth (VGG16_Weights.IMAGENET1K_V1) for vgg16; those of the backbones run
#                     must be there, and are checked against the SHA-256 prefix of their names before anything
#                     runs. none: every model from a random initialisation, on purpose (not the paper's models)
#   --out DIR         where everything goes (default reproduce_<dataset>/), <out>/<backbone>/ per backbone
#   --lambda1_grid    the sparse sweep, a Python list, for every backbone run (default: the backbone's, below)
#   --lambda2_grid    the dense sweep, likewise
#   --dry_run         list the runs (dataset, backbone, model, λ, weights, output folder) and print the
#                     commands instead of running them (the selected trials as placeholders); trains nothing
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
# The default sweeps, per backbone: three values a decade apart, centred on the λ the paper reports
# choosing on validation data for that backbone (Djoumessi & Berens, SoftCAM, MIDL 2026, which gives its
# choices, not its grids; ../shared/docs/softcam-method.md of the project lists them):
#   resnet50  lambda1 [1e-5, 1e-4, 1e-3] (chose 5e-5 fundus, 9e-4 OCT)  lambda2 [1e-5, 1e-4, 1e-3] (chose 7e-5)
#   vgg16     lambda1 [1e-7, 1e-6, 1e-5] (chose 1e-6 fundus, 3e-6 OCT)  lambda2 [1e-5, 1e-4, 1e-3] (chose 2e-4)
#
# Writes, per backbone, <out>/<backbone>/tune_sparse/ and tune_dense/ (trial_<n>/ per λ, results.csv,
# results.md, selected.json, pareto.png), <out>/<backbone>/blackbox/ (models/, eval/),
# <out>/<backbone>/eval/<model>/metrics_test.json for softcam_sparse, softcam_dense and blackbox, and
# <out>/<backbone>/report/ (report.json, table.md, paired.md, index.html, ...); then <out>/summary.md and
# summary.csv: per backbone and model the weights, the selected λ, the test accuracy and ROC AUC, and the
# report's explanation metrics per method. Running the same command again resumes: finished trials are
# kept and the black boxes continue from their last epoch. Another grid needs another --out.
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }   # the header above
die() { echo "error: $*" >&2; exit 2; }

PAPER_BACKBONES="resnet50 vgg16"
paper() {  # paper BACKBONE weights|enum|lambda1|lambda2: what the paper trains BACKBONE with (see the header)
    case "$1:$2" in
        resnet50:weights) echo resnet50-11ad3fa6.pth ;;
        resnet50:enum) echo ResNet50_Weights.IMAGENET1K_V2 ;;
        resnet50:lambda1) echo "[1e-5, 1e-4, 1e-3]" ;;   # the paper chose 5e-5 (fundus) and 9e-4 (OCT)
        vgg16:weights) echo vgg16-397923af.pth ;;
        vgg16:enum) echo VGG16_Weights.IMAGENET1K_V1 ;;
        vgg16:lambda1) echo "[1e-7, 1e-6, 1e-5]" ;;      # the paper chose 1e-6 (fundus) and 3e-6 (OCT)
        *:lambda2) echo "[1e-5, 1e-4, 1e-3]" ;;          # the paper chose 7e-5 (ResNet-50) and 2e-4 (VGG-16)
    esac
}

DATASET="" DATA="" OUT="" METRIC="" PRETRAINED="" DRY_RUN=0 LAMBDA1_GRID="" LAMBDA2_GRID=""
BACKBONES_ARG="resnet50,vgg16"
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
        backbones) BACKBONES_ARG="$value" ;;
        pretrained) PRETRAINED="$value" ;;
        out) OUT="$value" ;;
        lambda1_grid) LAMBDA1_GRID="$value" ;;
        lambda2_grid) LAMBDA2_GRID="$value" ;;
        tune_settings#metric) METRIC="$value" ;;
        tune_settings#search_space*) die "--$key: give the sweeps with --lambda1_grid and --lambda2_grid" ;;
        backbone) die "--backbone: give the backbones with --backbones (comma-separated, from ${PAPER_BACKBONES// /, })" ;;
        config_file|bundle_root|dataset_dir|ckpt_dir|output_dir|checkpoint|tune_dir|resume|eval_split|pretrained_expected|explain#output_dir|explain#models)
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
BACKBONES=()
IFS=, read -r -a requested <<< "${BACKBONES_ARG// /}"   # resnet50,vgg16 or "resnet50, vgg16"
for b in ${requested[@]+"${requested[@]}"}; do
    case " $PAPER_BACKBONES " in
        *" $b "*) ;;
        *) die "--backbones: '$b' is not one of the paper's backbones: ${PAPER_BACKBONES// /, }" ;;
    esac
    case " ${BACKBONES[*]-} " in *" $b "*) die "--backbones names $b twice" ;; esac
    BACKBONES+=("$b")
done
[ ${#BACKBONES[@]} -gt 0 ] || die "--backbones is empty: one or more of ${PAPER_BACKBONES// /, }, comma-separated"
files=""
for b in "${BACKBONES[@]}"; do files="${files:+$files and }$(paper "$b" weights)"; done
[ -n "$PRETRAINED" ] || die "--pretrained is missing: the paper's models start from ImageNet weights, torchvision's $files (https://download.pytorch.org/models/<file>): give the folder holding them, or --pretrained none to train every model from a random initialisation on purpose"
if [ "$PRETRAINED" != none ]; then
    [ ! -f "$PRETRAINED" ] || die "--pretrained '$PRETRAINED' is a file: give the folder holding torchvision's $files under those names (--pretrained $(dirname "$PRETRAINED") if it is there), or none"
    [ -d "$PRETRAINED" ] || die "--pretrained '$PRETRAINED' is not a folder"
    PRETRAINED="$(cd "$PRETRAINED" && pwd)"
fi

grid() {  # grid NAME TEXT: TEXT as a Python list of numbers >= 0, else exit 2 naming the option
    "${PYTHON:-python3}" - "$1" "$2" <<'PY' || exit 2
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
PY
}
weights() {  # weights BACKBONE: its weight file in the --pretrained folder, checked, or none; else exit 2 naming it
    local name file digest prefix
    if [ "$PRETRAINED" = none ]; then echo none; return; fi
    name="$(paper "$1" weights)"
    file="$PRETRAINED/$name"
    [ -f "$file" ] || die "no $file: $1 starts from torchvision's $(paper "$1" enum) (https://download.pytorch.org/models/$name): put that file in the --pretrained folder, leave $1 out of --backbones, or give --pretrained none to train from a random initialisation on purpose"
    prefix="${name%.pth}"; prefix="${prefix##*-}"   # torchvision's names carry their SHA-256 prefix
    digest="$(sha256sum "$file" | cut -c1-${#prefix})"
    [ "$digest" = "$prefix" ] || die "$file is not torchvision's $name: its SHA-256 starts with $digest, not $prefix (a partial download, or another file)"
    echo "$file"
}
# checked before setup_env.sh, which may take minutes on a first run: the grids, then every backbone's weights
[ -z "$LAMBDA1_GRID" ] || LAMBDA1_GRID="$(grid lambda1_grid "$LAMBDA1_GRID")"
[ -z "$LAMBDA2_GRID" ] || LAMBDA2_GRID="$(grid lambda2_grid "$LAMBDA2_GRID")"
GRID1=() GRID2=() WEIGHTS=()
for i in "${!BACKBONES[@]}"; do
    b="${BACKBONES[$i]}"
    GRID1[i]="$(grid lambda1_grid "${LAMBDA1_GRID:-$(paper "$b" lambda1)}")"
    GRID2[i]="$(grid lambda2_grid "${LAMBDA2_GRID:-$(paper "$b" lambda2)}")"
    WEIGHTS[i]="$(weights "$b")"
done
# absolute paths: setup_env.sh changes to the repository root
DATA="$(cd "$DATA" && pwd)"
OUT="${OUT:-reproduce_$DATASET}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

# every training, before any: one per λ of each sweep, and the black box, per backbone
values() { local list="${1#[}"; list="${list%]}"; echo "${list//,/}"; }   # [1e-05, 0.0001] -> 1e-05 0.0001
width=7   # of the weights column
for w in "${WEIGHTS[@]}"; do [ ${#w} -le $width ] || width=${#w}; done
line() { printf "%-8s %-9s %-15s %-8s %-8s %-${width}s  %s\n" "$@"; }
runs=0
for i in "${!BACKBONES[@]}"; do set -- $(values "${GRID1[i]}") $(values "${GRID2[i]}"); runs=$((runs + $# + 1)); done
echo "== $runs trainings ($DATASET; ${BACKBONES[*]}): one per λ of each sweep and the black box, each backbone from its weights"
line dataset backbone model lambda1 lambda2 weights output
for i in "${!BACKBONES[@]}"; do
    b="${BACKBONES[$i]}"
    for l in $(values "${GRID1[i]}"); do line "$DATASET" "$b" softcam_sparse "$l" 0 "${WEIGHTS[i]}" "$OUT/$b/tune_sparse"; done
    for l in $(values "${GRID2[i]}"); do line "$DATASET" "$b" softcam_dense 0 "$l" "${WEIGHTS[i]}" "$OUT/$b/tune_dense"; done
    line "$DATASET" "$b" blackbox 0 0 "${WEIGHTS[i]}" "$OUT/$b/blackbox"
done

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
# the loop below sets B (the backbone), DIR (<out>/<backbone>) and MODEL (its overrides) for these
tune() {  # tune NAME SEARCH_SPACE: one λ sweep in <out>/<backbone>/tune_NAME
    local dir="$DIR/tune_$1" log
    echo "== $B: λ selection, $1 SoftCAM: $2 -> $dir"
    run python -m monai.bundle run tune --config_file "['$TRAIN','$PRESET','bundle/configs/tune.yaml']" \
        --bundle_root "$dir" --tune_dir "$dir" "${data[@]}" --tune_settings#search_space "$2" \
        --tune_settings#metric "$METRIC" ${tune_extra[@]+"${tune_extra[@]}"} "${protocol[@]}" \
        "${MODEL[@]}" ${common[@]+"${common[@]}"}
    if [ "$DRY_RUN" = 0 ] && [ ! -f "$dir/selected.json" ]; then
        log="$(find "$dir" -name train.log | sort | head -n 1)"
        echo "error: the $B $1 λ selection selected no trial (did every trial fail?): see $dir/results.md${log:+ and $log, which ends:}" >&2
        [ -z "$log" ] || tail -n 3 "$log" >&2
        exit 1
    fi
}
selected() {  # selected NAME KEY GRID: the models folder of the selected trial, checked to be of GRID
    if [ "$DRY_RUN" = 1 ]; then echo "$DIR/tune_$1/<selected trial>/models"; return; fi
    python - "$DIR/tune_$1/selected.json" "$2" "$3" <<'PY'
import ast, json, os, sys
path, key, grid = sys.argv[1], sys.argv[2], ast.literal_eval(sys.argv[3])
selected = json.load(open(path))
if not any(abs(selected[key] - v) <= 1e-9 * max(abs(v), 1e-12) for v in grid):
    sys.exit(f"error: {path} selected {key}={selected[key]:g}, which is not in the grid {grid}: that study "
             "was run with another grid (give another --out)")
if not os.path.isfile(os.path.join(selected["ckpt_dir"], "model.pt")):
    sys.exit(f"error: the selected trial's model {selected['ckpt_dir']}/model.pt is missing")
print(selected["ckpt_dir"])
PY
}
evaluate() {  # evaluate NAME MODELS_DIR CONFIG_FILES: one model on the test split (evaluate.yaml's)
    echo "== $B: test split, $1 -> $DIR/eval/$1"
    run python -m monai.bundle run evaluate --config_file "$3" --bundle_root "$DIR" "${data[@]}" \
        --ckpt_dir "$2" --output_dir "$DIR/eval/$1" "${protocol[@]}" "${MODEL[@]}" ${common[@]+"${common[@]}"}
}
[ "$DRY_RUN" = 1 ] || mkdir -p "$OUT"
summary=()
for i in "${!BACKBONES[@]}"; do
    B="${BACKBONES[$i]}" DIR="$OUT/${BACKBONES[$i]}"
    MODEL=(--backbone "$B" --pretrained_expected "$(paper "$B" weights)" --pretrained "${WEIGHTS[i]}")
    summary+=("$B=${WEIGHTS[i]}")
    if [ "${WEIGHTS[i]}" = none ]; then
        echo "== $B: weights none: every model from a random initialisation (not the paper's ImageNet start)"
    else  # checked above; the training checks it again before any work
        echo "== $B: weights ${WEIGHTS[i]} (torchvision's $(paper "$B" enum), the paper's)"
    fi

    # 1. λ selection; the other λ is held at 0, so that each sweep is a pure lasso or a pure ridge
    tune sparse "{'penalty#lambda1': ${GRID1[i]}, 'penalty#lambda2': [0.0]}"
    tune dense "{'penalty#lambda1': [0.0], 'penalty#lambda2': ${GRID2[i]}}"
    SPARSE="$(selected sparse 'penalty#lambda1' "${GRID1[i]}")"
    DENSE="$(selected dense 'penalty#lambda2' "${GRID2[i]}")"

    # 2. the black box, resumed from its last epoch when run again
    echo "== $B: black box -> $DIR/blackbox"
    run python -m monai.bundle run training --config_file "['$TRAIN','$PRESET','$BLACKBOX']" \
        --bundle_root "$DIR/blackbox" "${data[@]}" --resume True "${MODEL[@]}" ${common[@]+"${common[@]}"}

    # 3. every model on the test split, each with the task saved beside it
    evaluate softcam_sparse "$SPARSE" "['$TRAIN','$EVALUATE','$PRESET']"
    evaluate softcam_dense "$DENSE" "['$TRAIN','$EVALUATE','$PRESET']"
    evaluate blackbox "$DIR/blackbox/models" "['$TRAIN','$EVALUATE','$PRESET','$BLACKBOX']"

    # 4. the explanation report on the test split
    echo "== $B: explanation report -> $DIR/report"
    run python -m monai.bundle run explain_eval \
        --config_file "['$TRAIN','$EVALUATE','bundle/configs/explain.yaml','$PRESET','configs/reproduce_paper.yaml']" \
        --bundle_root "$DIR" "${data[@]}" --softcam_sparse_dir "$SPARSE" --softcam_dense_dir "$DENSE" \
        ${report_extra[@]+"${report_extra[@]}"} "${MODEL[@]}" ${common[@]+"${common[@]}"}
done
[ "$DRY_RUN" = 0 ] || exit 0

# 5. what came out: each backbone's λ selection, test metrics and report, then one table of all of them
for b in "${BACKBONES[@]}"; do
    echo; echo "== $b: explanation report $OUT/$b/report/index.html"
    cat "$OUT/$b/report/table.md"; echo; cat "$OUT/$b/report/paired.md"
done
python - "$OUT" "$DATASET" "${summary[@]}" <<'PY'
import csv, json, os, sys
from monai_softcam.comparison import TABLE_METRICS
from monai_softcam.metrics.explanation import HIGHER_IS_BETTER
from monai_softcam.text import direction_arrow, table

out, dataset, runs = sys.argv[1], sys.argv[2], [a.split("=", 1) for a in sys.argv[3:]]
metrics = ("consistency",) + TABLE_METRICS  # consistency: the selection's score where there are no annotations
models = (("blackbox", None), ("softcam_dense", "penalty#lambda2"), ("softcam_sparse", "penalty#lambda1"))
rows = []
print("\nλ selection (the best validation explanation score within epsilon of the best validation accuracy):")
for backbone, weights in runs:
    folder = os.path.join(out, backbone)
    report = json.load(open(os.path.join(folder, "report", "report.json")))
    for model, key in models:
        test = json.load(open(os.path.join(folder, "eval", model, "metrics_test.json")))["metrics"]
        lambdas = {"penalty#lambda1": 0.0, "penalty#lambda2": 0.0}
        if key:
            study = os.path.join(folder, f"tune_{model.split('_')[1]}")
            s = json.load(open(os.path.join(study, "selected.json")))
            lambdas[key] = s[key]
            print(f"  {backbone:<8} {model.split('_')[1]:<6} {key.split('#')[1]} = {s[key]:g} (trial {s['number']}): "
                  f"val accuracy {s['accuracy']:.4f}, {s['metric']} {s[s['metric']]:.4f}, epsilon {s['epsilon']:g}; "
                  f"every trial: {os.path.join(study, 'results.md')}")
        for method, values in report["explanation"][model].items():
            means = {m: values[m]["mean"] if values.get(m, {}).get("n") else None for m in metrics}
            rows.append({"backbone": backbone, "model": model, "weights": weights, "lambda1": lambdas["penalty#lambda1"],
                         "lambda2": lambdas["penalty#lambda2"], "accuracy": test["accuracy"], "auc": test["auc"],
                         "method": method, **means})
with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
cell = lambda v: "-" if v is None else f"{v:.3f}"
head = ["backbone", "model", "λ", "accuracy", "ROC AUC", "method"] + [
    f"{m.replace('_', ' ')} {direction_arrow(HIGHER_IS_BETTER.get(m))}".strip() for m in metrics]
lines = [[r["backbone"], r["model"],
          f"lambda1 {r['lambda1']:g}" if r["lambda1"] else f"lambda2 {r['lambda2']:g}" if r["lambda2"] else "-",
          f"{r['accuracy']:.4f}", f"{r['auc']:.4f}", r["method"], *(cell(r[m]) for m in metrics)] for r in rows]
weights = "; ".join(f"{b}: {w}" for b, w in runs)
text = (f"# The paper's protocol on {dataset}, test split\n\n" + table(head, lines) + f"\nWeights: {weights}.\n"
        "Explanation metrics: the mean over the test images (95 % CIs and paired tests: <backbone>/report/table.md "
        "and paired.md); -: no image to measure it on (localisation needs annotations).\n")
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
print("\n" + text + f"\n(written to {os.path.join(out, 'summary.md')} and summary.csv)")
PY
