"""λ selection as the paper does it, on Optuna: ``python -m monai.bundle run tune``.

::

    python -m monai.bundle run tune --config_file "['bundle/configs/train.yaml','bundle/configs/tune.yaml']"

sweeps the evidence penalty (``penalty#lambda1``/``penalty#lambda2``, or any other config id of
the training configs) over a grid or with a sampler, trains one model per setting with the training
configs of the same command line (``python -m monai.bundle run training`` in a child process, each
trial in its own ``<tune_dir>/trial_<n>/``), and scores each on the validation split: its accuracy and
one explanation metric of its evidence maps (``metrics_val.json``). The selected model is the
reference's rule: **the best explanation score among the models within ε (absolute accuracy) of the
best accuracy**; ties go to the higher accuracy, then to the earlier trial.

The study is Optuna's (two objectives: accuracy and the explanation score, so ``study.best_trials``
is the Pareto front), stored by default in an embedded SQLite file ``<tune_dir>/study.db``. Many
workers share one study through a shared RDB URL (``tune_settings#storage``, e.g.
``postgresql://user@host/db``): start one worker per GPU (``CUDA_VISIBLE_DEVICES=i python -m
monai.bundle run tune ... --tune_settings#storage URL``) on as many nodes as you like; each takes
the next setting. An interrupted study resumes: run the same command again. Finished trials are
kept; a trial whose worker died (``kill -9``, a lost node) is marked failed and its setting run
again as a new trial: at once when the worker was a process of this machine that no longer exists,
otherwise when its Optuna heartbeat is older than twice ``tune_settings#heartbeat`` seconds.
A trial whose training fails (an error, not a kill) is failed and not retried; its log is
``<tune_dir>/trial_<n>/train.log``.

Results, rewritten after every trial: ``<tune_dir>/results.csv`` (one row per trial: the
setting, validation accuracy and AUC, the metric, Gini, the maps' mean absolute evidence, state,
selected), ``selected.json`` (the selected trial, its ``ckpt_dir``) and ``pareto.png``.
"""

from __future__ import annotations

import csv
import ctypes
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from monai.bundle import ConfigParser

from .bundle import command_line
from .metrics.explanation import HIGHER_IS_BETTER
from .text import table
from .utils import ConfigError, atomic_open, pid_alive

__all__ = ["SELECTABLE_METRICS", "TuneSettings", "run_tune", "select_trial"]

logger = logging.getLogger("monai_softcam")

#: the explanation metrics training reports on the validation split (metrics_val.json), with their direction
SELECTABLE_METRICS = {
    k: v for k, v in HIGHER_IS_BETTER.items() if k not in ("deletion_auc", "insertion_auc", "paper_deletion_auc")
}
SAMPLERS = ("grid", "tpe", "random")
_TUNE_KEYS = ("tune", "tune_settings", "tune_dir")  # the tune config's own keys: not passed on to the trials
#: what each trial records of its validation report besides accuracy, AUC and the selection metric
_RECORDED = ("activation_precision", "gini", "mean_abs_evidence")


def _as_grid(values: Any) -> list[float] | None:
    if isinstance(values, (list, tuple)):
        return [float(v) for v in values]
    return None


@dataclass
class TuneSettings:
    """What ``run tune`` sweeps and how it selects (the ``tune_settings`` section of ``tune.yaml``).

    Args:
        search_space: ``{config id: values}``; a list is a grid of values, ``{low, high, log}`` a range
            for a sampler (``log: true`` needs ``low > 0``).
        sampler: ``grid`` (every combination of the lists), ``tpe`` or ``random`` (``n_trials`` draws).
        n_trials: the number of trials (grid: default the whole grid).
        metric: the explanation score, one of :data:`SELECTABLE_METRICS`, on the validation split
            (a ``paper_*`` metric makes the trials report both protocols, ``explanation#protocol both``).
        epsilon: the accuracy margin (absolute, e.g. 0.01 = one point) of the selection rule; >= 0.
        storage: an Optuna RDB URL; default ``sqlite:///<tune_dir>/study.db``.
        study_name: the study's name in the storage.
        heartbeat: seconds between a running trial's heartbeats (a dead worker's trial is failed
            after twice this).
        seed: the sampler's seed (tpe, random).
        train_configs: the config files of the training the trials run; default: those of the ``run
            tune`` command line, without the tune config.
        train_overrides: the overrides of that training; default: those of the ``run tune`` command
            line, without the tune settings.
    """

    search_space: Mapping[str, Any] = field(default_factory=dict)
    sampler: str = "grid"
    n_trials: int | None = None
    metric: str = "activation_precision"
    epsilon: float = 0.01
    storage: str | None = None
    study_name: str = "softcam_lambda"
    heartbeat: int = 60
    seed: int = 0
    train_configs: Sequence[str] | None = None
    train_overrides: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        space = dict(self.search_space or {})
        if not space:
            raise ConfigError(
                "tune_settings#search_space is empty: give at least one config id and its values, "
                "e.g. {penalty#lambda1: [0.0, 1.0e-4, 1.0e-3]}"
            )
        for name, values in space.items():
            grid = _as_grid(values)
            if grid is not None:
                if not grid:
                    raise ConfigError(f"tune_settings#search_space#{name} is an empty list: give its values")
                continue
            if not isinstance(values, Mapping) or not {"low", "high"} <= set(values):
                raise ConfigError(
                    f"tune_settings#search_space#{name}: a list of values or {{low, high, log}}, got {values!r}"
                )
            low, high = float(values["low"]), float(values["high"])
            if not low < high or (values.get("log") and low <= 0):
                raise ConfigError(
                    f"tune_settings#search_space#{name}: need low < high (and low > 0 with log), got {values!r}"
                )
        self.search_space = space
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"tune_settings#sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.sampler == "grid":
            ranges = [n for n, v in space.items() if _as_grid(v) is None]
            if ranges:
                raise ConfigError(f"tune_settings#sampler grid needs a list of values for {', '.join(ranges)}")
        elif not self.n_trials:
            raise ConfigError(f"tune_settings#n_trials: the {self.sampler} sampler needs a number of trials")
        if self.metric not in SELECTABLE_METRICS:
            raise ConfigError(
                f"tune_settings#metric {self.metric!r} is not a metric training reports; one of "
                f"{', '.join(SELECTABLE_METRICS)}"
            )
        if (
            not isinstance(self.epsilon, (int, float))
            or isinstance(self.epsilon, bool)
            or self.epsilon < 0
            or math.isnan(self.epsilon)
        ):
            raise ConfigError(
                f"tune_settings#epsilon must be a number >= 0 (accuracy points, e.g. 0.01), got {self.epsilon!r}"
            )
        if int(self.heartbeat) < 1:
            raise ConfigError(f"tune_settings#heartbeat must be >= 1 second, got {self.heartbeat!r}")

    @property
    def grid_size(self) -> int:
        return math.prod(len(_as_grid(v) or []) for v in self.search_space.values())


def select_trial(rows: Sequence[Mapping[str, Any]], metric: str, epsilon: float) -> Mapping[str, Any] | None:
    """The reference's rule on finished trials (``{"number", "accuracy", metric}`` each): among those whose
    accuracy is within ``epsilon`` of the best, the best ``metric`` (by its direction); ties: higher accuracy,
    then the earlier trial. None without a finished trial with both numbers."""
    done = [r for r in rows if _finite(r.get("accuracy")) and _finite(r.get(metric))]
    if not done:
        return None
    best = max(r["accuracy"] for r in done)
    near = [r for r in done if r["accuracy"] >= best - epsilon - 1e-12]
    sign = 1.0 if SELECTABLE_METRICS[metric] else -1.0
    return sorted(near, key=lambda r: (-sign * r[metric], -r["accuracy"], r["number"]))[0]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _training_command(settings: TuneSettings) -> tuple[list[str], dict[str, Any]]:
    """The config files and overrides the trials train with (the tune command line's, without its own)."""
    files, overrides = settings.train_configs, settings.train_overrides
    if files is None:
        cli = command_line()
        if cli is None:
            raise ConfigError(
                "tune_settings#train_configs: give the training config files (not started from "
                "python -m monai.bundle run tune, whose command line would say)"
            )
        cli_files, cli_overrides = cli.config_files, cli.overrides
        files = [f for f in cli_files if not set(_TUNE_KEYS) & set(ConfigParser.load_config_file(f) or {})]
        if overrides is None:
            overrides = {k: v for k, v in cli_overrides.items() if k.split("#")[0] not in _TUNE_KEYS}
    parser = ConfigParser()
    parser.read_config(f=list(files))
    for name in settings.search_space:
        if name not in parser:
            raise ConfigError(f"tune_settings#search_space#{name} is not a key of the training configs {list(files)}")
    return list(files), dict(overrides or {})


def _die_with_parent() -> None:  # pragma: no cover (runs in the child)
    """Linux: the training child gets SIGKILL when the tune process dies (kill -9 included)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _read_report(path: str, metric: str) -> dict[str, float]:
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    metrics, explained = report.get("metrics", {}), report.get("explanation_metrics", {})
    row = {k: float(metrics[k]) for k in ("accuracy", "auc") if k in metrics}
    for name in {metric, *_RECORDED}:
        if isinstance(explained.get(name), Mapping):
            row[name] = float(explained[name]["mean"])
    return row


def run_tune(settings: TuneSettings, tune_dir: str) -> dict[str, Any] | None:
    """Run (or resume) the study of ``settings`` in ``tune_dir``; returns the selected trial's row (see the module docstring)."""
    try:
        import optuna  # optional: pip install optuna
    except ImportError as err:
        raise ImportError("run tune needs Optuna: pip install optuna") from err
    from optuna.exceptions import ExperimentalWarning  # optional, as above
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback  # optional, as above
    from optuna.trial import TrialState  # optional, as above

    files, overrides = _training_command(settings)
    os.makedirs(tune_dir, exist_ok=True)
    url = settings.storage or f"sqlite:///{os.path.abspath(os.path.join(tune_dir, 'study.db'))}"
    with warnings.catch_warnings():  # Optuna calls heartbeats experimental; they are what resuming rests on
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
        storage = RDBStorage(
            url,
            heartbeat_interval=int(settings.heartbeat),
            grace_period=2 * int(settings.heartbeat),
            heartbeat_stale_trial_callback=retry,
        )
    higher = SELECTABLE_METRICS[settings.metric]
    if settings.sampler == "grid":
        sampler = optuna.samplers.GridSampler(
            {k: _as_grid(v) for k, v in settings.search_space.items()}, seed=settings.seed
        )
    elif settings.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=settings.seed)
    else:
        sampler = optuna.samplers.RandomSampler(seed=settings.seed)
    study = optuna.create_study(
        storage=storage,
        study_name=settings.study_name,
        sampler=sampler,
        load_if_exists=True,
        directions=["maximize", "maximize" if higher else "minimize"],
    )
    host = socket.gethostname()
    _fail_dead_local_trials(study, storage, retry, host, TrialState)

    def objective(trial: Any) -> tuple[float, float]:
        trial.set_user_attr("worker", f"{host}:{os.getpid()}")
        command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", repr(files)]
        for key, value in overrides.items():
            command += [f"--{key}", _value_text(value)]
        params = {}
        for name, values in settings.search_space.items():
            grid = _as_grid(values)
            if grid is not None:
                params[name] = trial.suggest_categorical(name, grid)
            else:
                params[name] = trial.suggest_float(
                    name, float(values["low"]), float(values["high"]), log=bool(values.get("log"))
                )
        folder = os.path.join(tune_dir, f"trial_{trial.number:03d}")
        os.makedirs(folder, exist_ok=True)
        ckpt_dir, output_dir = os.path.join(folder, "models"), os.path.join(folder, "eval")
        for name, value in params.items():
            command += [f"--{name}", repr(value)]
        command += ["--ckpt_dir", ckpt_dir, "--output_dir", output_dir]
        if settings.metric.startswith("paper_") and "explanation#protocol" not in overrides:
            command += ["--explanation#protocol", "both"]  # the paper's metrics are reported only when asked for
        trial.set_user_attr("dir", folder)
        logger.info("trial %d: %s", trial.number, ", ".join(f"{k}={v:g}" for k, v in params.items()))
        print(
            f"tune: trial {trial.number} ({', '.join(f'{k}={v:g}' for k, v in params.items())}) -> {folder}", flush=True
        )
        log_path = os.path.join(folder, "train.log")
        with open(log_path, "w", encoding="utf-8") as log:
            done = subprocess.run(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if os.name == "posix" else None,
            )
        if done.returncode != 0:
            raise RuntimeError(f"trial {trial.number}: training failed (exit {done.returncode}); see {log_path}")
        row = _read_report(os.path.join(output_dir, "metrics_val.json"), settings.metric)
        for name, value in row.items():
            trial.set_user_attr(name, value)
        trial.set_user_attr("ckpt_dir", ckpt_dir)
        if not _finite(row.get(settings.metric)) or not _finite(row.get("accuracy")):
            raise RuntimeError(
                f"trial {trial.number}: {output_dir}/metrics_val.json has no {settings.metric} (does the "
                "validation split have masks?)"
            )
        return row["accuracy"], row[settings.metric]

    n_trials = settings.n_trials if settings.n_trials else None
    if settings.sampler != "grid" and n_trials:
        n_trials = max(
            0, n_trials - len([t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE])
        )
    study.optimize(
        objective,
        n_trials=n_trials,
        catch=(RuntimeError,),
        gc_after_trial=True,
        callbacks=[lambda study, _trial: write_results(study, settings, tune_dir)],
    )  # after every trial
    selected = write_results(study, settings, tune_dir)
    if selected is not None:
        print(
            f"tune: selected trial {selected['number']} ({', '.join(f'{k}={selected[k]:g}' for k in settings.search_space)}): "
            f"val accuracy {selected['accuracy']:.4f}, {settings.metric} {selected[settings.metric]:.4f} -> "
            f"{os.path.join(tune_dir, 'selected.json')}, {os.path.join(tune_dir, 'results.csv')}",
            flush=True,
        )
    return selected


def _fail_dead_local_trials(study: Any, storage: Any, retry: Any, host: str, states: Any) -> None:
    """Running trials of this machine whose worker process is gone (a kill -9): failed, and set to run again."""
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        name, _, pid = worker.rpartition(":")
        if name == host and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            if storage.set_trial_state_values(trial_id, state=states.FAIL):
                print(
                    f"tune: trial {trial.number} was interrupted (worker {worker} is gone): failed, and run again",
                    flush=True,
                )
                retry(study, storage.get_trial(trial_id))


def write_results(study: Any, settings: TuneSettings, tune_dir: str) -> dict[str, Any] | None:
    """``results.csv``, ``selected.json`` and ``pareto.png`` from the study as it stands; returns the selected row."""
    names = list(settings.search_space)
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, **{n: t.params.get(n) for n in names}, "state": t.state.name}
        for key in ("accuracy", "auc", settings.metric, *_RECORDED, "dir"):
            row[key] = t.user_attrs.get(key)
        row["ckpt_dir"] = t.user_attrs.get("ckpt_dir")
        rows.append(row)
    finished = [r for r in rows if r["state"] == "COMPLETE"]
    selected = select_trial(finished, settings.metric, float(settings.epsilon))
    columns = [
        "number",
        *names,
        "accuracy",
        "auc",
        *dict.fromkeys([settings.metric, *_RECORDED]),
        "state",
        "selected",
        "dir",
    ]
    with atomic_open(os.path.join(tune_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "selected": int(selected is not None and r["number"] == selected["number"])})
    with atomic_open(os.path.join(tune_dir, "results.md"), "w") as f:
        f.write(_markdown(rows, columns[:-1], selected))
    if selected is not None:
        with atomic_open(os.path.join(tune_dir, "selected.json"), "w") as f:
            json.dump({**selected, "metric": settings.metric, "epsilon": settings.epsilon}, f, indent=4)
    _pareto_plot(finished, selected, settings, os.path.join(tune_dir, "pareto.png"))
    return selected


def _markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], selected: Mapping[str, Any] | None) -> str:
    """The results as a Markdown table (the selected trial marked), for reports."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4f}"
        return "" if value is None else str(value)

    head = [c.split("#")[-1].replace("_", " ") for c in columns]
    lines = []
    for r in rows:
        mark = {"selected": "**yes**" if selected is not None and r["number"] == selected["number"] else ""}
        lines.append([mark.get(c, cell(r.get(c))) for c in columns])
    return table(head, lines)


def _pareto_plot(
    rows: Sequence[Mapping[str, Any]], selected: Mapping[str, Any] | None, settings: TuneSettings, path: str
) -> None:
    import matplotlib  # a dependency; imported here so that the module loads without a display backend set up

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # as above

    metric = settings.metric
    points = [r for r in rows if _finite(r.get("accuracy")) and _finite(r.get(metric))]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if points:
        sign = 1.0 if SELECTABLE_METRICS[metric] else -1.0
        front = [
            p
            for p in points
            if not any(
                q["accuracy"] >= p["accuracy"]
                and sign * q[metric] >= sign * p[metric]
                and (q["accuracy"], q[metric]) != (p["accuracy"], p[metric])
                for q in points
            )
        ]
        ax.scatter([p["accuracy"] for p in points], [p[metric] for p in points], c="#999999", label="trials")
        front.sort(key=lambda p: p["accuracy"])
        ax.plot([p["accuracy"] for p in front], [p[metric] for p in front], "o-", c="#1f77b4", label="Pareto front")
        for p in points:
            label = ", ".join(f"{n.split('#')[-1]}={p[n]:g}" for n in settings.search_space)
            ax.annotate(label, (p["accuracy"], p[metric]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        best = max(p["accuracy"] for p in points)
        ax.axvspan(
            best - settings.epsilon,
            best,
            color="#2ca02c",
            alpha=0.12,
            label=f"within ε={settings.epsilon:g} of the best",
        )
        if selected is not None:
            ax.scatter(
                [selected["accuracy"]], [selected[metric]], marker="*", s=250, c="#d62728", label="selected", zorder=3
            )
    ax.set_xlabel("validation accuracy")
    ax.set_ylabel(f"{metric.replace('_', ' ')} ({'higher' if SELECTABLE_METRICS[metric] else 'lower'} is better)")
    ax.set_title("λ selection: accuracy vs explanation score")
    if points:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no finished trial yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
