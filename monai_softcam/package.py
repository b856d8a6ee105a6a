"""A trained model as a MONAI Model Zoo bundle: ``python -m monai_softcam package-bundle``.

::

    python -m monai_softcam package-bundle --ckpt_dir bundle/models --out zoo/lesion_synthetic_softcam_classification \\
        --name lesion_synthetic_softcam_classification --url model.pt=https://host/model.pt

writes a self-contained bundle folder in the Zoo's layout, for *this* model:

* ``configs/``: the bundle configs, with ``train.yaml``'s task keys set to the model's saved task
  (classes, input size, intensities, backbone, ...), so that retraining gives this model's network;
  evaluation, inference and export read ``models/task.json`` as everywhere else;
* ``models/task.json``: the saved task (its record of the training run keeps the settings that shaped the
  model, not the run's config files and overrides, which are this machine's);
* ``configs/metadata.json``: the bundle metadata with this model's input and output shapes
  (``outputs#pred``: the evidence maps of the network's own grid), class names and evaluation
  figures (``eval_metrics``, from the evaluation's ``metrics_<split>.json``), every package the configs
  and ``scripts/`` can import (``required_packages_version``: MONAI reads ``optional_packages_version``
  as a deprecated name of it and would replace the list); the description and data source say what is
  true of this model and folder (the demo data, or ``--metadata FILE``, required for a model of other
  data, with its ``data_source``); the authors come from ``--authors`` (or ``--metadata``);
* ``large_files.yml``: one URL per weight file (``--url model.pt=URL``; ``model.pt`` is required,
  ``model.ts``/``model.onnx`` optional), with its SHA-256; the weights stay out of the folder (the
  Zoo's pre-commit refuses files over 1 MB) and the Zoo's CI downloads and checks them;
* ``docs/README.md`` in the Zoo's readme layout, with the model's metrics, the settings that shaped it
  (epochs, input size, λ1/λ2, data: the task's record, never its config files or overrides) and
  ``--hardware``; ``LICENSE``;
* ``scripts/``: the runtime code the configs need (:func:`shipped_modules`: the modules the shipped configs
  name and every module those import, copied as they are; ``monai_softcam`` becomes ``scripts`` in the
  configs, as Zoo bundles with code do), so the bundle runs where
  ``monai_softcam`` is not installed. MONAI puts the bundle folder on ``sys.path`` only when a
  workflow runs, after its imports were read: run the bundle's commands from its folder (as every
  Zoo bundle documents), or put the folder on ``PYTHONPATH``.

  With ``--code pip`` the bundle holds no code: its configs import ``monai_softcam``, which
  ``required_packages_version`` pins to this version (for when the package is published on PyPI).

Checks, each a :class:`~monai_softcam.package.PackagingError` naming what is wrong, with nothing written: a
missing or empty URL, a URL that is not http(s) or file, a URL that is not public (``file://``, ``localhost``,
private, loopback and link-local addresses, ``.local`` hosts: the Zoo's runner could not download it) unless
``--allow_local_urls``, a weight file that is not in ``ckpt_dir``, a checkpoint
that does not fit the saved task (or a TorchScript export that does not give its maps), evaluation figures of
another model or another task, a bundle name that is not the Zoo's lower-case
``task_modality_..._classification`` form, and a target folder that exists and is not empty. The folder is built
beside the target and moved into place only when complete.

Loading the packaged bundle evaluates the Python expressions of its configs (``$...``), as every
MONAI bundle does; ``task.json``, ``metadata.json`` and ``large_files.yml`` are data.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import os
import re
import shutil
import tempfile
import urllib.parse
from typing import Any, Mapping, Sequence

import torch
import yaml
from monai.bundle import ConfigParser

from . import __version__
from .checkpoint import load_weights
from .task import TASK_FILE, TASK_KEYS, Task
from .text import format_value
from .utils import ConfigError, sha256_file

__all__ = [
    "PackagingError",
    "local_url_reason",
    "package_bundle",
    "parse_urls",
    "shipped_modules",
    "zoo_dist_test",
    "zoo_unit_test",
]

#: the Zoo's bundle names, lower-case words joined by underscores (``spleen_ct_segmentation``)
BUNDLE_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+){2,}$")
#: the weight files a bundle may carry, as large files under ``models/``
WEIGHT_FILES = ("model.pt", "model.ts", "model.onnx")
URL_SCHEMES = ("https", "http", "file")  # file:// serves offline checks of the Zoo's download step
#: the schemes of a public URL, which the Zoo's CI runner can download (the others need ``allow_local``)
PUBLIC_SCHEMES = ("https", "http")
#: the configs a packaged bundle ships (those of ``bundle/configs``)
CONFIG_FILES = ("train.yaml", "evaluate.yaml", "inference.yaml", "export.yaml", "multi_gpu_train.yaml", "logging.conf")
#: metadata text that describes the data and cannot be read off the model
DESCRIPTIVE_KEYS = (
    "name",
    "task",
    "description",
    "authors",
    "copyright",
    "data_source",
    "data_type",
    "intended_use",
    "references",
)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "monai_softcam"  # the package as the configs name it; the packaged copy is `scripts`
#: where a packaged bundle's code comes from, ``scripts`` (the modules its configs import, copied into the
#: bundle) or ``pip`` (the configs import monai_softcam, pinned in ``required_packages_version``)
CODE_FORMS = ("scripts", "pip")
#: declared packages that one module of the package alone imports; a bundle whose configs do not reach that
#: module does not declare them (the Zoo's CI would install them for nothing)
ONLY_FOR = {"optuna": "tune.py", "captum": "explain.py"}


class PackagingError(ConfigError):
    """A model, file or option that cannot be packaged; the message names it."""


def default_source_bundle() -> str:
    """The project's ``bundle/`` folder: beside the package in a source checkout, else ``./bundle``."""
    beside = os.path.join(os.path.dirname(_PACKAGE_DIR), "bundle")
    return beside if os.path.isdir(os.path.join(beside, "configs")) else os.path.abspath("bundle")


def local_url_reason(url: str) -> str | None:
    """Why ``url`` is not a public address that the Model Zoo's CI runner can download, or None when it is.

    Not public: a scheme other than http(s) (``file://``), no host, ``localhost`` and ``*.localhost``,
    ``*.local`` (mDNS) and other single-label host names (resolved only on a local network), and IP
    addresses that are not globally routable: loopback (127.0.0.0/8, ::1), private (10/8, 172.16/12,
    192.168/16, fc00::/7), link-local (169.254/16, fe80::/10), unspecified, reserved and shared ranges."""
    parsed = urllib.parse.urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme not in PUBLIC_SCHEMES:
        return f"a {scheme}:// URL is a file of this machine" if scheme == "file" else f"{scheme!r} is not http(s)"
    try:
        host = (parsed.hostname or "").rstrip(".").lower()
    except ValueError as err:  # an unparsable netloc, e.g. an unclosed IPv6 bracket
        return f"its host cannot be read ({err})"
    if not host:
        return "it names no host"
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        address = None
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            return f"{host} is this machine (loopback)"
        if address.is_link_local:
            return f"{host} is a link-local address"
        if address.is_private:
            return f"{host} is a private network address"
        if not address.is_global or address.is_multicast:
            return f"{host} is not a public internet address"
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine"
    if host.endswith(".local"):
        return f"{host} is a local-network (mDNS) host"
    if "." not in host:
        return f"{host} is a local host name, not a public domain"
    return None


def parse_urls(items: Sequence[str], allow_local: bool = False) -> dict[str, str]:
    """``["model.pt=URL", ...]`` -> ``{"model.pt": URL}``; every file at most once, every URL non-empty,
    every URL public (:func:`local_url_reason`) unless ``allow_local`` (``--allow_local_urls``: ``file://``
    and local hosts, for offline checks of the Zoo's download step; the Zoo itself needs public URLs)."""
    urls: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip()
        if not sep or not name:
            raise PackagingError(f"--url {item!r}: write it as FILE=URL, e.g. --url model.pt=https://host/model.pt")
        if name not in WEIGHT_FILES:
            raise PackagingError(
                f"--url {item!r}: {name!r} is not a weight file of a bundle ({', '.join(WEIGHT_FILES)})"
            )
        if name in urls:
            raise PackagingError(f"--url names {name} twice")
        if not url:
            raise PackagingError(f"--url {name}= has an empty URL: give the address the Zoo downloads {name} from")
        scheme = urllib.parse.urlparse(url).scheme
        if scheme not in URL_SCHEMES:
            raise PackagingError(
                f"--url {name}={url}: the URL must start with {', '.join(s + '://' for s in URL_SCHEMES)}"
            )
        reason = local_url_reason(url)
        if reason and not allow_local:
            raise PackagingError(
                f"--url {name}={url}: not a public URL ({reason}); the Model Zoo's CI downloads every file of "
                "large_files.yml from its own runner, so give an https:// address on the internet, or "
                "--allow_local_urls to package with this one anyway (for offline checks only, not for the Zoo)"
            )
        urls[name] = url
    if "model.pt" not in urls:
        raise PackagingError(
            "no URL for models/model.pt: the Zoo downloads the weights from large_files.yml, so every weight file "
            "needs one (--url model.pt=https://host/model.pt; optional: --url model.ts=..., --url model.onnx=...)"
        )
    return urls


def _check_target(out: str) -> None:
    if os.path.lexists(out) and not os.path.isdir(out):
        raise PackagingError(f"--out {out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out):
        raise PackagingError(f"--out {out} is not empty: give a new or empty folder (nothing was written)")


def _check_model(ckpt_dir: str, task: Task, urls: Mapping[str, str]) -> list[int]:
    """Load model.pt into the task's network (a mismatch names the file and keys); return the map grid.

    A TorchScript ``model.ts`` must give the same maps on a test input."""
    if task.architecture != "SoftCAM":
        raise PackagingError(
            f"{os.path.join(ckpt_dir, TASK_FILE)}: the model is a {task.architecture}; package-bundle packages "
            "SoftCAM models (their network_def returns the evidence maps)"
        )
    for name in urls:
        if not os.path.isfile(os.path.join(ckpt_dir, name)):
            raise PackagingError(f"--url {name}: {os.path.join(ckpt_dir, name)} does not exist")
    network = task.network(maps_only=True)
    load_weights(network, os.path.join(ckpt_dir, "model.pt"))
    network.eval()
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, task.in_channels, *task.image_size, generator=generator)
    with torch.no_grad():
        maps = network(probe)
    if "model.ts" in urls:
        path = os.path.join(ckpt_dir, "model.ts")
        try:
            exported = torch.jit.load(path, map_location="cpu")
            with torch.no_grad():
                theirs = exported(probe)
        except Exception as err:  # not TorchScript, or another input
            raise PackagingError(f"{path} is not a TorchScript export of this model: {err}") from err
        if (
            not isinstance(theirs, torch.Tensor)
            or theirs.shape != maps.shape
            or not torch.allclose(theirs, maps, atol=1e-4, rtol=1e-4)
        ):
            raise PackagingError(
                f"{path} does not give model.pt's evidence maps {tuple(maps.shape)} on the same input: export it "
                "again from this model.pt (python -m monai.bundle ckpt_export, see docs/README.md)"
            )
    return list(maps.shape[2:])


def _read_metrics(paths: Sequence[str], ckpt_dir: str, task: Task) -> list[dict[str, Any]]:
    """The evaluation reports (``metrics_<split>.json``) of this model; another model's or task's is an error."""
    if not paths:
        eval_dir = os.path.join(os.path.dirname(os.path.abspath(ckpt_dir)), "eval")
        paths = [p for p in (os.path.join(eval_dir, f"metrics_{s}.json") for s in ("test", "val")) if os.path.isfile(p)]
        if not paths:
            raise PackagingError(
                f"no evaluation figures: neither metrics_test.json nor metrics_val.json in {eval_dir}. Evaluate the "
                "model first (python -m monai.bundle run evaluate ...) or give its report with --metrics FILE"
            )
    model_pt = os.path.realpath(os.path.join(ckpt_dir, "model.pt"))
    reports = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
        except (OSError, ValueError) as err:
            raise PackagingError(f"--metrics {path} is not a readable metrics_<split>.json: {err}") from err
        if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict) or "split" not in report:
            raise PackagingError(f"--metrics {path} is not an evaluation report (metrics_<split>.json)")
        if report.get("class_names") != task.class_names:
            raise PackagingError(
                f"--metrics {path} evaluates the classes {report.get('class_names')}, but the model's are {task.class_names}"
            )
        evaluated = report.get("model")
        if evaluated and os.path.realpath(evaluated) != model_pt:
            raise PackagingError(
                f"--metrics {path} evaluates {evaluated}, not {model_pt}: evaluate this model (python -m monai.bundle run "
                f"evaluate ... --ckpt_dir {ckpt_dir}) and package its report"
            )
        reports.append(report)
    return reports


def _eval_metrics(reports: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``{<split>_<metric>: value}``: the scalar classification metrics and the explanation metrics' means."""
    figures: dict[str, float] = {}
    for report in reports:
        split = report["split"]
        for name, value in report["metrics"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "n":
                figures[f"{split}_{name}"] = round(float(value), 4)
        for name, summary in (report.get("explanation_metrics") or {}).items():
            if isinstance(summary, Mapping) and isinstance(summary.get("mean"), (int, float)):
                figures[f"{split}_{name}"] = round(float(summary["mean"]), 4)
    return figures


def trained_on_demo_data(task: Task, own_configs: str) -> bool:
    """Whether the task's record says the model was trained on the built-in demo data: no
    ``dataset_dir``/``data`` override, and every preset beside the bundle's configs still readable
    and setting neither. A record without its config files (a packaged bundle's, a run not started from the
    command line) cannot tell: False."""
    record = task.trained_with or {}
    if "config_files" not in record:
        return False
    if any(k.split("#")[0] in ("dataset_dir", "data") for k in record.get("overrides", {})):
        return False
    for path in record.get("config_files", []):
        if os.path.dirname(os.path.abspath(path)) == os.path.abspath(own_configs):
            continue
        try:
            content = ConfigParser.load_config_file(path)
        except (OSError, ValueError):
            return False
        if not isinstance(content, dict) or "dataset_dir" in content or "data" in content:
            return False
    return True


def _yaml_nodes(text: str, source: str) -> tuple[dict[str, Any], list[tuple[list[Any], Any]]]:
    """A YAML text parsed (not pattern-matched) into its top-level value nodes by key and ``(key
    path, node)`` of every scalar value below them, with the nodes' character spans
    (``start_mark.index``, ``end_mark.index``)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        raise PackagingError(f"{source}: not valid YAML: {err}") from err
    scalars: list[tuple[list[Any], Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        if isinstance(node, yaml.ScalarNode):
            scalars.append((path, node))
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(value, [*path, key.value])
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                walk(value, [*path, i])

    if root is None:
        return {}, []
    walk(root, [])
    top = {key.value: value for key, value in root.value} if isinstance(root, yaml.MappingNode) else {}
    return top, scalars


def _as_scripts(value: str) -> str:
    """A config value with the package named ``scripts`` (the packaged copy) wherever the value names
    it as an identifier (``monai_softcam.x`` in a ``_target_`` or a ``$`` expression, ``import
    monai_softcam``), not as a word of a longer name or a pip requirement (``monai_softcam[onnx]``)."""
    out, i = [], 0
    while (j := value.find(PACKAGE, i)) >= 0:
        end = j + len(PACKAGE)
        before, after = value[j - 1 : j], value[end : end + 1]
        named = not (before.isalnum() or before == "_") and not (after and (after.isalnum() or after in "_[]'-"))
        out.append(value[i:j] + ("scripts" if named else PACKAGE))
        i = end
    return "".join(out) + value[i:]


def _scalar(value: str, style: str | None) -> str:
    """A string as a YAML scalar in the ``style`` of the one it replaces: plain (the package's name
    replaced by another identifier keeps a plain scalar plain), single- or double-quoted (a block
    scalar, double-quoted)."""
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style in ('"', "|", ">"):  # a block scalar becomes a double-quoted one: the same value on one line
        return json.dumps(value)
    return value


def _packaged_config(text: str, source: str, task: Task | None = None, code: str = "scripts") -> str:
    """A bundle config as the packaged bundle holds it: every value naming the package names
    ``scripts`` (:func:`_as_scripts`), paths relative to the bundle folder (``configs/``, not
    ``bundle/configs/``), and with ``task`` (``train.yaml``) its top-level task keys set to the saved
    task's values. Values are found by parsing the YAML and replaced in place, so comments and layout stay.
    With ``code="pip"`` the package keeps its name (the bundle imports the installed monai_softcam)."""
    if not source.endswith((".yaml", ".yml")):  # logging.conf: no values to rewrite
        return text
    top, scalars = _yaml_nodes(text, source)
    edits: list[tuple[int, int, str]] = []
    if task is not None:
        missing = [key for key in TASK_KEYS if key not in top]
        if missing:
            raise PackagingError(f"{source}: expected the top-level task key(s) {missing}")
        for key in TASK_KEYS:
            start, end = top[key].start_mark.index, top[key].end_mark.index
            end = start + len(text[start:end].rstrip())  # a block value ends at the next line: keep the newline
            edits.append((start, end, json.dumps(getattr(task, key))))
    for path, node in scalars:
        if task is not None and path[0] in TASK_KEYS:
            continue
        if code == "scripts" and isinstance(node.value, str) and PACKAGE in node.value:
            new = _as_scripts(node.value)
            if new != node.value:
                edits.append((node.start_mark.index, node.end_mark.index, _scalar(new, node.style)))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text.replace("bundle/configs/", "configs/").replace("bundle/models/", "models/")


def _description(task: Task, data: str) -> str:
    """The metadata description of this model: the method, its backbone and input size, and its data."""
    return (
        "A SoftCAM classifier (Djoumessi & Berens, MIDL 2026): a CNN whose global pooling and fully connected "
        "head are replaced by a 1x1 convolutional class-evidence layer, so that each class logit is the "
        f"spatial mean of that class's evidence map. This model ({task.backbone} backbone, "
        f"{'x'.join(str(s) for s in task.image_size)} input, classes {', '.join(task.class_names)}) was trained "
        f"on {data}."
    )


def _code_name(code: str) -> str:
    """The name the packaged configs import the code by (``scripts``, or ``monai_softcam`` installed by pip)."""
    return "scripts" if code == "scripts" else PACKAGE


def _demo_data(code: str) -> str:
    """The data of a model of the built-in demo data, as its README and description name it."""
    return f"the built-in synthetic demo data, which the bundle's configs generate on first use ({_code_name(code)}.data.demo)"


def _demo_text(task: Task, code: str) -> dict[str, str]:
    """The metadata text of a model of the built-in demo data: what the packaged folder holds (its
    configs and code, no presets of other data) and this model's classes."""
    return {
        "description": _description(task, _demo_data(code)),
        "data_source": f"Synthetic demo images generated by the bundle's own code ({_code_name(code)}.data.demo); "
        "no patient data",
    }


def _metadata(
    source: Mapping[str, Any],
    task: Task,
    grid: Sequence[int],
    figures: Mapping[str, float],
    version: str,
    changelog: str,
    extra: Mapping[str, Any],
    code: str = "scripts",
    modules: Sequence[str] = (),
) -> dict[str, Any]:
    meta = json.loads(json.dumps(source))
    unused = [dist for dist, module in ONLY_FOR.items() if module not in modules]
    meta["required_packages_version"] = {
        k: v for k, v in meta.get("required_packages_version", {}).items() if k not in unused
    }
    if code == "pip":  # the configs import the published package: the Zoo's CI installs this version
        meta["required_packages_version"] = {PACKAGE: __version__, **meta.get("required_packages_version", {})}
    meta["version"] = version
    meta["changelog"] = {version: changelog}
    names = task.class_names
    size = "x".join(str(s) for s in task.image_size)
    meta["image_classes"] = (
        f"{task.in_channels}-channel {task.spatial_dims}D image, {size} after resizing ({task.resize}), "
        f"intensities normalised with mean {task.intensity_mean} and standard deviation {task.intensity_std}"
    )
    meta["label_classes"] = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    meta["pred_classes"] = (
        f"the network (network_def, and its TorchScript export) returns one tensor, 'pred': the evidence maps "
        f"[B, {len(names)}, {', '.join(map(str, grid))}], one signed map per class in logit units; each class's logit "
        f"is its map's spatial mean (softmax of the logits gives the probabilities {names}). Inference wraps it "
        f"({_code_name(code)}.networks.EvidenceOutputs)"
    )
    meta["eval_metrics"] = dict(figures)
    formats = meta["network_data_format"]
    image = formats["inputs"]["image"]
    image.update(
        num_channels=task.in_channels,
        spatial_shape=list(task.image_size),
        channel_def={str(i): "image" if task.in_channels == 1 else f"channel {i}" for i in range(task.in_channels)},
    )
    evidence = {str(i): f"{n} evidence" for i, n in enumerate(names)}
    formats["outputs"]["pred"].update(num_channels=len(names), spatial_shape=list(grid), channel_def=evidence)
    post = formats.get("post_processed_outputs", {})
    if "pred" in post:
        post["pred"].update(num_channels=len(names), channel_def={str(i): n for i, n in enumerate(names)})
    if "evidence_maps" in post:
        post["evidence_maps"].update(
            num_channels=len(names), spatial_shape=["*"] * task.spatial_dims, channel_def=evidence
        )
    unknown = sorted(set(extra) - set(DESCRIPTIVE_KEYS))
    if unknown:
        raise PackagingError(
            f"--metadata: {unknown} cannot be set by hand (they are read off the model); the file may set "
            f"{', '.join(DESCRIPTIVE_KEYS)}"
        )
    meta.update(extra)
    return meta


def _readme(
    meta: Mapping[str, Any],
    task: Task,
    grid: Sequence[int],
    reports: Sequence[Mapping[str, Any]],
    large: Sequence[Mapping[str, str]],
    data: str,
    hardware: str | None = None,
    code: str = "scripts",
) -> str:
    size = " x ".join(str(s) for s in task.image_size)
    grid_text = " x ".join(str(s) for s in grid)
    classes = ", ".join(task.class_names)
    lines = [
        f"# {meta['name']}",
        "",
        meta["description"],
        "",
        "### **Authors**",
        str(meta["authors"]),
        "",
        "### **Tags**",
        f"Classification, Explainability, Self-explaining, Evidence maps, SoftCAM, {task.spatial_dims}D",
        "",
        "## **Model Description**",
        f"A SoftCAM classifier over a MONAI `{task.backbone}` backbone ({json.dumps(task.backbone_kwargs)}): the global "
        "pooling and fully connected head are replaced by a 1x1 convolutional class-evidence layer. The network "
        f"returns one signed evidence map per class ({grid_text} cells at {size} input); each class logit is exactly "
        "its map's spatial mean, so the maps explain the logits. `network_def` (and the TorchScript export) returns "
        "the maps as one tensor (`outputs#pred` in `configs/metadata.json`); inference wraps it into the logits, the "
        "probabilities and the maps placed on the input.",
        "",
        "## **Data**",
        str(meta.get("data_source", "")),
        "",
        f"Input: {meta['image_classes']}. Classes: {classes}.",
        "",
        "## **Training configuration**",
        _training_record(task, data),
        "",
        "## **Performance**",
        "Evaluation reports of this model (`metrics_<split>.json` of `python -m monai.bundle run evaluate`, "
        "packaged by `python -m monai_softcam package-bundle`):",
        "",
    ]
    for report in reports:
        metrics = report["metrics"]
        lines += [
            f"**{report['split']} split** ({metrics.get('n', '?')} images)",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {format_value(v)} |" for k, v in metrics.items() if k not in ("n", "confusion_matrix")]
        for k, s in (report.get("explanation_metrics") or {}).items():
            lines.append(
                f"| {k} (evidence maps) | {s['mean']:.4f} [{s['ci_low']:.4f}, {s['ci_high']:.4f}], n={s['n']} |"
            )
        lines.append("")
    lines += [
        "## **System Configuration**",
        *([f"This model was trained on: {hardware}.", ""] if hardware else []),
        "Trains and runs on a CPU or any CUDA GPU (`--device cuda:0`); several GPUs with `configs/multi_gpu_train.yaml` "
        "under torchrun.",
        "",
        "**TensorRT:** this bundle has not been exported or tested with TensorRT; its TorchScript and ONNX exports "
        "are tested on CPU.",
        "",
        "## **How to run**",
        "From this folder (MONAI puts it on the Python path only once a workflow runs; from elsewhere, add it to "
        "`PYTHONPATH`). Fetch the weights first: `python -m monai.bundle download_large_files --bundle_path .` "
        "downloads every file of `large_files.yml` into `models/` and checks its SHA-256.",
        "",
        "    python -m monai.bundle run inference --config_file configs/inference.yaml --input_path IMAGES",
        "    python -m monai.bundle run evaluate --config_file \"['configs/train.yaml','configs/evaluate.yaml']\" "
        "--dataset_dir DATA",
        "    python -m monai.bundle run training --config_file configs/train.yaml --dataset_dir DATA",
        "    python -m monai.bundle ckpt_export --net_id network_def --filepath models/model.ts --ckpt_file models/model.pt \\",
        "        --meta_file configs/metadata.json --config_file \"['configs/inference.yaml','models/task.json']\"",
        "",
        "Inference writes `eval/inference/predictions.csv` (the probability of every class) and, per image, "
        "`eval/inference/maps/<name>/<name>_evidence_<class>.nii.gz`: the raw signed map of each class at the "
        "network's resolution, its affine placing every cell on the input in world space "
        "(`--full_resolution_maps true` samples it on the input's voxels), plus an overlay PNG for 2D inputs.",
        "",
        "`models/task.json` is the trained task (classes, input size, intensities, backbone): evaluation, inference "
        "and export read it; `configs/train.yaml` holds the same values. Loading this bundle evaluates the Python "
        "expressions in its configs (`$...`), as every MONAI bundle does; `task.json` is data.",
        "",
        "### Large files",
        "",
        "| file | URL | SHA-256 |",
        "|---|---|---|",
    ]
    lines += [f"| `{f['path']}` | {f['url']} | `{f['hash_val']}` |" for f in large]
    lines += [
        "",
        "### Runtime code",
        (
            f"`scripts/` holds the modules of monai_softcam {__version__} that these configs import, as `scripts`: "
            "those their `_target_` and `$` expressions name and every module those import, no more."
            if code == "scripts"
            else f"The configs import the monai_softcam package: `pip install monai_softcam=={__version__}` "
            "(pinned in `required_packages_version`, which the Zoo's CI installs)."
        )
        + " The packages they need are `required_packages_version` of `configs/metadata.json`, among them those "
        "of the ONNX export (`pip install onnx onnxscript onnxruntime`).",
        "",
        "## **Limitations**",
        f"Intended use: {meta.get('intended_use', '')}. Evidence maps have the resolution of the network's output grid; "
        "they are interpolated for display. Without the evidence penalty a ResNet SoftCAM equals the black box with "
        "global pooling, and its map equals CAM: the method's effect comes from the penalty.",
        "",
        "## **References**",
    ]
    lines += [f"- {r}" for r in meta.get("references", [])]
    lines += ["", "## **License**", "See `LICENSE`.", ""]
    return "\n".join(lines)


def _portable_record(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """A task's record of its training run as the bundle ships it: the settings that shaped the model, without
    the config files and overrides of the run (this machine's files, which the bundle does not have)."""
    return {k: v for k, v in (record or {}).items() if k not in ("config_files", "overrides")}


def _trained_on(record: Mapping[str, Any] | None) -> str | None:
    """What the training record says of where and how long the model trained (``device``, ``training_time_s``),
    e.g. ``"CPU, 2 threads; 1 min 4 s of training (2 epochs)"``; None without a device."""
    record = record or {}
    if not record.get("device"):
        return None
    text = str(record["device"])
    seconds = record.get("training_time_s")
    if isinstance(seconds, (int, float)):
        minutes, rest = divmod(int(round(seconds)), 60)
        hours, minutes = divmod(minutes, 60)
        spent = f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s" if minutes else f"{rest} s"
        epochs = record.get("epochs_trained")
        text += f"; {spent} of training" + (f" ({epochs} epochs)" if epochs else "")
        if record.get("resumed_at_epoch"):
            text += f", the last run, resumed at epoch {record['resumed_at_epoch']}"
    return text


def _number(value: Any) -> str:
    """A setting as written in a config: ``0.0003``, ``1e-05``, ``12``."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _training_record(task: Task, data: str) -> str:
    """The settings that shaped the model, as its task recorded them (``trained_with["settings"]``):
    epochs, batch size, optimiser settings, the evidence penalty (λ1, λ2), the seed, the input size, and the
    data (``data``); never the run's config files or overrides (test settings, this machine's folders)."""
    settings = dict((task.trained_with or {}).get("settings") or {})
    size = " x ".join(str(s) for s in task.image_size)
    parts = []
    if "epochs" in settings:
        parts.append(f"{settings['epochs']} epochs")
    if "batch_size" in settings:
        parts.append(f"batch size {settings['batch_size']}")
    if "learning_rate" in settings:
        parts.append(f"learning rate {_number(settings['learning_rate'])}")
    if "weight_decay" in settings:
        parts.append(f"weight decay {_number(settings['weight_decay'])}")
    penalty = settings.get("penalty")
    if isinstance(penalty, Mapping) and {"lambda1", "lambda2"} <= set(penalty):
        l2 = "squared L2" if settings.get("penalty_squared_l2") is True else "L2"
        parts.append(
            f"evidence penalty λ1 = {_number(penalty['lambda1'])} (L1), λ2 = {_number(penalty['lambda2'])} ({l2})"
        )
    if "seed" in settings:
        parts.append(f"seed {settings['seed']}")
    lines = [f"Data: {data}. Input: {size} ({task.resize}), {task.in_channels} channel(s); backbone `{task.backbone}`."]
    if parts:
        lines += ["", f"Training settings (the model's record, `models/task.json`): {'; '.join(parts)}."]
    else:
        lines += ["", "The training settings were not recorded (the task file holds no record of the training run)."]
    lines += [
        "",
        "`configs/train.yaml` holds the bundle's training settings with this model's task (classes, input size, "
        "intensities, backbone).",
    ]
    return "\n".join(lines)


def _large_files(ckpt_dir: str, urls: Mapping[str, str]) -> tuple[str, list[dict[str, str]]]:
    entries = [
        {
            "path": f"models/{n}",
            "url": urls[n],
            "hash_val": sha256_file(os.path.join(ckpt_dir, n)),
            "hash_type": "sha256",
        }
        for n in WEIGHT_FILES
        if n in urls
    ]
    lines = [
        "# Weight files: the Model Zoo's CI and `python -m monai.bundle download_large_files` fetch each one and check its",
        "# SHA-256. Written by `python -m monai_softcam package-bundle`.",
        "large_files:",
    ]
    for e in entries:
        lines += [
            f'  - path: "{e["path"]}"',
            f'    url: "{e["url"]}"',
            f'    hash_val: "{e["hash_val"]}"',
            f'    hash_type: "{e["hash_type"]}"',
        ]
    return "\n".join(lines) + "\n", entries


def _module_file(module: str) -> str | None:
    """The source file of the package module ``module`` (``monai_softcam.data.demo``), or None."""
    path = os.path.join(_PACKAGE_DIR, *module.split(".")[1:])
    for candidate in (os.path.join(path, "__init__.py"), path + ".py"):
        if os.path.isfile(candidate):
            return candidate
    return None


def _modules_named(dotted: str) -> list[str]:
    """The package modules that naming ``dotted`` imports (``monai_softcam.data.CSVDataSpec``: the package and
    ``monai_softcam.data``): each leading part of it that is a module."""
    parts, found = dotted.split("."), []
    for n in range(1, len(parts) + 1):
        if _module_file(".".join(parts[:n])) is None:
            break
        found.append(".".join(parts[:n]))
    return found


def _imports_of(module: str) -> list[str]:
    """The package modules that ``module``'s import statements name, wherever they stand (a function's
    import counts: the call that runs it may be one a shipped config makes)."""
    path = str(_module_file(module))
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import module`
        else:
            continue
        for name in names:
            if name.split(".")[0] == PACKAGE:
                found += _modules_named(name)
    return found


def shipped_modules(configs: Sequence[str]) -> list[str]:
    """The package's files that the bundle configs ``configs`` can import, relative to the package: the modules
    their values name (``_target_: monai_softcam.x.Y``, ``$monai_softcam.x.f(...)``, ``$import monai_softcam``),
    then every module those import, to the end. The packaged bundle's ``scripts/`` holds these and no more."""
    todo: list[str] = []
    for config in configs:
        with open(config, encoding="utf-8") as f:
            text = f.read()
        for _, node in _yaml_nodes(text, config)[1] if config.endswith((".yaml", ".yml")) else []:
            if isinstance(node.value, str):  # a pip requirement (`monai_softcam[onnx]`) names no module
                todo += [
                    m
                    for hit in re.findall(rf"(?<![\w.]){PACKAGE}(?:\.\w+)*(?![\w\[])", node.value)
                    for m in _modules_named(hit)
                ]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += _imports_of(module)
    return sorted(os.path.relpath(str(_module_file(m)), _PACKAGE_DIR) for m in seen)


def _copy_package(target: str, modules: Sequence[str]) -> None:
    """The package files ``modules`` (:func:`shipped_modules`) copied to ``target`` (the bundle's ``scripts/``)."""
    for rel in modules:
        os.makedirs(os.path.dirname(os.path.join(target, rel)), exist_ok=True)
        shutil.copyfile(os.path.join(_PACKAGE_DIR, rel), os.path.join(target, rel))


def package_bundle(
    ckpt_dir: str,
    out: str,
    name: str,
    urls: Mapping[str, str],
    metrics: Sequence[str] = (),
    metadata: str | None = None,
    version: str = "0.1.0",
    changelog: str | None = None,
    source: str | None = None,
    unit_test: str | None = None,
    authors: str | None = None,
    hardware: str | None = None,
    code: str = "scripts",
) -> str:
    """Write the Zoo bundle of the model in ``ckpt_dir`` to the new or empty folder ``out``; return ``out``.

    Args:
        ckpt_dir: the trained model's folder (``model.pt``, ``task.json``; ``model.ts``/``model.onnx`` if given URLs).
        out: the bundle folder to write; it must not exist or be empty.
        name: the bundle's name in the Zoo (``<task>_<modality>_softcam_classification``).
        urls: ``{weight file: URL}`` (:func:`parse_urls`); ``model.pt`` is required.
        metrics: evaluation reports (``metrics_<split>.json``) of this model; default: ``metrics_test.json``
            and ``metrics_val.json`` in the ``eval`` folder beside ``ckpt_dir``.
        metadata: a JSON file with the metadata text of the model's data (:data:`DESCRIPTIVE_KEYS`);
            required unless the model was trained on the built-in demo data.
        version: the bundle version.
        changelog: the changelog line of that version.
        source: the bundle whose configs, metadata and LICENSE are packaged (default: the project's ``bundle/``).
        unit_test: also write the Zoo's unit test of the bundle (:func:`zoo_unit_test`) to this file, and its
            distributed test (:func:`zoo_dist_test`) beside it as ``test_<name>_dist.py``.
        authors: the model's authors (metadata ``authors`` and the README); default: the ``--metadata``
            file's, else the source bundle's.
        hardware: what the model was trained on (the README's System Configuration), e.g. "1 NVIDIA A100 GPU";
            default: the training record's device and time (``_trained_on``), where it has them.
        code: ``scripts`` (default): the modules the configs import, copied into the bundle's ``scripts/``
            (:func:`shipped_modules`); ``pip``: no code in the bundle, the configs import monai_softcam, pinned
            to this version in ``required_packages_version`` (for when the package is published).
    """
    if not BUNDLE_NAME.match(name or ""):
        raise PackagingError(
            f"--name {name!r}: a Zoo bundle name is lower-case words joined by underscores, "
            "<task>_<modality>_softcam_classification (e.g. pneumonia_xray_softcam_classification)"
        )
    if authors is not None and not authors.strip():
        raise PackagingError("--authors is empty: name the model's authors (e.g. --authors 'A. Author, B. Author')")
    if hardware is not None and not hardware.strip():
        raise PackagingError("--hardware is empty: describe what the model was trained on (e.g. '1 NVIDIA A100 GPU')")
    if code not in CODE_FORMS:
        raise PackagingError(f"--code {code!r}: choose from {', '.join(CODE_FORMS)}")
    if not re.match(r"^\d+\.\d+\.\d+$", version):
        raise PackagingError(f"--version {version!r}: the Zoo's versions are MAJOR.MINOR.PATCH, e.g. 0.1.0")
    out = os.path.abspath(out)
    _check_target(out)
    if unit_test and os.path.exists(unit_test):
        raise PackagingError(f"--unit_test {unit_test} exists: nothing was written (remove it or name another file)")
    dist_test = os.path.join(os.path.dirname(unit_test), f"test_{name}_dist.py") if unit_test else None
    if dist_test and os.path.exists(dist_test):
        raise PackagingError(f"{dist_test} exists (the Zoo's distributed test): nothing was written (remove it)")
    if unit_test and not os.path.isdir(os.path.dirname(os.path.abspath(unit_test))):
        raise PackagingError(
            f"--unit_test {unit_test}: the folder {os.path.dirname(os.path.abspath(unit_test))} does not exist: "
            "nothing was written"
        )
    source = os.path.abspath(source or default_source_bundle())
    configs = os.path.join(source, "configs")
    missing = [f for f in (*CONFIG_FILES, "metadata.json") if not os.path.isfile(os.path.join(configs, f))]
    if missing or not os.path.isfile(os.path.join(source, "LICENSE")):
        raise PackagingError(f"--source {source} is not the project's bundle folder (lacks {missing or ['LICENSE']})")
    modules = shipped_modules([os.path.join(configs, c) for c in CONFIG_FILES])
    task = Task.read(os.path.join(ckpt_dir, TASK_FILE))
    grid = _check_model(ckpt_dir, task, urls)
    reports = _read_metrics(metrics, ckpt_dir, task)
    with open(os.path.join(configs, "metadata.json"), encoding="utf-8") as f:
        source_meta = json.load(f)
    if metadata:
        try:
            with open(metadata, encoding="utf-8") as f:
                extra = json.load(f)
        except (OSError, ValueError) as err:
            raise PackagingError(f"--metadata {metadata} is not a readable JSON file: {err}") from err
        if not isinstance(extra, dict):
            raise PackagingError(f"--metadata {metadata}: expected a JSON object of metadata keys")
        if not str(extra.get("data_source") or "").strip():
            raise PackagingError(
                f"--metadata {metadata}: no data_source: describe the data the model was trained on (the bundle "
                "would otherwise carry the demo's)"
            )
        if "description" not in extra:
            extra = {**extra, "description": _description(task, str(extra["data_source"]).rstrip("."))}
        data = str(extra["data_source"]).rstrip(".")
    elif trained_on_demo_data(task, configs):
        extra, data = _demo_text(task, code), _demo_data(code)
    else:
        raise PackagingError(
            f"{os.path.join(ckpt_dir, TASK_FILE)} records training on data other than the built-in demo: describe it "
            f"with --metadata FILE (a JSON object; keys {', '.join(DESCRIPTIVE_KEYS)}), or the bundle would carry "
            "the demo's description"
        )
    if authors is not None:
        extra = {**extra, "authors": authors.strip()}
    meta = _metadata(
        source_meta,
        task,
        grid,
        _eval_metrics(reports),
        version,
        changelog or f"first release of {name}: {task.architecture} over {task.backbone}",
        extra,
        code,
        modules,
    )
    large_text, large = _large_files(ckpt_dir, urls)
    hardware = hardware.strip() if hardware else _trained_on(task.trained_with)
    test_text = zoo_unit_test(name, task) if unit_test else ""
    dist_text = zoo_dist_test(name, task) if dist_test else ""

    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    wrote_test = wrote_dist = False
    try:
        os.makedirs(os.path.join(work, "configs"))
        for config in CONFIG_FILES:
            with open(os.path.join(configs, config), encoding="utf-8") as f:
                text = _packaged_config(
                    f.read(), os.path.join(configs, config), task if config == "train.yaml" else None, code
                )
            with open(os.path.join(work, "configs", config), "w", encoding="utf-8") as f:
                f.write(text)
        with open(os.path.join(work, "configs", "metadata.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=4)
            f.write("\n")
        task.save(os.path.join(work, "models", TASK_FILE), trained_with=_portable_record(task.trained_with))
        with open(os.path.join(work, "large_files.yml"), "w", encoding="utf-8") as f:
            f.write(large_text)
        os.makedirs(os.path.join(work, "docs"))
        with open(os.path.join(work, "docs", "README.md"), "w", encoding="utf-8") as f:
            f.write(_readme(meta, task, grid, reports, large, data, hardware, code))
        shutil.copyfile(os.path.join(source, "LICENSE"), os.path.join(work, "LICENSE"))
        if code == "scripts":
            _copy_package(os.path.join(work, "scripts"), modules)
        os.chmod(work, 0o755)
        if unit_test:  # written first: if it cannot be, no bundle is left either
            with open(unit_test, "x", encoding="utf-8") as f:
                f.write(test_text)
            wrote_test = True
            with open(dist_test, "x", encoding="utf-8") as f:
                f.write(dist_text)
            wrote_dist = True
        if os.path.isdir(out):
            os.rmdir(out)  # empty (checked above)
        os.rename(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if wrote_test:  # the bundle did not land: neither do its tests
            os.remove(unit_test)
        if wrote_dist:
            os.remove(dist_test)
        raise
    return out


#: the Zoo's unit test of a packaged bundle, a linted Python file of the package (package data)
ZOO_UNIT_TEST = os.path.join(_PACKAGE_DIR, "templates", "zoo_unit_test.py")


#: the Zoo's distributed test of a packaged bundle (ci/unit_tests/test_<name>_dist.py), package data too
ZOO_DIST_TEST = os.path.join(_PACKAGE_DIR, "templates", "zoo_dist_test.py")


def _zoo_test(template: str, name: str, task: Task) -> str:
    """The Zoo test ``template`` (a file of ``templates/``) with its three marked lines filled in for the bundle
    ``name``: its name, the test class named after it, and (for images over 64 px a side) a smaller
    ``image_size`` for a quick run."""
    camel = "".join(part.capitalize() for part in name.split("_"))
    quick = {"image_size": [min(s, 64) for s in task.image_size]} if max(task.image_size) > 64 else {}
    with open(template, encoding="utf-8") as f:
        text = f.read()
    for marker, line in (
        ('BUNDLE_NAME = "bundle_name"', f"BUNDLE_NAME = {json.dumps(name)}"),
        ("QUICK_TASK: dict = {}", f"QUICK_TASK: dict = {json.dumps(quick)}"),
        ("class TestBundle(unittest.TestCase):", f"class Test{camel}(unittest.TestCase):"),
    ):
        lines = text.split("\n")
        found = [i for i, old in enumerate(lines) if old.split("  #")[0] == marker]
        if len(found) != 1:
            raise PackagingError(f"{template}: expected one line '{marker}', found {len(found)}")
        lines[found[0]] = line
        text = "\n".join(lines)
    return text.replace("the bundle_name bundle", f"the {name} bundle", 1)


def zoo_unit_test(name: str, task: Task) -> str:
    """The Zoo's unit test of the bundle ``name`` (``ci/unit_tests/test_<name>.py``): train, train + evaluate and
    inference through ``ConfigWorkflow`` and the Zoo's ``check_workflow(check_properties=True)``, on a small demo
    dataset that the bundle's own generator writes, with the checkpoints in a temporary folder.

    It is :data:`ZOO_UNIT_TEST` with its three marked lines filled in (``_zoo_test``)."""
    return _zoo_test(ZOO_UNIT_TEST, name, task)


def zoo_dist_test(name: str, task: Task) -> str:
    """The Zoo's distributed test of the bundle ``name`` (``ci/unit_tests/test_<name>_dist.py``): training with
    ``train.yaml`` + ``multi_gpu_train.yaml`` through the Zoo's ``export_config_and_run_mgpu_cmd`` (torchrun, one
    process per GPU, or two CPU processes with gloo where no GPU is visible), on a small demo dataset that the
    bundle's own generator writes, with the checkpoints in a temporary folder.

    It is :data:`ZOO_DIST_TEST` with the same three marked lines filled in (``_zoo_test``)."""
    return _zoo_test(ZOO_DIST_TEST, name, task)
