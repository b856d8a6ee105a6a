"""Run a bundle's own inference on one volume and bring the evidence maps back onto it.

Two ways, same result (the same command, same configs, same files in and out):

* ``"subprocess"`` (the default in Slicer): ``python -m monai.bundle run inference`` in a child
  process. Slicer's GUI stays responsive, *Cancel* stops the process at once, and a crash or an
  out-of-memory in PyTorch cannot take Slicer down. The child may be another Python (e.g. a
  virtual environment that has torch and monai_softcam) than Slicer's own.
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
    "export_result",
    "run_inference",
]

MODES = ("subprocess", "inprocess")


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
    ``result()``; or simply ``wait()``. ``cancel()`` stops a subprocess run.

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
                self.cancel()
                raise InferenceError(f"inference took more than {timeout} s and was cancelled")
            time.sleep(interval)
        return self.result()

    def cancel(self) -> None:
        """Stop a running subprocess (an in-process run cannot be interrupted)."""
        if self.state == "running" and self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None
            self.state = "cancelled"
            self._error = "cancelled by the user"
            self._say("cancelled")
            self._cleanup()

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
    the module, where Slicer's own Python finds it but a child Python would not) and, on Windows, a
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
    return options


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
