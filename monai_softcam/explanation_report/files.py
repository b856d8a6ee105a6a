"""Step 3 of the explanation report: its files (JSON, CSV, Markdown tables, figures, gallery and ``index.html``)."""

from __future__ import annotations

import csv
import html
import json
import os
from typing import Any, Sequence

import numpy as np

from ..metrics.explanation import CURVE_METRICS, higher_is_better
from ..networks.outputs import upsample_map
from ..text import direction_arrow, table
from ..utils import atomic_open
from ..visualize import GalleryCase, render_gallery
from .aggregation import Aggregated
from .collection import CURVES, Collected

PAIRED_METRICS = ("activation_precision", "pointing_game", "topk_precision", "deletion_auc")


PAPER_PAIRED_METRICS = ("paper_activation_precision", "paper_deletion_auc")


def _arrow(name: str) -> str:
    return direction_arrow(higher_is_better(name))


def paired_table(report: dict[str, Any], metrics: Sequence[str] = PAIRED_METRICS) -> str:
    """SoftCAM minus each other model/method, per image: mean difference [95 % CI] (p, n)."""
    head = ["SoftCAM", "versus"] + [f"Δ {m.replace('_', ' ')} {_arrow(m)}" for m in metrics]
    rows = []
    found: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in report.get("paired", []):
        found.setdefault((row["softcam"], row["versus"]), {})[row["metric"]] = row
    for (reference, other), by_metric in found.items():
        cells = [reference, other]
        for m in metrics:
            r = by_metric.get(m)
            cells.append(
                "-"
                if not r or r["n"] == 0
                else f"{r['mean']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] (p={r['p_value']:.3g}, n={r['n']})"
            )
        rows.append(cells)
    return table(head, rows)


def write(output_dir: str, aggregated: Aggregated, collected: Collected, class_names: Sequence[str]) -> None:
    """Step 3: write every file of the report (see the module's description) into ``output_dir``."""
    os.makedirs(output_dir, exist_ok=True)
    report, per_case = aggregated.report, aggregated.per_case
    with atomic_open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)
    with atomic_open(os.path.join(output_dir, "report.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["model", "method", "metric", "mean", "ci_low", "ci_high", "n", "n_excluded", "higher_is_better"]
        )
        for model, cls in report["classification"].items():
            for name, value in cls.items():
                if isinstance(value, float):
                    writer.writerow([model, "", name, value, "", "", cls["n"], 0, True])
        for model, methods in report["explanation"].items():
            for method, metrics in methods.items():
                for name, s in metrics.items():
                    writer.writerow(
                        [
                            model,
                            method,
                            name,
                            s["mean"],
                            s["ci_low"],
                            s["ci_high"],
                            s["n"],
                            s["n_excluded"],
                            s["higher_is_better"],
                        ]
                    )
    with atomic_open(os.path.join(output_dir, "cases.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        names = sorted({n for metrics in per_case.values() for n in metrics})
        writer.writerow(["case", "label", "model", "method", "predicted", *names])
        labels = collected.labels
        for (model, method), metrics in per_case.items():
            predicted = collected.probs[model].argmax(dim=1)
            for i in range(labels.numel()):
                row = [float(metrics[n][i]) if n in metrics else "" for n in names]
                writer.writerow([i, int(labels[i]), model, method, int(predicted[i]), *row])
    with atomic_open(os.path.join(output_dir, "sanity.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "method", "layer", "spearman_mean", "spearman_std"])
        writer.writeheader()
        writer.writerows(collected.sanity)
    _plot_curves(os.path.join(output_dir, "faithfulness.png"), aggregated.mean_curves, report["settings"])
    curve = topk_curve_table(report)
    if curve:
        _plot_topk_curve(os.path.join(output_dir, "topk_curve.png"), report)
    elif os.path.exists(os.path.join(output_dir, "topk_curve.png")):  # an earlier report's, not this one's
        os.remove(os.path.join(output_dir, "topk_curve.png"))
    _plot_sanity(os.path.join(output_dir, "sanity.png"), collected.sanity)
    sheet = render_gallery(_gallery_cases(collected.gallery, class_names), tile=140, caption_chars=26)
    with atomic_open(os.path.join(output_dir, "gallery.png"), "wb") as f:
        sheet.save(f, format="PNG")
    with atomic_open(os.path.join(output_dir, "table.md"), "w") as f:
        f.write("This project's protocol:\n\n" + markdown_table(report))
        f.write("\nThe paper's protocol:\n\n" + markdown_table(report, PAPER_TABLE_METRICS))
        if curve:
            f.write("\nThe paper's top-k curve (pooled precision; true-positive images only in brackets):\n\n" + curve)
    with atomic_open(os.path.join(output_dir, "paired.csv"), "w", newline="") as f:
        columns = ["softcam", "versus", "metric", "mean", "ci_low", "ci_high", "n", "p_value", "higher_is_better"]
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(report.get("paired", []))
    with atomic_open(os.path.join(output_dir, "paired.md"), "w") as f:
        f.write(paired_table(report) + "\n" + paired_table(report, PAPER_PAIRED_METRICS))
    _write_html(os.path.join(output_dir, "index.html"), report)


def _gallery_cases(gallery: list[dict[str, Any]], class_names: Sequence[str]) -> list[GalleryCase]:
    """One gallery row per case: the image, SoftCAM's maps of every class (one colour scale; the first SoftCAM
    model's), then each post-hoc method's map (each on its own scale)."""
    cases = []
    for case in gallery:
        groups = []
        if case["softcam"] is not None:
            up = upsample_map(case["softcam"].float(), case["image"].shape[1:])
            groups.append([(f"SoftCAM: {name}", up[c]) for c, name in enumerate(class_names)])
        groups += [[(f"{model}: {method}", m)] for (model, method), m in case["maps"].items() if method != "softcam"]
        cases.append(GalleryCase(case["image"], f"label: {class_names[case['label']]}", groups, case["mask"]))
    return cases


def _summary_text(report: dict[str, Any], output_dir: str) -> str:
    lines = [
        f"explanation report ({report['images']} images; faithfulness on the {report['faithfulness_images']} "
        f"that every model classifies correctly):"
    ]
    for model, cls in report["classification"].items():
        lines.append(f"  {model}: accuracy {cls['accuracy']:.4f}, auc {cls['auc']:.4f}")
    names = ["activation_precision", "pointing_game", "topk_precision", "deletion_auc", "insertion_auc"]
    lines.append("  " + f"{'model / method':<32}" + "".join(f"{n:>24}" for n in names))
    for model, methods in report["explanation"].items():
        for method, metrics in methods.items():
            cells = [f"{metrics[n]['mean']:.3f}" if n in metrics else "-" for n in names]
            lines.append("  " + f"{model + ' / ' + method:<32}" + "".join(f"{c:>24}" for c in cells))
    paper = [
        "paper_activation_precision",
        "paper_activation_sensitivity",
        "paper_topk_precision",
        "paper_topk_precision_tp",
        "paper_deletion_auc",
    ]
    lines.append(
        f"  the paper's protocol (deletion on the {report.get('paper_deletion_images', 0)} diseased images that "
        "every model classifies correctly):"
    )
    width = max(len(n) for n in paper) + 2
    lines.append("  " + f"{'model / method':<32}" + "".join(f"{n:>{width}}" for n in paper))
    for model, methods in report["explanation"].items():
        for method, metrics in methods.items():
            cells = [f"{metrics[n]['mean']:.3f}" if n in metrics else "-" for n in paper]
            lines.append("  " + f"{model + ' / ' + method:<32}" + "".join(f"{c:>{width}}" for c in cells))
    lines.append(f"  report: {os.path.join(output_dir, 'index.html')} ({report['seconds']} s)")
    return "\n".join(lines)


TABLE_METRICS = ("activation_precision", "pointing_game", "topk_precision", "deletion_auc", "insertion_auc")


PAPER_TABLE_METRICS = (
    "paper_consistency",
    "paper_activation_precision",
    "paper_activation_sensitivity",
    "paper_topk_precision",
    "paper_topk_precision_tp",
    "paper_topk_patches",
    "paper_deletion_auc",
)


def markdown_table(report: dict[str, Any], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """The headline table: per model and method, the model's ROC AUC and each metric's mean [95 % CI]."""
    head = ["model", "method", "ROC AUC"] + [f"{m.replace('_', ' ')} {_arrow(m)}".strip() for m in metrics]
    rows = []
    for model, methods in report["explanation"].items():
        for method, values in methods.items():
            cells = [model, method, f"{report['classification'][model]['auc']:.3f}"]
            for m in metrics:
                v = values.get(m)
                cells.append(
                    "-" if not v or v["n"] == 0 else f"{v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
                )
            rows.append(cells)
    return table(head, rows)


def _figure():
    import matplotlib  # heavy: only for the report's figures

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: only for the report's figures

    return plt


def _save(fig, path: str) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")


def _plot_curves(path: str, mean_curves, settings) -> None:
    plt = _figure()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    titles = {
        "deletion": "deletion: relative confidence (lower area is better)",
        "insertion": "insertion: relative confidence (higher area is better)",
        "paper_deletion": "the paper's deletion, diseased images (lower is better)",
    }
    for ax, kind in zip(axes, CURVES):
        for (model, method), c in mean_curves.items():
            if c.get(kind):
                x = np.linspace(0, 1, len(c[kind])) * (len(c[kind]) - 1)
                ax.plot(x, c[kind], marker="o", ms=3, label=f"{model} / {method}")
        ax.set_title(titles[kind], fontsize=10)
        ax.set_xlabel(
            f"patches of {settings['patch']} px {'restored' if kind == 'insertion' else 'removed'}"
            + (", ranked by max" if kind == "paper_deletion" else "")
        )
        ax.set_ylabel("accuracy (2 classes) or min(p_i, p) / p" if kind == "paper_deletion" else "min(p_i, p) / p")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    if any(c.get(kind) for c in mean_curves.values() for kind in CURVES):
        axes[1].legend(fontsize=8, loc="lower right")
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no image that every model classifies correctly", ha="center", transform=ax.transAxes)
    _save(fig, path)
    plt.close(fig)


def _curve_points(metrics: dict[str, Any], name: str, k: int) -> list[float]:
    points = [metrics.get(f"{name}@{i}") for i in range(1, k + 1)]
    return [p["mean"] if p and p["n"] else float("nan") for p in points]


def topk_curve_table(report: dict[str, Any]) -> str:
    """The paper's top-k curve as a Markdown table: one row per k, one column per model and method, the pooled
    precision and, in brackets, the true-positive-only one (empty when no pair has the curve)."""
    k = int(report["settings"].get("topk_curve") or 0)
    pairs = [
        (model, method, metrics)
        for model, methods in report["explanation"].items()
        for method, metrics in methods.items()
        if f"{CURVE_METRICS[0]}@1" in metrics
    ]
    if not k or not pairs:
        return ""
    columns = {
        f"{model} / {method}": (_curve_points(m, CURVE_METRICS[0], k), _curve_points(m, CURVE_METRICS[1], k))
        for model, method, m in pairs
    }
    fmt = lambda v: "-" if v != v else f"{v:.3f}"  # noqa: E731
    rows = [[str(i + 1)] + [f"{fmt(p[i])} ({fmt(tp[i])})" for p, tp in columns.values()] for i in range(k)]
    return table(["k"] + list(columns), rows)


def _plot_topk_curve(path: str, report: dict[str, Any]) -> None:
    plt = _figure()
    k = int(report["settings"]["topk_curve"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, name, title in zip(
        axes, CURVE_METRICS[:2], ("all images", "images the model assigns to the explained class (the paper's plot)")
    ):
        for model, methods in report["explanation"].items():
            for method, metrics in methods.items():
                if f"{name}@1" in metrics:
                    ax.plot(
                        range(1, k + 1), _curve_points(metrics, name, k), marker="o", ms=3, label=f"{model} / {method}"
                    )
        ax.set_title(f"top-k precision, {title}", fontsize=10)
        ax.set_xlabel(f"top-k patches of {report['settings']['patch']} px (above the threshold)")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision (patches on the annotation)")
    axes[0].legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def _plot_sanity(path: str, sanity) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 4))
    series: dict[str, list[dict[str, Any]]] = {}
    for row in sanity:
        series.setdefault(f"{row['model']} / {row['method']}", []).append(row)
    positions: dict[int, list[str]] = {}
    for name, rows in series.items():
        ax.plot(range(len(rows)), [r["spearman_mean"] for r in rows], marker="o", ms=3, label=name)
        for i, r in enumerate(rows):
            label = r["layer"].replace("backbone.features.", "")
            if label not in positions.setdefault(i, []):
                positions[i].append(label)
    ax.set_xticks(sorted(positions), ["/".join(positions[i]) for i in sorted(positions)], rotation=45, ha="right")
    ax.set_ylabel("Spearman rank correlation with the original map")
    ax.set_title("cascading randomisation (from the output layer down): should drop")
    ax.axhline(0, color="grey", lw=0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def _write_html(path: str, report: dict[str, Any]) -> None:
    def cell(s: dict[str, Any]) -> str:
        if s["n"] == 0:
            return "<td>-</td>"
        return f"<td>{s['mean']:.3f} <small>[{s['ci_low']:.3f}, {s['ci_high']:.3f}]</small></td>"

    names = sorted(
        {n for methods in report["explanation"].values() for m in methods.values() for n in m if "@" not in n}
    )
    arrows = {True: " &uarr;", False: " &darr;", None: ""}
    head = "".join(f"<th>{html.escape(n)}{arrows[higher_is_better(n)]}</th>" for n in names)
    curve = topk_curve_table(report)
    curve_section = (
        ""
        if not curve
        else "<h2>The paper's top-k curve</h2><p>Pooled top-k localisation precision for k = 1 .. "
        f"{report['settings']['topk_curve']} (<code>paper_topk_precision@k</code>; in brackets on the images the model "
        "assigns to the explained class, the curve the paper plots); <code>report.csv</code> has every point with its "
        'CI.</p><img src="topk_curve.png" alt="top-k precision curve">'
    )
    body = []
    for model, methods in report["explanation"].items():
        for method, metrics in methods.items():
            cells = "".join(cell(metrics[n]) if n in metrics else "<td>-</td>" for n in names)
            body.append(f"<tr><td>{html.escape(model)}</td><td>{html.escape(method)}</td>{cells}</tr>")
    cls_names = ["accuracy", "auc", "sensitivity", "specificity", "precision", "auprc"]
    cls_rows = "".join(
        f"<tr><td>{html.escape(m)}</td>" + "".join(f"<td>{c[n]:.4f}</td>" for n in cls_names if n in c) + "</tr>"
        for m, c in report["classification"].items()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>SoftCAM explanation report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child,td:nth-child(2){{text-align:left}}
small{{color:#666}} img{{max-width:100%;border:1px solid #eee}}</style></head><body>
<h1>Explanation report</h1>
<p>{report['images']} images; explained class: {html.escape(str(report['explained_class'] or "each image's label"))};
deletion and insertion on the {report['faithfulness_images']} images that every model classifies correctly
(the paper's deletion, <code>paper_deletion_auc</code>, on the {report.get('paper_deletion_images', 0)} diseased ones);
localisation metrics on images with a non-empty annotation. Columns <code>paper_*</code> follow the paper's
protocol (cubic upsampling, dilated masks, top-k above a threshold pooled over images; see
<code>monai_softcam.metrics.explanation</code>), the others this project's. Values: mean [95 % bootstrap CI];
&uarr; higher is better, &darr; lower is better. Settings: {html.escape(json.dumps(report['settings']))}.</p>
<h2>Classification</h2>
<table><tr><th>model</th>{''.join(f'<th>{n}</th>' for n in cls_names)}</tr>{cls_rows}</table>
<h2>Explanations</h2>
<table><tr><th>model</th><th>method</th>{head}</tr>{''.join(body)}</table>
<p>Tables: <a href="report.csv">report.csv</a>, per image: <a href="cases.csv">cases.csv</a>,
<a href="report.json">report.json</a>.</p>
{curve_section}
<h2>Faithfulness curves</h2><img src="faithfulness.png" alt="deletion and insertion curves">
<h2>Sanity check: cascading model-parameter randomisation</h2>
<p>The rank correlation between each map and the map of the progressively randomised model must drop
(<a href="sanity.csv">sanity.csv</a>).</p><img src="sanity.png" alt="randomisation check">
<h2>Gallery</h2><p>Yellow outline: ground truth. Red: evidence for the class, blue: against it.</p>
<img src="gallery.png" alt="maps of each method">
<p><small>Written in {report['seconds']} s.</small></p>
</body></html>
"""
    with atomic_open(path, "w") as f:
        f.write(page)
