"""Helpers that the bundle configs in ``bundle/configs`` call (paths, device, override checks)."""

from __future__ import annotations

import ast
import difflib
import logging
import os
import sys
from typing import Any, Sequence

import torch
from monai.bundle import ConfigParser

from .data.demo import DemoDataConfig, ensure_demo_dataset
from .utils import ConfigError, MissingInputError, as_flag

__all__ = [
    "barrier",
    "bundle_cli",
    "bundle_root",
    "check_cli_overrides",
    "check_overrides",
    "config_id",
    "default_device",
    "destroy_distributed",
    "init_distributed",
    "place_network",
    "prepare_dataset",
    "require_dir",
    "required",
]

logger = logging.getLogger("monai_softcam")

#: arguments of ``python -m monai.bundle run`` that are not config overrides
_RUN_ARGS = {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
             "workflow_name", "workflow_type"}  # fmt: skip


def config_id(key: str) -> str:
    """A config id as MONAI reads it from the command line (``a::b`` is ``a#b``)."""
    return key.replace("::", "#")


def _split_cli(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(config files, {override id: raw value}) from a ``monai.bundle run`` command line."""
    files: list[str] = []
    overrides: dict[str, str] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            key, has_value, value = arg[2:].partition("=")
            if not has_value and i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            key = config_id(key)
            if key == "config_file":
                try:
                    parsed = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    parsed = value
                files = [parsed] if isinstance(parsed, str) else [str(p) for p in parsed]
            elif key not in _RUN_ARGS:
                overrides[key] = value
        i += 1
    return files, overrides


def bundle_root(argv: Sequence[str] | None = None) -> str:
    """The bundle folder: the parent of the ``configs`` folder holding the first ``--config_file``
    of the command line (as MONAI's own rule for ``configs/metadata.json``), else the current
    folder if it is a bundle, else ``./bundle``."""
    files, _ = _split_cli(sys.argv[1:] if argv is None else argv)
    if files:
        folder = os.path.dirname(os.path.abspath(files[0]))
        return os.path.dirname(folder) if os.path.basename(folder) == "configs" else folder
    if os.path.isfile(os.path.join("configs", "metadata.json")):
        return os.path.abspath(".")
    return os.path.abspath("bundle")


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu`` (override with ``--device cpu`` / ``--device cuda:1``)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def init_distributed(device: torch.device | str) -> None:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPUs) and select this process's GPU."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(device)


def barrier() -> None:
    """Wait for every process of the group; nothing to wait for without one (a single process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def destroy_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


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


def check_overrides(config_files: Sequence[str], overrides: dict[str, Any]) -> None:
    """Raise a ConfigError (a ValueError) for override ids that name no key of the merged configs (a typo would
    otherwise be added silently and ignored), suggesting the closest existing keys."""
    parser = ConfigParser()
    parser.read_config(f=list(config_files))
    known = _all_ids(parser.get())
    unknown = []
    for key in overrides:
        parent = key.rpartition("#")[0]
        # a new argument of a component (`_target_`) is allowed: the callee's signature checks its name
        if key in known or (parent in known and isinstance(parser.get(parent), dict) and "_target_" in parser.get(parent)):
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


def bundle_cli(argv: Sequence[str] | None = None) -> tuple[list[str], dict[str, Any], set[str]] | None:
    """``(config files, overrides, the bundle's own config files)`` of a ``python -m monai.bundle``
    command line, or None when this process was not started from one. Override values are read as
    Python literals where they are (``[64,64]``, ``3``), as MONAI's command line does; the bundle's
    own configs are the files in the folder of the first one (``bundle/configs``)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv or not argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py"):
        return None
    files, raw = _split_cli(argv[1:])
    overrides: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    own_dir = os.path.dirname(os.path.abspath(files[0])) if files else ""
    own = {os.path.abspath(f) for f in files if os.path.dirname(os.path.abspath(f)) == own_dir}
    return files, overrides, own


def check_cli_overrides(argv: Sequence[str] | None = None) -> bool:
    """:func:`check_overrides` for the current ``python -m monai.bundle run ...`` command line.

    Called from the configs' ``initialize`` step; does nothing when the workflow was not started
    from that command line (e.g. from Python, where overrides are checked by the caller).
    """
    cli = bundle_cli(argv)
    if cli is None:
        return False
    files, overrides, _ = cli
    if files and overrides:
        check_overrides(files, overrides)
    return True


def prepare_dataset(dataset_dir: str, demo_dir: str, demo_config: Any = None) -> str:
    """Generate the built-in demo data (a :class:`~monai_softcam.data.DemoDataConfig` or its keyword
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
