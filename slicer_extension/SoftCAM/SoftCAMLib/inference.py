"""Run a bundle's own inference on one volume and bring the evidence maps back onto it.

Two ways, same result (the same command, same configs, same files in and out):

* ``"subprocess"`` (the default in Slicer): ``python -m monai.bundle run inference`` in a child
  process. Slicer's GUI stays responsive, *Cancel* stops the process at once, and a crash or an
  out-of-memory in PyTorch cannot take Slicer down. The child may be another Python (e.g. a
  virtual environment that has torch and monai_softcam) than Slicer's own. Slicer's
  ``PythonSlicer`` is a launcher (CTKAppLauncher) that runs the real Python as *its* child and
  forwards no signal, so the run gets a process group of its own and *Cancel* ends the whole group
  (:func:`end_process_tree`), then removes the run's folder once no process of it is left.
* ``"inprocess"``: ``monai.bundle.run`` in this Python: no process start-up, but it blocks the
  caller until done and cannot be cancelled. For scripts and notebooks.

The volume goes to the bundle as a file (:func:`~.volume.write_exchange_file`), the bundle writes
``predictions.csv`` and one NIfTI map per class on that file's voxel grid, and :class:`InferenceJob`
reads them back as (K, J, I) arrays carrying the source volume's IJK-to-RAS matrix.
"""

from __future__ import annotations

import csv
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .bundle import BundleInfo, use_bundle_code
from .dependencies import package_root
from .volume import (
    Volume,
    VolumeError,
    map_on_voxels,
    read_map_grid,
    safe_name,
    write_exchange_file,
    write_probabilities,
    write_volume,
)

__all__ = [
    "InferenceError",
    "InferenceJob",
    "InferenceResult",
    "child_process_options",
    "end_process_tree",
    "export_result",
    "process_tree_alive",
    "run_inference",
]

MODES = ("subprocess", "inprocess")
CANCEL_GRACE_SECONDS = 3.0  # after SIGTERM, the run's processes have this long to exit before SIGKILL
CANCEL_WAIT_SECONDS = 0.5  # cancel() returns within about this long; poll() finishes a slower stop


class InferenceError(RuntimeError):
    """The bundle's inference failed or was cancelled; the message ends with the log's last lines."""


@dataclass
class InferenceResult:
    """Class probabilities and the evidence map of every class on the source volume's grid."""

    volume_name: str
    class_names: list[str]
    probabilities: dict[str, float]
    logits: dict[str, float]
    maps: dict[str, np.ndarray]  # class -> (K, J, I) float32, raw signed evidence (logit units)
    ijk_to_ras: np.ndarray  # the source volume's, shared by every map
    map_affines: dict[str, np.ndarray] = field(default_factory=dict)  # as stored in the bundle's files
    seconds: float = 0.0
    # class -> the map as the bundle saved it, on its own grid (e.g. 12 x 12 cells), in (I, J[, K]) index order
    grid_maps: dict[str, np.ndarray] = field(default_factory=dict)
    # map index (I, J[, K]) -> the volume's voxel index (I, J[, K]), 4x4; None when not read from files
    map_to_input_index: np.ndarray | None = None

    @property
    def predicted_class(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)


class InferenceJob:
    """One inference run of ``bundle`` on ``volume``.

    ``start()`` then ``poll()`` until it returns True (a GUI calls it from a timer), then
    ``result()``; or simply ``wait()``. ``cancel()`` stops a subprocess run: every process of it
    (its process group), and the job is over (``poll()`` True, state ``"cancelled"``) only once
    none is left, so a new run cannot start while the cancelled one still holds the GPU.

    Args:
        bundle: the bundle (:meth:`BundleInfo.read`).
        volume: the volume; refused with a :class:`VolumeError` before anything runs if it does
            not fit the bundle (2D/3D, channels).
        mode: ``"subprocess"`` or ``"inprocess"`` (see the module docstring).
        device: ``"auto"`` (GPU if present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        python: the Python that runs a subprocess (default: this one).
        progress: called with a short message whenever the stage changes.
    """

    def __init__(
        self,
        bundle: BundleInfo,
        volume: Volume,
        mode: str = "subprocess",
        device: str = "auto",
        python: str | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        volume.check_fits(bundle.spatial_dims, bundle.in_channels)
        self.bundle, self.volume, self.mode, self.device = bundle, volume, mode, str(device or "auto")
        self.python = python or sys.executable
        self._progress = progress or (lambda message: None)
        self.state = "created"  # -> running -> done | failed | cancelled
        self.message = ""
        self._process: subprocess.Popen | None = None
        self._stopping: float | None = None  # time.monotonic() of the first cancel()
        self._killed = False  # SIGKILL (or taskkill /F) sent
        self._work: str | None = None
        self._result: InferenceResult | None = None
        self._error: str = ""
        self._start = 0.0

    # ------------------------------------------------------------------ lifecycle
    def _say(self, message: str) -> None:
        self.message = message
        self._progress(message)

    @property
    def log_path(self) -> str:
        return os.path.join(self._work or "", "inference.log")

    def _overrides(self, input_path: str) -> dict[str, str]:
        overrides = {
            "bundle_root": self.bundle.path,
            "input_path": input_path,
            "output_dir": os.path.join(self._work, "out"),
        }
        if self.device != "auto":
            overrides["device"] = f"$torch.device('{self.device}')"
        return overrides

    def start(self) -> "InferenceJob":
        if self.state != "created":
            raise RuntimeError("an InferenceJob runs once; make a new one")
        self._start = time.time()
        self._work = tempfile.mkdtemp(prefix="softcam_")
        self.state = "running"
        self._say("writing the input")
        try:
            input_path = write_exchange_file(self.volume, self._work, self.bundle.spatial_dims)
        except Exception as err:
            self._fail(f"cannot write volume '{self.volume.name}' for the bundle: {err}")
            return self
        overrides = self._overrides(input_path)
        if self.mode == "subprocess":
            command = [
                self.python,
                "-m",
                "monai.bundle",
                "run",
                "inference",
                "--config_file",
                repr(self.bundle.config_files),
            ]
            for key, value in overrides.items():
                command += [f"--{key}", value]
            self._say("running the model (subprocess)")
            with open(self.log_path, "w") as log:
                self._process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._work,
                    **child_process_options(self.bundle.code_path),
                )
            if os.name != "nt":
                _own_group(self._process)  # noted while the process cannot have been reaped
            return self
        self._say("running the model")
        try:
            self._run_inprocess(overrides)
        except Exception as err:
            self._fail(f"inference failed: {_root_cause(err)}")
            return self
        self._collect()
        return self

    def _run_inprocess(self, overrides: dict[str, str]) -> None:
        import monai.bundle  # optional: installed on first use (Resources/requirements.txt)

        use_bundle_code(self.bundle.path)
        parsed = dict(overrides)
        if "device" in parsed:
            import torch  # optional: installed on first use (Resources/requirements.txt)

            parsed["device"] = torch.device(self.device)
        monai.bundle.run("inference", config_file=self.bundle.config_files, **parsed)

    def poll(self) -> bool:
        """True once the job is over (done, failed or cancelled)."""
        if self.state != "running":
            return True
        if self._process is None:
            return False
        if self._stopping is not None:
            return self._poll_stop()
        code = self._process.poll()
        if code is None:
            last = _last_line(self.log_path)
            if last:
                self.message = f"running the model ({time.time() - self._start:.0f} s): {last[:120]}"
            return False
        self._process = None
        if code != 0:
            self._fail(f"inference failed (exit status {code})")
        else:
            self._collect()
        return True

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> InferenceResult:
        """Block until the job is over and return :meth:`result`."""
        if self.state == "created":
            self.start()
        deadline = None if timeout is None else time.time() + timeout
        while not self.poll():
            if deadline is not None and time.time() > deadline:
                self.cancel(block=True)
                raise InferenceError(f"inference took more than {timeout} s and was cancelled")
            time.sleep(interval)
        return self.result()

    def cancel(self, block: bool = False) -> None:
        """Stop a running subprocess and every process it started (an in-process run cannot be
        interrupted): SIGTERM to its process group, SIGKILL after :data:`CANCEL_GRACE_SECONDS`
        (Windows: ``taskkill /T /F``). The run's folder is removed only once no process of the
        group is left (it would otherwise go on writing there).

        Returns as soon as the processes are gone, at most after :data:`CANCEL_WAIT_SECONDS`
        (the GUI stays responsive); if some are still exiting, the job stays ``"running"`` and
        ``poll()`` finishes the stop (a timer keeps calling it). ``block=True`` waits until they
        are gone. Calling it again while the processes exit kills them at once."""
        if self.state != "running" or self._process is None:
            return
        if self._stopping is None:
            self._stopping = time.monotonic()
            self._error = "cancelled by the user"
            end_process_tree(self._process, kill=False)
            self._say("cancelling: stopping the inference processes")  # (a GUI may process events here)
        elif not self._killed:
            self._killed = True
            end_process_tree(self._process, kill=True)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while not self._poll_stop():
            if not block and time.monotonic() > deadline:
                return
            time.sleep(0.02)

    def _poll_stop(self) -> bool:
        """After cancel(): True (state cancelled, folder removed) once no process of the run is
        left; SIGKILL once the grace period is over."""
        if self.state != "running":  # finished meanwhile (a nested cancel() from the GUI's event loop)
            return True
        if self._process is not None and process_tree_alive(self._process):
            if not self._killed and time.monotonic() - self._stopping > CANCEL_GRACE_SECONDS:
                self._killed = True
                end_process_tree(self._process, kill=True)
                self._say("cancelling: killing the inference processes")
            return False
        self._process = None
        self.state = "cancelled"
        self._cleanup()
        self._say("cancelled")
        return True

    def result(self) -> InferenceResult:
        if self.state == "done" and self._result is not None:
            return self._result
        if self.state in ("failed", "cancelled"):
            raise InferenceError(self._error)
        raise InferenceError(f"the job is {self.state}, not done")

    # ------------------------------------------------------------------ results
    def _fail(self, what: str) -> None:
        tail = _tail(self.log_path, 15)
        self._error = what + (f"\n--- last lines of the log ---\n{tail}" if tail else "")
        self.state = "failed"
        self._say(what)
        self._cleanup(keep_log=True)

    def _collect(self) -> None:
        self._say("reading the maps")
        try:
            self._result = self._read_outputs(os.path.join(self._work, "out"))
        except (OSError, ValueError) as err:
            self._fail(f"cannot read the bundle's output: {err}")
            return
        self._result.seconds = time.time() - self._start
        self.state = "done"
        self._say(f"done in {self._result.seconds:.1f} s")
        self._cleanup()

    def _read_outputs(self, out: str) -> InferenceResult:
        names = self.bundle.class_names
        table = os.path.join(out, "predictions.csv")
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
        if len(rows) != 1:
            raise VolumeError(f"{table}: expected one row, found {len(rows)}")
        row = rows[0]
        maps, affines, grid_maps = {}, {}, {}
        to_input = None
        for name in names:
            found = glob.glob(os.path.join(row["evidence_maps"], f"*_evidence_{name}.nii.gz"))
            if len(found) != 1:
                raise VolumeError(f"{row['evidence_maps']}: no single evidence map for class '{name}'")
            grid_maps[name], to_input, affines[name] = read_map_grid(found[0], self.volume)  # each file read once
            maps[name] = map_on_voxels(grid_maps[name], to_input, self.volume)
        return InferenceResult(
            volume_name=self.volume.name,
            class_names=list(names),
            probabilities={n: float(row[f"prob_{n}"]) for n in names},
            logits={n: float(row[f"logit_{n}"]) for n in names},
            maps=maps,
            ijk_to_ras=self.volume.ijk_to_ras.copy(),
            map_affines=affines,
            grid_maps=grid_maps,
            map_to_input_index=to_input,
        )

    def _cleanup(self, keep_log: bool = False) -> None:
        if self._work and os.path.isdir(self._work) and not keep_log:
            shutil.rmtree(self._work, ignore_errors=True)


def child_process_options(code_path: str | None = None) -> dict:
    """``subprocess.Popen`` keyword arguments for the inference process: an environment whose
    PYTHONPATH starts with ``code_path`` (a Model Zoo bundle's folder, for its ``scripts/``) and the
    folder holding monai_softcam (an installed extension keeps it beside
    the module, where Slicer's own Python finds it but a child Python would not), a process group
    of its own (POSIX: a new session, whose group id is the child's pid; Windows:
    CREATE_NEW_PROCESS_GROUP) for :func:`end_process_tree`, and, on Windows, a
    hidden console window, as Slicer's slicer.util.launchConsoleProcess does (STARTUPINFO with
    STARTF_USESHOWWINDOW and SW_HIDE)."""
    env = dict(os.environ)
    first = [p for p in (code_path, package_root()) if p is not None]
    if first:
        env["PYTHONPATH"] = os.pathsep.join(first + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    options: dict = {"env": env}
    if os.name == "nt":
        info = subprocess.STARTUPINFO()
        info.dwFlags = 1  # STARTF_USESHOWWINDOW
        info.wShowWindow = 0  # SW_HIDE
        options["startupinfo"] = info
        options["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)
    else:
        options["start_new_session"] = True  # setsid(): process group id = the child's pid
    return options


def _own_group(process: subprocess.Popen) -> bool:
    """Whether ``process`` leads a process group of its own (started with child_process_options),
    so that signalling that group cannot reach this process. Looked up once, while ``process``
    is not reaped (InferenceJob.start does it at once), and kept on the Popen object."""
    own = getattr(process, "_softcam_own_group", None)
    if own is None:
        try:
            own = os.getpgid(process.pid) == process.pid != os.getpgrp()
        except OSError:  # reaped before anyone looked: its group id is no longer known to be its pid
            return False
        process._softcam_own_group = own
    return own


def end_process_tree(process: subprocess.Popen, kill: bool = False) -> None:
    """Ask every process of ``process``'s group to stop (POSIX: SIGTERM, or SIGKILL with ``kill``).
    ``process`` may be a launcher (Slicer's PythonSlicer) whose child does the work: a signal to
    the launcher alone would leave the child running. On Windows ``taskkill /T /F`` ends the tree
    while its root is alive (once the launcher is gone its child is out of /T's reach), with
    CTRL_BREAK_EVENT to the process group, then TerminateProcess, if taskkill fails."""
    if os.name == "nt":
        if process.poll() is not None:
            return
        try:
            done = subprocess.run(
                ["taskkill", "/PID", str(process.pid), "/T", "/F"],
                capture_output=True,
                timeout=30,
                **{k: v for k, v in child_process_options().items() if k == "startupinfo"},
            )
            if done.returncode == 0:
                return
        except (OSError, subprocess.SubprocessError):
            pass
        try:
            if not kill:
                process.send_signal(signal.CTRL_BREAK_EVENT)  # reaches the group only on a shared console
                return
        except (OSError, ValueError):
            pass
        process.kill()
        return
    if process.poll() is not None and not _group_alive(process.pid):
        return
    if not _own_group(process):  # not started by child_process_options: never signal our own group
        if kill:
            process.kill()
        else:
            process.terminate()
        return
    try:
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        pass


def process_tree_alive(process: subprocess.Popen) -> bool:
    """Whether any process of ``process``'s group is still running (``process`` itself is reaped
    here). Windows: whether ``process`` is (after ``taskkill /T /F`` its tree is gone with it)."""
    running = process.poll() is None
    if os.name == "nt" or not _own_group(process):
        return running
    return running or _group_alive(process.pid)


def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live member. A member that has exited but was not yet
    reaped (a zombie: an orphan whose new parent does not reap, as in some containers) runs no
    more and holds no memory: on Linux, where /proc tells, such a group counts as gone."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc/self/task"):
        return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


def run_inference(bundle: BundleInfo, volume: Volume, mode: str = "inprocess", **kwargs) -> InferenceResult:
    """Run one :class:`InferenceJob` to the end (blocking) and return its result."""
    return InferenceJob(bundle, volume, mode=mode, **kwargs).wait()


def export_result(result: InferenceResult, folder: str, file_format: str = "nrrd") -> list[str]:
    """Write every class's map (``<volume>_evidence_<class>.nrrd`` or ``.nii.gz``, with the source
    volume's geometry) and ``<volume>_probabilities.csv``; returns the paths written."""
    if file_format not in ("nrrd", "nii.gz"):
        raise ValueError(f"file_format must be 'nrrd' or 'nii.gz', got {file_format!r}")
    stem = safe_name(result.volume_name)
    paths = [
        write_volume(
            os.path.join(folder, f"{stem}_evidence_{name}.{file_format}"), result.maps[name], result.ijk_to_ras
        )
        for name in result.class_names
    ]
    row = {"volume": result.volume_name}
    row.update({f"prob_{n}": f"{result.probabilities[n]:.6f}" for n in result.class_names})
    row["predicted_class"] = result.predicted_class
    paths.append(write_probabilities(os.path.join(folder, f"{stem}_probabilities.csv"), [row]))
    return paths


def _root_cause(err: BaseException) -> BaseException:
    """The innermost exception (MONAI wraps errors of config expressions in its own)."""
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    return err


def _tail(path: str, lines: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


def _last_line(path: str) -> str:
    text = _tail(path, 3)
    parts = [p.strip() for p in text.replace("\r", "\n").splitlines() if p.strip()]
    return parts[-1] if parts else ""
