"""The checks the MONAI Model Zoo runs on a new bundle, run offline on a copy of bundle/ with an
untrained model: required files, version in changelog, metadata against the Zoo's schema, the
inference workflow's properties, the network's inputs and outputs, and the export round trip
(TorchScript through ``ckpt_export``, ONNX through the bundle's ``export_onnx``)."""

import ast
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml
from bundle_helpers import EVALUATE, TINY, TRAIN, run_bundle
from conftest import REPO_ROOT, SHARED_DIR, package_requirements

BUNDLE = os.path.join(REPO_ROOT, "bundle")
SCHEMA = os.path.join(SHARED_DIR, "monai_schema", "meta_schema_20240725.json")
ATOL = 1e-4


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _run(*commands, timeout=300):
    """Run ``python -m monai.bundle <args>`` for each argument list, side by side; fail with the output of any that fails."""
    procs = []
    for args in commands:
        cmd = [sys.executable, "-m", "monai.bundle", *args]
        procs.append(
            (
                cmd,
                subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    env=_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    encoding="utf-8",
                    errors="replace",
                ),
            )
        )
    outputs = []
    for cmd, proc in procs:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}\n{err[-6000:]}")
        outputs.append(out)
    return outputs


def _parser(root, configs=("inference.yaml",)):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(root / "configs" / c) for c in configs])
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    return parser


@pytest.fixture(scope="module")
def zoo_bundle(tmp_path_factory):
    """A copy of bundle/ (configs, docs, LICENSE, large_files.yml) with a freshly initialised models/model.pt
    (a plain state dict, as training writes it; batch-norm statistics randomised so that comparisons are not trivial).
    """
    root = tmp_path_factory.mktemp("zoo") / "softcam_demo"
    shutil.copytree(os.path.join(BUNDLE, "configs"), root / "configs")
    shutil.copytree(os.path.join(BUNDLE, "docs"), root / "docs")
    for name in ("LICENSE", "large_files.yml"):
        shutil.copy(os.path.join(BUNDLE, name), root / name)
    os.makedirs(root / "models")
    # the trained task beside the model, as training writes it (here: train.yaml's demo task)
    from monai.bundle import ConfigParser

    train = ConfigParser()
    train.read_config(os.path.join(BUNDLE, "configs", "train.yaml"))
    train.get_parsed_content("task").save(str(root / "models" / "task.json"))
    torch.manual_seed(0)
    net = _parser(root).get_parsed_content("network_def")
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def test_required_files_version_and_large_files():
    for name in (
        "LICENSE",
        "configs/metadata.json",
        "configs/inference.yaml",
        "configs/logging.conf",
        "docs/README.md",
    ):
        assert os.path.isfile(os.path.join(BUNDLE, name)), f"bundle/{name} is missing"
    meta = json.load(open(os.path.join(BUNDLE, "configs", "metadata.json")))
    assert meta["version"] in meta["changelog"], f"version {meta['version']} is not in the changelog"
    large = yaml.safe_load(open(os.path.join(BUNDLE, "large_files.yml")))["large_files"]
    paths = [entry["path"] for entry in large]
    assert {"models/model.pt", "models/model.ts", "models/model.onnx"} <= set(paths)
    assert all({"path", "url", "hash_val", "hash_type"} <= set(entry) for entry in large)
    # the weights themselves stay out of git
    ignored = open(os.path.join(REPO_ROOT, ".gitignore")).read().split()
    assert {"bundle/models/*.pt", "bundle/models/*.ts", "bundle/models/*.onnx"} <= set(ignored)


@pytest.fixture
def schema(tmp_path):
    if not os.path.isfile(SCHEMA):
        pytest.skip(f"the Model Zoo schema is not at {SCHEMA} (shared/monai_schema)")
    path = tmp_path / "schema.json"  # verify_metadata skips the download when the file exists
    shutil.copy(SCHEMA, path)
    return str(path)


@pytest.mark.filterwarnings("ignore:No hash value provided")  # the schema is a local copy: nothing is downloaded
def test_metadata_verifies_offline_against_the_zoo_schema(schema, tmp_path):
    from monai.bundle import verify_metadata

    meta_file = os.path.join(BUNDLE, "configs", "metadata.json")
    verify_metadata(meta_file=meta_file, filepath=schema)
    meta = json.load(open(meta_file))
    assert meta["schema"].endswith("/meta_schema_20240725.json")
    outputs = meta["network_data_format"]["outputs"]
    assert set(outputs) == {"pred"}  # one tensor: the evidence maps, whose spatial mean is the logits
    classes = yaml.safe_load(open(os.path.join(BUNDLE, "configs", "train.yaml")))[
        "class_names"
    ]  # the demo task it describes
    assert outputs["pred"]["num_channels"] == len(classes) and outputs["pred"]["spatial_shape"] == [12, 12]
    # the check can fail: a metadata file without a required key, or with a wrongly typed one, is refused
    for broken in ({k: v for k, v in meta.items() if k != "network_data_format"}, {**meta, "version": 2}):
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match="Failed validating"):
            verify_metadata(meta_file=str(path), filepath=schema)


def test_inference_workflow_properties(zoo_bundle, tmp_path):
    from monai.bundle import ConfigWorkflow
    from PIL import Image

    images = tmp_path / "images"  # what a user passes as --input_path
    os.makedirs(images)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 100), dtype=np.uint8)).save(images / "a.png")
    wf = ConfigWorkflow(
        config_file=str(zoo_bundle / "configs" / "inference.yaml"),
        meta_file=str(zoo_bundle / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(zoo_bundle),
        input_path=str(images),
    )
    wf.initialize()
    assert wf.check_properties() == []


def test_network_inputs_and_outputs_match_metadata(zoo_bundle):
    from monai.bundle import verify_net_in_out

    files = {
        "net_id": "network_def",
        "meta_file": str(zoo_bundle / "configs" / "metadata.json"),
        "config_file": str(zoo_bundle / "configs" / "inference.yaml"),
        "bundle_root": str(zoo_bundle),
        "device": "cpu",
    }
    # the Zoo's check with its default arguments (ci/verify_bundle.py verify_data_shape): outputs#pred
    # is the one tensor network_def returns, the evidence maps [B, 2, 12, 12]
    verify_net_in_out(**files)
    with pytest.raises(ValueError, match="output channel number `2` doesn't match: `3`"):
        verify_net_in_out(**files, **{"_meta_#network_data_format#outputs#pred#num_channels": 3})
    # the maps' spatial mean is the logits the inference network (EvidenceOutputs) reports
    parser = _parser(zoo_bundle)
    image = parser.get("_meta_")["network_data_format"]["inputs"]["image"]
    net, wrapped = parser.get_parsed_content("network_def").eval(), parser.get_parsed_content("network").eval()
    x = torch.rand(2, image["num_channels"], *image["spatial_shape"])
    with torch.no_grad():
        maps, out = net(x), wrapped(x)
    assert isinstance(maps, torch.Tensor) and maps.shape == (2, 2, 12, 12)
    torch.testing.assert_close(out["evidence_maps"], maps)
    torch.testing.assert_close(out["logits"], maps.flatten(2).mean(-1))


@pytest.mark.slow
def test_export_round_trip_torchscript_and_onnx(zoo_bundle):
    pytest.importorskip("onnxruntime", reason="the ONNX extra: pip install 'monai_softcam[onnx]'")
    from monai_softcam.checkpoint import load_weights
    from monai_softcam.export import run_onnx

    configs, models = zoo_bundle / "configs", zoo_bundle / "models"
    # the documented commands (docs/README.md), with this bundle's paths
    _, onnx_out = _run(
        [
            "ckpt_export",
            "--net_id",
            "network_def",
            "--filepath",
            str(models / "model.ts"),
            "--ckpt_file",
            str(models / "model.pt"),
            "--meta_file",
            str(configs / "metadata.json"),
            "--config_file",
            repr([str(configs / "inference.yaml"), str(models / "task.json")]),
        ],
        ["run", "export_onnx", "--config_file", repr([str(configs / "inference.yaml"), str(configs / "export.yaml")])],
    )
    assert f"wrote {models / 'model.onnx'} outputs ['logits', 'evidence_maps']" in onnx_out

    extra = {"metadata.json": "", "inference.json": "", "task.json": ""}
    ts = torch.jit.load(str(models / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == json.load(open(configs / "metadata.json"))["version"]
    assert (
        json.loads(extra["task.json"])["image_size"] == json.load(open(models / "task.json"))["image_size"]
    )  # the task travels
    assert json.loads(extra["inference.json"])["network_def"]["maps_only"] is True

    parser = _parser(zoo_bundle)
    net = load_weights(parser.get_parsed_content("network_def"), str(models / "model.pt")).eval()
    x = torch.randn(3, 1, *parser.get_parsed_content("trained_task").image_size)
    with torch.no_grad():
        eager, scripted = net(x), ts(x)  # one tensor each: the evidence maps
    onnx = run_onnx(models / "model.onnx", x)  # two named outputs
    assert isinstance(scripted, torch.Tensor) and scripted.shape == eager.shape == onnx["evidence_maps"].shape
    assert float((scripted - eager).abs().max()) <= ATOL
    assert float(np.abs(onnx["evidence_maps"] - eager.numpy()).max()) <= ATOL
    assert float(np.abs(onnx["logits"] - eager.flatten(2).mean(-1).numpy()).max()) <= ATOL
    assert eager.std() > 0 and eager.shape[2:] == (12, 12)


def zoo_pre_commit(root, tmp_path, monkeypatch):
    """Run the hooks of the Model Zoo's .pre-commit-config.yaml (pre-commit-hooks v4.6), with its
    arguments, on a copy of every file under ``root`` (the fixers rewrite what they fix); return
    {hook: exit status}. ``forbid-new-submodules`` needs a git diff, and a bundle holds no submodule."""
    from pre_commit_hooks import (
        check_added_large_files,
        check_case_conflict,
        check_docstring_first,
        check_executables_have_shebangs,
        check_toml,
        check_yaml,
        detect_private_key,
        end_of_file_fixer,
        mixed_line_ending,
        pretty_format_json,
        trailing_whitespace_fixer,
    )

    root = pathlib.Path(root)
    copies = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        copy = tmp_path / path.relative_to(root)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(path.read_bytes())
        os.chmod(copy, path.stat().st_mode)
        copies.append(str(copy))
    of = lambda *suffixes: [c for c in copies if c.endswith(suffixes)]  # noqa: E731 (the hooks' file types)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # the large-file and case hooks ask git
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    monkeypatch.chdir(tmp_path)
    return {
        "end-of-file-fixer": end_of_file_fixer.main(copies),
        "trailing-whitespace": trailing_whitespace_fixer.main([c for c in copies if not c.endswith((".ts", ".pt"))]),
        "check-yaml": check_yaml.main(of(".yaml", ".yml")),
        "check-docstring-first": check_docstring_first.main(of(".py")),
        # pre-commit hands this hook the executable files only (its `types: [text, executable]`)
        "check-executables-have-shebangs": check_executables_have_shebangs.main(
            [c for c in copies if os.access(c, os.X_OK)]
        ),
        "check-toml": check_toml.main(of(".toml")),
        "check-case-conflict": check_case_conflict.main(copies),
        "check-added-large-files": check_added_large_files.main(["--maxkb=1024", "--enforce-all", *copies]),
        "detect-private-key": detect_private_key.main(copies),
        "pretty-format-json": pretty_format_json.main(["--no-sort-keys", "--indent=4", *of(".json")]),
        "mixed-line-ending": mixed_line_ending.main(copies),
    }


def test_the_zoos_pre_commit_hooks_accept_the_bundle(tmp_path, monkeypatch):
    """JSON as `pretty-format-json --no-sort-keys --indent=4` writes it, YAML that parses, no trailing
    whitespace, a newline at the end of every file, nothing over 1 MB, ... on every file of bundle/."""
    results = zoo_pre_commit(BUNDLE, tmp_path / "copy", monkeypatch)
    assert results == dict.fromkeys(results, 0)
    # the check can fail: the JSON hook refuses a 2-space metadata.json
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metadata.json").write_text(json.dumps({"a": [1, 2]}, indent=2) + "\n")
    assert zoo_pre_commit(tmp_path / "bad", tmp_path / "bad_copy", monkeypatch)["pretty-format-json"] == 1


def test_metadata_versions_meet_the_packages_floors():
    """The Zoo installs `name==version` for the metadata's versions (ci/get_bundle_requirements.py):
    each is a package monai_softcam needs, at or above its pyproject.toml floor. (That they have wheels for
    Python 3.10, the Zoo's workflows', scripts/zoo_ci.sh checks with pip install --dry-run --python-version.)"""
    import tomllib

    from packaging.requirements import Requirement

    floors = {Requirement(r).name.lower(): Requirement(r) for r in package_requirements()}
    # the packages of the extras the bundle's configs can reach (export.yaml's ONNX export, run tune, Captum)
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    optional = {
        Requirement(r).name.lower(): Requirement(r) for extra in ("onnx", "tune", "captum") for r in extras[extra]
    }
    meta = json.load(open(os.path.join(BUNDLE, "configs", "metadata.json")))
    pinned = {
        "monai": meta["monai_version"],
        "torch": meta["pytorch_version"],
        "numpy": meta["numpy_version"],
        **meta["required_packages_version"],
    }
    assert "monai_softcam" not in pinned  # not on PyPI: the Zoo could not install it
    for name, version in pinned.items():
        requirement = floors.get(name.lower()) or optional.get(name.lower())
        assert (
            requirement is not None
        ), f"{name} is pinned in metadata.json but is neither a dependency nor in the onnx/tune/captum extras"
        assert requirement.specifier.contains(version), f"{name}=={version} is below pyproject.toml's {requirement}"
    assert set(floors) - {n.lower() for n in pinned} == set()  # every dependency is pinned for the Zoo
    assert set(optional) - {n.lower() for n in pinned} == set()  # and those of the extras the configs reach


#: import names whose distribution has another name (the fallback where the package is not installed here)
DISTRIBUTIONS = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "ignite": "pytorch-ignite",
    "cv2": "opencv-python",
    "np": "numpy",
}


def _distribution(module):
    """The pip distribution (normalised: lower case, '-') that provides the top-level ``module``."""
    from importlib.metadata import packages_distributions

    names = DISTRIBUTIONS.get(module) or (packages_distributions().get(module) or [None])[0]
    assert names, f"{module}: no installed distribution provides it and DISTRIBUTIONS does not name one"
    return re.sub(r"[-_.]+", "-", names).lower()


def _module_imports(tree):
    """The top-level module names a Python AST imports: import/from statements (absolute) and
    ``__import__('x')`` / ``importlib.import_module('x')`` of a constant, or of the variable of a loop
    over constants (``for module in ("onnx", "onnxscript"): __import__(module)``)."""

    def dynamic_import(node):
        return isinstance(node, ast.Call) and (
            (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
        )

    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.For)
            and isinstance(node.target, ast.Name)
            and isinstance(node.iter, (ast.Tuple, ast.List))
            and any(
                dynamic_import(call)
                and call.args
                and isinstance(call.args[0], ast.Name)
                and call.args[0].id == node.target.id
                for part in node.body
                for call in ast.walk(part)
            )
        ):
            found |= {e.value.split(".")[0] for e in node.iter.elts if isinstance(e, ast.Constant)}
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            dynamic_import(node)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            found.add(node.args[0].value.split(".")[0])
    return found


def _config_imports(configs):
    """The top-level modules the YAML configs ``configs`` can import: ``$import x``/``$from x import y``,
    the import statements and module names (``$torch.x``, ``$os.path``) of every ``$`` expression, and
    the modules of ``_target_`` paths (a bare class name is MONAI's)."""
    import builtins
    import importlib.util

    found = set()

    def scalar(key, value):
        if key == "_target_" and isinstance(value, str):
            found.add(value.split(".")[0] if "." in value else "monai")
        elif isinstance(value, str) and value.startswith("$"):
            code = re.sub(r"[@%][\w#./:-]+", "_ref_", value[1:])  # @ref and %macro: placeholders
            try:
                tree = ast.parse(code.strip())
            except SyntaxError as err:
                pytest.fail(f"config expression {value!r} is not Python: {err}")
            found.update(_module_imports(tree))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute):
                    root = node
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    if isinstance(root, ast.Name) and root.id != "_ref_" and not hasattr(builtins, root.id):
                        if root.id in DISTRIBUTIONS or importlib.util.find_spec(root.id) is not None:
                            found.add(root.id)

    def walk(value, key=None):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        else:
            scalar(key, value)

    for config in configs:
        walk(yaml.safe_load(open(config)))
    return found


def _declared_distributions(meta):
    names = {"monai", "torch", "numpy", *meta["required_packages_version"], *meta.get("optional_packages_version", {})}
    return {re.sub(r"[-_.]+", "-", n).lower() for n in names}


def _undeclared_imports(configs, code_name, code_dir, meta):
    """``{distribution: [modules]}`` that the configs, or the bundle's code package ``code_name`` in
    ``code_dir`` they import, can import and ``meta`` does not declare (the Zoo installs only those)."""
    imported = _config_imports(configs)
    assert code_name in imported, f"the configs do not import {code_name}"
    for path in pathlib.Path(code_dir).rglob("*.py"):
        if "templates" not in path.relative_to(code_dir).parts:
            imported |= _module_imports(ast.parse(path.read_text(), str(path)))
    third_party = sorted(m for m in imported - {code_name, "_ref_"} if m not in sys.stdlib_module_names)
    declared = _declared_distributions(meta)
    missing = {}
    for module in third_party:
        dist = _distribution(module)
        if dist not in declared:
            missing.setdefault(dist, []).append(module)
    return missing, third_party


def test_metadata_declares_every_package_the_shipped_configs_can_import():
    """The Zoo's CI installs only the packages metadata.json declares (CONTRIBUTING.md, "Prepare
    dependencies"; ci/get_bundle_requirements.py reads required_packages_version and
    optional_packages_version, and MONAI reads the latter as a deprecated name that replaces the former,
    so every package is in required_packages_version): every module the shipped configs and the package
    they import can import is one of them (onnx/onnxscript/onnxruntime for export.yaml, optuna and captum
    through the package)."""
    from monai_softcam.package import CONFIG_FILES

    meta = json.load(open(os.path.join(BUNDLE, "configs", "metadata.json")))
    configs = [os.path.join(BUNDLE, "configs", c) for c in CONFIG_FILES if c.endswith(".yaml")]
    missing, imported = _undeclared_imports(configs, "monai_softcam", os.path.join(REPO_ROOT, "monai_softcam"), meta)
    assert missing == {}, f"metadata.json does not declare {missing}"
    assert {"onnx", "onnxscript", "onnxruntime", "optuna", "captum", "PIL", "ignite"} <= set(imported)
    assert "optional_packages_version" not in meta  # MONAI would replace required_packages_version with it
    # the check sees what is missing
    extras = ("onnx", "onnxscript", "onnxruntime", "optuna", "captum")
    fewer = {
        **meta,
        "required_packages_version": {k: v for k, v in meta["required_packages_version"].items() if k not in extras},
    }
    assert set(_undeclared_imports(configs, "monai_softcam", os.path.join(REPO_ROOT, "monai_softcam"), fewer)[0]) == {
        "onnx",
        "onnxscript",
        "onnxruntime",
        "optuna",
        "captum",
    }


# ---------------------------------------------------------------------------- package-bundle
NAME = "lesion_synthetic_softcam_classification"
AUTHORS = "Ada Author, Ben Builder (Example Lab)"
HARDWARE = "1 NVIDIA H100 GPU, 3 minutes"


def _cli(*args, cwd=REPO_ROOT):
    return subprocess.run(
        [sys.executable, "-m", "monai_softcam", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained_demo(trained_bundle):
    """The session's tiny trained demo model (conftest.trained_bundle: 2 epochs, 32 px), evaluated on
    the test split as the README's commands do it."""
    root, _ = trained_bundle
    run_bundle("evaluate", [TRAIN, EVALUATE, TINY], "--bundle_root", str(root))
    return root


@pytest.fixture(scope="module")
def packaged(trained_demo, tmp_path_factory):
    zoo = tmp_path_factory.mktemp("model-zoo")  # the Zoo's layout: models/<name>, ci/unit_tests/test_<name>.py
    (zoo / "ci" / "unit_tests").mkdir(parents=True)
    models = trained_demo / "models"
    done = _cli(
        "package-bundle",
        "--ckpt_dir",
        str(models),
        "--out",
        str(zoo / "models" / NAME),
        "--name",
        NAME,
        "--url",
        f"model.pt={(models / 'model.pt').as_uri()}",
        "--allow_local_urls",  # a file:// URL: the download step checked offline
        "--authors",
        AUTHORS,
        "--hardware",
        HARDWARE,
        "--unit_test",
        str(zoo / "ci" / "unit_tests" / f"test_{NAME}.py"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote the Model Zoo bundle {NAME}" in done.stdout
    return zoo, zoo / "models" / NAME


@pytest.mark.slow
def test_package_bundle_writes_this_models_bundle(packaged, trained_demo, schema):
    from monai.bundle import verify_metadata

    from monai_softcam.task import TASK_KEYS, Task

    _, root = packaged
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert {
        "LICENSE",
        "large_files.yml",
        "docs/README.md",
        "configs/metadata.json",
        "configs/inference.yaml",
        "configs/train.yaml",
        "configs/evaluate.yaml",
        "configs/logging.conf",
        "models/task.json",
        "scripts/__init__.py",
        "scripts/task.py",
        "scripts/networks/softcam.py",
    } <= set(files)
    assert not any(
        f.endswith((".pt", ".ts", ".onnx", ".pyc")) for f in files
    )  # the weights are downloaded, not shipped
    assert max((root / f).stat().st_size for f in files) < 1024 * 1024
    # scripts/ holds the package's modules that the shipped configs reach, each a copy of its source
    package = pathlib.Path(REPO_ROOT) / "monai_softcam"
    shipped = sorted(str(p.relative_to(root / "scripts")) for p in (root / "scripts").rglob("*.py"))
    assert "explain.py" not in shipped and "tune.py" not in shipped and "package.py" not in shipped
    assert not any(name.startswith(("explanation_report", "templates")) for name in shipped)
    for name in shipped:
        assert (root / "scripts" / name).read_bytes() == (package / name).read_bytes(), name
    # large_files.yml: the URL given and the file's SHA-256
    import hashlib

    (entry,) = yaml.safe_load(open(root / "large_files.yml"))["large_files"]
    model_pt = trained_demo / "models" / "model.pt"
    assert entry == {
        "path": "models/model.pt",
        "url": model_pt.as_uri(),
        "hash_type": "sha256",
        "hash_val": hashlib.sha256(model_pt.read_bytes()).hexdigest(),
    }
    # the configs import the packaged copy and describe this model: train.yaml's task keys are the saved task's
    for config in ("train.yaml", "inference.yaml"):  # (evaluate.yaml is merged after train.yaml, which imports)
        text = (root / "configs" / config).read_text()
        assert re.search(r"^  - \$import scripts$", text, re.M) and "$import monai_softcam" not in text
    task = Task.read(str(trained_demo / "models" / "task.json"))
    train = yaml.safe_load(open(root / "configs" / "train.yaml"))
    assert {k: train[k] for k in TASK_KEYS} == {k: getattr(task, k) for k in TASK_KEYS}
    assert train["image_size"] == [32, 32]  # the model's, not the bundle's 96
    packaged_task = json.load(open(root / "models" / "task.json"))
    assert "config_files" not in packaged_task["trained_with"]  # this machine's files (here a test's)
    assert "overrides" not in packaged_task["trained_with"] and packaged_task["trained_with"]["settings"]["epochs"] == 2
    # metadata: valid for the Zoo, this model's shapes and its evaluation figures
    meta_file = str(root / "configs" / "metadata.json")
    verify_metadata(meta_file=meta_file, filepath=schema)
    meta = json.load(open(meta_file))
    report = json.load(open(trained_demo / "eval" / "metrics_test.json"))
    assert meta["eval_metrics"]["test_accuracy"] == round(report["metrics"]["accuracy"], 4)
    assert meta["eval_metrics"]["val_auc"] == round(
        json.load(open(trained_demo / "eval" / "metrics_val.json"))["metrics"]["auc"], 4
    )
    assert meta["eval_metrics"]["test_activation_precision"] == round(
        report["explanation_metrics"]["activation_precision"]["mean"], 4
    )
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]
    assert meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] == [4, 4]  # stride 8 at 32 px
    assert meta["version"] == "0.1.0" and list(meta["changelog"]) == ["0.1.0"]
    readme = (root / "docs" / "README.md").read_text()
    for section in (
        "### **Authors**",
        "### **Tags**",
        "## **Model Description**",
        "## **System Configuration**",
        "**TensorRT:**",
        "## **Performance**",
        entry["hash_val"],
    ):
        assert section in readme
    assert f"| accuracy | {report['metrics']['accuracy']:.4f} |" in readme
    # the text says what is true of this folder and model: no presets shipped, no test files or local folders
    assert sorted(p.name for p in (root / "configs").iterdir()) == sorted(
        ["metadata.json", "train.yaml", "evaluate.yaml", "inference.yaml", "export.yaml"]
        + ["multi_gpu_train.yaml", "logging.conf"]
    )
    for text in (meta["description"], meta["data_source"], readme):
        assert "presets" not in text and "fundus" not in text and "chest X-ray" not in text
        assert "monai_softcam.data" not in text
    assert "trained on the built-in synthetic demo data" in meta["description"]
    assert "resnet18 backbone, 32x32 input, classes no_lesion, lesion" in meta["description"]
    assert meta["authors"] == AUTHORS and f"### **Authors**\n{AUTHORS}\n" in readme
    assert f"This model was trained on: {HARDWARE}." in readme
    training = readme.split("## **Training configuration**")[1].split("## **Performance**")[0]
    for local in ("tiny.yaml", "train.yaml`, ", "bundle_root", "overrides", str(trained_demo), trained_demo.name):
        assert local not in training, local
    assert "Data: the built-in synthetic demo data" in training and "Input: 32 x 32" in training
    assert "2 epochs; batch size 8; learning rate 0.001; weight decay 0.0001" in training
    assert "evidence penalty λ1 = 0.0003 (L1), λ2 = 0 (L2); seed 0." in training
    # every package its configs and scripts/ can import is declared; its messages name what to install
    configs = sorted(str(p) for p in (root / "configs").glob("*.yaml"))
    missing, imported = _undeclared_imports(configs, "scripts", root / "scripts", meta)
    assert missing == {} and {"onnx", "onnxruntime"} <= set(imported)
    assert not {"optuna", "captum"} & set(imported)  # run tune and Integrated Gradients are not shipped
    assert not {"optuna", "captum"} & set(meta["required_packages_version"])  # so not declared either
    for path in [*(root / "scripts").rglob("*.py"), *(root / "configs").iterdir(), root / "docs" / "README.md"]:
        assert (
            "pip install 'monai_softcam[" not in path.read_text()
            and "pip install monai_softcam[" not in path.read_text()
        )
    assert "pip install onnx onnxscript onnxruntime" in (root / "scripts" / "export.py").read_text()


@pytest.mark.slow
def test_packaged_bundle_passes_the_zoos_pre_commit(packaged, tmp_path, monkeypatch):
    _, root = packaged
    results = zoo_pre_commit(root, tmp_path / "copy", monkeypatch)
    assert results == dict.fromkeys(results, 0)


def _without_monai_softcam(args, cwd):
    """``python -m monai.bundle <args>`` in ``cwd`` with the installed monai_softcam made unimportable."""
    code = (
        "import runpy, sys; sys.modules['monai_softcam'] = None; sys.argv = ['monai.bundle', *sys.argv[1:]]; "
        "runpy.run_module('monai.bundle', run_name='__main__', alter_sys=True)"
    )
    env = _env()
    env["PYTHONPATH"] = ""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )


@pytest.mark.slow
def test_packaged_bundle_runs_where_monai_softcam_is_not_installed(packaged, tmp_path):
    """Download the weights as the Zoo does (large_files.yml, hash checked), then the Zoo's shape check
    with its default arguments and inference, from the bundle folder, with the configs' imports served by scripts/."""
    from PIL import Image

    _, root = packaged
    work = tmp_path / NAME
    shutil.copytree(root, work)
    blocked = _without_monai_softcam(["download_large_files", "--bundle_path", "."], work)
    assert blocked.returncode == 0 and (work / "models" / "model.pt").is_file(), blocked.stderr[-3000:]
    check = _without_monai_softcam(
        [
            "verify_net_in_out",
            "network_def",
            "--meta_file",
            "configs/metadata.json",
            "--config_file",
            "configs/inference.yaml",
            "--device",
            "cpu",
        ],
        work,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)).save(images / "a.png")
    infer = _without_monai_softcam(
        [
            "run",
            "inference",
            "--config_file",
            "configs/inference.yaml",
            "--input_path",
            str(images),
            "--output_dir",
            str(tmp_path / "out"),
        ],
        work,
    )
    assert infer.returncode == 0, infer.stderr[-3000:]
    assert (tmp_path / "out" / "predictions.csv").is_file()
    assert (tmp_path / "out" / "maps" / "a" / "a_evidence_lesion.nii.gz").is_file()
    # the guard is real: the bundle's own configs (which import monai_softcam) fail the same way
    shutil.copytree(BUNDLE, tmp_path / "repo_bundle", ignore=shutil.ignore_patterns("models", "eval", "data"))
    (tmp_path / "repo_bundle" / "models").mkdir()
    shutil.copy(work / "models" / "model.pt", tmp_path / "repo_bundle" / "models")
    shutil.copy(work / "models" / "task.json", tmp_path / "repo_bundle" / "models")
    unpackaged = _without_monai_softcam(
        [
            "run",
            "inference",
            "--config_file",
            "configs/inference.yaml",
            "--input_path",
            str(images),
            "--output_dir",
            str(tmp_path / "out2"),
        ],
        tmp_path / "repo_bundle",
    )
    assert unpackaged.returncode != 0 and "monai_softcam" in unpackaged.stderr


@pytest.mark.slow
def test_package_bundle_code_pip_imports_the_installed_package(trained_demo, tmp_path):
    """``--code pip`` (issue 32): no scripts/, the configs import monai_softcam, which required_packages_version
    pins to this version (the Zoo's CI installs it from there), and the folder runs with the package installed
    (here: this checkout). scripts/zoo_ci.sh runs the Zoo's CI on this form with the wheel of
    scripts/check_package.sh served from a local index in place of PyPI."""
    from monai_softcam import __version__

    models = trained_demo / "models"
    out = tmp_path / NAME
    url = f"model.pt={(models / 'model.pt').as_uri()}"
    args = ["--ckpt_dir", str(models), "--out", str(out), "--name", NAME, "--url", url]
    refused = _cli("package-bundle", *args, "--allow_local_urls", "--code", "wheel")
    assert refused.returncode != 0 and not out.exists()
    done = _cli("package-bundle", *args, "--allow_local_urls", "--code", "pip")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "scripts").exists()
    for config in ("train.yaml", "inference.yaml"):
        text = (out / "configs" / config).read_text()
        assert re.search(r"^  - \$import monai_softcam$", text, re.M) and "scripts." not in text
    meta = json.load(open(out / "configs" / "metadata.json"))
    assert meta["required_packages_version"]["monai_softcam"] == __version__
    assert "(monai_softcam.networks.EvidenceOutputs)" in meta["pred_classes"]
    readme = (out / "docs" / "README.md").read_text()
    assert f"pip install monai_softcam=={__version__}" in readme and "scripts/" not in readme
    trained = json.load(open(models / "task.json"))["trained_with"]  # no --hardware: the record's device and time
    assert re.search(
        rf"This model was trained on: {re.escape(trained['device'])}; \d+ (min \d+ )?s of training", readme
    )
    for step in (  # the Zoo's download and shape check, with the package installed (this checkout)
        ["download_large_files", "--bundle_path", "."],
        ["verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json"]
        + ["--config_file", "configs/inference.yaml", "--device", "cpu"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "monai.bundle", *step], cwd=out, env=_env(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]


#: stand-in for the two functions of the Zoo's ci/unit_tests/utils.py (github:Project-MONAI/model-zoo dfae206) that
#: our unit and distributed tests call, with their contracts: check_workflow initializes, checks the properties
#: (a non-empty result is an error), runs and finalizes; export_config_and_run_mgpu_cmd writes the configs merged
#: with the overrides to output_path, checks the train properties with check_config, then runs the bundle under
#: torchrun with nproc_per_node=ngpu and PYTHONPATH the bundle root (check_call: a failed process raises).
#: scripts/zoo_ci.sh runs the tests with the Zoo's own file.
ZOO_UTILS = """
import os
import subprocess

from monai.bundle import ConfigParser, ConfigWorkflow


def check_workflow(workflow, check_properties=False):
    workflow.initialize()
    problems = workflow.check_properties() if check_properties else None
    if problems:
        raise ValueError(f"check properties for workflow failed: {problems}")
    workflow.run()
    workflow.finalize()


def export_config_and_run_mgpu_cmd(config_file, meta_file, override_dict, output_path, logging_file=None, ngpu=2,
                                   check_config=False, **_):
    parser = ConfigParser()
    parser.read_config(config_file)
    parser.update(pairs=override_dict)
    ConfigParser.export_config_file(parser.config, output_path, indent=4)
    if check_config:
        workflow = ConfigWorkflow(workflow_type="train", config_file=output_path, meta_file=meta_file,
                                  logging_file=logging_file)
        workflow.initialize()
        problems = workflow.check_properties()
        if problems:
            raise ValueError(f"check properties for overrided mgpu configs failed: {problems}")
    command = ["torchrun", "--standalone", "--nnodes=1", f"--nproc_per_node={ngpu}", "-m", "monai.bundle", "run",
               "--config_file", output_path, "--meta_file", meta_file]
    command += ["--logging_file", logging_file] if logging_file else []
    subprocess.check_call(command, env={**os.environ, "PYTHONPATH": override_dict.get("bundle_root", ".")})
"""


@pytest.mark.slow
def test_the_zoos_dist_test_trains_the_packaged_bundle_under_torchrun(packaged):
    """The generated ci/unit_tests/test_<name>_dist.py run from the Zoo's root under torchrun, as the Zoo's runner
    is (``torchrun runner.py --b <name> --dist True``; the runner only loads the module and runs its tests):
    multi-GPU training of the bundle with one process per GPU, here two CPU processes with gloo."""
    zoo, root = packaged
    (zoo / "ci" / "unit_tests" / "utils.py").write_text(ZOO_UTILS)
    env = _env()
    env["PYTHONPATH"] = str(zoo)  # as the Zoo's CI (export PYTHONPATH=$PWD); the bundle imports its scripts/
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # the helper calls torchrun
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
        + [f"ci/unit_tests/test_{NAME}_dist.py", "-v"],
        cwd=zoo,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "Ran 1 test" in output and re.search(r"^OK$", done.stderr, re.M), output[-6000:]
    # the training processes torchrun started: one per GPU, or two on CPU (each logs its run's input summary)
    assert output.count("input summary of monai.bundle.scripts.run") == (torch.cuda.device_count() or 2)
    assert not (root / "models" / "model.pt").exists()  # the bundle is left as downloaded


@pytest.mark.slow
def test_the_zoos_unit_test_pattern_on_the_packaged_bundle(packaged):
    """The generated ci/unit_tests/test_<name>.py: train, train + evaluate, inference through ConfigWorkflow
    and check_workflow(check_properties=True), run from the Zoo's root as its runner does. The Zoo's
    helper module ci/unit_tests/utils.py is stood in for (ZOO_UTILS)."""
    zoo, _ = packaged
    (zoo / "ci" / "unit_tests" / "utils.py").write_text(ZOO_UTILS)
    env = _env()
    env["PYTHONPATH"] = ""  # scripts/ only: the test puts the bundle folder on the path itself
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, runpy; sys.modules['monai_softcam'] = None; sys.path.append('ci/unit_tests'); "
            f"runpy.run_path('ci/unit_tests/test_{NAME}.py', run_name='__main__')",
            "-v",
        ],
        cwd=zoo,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    started = [line.split()[0] for line in done.stderr.splitlines() if line.startswith("test_") and " ... " in line]
    assert started == ["test_train_config", "test_train_eval_config", "test_infer_config"]  # the Zoo's order
    assert "Ran 3 tests" in done.stderr and done.stderr.rstrip().endswith("OK")


def test_package_bundle_refuses_non_public_urls_unless_allowed(tmp_path):
    """The Zoo's CI downloads large_files.yml's URLs from its own runner: file://, this machine, private,
    link-local and local-network hosts are refused (the command's last line says why) unless --allow_local_urls."""
    from monai_softcam.package import PackagingError, local_url_reason, parse_urls

    local = [
        "file:///data/model.pt",
        "http://localhost:8000/model.pt",
        "https://models.localhost/model.pt",
        "http://127.0.0.1/model.pt",
        "http://127.8.9.10/model.pt",
        "http://[::1]:8080/model.pt",
        "http://[::ffff:127.0.0.1]/model.pt",
        "http://10.1.2.3/model.pt",
        "http://172.16.0.1/model.pt",
        "http://172.31.255.254/model.pt",
        "http://192.168.0.10/model.pt",
        "http://169.254.169.254/model.pt",
        "http://[fe80::1]/model.pt",
        "http://[fd00::1]/model.pt",
        "http://0.0.0.0/model.pt",
        "http://nas.local/model.pt",
        "http://fileserver/model.pt",
        "https:///model.pt",
    ]
    for url in local:
        assert local_url_reason(url), url
        with pytest.raises(PackagingError, match="not a public URL.*--allow_local_urls"):
            parse_urls([f"model.pt={url}"])
        assert parse_urls([f"model.pt={url}"], allow_local=True) == {"model.pt": url}
    for url in (
        "https://github.com/org/repo/releases/download/v0.1.0/model.pt",
        "http://8.8.8.8/model.pt",
        "https://172.32.0.1/model.pt",  # just outside 172.16/12
        "https://[2606:4700::1111]/model.pt",
    ):
        assert local_url_reason(url) is None, url
        assert parse_urls([f"model.pt={url}"]) == {"model.pt": url}
    # the command: the refusal is the last line of stderr, before anything is read or written
    out = tmp_path / "zoo" / NAME
    done = _cli(
        "package-bundle",
        "--ckpt_dir",
        str(tmp_path / "nowhere"),
        "--out",
        str(out),
        "--name",
        NAME,
        "--url",
        "model.pt=file:///data/model.pt",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --url model.pt=file:///data/model.pt: not a public URL (a file:// URL is a file of this machine); "
        "the Model Zoo's CI downloads every file of large_files.yml from its own runner, so give an https:// address "
        "on the internet, or --allow_local_urls to package with this one anyway (for offline checks only, not for "
        "the Zoo)"
    )
    assert not (tmp_path / "zoo").exists()


@pytest.mark.slow
def test_packaging_refuses_bad_input_and_writes_nothing(trained_demo, tmp_path):
    models = trained_demo / "models"
    url = ["--url", f"model.pt={(models / 'model.pt').as_uri()}", "--allow_local_urls"]
    out = tmp_path / "out" / NAME

    def refused(*args, match, target=out):
        done = _cli("package-bundle", "--ckpt_dir", str(args[0]), "--out", str(target), "--name", NAME, *args[1:])
        assert done.returncode == 2, done.stdout + done.stderr
        last = [line for line in done.stderr.splitlines() if line.strip()][-1]
        assert last.startswith("error: ") and match in last, last
        assert not target.exists() or sorted(os.listdir(target)) == ["keep.txt"]
        assert (
            not any(p.name.startswith(f".{NAME}.partial") for p in target.parent.glob(".*"))
            if target.parent.exists()
            else True
        )

    refused(models, match="no URL for models/model.pt")
    # a URL the Zoo's runner cannot download, without --allow_local_urls
    refused(models, *url[:2], match=f"--url model.pt={(models / 'model.pt').as_uri()}: not a public URL")
    refused(models, "--url", "model.pt=http://192.168.1.5/model.pt", match="192.168.1.5 is a private network")
    refused(models, "--url", "model.pt=", match="--url model.pt= has an empty URL")
    refused(models, "--url", "model.pt=ftp://host/model.pt", match="must start with https://")
    refused(models, "--url", "model.ts=https://host/model.ts", *url, match=f"{models / 'model.ts'} does not exist")
    # a checkpoint that does not fit the saved task: the task says three classes
    other = tmp_path / "other"
    shutil.copytree(models, other)
    task = json.load(open(other / "task.json"))
    task["class_names"] = ["a", "b", "c"]
    json.dump(task, open(other / "task.json", "w"))
    refused(
        other,
        "--url",
        f"model.pt={(other / 'model.pt').as_uri()}",
        "--allow_local_urls",
        match=f"checkpoint {other / 'model.pt'} does not fit the network",
    )
    # evaluation figures that cannot be read, or of another model
    refused(
        models,
        *url,
        "--metrics",
        str(trained_demo / "eval" / "metrics_test.json").replace("eval", "nowhere"),
        match="is not a readable metrics_<split>.json",
    )
    report = json.load(open(trained_demo / "eval" / "metrics_test.json"))
    report["model"] = str(tmp_path / "elsewhere" / "model.pt")
    json.dump(report, open(tmp_path / "metrics_test.json", "w"))
    refused(models, *url, "--metrics", str(tmp_path / "metrics_test.json"), match=f"evaluates {report['model']}, not")
    # a model of other data needs its own description (else the bundle would carry the demo's)
    mine = tmp_path / "mine"
    shutil.copytree(models, mine)
    task = json.load(open(mine / "task.json"))
    task["trained_with"]["overrides"]["dataset_dir"] = "/data/rsna"
    json.dump(task, open(mine / "task.json", "w"))
    json.dump({**report, "model": str(mine / "model.pt")}, open(tmp_path / "metrics_mine.json", "w"))
    mine_args = [mine, "--url", f"model.pt={(mine / 'model.pt').as_uri()}", "--allow_local_urls"]
    mine_args += ["--metrics", str(tmp_path / "metrics_mine.json")]
    refused(*mine_args, match="describe it with --metadata FILE")
    (tmp_path / "meta.json").write_text(json.dumps({"description": "mine", "authors": "me"}))
    refused(
        *mine_args,
        "--metadata",
        str(tmp_path / "meta.json"),
        match=f"--metadata {tmp_path / 'meta.json'}: no data_source",
    )
    refused(models, *url, "--authors", " ", match="--authors is empty")
    # a target folder that is not empty is left as it is
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    refused(models, *url, match="is not empty")
    assert (out / "keep.txt").read_text() == "mine"
    refused(models, *url, "--name", "SoftCAM-Demo", match="a Zoo bundle name is lower-case", target=tmp_path / "x")


@pytest.mark.slow
def test_the_slicer_module_runs_a_packaged_zoo_bundle(packaged, tmp_path, monkeypatch):
    """A bundle from the Model Zoo imports its own scripts/: the Slicer module's library reads it and
    runs it in process and in a child process, with the same results as the command line."""
    import csv

    sys.path.insert(0, os.path.join(REPO_ROOT, "slicer_extension", "SoftCAM"))
    from SoftCAMLib import BundleInfo, Volume, run_inference

    _, root = packaged
    work = tmp_path / NAME
    shutil.copytree(root, work)
    shutil.copy(
        pathlib.Path(yaml.safe_load(open(root / "large_files.yml"))["large_files"][0]["url"][len("file://") :]),
        work / "models" / "model.pt",
    )  # as downloaded
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the child finds scripts/ through the module's own path
    info = BundleInfo.read(str(work))
    assert info.code_path == str(work) and info.class_names == ["no_lesion", "lesion"] and info.image_size == [32, 32]
    info.check_weights()
    image = np.random.default_rng(1).uniform(0, 1, (1, 40, 50)).astype(np.float32)
    results = [run_inference(info, Volume(image, np.eye(4), name="img"), mode=m) for m in ("inprocess", "subprocess")]
    assert sys.modules["scripts"].__file__ == str(work / "scripts" / "__init__.py")
    assert results[0].probabilities == pytest.approx(results[1].probabilities, abs=1e-6)
    # the same as the bundle's own command line on the same picture
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.fromarray((image[0] * 255).round().astype(np.uint8)).save(tmp_path / "in" / "img.png")
    done = _without_monai_softcam(
        [
            "run",
            "inference",
            "--config_file",
            "configs/inference.yaml",
            "--input_path",
            str(tmp_path / "in"),
            "--output_dir",
            str(tmp_path / "out"),
        ],
        work,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = csv.DictReader(open(tmp_path / "out" / "predictions.csv"))
    assert results[0].probabilities["lesion"] == pytest.approx(float(row["prob_lesion"]), abs=0.02)  # 8-bit rounding


# python -c _IMPORT_CONFIG_NAMES PACKAGE CONFIG...: import every name of PACKAGE the configs give, print the
# PACKAGE modules loaded (JSON); with PACKAGE `scripts`, monai_softcam is unimportable (as where the Zoo runs)
_IMPORT_CONFIG_NAMES = r"""
import importlib, importlib.abc, json, re, sys
import yaml
package, configs = sys.argv[1], sys.argv[2:]
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "monai_softcam":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
if package != "monai_softcam":
    sys.meta_path.insert(0, Refuse())
sys.path.insert(0, ".")
names = set()
def walk(value):
    if isinstance(value, dict):
        for v in value.values():
            walk(v)
    elif isinstance(value, list):
        for v in value:
            walk(v)
    elif isinstance(value, str):
        names.update(re.findall(r"(?<![\w.])" + package + r"(?:\.\w+)*(?![\w/\[])", value))
for config in configs:
    walk(yaml.safe_load(open(config)))
for name in sorted(names):  # its modules while they are modules, then its attributes
    parts, n = name.split("."), 1
    found = importlib.import_module(parts[0])
    while n < len(parts):
        try:
            found = importlib.import_module(".".join(parts[: n + 1]))
        except ModuleNotFoundError as err:
            if err.name != ".".join(parts[: n + 1]):
                raise
            break
        n += 1
    for attr in parts[n:]:
        found = getattr(found, attr)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == package)))
"""


@pytest.mark.slow
def test_scripts_holds_exactly_the_modules_the_shipped_configs_import(packaged):
    """Issue 32: every name the shipped configs give of `scripts` (``_target_``, ``$`` expressions) resolves in
    the packaged folder with monai_softcam unimportable, and the modules that importing them loads are exactly
    the files of scripts/: none missing, none shipped that no config reaches (function-level imports of the
    package do not exist, tests/test_architecture.py, so loading is the whole reach)."""
    from monai_softcam.package import CONFIG_FILES, shipped_modules

    _, root = packaged
    configs = sorted(str(p) for p in (root / "configs").glob("*.yaml"))
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_CONFIG_NAMES, "scripts", *configs],
        cwd=root,
        env={**_env(), "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    files = {str(p.relative_to(root / "scripts").with_suffix("")) for p in (root / "scripts").rglob("*.py")}
    as_modules = {".".join(["scripts", *f.split(os.sep)]).removesuffix(".__init__") for f in files}
    assert loaded == as_modules, (sorted(as_modules - loaded), sorted(loaded - as_modules))
    configs = [os.path.join(REPO_ROOT, "bundle", "configs", c) for c in CONFIG_FILES]
    assert {m.removesuffix(".py") for m in shipped_modules(configs)} == files


def test_shipped_modules_are_those_the_shipped_configs_load():
    """package.shipped_modules (a static walk from the shipped configs' names through the modules' imports)
    gives the package modules that importing every name of the package in those configs loads, no more:
    reachable modules only, and none missing."""
    from monai_softcam.package import CONFIG_FILES, shipped_modules

    configs = [os.path.join(REPO_ROOT, "bundle", "configs", c) for c in CONFIG_FILES if c.endswith(".yaml")]
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_CONFIG_NAMES, "monai_softcam", *configs],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    walked = {
        ".".join(["monai_softcam", *m.removesuffix(".py").split(os.sep)]).removesuffix(".__init__")
        for m in shipped_modules(configs)
    }
    assert walked == loaded, (sorted(walked - loaded), sorted(loaded - walked))
    assert "monai_softcam.tune" not in walked and "monai_softcam.explain" not in walked


def test_the_zoo_unit_test_template_is_a_python_file_that_imports_and_fills_in(tmp_path, monkeypatch):
    """The template is package data, linted with the tree (scripts/lint.sh): it imports (the Zoo's
    ci/unit_tests/utils.py stood in for), and package-bundle fills in its three marked lines."""
    import importlib.util
    import types

    from monai_softcam.package import ZOO_UNIT_TEST, zoo_unit_test
    from monai_softcam.task import Task

    monkeypatch.setitem(sys.modules, "utils", types.SimpleNamespace(check_workflow=lambda *a, **k: None))
    spec = importlib.util.spec_from_file_location("zoo_template", ZOO_UNIT_TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = {n for n in dir(module.TestBundle) if n.startswith("test_")}
    assert tests == {"test_train_config", "test_train_eval_config", "test_infer_config"}
    assert module.BUNDLE_NAME == "bundle_name" and module.QUICK_TASK == {}

    text = zoo_unit_test(NAME, Task(["a", "b"], 2, 1, [96, 96]))
    compile(text, "test.py", "exec")
    assert f'BUNDLE_NAME = "{NAME}"' in text and 'QUICK_TASK: dict = {"image_size": [64, 64]}' in text
    assert "class TestLesionSyntheticSoftcamClassification(unittest.TestCase):" in text and "bundle_name" not in text
    assert "QUICK_TASK: dict = {}" in zoo_unit_test(NAME, Task(["a", "b"], 2, 1, [32, 32]))


def test_packaged_configs_are_edited_by_parsing_them():
    """package-bundle sets train.yaml's task keys and names the package `scripts` where a value names
    it, found by parsing the YAML: comments, quoting and layout stay; other words are left alone."""
    from monai_softcam.package import PackagingError, _packaged_config
    from monai_softcam.task import TASK_KEYS, Task

    task = Task(["no", "yes"], 2, 1, [64, 64])
    keys = "".join(f"{k}: {'[1, 2]' if k == 'class_names' else 'null'}  # keep me\n" for k in TASK_KEYS)
    text = (
        "imports:\n  - $import monai_softcam\n"
        + keys
        + "net:\n  _target_: monai_softcam.task.build_network   # monai_softcam.task: kept\n"
        + "expr: '$monai_softcam.bundle.start(seed=@seed)'\n"
        + 'hint: "pip install monai_softcam[onnx]; my_monai_softcam_x"\n'
        + "files: bundle/configs/train.yaml\n"
    )
    out = _packaged_config(text, "train.yaml", task)
    parsed = yaml.safe_load(out)
    assert parsed["imports"] == ["$import scripts"] and parsed["net"]["_target_"] == "scripts.task.build_network"
    assert parsed["expr"] == "$scripts.bundle.start(seed=@seed)" and "expr: '$scripts" in out
    assert parsed["hint"] == "pip install monai_softcam[onnx]; my_monai_softcam_x"
    assert parsed["files"] == "configs/train.yaml"
    assert {k: parsed[k] for k in TASK_KEYS} == {k: getattr(task, k) for k in TASK_KEYS}
    assert out.count("# keep me") == len(TASK_KEYS) and "# monai_softcam.task: kept" in out
    with pytest.raises(PackagingError, match=r"train.yaml: expected the top-level task key\(s\) \['class_names'\]"):
        _packaged_config(text.replace("class_names:", "classnames:"), "train.yaml", task)
