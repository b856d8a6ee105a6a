"""λ selection (``python -m monai.bundle run tune``, monai_softcam.tune): the selection rule, its
settings' errors, and an Optuna study that resumes after ``kill -9``."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT

from monai_softcam.tune import TuneSettings, select_trial
from monai_softcam.utils import ConfigError

optuna = pytest.importorskip("optuna", reason="the tune extra: pip install 'monai_softcam[tune]'")

TRAIN = os.path.join(REPO_ROOT, "bundle", "configs", "train.yaml")
TUNE = os.path.join(REPO_ROOT, "bundle", "configs", "tune.yaml")
TINY = os.path.join(REPO_ROOT, "tests", "configs", "tiny.yaml")
GRID = [0.0, 1e-3, 1e-2]


def test_the_reference_rule_best_explanation_within_epsilon_of_the_best_accuracy():
    rows = [
        {"number": 0, "accuracy": 0.90, "activation_precision": 0.30},
        {"number": 1, "accuracy": 0.895, "activation_precision": 0.40},  # within 0.01: chosen
        {"number": 2, "accuracy": 0.85, "activation_precision": 0.90},  # best maps, but 5 points less accurate
        {"number": 3, "accuracy": float("nan"), "activation_precision": 0.99},  # not finished
    ]
    assert select_trial(rows, "activation_precision", 0.01)["number"] == 1
    assert select_trial(rows, "activation_precision", 0.0)["number"] == 0  # epsilon 0: the most accurate
    assert select_trial(rows, "activation_precision", 0.06)["number"] == 2
    # a lower-is-better metric is minimised; ties go to the higher accuracy, then the earlier trial
    errors = [
        {"number": 0, "accuracy": 0.9, "completeness_error": 0.2},
        {"number": 1, "accuracy": 0.91, "completeness_error": 0.2},
        {"number": 2, "accuracy": 0.91, "completeness_error": 0.2},
    ]
    assert select_trial(errors, "completeness_error", 0.05)["number"] == 1
    assert select_trial([], "gini", 0.01) is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"search_space": {}}, "search_space is empty"),
        ({"search_space": {"penalty#lambda1": []}}, r"search_space#penalty#lambda1 is an empty list"),
        (
            {"search_space": {"penalty#lambda1": [0.0]}, "metric": "accuracy_of_maps"},
            "metric 'accuracy_of_maps' is not a metric",
        ),
        ({"search_space": {"penalty#lambda1": [0.0]}, "epsilon": -0.01}, "epsilon must be a number >= 0"),
        (
            {"search_space": {"penalty#lambda1": {"low": 1e-5, "high": 1e-2, "log": True}}},
            "grid needs a list of values",
        ),
        (
            {"search_space": {"penalty#lambda1": {"low": 1e-5, "high": 1e-2}}, "sampler": "tpe"},
            "needs a number of trials",
        ),
        (
            {
                "search_space": {"penalty#lambda1": {"low": 0.0, "high": 1e-2, "log": True}},
                "sampler": "tpe",
                "n_trials": 3,
            },
            "low > 0 with log",
        ),
        ({"search_space": {"penalty#lambda1": [0.0]}, "sampler": "anneal"}, "sampler must be one of grid, tpe, random"),
    ],
)
def test_bad_settings_are_refused_by_key(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TuneSettings(**kwargs)


def _tune_command(tmp_path, *extra):
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "tune",
        "--config_file",
        repr([TRAIN, TINY, TUNE]),
        "--bundle_root",
        str(tmp_path),
        "--tune_settings#search_space",
        repr({"penalty#lambda1": GRID}),
        *extra,
    ]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def test_an_unknown_search_key_is_refused_before_any_training(tmp_path):
    done = subprocess.run(
        _tune_command(tmp_path, "--tune_settings#search_space", "{'penalty#lambda3': [0.0]}"),
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert done.returncode != 0
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: tune_settings#search_space#penalty#lambda3 is not a key")
    )
    assert not (tmp_path / "eval" / "tune" / "trial_000").exists()


def _trials(db):
    study = optuna.load_study(study_name="softcam_lambda", storage=f"sqlite:///{db}")
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def _training_children(folder):
    """Processes whose command line names ``folder`` (the training child of a trial)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if str(folder).encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the killed trial's child")
def test_a_study_killed_with_sigkill_resumes_keeping_finished_trials(tmp_path):
    tune_dir = tmp_path / "eval" / "tune"
    db = tune_dir / "study.db"
    proc = subprocess.Popen(
        _tune_command(tmp_path), cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    try:  # kill the tune process once trial 0 has finished and trial 1 is training
        while time.time() < deadline:
            if db.exists() and (tune_dir / "trial_001" / "train.log").exists():
                states = [t.state.name for t in _trials(db)]
                if states[:2] == ["COMPLETE", "RUNNING"]:
                    time.sleep(1.0)  # its training child is running
                    break
            assert proc.poll() is None, "the study ended before it could be interrupted"
            time.sleep(0.3)
        else:
            pytest.fail("trial 1 never started")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = _trials(db)
    assert [t.state.name for t in first] == ["COMPLETE", "RUNNING"]  # as the kill left it
    done_params, model = first[0].params, tune_dir / "trial_000" / "models" / "model.pt"
    stamp = os.stat(model).st_mtime_ns
    for _ in range(50):  # the trial's training child dies with its parent
        if not _training_children(tune_dir / "trial_001"):
            break
        time.sleep(0.2)
    assert not _training_children(tune_dir / "trial_001")

    resumed = subprocess.run(
        _tune_command(tmp_path),
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "trial 1 was interrupted" in resumed.stdout
    trials = _trials(db)
    states = {t.number: t.state.name for t in trials}
    assert states[0] == "COMPLETE" and states[1] == "FAIL"  # kept; marked failed
    assert trials[0].params == done_params and os.stat(model).st_mtime_ns == stamp  # not trained again
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.params["penalty#lambda1"] for t in complete) == sorted(GRID)  # every setting, once
    retried = [t for t in complete if t.params == trials[1].params]
    assert len(retried) == 1 and retried[0].number > 1  # the interrupted setting, run again as a new trial
    rows = list(csv.DictReader(open(tune_dir / "results.csv")))
    assert len(rows) == len(trials) and sum(r["selected"] == "1" for r in rows) == 1
    selected = json.load(open(tune_dir / "selected.json"))
    assert os.path.isfile(os.path.join(selected["ckpt_dir"], "model.pt")) and "tune: selected trial" in resumed.stdout
    assert os.path.getsize(tune_dir / "pareto.png") > 5000


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
    """Two worker processes on one storage (as one per GPU would be) split the grid between them."""
    grid = [0.0, 1e-4, 1e-3, 1e-2]
    db = tmp_path / "shared.db"
    command = _tune_command(
        tmp_path,
        "--tune_settings#search_space",
        repr({"penalty#lambda1": grid}),
        "--tune_settings#storage",
        f"sqlite:///{db}",
    )

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            encoding="utf-8",
            errors="replace",
        )

    workers = [start()]
    deadline = time.time() + 120
    while not (tmp_path / "eval" / "tune" / "trial_000").exists() and time.time() < deadline:
        time.sleep(0.2)  # the first worker has made the demo data and started a trial
    workers.append(start())
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), "\n".join(o[-2000:] for o in outputs)
    trials = _trials(db)
    assert not [t for t in trials if t.state.name != "COMPLETE"]
    assert {t.params["penalty#lambda1"] for t in trials} == set(grid)
    workers_used = {t.user_attrs["worker"] for t in trials}
    assert len(workers_used) == 2  # both took settings
