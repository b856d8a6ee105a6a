#!/usr/bin/env bash
# The MONAI Model Zoo's own CI, run offline on a bundle written by `python -m monai_softcam package-bundle`:
#
#   bash scripts/zoo_ci.sh BUNDLE_DIR UNIT_TEST [DIST_TEST]
#
# BUNDLE_DIR is the packaged models/<name>, UNIT_TEST its ci/unit_tests/test_<name>.py, DIST_TEST (optional) its
# test_<name>_dist.py. Environment (default):
#   ZOO     git repository of Project-MONAI/model-zoo to clone (/work/.mirror/Project-MONAI+model-zoo/repo)
#   SCHEMA  the metadata schema that the bundle's "schema" URL names (shared/monai_schema/<its file name>, beside this repo)
#   HOOKS   git repository of pre-commit/pre-commit-hooks holding the config's rev (/work/.mirror/pre-commit+pre-commit-hooks/repo)
#   PYTHON  Python of the fresh venv (python3.11: `pip install torch==2.13.0` finds a local CPU wheel for it)
#   WORK    folder for the Zoo checkout, the venv and pre-commit's cache (a new mktemp -d)
# pip's own settings (pip.conf, PIP_FIND_LINKS, PIP_EXTRA_INDEX_URL: e.g. the wheel of scripts/check_package.sh for a
# `--code pip` bundle, whose monai_softcam is not on PyPI) apply; the venv step prints the sources they add.
# In WORK/model-zoo, the bundle committed on a new branch, with a venv of only what the Zoo installs, the steps are those of
# ci/run_premerge_cpu.sh and ci/run_premerge_gpu.sh, pre-commit with the Zoo's .pre-commit-config.yaml, and
# .github/workflows/code-format-check.yml's runtests.sh. What would use the network has a local substitute, printed
# as "substitute:" where it is used: origin/dev, the schema download, pre-commit's clone of pre-commit-hooks
# (large files are downloaded from their large_files.yml URLs as they are: file:// URLs need no network).
set -uo pipefail
[ $# -ge 2 ] || { sed -n 2,19p "$0" >&2; exit 2; }
bundle=$(realpath "$1") unit_test=$(realpath "$2") dist_test=${3:+$(realpath "$3")}
name=$(basename "$bundle")
shared=$(realpath -m "$(dirname "$(realpath "$0")")/../../shared")
ZOO=${ZOO:-/work/.mirror/Project-MONAI+model-zoo/repo}
HOOKS=${HOOKS:-/work/.mirror/pre-commit+pre-commit-hooks/repo}
WORK=${WORK:-$(mktemp -d)}
unset PYTHONPATH PYTHONHOME
failed=() summary=()
step() {  # step TITLE COMMAND...: run it, print its verdict and time, remember it for the summary
    local start=$SECONDS rc=0
    echo "=== $1"
    "${@:2}" || rc=$?
    if [ $rc = 0 ]; then echo "=== PASSED"; else echo "=== FAILED (exit $rc)"; failed+=("$1"); fi
    summary+=("$([ $rc = 0 ] && echo PASSED || echo "FAILED ($rc)")  $(( SECONDS - start )) s  $1")
    return $rc
}

checkout() {  # a clone of the Zoo at its commit, the bundle staged (committed after pre-commit) on a new branch
    git clone -q "$ZOO" "$WORK/model-zoo" && cd "$WORK/model-zoo" || return
    git update-ref refs/remotes/origin/dev HEAD
    echo "substitute: origin/dev := $(git rev-parse HEAD), the clone's own commit of $ZOO (no 'git fetch origin dev')"
    git checkout -q -b "add-$name"
    cp -r "$bundle" "models/$name" && cp "$unit_test" ${dist_test:+"$dist_test"} ci/unit_tests/ && git add -A
    echo "staged on branch add-$name: $(git diff --cached --name-only | wc -l) files, $(echo $(git diff --cached --name-only -- ci))"
}

venv() {  # python -m venv, torch first, then the Zoo's requirements files; a line that cannot install is named and left out
    "${PYTHON:-python3.11}" -m venv "$WORK/venv" && export VIRTUAL_ENV=$WORK/venv PATH=$WORK/venv/bin:$PATH || return
    echo "substitute: pip's sources besides PyPI, and constraints: $(echo $(pip config list | grep -E 'index-url|find-links|constraint'))"
    pip install -q --upgrade pip wheel && pip install -q torch==2.13.0 && pip install -q -r requirements.txt || return
    if ! pip install -q -r requirements-dev.txt; then
        echo "requirements-dev.txt does not install as a whole: each line alone, those that fail left out"
        sed -e 's/#.*//' -e '/^ *$/d' requirements-dev.txt | while read -r req; do
            pip install -q "$req" 2>"$WORK/pip.err" || echo "LEFT OUT: $req ($(grep ERROR "$WORK/pip.err" | tail -1))"
        done
    else
        echo "left out of requirements-dev.txt: nothing (every line installed)"
    fi
    pip freeze | grep -i -E '^(black|isort|flake8|flake8-[a-z]+|pep8-naming|pycodestyle|pyflakes|mccabe|pytype|pre.commit|torch|monai)=='
    (cd "$WORK" && python -c "import monai_softcam") 2>/dev/null && { echo "error: monai_softcam is importable"; return 1; }
    echo "monai_softcam is not importable in $WORK/venv (PYTHONPATH unset); python: $(command -v python)"
}

pre_commit() {  # pre-commit run on the bundle's files, with the Zoo's config but pre-commit-hooks from HOOKS
    local config=$WORK/pre-commit-config.yaml
    sed "s#repo: https://github.com/pre-commit/pre-commit-hooks\$#repo: $HOOKS#" .pre-commit-config.yaml >"$config"
    local lang; lang=$(sed -n 's/^ *python: *//p' .pre-commit-config.yaml | head -1)  # default_language_version
    if ! python -m virtualenv -p "$lang" "$WORK/$lang" >"$WORK/$lang.log" 2>&1; then  # what pre-commit would do
        sed -i "s/^\( *python: *\)$lang\$/\1python3/" "$config"
        echo "substitute: no virtualenv for $lang here ($(grep -m1 -o '[A-Za-z]*Error: .*' "$WORK/$lang.log")): python3 ($(python3 -V))"
    fi
    echo "substitute: pre-commit-hooks cloned from $HOOKS; the config otherwise unchanged:"
    diff .pre-commit-config.yaml "$config"
    local files; mapfile -t files < <(git diff --cached --name-only)
    PRE_COMMIT_HOME=$WORK/pre-commit-home pre-commit run -c "$config" --files "${files[@]}"
    local rc=$?
    [ -z "$(git diff --stat)" ] || { echo "the hooks changed files (undone):"; git diff --stat; git checkout -q -- .; }
    git -c user.name=zoo_ci -c user.email=zoo_ci@localhost commit -qm "add $name" && return $rc
}

changed_bundles() {  # run_premerge_*.sh: the bundles with a changed file under models/
    bundle_list=$(python ci/get_changed_bundle.py --f "$(git diff --name-only "$(git rev-parse HEAD)" origin/dev -- models)")
    echo "get_changed_bundle.py: '$bundle_list'"
    [ "$(echo $bundle_list)" = "$name" ]
}

prepare_schema() {
    local file; file=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['schema'].split('/')[-1])" \
        "models/$name/configs/metadata.json") || return
    cp "${SCHEMA:-$shared/monai_schema/$file}" "models/$file" || return
    echo "substitute: ${SCHEMA:-$shared/monai_schema/$file} copied to models/$file, where prepare_schema.py downloads it"
    python ci/prepare_schema.py --l "$bundle_list"
}

requirements() {  # as run_premerge_*.sh: ALLOW_MONAI_RC=true, so --pre; then the extra install script, if any
    export ALLOW_MONAI_RC=true
    local file script; file=$(python ci/get_bundle_requirements.py --b "$name") || return
    echo "$file:"; cat "$file"
    pip install -q --pre -r "$file" || return
    cp "$file" "$WORK/requirements.txt"  # for the Python 3.10 check (codeformat cleans the checkout)
    script=$(python ci/get_bundle_requirements.py --b "$name" --get_script True)
    [ -z "$script" ] || bash "$script" || return
    pip freeze | grep -i -E '^(torch|monai|numpy)=='
}

python310() {  # the workflows' Python is 3.10.14; this venv's is 3.11 (torch's local CPU wheel): do the pins resolve there?
    echo "substitute: Python $(python -c 'import platform; print(platform.python_version())') for the workflows' 3.10.14; pip resolves the same pins for 3.10, wheels only, without installing"
    pip install -q --dry-run --pre --ignore-installed --python-version 3.10 --only-binary=:all: \
        --target "$WORK/py310" -r "$WORK/requirements.txt"
}

codeformat() {  # code-format-check.yml on a fresh checkout of the branch holding no other bundle
    git clean -fdxq && git checkout -q -- .
    local others; others=$(find models -mindepth 1 -maxdepth 1 -type d ! -name "$name" | sort)
    echo "removed from the checkout, so that only $name is under models/ (not committed): $(echo $others)"
    rm -rf $others && ./runtests.sh --clean >/dev/null && ./runtests.sh --codeformat -j 2
}

step "checkout of $ZOO with models/$name" checkout || exit 1
step "venv: torch==2.13.0, requirements.txt, requirements-dev.txt" venv || exit 1
step "pre-commit run --files (models/$name and its unit tests), then commit" pre_commit
step "ci/get_changed_bundle.py (git diff HEAD origin/dev -- models)" changed_bundles
step "ci/prepare_schema.py --l $name" prepare_schema
step "ci/get_bundle_requirements.py --b $name, pip install --pre -r" requirements
step "pip resolves the requirements for Python 3.10 (the workflows' Python), --dry-run" python310
echo "large files, which verify_bundle.py downloads from their URLs as they are: $(echo $(grep -h 'url:' models/$name/large_files.y*ml))"
step "ci/verify_bundle.py -b $name -m min" python ci/verify_bundle.py -b "$name" -m min
step "ci/verify_bundle.py -b $name -m full" python ci/verify_bundle.py -b "$name" -m full
step "ci/unit_tests/runner.py --b $name" python ci/unit_tests/runner.py --b "$name"
if [ -n "$dist_test" ]; then  # run_premerge_gpu.sh True; the test starts its own torchrun (ci/unit_tests/utils.py)
    step "torchrun ci/unit_tests/runner.py --b $name --dist True (no GPU: gloo)" \
        env CUDA_VISIBLE_DEVICES= torchrun ci/unit_tests/runner.py --b "$name" --dist True
fi
step "runtests.sh --codeformat -j 2" codeformat
if [ "${#failed[@]}" -gt 0 ] && [[ " ${failed[*]} " == *codeformat* ]]; then
    for tool in isort black flake8 "pytype -j 2"; do  # --codeformat stops at its first failing tool: each alone
        step "runtests.sh --$tool (diagnostic: each tool alone)" ./runtests.sh --$tool
    done
fi
echo "=== summary ($WORK)"
printf '%s\n' "${summary[@]}"
[ ${#failed[@]} = 0 ]
