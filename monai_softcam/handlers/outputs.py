"""Ignite handlers that write what a run produced: the evidence gallery, the metrics report, the
predictions and region tables, the inputs left out, and the wait for files written in the background. Files are written
atomically (complete or none) and only on the main process under ``torch.distributed``."""

from __future__ import annotations

import csv
import json
import logging
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..data import SKIPPED, DataListError, Problem
from ..data.datalist import write_skipped_report
from ..metrics.classification import ClassificationMetrics
from ..metrics.statistics import summarize
from ..text import format_value
from ..utils import BackgroundWriter, atomic_open, is_main_process
from ..visualize import evidence_gallery

logger = logging.getLogger("monai_softcam")


class WaitForWriter:
    """Wait for a :class:`~monai_softcam.utils.BackgroundWriter` at the end of each epoch (before the
    ``COMPLETED`` handlers, such as the predictions, write), so that a run ends only when every file
    handed to the writer is written, and a failed one stops it naming the file."""

    def __init__(self, writer: BackgroundWriter) -> None:
        self.writer = writer

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine`` at ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: self.writer.wait())


class _CollectThenWrite:
    """A handler that collects from every iteration (``_collect``) and writes once at the end
    (``_write``), starting afresh when the run starts (or, ``per_epoch``, each epoch), with what it
    collected in ``_items``."""

    per_epoch = False

    def attach(self, engine: Engine) -> None:
        start, end = (
            (Events.EPOCH_STARTED, Events.EPOCH_COMPLETED) if self.per_epoch else (Events.STARTED, Events.COMPLETED)
        )
        engine.add_event_handler(start, lambda e: self._items.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(end, self._write)

    def _collect(self, engine: Engine) -> None:
        raise NotImplementedError

    def _write(self, engine: Engine) -> None:
        raise NotImplementedError


class EvidenceGallery(_CollectThenWrite):
    """Picture of the first ``max_cases`` cases of an evaluation: image (with the ground-truth outline
    when the batch has a ``mask``) and the evidence map of every class (attach to an evaluator).

    Args:
        class_names: one name per class.
        output_path: PNG file to write at the end of each run (atomically), or None.
        summary_writer: TensorBoard writer to add the picture to (step: the engine's epoch, which
            for a MONAI evaluator run by ``ValidationHandler`` is the trainer's epoch), or None.
        max_cases: number of cases.
        cases_per_row: cases side by side in each row of the picture.
        tag: TensorBoard tag.
    """

    per_epoch = True  # one gallery per validation epoch

    def __init__(
        self,
        class_names: Sequence[str],
        output_path: str | None = None,
        summary_writer: Any = None,
        max_cases: int = 8,
        cases_per_row: int = 1,
        tag: str = "evidence_maps",
    ) -> None:
        self.class_names = list(class_names)
        self.output_path = output_path
        self.writer = summary_writer
        self.max_cases = int(max_cases)
        self.cases_per_row = int(cases_per_row)
        self.tag = tag
        self._items: list[dict[str, Any]] = []  # the cases shown

    def _collect(self, engine: Engine) -> None:
        outputs = engine.state.output
        if len(self._items) >= self.max_cases or not isinstance(outputs, list):
            return
        if outputs and "evidence_maps" not in outputs[0]:  # a black box: nothing to show
            return
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [{}] * len(outputs)
        for out, item in zip(outputs, batch):
            if len(self._items) >= self.max_cases:
                break
            self._items.append(
                {
                    "image": out["image"].detach().cpu(),
                    "maps": out["evidence_maps"].detach().cpu(),
                    "label": out.get("label"),
                    "pred": out.get("pred"),
                    "mask": item.get("mask") if isinstance(item, dict) else None,
                }
            )

    def _write(self, engine: Engine) -> None:
        if not self._items or not is_main_process():
            return
        labels = [c["label"] for c in self._items]
        picture = evidence_gallery(
            [c["image"] for c in self._items],
            [c["maps"] for c in self._items],
            self.class_names,
            labels=(
                None
                if any(lbl is None for lbl in labels)
                else [int(torch.as_tensor(lbl).reshape(-1)[0]) for lbl in labels]
            ),
            probs=None if any(c["pred"] is None for c in self._items) else [c["pred"] for c in self._items],
            masks=[None if c["mask"] is None else c["mask"].detach().cpu() for c in self._items],
            cases_per_row=self.cases_per_row,
        )
        if self.output_path:
            with atomic_open(self.output_path, "wb") as f:
                picture.save(f, format="PNG")
        if self.writer is not None:
            self.writer.add_image(self.tag, np.asarray(picture), engine.state.epoch, dataformats="HWC")


def _explanation_summaries(metric: Any) -> dict[str, dict[str, Any]]:
    return {name: summarize(values) for name, values in getattr(metric, "values", {}).items()}


class MetricsReport:
    """Write the classification metrics of an evaluation run to JSON and CSV, and print them (attach to an evaluator).

    Args:
        metric: the :class:`~monai_softcam.metrics.classification.ClassificationMetrics` attached to the same evaluator.
        output_dir: folder receiving ``metrics_<split>.json`` and ``metrics_<split>.csv``.
        split: name of the evaluated split (used in file names and the printout).
        class_names: one name per class (for the confusion matrix).
        details: extra ``name: value`` lines for the JSON and the printout (e.g. checkpoint path).
        explanation: optional :class:`~monai_softcam.metrics.explanation.ExplanationMetrics` attached to the same
            evaluator: its means, 95 % bootstrap intervals and counts are reported too.
    """

    def __init__(
        self,
        metric: ClassificationMetrics,
        output_dir: str,
        split: str,
        class_names: Sequence[str],
        details: dict[str, Any] | None = None,
        printer: Callable[[str], None] = print,
        explanation: Any = None,
    ) -> None:
        self.metric = metric
        self.explanation = explanation
        self.output_dir = output_dir
        self.split = split
        self.class_names = list(class_names)
        self.details = dict(details or {})
        self.printer = printer

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine``: write and print the report when the run completes."""
        engine.add_event_handler(Events.COMPLETED, self)

    def _explanation_summary(self) -> dict[str, dict[str, Any]]:
        return {} if self.explanation is None else _explanation_summaries(self.explanation)

    def paths(self) -> tuple[str, str]:
        """The ``(json, csv)`` paths of the report: ``metrics_<split>.json`` and ``.csv`` in ``output_dir``."""
        base = os.path.join(self.output_dir, f"metrics_{self.split}")
        return base + ".json", base + ".csv"

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        report = dict(self.metric.report)
        json_path, csv_path = self.paths()
        content = {"split": self.split, "class_names": self.class_names, **self.details, "metrics": report}
        explained = self._explanation_summary()
        if explained:
            content["explanation_metrics"] = explained
        with atomic_open(json_path, "w") as f:
            json.dump(content, f, indent=2)
        with atomic_open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["split", "metric", "value"])
            for name, value in report.items():
                if name != "confusion_matrix":
                    writer.writerow([self.split, name, value])
            for name, summary in explained.items():
                writer.writerow([self.split, name, summary["mean"]])
        lines = [f"{self.split} metrics ({report.get('n', 0)} images):"]
        lines += [
            f"  {name:<12} {format_value(value)}"
            for name, value in report.items()
            if name not in ("n", "confusion_matrix")
        ]
        matrix = report.get("confusion_matrix")
        if matrix:
            width = max(len(n) for n in self.class_names) + 2
            lines.append("  confusion matrix (rows: true, columns: predicted):")
            lines.append("    " + " " * width + "".join(f"{n:>{width}}" for n in self.class_names))
            for name, row in zip(self.class_names, matrix):
                lines.append("    " + f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
        if explained:
            lines.append("  evidence maps (mean [95 % CI], images):")
            lines += [
                f"    {name:<24} {s['mean']:.4f} [{s['ci_low']:.4f}, {s['ci_high']:.4f}]  n={s['n']}"
                for name, s in explained.items()
            ]
        lines += [f"  {k}: {v}" for k, v in self.details.items()]
        lines.append(f"  metrics written to {json_path} and {csv_path}")
        self.printer("\n".join(lines))


class PredictionsWriter(_CollectThenWrite):
    """Collect one row per case and write a CSV when the run completes (atomically).

    Columns: ``image`` (the input file), ``prob_<class>`` per class, ``predicted_class``, ``logit_<class>``
    per class (for SoftCAM: the spatial mean of that class's evidence map), ``evidence_maps`` (the
    folder of the case's saved maps, if any, where it is once the run's outputs are in place).

    Args:
        path: the CSV file.
        class_names: one name per class.
    """

    def __init__(self, path: str, class_names: Sequence[str]) -> None:
        self.path = path
        self.class_names = list(class_names)
        self._items: list[list[Any]] = []  # one row per case

    def _collect(self, engine: Engine) -> None:
        for out in engine.state.output:
            probs = torch.as_tensor(out["pred"]).float().reshape(-1)
            image = out["image"]
            source = str(getattr(image, "meta", {}).get("filename_or_obj", ""))
            logits = torch.as_tensor(out.get("logits", torch.full_like(probs, float("nan")))).float().reshape(-1)
            row = [source] + [f"{p:.6f}" for p in probs.tolist()]
            row.append(self.class_names[int(probs.argmax())])
            row += [f"{v:.6f}" for v in logits.tolist()]
            row.append(out.get("evidence_maps_published", out.get("evidence_maps_dir", "")))
            self._items.append(row)

    def _write(self, engine: Engine) -> None:
        if not is_main_process():
            return
        with atomic_open(self.path, "w", newline="") as f:
            writer = csv.writer(f)
            header = ["image"] + [f"prob_{c}" for c in self.class_names] + ["predicted_class"]
            writer.writerow(header + [f"logit_{c}" for c in self.class_names] + ["evidence_maps"])
            writer.writerows(self._items)
        logger.info("wrote %d predictions to %s", len(self._items), self.path)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.10g}"
    return value


class RegionsWriter(_CollectThenWrite):
    """Collect the region rows of every case (:class:`~monai_softcam.transforms.evidence.RegionEvidenced`, under
    ``key``) and write them as one CSV when the run completes (atomically); nothing is written when no case has
    rows.

    Columns (:data:`COLUMNS`): ``image``, ``region``, ``label`` (empty for ``beyond_input``),
    ``class``, ``evidence_sum``, ``share_of_logit`` (for each image and class these add up over the
    regions to ``logit``), ``logit``, ``mean_density``, ``cells``, ``voxels``, ``size_mm`` (mm² or
    mm³) and ``in_view``; see :func:`~monai_softcam.regions.region_evidence`.

    Args:
        path: the CSV file.
        key: the key of the rows in each case's output.
    """

    #: the CSV columns, in order
    COLUMNS = (
        "image",
        "region",
        "label",
        "class",
        "evidence_sum",
        "share_of_logit",
        "logit",
        "mean_density",
        "cells",
        "voxels",
        "size_mm",
        "in_view",
    )

    def __init__(self, path: str, key: str = "region_rows") -> None:
        self.path = path
        self.key = key
        self._items: list[dict[str, Any]] = []  # region rows of every case

    def _collect(self, engine: Engine) -> None:
        for out in engine.state.output:
            self._items += list(out.get(self.key) or [])

    def _write(self, engine: Engine) -> None:
        if not self._items or not is_main_process():
            return
        with atomic_open(self.path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.COLUMNS)
            writer.writerows([_cell(row.get(c)) for c in self.COLUMNS] for row in self._items)
        logger.info("wrote %d region rows to %s", len(self._items), self.path)


class SkippedInputs:
    """The inputs an inference run leaves out while reading them (``skip_bad``: a file that passed the header
    check but fails to decode or preprocess, returned by :class:`~monai_softcam.data.datasets.SkipBadDataset`).

    It is the evaluator's ``iteration_update``: it takes them out of each batch (:data:`~monai_softcam.data.datasets.SKIPPED`,
    from :func:`~monai_softcam.data.datasets.collate_skipping`) and runs the rest through the evaluator's own iteration
    (a batch of none: no output). When the run completes, each is added, with its problem, to ``path`` (the
    ``skipped_inference.csv`` of the inputs whose header check failed). A run in which no input could be read
    fails, listing them.

    Args:
        path: the CSV of skipped inputs.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._skipped: list[Problem] = []
        self._run = 0  # inputs run through the network

    def __call__(self, engine: Engine, batch: Any) -> Any:
        if isinstance(batch, dict) and SKIPPED in batch:
            for item in batch.pop(SKIPPED):
                logger.warning("skip_bad: left out %s: %s", item["image"], item["problem"])
                self._skipped.append(Problem(f"inference input {item['image']}", item["problem"], item["image"]))
            if "image" not in batch:
                return []
        self._run += len(batch["image"]) if isinstance(batch, dict) and "image" in batch else 0
        return engine._iteration(engine, batch)

    def attach(self, engine: Engine) -> None:
        """Start afresh when ``engine`` starts; write the list when it completes."""
        engine.add_event_handler(Events.STARTED, lambda _: self._reset())
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self) -> None:
        self._skipped, self._run = [], 0

    def _write(self, engine: Engine) -> None:
        if not self._skipped or not is_main_process():
            return
        if not self._run:
            shown = "\n  ".join(str(p) for p in self._skipped[:20])
            raise DataListError(f"none of the inputs could be read ({len(self._skipped)} left out):\n  {shown}")
        earlier = []
        if os.path.isfile(self.path):  # the header check's
            with open(self.path, newline="", encoding="utf-8") as f:
                earlier = [Problem(r["where"], r["problem"], r["image"]) for r in csv.DictReader(f)]
        write_skipped_report(earlier + self._skipped, os.path.dirname(self.path), "inference")
        logger.warning(
            "skip_bad: %d input(s) failed to read and were left out; every skipped input is listed in %s",
            len(self._skipped),
            self.path,
        )
