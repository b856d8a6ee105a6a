#!/usr/bin/env bash
# Run the MONAI Model Zoo's own CI steps, offline, on a bundle written by
# `python -m monai_softcam package-bundle`:
#
#   bash scripts/zoo_ci.sh MODEL_ZOO_CHECKOUT BUNDLE_DIR [UNIT_TEST] [SCHEMA]
#
# MODEL_ZOO_CHECKOUT is a clone of github.com/Project-MONAI/model-zoo (its ci/ scripts are run as
# they are, from there); BUNDLE_DIR is copied to <checkout>/models/<name> and UNIT_TEST (the
# test_<name>.py package-bundle writes with --unit_test) to <checkout>/ci/unit_tests/. The steps:
#   0. the hooks of the checkout's .pre-commit-config.yaml from pip's pre-commit-hooks, with their
#      arguments, on every file of the bundle as packaged (pre-commit itself would clone them);
#   1. ci/get_bundle_requirements.py, then pip's resolution of that file for Python 3.10 (the Zoo
#      CI's) and 3.11-3.13, wheels only, without installing;
#   2. ci/verify_bundle.py -m min, then -m full (large files downloaded from their URLs and checked
#      by hash; the metadata schema is SCHEMA, placed where ci/prepare_schema.py would download it);
#   3. ci/unit_tests/runner.py -b <name>.
# Run it with the Python that should run the bundle (PYTHON, default python): a fresh venv with the
# bundle's requirements shows that the bundle needs nothing else (monai_softcam included).
set -euo pipefail
zoo=$(cd "$1" && pwd)
bundle=$(cd "$2" && pwd)
unit_test=${3:-}
schema=${4:-$(dirname "$0")/../../shared/monai_schema/meta_schema_20240725.json}
python=${PYTHON:-python}
PATH="$(dirname "$(command -v "$python")"):$PATH"  # the hooks' console scripts beside that Python
name=$(basename "$bundle")
target="$zoo/models/$name"

[ -e "$target" ] && { echo "error: $target exists: use a fresh checkout" >&2; exit 2; }
[ -f "$schema" ] || { echo "error: no metadata schema at $schema (4th argument)" >&2; exit 2; }
cp -r "$bundle" "$target"
[ -n "$unit_test" ] && cp "$unit_test" "$zoo/ci/unit_tests/"
cd "$zoo"
status=0
step() {  # step NAME COMMAND...: run, report, remember a failure
    echo "=== $1"
    shift
    if "$@"; then echo "=== PASSED"; else echo "=== FAILED (exit $?)"; status=1; fi
}

step "pre-commit hooks of .pre-commit-config.yaml on models/$name (as packaged, before the download)" "$python" - "$target" <<'EOF'
import os
import re
import subprocess
import sys

import yaml

ENTRY = {"trailing-whitespace": "trailing-whitespace-fixer"}  # hook id -> console script, where they differ
# the file types pre-commit hands each hook (pre-commit-hooks' .pre-commit-hooks.yaml)
TYPES = {"check-yaml": (".yaml", ".yml"), "pretty-format-json": (".json",), "check-docstring-first": (".py",),
         "check-toml": (".toml",)}
root = sys.argv[1]
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) if "__pycache__" not in d for f in fs)
text = [f for f in files if b"\0" not in open(f, "rb").read(8192)]  # pre-commit's `types: [text]`
config = yaml.safe_load(open(".pre-commit-config.yaml"))
failed = []
for repo in config["repos"]:
    if not repo["repo"].endswith("pre-commit/pre-commit-hooks"):
        continue
    for hook in repo["hooks"]:
        hook_id, args = hook["id"], [a for a in hook.get("args", []) if a != "--autofix"]
        every = hook_id in ("check-case-conflict", "check-added-large-files", "forbid-new-submodules")
        chosen = [f for f in (files if every else text) if not re.search(hook.get("exclude", "^$"), f)]
        if hook_id in TYPES:
            chosen = [f for f in chosen if f.endswith(TYPES[hook_id])]
        if hook_id == "check-added-large-files":
            args.append("--enforce-all")  # every file counts as added (the checkout does not stage the bundle)
        if hook_id == "check-executables-have-shebangs":
            chosen = [f for f in chosen if os.access(f, os.X_OK)]
        if hook_id == "forbid-new-submodules":
            print("forbid-new-submodules: skipped (needs a git diff; a bundle holds no submodule)")
            continue
        if not chosen:
            print(f"{hook_id}: no files")
            continue
        code = subprocess.run([ENTRY.get(hook_id, hook_id), *args, *chosen]).returncode
        print(f"{hook_id} {' '.join(args)}: {'passed' if code == 0 else 'FAILED'} ({len(chosen)} files)")
        if code:
            failed.append(hook_id)
sys.exit(1 if failed else 0)
EOF
mkdir -p "$target/eval" && cp "$schema" "$target/eval/schema.json"  # what ci/prepare_schema.py downloads
requirements=$("$python" ci/get_bundle_requirements.py --b "$name")
echo "=== get_bundle_requirements.py: $requirements"
cat "$requirements"
for version in 3.10 3.11 3.12 3.13; do
    step "pip resolves $requirements for Python $version (wheels only, --dry-run)" \
        "$python" -m pip install --quiet --dry-run --ignore-installed --python-version "$version" --only-binary=:all: \
        --target "$(mktemp -d)" -r "$requirements"
done
step "verify_bundle.py -b $name -m min" "$python" ci/verify_bundle.py -b "$name" -m min
step "verify_bundle.py -b $name -m full" "$python" ci/verify_bundle.py -b "$name" -m full
step "unit_tests/runner.py -b $name" "$python" ci/unit_tests/runner.py -b "$name"
exit $status
