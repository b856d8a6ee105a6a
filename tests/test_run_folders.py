"""Nothing lost: the task belongs to its model, and one run per folder (no run over another's results, no two
runs at once), as the user meets them: exit code, last line, files on disk."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import nibabel as nib
import numpy as np
from bundle_helpers import INFERENCE, bundle, env, last_line, train
from conftest import REPO_ROOT


def _copy(trained_bundle, tmp_path):
    root, _ = trained_bundle
    copy = tmp_path / "b"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("eval"))
    return copy


def _files(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder)) if (folder / name).is_file()}


def test_the_task_is_written_with_its_first_checkpoint_and_a_resume_keeps_it(trained_bundle, tmp_path):
    copy = _copy(trained_bundle, tmp_path)
    models = copy / "models"
    before = _files(models)

    # a resume whose settings contradict the saved task is refused by name; nothing changes
    proc = train(copy, "--resume", "true", "--epochs", "3", "--image_size", "[48,48]", check=False)
    assert proc.returncode != 0
    assert last_line(proc.stderr).startswith(
        "error: --image_size on the command line sets image_size to [48, 48], but the trained model's image_size "
        f"is [32, 32] ({models / 'task.json'}, the task of the run being resumed)"
    )
    assert _files(models) == before

    # a new run that fails before its first checkpoint (a NaN image in its training split) writes no task file
    data = tmp_path / "data"
    shutil.copytree(copy / "data" / "demo", data)
    nan = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    nan[1, 2] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(data / "images" / "nan.nii.gz"))
    with open(data / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[-1]["filename"] = "images/nan.nii.gz"
    with open(data / "train.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fresh = tmp_path / "fresh"
    proc = train(fresh, "--dataset_dir", str(data), check=False)
    assert proc.returncode != 0 and "nan.nii.gz" in last_line(proc.stderr)
    assert not (fresh / "models" / "task.json").exists() and not (fresh / "models" / "model.pt").exists()
    assert not (fresh / "models" / ".softcam_run.lock").exists()  # released when the run ended


def test_one_run_per_folder(trained_bundle, tmp_path):
    copy = _copy(trained_bundle, tmp_path)
    models = copy / "models"
    before = _files(models)

    # a second training into a folder holding a model: refused, nothing touched; --replace replaces it whole
    proc = train(copy, "--epochs", "1", check=False)
    assert proc.returncode != 0
    assert last_line(proc.stderr) == (
        f"error: {models} already holds the results of an earlier training run (model.pt, model_best_auc.pt, "
        "task.json, training_state.pt): resume it with --resume true, replace them with --replace true, or give "
        "another folder"
    )
    assert _files(models) == before

    # a folder in use by a live run (this machine, another process): refused, naming that run
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"host": socket.gethostname(), "pid": sleeper.pid, "run": "training", "started": "2026-12-07 10:00:00"}
        (models / ".softcam_run.lock").write_text(json.dumps(lock))
        proc = train(copy, "--epochs", "1", "--replace", "true", check=False)
        assert proc.returncode != 0
        assert last_line(proc.stderr).startswith(
            f"error: {models} is in use by another training run (process {sleeper.pid} on {socket.gethostname()}, "
            "started 2026-12-07 10:00:00)"
        )
        assert _files(models) == {**before, ".softcam_run.lock": json.dumps(lock).encode()}
    finally:
        sleeper.kill()
        sleeper.wait()
    # that run is gone (killed): its lock is taken over, and --replace trains afresh
    proc = train(copy, "--epochs", "1", "--replace", "true")
    assert "taking over the lock" in proc.stdout + proc.stderr
    assert (models / "model.pt").read_bytes() != before["model.pt"]
    assert not (models / ".softcam_run.lock").exists()

    # inference: a second run into a folder with predictions is refused and the first run's rows are kept
    out = tmp_path / "inference"
    images = copy / "data" / "demo" / "images"
    bundle("inference", [INFERENCE], "--bundle_root", str(copy), "--input_path", str(images), "--output_dir", str(out))
    rows = (out / "predictions.csv").read_text()
    one = str(images / "demo_00000.png")
    proc = bundle(
        "inference", [INFERENCE], "--bundle_root", str(copy), "--input_path", one, "--output_dir", str(out), check=False
    )
    assert proc.returncode != 0
    assert last_line(proc.stderr).startswith(f"error: {out} already holds the results of an earlier inference run")
    assert (out / "predictions.csv").read_text() == rows
    replace = ["--output_dir", str(out), "--replace", "true"]
    bundle("inference", [INFERENCE], "--bundle_root", str(copy), "--input_path", one, *replace)
    assert len((out / "predictions.csv").read_text().splitlines()) == 2  # replaced whole: header and one row
    assert sorted(os.listdir(out / "maps")) == ["demo_00000"]


def test_package_bundle_checks_every_argument_before_writing(trained_bundle, tmp_path):
    root, _ = trained_bundle
    out = tmp_path / "zoo" / "demo_lesion_softcam_classification"
    missing = tmp_path / "missing" / "dir" / "test_x.py"
    proc = subprocess.run(
        [sys.executable, "-m", "monai_softcam", "package-bundle", "--ckpt_dir", str(root / "models")]
        + ["--out", str(out), "--name", "demo_lesion_softcam_classification", "--unit_test", str(missing)]
        + ["--url", f"model.pt={(root / 'models' / 'model.pt').as_uri()}"],
        capture_output=True,
        text=True,
        env=env(),
        cwd=REPO_ROOT,
    )
    assert proc.returncode != 0
    assert last_line(proc.stderr) == (
        f"error: --unit_test {missing}: the folder {missing.parent} does not exist: nothing was written"
    )
    assert not out.exists() and not (tmp_path / "zoo").exists()


def test_demo_data_of_a_killed_run_is_cleaned_up(tmp_path):
    from monai_softcam.data import DemoDataConfig, generate_demo_dataset

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs: a generator killed with kill -9
    partial = tmp_path / f".demo-partial-{gone.pid}-x1y2"
    (partial / "images").mkdir(parents=True)
    (partial / "images" / "demo_00000.png").write_bytes(b"half")
    alive = tmp_path / f".demo-partial-{os.getpid()}-z3"  # a generator still running: left alone
    alive.mkdir()
    generate_demo_dataset(
        str(tmp_path / "demo"), DemoDataConfig(size=32, num_train=2, num_val=2, num_test=2, radius=(3.0, 5.0)), False
    )
    assert sorted(os.listdir(tmp_path)) == [alive.name, "demo"]
