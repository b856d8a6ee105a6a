#!/usr/bin/env bash
# The main job: train SoftCAM on the built-in demo data (generated on first use), then print the
# validation metrics and where the model, metrics and evidence-map pictures were written.
# Extra arguments are bundle overrides, e.g.  bash scripts/demo.sh --epochs 3 --device cpu
set -euo pipefail
# shellcheck source=scripts/setup_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
python -m monai.bundle run training --config_file bundle/configs/train.yaml "$@"
