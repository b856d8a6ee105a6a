#!/usr/bin/env bash
# The demo benchmark: can the explanation metrics tell SoftCAM's own maps from post-hoc ones?
# For each demo variant with ground-truth lesion masks (small, multifocal, shortcut) it trains three
# models with the same backbone and budget (SoftCAM sparse: train.yaml's penalty; SoftCAM dense:
# lambda1 0, lambda2 1e-4; the black box: configs/blackbox.yaml), evaluates each on the test split,
# and runs the explanation report (configs/demo_comparison.yaml): SoftCAM's maps against the
# black box explained by the paper's five post-hoc methods (gradcam, integrated_gradients,
# guided_backprop, scorecam, layercam), localisation always against the lesion masks (the
# shortcut variant's marker is scripts/shortcut_audit.sh's business). Last, one table of the three
# reports (python -m monai_softcam.comparison): variant x model x method, each metric's mean
# [95 % CI] and SoftCAM's paired differences with the permutation test's p-values.
#
#   bash scripts/demo_comparison.sh [--quick] [OUTPUT_DIR]   (default comparison/, --quick: comparison_quick/)
#
# writes OUTPUT_DIR/<variant>/{data,sparse,dense,blackbox,report} and OUTPUT_DIR/comparison.{md,csv}.
#
# Time budget: the full form must end within 60 min and --quick within 15 min on this project's
# 2-core CPU. Measured there on an otherwise idle machine (torch 2.13 CPU build, 2 threads,
# train.yaml's quarter-width ResNet-18; 2026-12-01), the pieces cost:
#                               96 px (full)                 64 px (--quick)
#   data generation             2 ms per image               2 ms per image
#   training, per epoch         27 ms per training image     15 ms per training image
#                               + 11 ms per validation image + 10 ms per validation image
#   training, per run           14 s (start-up, first-epoch  9 s
#                               caching, final val report)
#   evaluation, per model       8.5 s (200 test images)      7 s (100 test images)
#   report, per test image      2.7 s                        0.9 s
#   report, per sanity case     9.5 s                        3.5 s
#   report start-up and files   about 10 s                   about 10 s
# (a report image: 7 model/method pairs with about 37 forward passes each for the deletion,
# insertion and paper-deletion curves; Score-CAM's 128 masked forward passes, 0.68 s at 96 px;
# Integrated Gradients' 12 ms per step; a sanity case re-runs each method once per layer group.
# Checked against whole reports: 50 images at 96 px took 163 s, predicted 164 s; 100 images at
# 64 px 106 s.) Hence:
#   full:  9 x (14 + 6 x (800 x 27 + 100 x 11) ms) = 1,350 s of training, 9 x 8.5 = 77 s of
#          evaluation, 3 x (10 + 200 x 2.7 + 2 x 9.5) = 1,710 s of reports: about 53 min;
#   quick: 9 x (9 + 4 x (400 x 15 + 100 x 10) ms) = 335 s, 9 x 7 = 63 s, 3 x (10 + 80 x 0.9 +
#          3.5) = 260 s: about 11 min.
# Measured whole on the otherwise idle machine (2026-12-01, after the small variant's contrast
# change): the full form took 52 min 32 s, --quick 8 min 54 s (a --quick run before the change
# took 12 min 30 s for nearly the same work: this machine's timings spread that much).
# Both keep train.yaml's settings and the report's metric settings (deletion_steps, patches) and
# cut epochs (train.yaml: 12), validation images and the report's optional costs (Integrated
# Gradients' steps, sanity and gallery cases). --quick also runs 64-px images (the variants'
# lesions keep their sizes in pixels and map cells): 96 px leaves no time to train within 15 min,
# so its numbers are not those of the full form. Another job on the same 2 cores slows both.
#
# For tests and experiments: DEMO_COMPARISON_VARIANTS (default "small multifocal shortcut"), and
# DEMO_COMPARISON_TRAIN_OVERRIDES / DEMO_COMPARISON_REPORT_OVERRIDES: bundle overrides appended to
# every training and evaluation / every report command (they win over the form's settings).
set -euo pipefail

usage() {
    echo "usage: bash scripts/demo_comparison.sh [--quick] [OUTPUT_DIR]"
}

quick=false
out_arg=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=true ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "error: unknown option '$1'" >&2; usage >&2; exit 2 ;;
        *)
            if [ -n "$out_arg" ]; then
                echo "error: one OUTPUT_DIR only, got '$out_arg' and '$1'" >&2; usage >&2; exit 2
            fi
            out_arg="$1" ;;
    esac
    shift
done

# the two forms' budgets (see the header for the time each takes)
if $quick; then
    out_arg="${out_arg:-comparison_quick}"
    data_budget=(--image_size "[64,64]" --demo_data#num_train 400 --demo_data#num_val 100 --demo_data#num_test 80)
    epochs=4
    report_budget=(--explain#options#integrated_gradients#steps 8 --explain#sanity_cases 1 --explain#gallery_cases 4)
else
    out_arg="${out_arg:-comparison}"
    data_budget=(--demo_data#num_train 800 --demo_data#num_val 100 --demo_data#num_test 200)
    epochs=6
    report_budget=(--explain#options#integrated_gradients#steps 16 --explain#sanity_cases 2)
fi
case "$out_arg" in /*) ;; *) out_arg="$PWD/$out_arg" ;; esac   # relative to where it was called from
read -r -a variants <<< "${DEMO_COMPARISON_VARIANTS:-small multifocal shortcut}"
read -r -a train_extra <<< "${DEMO_COMPARISON_TRAIN_OVERRIDES:-}"
read -r -a report_extra <<< "${DEMO_COMPARISON_REPORT_OVERRIDES:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ${#variants[@]} -eq 0 ]; then
    echo "error: DEMO_COMPARISON_VARIANTS names no variant" >&2; exit 2
fi
for variant in "${variants[@]}"; do
    if [ ! -f "$root/configs/demo_$variant.yaml" ]; then
        echo "error: no preset configs/demo_$variant.yaml for the variant '$variant'" >&2; exit 2
    fi
done

start=$SECONDS
# shellcheck source=scripts/setup_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
OUT="$out_arg"
TRAIN=bundle/configs/train.yaml
EVALUATE=bundle/configs/evaluate.yaml
reports=()
for variant in "${variants[@]}"; do
    preset="configs/demo_$variant.yaml"
    dir="$OUT/$variant"
    data=(--demo_dir "$dir/data")
    train=("${data[@]}" "${data_budget[@]}" --epochs "$epochs" --replace true ${train_extra[@]+"${train_extra[@]}"})  # its own folders: a re-run replaces them
    echo "== $variant: training SoftCAM sparse, SoftCAM dense and the black box ($epochs epochs each)"
    python -m monai.bundle run training --config_file "['$TRAIN','$preset']" --bundle_root "$dir/sparse" "${train[@]}"
    python -m monai.bundle run training --config_file "['$TRAIN','$preset']" --bundle_root "$dir/dense" "${train[@]}" \
        --penalty#lambda1 0.0 --penalty#lambda2 1.0e-4
    python -m monai.bundle run training --config_file "['$TRAIN','$preset','configs/blackbox.yaml']" \
        --bundle_root "$dir/blackbox" "${train[@]}"
    for model in sparse dense blackbox; do
        python -m monai.bundle run evaluate --config_file "['$TRAIN','$EVALUATE','$preset']" \
            --bundle_root "$dir/$model" "${data[@]}" ${train_extra[@]+"${train_extra[@]}"}
    done
    echo "== $variant: explanation report"
    python -m monai.bundle run explain_eval \
        --config_file "['$TRAIN','$EVALUATE','bundle/configs/explain.yaml','$preset','configs/demo_comparison.yaml']" \
        --bundle_root "$dir/sparse" "${data[@]}" "${report_budget[@]}" ${report_extra[@]+"${report_extra[@]}"}
    reports+=("$variant=$dir/report")
done
python -m monai_softcam.comparison --output_dir "$OUT" "${reports[@]}"
echo "comparison table: $OUT/comparison.md, $OUT/comparison.csv; reports: $OUT/<variant>/report/index.html"
elapsed=$((SECONDS - start))
printf 'elapsed: %d min %02d s\n' $((elapsed / 60)) $((elapsed % 60))
