"""End-to-end tests of the MONAI bundle through its real command line (tiny demo data, CPU)."""

import contextlib
import csv
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import CONFIGS, EVALUATE, EXPLAIN, INFERENCE, MULTI_GPU, TINY, TRAIN, bundle
from bundle_helpers import env as _env
from bundle_helpers import last_line, run_bundle, torchscript_export, train
from conftest import REPO_ROOT
from data_helpers import resample_with_itk, write_png
from monai.data import MetaTensor


@pytest.fixture
def trained(trained_bundle):
    """The session's tiny trained demo bundle (conftest.trained_bundle)."""
    return trained_bundle


def test_training_writes_checkpoints_tensorboard_metrics_and_report(trained):
    root, proc = trained
    for name in ("model.pt", "model_best_auc.pt", "training_state.pt"):
        assert os.path.isfile(root / "models" / name), name
    model = torch.load(root / "models" / "model.pt", weights_only=True)
    assert "head.evidence.weight" in model  # a plain state dict
    state = torch.load(root / "models" / "training_state.pt", weights_only=True)
    assert state["trainer"]["epoch"] == 2 and {"optimizer", "lr_scheduler", "best_accuracy"} <= set(state)
    report = json.load(open(root / "eval" / "metrics_val.json"))
    metrics = report["metrics"]
    assert metrics["n"] == 12 and 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["auc"] <= 1
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    rows = list(csv.DictReader(open(root / "eval" / "metrics_val.csv")))
    assert {r["metric"] for r in rows} >= {"accuracy", "auc", "sensitivity", "specificity", "precision", "auprc"}
    assert os.path.getsize(root / "eval" / "evidence_maps_val.png") > 1000
    # the evidence maps are assessed too: localisation on the lesion images (the others have empty masks)
    lesions = sum(r["bin_target"] == "1" for r in csv.DictReader(open(root / "data" / "demo" / "val.csv")))
    explained = report["explanation_metrics"]
    assert (
        explained["activation_precision"]["n"] == lesions
        and explained["activation_precision"]["n_excluded"] == 12 - lesions
    )
    assert explained["consistency"]["n"] == 12 and explained["completeness_error"]["mean"] < 1e-4
    assert (
        "activation_precision" in {r["metric"] for r in rows}
        and "evidence maps (mean [95 % CI], images):" in proc.stdout
    )
    # the run ends by printing the metrics and where the model and maps are
    assert "val metrics (12 images)" in proc.stdout and "model.pt" in proc.stdout
    assert "evidence_maps_val.png" in proc.stdout

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(root / "eval" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train_loss", "accuracy", "auc", "learning_rate", "train_ce", "train_penalty"} <= scalars
    assert len(events.Scalars("accuracy")) == 2
    assert "evidence_maps" in events.Tags()["images"]


@pytest.mark.parametrize("configs,workflow_type", [([TRAIN, TINY], "train"), ([INFERENCE], "infer")])
def test_check_properties(configs, workflow_type, trained):
    from monai.bundle import ConfigWorkflow

    root, _ = trained
    wf = ConfigWorkflow(config_file=configs, workflow_type=workflow_type, bundle_root=str(root))
    wf.initialize()
    assert wf.check_properties() == []


@pytest.mark.slow
def test_same_seed_same_metrics(trained, tmp_path):
    root, _ = trained
    bundle("run", [TRAIN, TINY], "--bundle_root", str(tmp_path / "again"))  # plain `run` = `run training`
    first = json.load(open(root / "eval" / "metrics_val.json"))["metrics"]
    second = json.load(open(tmp_path / "again" / "eval" / "metrics_val.json"))["metrics"]
    assert first == second


def test_evaluate_from_checkpoint(trained):
    """The tiny preset (32 px) is not repeated: evaluation reads the trained task from models/task.json."""
    root, _ = trained
    task = json.load(open(root / "models" / "task.json"))
    assert task["image_size"] == [32, 32] and task["class_names"] == ["no_lesion", "lesion"]
    assert task["trained_with"]["config_files"] == [TRAIN, TINY]
    assert task["trained_with"]["settings"]["epochs"] == 2 and task["trained_with"]["settings"]["batch_size"] == 8
    # where and how long it trained (package-bundle's default System Configuration)
    assert re.fullmatch(r"CPU, \d+ threads", task["trained_with"]["device"])
    assert task["trained_with"]["training_time_s"] > 0 and task["trained_with"]["epochs_trained"] == 2
    assert "resumed_at_epoch" not in task["trained_with"]
    proc = run_bundle("evaluate", [TRAIN, EVALUATE], "--bundle_root", str(root))
    metrics = json.load(open(root / "eval" / "metrics_test.json"))["metrics"]
    assert metrics["n"] == 12
    assert os.path.isfile(root / "eval" / "metrics_test.csv")
    assert "test metrics (12 images)" in proc.stdout


def _write_inputs(folder):
    """Two inputs of other sizes than the training size: a non-square PNG and a 2D NIfTI with a
    non-trivial affine (anisotropic spacing, offset origin)."""
    from PIL import Image

    from monai_softcam.data import DemoDataConfig, render_sample

    os.makedirs(folder)
    sample = render_sample(DemoDataConfig(size=64, radius=(3.0, 5.0)), 3)
    Image.fromarray((sample.image[:40, :56] * 255).astype(np.uint8)).save(os.path.join(folder, "a.png"))
    affine = np.array([[0.5, 0, 0, 10.0], [0, 0.7, 0, -4.0], [0, 0, 1.0, 2.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(sample.image[:48, :36].astype(np.float32), affine), os.path.join(folder, "b.nii.gz"))
    return affine


def _grid_extension(img):
    (ext,) = [e for e in img.header.extensions if b"softcam_map_grid" in e.get_content()]
    return json.loads(ext.get_content())["softcam_map_grid"]


def test_inference_maps_have_input_geometry_and_reproduce_logits(trained, tmp_path):
    """Maps are saved at the network's resolution (4 x 4 for the 32-px tiny model), each cell placed
    on the input in world space: their mean is the logit, they are the network's raw maps, and
    resampled onto the input's grid (SimpleITK) they are the --full_resolution_maps files, which
    match today's upsample-then-undo-the-resize maps within interpolation error."""
    from monai.bundle import ConfigParser

    from monai_softcam.networks import upsample_map

    root, _ = trained
    folder = str(tmp_path / "inputs")
    nifti_affine = _write_inputs(folder)
    out, full = tmp_path / "out", tmp_path / "full"
    run_bundle("inference", [INFERENCE], "--bundle_root", str(root), "--input_path", folder, "--output_dir", str(out))
    run_bundle(
        "inference",
        [INFERENCE],
        "--bundle_root",
        str(root),
        "--input_path",
        folder,
        "--output_dir",
        str(full),
        "--full_resolution_maps",
        "true",
    )
    rows = {os.path.basename(r["image"]): r for r in csv.DictReader(open(out / "predictions.csv"))}
    full_rows = {os.path.basename(r["image"]): r for r in csv.DictReader(open(full / "predictions.csv"))}
    assert set(rows) == set(full_rows) == {"a.png", "b.nii.gz"}

    parser = ConfigParser()
    parser.read_config([INFERENCE])
    parser["bundle_root"] = str(root)
    parser["device"] = "cpu"
    preprocessing = parser.get_parsed_content("preprocessing")
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(root / "models" / "model.pt", weights_only=True))
    net.eval()
    png_affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # ITK reads a PNG in LPS with unit spacing; maps are RAS
    cases = (("a", (56, 40), png_affine), ("b", (48, 36), nifti_affine))
    images = [next(k for k in rows if k.startswith(name + ".")) for name, _, _ in cases]
    inputs = [preprocessing({"image": os.path.join(folder, image)})["image"] for image in images]
    with torch.no_grad():  # one batch of both, as inference ran them (batch_size 8): the same float arithmetic
        batch_maps = net(torch.stack([x.as_tensor() for x in inputs]))  # network_def returns the evidence maps alone
    for (name, shape, input_affine), image, x, raw in zip(cases, images, inputs, batch_maps):
        row, full_row = rows[image], full_rows[image]
        logits = np.array([float(row["logit_no_lesion"]), float(row["logit_lesion"])])
        probs = np.array([float(row["prob_no_lesion"]), float(row["prob_lesion"])])
        np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(), atol=1e-5)
        # the old way: upsample onto the network's input, then undo the resize (Invertd)
        upsampled = MetaTensor(
            upsample_map(raw, x.shape[1:]), meta=dict(x.meta), applied_operations=x.applied_operations
        )
        old = preprocessing.inverse({"image": upsampled})["image"].numpy()
        for c, cls in enumerate(("no_lesion", "lesion")):
            compact_path = os.path.join(row["evidence_maps"], f"{name}_evidence_{cls}.nii.gz")
            full_path = os.path.join(full_row["evidence_maps"], f"{name}_evidence_{cls}.nii.gz")
            compact, full_img = nib.load(compact_path), nib.load(full_path)
            assert compact.shape == (4, 4) and full_img.shape == shape  # the network's grid; the input's
            assert os.path.getsize(compact_path) < 1500  # bytes
            np.testing.assert_allclose(compact.get_fdata(), raw[c].numpy(), atol=1e-6)  # the raw map, values untouched
            assert compact.get_fdata().mean() == pytest.approx(logits[c], abs=1e-4)  # completeness, exactly
            # each cell's centre sits where the upsampling put it: cell j over n voxels -> (j + 0.5) n / 4 - 0.5
            scale = np.diag([shape[0] / 4, shape[1] / 4, 1.0, 1.0])
            scale[:2, 3] = [shape[0] / 8 - 0.5, shape[1] / 8 - 0.5]
            np.testing.assert_allclose(compact.affine, input_affine @ scale, atol=1e-6)
            np.testing.assert_allclose(full_img.affine, input_affine, atol=1e-6)
            grid = _grid_extension(compact)
            assert grid["input_shape"] == list(shape)
            np.testing.assert_allclose(grid["map_to_input_index"], scale, atol=1e-9)
            # an independent resampler puts the compact map on the input's grid: the full-resolution file
            on_input = resample_with_itk(compact_path, full_path)
            np.testing.assert_allclose(full_img.get_fdata(), on_input, atol=1e-5)
            # and within interpolation error of the old two-step maps (one bilinear step instead of two)
            spread = np.abs(old[c]).max() + 1e-6
            assert np.abs(full_img.get_fdata() - old[c]).max() < 0.15 * spread
            assert np.abs(full_img.get_fdata() - old[c]).mean() < 0.03 * spread
        assert os.path.isfile(os.path.join(row["evidence_maps"], f"{name}_overlay.png"))


@pytest.mark.slow
def test_resume_after_sigkill_completes_planned_epochs(tmp_path):
    root = tmp_path / "resume"
    args = ["--demo_data#num_train", "96", "--epochs", "5"]
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        repr([TRAIN, TINY]),
        "--bundle_root",
        str(root),
        *args,
    ]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = root / "models" / "training_state.pt"
    deadline = time.time() + 300
    while not state_file.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(state_file, weights_only=True)["trainer"]["epoch"]
    assert killed_at < 5, "the run finished before it could be killed; the test proves nothing"
    for name in ("model.pt", "training_state.pt"):  # whatever was written is complete
        torch.load(root / "models" / name, weights_only=True)
    result = train(root, *args, "--resume", "true")
    assert f"resumed from {state_file} at epoch {killed_at}" in result.stdout + result.stderr
    assert torch.load(state_file, weights_only=True)["trainer"]["epoch"] == 5
    assert os.path.isfile(root / "eval" / "metrics_val.json")


@pytest.mark.slow
def test_early_stopping_ends_the_run_and_is_not_resumed(tmp_path):
    root = tmp_path / "early"
    # a learning rate of 1e-12: nothing can improve (0 is refused as a learning rate)
    args = ["--epochs", "6", "--early_stop_patience", "1", "--learning_rate", "1e-12"]
    train(root, *args)
    state = torch.load(root / "models" / "training_state.pt", weights_only=True)["trainer"]
    assert state == {"epoch": 2, "iteration": 6, "early_stopped": True}
    result = train(root, *args, "--resume", "true")
    assert "resumed from" in result.stdout + result.stderr
    assert torch.load(root / "models" / "training_state.pt", weights_only=True)["trainer"]["epoch"] == 2


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    root = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        repr([TRAIN, TINY, MULTI_GPU]),
        "--bundle_root",
        str(root),
    ]
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, env=_env(), capture_output=True, encoding="utf-8", errors="replace", timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert torch.load(root / "models" / "training_state.pt", weights_only=True)["trainer"]["epoch"] == 2
    metrics = json.load(open(root / "eval" / "metrics_val.json"))["metrics"]
    assert metrics["n"] == 12  # metrics gathered over both processes' shards
    # only rank 0 writes TensorBoard events and prints the report
    assert len(glob.glob(str(root / "eval" / "tensorboard" / "events.*"))) == 1
    assert proc.stdout.count("val metrics (12 images)") == 1


@pytest.mark.slow
def test_ddp_on_two_nodes_is_killed_and_resumed(tmp_path):
    """Two "nodes" of one process each on this machine, joined through torchrun's c10d rendezvous (as nodes on a
    network are), on gloo: killed with SIGKILL after a checkpoint, then resumed to the end on both nodes."""
    import socket

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = tmp_path / "two_nodes"

    def launch(*extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
        cmd += ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "softcam_two_nodes"]
        cmd += ["-m", "monai.bundle", "run", "training", "--config_file", repr([TRAIN, TINY, MULTI_GPU])]
        cmd += ["--bundle_root", str(root), "--epochs", "8", *extra]
        return [
            subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
            )
            for _ in range(2)
        ]

    state = root / "models" / "training_state.pt"
    nodes = launch()
    deadline = time.time() + 400
    while not state.exists() and time.time() < deadline and all(n.poll() is None for n in nodes):
        time.sleep(0.5)
    assert state.exists(), b"".join(n.communicate()[0] for n in nodes).decode(errors="replace")[-6000:]
    for node in nodes:  # the whole node: torchrun and its worker (which torchrun starts in a session of its own)
        for pid in [node.pid, *_descendants(node.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        node.wait()
    killed_at = torch.load(state, weights_only=True)["trainer"]["epoch"]
    assert 1 <= killed_at < 8

    nodes = launch("--resume", "true")
    outputs = [n.communicate(timeout=600)[0].decode(errors="replace") for n in nodes]
    assert all(n.returncode == 0 for n in nodes), "\n".join(o[-4000:] for o in outputs)
    assert "resumed from" in "".join(outputs)
    assert torch.load(state, weights_only=True)["trainer"]["epoch"] == 8
    assert json.load(open(root / "eval" / "metrics_val.json"))["metrics"]["n"] == 12  # gathered over both nodes
    assert not (root / "models" / ".softcam_run.lock").exists()


def _descendants(pid):
    """The process ids below ``pid`` (read from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_checkpoint_of_another_network_is_refused_by_name(trained, tmp_path):
    from monai.bundle import ConfigParser

    root, _ = trained
    parser = ConfigParser()
    parser.read_config([TRAIN, TINY])
    other = tmp_path / "other.pt"
    for overrides, expected in (
        ({"class_names": ["a", "b", "c"]}, "head.evidence.weight: checkpoint (3, 128, 1, 1) vs network (2, 128, 1, 1)"),
        ({"backbone": "resnet10"}, "shape mismatch"),
    ):
        config = ConfigParser(parser.get())
        config.update({"bundle_root": str(root), **overrides})
        torch.save(config.get_parsed_content("task").network().state_dict(), other)
        proc = bundle(
            "evaluate", [TRAIN, EVALUATE], "--bundle_root", str(root), "--checkpoint", str(other), check=False
        )
        assert proc.returncode != 0
        assert f"checkpoint {other} does not fit the network SoftCAM(backbone=resnet18" in proc.stderr
        assert expected in proc.stderr
        assert last_line(proc.stderr).startswith(f"error: checkpoint {other} does not fit")  # the culprit last


def test_override_or_preset_contradicting_the_trained_task_is_refused_by_name(trained):
    root, _ = trained
    proc = bundle(
        "evaluate", [TRAIN, EVALUATE], "--bundle_root", str(root), "--class_names", "['a','b','c']", check=False
    )
    assert proc.returncode != 0
    assert (
        "--class_names on the command line sets class_names to ['a', 'b', 'c'], but the trained model's class_names "
        "is ['no_lesion', 'lesion']"
    ) in last_line(proc.stderr)
    oct_preset = os.path.join(REPO_ROOT, "configs", "oct.yaml")
    proc = bundle(
        "inference",
        [INFERENCE, oct_preset],
        "--bundle_root",
        str(root),
        "--dataset_dir",
        str(root / "data" / "demo"),
        "--input_path",
        str(root / "data" / "demo" / "images"),
        check=False,
    )
    assert proc.returncode != 0
    assert f"{oct_preset} sets image_size to [496, 496], but the trained model's image_size is [32, 32]" in proc.stderr
    assert str(root / "models" / "task.json") in proc.stderr
    # the same values as the task are accepted (the preset a model was trained with may be repeated)
    run_bundle(
        "inference",
        [INFERENCE, TINY],
        "--bundle_root",
        str(root),
        "--input_path",
        str(root / "data" / "demo" / "images"),
        "--output_dir",
        str(root / "eval" / "again"),
    )
    # in-process, as the Model Zoo's tests and MONAI apps run a bundle: the workflow's arguments are checked alike
    from monai.bundle import ConfigWorkflow

    from monai_softcam.task import TaskError
    from monai_softcam.utils import find_user_error

    for configs, kind in (([TRAIN, EVALUATE], "eval"), ([INFERENCE], "infer")):
        workflow = ConfigWorkflow(
            config_file=configs,
            workflow_type=kind,
            bundle_root=str(root),
            logging_file=False,
            class_names=["a", "b", "c"],
            output_dir=str(root / "eval" / "refused"),
        )
        with pytest.raises(Exception) as raised:
            _initialize_and_run(workflow)
        error = find_user_error(raised.value)
        assert isinstance(error, TaskError), raised.value
        assert (
            "sets class_names to ['a', 'b', 'c'], but the trained model's class_names is ['no_lesion', 'lesion']"
            in str(error)
        )
    assert not os.path.exists(root / "eval" / "refused")


def _initialize_and_run(workflow) -> None:
    workflow.initialize()
    workflow.run()


@pytest.mark.slow
def test_exports_and_the_slicer_module_read_the_trained_task(trained, tmp_path):
    """A model trained with the tiny preset (32 px, not the configs' 96 px): the ONNX export, the
    TorchScript export (task embedded) and SoftCAMLib read its task; no preset is repeated."""
    pytest.importorskip("onnxruntime", reason="the ONNX extra: pip install 'monai_softcam[onnx]'")
    root, _ = trained
    folder = tmp_path / "bundle"  # a bundle folder (configs/ + models/) as the Slicer module opens it
    shutil.copytree(CONFIGS, folder / "configs")
    shutil.copytree(root / "models", folder / "models")
    configs, models = folder / "configs", folder / "models"
    proc = bundle("export_onnx", [str(configs / "inference.yaml"), str(configs / "export.yaml")])
    assert f"wrote {models / 'model.onnx'}" in proc.stdout
    from monai_softcam.export import run_onnx

    assert run_onnx(models / "model.onnx", torch.zeros(2, 1, 32, 32))["evidence_maps"].shape == (2, 2, 4, 4)
    ts = models / "model.ts"
    torchscript_export(ts, str(models), configs / "inference.yaml", configs / "metadata.json")
    sys.path.insert(0, os.path.join(REPO_ROOT, "slicer_extension", "SoftCAM"))
    from SoftCAMLib import BundleError, BundleInfo

    for source in (folder, ts):
        info = BundleInfo.read(str(source))
        assert (info.image_size, info.class_names, info.spatial_dims) == ([32, 32], ["no_lesion", "lesion"], 2), source
    with pytest.raises(
        BundleError, match="sets image_size to \\[496, 496\\], but the trained model's image_size is \\[32, 32\\]"
    ):
        BundleInfo.read(str(folder), [os.path.join(REPO_ROOT, "configs", "oct.yaml")])


def test_inference_before_training_says_to_train_first(tmp_path):
    proc = bundle("inference", [INFERENCE], "--bundle_root", str(tmp_path / "fresh"), check=False)
    assert proc.returncode != 0
    assert last_line(proc.stderr).startswith(
        f"error: no trained model in {tmp_path / 'fresh' / 'models'}: task.json not found. Train first"
    )
    assert "--input_path" in proc.stderr


def test_missing_dataset_dir_and_unknown_key(tmp_path):
    proc = train(tmp_path / "b", "--dataset_dir", str(tmp_path / "nope"), check=False)
    assert proc.returncode != 0
    assert last_line(proc.stderr) == (
        f"error: dataset_dir does not exist or is not a folder: {tmp_path / 'nope'} (set it with --dataset_dir /path)"
    )
    proc = train(tmp_path / "b", "--epoch", "3", check=False)
    assert proc.returncode != 0
    assert "unknown config key(s) in the command line: --epoch (did you mean --epochs" in last_line(proc.stderr)
    assert not os.path.exists(tmp_path / "b" / "models")


def test_unreadable_image_is_named_and_leaves_no_report(trained, tmp_path):
    root, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(root / "data", copy / "data")
    bad = copy / "data" / "demo" / "images" / "demo_00003.png"
    bad.write_bytes(b"this is not a png")
    proc = train(copy, check=False)
    assert proc.returncode != 0
    assert "unreadable image (" in proc.stderr and str(bad) in last_line(proc.stderr)
    assert not os.path.exists(copy / "eval" / "metrics_val.json")
    # inference over a folder with that file and good ones: stops before writing anything, naming it
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(bad, folder / "bad.png")
    for name in ("demo_00001.png", "demo_00002.png"):
        shutil.copy(copy / "data" / "demo" / "images" / name, folder / name)
    out = tmp_path / "out"
    proc = bundle(
        "inference",
        [INFERENCE],
        "--bundle_root",
        str(root),
        "--input_path",
        str(folder),
        "--output_dir",
        str(out),
        check=False,
    )
    assert proc.returncode != 0 and "1 problem(s) in the inference input" in proc.stderr
    assert last_line(proc.stderr).strip().startswith(f"inference input {folder / 'bad.png'}: unreadable image (")
    assert not os.path.exists(out)  # no map, no predictions: nothing that would look complete
    # with skip_bad: the good inputs are run, the bad one is listed
    proc = run_bundle(
        "inference",
        [INFERENCE],
        "--bundle_root",
        str(root),
        "--input_path",
        str(folder),
        "--output_dir",
        str(out),
        "--skip_bad",
        "true",
    )
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert sorted(os.path.basename(r["image"]) for r in rows) == ["demo_00001.png", "demo_00002.png"]
    skipped = list(csv.DictReader(open(out / "skipped_inference.csv")))
    assert [os.path.basename(r["image"]) for r in skipped] == ["bad.png"] and "unreadable image" in skipped[0][
        "problem"
    ]


def _parsed(configs, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(configs))
    parser.update(overrides)
    return parser


def test_inference_config_matches_training_config(trained):
    """inference.yaml stands alone (Model Zoo layout): its task keys are null (as trained), as
    evaluate.yaml's are after train.yaml; it finds the model where training puts it, builds the same
    network from the trained task and prepares an image exactly as validation does."""
    from monai_softcam.task import TASK_KEYS

    root, _ = trained
    train_p = _parsed([TRAIN, TINY], bundle_root=str(root), device="cpu")
    infer_p = _parsed([INFERENCE], bundle_root=str(root), device="cpu")
    eval_p = _parsed([TRAIN, EVALUATE], bundle_root=str(root), device="cpu")
    assert set(TASK_KEYS) == set(train_p["task"]) - {"_target_"}
    for parser in (infer_p, eval_p):
        assert all(parser[key] is None for key in TASK_KEYS)
    for key in ("ckpt_dir", "checkpoint"):
        paths = {os.path.normpath(p.get_parsed_content(key)) for p in (train_p, infer_p, eval_p)}
        assert len(paths) == 1, (key, paths)
    saved = json.load(open(root / "models" / "task.json"))
    for parser, key in ((infer_p, "trained_task"), (eval_p, "trained_task"), (train_p, "task")):
        task = parser.get_parsed_content(key)
        assert [task.class_names, task.image_size, task.backbone] == [
            saved["class_names"],
            saved["image_size"],
            saved["backbone"],
        ]
    trained_net, infer_net = train_p.get_parsed_content("network_def"), infer_p.get_parsed_content("network_def")
    assert trained_net.state_dict().keys() == infer_net.state_dict().keys()
    item = {"image": str(root / "data" / "demo" / "images" / "demo_00001.png")}
    validation = train_p.get_parsed_content("validate#preprocessing")(dict(item))["image"]
    inference = infer_p.get_parsed_content("preprocessing")(dict(item))["image"]
    assert torch.equal(torch.as_tensor(validation), torch.as_tensor(inference))
    for key in ("image_column", "image_root", "image_template", "group_column"):
        assert infer_p["data"].get(key) == train_p["data"].get(key), key
    assert infer_p["network_def"]["maps_only"] is True  # one tensor, the maps: what the Model Zoo checks
    assert infer_p["sliding_window"] is False and infer_p["channels_last"] == train_p["channels_last"]
    assert infer_p["dicom_frame"] == train_p["dicom_frame"]  # the same frame of multi-frame files


def test_network_def_needs_no_data(tmp_path):
    """Building the network (a property check, ckpt_export, verify_net_in_out) reads no data list:
    a dataset_dir that does not exist is no obstacle, and nothing is written."""
    parser = _parsed([TRAIN], bundle_root=str(tmp_path / "b"), dataset_dir=str(tmp_path / "does_not_exist"))
    network = parser.get_parsed_content("network_def")
    maps = network(torch.zeros(1, 1, 96, 96))["evidence_maps"]
    assert tuple(maps.shape) == (1, 2, 12, 12)
    assert not os.path.exists(tmp_path / "b")
    from monai_softcam.utils import find_user_error

    with pytest.raises(Exception) as raised:  # the data is read where training needs it
        parser.get_parsed_content("initialize")
    assert "dataset_dir does not exist or is not a folder" in str(find_user_error(raised.value))


def test_import_leaves_the_excepthook_alone():
    """Importing the package (as Slicer does) changes no process-wide state; a bundle run installs the
    hook in its first step (test_missing_dataset_dir_and_unknown_key: the error is the last line)."""
    code = (
        "import sys; hook = sys.excepthook; import monai_softcam, monai_softcam.bundle, monai_softcam.task; "
        "assert sys.excepthook is hook; monai_softcam.bundle.start(); assert sys.excepthook is not hook; print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.slow
def test_mlflow_tracking(trained, tmp_path):
    """MONAI's own --tracking mlflow, against a local SQLite store: the run's parameters, the loss of
    every iteration, the metrics of every epoch and the executed config are there."""
    mlflow = pytest.importorskip("mlflow", reason="the test extra: mlflow-skinny")
    root, _ = trained
    out = tmp_path / "tracked"
    shutil.copytree(root / "data", out / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train(out, "--tracking", "mlflow", "--tracking_uri", uri, "--experiment_name", "softcam", "--run_name", "tiny")
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("softcam").experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.params["max_epochs"] == "2"
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(losses) == 6 and all(0 < m.value < 10 for m in losses)  # 2 epochs x 3 iterations
    for name in ("accuracy", "auc", "sensitivity"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2], name
    assert any(
        a.path.startswith("config_") and a.path.endswith(".json") for a in client.list_artifacts(run.info.run_id)
    )


# yes/no keys that reach a function of ours as they are: it reads them with as_flag itself (tested below)
READ_BY_OUR_CODE = {"channels_last", "overlays", "skip_bad", "check_images", "resume"}


def test_every_yes_no_key_reads_the_command_lines_false_as_no(tmp_path):
    """Python Fire hands ``--amp false`` over as the string "false", which ``if value`` takes for
    yes. Every top-level yes/no key of the bundle configs reaches code as an argument, and that code
    reads it with ``monai_softcam.utils.as_flag`` (MONAI's engines get ``use_amp``, read so)."""
    import re

    import yaml

    from monai_softcam.bundle import place_network, start
    from monai_softcam.data import list_images
    from monai_softcam.task import Task
    from monai_softcam.transforms import SaveOverlayd
    from monai_softcam.utils import find_user_error

    texts = {path: open(path).read() for path in sorted(glob.glob(os.path.join(CONFIGS, "*.yaml")))}
    flags = {
        key for text in texts.values() for key, value in (yaml.safe_load(text) or {}).items() if isinstance(value, bool)
    }
    assert {
        "amp",
        "channels_last",
        "cudnn_benchmark",
        "distributed",
        "dicom_window",
        "sliding_window",
        "full_resolution_maps",
        "overlays",
        "onnx_dynamic_spatial",
        "resume",
    } <= flags
    # a yes/no key reaches code only as an argument (that code reads it as a flag), never as a condition
    for path, text in texts.items():
        for line in text.splitlines():
            code = line.split(" #")[0]
            if "$" in code:
                for key in flags:
                    for found in re.finditer(rf"@{key}\b(?!#)", code):
                        assert code[: found.start()].rstrip()[-1:] in ("=", "(", ","), (os.path.basename(path), line)

    for value, expected in (("false", False), ("true", True), ("no", False)):
        for item in ("train#trainer#amp", "validate#evaluator#amp", "evaluation#evaluator#amp"):
            assert _parsed([TRAIN, EVALUATE], amp=value).get_parsed_content(item) is expected, (item, value)
        assert _parsed([INFERENCE], amp=value).get_parsed_content("evaluator#amp") is expected
        assert _parsed([TRAIN], dicom_window=value).get_parsed_content("task").dicom_window is expected
        assert _parsed([INFERENCE], sliding_window=value).get_parsed_content("dataloader#batch_size") == (
            1 if expected else 8
        )
        start(cudnn_benchmark=value)
        assert torch.backends.cudnn.benchmark is expected
        image = write_png(str(tmp_path / "x.png"), np.zeros((16, 12), np.uint8))
        stride8 = {"conv1_t_stride": 1, "no_max_pool": True}  # the 16 x 12 image reaches the network's smallest input
        task = Task(["a", "b"], 2, 1, [8, 8], backbone_kwargs=stride8)
        resized = task.preprocessing(sliding_window=value)({"image": image})["image"]
        assert tuple(resized.shape[1:]) == ((12, 16) if expected else (8, 8))
    start(distributed="false")
    assert not torch.distributed.is_initialized()  # no process group started
    torch.backends.cudnn.benchmark = False
    with pytest.raises(Exception) as raised:
        _parsed([TRAIN], amp="maybe").get_parsed_content("train#trainer#amp")
    assert str(find_user_error(raised.value)) == "amp must be true or false, got 'maybe'"
    with pytest.raises(Exception) as raised:
        _parsed([INFERENCE], sliding_window="ture").get_parsed_content("dataloader#batch_size")
    assert "sliding_window must be true or false" in str(find_user_error(raised.value))
    # the keys our own code reads
    conv = torch.nn.Conv2d(1, 1, 1)
    assert place_network(conv, "cpu", "false").weight.is_contiguous()
    assert place_network(conv, "cpu", "true").weight.is_contiguous(memory_format=torch.channels_last)
    assert SaveOverlayd("maps", ["a", "b"], enabled="false").enabled is False
    with pytest.raises(ValueError, match="overlays must be true or false"):
        SaveOverlayd("maps", ["a", "b"], enabled="off")
    with pytest.raises(ValueError, match="check_images must be true or false"):
        list_images("unused", check_images="maybe")


def test_multi_gpu_config_runs_every_step_of_train_yaml():
    """multi_gpu_train.yaml reuses train.yaml's lifecycle: merged, every initialize/run/finalize step of
    train.yaml is there, in order (a re-spelt list that drops one, e.g. the cuDNN step, fails)."""
    from monai.bundle import ConfigParser

    single = ConfigParser()
    single.read_config(TRAIN)
    multi = ConfigParser()
    multi.read_config([TRAIN, MULTI_GPU])
    for step in ("initialize", "run", "finalize"):
        wanted, merged = single[step], multi[step]
        positions = [merged.index(item) if item in merged else -1 for item in wanted]
        missing = [item for item, pos in zip(wanted, positions) if pos < 0]
        assert not missing, f"multi_gpu_train.yaml's {step} lacks {missing}"
        assert positions == sorted(positions), f"multi_gpu_train.yaml's {step} reorders train.yaml's steps"
    assert multi["distributed"] is True and single["distributed"] is False
    assert any("cudnn" in str(item) for item in multi["initialize"])


def _rewrite_csv(path, edit):
    rows = list(csv.DictReader(open(path)))
    fields = list(rows[0])
    rows = edit(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in fields if k in rows[0]] if rows else fields)
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.slow
def test_bad_rows_stop_training_by_name_or_are_skipped_and_listed(trained, tmp_path):
    """A label outside the classes, a corrupt image, a missing file, a CSV without the label column
    and an empty split: training refuses to start naming file/row/column; --skip_bad true trains on
    the rest and lists every skipped row."""
    root, _ = trained
    data = tmp_path / "mydata"
    shutil.copytree(root / "data" / "demo", data)
    train_csv = data / "train.csv"
    rows = list(csv.DictReader(open(train_csv)))
    (data / rows[4]["filename"]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    os.remove(data / rows[6]["filename"])

    def edit(rows):
        rows[2]["bin_target"] = "5"
        return rows

    _rewrite_csv(train_csv, edit)
    out = tmp_path / "run"
    proc = train(out, "--dataset_dir", str(data), check=False)
    assert proc.returncode != 0
    assert "3 problem(s) in the train split (fix them, or set skip_bad" in proc.stderr
    assert f"{train_csv} row 4 column 'bin_target': label 5 is not one of the classes [0, 1]" in proc.stderr
    assert f"{train_csv} row 6: unreadable image (" in proc.stderr and str(data / rows[4]["filename"]) in proc.stderr
    assert f"{train_csv} row 8: file not found: {data / rows[6]['filename']}" in proc.stderr
    assert not os.path.exists(out / "models" / "model.pt")

    run_bundle("training", [TRAIN, TINY], "--bundle_root", str(out), "--dataset_dir", str(data), "--skip_bad", "true")
    skipped = list(csv.DictReader(open(out / "eval" / "skipped_train.csv")))
    assert [(r["where"], r["image"]) for r in skipped] == [
        (f"{train_csv} row 4 column 'bin_target'", str(data / rows[2]["filename"])),
        (f"{train_csv} row 6", str(data / rows[4]["filename"])),
        (f"{train_csv} row 8", str(data / rows[6]["filename"])),
    ]
    assert os.path.isfile(out / "models" / "model.pt")
    assert json.load(open(out / "eval" / "metrics_val.json"))["metrics"]["n"] == 12  # the val split is whole

    # with --replace true too, a bad split is found before the earlier model is touched
    model = (out / "models" / "model.pt").read_bytes()
    _rewrite_csv(data / "val.csv", lambda rows: [{k: v for k, v in r.items() if k != "bin_target"} for r in rows])
    proc = train(out, "--dataset_dir", str(data), "--skip_bad", "true", "--replace", "true", check=False)
    assert proc.returncode != 0 and f"{data / 'val.csv'}: no column 'bin_target'" in proc.stderr
    shutil.copy(root / "data" / "demo" / "val.csv", data / "val.csv")
    _rewrite_csv(data / "val.csv", lambda rows: [])
    proc = train(out, "--dataset_dir", str(data), "--skip_bad", "true", "--replace", "true", check=False)
    assert proc.returncode != 0 and f"{data / 'val.csv'}: the val split is empty" in proc.stderr
    assert (out / "models" / "model.pt").read_bytes() == model


def test_auto_statistics_disk_cache_and_progressive_sampling_through_the_bundle(trained, tmp_path):
    """--intensity_mean/std auto: measured on the training split, saved once in the trained task, and
    read back by evaluate and inference; the disk cache and the progressive sampler run in the bundle."""
    root, _ = trained
    out = tmp_path / "auto"
    shutil.copytree(root / "data", out / "data")
    auto = ("--intensity_mean", "auto", "--intensity_std", "auto")
    proc = run_bundle(
        "training",
        [TRAIN, TINY],
        "--bundle_root",
        str(out),
        *auto,
        "--epochs",
        "1",
        "--cache",
        "disk",
        "--sampling",
        "progressive",
    )
    task = json.load(open(out / "models" / "task.json"))  # the trained task holds the measured values
    mean, std = task["intensity_mean"], task["intensity_std"]
    assert len(mean) == len(std) == 1 and 0 < std[0] < 1 and mean != [0.502]
    assert f"intensity statistics of the training split (24 images): mean {mean}, std {std}" in proc.stdout
    assert not os.path.exists(out / "models" / "intensity_stats.json")  # stored once, in the task
    assert os.listdir(out / "eval" / "cache" / "train") and os.listdir(out / "eval" / "cache" / "val")
    proc = run_bundle("evaluate", [TRAIN, EVALUATE], "--bundle_root", str(out), *auto)
    assert "intensity statistics of the training split" not in proc.stdout  # read, not measured again
    assert json.load(open(out / "eval" / "metrics_test.json"))["metrics"]["n"] == 12
    run_bundle("inference", [INFERENCE], "--bundle_root", str(out), *auto, "--output_dir", str(tmp_path / "inf"))
    assert len(list(csv.DictReader(open(tmp_path / "inf" / "predictions.csv")))) == 12


@pytest.mark.slow
def test_explain_eval_report_compares_softcam_with_a_black_box(trained, tmp_path):
    """The demo comparison's wiring on tiny data: a black box trained by configs/blackbox.yaml, then
    explain_eval with configs/demo_comparison.yaml writes the whole report."""
    root, _ = trained
    for name in ("sparse", "dense"):  # the same SoftCAM model twice is enough to exercise the wiring
        shutil.copytree(root / "models", tmp_path / name / "models")
    data = ("--demo_dir", str(root / "data" / "demo"))
    blackbox = os.path.join(REPO_ROOT, "configs", "blackbox.yaml")
    run_bundle("training", [TRAIN, TINY, blackbox], "--bundle_root", str(tmp_path / "blackbox"), *data)
    state = torch.load(tmp_path / "blackbox" / "models" / "model.pt", weights_only=True)
    assert "fc.weight" in state and not any(k.startswith("head.") for k in state)
    comparison = os.path.join(REPO_ROOT, "configs", "demo_comparison.yaml")
    light = (
        "--explain#options",
        "{'integrated_gradients': {'steps': 4}, 'scorecam': {'batch_size': 64}}",
        "--explain#sanity_cases",
        "2",
    )
    proc = run_bundle(
        "explain_eval", [TRAIN, EVALUATE, EXPLAIN, comparison], "--bundle_root", str(tmp_path / "sparse"), *data, *light
    )
    out = tmp_path / "report"
    for name in (
        "report.json",
        "report.csv",
        "cases.csv",
        "faithfulness.png",
        "sanity.png",
        "sanity.csv",
        "gallery.png",
        "index.html",
        "table.md",
    ):
        assert os.path.getsize(out / name) > 100, name
    report = json.load(open(out / "report.json"))
    assert set(report["classification"]) == {"softcam_sparse", "softcam_dense", "blackbox"}
    assert set(report["explanation"]["blackbox"]) == {
        "gradcam",
        "integrated_gradients",
        "guided_backprop",
        "scorecam",
        "layercam",
    }  # the paper's five
    test_rows = list(csv.DictReader(open(root / "data" / "demo" / "test.csv")))
    healthy = sum(r["bin_target"] == "0" for r in test_rows)
    cases = list(csv.DictReader(open(out / "cases.csv")))
    correct_everywhere = {
        i
        for i in range(len(test_rows))
        if all(int(c["predicted"]) == int(c["label"]) for c in cases if int(c["case"]) == i)
    }
    for methods in report["explanation"].values():
        for metrics in methods.values():
            ap = metrics["activation_precision"]
            assert (ap["n"], ap["n_excluded"]) == (len(test_rows) - healthy, healthy)  # healthy: empty masks
            assert ap["ci_low"] <= ap["mean"] <= ap["ci_high"] and ap["higher_is_better"] is True
            assert metrics["deletion_auc"]["n"] == len(correct_everywhere) == report["faithfulness_images"]
            assert metrics["deletion_auc"]["higher_is_better"] is False
            # the paper's protocol beside it: the same images for localisation, the diseased ones for deletion
            assert metrics["paper_activation_precision"]["n"] == len(test_rows) - healthy
            assert (
                metrics["paper_deletion_auc"]["n"] == report["paper_deletion_images"] <= report["faithfulness_images"]
            )
    assert report["paper_deletion_images"] == sum(test_rows[i]["bin_target"] == "1" for i in correct_everywhere)
    sanity = list(csv.DictReader(open(out / "sanity.csv")))
    assert {(r["model"], r["method"]) for r in sanity if r["layer"] == "original"} == {
        (m, k) for m, methods in report["explanation"].items() for k in methods
    }
    page = open(out / "index.html").read()
    assert all(
        name in page for name in ("faithfulness.png", "sanity.png", "gallery.png", "report.csv", "softcam_dense")
    )
    assert "explanation report (12 images" in proc.stdout
    tables = open(out / "table.md", encoding="utf-8").read().split("\n\n")
    assert tables[0] == "This project's protocol:" and tables[2] == "The paper's protocol:"
    for table in (tables[1], tables[3]):
        lines = table.strip().splitlines()
        assert len(lines) == 2 + 7 and lines[-1].startswith("| blackbox | layercam | ")
    assert "paper activation precision ↑" in tables[3]
