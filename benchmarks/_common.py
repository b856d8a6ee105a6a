"""Shared by the benchmark scripts: writing their table, and measuring in a fresh process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Sequence

from monai_softcam.text import table


def write_table(
    path: str,
    title: str,
    about: str,
    columns: Sequence[str],
    rows: Sequence[str],
    script: str,
    argv: Sequence[str] | None = None,
) -> None:
    """Print a benchmark's markdown table and write it to ``path`` (UTF-8): the title, the exact
    command that made it (``script`` with ``argv``, default the process's arguments), ``about``
    (machine and settings), then the table of ``columns`` and ready-made ``rows``."""
    command = " ".join(["python", f"benchmarks/{os.path.basename(script)}", *(sys.argv[1:] if argv is None else argv)])
    lines = [f"# {title}", "", f"`{command}`: {about}", ""]
    text = "\n".join(lines) + "\n" + table(columns, []) + "".join(f"{row}\n" for row in rows)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote", path)


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_fresh(command: Sequence[str]) -> dict:
    """Run a measurement in its own process (so that its peak memory is its own) and return the JSON
    object it prints on its last line; a RuntimeError with its error output if it fails."""
    proc = subprocess.run(list(command), capture_output=True, encoding="utf-8", errors="replace", check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def describe_machine(device: str = "cpu", threads: int | None = None) -> str:
    """One line naming what a table was measured on: the CPU (cores, torch threads) or the GPU
    (model, memory, CUDA and cuDNN versions), and the torch version."""
    import torch

    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        what = (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}"
        )
    else:
        what = f"{platform.machine()} CPU ({os.cpu_count()} cores, {threads or torch.get_num_threads()} threads)"
    return f"{what}, torch {torch.__version__}"


def synchronize(device) -> None:
    """Wait for the device's queued work (GPU timings must not stop the clock before the kernels end)."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
