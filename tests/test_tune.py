"""λ selection (``python -m monai.bundle run tune``, monai_softcam.tune): the selection rule, its
settings' errors, and an Optuna study that resumes after ``kill -9``."""

import contextlib
import csv
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def _worker(command):
    """A tune worker process, its output (stdout and stderr) in a pipe."""
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="utf-8",
        errors="replace",
    )


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
        return _worker(command)

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


@contextlib.contextmanager
def _postgres_server():
    """A real PostgreSQL server (Debian's ``postgresql``: ``initdb`` and ``pg_ctl``) in a temporary folder,
    listening on a local socket only; yields its SQLAlchemy URL. PostgreSQL refuses to run as root, so under
    root (CI) the server runs as the unprivileged ``postgres`` user, made if this machine has none."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (Debian: apt install postgresql)")
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver: pip install 'monai_softcam[postgres]'")
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True
            )
    folder = tempfile.mkdtemp(prefix="softcam-pg-", dir="/tmp")  # a path the server's user can reach
    if user is not None:
        os.chown(folder, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    data = os.path.join(folder, "data")
    with socket.socket() as s:  # a free port number: it names the socket file
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_user = {"user": user} if user is not None else {}
    subprocess.run(
        [initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True, capture_output=True, **as_user
    )
    options = f"-k {folder} -p {port} -c listen_addresses=''"
    started = subprocess.run(
        [pg_ctl, "-D", data, "-o", options, "-l", os.path.join(folder, "server.log"), "-w", "start"],
        capture_output=True,
        text=True,
        **as_user,
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"postgresql+psycopg2://postgres@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True, **as_user)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_postgresql_one_killed_mid_trial(tmp_path):
    """The documented multi-node form: workers on a shared PostgreSQL study. One is killed with SIGKILL in the
    middle of a trial; the other completes the study, the dead worker's trial failed through its stale heartbeat
    and its setting run again."""
    grid = [0.0, 1e-4, 1e-3, 1e-2]
    with _postgres_server() as url:
        command = _tune_command(
            tmp_path,
            "--tune_settings#search_space",
            repr({"penalty#lambda1": grid}),
            "--tune_settings#storage",
            url,
            "--tune_settings#heartbeat",
            "1",
        )

        def start() -> subprocess.Popen:
            return _worker(command)

        def trials():
            study = optuna.load_study(study_name="softcam_lambda", storage=url)
            return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)

        survivor = start()
        deadline = time.time() + 240
        while not (tmp_path / "eval" / "tune" / "trial_000").exists():
            assert survivor.poll() is None and time.time() < deadline, "the first worker did not start a trial"
            time.sleep(0.2)  # it has made the demo data and started a trial
        victim = start()
        killed = None
        while killed is None:  # the victim's trial is training: kill the worker (its training child dies with it)
            assert victim.poll() is None and time.time() < deadline, "the second worker never started a trial"
            running = [t for t in trials() if t.state.name == "RUNNING" and t.user_attrs.get("dir")]
            mine = [t for t in running if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
            if mine and os.path.exists(os.path.join(mine[0].user_attrs["dir"], "train.log")):
                time.sleep(1.0)
                victim.send_signal(signal.SIGKILL)
                killed = mine[0].number
            time.sleep(0.2)
        victim.wait(timeout=30)
        output = survivor.communicate(timeout=900)[0]
        assert survivor.returncode == 0, output[-3000:]
        final = trials()
        assert {t.params["penalty#lambda1"] for t in final if t.state.name == "COMPLETE"} == set(grid), [
            (t.number, t.state.name, t.params) for t in final
        ]
        assert final[killed].state.name == "FAIL"  # its heartbeat went stale: failed, its setting run again
        assert [t.params for t in final if t.state.name == "COMPLETE"].count(final[killed].params) == 1
        assert {t.user_attrs["worker"] for t in final if t.state.name == "COMPLETE"} <= {
            f"{socket.gethostname()}:{survivor.pid}",
            f"{socket.gethostname()}:{victim.pid}",
        }
        rows = list(csv.DictReader(open(tmp_path / "eval" / "tune" / "results.csv")))
        assert len(rows) == len(final) and sum(r["selected"] == "1" for r in rows) == 1
        assert "tune: selected trial" in output
