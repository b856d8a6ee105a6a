"""The checks the MONAI Model Zoo runs on a new bundle, run offline on a copy of bundle/ with an
untrained model: required files, version in changelog, metadata against the Zoo's schema, the
inference workflow's properties, the network's inputs and outputs, and the export round trip
(TorchScript through ``ckpt_export``, ONNX through the bundle's ``export_onnx``)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml
from conftest import REPO_ROOT, SHARED_DIR

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
        procs.append((cmd, subprocess.Popen(cmd, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", errors="replace")))
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
    (a plain state dict, as training writes it; batch-norm statistics randomised so that comparisons are not trivial)."""
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
    for name in ("LICENSE", "configs/metadata.json", "configs/inference.yaml", "configs/logging.conf", "docs/README.md"):
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
    classes = yaml.safe_load(open(os.path.join(BUNDLE, "configs", "train.yaml")))["class_names"]  # the demo task it describes
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


def test_export_round_trip_torchscript_and_onnx(zoo_bundle):
    pytest.importorskip("onnxruntime", reason="the ONNX extra: pip install 'monai_softcam[onnx]'")
    from monai_softcam.export import run_onnx
    from monai_softcam.checkpoint import load_weights

    configs, models = zoo_bundle / "configs", zoo_bundle / "models"
    # the documented commands (docs/README.md), with this bundle's paths
    _, onnx_out = _run(
        ["ckpt_export", "--net_id", "network_def", "--filepath", str(models / "model.ts"),
         "--ckpt_file", str(models / "model.pt"), "--meta_file", str(configs / "metadata.json"),
         "--config_file", repr([str(configs / "inference.yaml"), str(models / "task.json")])],
        ["run", "export_onnx", "--config_file", repr([str(configs / "inference.yaml"), str(configs / "export.yaml")])],
    )  # fmt: skip
    assert f"wrote {models / 'model.onnx'} outputs ['logits', 'evidence_maps']" in onnx_out

    extra = {"metadata.json": "", "inference.json": "", "task.json": ""}
    ts = torch.jit.load(str(models / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == json.load(open(configs / "metadata.json"))["version"]
    assert json.loads(extra["task.json"])["image_size"] == json.load(open(models / "task.json"))["image_size"]  # the task travels
    assert json.loads(extra["inference.json"])["network_def"]["maps_only"] is True

    parser = _parser(zoo_bundle)
    net = load_weights(parser.get_parsed_content("network_def"), str(models / "model.pt")).eval()
    x = torch.randn(3, 1, *parser.get_parsed_content("image_size"))
    with torch.no_grad():
        eager, scripted = net(x), ts(x)  # one tensor each: the evidence maps
    onnx = run_onnx(models / "model.onnx", x)  # two named outputs
    assert isinstance(scripted, torch.Tensor) and scripted.shape == eager.shape == onnx["evidence_maps"].shape
    assert float((scripted - eager).abs().max()) <= ATOL
    assert float(np.abs(onnx["evidence_maps"] - eager.numpy()).max()) <= ATOL
    assert float(np.abs(onnx["logits"] - eager.flatten(2).mean(-1).numpy()).max()) <= ATOL
    assert eager.std() > 0 and eager.shape[2:] == (12, 12)


def test_the_zoos_pre_commit_hooks_accept_the_bundle(tmp_path, monkeypatch):
    """The Model Zoo's .pre-commit-config.yaml hooks (pre-commit-hooks v4.6), with its arguments, on
    every file of bundle/: JSON as `pretty-format-json --no-sort-keys --indent=4` writes it, YAML that
    parses, no trailing whitespace, a newline at the end of every file, nothing over 1 MB."""
    from pre_commit_hooks import check_added_large_files, check_yaml, end_of_file_fixer, pretty_format_json
    from pre_commit_hooks import trailing_whitespace_fixer

    files = [str(p) for p in sorted(pathlib.Path(BUNDLE).rglob("*")) if p.is_file() and "models" not in p.parts]
    copies = []
    for path in files:  # the fixers rewrite what they fix: run them on copies
        copy = tmp_path / os.path.relpath(path, BUNDLE)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(pathlib.Path(path).read_bytes())
        copies.append(str(copy))
    json_files = [c for c in copies if c.endswith(".json")]
    assert json_files and pretty_format_json.main(["--no-sort-keys", "--indent=4", *json_files]) == 0
    assert check_yaml.main([c for c in copies if c.endswith((".yaml", ".yml"))]) == 0
    assert trailing_whitespace_fixer.main(copies) == 0
    assert end_of_file_fixer.main(copies) == 0
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # the large-file hook asks git for attributes
    monkeypatch.chdir(tmp_path)
    assert check_added_large_files.main(["--maxkb=1024", "--enforce-all", *copies]) == 0


def test_metadata_versions_meet_the_packages_floors():
    """The Zoo installs `name==version` for the metadata's versions (ci/get_bundle_requirements.py):
    each is a package monai_softcam needs, at or above its setup.py floor. (That they have wheels for
    Python 3.10-3.13 was checked with pip install --dry-run --python-version, see the README.)"""
    import ast

    from packaging.requirements import Requirement

    tree = ast.parse(open(os.path.join(REPO_ROOT, "setup.py"), encoding="utf-8").read())
    keyword = next(n for n in ast.walk(tree) if isinstance(n, ast.keyword) and n.arg == "install_requires")
    floors = {Requirement(ast.literal_eval(e)).name.lower(): Requirement(ast.literal_eval(e)) for e in keyword.value.elts}
    meta = json.load(open(os.path.join(BUNDLE, "configs", "metadata.json")))
    pinned = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"],
              **meta["required_packages_version"]}  # fmt: skip
    assert "monai_softcam" not in pinned  # not on PyPI: the Zoo could not install it
    for name, version in pinned.items():
        requirement = floors.get(name.lower())
        assert requirement is not None, f"{name} is pinned in metadata.json but is not a dependency in setup.py"
        assert requirement.specifier.contains(version), f"{name}=={version} is below setup.py's {requirement}"
    assert set(floors) - {n.lower() for n in pinned} == set()  # every dependency is pinned for the Zoo
