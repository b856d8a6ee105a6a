"""The demo benchmark: the combined table of several explanation reports (monai_softcam.comparison)
and scripts/demo_comparison.sh's command line, with a tiny end-to-end run of the script."""

import csv
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import metric_settings

from monai_softcam.comparison import CSV_COLUMNS, TABLE_METRICS, combine_reports, main, write_comparison
from monai_softcam.explanation_report import Collected, aggregate
from monai_softcam.metrics.explanation import WEIGHTS

PAIRED_METRICS = [m for m in TABLE_METRICS if m not in WEIGHTS]  # a pooled metric has no per-image difference

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
SCRIPT = os.path.join(REPO_ROOT, "scripts", "demo_comparison.sh")
CLASSES = ["no_lesion", "lesion"]
PAIRS = [("softcam_sparse", "softcam"), ("softcam_dense", "softcam"), ("blackbox", "gradcam")]


def _collected(seed: int, paper: bool) -> Collected:
    """A report's raw material for 3 models on 16 images: half of them with a lesion (the others
    NaN in the localisation metrics), the paper's metrics only when ``paper``."""
    g = torch.Generator().manual_seed(seed)
    n = 16
    labels = torch.arange(n) % 2
    lesion = labels == 1
    probs = {}
    for i, model in enumerate(m for m, _ in PAIRS):
        p = torch.where(lesion, 0.8, 0.2)
        p[i] = 1 - p[i]  # each model gets one image wrong, another one each
        probs[model] = torch.stack([1 - p, p], dim=1)
    values, curves = {}, {}
    for k, pair in enumerate(PAIRS):
        names = ["activation_precision", "pointing_game", "topk_precision"] + (
            ["paper_activation_precision"] if paper else []
        )
        values[pair] = {}
        for name in names:
            v = (torch.rand(n, generator=g) * 0.5 + 0.1 * k).float()
            values[pair][name] = torch.where(lesion, v, torch.full_like(v, float("nan")))
        start = torch.rand(n, 1, generator=g) * 0.2 + 0.8
        decay = torch.linspace(1.0, 0.0, 5)[None] ** (1 + k)
        curves[pair] = {"deletion": start * decay, "insertion": start * (1 - decay)}
    return Collected(
        pairs=list(PAIRS),
        labels=labels,
        explained_class=1,
        settings=metric_settings(explained_class=1),
        thresholds={"softcam": 1.0},
        probs=probs,
        values=values,
        curves=curves,
    )


def _report(seed: int, paper: bool) -> dict:
    """A report.json as the explanation report writes it (NaN and all)."""
    report = aggregate(_collected(seed, paper), CLASSES, seed=seed).report
    return json.loads(json.dumps(report, default=float))


def _cell(summary: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(summary['mean'])} [{f.format(summary['ci_low'])}, {f.format(summary['ci_high'])}]"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    small = _report(0, paper=False)  # a report of before the paper's protocol
    with open(folder / "report.json", "w") as f:
        json.dump(small, f)
    return {"small": small, "multifocal": _report(1, paper=True)}, str(folder)


def test_table_has_every_model_method_and_metric_with_dashes_for_what_a_report_lacks(reports, tmp_path):
    variants, folder = reports
    small, multifocal = variants["small"], variants["multifocal"]
    text = write_comparison({"small": folder, "multifocal": multifocal}, str(tmp_path))  # a path and a dict
    assert open(tmp_path / "comparison.md", encoding="utf-8").read() == text
    lines = text.splitlines()

    for variant, report in (("small", small), ("multifocal", multifocal)):
        cls = report["classification"]
        row = next(line for line in lines if line.startswith(f"| {variant} | 16 | "))  # the classification line
        assert (
            row
            == f"| {variant} | 16 | "
            + " | ".join(f"{cls[m]['accuracy']:.3f} | {cls[m]['auc']:.3f}" for m, _ in PAIRS)
            + " |"
        )
        for model, method in PAIRS:
            values = report["explanation"][model][method]
            expected = [_cell(values[m]) if m in values else "-" for m in TABLE_METRICS]
            assert f"| {variant} | {model} | {method} | " + " | ".join(expected) + " |" in lines
    small_row = next(line for line in lines if line.startswith("| small | blackbox | gradcam |"))
    assert small_row.endswith("| - | - | - |")  # paper_activation_precision, paper_topk_precision, paper_deletion_auc
    multifocal_row = next(line for line in lines if line.startswith("| multifocal | blackbox | gradcam |"))
    assert multifocal_row.endswith("| - | - |") and not multifocal_row.endswith("| - | - | - |")
    head = next(line for line in lines if line.startswith("| variant | model | method |"))
    assert "activation precision ↑" in head and "deletion auc ↓" in head and "paper deletion auc ↓" in head


def test_paired_rows_are_softcam_minus_each_other_pair_once(reports, tmp_path):
    small = reports[0]["small"]
    rows = combine_reports({"small": small})
    paired = [r for r in rows if r["section"] == "paired"]
    pairs = list(dict.fromkeys((f"{r['model']}/{r['method']}", r["versus"]) for r in paired))
    # the report also has dense minus sparse: the negative of sparse minus dense, left out
    assert ("softcam_dense/softcam", "softcam_sparse/softcam") in {(r["softcam"], r["versus"]) for r in small["paired"]}
    assert pairs == [
        ("softcam_sparse/softcam", "softcam_dense/softcam"),
        ("softcam_sparse/softcam", "blackbox/gradcam"),
        ("softcam_dense/softcam", "blackbox/gradcam"),
    ]
    source = {(r["softcam"], r["versus"], r["metric"]): r for r in small["paired"]}
    text = write_comparison({"small": small}, str(tmp_path))
    lines = text.splitlines()
    assert "paper_topk_precision" in TABLE_METRICS and "paper_topk_precision" not in PAIRED_METRICS
    head = next(line for line in lines if line.startswith("| variant | SoftCAM | versus |"))
    assert "Δ paper activation precision ↑" in head and "topk" in head and "paper topk" not in head
    assert "Not here: paper topk precision" in text
    for reference, other in pairs:
        cells = []
        for m in PAIRED_METRICS:
            r = source.get((reference, other, m))
            cells.append("-" if r is None else _cell(r, signed=True) + f" p={r['p_value']:.2g}")
        assert f"| small | {reference} | {other} | " + " | ".join(cells) + " |" in lines
    row = next(r for r in paired if r["versus"] == "blackbox/gradcam" and r["metric"] == "deletion_auc")
    expected = source[(f"{row['model']}/{row['method']}", "blackbox/gradcam", "deletion_auc")]
    assert (row["mean"], row["ci_low"], row["ci_high"], row["n"], row["p_value"]) == pytest.approx(
        (expected["mean"], expected["ci_low"], expected["ci_high"], expected["n"], expected["p_value"])
    )
    assert row["higher_is_better"] is False and 0 < row["p_value"] <= 1


def test_csv_keeps_one_row_per_variant_model_method_and_metric(reports, tmp_path):
    small, multifocal = reports[0]["small"], reports[0]["multifocal"]
    write_comparison({"small": small, "multifocal": multifocal}, str(tmp_path))
    with open(tmp_path / "comparison.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    for variant, report in (("small", small), ("multifocal", multifocal)):
        mine = [r for r in rows if r["variant"] == variant]
        sections = [r["section"] for r in mine]
        assert sections.count("classification") == 2 * 3  # accuracy and AUC of each model
        assert sections.count("explanation") == len(PAIRS) * len(TABLE_METRICS)
        assert sections.count("paired") == 3 * len(PAIRED_METRICS)
        for r in mine:
            if r["section"] == "explanation":
                summary = report["explanation"][r["model"]][r["method"]].get(r["metric"])
                if summary is None:  # missing from the report: an empty row
                    assert r["mean"] == r["ci_low"] == r["n"] == ""
                else:
                    assert float(r["mean"]) == pytest.approx(summary["mean"]) and int(r["n"]) == summary["n"]
            if r["section"] == "classification" and r["metric"] == "auc":
                assert float(r["mean"]) == pytest.approx(report["classification"][r["model"]]["auc"])
    ap = [
        r
        for r in rows
        if r["variant"] == "small" and r["section"] == "explanation" and r["metric"] == "activation_precision"
    ]
    assert {int(r["n"]) for r in ap} == {8} and {int(r["n_excluded"]) for r in ap} == {8}  # healthy images excluded


def test_a_metric_nobody_measured_is_a_dash_not_nan(reports):
    report = json.loads(json.dumps(reports[0]["small"]))
    report["explanation"]["blackbox"]["gradcam"]["deletion_auc"].update(mean=float("nan"), n=0)
    rows = combine_reports({"small": report})
    row = next(
        r for r in rows if r["model"] == "blackbox" and r["metric"] == "deletion_auc" and r["section"] == "explanation"
    )
    assert row["mean"] is None and row["n"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for r in rows for v in r.values())


def test_command_line_writes_both_files_and_prints_the_table(reports, tmp_path, capsys):
    folder = reports[1]
    assert main(["--output_dir", str(tmp_path), f"small={folder}", f"multifocal={folder}/report.json"]) == 0
    printed = capsys.readouterr().out
    assert printed == open(tmp_path / "comparison.md", encoding="utf-8").read()
    assert (tmp_path / "comparison.csv").stat().st_size > 0
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path), "small"])  # not VARIANT=PATH
    assert exit_info.value.code == 2
    with pytest.raises(FileNotFoundError, match="no explanation report"):
        main(["--output_dir", str(tmp_path), f"small={tmp_path / 'nothing'}"])


def _script(*args, env=None, timeout=30):
    return subprocess.run(
        ["bash", SCRIPT, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fast"], "unknown option '--fast'"),
        (["--quick", "a", "b"], "one OUTPUT_DIR only"),
        (["-x"], "unknown option"),
    ],
)
def test_script_refuses_bad_arguments_before_any_work(args, message):
    proc = _script(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "usage: bash scripts/demo_comparison.sh [--quick] [OUTPUT_DIR]" in proc.stderr
    assert proc.stdout == ""


def test_script_refuses_a_variant_without_a_preset_and_prints_its_usage():
    proc = _script(env={**os.environ, "DEMO_COMPARISON_VARIANTS": "small nonexistent"})
    assert proc.returncode == 2 and "no preset configs/demo_nonexistent.yaml" in proc.stderr
    proc = _script("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ")


# 32-px images, a few dozen of them, one epoch; every costly part of the report at its minimum
TINY_TRAIN = (
    "--image_size [32,32] --demo_data#radius [3.0,5.0] --demo_data#num_train 24 --demo_data#num_val 12 "
    "--demo_data#num_test 16 --epochs 1 --batch_size 8"
)
TINY_REPORT = (
    "--explain#options#integrated_gradients#steps 2 --explain#sanity_cases 1 --explain#gallery_cases 2 "
    "--explain#deletion_steps 3"
)


@pytest.mark.slow
def test_script_end_to_end_on_tiny_data(tmp_path):
    """The whole script, on the shortcut variant only: three models, their evaluations, the report
    with the paper's five post-hoc methods against the lesion masks, and the combined table."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the script sets up a virtual environment; run the tests inside one, which it then reuses")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "DEMO_COMPARISON_VARIANTS": "shortcut",
        "DEMO_COMPARISON_TRAIN_OVERRIDES": TINY_TRAIN,
        "DEMO_COMPARISON_REPORT_OVERRIDES": TINY_REPORT,
        "MONAI_SOFTCAM_VENV": sys.prefix,
    }
    proc = _script("--quick", str(tmp_path / "out"), env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    for model in ("sparse", "dense", "blackbox"):
        assert json.load(open(out / "shortcut" / model / "eval" / "metrics_test.json"))["metrics"]["n"] == 16
    report = json.load(open(out / "shortcut" / "report" / "report.json"))
    assert list(report["explanation"]) == ["softcam_sparse", "softcam_dense", "blackbox"]
    assert list(report["explanation"]["blackbox"]) == [
        "gradcam",
        "integrated_gradients",
        "guided_backprop",
        "scorecam",
        "layercam",
    ]
    assert report["settings"]["deletion_steps"] == 3
    test_rows = list(csv.DictReader(open(out / "shortcut" / "data" / "test.csv")))
    lesions = sum(r["bin_target"] == "1" for r in test_rows)
    assert lesions != sum(r["marker"] == "1" for r in test_rows), "pick another seed: lesion and marker counts coincide"
    assert report["explanation"]["softcam_sparse"]["softcam"]["activation_precision"]["n"] == lesions  # lesion masks
    text = open(out / "comparison.md", encoding="utf-8").read()
    assert "| shortcut | softcam_sparse/softcam | blackbox/scorecam |" in text
    assert text in proc.stdout and "elapsed: " in proc.stdout.splitlines()[-1]
