"""Nothing lost: the task belongs to its model, and one run per folder (no run over another's results, no two
runs at once), as the user meets them: exit code, last line, files on disk."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
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
        + ["--url", f"model.pt={(root / 'models' / 'model.pt').as_uri()}", "--allow_local_urls"],
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


def _truncated_png(source, target):
    """A PNG whose header (and end marker) pass the header check but whose pixel data is cut short."""
    data = source.read_bytes()
    cut = data.index(b"IDAT") + 40
    target.write_bytes(data[:cut] + data[-12:])


def _inference(root, images, out, *overrides, check=True):
    paths = ["--bundle_root", str(root), "--input_path", str(images), "--output_dir", str(out)]
    return bundle("inference", [INFERENCE], *paths, *overrides, check=check)


def _consistent(out):
    """Every row of predictions.csv names a maps folder that is there, and every maps folder has its row."""
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(os.path.basename(r["evidence_maps"]) for r in rows) == sorted(os.listdir(out / "maps"))
    assert all(os.path.dirname(r["evidence_maps"]) == str(out / "maps") for r in rows)
    return rows


def test_inference_outputs_appear_whole_or_not_at_all(trained_bundle, tmp_path):
    root, _ = trained_bundle
    demo = root / "data" / "demo" / "images"
    images = tmp_path / "images"
    images.mkdir()
    for k in range(4):
        shutil.copy(demo / f"demo_{k:05d}.png", images)
    bad = images / "demo_00002.png"
    _truncated_png(demo / "demo_00002.png", bad)
    out = tmp_path / "out"

    # a file that passes the header check but fails to decode stops the run naming it: no output folder left
    proc = _inference(root, images, out, check=False)
    assert proc.returncode != 0 and str(bad) in last_line(proc.stderr)
    assert not out.exists()

    # --skip_bad leaves it out at any stage, listed with why; the others' outputs are complete and consistent
    _inference(root, images, out, "--skip_bad", "true")
    rows = _consistent(out)
    assert [os.path.basename(r["image"]) for r in rows] == ["demo_00000.png", "demo_00001.png", "demo_00003.png"]
    with open(out / "skipped_inference.csv", newline="") as f:
        skipped = list(csv.DictReader(f))
    assert [s["image"] for s in skipped] == [str(bad)] and "not a readable image" in skipped[0]["problem"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # a failed replacing run (the bad file, no skip_bad) leaves the earlier outputs as they were
    proc = _inference(root, images, out, "--replace", "true", check=False)
    assert proc.returncode != 0 and str(bad) in last_line(proc.stderr)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    # kill -9 mid-run: the earlier outputs stay whole, beside a staging folder that says what it is
    many = tmp_path / "many"  # enough inputs (300) for a run of several seconds
    many.mkdir()
    for k in range(300):
        shutil.copy(demo / f"demo_{k % 40:05d}.png", many / f"case_{k:03d}.png")
    proc = subprocess.Popen(
        [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", repr([INFERENCE])]
        + ["--bundle_root", str(root), "--input_path", str(many), "--output_dir", str(out), "--replace", "true"]
        + ["--batch_size", "1"],
        cwd=REPO_ROOT,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = out / f"incomplete-inference-{proc.pid}"
    deadline = time.time() + 300
    while not (staging / "maps").is_dir() or len(os.listdir(staging / "maps")) < 3:
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGSTOP)  # stopped mid-run (still staging: nothing committed), then killed
    assert staging.is_dir() and not (staging / "predictions.csv").exists()
    proc.kill()
    proc.wait()
    assert staging.is_dir() and (out / ".softcam_run.lock").is_file()  # the dead run's lock: taken over next
    left = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and staging not in p.parents}
    assert {p: v for p, v in left.items() if p.name != ".softcam_run.lock"} == before
    # the next run takes over the dead run's lock, removes its staging folder and replaces the outputs whole
    _inference(root, many, out, "--replace", "true")
    assert len(_consistent(out)) == 300
    assert not (out / "skipped_inference.csv").exists()  # the earlier run's list went with its results
    assert sorted(os.listdir(out)) == ["maps", "predictions.csv"]


def test_a_full_or_read_only_disk_is_named_and_leaves_nothing_partial(trained_bundle, tmp_path):
    root, _ = trained_bundle
    images = root / "data" / "demo" / "images"
    disk = tmp_path / "disk"
    disk.mkdir()
    # a small file system of its own (root: CI runs as root; elsewhere the test cannot make one)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    try:
        out = disk / "out"
        out.mkdir()
        (out / "notes.txt").write_text("the user's own file")
        proc = _inference(root, images, out, check=False)
        assert proc.returncode != 0
        assert re.fullmatch(
            rf"error: cannot write {re.escape(str(out))}/\S+: No space left on device", last_line(proc.stderr)
        )
        assert sorted(os.listdir(out)) == ["notes.txt"]

        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        proc = _inference(root, images, out, check=False)
        assert proc.returncode != 0
        assert last_line(proc.stderr) == (
            f"error: cannot write in {out} (Read-only file system): give a folder you can write to"
        )
        assert "loaded" not in proc.stdout  # refused before the model was read
    finally:
        subprocess.run(["umount", str(disk)], check=True)
