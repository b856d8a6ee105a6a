"""Write docs/benchmarks.md from the latest tables in benchmarks/results/ (run after a benchmark script).

    python benchmarks/collect.py
"""

from __future__ import annotations

import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ["explanation_cost", "explanation_cost_vgg16", "explanation_cost_3d", "workflow_overhead", "data_pipeline", "training_memory", "sliding_window", "export_agreement"]  # then any other table

INTRO = """# Benchmarks

The latest tables of the scripts in `benchmarks/` (each table's first line gives its exact
command and machine). Comparisons are ratios measured in one run with the contenders alternated,
so that the machine's drift hits all of them alike; they are measurements, not tests (the test
suite only checks that every script still runs, with its smallest settings). Regenerate this page
with `python benchmarks/collect.py` after running a script.
"""


def main() -> None:
    tables = sorted(glob.glob(os.path.join(HERE, "results", "*.md")))
    rank = {name: i for i, name in enumerate(ORDER)}
    tables.sort(key=lambda p: (rank.get(os.path.splitext(os.path.basename(p))[0], len(ORDER)), p))
    parts = [INTRO]
    for path in tables:
        with open(path, encoding="utf-8") as f:
            parts.append("#" + f.read().strip())  # one heading level down
    out = os.path.join(os.path.dirname(HERE), "docs", "benchmarks.md")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n\n".join(parts) + "\n")
    print("wrote", out, "from", len(tables), "tables")


if __name__ == "__main__":
    main()
