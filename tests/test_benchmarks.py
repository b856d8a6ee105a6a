"""The benchmark scripts run (smallest settings) so that they cannot rot; their numbers are not checked here."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT


def _run(script, *args):
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "benchmarks", script), *args],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_sliding_window_benchmark_runs(tmp_path):
    out = tmp_path / "sw.md"
    stdout = _run("sliding_window.py", "--quick", "--sizes", "40x40x24", "--sw_batch_sizes", "1", "--out", str(out))
    table = out.read_text(encoding="utf-8")
    assert "| 40x40x24 | 4 | 1 |" in table and "peak RSS" in table and "wrote" in stdout


def test_export_agreement_benchmark_runs(tmp_path):
    out = tmp_path / "export.md"
    _run("export_agreement.py", "--backbones", "resnet10", "--out", str(out))
    rows = [line for line in out.read_text(encoding="utf-8").splitlines() if line.startswith("| resnet10")]
    assert len(rows) == 2 and not any("failed" in r for r in rows)


def test_explanation_cost_benchmark_runs(tmp_path):
    out = tmp_path / "cost.md"
    _run("explanation_cost.py", "--backbones", "resnet10", "--sizes", "32", "--batches", "1", "--repeats", "1",
         "--spatial_dims", "2", "--out", str(out))  # fmt: skip
    rows = [line for line in out.read_text(encoding="utf-8").splitlines() if line.startswith("| resnet10")]
    assert [r.split("|")[4].strip() for r in rows] == [
        "black box (logits)", "SoftCAM (logits + all maps)", "Grad-CAM, one class", "Grad-CAM, all classes",
        "Grad-CAM++, one class", "occlusion, one class",
    ]  # fmt: skip


def test_workflow_overhead_benchmark_runs(tmp_path):
    out = tmp_path / "overhead.md"
    _run("workflow_overhead.py", "--quick", "--repeats", "1", "--out", str(out))
    table = out.read_text(encoding="utf-8")
    assert "| bundle trainer (Ignite) |" in table and "| hand-written loop |" in table


def test_data_pipeline_benchmark_runs(tmp_path):
    out = tmp_path / "pipeline.md"
    _run("data_pipeline.py", "--quick", "--images", "4", "--passes", "1", "--out", str(out))
    table = out.read_text(encoding="utf-8")
    assert "| fundus | 0 worker(s) |" in table and "memory cache" in table


def test_training_memory_benchmark_runs(tmp_path):
    out = tmp_path / "memory.md"
    _run("training_memory.py", "--quick", "--steps", "1", "--out", str(out))
    rows = [line for line in out.read_text(encoding="utf-8").splitlines() if line.startswith("| cpu")]
    assert len(rows) == 2 and all("MB RSS" in r for r in rows)
