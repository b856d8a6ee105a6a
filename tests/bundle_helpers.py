"""Running the bundle in tests: through its real command line (a subprocess, where the command line,
a kill or a second process is the point) or in this process through MONAI's ``ConfigWorkflow`` (as
the Model Zoo's tests and MONAI apps run bundles: no interpreter start-up, same configs)."""

import contextlib
import io
import os
import subprocess
import sys
import types

import pytest
from conftest import REPO_ROOT

CONFIGS = os.path.join(REPO_ROOT, "bundle", "configs")
TRAIN = os.path.join(CONFIGS, "train.yaml")
EVALUATE = os.path.join(CONFIGS, "evaluate.yaml")
INFERENCE = os.path.join(CONFIGS, "inference.yaml")
EXPLAIN = os.path.join(CONFIGS, "explain.yaml")
MULTI_GPU = os.path.join(CONFIGS, "multi_gpu_train.yaml")
TINY = os.path.join(REPO_ROOT, "tests", "configs", "tiny.yaml")


def env():
    """The environment of a child process: this checkout importable, two threads."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = REPO_ROOT + os.pathsep + environment.get("PYTHONPATH", "")
    environment.setdefault("OMP_NUM_THREADS", "2")
    return environment


def bundle(run_id, configs, *overrides, check=True, timeout=600):
    """``python -m monai.bundle run <run_id>`` in a child process; fails the test with its output if it fails
    (unless ``check=False``)."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", repr(list(configs)), *overrides]
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env(), capture_output=True, encoding="utf-8", errors="replace", timeout=timeout
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def run_bundle(run_id, configs, *overrides):
    """The same run in this process (``ConfigWorkflow``: initialize, run, finalize), with the overrides
    written as on the command line (``"--epochs", "2"``, read as MONAI's command line reads them).
    Returns ``stdout`` (what it printed) as a finished process would; an error propagates."""
    from monai.bundle import ConfigWorkflow

    from monai_softcam.bundle import parse_command_line

    overrides = parse_command_line(["monai/bundle/__main__.py", "run", run_id, *map(str, overrides)]).overrides
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        workflow = ConfigWorkflow(
            config_file=list(configs), run_id=run_id, logging_file=False, workflow_type=None, **overrides
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    return types.SimpleNamespace(returncode=0, stdout=printed.getvalue())


def torchscript_export(ts, models, inference, meta_file, *overrides):
    """The documented TorchScript export (MONAI's ``ckpt_export``) of ``models/model.pt``, with the
    trained task ``models/task.json`` embedded; fails the test with the output if it fails."""
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "--net_id",
        "network_def",
        "--filepath",
        str(ts),
        "--ckpt_file",
        os.path.join(models, "model.pt"),
        "--meta_file",
        str(meta_file),
        "--config_file",
        repr([str(inference), os.path.join(models, "task.json")]),
        *overrides,
    ]
    done = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env(), capture_output=True, encoding="utf-8", errors="replace", timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]


def last_line(text):
    """The last non-empty line of a command's output: what the user reads first."""
    return [line for line in text.splitlines() if line.strip()][-1]


def train(root, *overrides, check=True):
    """The tiny demo training into ``root`` through the command line."""
    return bundle("training", [TRAIN, TINY], "--bundle_root", str(root), *overrides, check=check)
