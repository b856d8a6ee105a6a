"""One table from several explanation reports: the benchmark of ``scripts/demo_comparison.sh``.

Each report (``report.json`` of :mod:`monai_softcam.explanation_report`) is one data set, here one
demo variant; the table puts them side by side, per variant, model and method:

* the classification metrics of each model (accuracy and ROC AUC on the report's split);
* each explanation metric's mean and 95 % bootstrap CI, with its ``n``;
* the paired differences of the report (``report["paired"]``): SoftCAM's maps minus each other
  model/method on the same images, mean, 95 % CI and the permutation test's p-value. Between two
  SoftCAM models only the first minus the second is kept (the other is its negative). A pooled
  metric (the paper's top-k precision, one ratio of counts summed over images) has no per-image
  difference and is left out there (:func:`~monai_softcam.metrics.explanation.is_paired`).

A metric a report lacks (an older report, or one written without the paper's protocol) is shown
as ``-`` and left empty in the CSV, so the table keeps its shape across report versions.

    python -m monai_softcam.comparison --output_dir comparison small=comparison/small/report \\
        multifocal=comparison/multifocal/report shortcut=comparison/shortcut/report

writes ``comparison.md`` and ``comparison.csv`` into ``--output_dir`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

from .metrics.explanation import HIGHER_IS_BETTER, is_paired
from .text import direction_arrow, table
from .utils import MissingInputError, atomic_open

__all__ = [
    "CSV_COLUMNS",
    "TABLE_METRICS",
    "combine_reports",
    "comparison_markdown",
    "load_report",
    "main",
    "write_comparison",
]

#: the explanation metrics of the table, this project's protocol, then the paper's
TABLE_METRICS = (
    "activation_precision",
    "pointing_game",
    "topk_precision",
    "deletion_auc",
    "paper_activation_precision",
    "paper_topk_precision",
    "paper_deletion_auc",
)
CLASSIFICATION_METRICS = ("accuracy", "auc")
#: the columns of ``comparison.csv``: one row per variant, model, method (, versus) and metric
CSV_COLUMNS = (
    "section",
    "variant",
    "model",
    "method",
    "versus",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
    "n",
    "n_excluded",
    "p_value",
    "higher_is_better",
)


def load_report(path: str) -> dict[str, Any]:
    """The report dict of ``path``: a ``report.json`` or the report folder holding it."""
    file = os.path.join(path, "report.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise MissingInputError(f"no explanation report at {file} (run explain_eval first)")
    with open(file) as f:
        return json.load(f)


def _number(value: Any) -> float | None:
    """A finite float, or None for what the table shows as missing (absent, None, NaN)."""
    if value is None or value == "":
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _direction(metric: str, entry: Mapping[str, Any] | None = None) -> bool | None:
    """Higher is better? The report's own word first (it names metrics this version may not know)."""
    if entry and entry.get("higher_is_better") is not None:
        return bool(entry["higher_is_better"])
    return HIGHER_IS_BETTER.get(metric)


def _row(
    section: str,
    variant: str,
    model: str,
    method: str,
    metric: str,
    versus: str = "",
    entry: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    entry = entry or {}
    mean = _number(entry.get("mean"))
    n = int(entry["n"]) if entry.get("n") is not None else None
    present = mean is not None and n != 0
    row = {
        "section": section,
        "variant": variant,
        "model": model,
        "method": method,
        "versus": versus,
        "metric": metric,
        "higher_is_better": _direction(metric, entry),
    }
    for key in ("mean", "ci_low", "ci_high", "p_value"):
        row[key] = _number(entry.get(key)) if present else None
    row["n"] = n if present else None
    row["n_excluded"] = int(entry["n_excluded"]) if present and entry.get("n_excluded") is not None else None
    return row


def _paired_pairs(paired: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The ``(softcam, versus)`` pairs of the report's paired rows, in order, one direction each."""
    pairs: list[tuple[str, str]] = []
    for row in paired:
        pair = (row["softcam"], row["versus"])
        if pair not in pairs and (pair[1], pair[0]) not in pairs:
            pairs.append(pair)
    return pairs


def combine_reports(
    reports: Mapping[str, str | Mapping[str, Any]], metrics: Sequence[str] = TABLE_METRICS
) -> list[dict[str, Any]]:
    """The rows of the combined table (those of ``comparison.csv``, columns :data:`CSV_COLUMNS`).

    Args:
        reports: ``{variant: report}``, each a report dict or the path of its ``report.json`` (or
            folder); the table keeps this order, and the report's order of models and methods.
        metrics: the explanation metrics (default :data:`TABLE_METRICS`).

    Returns, per variant: a ``classification`` row per model and metric (accuracy, ROC AUC; ``n``
    images), an ``explanation`` row per model, method and metric, and a ``paired`` row per
    ``(SoftCAM pair, other pair)`` and metric but the pooled ones (``model``/``method`` the SoftCAM
    side, ``versus`` the other as ``model/method``). A metric the report lacks gets a row with
    empty values.
    """
    rows: list[dict[str, Any]] = []
    paired_metrics = _paired_metrics(metrics)
    for variant, report in reports.items():
        report = load_report(report) if isinstance(report, (str, os.PathLike)) else report
        for model, cls in report.get("classification", {}).items():
            for metric in CLASSIFICATION_METRICS:
                entry = {"mean": cls.get(metric), "n": cls.get("n"), "higher_is_better": True}
                rows.append(_row("classification", variant, model, "", metric, entry=entry))
        for model, methods in report.get("explanation", {}).items():
            for method, values in methods.items():
                rows += [_row("explanation", variant, model, method, m, entry=values.get(m)) for m in metrics]
        paired = report.get("paired", [])
        found = {(r["softcam"], r["versus"], r["metric"]): r for r in paired}
        for reference, other in _paired_pairs(paired):
            model, _, method = reference.partition("/")
            rows += [
                _row("paired", variant, model, method, m, versus=other, entry=found.get((reference, other, m)))
                for m in paired_metrics
            ]
    return rows


def _paired_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics that have paired differences (:func:`~monai_softcam.metrics.explanation.is_paired`)."""
    return [m for m in metrics if is_paired(m)]


def _arrow(higher: bool | None) -> str:
    arrow = direction_arrow(higher)
    return f" {arrow}" if arrow else ""


def _interval(row: Mapping[str, Any], signed: bool = False) -> str:
    if row["mean"] is None:
        return "-"
    f = "{:+.3f}" if signed else "{:.3f}"
    ci = "" if row["ci_low"] is None else f" [{f.format(row['ci_low'])}, {f.format(row['ci_high'])}]"
    p = "" if row["p_value"] is None else f" p={row['p_value']:.2g}"
    return f.format(row["mean"]) + ci + p


def _grouped(rows: Sequence[Mapping[str, Any]], section: str, key: Sequence[str]) -> dict[tuple, dict[str, Mapping]]:
    """``{key values: {metric: row}}`` of one section, in the rows' order."""
    groups: dict[tuple, dict[str, Mapping]] = {}
    for row in rows:
        if row["section"] == section:
            groups.setdefault(tuple(row[k] for k in key), {})[row["metric"]] = row
    return groups


def comparison_markdown(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """The Markdown of :func:`combine_reports`'s rows: classification (one line per variant),
    explanation metrics (mean [95 % CI]) and paired differences (mean [95 % CI] p)."""
    names = {m: m.replace("_", " ") for m in metrics}
    known = {r["metric"]: r["higher_is_better"] for r in rows if r["higher_is_better"] is not None}
    directions = {m: known.get(m, HIGHER_IS_BETTER.get(m)) for m in metrics}

    classification = _grouped(rows, "classification", ("variant", "model"))
    models = list(dict.fromkeys(model for _, model in classification))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lines = []
    for variant in variants:
        cells = [variant]
        counts = [r["n"] for (v, _), g in classification.items() if v == variant for r in g.values() if r["n"]]
        cells.append(str(counts[0]) if counts else "-")
        for model in models:
            g = classification.get((variant, model), {})
            cells += [_interval(g[m]) if m in g else "-" for m in CLASSIFICATION_METRICS]
        lines.append(cells)
    head = ["variant", "images"] + [
        f"{model} {'ROC AUC' if m == 'auc' else m}" for model in models for m in CLASSIFICATION_METRICS
    ]
    text = "## Classification (the report's split)\n\n" + table(head, lines)

    explanation = _grouped(rows, "explanation", ("variant", "model", "method"))
    lines = [[*key, *(_interval(g[m]) if m in g else "-" for m in metrics)] for key, g in explanation.items()]
    head = ["variant", "model", "method"] + [names[m] + _arrow(directions[m]) for m in metrics]
    text += "\n## Explanation metrics: mean [95 % bootstrap CI]\n\n" + table(head, lines)
    text += _counts(explanation, metrics) + "\n-: not in the report, or no image to measure it on.\n"

    paired = _grouped(rows, "paired", ("variant", "model", "method", "versus"))
    paired_metrics = _paired_metrics(metrics)
    lines = [
        [
            key[0],
            f"{key[1]}/{key[2]}",
            key[3],
            *(_interval(g[m], signed=True) if m in g else "-" for m in paired_metrics),
        ]
        for key, g in paired.items()
    ]
    head = ["variant", "SoftCAM", "versus"] + ["Δ " + names[m] + _arrow(directions[m]) for m in paired_metrics]
    pooled = [names[m] for m in metrics if not is_paired(m)]
    text += (
        "\n## Paired differences: SoftCAM minus the other, image by image\n\n"
        "Mean [95 % bootstrap CI] and the p-value of a paired sign-flip test; Δ > 0: SoftCAM's map scores "
        "higher (better for ↑, worse for ↓)."
        + (
            f" Not here: {', '.join(pooled)}, a ratio of counts pooled over the images, which has no "
            "per-image difference (its CI is in the table above)."
            if pooled
            else ""
        )
        + "\n\n"
        + table(head, lines)
    )
    return text


def _counts(explanation: Mapping[tuple, Mapping[str, Mapping]], metrics: Sequence[str]) -> str:
    """One line per variant: on how many images the metrics were measured (localisation: the
    annotated images; deletion: those every model classifies correctly), from its first row."""
    lines, seen = [], set()
    for (variant, *_), g in explanation.items():
        if variant in seen:
            continue
        seen.add(variant)
        by_count: dict[int, list[str]] = {}
        for m in metrics:
            if m in g and g[m]["n"] is not None:
                by_count.setdefault(g[m]["n"], []).append(m.replace("_", " "))
        counts = "; ".join(f"{n} for {', '.join(names)}" for n, names in by_count.items())
        lines.append(f"- {variant}: images: {counts or '-'}")
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def write_comparison(
    reports: Mapping[str, str | Mapping[str, Any]], output_dir: str, metrics: Sequence[str] = TABLE_METRICS
) -> str:
    """Write ``comparison.md`` and ``comparison.csv`` of :func:`combine_reports` into ``output_dir``;
    return the Markdown."""
    rows = combine_reports(reports, metrics)
    text = "# SoftCAM against post-hoc explanations\n\n" + comparison_markdown(rows, metrics)
    os.makedirs(output_dir, exist_ok=True)
    with atomic_open(os.path.join(output_dir, "comparison.md"), "w") as f:
        f.write(text)
    with atomic_open(os.path.join(output_dir, "comparison.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows({k: _csv_value(row[k]) for k in CSV_COLUMNS} for row in rows)
    return text


def _variant_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected VARIANT=PATH, got {text!r}")
    return name, path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monai_softcam.comparison --output_dir DIR VARIANT=PATH ...`` (see the module's description)."""
    parser = argparse.ArgumentParser(
        prog="python -m monai_softcam.comparison",
        description="Combine explanation reports into one table: comparison.md and .csv.",
    )
    parser.add_argument(
        "reports",
        nargs="+",
        type=_variant_path,
        metavar="VARIANT=PATH",
        help="a report.json (or its folder) per variant, in the table's order",
    )
    parser.add_argument("--output_dir", required=True, help="where comparison.md and comparison.csv go")
    args = parser.parse_args(argv)
    reports = dict(args.reports)
    if len(reports) != len(args.reports):
        parser.error("each variant may be named once")
    print(write_comparison(reports, args.output_dir), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
