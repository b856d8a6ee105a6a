"""What the bundle configs in ``bundle/configs`` call: the start of every run, paths, device, the trained task.

This is the one module that reads the process's command line (:func:`~monai_softcam.bundle.command_line`, parsed
once). Every run id of the bundle starts with :func:`~monai_softcam.bundle.start`, whether it runs from ``python
-m monai.bundle run ...`` or in-process through MONAI's ``ConfigWorkflow`` (as the Model Zoo's tests and MONAI
apps run bundles): the same checks run both ways, except the one that needs the command line itself (override
ids that name no config key, a typo MONAI would add silently).

The trained task (:func:`~monai_softcam.bundle.trained_task`) is checked by value, not by where a value came
from: in ``evaluate.yaml`` and ``inference.yaml`` a task key is ``null`` (as trained) unless a config file after
them, an override on the command line or a ``ConfigWorkflow`` argument sets it, and then it must agree with the
model's ``task.json``."""

from __future__ import annotations

import ast
import difflib
import functools
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from monai.bundle import ConfigParser
from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS
from monai.utils import set_determinism

from .data.demo import DemoDataConfig, ensure_demo_dataset
from .folders import release_folders
from .settings import check_settings
from .task import TASK_FILE, TASK_KEYS, Task, load_task
from .utils import ConfigError, MissingInputError, as_flag, barrier, install_error_hook, is_main_process

__all__ = [
    "CommandLine",
    "bundle_root",
    "check_overrides",
    "command_line",
    "config_id",
    "default_device",
    "finish",
    "init_distributed",
    "parse_command_line",
    "place_network",
    "prepare_dataset",
    "require_dir",
    "required",
    "start",
    "trained_task",
    "training_task",
]

logger = logging.getLogger("monai_softcam")

#: arguments of ``python -m monai.bundle run`` that are not config overrides
_RUN_ARGS = {
    "run_id",
    "init_id",
    "final_id",
    "meta_file",
    "config_file",
    "logging_file",
    "tracking",
    "args_file",
    "workflow_name",
    "workflow_type",
}


def config_id(key: str) -> str:
    """A config id as MONAI reads it from the command line (``a::b`` is ``a#b``)."""
    return key.replace("::", "#")


def _literal(value: str) -> Any:
    """A command-line value as MONAI's command line reads it: a Python literal where it is one."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


@dataclass(frozen=True)
class CommandLine:
    """A ``python -m monai.bundle <command> ...`` command line: its config files, the overrides
    (values read as Python literals where they are: ``[64,64]``, ``3``) and the other arguments of
    ``run`` (``tracking``, ``meta_file``, ...)."""

    config_files: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    run_args: dict[str, Any] = field(default_factory=dict)

    def source_of(self, key: str) -> str | None:
        """Where this command line sets the top-level config ``key``: ``--key on the command line``,
        else the last config file that sets it, else None."""
        if key in self.overrides:
            return f"--{key} on the command line"
        for path in reversed(self.config_files):
            try:
                content = ConfigParser.load_config_file(path)
            except (OSError, ValueError):
                continue
            if isinstance(content, dict) and content.get(key) is not None:
                return path
        return None

    def record(self) -> dict[str, Any]:
        """The config files (absolute paths) and overrides, for a trained task's record."""
        return {"config_files": [os.path.abspath(f) for f in self.config_files], "overrides": dict(self.overrides)}


def parse_command_line(argv: Sequence[str]) -> CommandLine | None:
    """The :class:`CommandLine` of ``argv`` (``sys.argv`` form) when it is ``python -m monai.bundle
    ...``, else None."""
    argv = list(argv)
    if not argv or not argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py"):
        return None
    files: list[str] = []
    overrides: dict[str, Any] = {}
    run_args: dict[str, Any] = {}
    args, i = argv[1:], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            key, has_value, value = arg[2:].partition("=")
            if not has_value and i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            key = config_id(key)
            if key == "config_file":
                parsed = _literal(value)
                files = [parsed] if isinstance(parsed, str) else [str(p) for p in parsed]
            elif key in _RUN_ARGS:
                run_args[key] = value
            else:
                overrides[key] = _literal(value)
        i += 1
    return CommandLine(files, overrides, run_args)


@functools.lru_cache(maxsize=1)
def command_line() -> CommandLine | None:
    """This process's ``python -m monai.bundle`` command line, parsed once (None when the process was
    started otherwise: a ``ConfigWorkflow`` in Python, Slicer, a test)."""
    return parse_command_line(sys.argv)


def bundle_root(argv: Sequence[str] | None = None) -> str:
    """The bundle folder: the parent of the ``configs`` folder holding the first ``--config_file``
    of the command line (as MONAI's own rule for ``configs/metadata.json``), else the current
    folder if it is a bundle, else ``./bundle``. In-process, give ``bundle_root`` as an override."""
    cli = command_line() if argv is None else parse_command_line(["monai/bundle/__main__.py", *argv])
    if cli is not None and cli.config_files:
        folder = os.path.dirname(os.path.abspath(cli.config_files[0]))
        return os.path.dirname(folder) if os.path.basename(folder) == "configs" else folder
    if os.path.isfile(os.path.join("configs", "metadata.json")):
        return os.path.abspath(".")
    return os.path.abspath("bundle")


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu`` (override with ``--device cpu`` / ``--device cuda:1``)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------- the start of every run
def start(
    seed: int | None = None,
    distributed: Any = False,
    cudnn_benchmark: Any = False,
    prepare_data: Callable[[], Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """The first step of every run id's ``initialize``.

    In order: the user-error hook (a mistake ends the output with ``error: ...``), the command
    line's override ids checked against the config files (``python -m monai.bundle`` only), the
    ``settings`` (the configs' ``checked_settings``) validated against their declared types and ranges
    (:func:`~monai_softcam.settings.check_settings`: a wrong value stops the run naming its key), the
    process group joined (``distributed``, under torchrun), ``prepare_data`` called on the main
    process while the others wait, then ``set_determinism(seed)`` and cuDNN's benchmark mode
    (after ``set_determinism``, which turns it off). ``distributed`` and ``cudnn_benchmark`` are
    yes/no values (the command line's ``false`` is no)."""
    install_error_hook()
    cli = command_line()
    if cli is not None and cli.config_files and cli.overrides:
        check_overrides(cli.config_files, cli.overrides, tracking=cli.run_args.get("tracking"))
    check_settings(settings)
    if as_flag(distributed, "distributed"):
        init_distributed()
    if prepare_data is not None:
        if is_main_process():
            prepare_data()
        barrier()  # the other processes wait for the data (nothing to wait for in one process)
    if seed is not None:
        set_determinism(seed=int(seed))
    torch.backends.cudnn.benchmark = as_flag(cudnn_benchmark, "cudnn_benchmark")


def finish(summary_writer: Any = None) -> None:
    """The last step of a run (``finalize``): close the TensorBoard writer, release the run's folders
    (:func:`~monai_softcam.folders.claim_folder`), leave the process group."""
    if summary_writer is not None:
        summary_writer.close()
    release_folders()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def init_distributed() -> None:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPUs) and select this process's GPU."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def place_network(network: torch.nn.Module, device: torch.device | str, channels_last: bool = False) -> torch.nn.Module:
    """Move ``network`` to ``device``; with ``channels_last``, also to the channels-last memory
    format (``channels_last_3d`` for 3D networks). Same numbers up to rounding; often faster
    (``benchmarks/training_memory.py`` measures it). ``channels_last`` is the bundle key of that
    name, read by :func:`~monai_softcam.utils.as_flag` (the command line's ``false`` is a string)."""
    network = network.to(device)
    if as_flag(channels_last, "channels_last"):
        dims = next((m.weight.dim() - 2 for m in network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)), 2)
        network = network.to(memory_format=torch.channels_last_3d if dims == 3 else torch.channels_last)
    return network


# ---------------------------------------------------------------------- override ids
def check_overrides(config_files: Sequence[str], overrides: Mapping[str, Any], tracking: Any = None) -> None:
    """Raise a ConfigError (a ValueError) for override ids that name no key of the merged configs (a typo would
    otherwise be added silently and ignored), suggesting the closest existing keys. With ``tracking``
    (``run``'s ``--tracking mlflow`` or a settings file), the top-level keys MONAI's tracking settings
    add (``tracking_uri``, ``experiment_name``, ``run_name``, ...) are known too."""
    parser = ConfigParser()
    parser.read_config(f=list(config_files))
    known = _all_ids(parser.get())
    if tracking:
        settings = DEFAULT_EXP_MGMT_SETTINGS.get(str(tracking)) if isinstance(tracking, str) else tracking
        if settings is None and isinstance(tracking, str) and os.path.isfile(tracking):
            settings = ConfigParser.load_config_files(tracking)
        known |= _all_ids((settings or {}).get("configs", {}))
    unknown = []
    for key in overrides:
        parent = key.rpartition("#")[0]
        # a new argument of a component (`_target_`) is allowed: the callee's signature checks its name
        if key in known or (
            parent in known and isinstance(parser.get(parent), dict) and "_target_" in parser.get(parent)
        ):
            continue
        unknown.append(key)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hints.append(f"--{key}" + (f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""))
        raise ConfigError(
            f"unknown config key(s) in the command line: {'; '.join(hints)}. "
            f"Config files: {', '.join(config_files)}"
        )


def _all_ids(node: Any, prefix: str = "") -> set[str]:
    ids = set()
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        return ids
    for key, value in items:
        ident = f"{prefix}#{key}" if prefix else str(key)
        ids.add(ident)
        ids |= _all_ids(value, ident)
    return ids


# ---------------------------------------------------------------------- the task
def training_task(
    task: Task,
    data: Sequence[dict[str, Any]],
    load: Callable,
    record: Mapping[str, Any] | None = None,
    resume: Any = False,
    ckpt_dir: str | None = None,
) -> Task:
    """The task as trained (what ``task.json`` holds): ``task`` with ``auto`` intensity statistics
    measured on the training ``data`` (as ``load`` reads them), and the record of the run: the
    settings that shaped the model (``record``) and, when started from the command line, its
    config files and overrides.

    Resuming (``resume``) a run whose ``<ckpt_dir>/task.json`` exists continues *that* task: every task key
    of ``task`` must agree with it (``auto`` statistics agree with any), else a TaskError names the key, both
    values and where the new one was set; the saved task (its measured statistics, its record) is returned."""
    saved_file = os.path.join(ckpt_dir, TASK_FILE) if ckpt_dir else None
    if as_flag(resume, "resume") and saved_file and os.path.isfile(saved_file):
        saved = Task.read(saved_file)
        cli = command_line()
        explicit = {
            key: (getattr(task, key), (cli.source_of(key) if cli is not None else None) or "the configs")
            for key in TASK_KEYS
        }
        saved.check(explicit, f"{saved_file}, the task of the run being resumed")
        return saved
    task = task.with_measured_intensity(data, load)
    cli = command_line()
    return task.with_record({**(cli.record() if cli is not None else {}), "settings": dict(record or {})})


def trained_task(ckpt_dir: str, **expected: Any) -> Task:
    """The task of the model in ``ckpt_dir`` (``<ckpt_dir>/task.json``), checked against ``expected``.

    ``expected`` holds the task keys as the configs give them: None is "as trained"; any other value
    must agree with the saved one, else a TaskError names the key, both values and where the value
    was set (the command line or a config file, when the process was started from one). Without a
    task file, the expected values must name every task key (a model trained before tasks were
    saved); otherwise the error says to train first."""
    unknown = set(expected) - set(TASK_KEYS)
    if unknown:
        raise ConfigError(f"trained_task: {sorted(unknown)} are not task keys ({', '.join(TASK_KEYS)})")
    cli = command_line()
    explicit = {
        key: (value, (cli.source_of(key) if cli is not None else None) or "a config file or override")
        for key, value in expected.items()
        if value is not None
    }
    return load_task(ckpt_dir, explicit)


# ---------------------------------------------------------------------- data and settings
def prepare_dataset(dataset_dir: str, demo_dir: str, demo_config: Any = None) -> str:
    """Generate the built-in demo data (a :class:`~monai_softcam.data.demo.DemoDataConfig` or its keyword
    dict) when ``dataset_dir`` is ``demo_dir``, reusing it if already there; any other
    ``dataset_dir`` must exist (a typo never silently trains on generated data)."""
    if demo_config is not None and os.path.abspath(dataset_dir) == os.path.abspath(demo_dir):
        config = demo_config if isinstance(demo_config, DemoDataConfig) else DemoDataConfig(**demo_config)
        ensure_demo_dataset(dataset_dir, config)
        return dataset_dir
    return require_dir(dataset_dir)


def required(key: str, what: str) -> None:
    """Stand-in value of a setting a preset cannot guess: raises, naming the key, unless overridden."""
    raise ConfigError(f"set {key}: {what} (e.g. --{key} /path/to/it on the command line)")


def require_dir(path: str, what: str = "dataset_dir") -> str:
    """Return ``path`` if it is an existing folder, else raise a MissingInputError (a FileNotFoundError) naming the key."""
    if not os.path.isdir(path):
        raise MissingInputError(f"{what} does not exist or is not a folder: {path} (set it with --{what} /path)")
    return path
