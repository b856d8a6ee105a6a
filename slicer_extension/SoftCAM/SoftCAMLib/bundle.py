"""A trained SoftCAM bundle as the Slicer module sees it: what it classifies and how it prepares
its input, read from the bundle's own ``configs/metadata.json`` and ``configs/inference.yaml``
(plus the preset files it was trained with, merged after it, as on the command line)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import stat
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Sequence

__all__ = ["BundleError", "BundleInfo", "unpack_torchscript", "use_bundle_code"]

INFERENCE_CONFIGS = ("inference.yaml", "inference.json")
TASK_FILE = "task.json"  # monai_softcam.task.TASK_FILE (not imported: this module loads without torch)
TORCHSCRIPT_KEY = "torchscript_export"
CODE_PACKAGE = "scripts"  # a Model Zoo bundle's own code (package-bundle copies monai_softcam there)


def use_bundle_code(path: str) -> str | None:
    """Make the ``scripts/`` package of the bundle folder ``path`` the one its configs import, as
    MONAI's ``ConfigWorkflow.run`` and the Model Zoo's ``ci/verify_bundle.py`` do (the folder first
    on ``sys.path``); a ``scripts`` of another bundle, imported before, is dropped from
    ``sys.modules`` so that it is not used for this one. Returns the folder, or None for a bundle
    without code of its own."""
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, CODE_PACKAGE, "__init__.py")):
        return None
    loaded = sys.modules.get(CODE_PACKAGE)
    origin = os.path.dirname(os.path.dirname(os.path.abspath(getattr(loaded, "__file__", None) or "")))
    if loaded is not None and origin != path:
        for name in [n for n in sys.modules if n == CODE_PACKAGE or n.startswith(CODE_PACKAGE + ".")]:
            del sys.modules[name]
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
    return path


class BundleError(ValueError):
    """A folder that is not a usable SoftCAM bundle; the message says what is missing or wrong."""


def _user_error(error: BaseException) -> BaseException:
    """The package's user error (its message names the culprit) in ``error``'s chain, below MONAI's
    config wrappers; ``error`` itself if there is none. Matched by class name: a Model Zoo bundle
    brings its own copy of the package (``scripts``)."""
    seen, cause = set(), error
    while cause is not None and id(cause) not in seen:
        if any(kind.__name__ == "UserError" for kind in type(cause).__mro__):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return error


@dataclass
class BundleInfo:
    """Read with :meth:`read`; every field comes from the bundle's configs."""

    path: str
    config_files: list[str]
    name: str
    version: str
    monai_version: str
    class_names: list[str]
    spatial_dims: int
    image_size: list[int]
    in_channels: int
    resize: str
    intensity: str
    checkpoint: str
    warnings: list[str] = field(default_factory=list)
    torchscript: str | None = None  # the export this bundle was unpacked from
    code_path: str | None = None  # the folder holding the bundle's own scripts/ package, put on the Python path

    @classmethod
    def read(cls, path: str, extra_configs: Sequence[str] = ()) -> "BundleInfo":
        """Read the bundle folder ``path`` (``configs/metadata.json``, ``configs/inference.yaml``,
        the checkpoint it names). ``extra_configs``: preset files merged after the inference config
        (e.g. ``configs/rsna.yaml``), as given to ``python -m monai.bundle run inference``.

        Raises:
            BundleError: naming the missing file or the key that cannot be read.
        """
        path = os.path.abspath(os.path.expanduser(path))
        if os.path.isfile(path) and path.endswith(".ts"):
            folder, embedded = unpack_torchscript(path)
            return cls.read(folder, [*embedded, *extra_configs])
        if not os.path.isdir(path):
            raise BundleError(f"{path} is not a folder (a bundle) or a TorchScript export (.ts)")
        meta_file = os.path.join(path, "configs", "metadata.json")
        if not os.path.isfile(meta_file):
            raise BundleError(f"{path} is not a MONAI bundle: configs/metadata.json not found")
        inference = [os.path.join(path, "configs", n) for n in INFERENCE_CONFIGS]
        inference = [f for f in inference if os.path.isfile(f)]
        if not inference:
            raise BundleError(f"{path}: no configs/inference.yaml (or .json): the bundle cannot run inference")
        extra = [os.path.abspath(os.path.expanduser(f)) for f in extra_configs if str(f).strip()]
        for f in extra:
            if not os.path.isfile(f):
                raise BundleError(f"preset config {f} not found")
        try:
            with open(meta_file) as f:
                meta = json.load(f)
        except (OSError, ValueError) as err:
            raise BundleError(f"{meta_file}: not readable JSON ({err})") from err

        from monai.bundle import ConfigParser  # optional: installed on first use (Resources/requirements.txt)

        code_path = use_bundle_code(path)  # a Model Zoo bundle's configs import its scripts/
        parser = ConfigParser()
        files = inference[:1] + extra
        try:
            parser.read_config(f=files)
        except Exception as err:
            raise BundleError(f"cannot read the configs {files}: {err}") from err
        parser["bundle_root"] = path

        def get(key: str):
            try:
                return parser.get_parsed_content(key)
            except Exception as err:
                raise BundleError(
                    f"{files[-1] if len(files) > 1 else files[0]}: cannot read key '{key}' ({err})"
                ) from err

        # the trained task (<ckpt_dir>/task.json), checked against the presets given here
        # (inference.yaml's trained_task: a task key a preset sets must agree with the model's)
        try:
            task = parser.get_parsed_content("trained_task")
        except Exception as err:
            raise BundleError(f"{path}: {_user_error(err)}") from err
        class_names, image_size, spatial_dims = list(task.class_names), list(task.image_size), int(task.spatial_dims)
        mean, std = task.intensity_mean, task.intensity_std
        info = cls(
            path=path,
            config_files=files,
            name=str(meta.get("name", os.path.basename(path))),
            version=str(meta.get("version", "?")),
            monai_version=str(meta.get("monai_version", "?")),
            class_names=class_names,
            spatial_dims=spatial_dims,
            image_size=image_size,
            in_channels=int(task.in_channels),
            resize=str(task.resize),
            intensity=f"(x - {mean}) / {std}",
            checkpoint=os.path.abspath(str(parser.get(TORCHSCRIPT_KEY) or get("checkpoint"))),
        )
        info.torchscript = str(parser.get(TORCHSCRIPT_KEY, "")) or None
        info.code_path = code_path
        if info.torchscript is None and not os.path.isfile(info.checkpoint):
            raise BundleError(f"{path}: the checkpoint {info.checkpoint} does not exist (train the bundle first)")
        import monai  # optional: installed on first use (Resources/requirements.txt)

        if info.monai_version not in ("?", monai.__version__):
            info.warnings.append(
                f"the bundle was made with MONAI {info.monai_version}, this Python has MONAI {monai.__version__}"
            )
        return info

    def check_weights(self) -> None:
        """Build the bundle's network and load its checkpoint (``weights_only``); raises a
        :class:`BundleError` listing the mismatching tensors if the checkpoint is of another
        network (backbone, class count, channels). A TorchScript export holds its own weights."""
        if self.torchscript:
            return
        from monai.bundle import ConfigParser  # optional: installed on first use (Resources/requirements.txt)

        from monai_softcam.checkpoint import load_weights  # optional: monai_softcam, installed by Slicer on first use

        use_bundle_code(self.path)
        parser = ConfigParser()
        parser.read_config(f=self.config_files)
        parser["bundle_root"] = self.path
        try:
            network = parser.get_parsed_content("network_def")
            load_weights(network, self.checkpoint)
        except Exception as err:
            raise BundleError(f"{self.path}: {err}") from err

    def summary(self) -> str:
        """A few lines for the GUI."""
        size = "x".join(str(s) for s in self.image_size)
        lines = [
            f"{self.name}  (version {self.version}, MONAI {self.monai_version})",
            f"classes: {', '.join(self.class_names)}",
            f"input: {self.spatial_dims}D, {self.in_channels} channel(s), resized ({self.resize}) to {size}, "
            f"intensities {self.intensity}",
            f"checkpoint: {self.checkpoint}",
        ]
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def unpack_torchscript(path: str, folder: str | None = None) -> tuple[str, list[str]]:
    """A bundle folder made from a TorchScript export of ``python -m monai.bundle ckpt_export``:
    the configs it embeds (``metadata.json``, ``inference.json``, the trained task ``task.json``
    and any preset given after it) in ``configs/``, plus ``configs/torchscript.json``, which makes
    ``network_def`` the export itself (loaded with ``torch.jit.load``; no checkpoint is read; the
    configs' ``network`` wraps and places it as it does a checkpoint's network) and reads the task
    from the export. Returns the folder and the config
    files to merge after ``inference.json`` (the presets, then ``torchscript.json``).

    The export is untrusted until read: every extra file's name must be a plain file name (no folder, no
    absolute path, no ``..``, not a link), checked before anything is written, so that a crafted export cannot
    write outside ``configs/``. Without ``folder``, a temporary folder is made and removed when the process
    exits."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if "/extra/" in m.filename]
            extra = {_extra_file_name(path, m): archive.read(m) for m in members}
    except (OSError, zipfile.BadZipFile) as err:
        raise BundleError(f"{path}: not a TorchScript file ({err})") from err
    missing = [n for n in ("metadata.json", "inference.json") if n not in extra]
    if missing:
        raise BundleError(
            f"{path}: a TorchScript export without {' and '.join(missing)}: export it with "
            "python -m monai.bundle ckpt_export ... --meta_file configs/metadata.json --config_file configs/inference.yaml"
        )
    if TASK_FILE not in extra:
        raise BundleError(
            f"{path}: a TorchScript export without the trained task ({TASK_FILE}): export it with "
            "python -m monai.bundle ckpt_export ... --config_file \"['configs/inference.yaml','models/task.json']\""
        )
    if folder is None:  # removed when the process (Slicer) exits
        folder = tempfile.mkdtemp(prefix="softcam_ts_")
        atexit.register(shutil.rmtree, folder, True)
    os.makedirs(os.path.join(folder, "configs"), exist_ok=True)
    for name, content in extra.items():
        with open(os.path.join(folder, "configs", name), "wb") as f:
            f.write(content)
    override = {
        TORCHSCRIPT_KEY: os.path.abspath(path),
        # the export stands in for network_def: the configs' `network` wraps and places it as for a checkpoint
        "network_def": f"$torch.jit.load({os.path.abspath(path)!r}, map_location='cpu')",
        "checkpoint": None,
        # the task embedded in the export, not a task file beside a checkpoint
        "ckpt_dir": os.path.join(folder, "configs"),
    }
    with open(os.path.join(folder, "configs", "torchscript.json"), "w") as f:
        json.dump(override, f, indent=2)
    presets = [n for n in extra if n.endswith(".json") and n not in ("metadata.json", "inference.json", TASK_FILE)]
    return folder, [os.path.join(folder, "configs", n) for n in presets + ["torchscript.json"]]


def _extra_file_name(path: str, member: zipfile.ZipInfo) -> str:
    """The name of a TorchScript archive's extra file ``member`` (``<archive>/extra/<name>``), if it is a plain
    file name; else a BundleError naming the member (a path, ``..``, an absolute name or a link could write
    outside the bundle's ``configs/`` folder)."""
    name = member.filename.split("/extra/", 1)[1]
    is_link = stat.S_ISLNK(member.external_attr >> 16)
    plain = name not in ("", ".", "..") and not any(c in name for c in "/\\:\0") and not os.path.isabs(name)
    if is_link or not plain or member.is_dir():
        raise BundleError(
            f"{path}: refusing the extra file {member.filename!r} of this TorchScript export: "
            f"{'a link' if is_link else 'not a plain file name'}; an export of ckpt_export holds plain names only"
        )
    return name
