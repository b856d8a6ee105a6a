"""One run per folder, and outputs that appear whole or not at all.

Every bundle run id that writes claims its output folder first (:func:`claim_folder`, the first step of its
``run`` list): a lock file names the run that holds the folder, and an earlier run's results there are refused
unless the user resumes or replaces them. A run whose outputs are many files (inference: predictions, regions,
the skipped list and a folder of maps per input) writes them into a staging folder inside the output folder
(:func:`staging_folder`, named ``incomplete-<run>-<pid>``) and moves them into place only when the run has
completed (:func:`commit_outputs`), so that the folder never mixes two runs' files and never holds a run's
half.

* A run that fails (an error, Ctrl-C) removes its staging folder when it exits: the folder is as before.
* A run that is killed (``kill -9``, power loss) leaves the folder as before plus its staging folder, whose
  name says what it is; the next run into the folder takes over the dead run's lock and removes it.
* The commit is a handful of renames within one folder (one per result: ``predictions.csv``, ``maps``, ...),
  each atomic; only a kill in the milliseconds between two of them leaves a mix, and then the staging folder
  is still there to say so.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import socket
import time
from typing import Any, Sequence

from .utils import ConfigError, as_flag, is_main_process, pid_alive

__all__ = ["LOCK_FILE", "STAGING_PREFIX", "claim_folder", "commit_outputs", "release_folders", "staging_folder"]

logger = logging.getLogger("monai_softcam")

#: the lock file a run keeps in the folder it writes (its host, process id, run and start time)
LOCK_FILE = ".softcam_run.lock"
#: how the name of a staging folder starts (``incomplete-<run>-<pid>``)
STAGING_PREFIX = "incomplete-"

_HELD: list[str] = []  # the lock files this process holds
_MADE: list[str] = []  # the folders a claim made (removed again if the run left them empty)
_STAGED: dict[str, tuple[str, str, list[str]]] = {}  # staging folder -> (folder, run, results to replace)


def staging_folder(folder: str, run: str) -> str:
    """Where ``run`` writes its outputs until they are complete: ``<folder>/incomplete-<run>-<pid>``."""
    return os.path.join(os.path.abspath(folder), f"{STAGING_PREFIX}{run}-{os.getpid()}")


def claim_folder(
    folder: str | None,
    run: str,
    results: Sequence[str] = (),
    resume: Any = False,
    replace: Any = False,
    staging: str | None = None,
) -> None:
    """The one policy of every run id that writes: one run per folder, and no run over another's results. The
    first step of the ``run`` list of each (training: ``ckpt_dir``, its model files as results; inference:
    ``output_dir``, its predictions, regions, skipped list and maps, staged; evaluate and explain_eval: their
    output folder, no results, as a re-run replaces each report whole, atomically; ``run tune``: none, its
    workers share one study).

    * A lock file (:data:`LOCK_FILE`) in ``folder`` refuses a second concurrent run, naming the other one
      (host, process id, run id, start); the lock of a run that died on this host (``kill -9``) is taken over,
      and that run's staging folder removed. The lock is removed when the run ends (``finish``, or at exit),
      with the folder if the claim made it and the run left it empty (a run that failed leaves no empty
      output folder behind).
    * ``results`` (names in ``folder``) are the run's outputs: if any is there already, the run is refused
      unless it resumes them (``resume``, training) or replaces them (``replace``), so that a folder never
      mixes two runs' files. Replaced results are removed all together: at once, or with ``staging`` when the
      new ones are committed (:func:`commit_outputs`), so that a failed run leaves the earlier results.
    * ``staging`` (:func:`staging_folder`): made here; the run writes its results there, and
      :func:`commit_outputs` moves them into ``folder``. If the run ends without committing, it is removed.

    Only the main process claims (under ``torch.distributed`` the others write nothing); ``folder=None`` claims
    nothing (``run tune``: its workers share one study by design). A ConfigError names the folder, what holds
    it and what to do."""
    if folder is None or not is_main_process():
        return
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder)
        except OSError as err:
            raise ConfigError(
                f"cannot make the folder {folder} ({err.strerror}): give a folder you can write to"
            ) from None
        _MADE.append(folder)
    _lock(folder, run)
    present = sorted(name for name in results if os.path.exists(os.path.join(folder, name)))
    if present and not as_flag(resume, "resume"):
        if not as_flag(replace, "replace"):
            release_folders()
            raise ConfigError(
                f"{folder} already holds the results of an earlier {run} run ({', '.join(present)}): "
                f"{'resume it with --resume true, ' if run == 'training' else ''}replace them with --replace "
                "true, or give another folder"
            )
        if staging is None:
            _remove(folder, present)
            logger.info("replaced the earlier %s results in %s: %s", run, folder, ", ".join(present))
    if staging is not None:
        os.makedirs(staging)
        _STAGED[staging] = (folder, run, list(results) if present else [])


def commit_outputs(staging: str) -> None:
    """Move the outputs a run wrote into ``staging`` (:func:`claim_folder`) into place: the earlier results it
    replaces are removed, the new ones renamed into the folder, and the staging folder removed. The last step of
    the run's ``run`` list, after the engine has written every output."""
    if staging not in _STAGED:
        return  # not the main process, or nothing was claimed
    folder, run, replaced = _STAGED.pop(staging)
    old = [name for name in replaced if os.path.exists(os.path.join(folder, name))]
    trash = os.path.join(staging, ".replaced")
    if old:
        os.makedirs(trash)
        for name in old:  # out of the way first: the new results are then renamed in
            os.replace(os.path.join(folder, name), os.path.join(trash, name))
    names = sorted(name for name in os.listdir(staging) if name != ".replaced")
    for name in names:
        os.replace(os.path.join(staging, name), os.path.join(folder, name))
    shutil.rmtree(staging)
    logger.info(
        "%s results in %s: %s%s", run, folder, ", ".join(names) or "none", f" (replacing {', '.join(old)})" * bool(old)
    )


def _remove(folder: str, names: Sequence[str]) -> None:
    for name in names:
        path = os.path.join(folder, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _lock(folder: str, run: str) -> None:
    path = os.path.join(folder, LOCK_FILE)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "run": run, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read_lock(path)
            if other.get("pid") == os.getpid() and other.get("host") == me["host"]:
                return  # this process holds it already (a second run id in one process)
            if other.get("host") == me["host"] and not pid_alive(int(other.get("pid", 0) or 0)):
                logger.warning("%s: taking over the lock of a %s run that ended without releasing it", folder, other)
                _remove_staging_of(folder, int(other.get("pid", 0) or 0))
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            raise ConfigError(
                f"{folder} is in use by another {other.get('run', 'softcam')} run (process {other.get('pid')} on "
                f"{other.get('host')}, started {other.get('started')}): wait for it to end or give another folder "
                f"(if that run is gone, remove {path})"
            ) from None
        except OSError as err:
            raise ConfigError(f"cannot write in {folder} ({err.strerror}): give a folder you can write to") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        _HELD.append(path)
        if len(_HELD) == 1:
            atexit.register(release_folders)
        return
    raise ConfigError(f"cannot take the lock {path}: another run keeps taking it")


def _remove_staging_of(folder: str, pid: int) -> None:
    """Remove the staging folders a dead run (``pid``, this host) left in ``folder``."""
    for name in os.listdir(folder):
        if name.startswith(STAGING_PREFIX) and name.endswith(f"-{pid}"):
            logger.warning("%s: removing %s, the incomplete outputs of that run", folder, name)
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def _read_lock(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        return content if isinstance(content, dict) else {}
    except (OSError, ValueError):
        return {}


def release_folders() -> None:
    """Remove the staging folders this process did not commit (a failed run's partial outputs), the lock files
    it holds, and the folders a claim made that the run left empty (``finish`` and the exit of the process
    call it)."""
    while _STAGED:
        staging, (folder, run, _) = _STAGED.popitem()
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
            logger.warning(
                "the %s run did not complete: its partial outputs were removed, %s is as before", run, folder
            )
    while _HELD:
        path = _HELD.pop()
        if _read_lock(path).get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    while _MADE:
        with contextlib.suppress(OSError):  # not empty: the run's results
            os.rmdir(_MADE.pop())
