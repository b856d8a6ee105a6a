"""Time and peak memory of sliding-window SoftCAM inference on a large volume.

    python benchmarks/sliding_window.py            # 3D ResNet-18 on 256x256x128 (and 128x128x64), windows of 96^3
    python benchmarks/sliding_window.py --quick    # small sizes, seconds (what the test runs)

Every configuration runs in its own fresh process (so that its peak resident memory is its own),
``--repeats`` times in alternation, and the table gives the median time (and min-max) and the
peak resident set size of the process, plus the peak above what the process held once the model
and the input were in memory (the sliding window's own cost). Memory should grow with the window
batch (``sw_batch_size``), not with the input size. Writes a markdown table (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import describe_machine, peak_rss_mb, rss_mb, run_fresh, write_table  # noqa: E402


def _child(args: argparse.Namespace) -> None:
    """One measurement; prints a JSON line."""
    import torch

    from monai_softcam.inferers import EvidenceSlidingWindowInferer
    from monai_softcam.networks import SoftCAM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = SoftCAM(args.backbone, spatial_dims=3, in_channels=1, num_classes=2, return_maps=True).eval()
    x = torch.randn(1, 1, *args.size)
    inferer = EvidenceSlidingWindowInferer(args.roi, sw_batch_size=args.sw_batch_size, overlap=args.overlap)
    with torch.inference_mode():
        net(torch.randn(1, 1, *args.roi))  # warm-up outside the timing
        held = rss_mb()
        start = time.perf_counter()
        out = inferer(x, net)
        seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    assert out["evidence_maps"].shape[:2] == (1, 2) and out["logits"].shape == (1, 2)
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "held_mb": held}))


def _measure(size, roi, sw_batch_size, args) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        "--backbone",
        args.backbone,
        "--threads",
        str(args.threads),
        "--overlap",
        str(args.overlap),
        "--sw_batch_size",
        str(sw_batch_size),
        "--size",
        *map(str, size),
        "--roi",
        *map(str, roi),
    ]
    return run_fresh(command)


def _windows(size, roi, overlap) -> int:
    count = 1
    for s, r in zip(size, roi):
        step = max(1, int(r * (1 - overlap)))
        count *= 1 if s <= r else -(-(s - r) // step) + 1
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--sizes", default=None, help="input sizes, e.g. 256x256x128,128x128x64")
    parser.add_argument("--roi", nargs=3, type=int, default=None)
    parser.add_argument("--sw_batch_sizes", default=None, help="e.g. 1,2,4")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "sliding_window.md"))
    # a single measurement (internal)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sw_batch_size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    quick = args.quick
    sizes = args.sizes or ("64x64x32,32x32x32" if quick else "256x256x128,128x128x64")
    sizes = [[int(v) for v in s.split("x")] for s in sizes.split(",")]
    roi = args.roi or ([32, 32, 32] if quick else [96, 96, 96])
    batches = [int(b) for b in (args.sw_batch_sizes or ("1,2" if quick else "1,2,4")).split(",")]
    repeats = args.repeats or (1 if quick else 3)
    if quick and args.backbone == "resnet18":
        args.backbone = "resnet10"
    configs = [(tuple(s), b) for s in sizes for b in batches]
    results: dict = {c: [] for c in configs}
    for r in range(repeats):  # alternate the contenders: machine noise hits all of them alike
        for size, batch in configs:
            results[(size, batch)].append(_measure(size, roi, batch, args))
            print(
                f"[{r + 1}/{repeats}] {'x'.join(map(str, size))} sw_batch_size {batch}: "
                f"{results[(size, batch)][-1]['seconds']:.2f} s, peak {results[(size, batch)][-1]['peak_mb']:.0f} MB",
                flush=True,
            )

    rows = []
    for size, batch in configs:
        runs = results[(size, batch)]
        times = [m["seconds"] for m in runs]
        peak = max(m["peak_mb"] for m in runs)
        extra = max(m["peak_mb"] - m["held_mb"] for m in runs)
        rows.append(
            f"| {'x'.join(map(str, size))} | {_windows(size, roi, args.overlap)} | {batch} | "
            f"{statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f}) | {peak:.0f} MB | {extra:.0f} MB |"
        )
    write_table(
        args.out,
        f"Sliding-window SoftCAM inference: 3D {args.backbone}, windows of {'x'.join(map(str, roi))}, overlap {args.overlap}",
        f"{describe_machine('cpu', args.threads)}, {repeats} run(s) per row, each in a fresh process.",
        ["input", "windows", "sw_batch_size", "time, median (min-max)", "peak RSS", "peak above model + input"],
        rows,
        __file__,
        argv,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
