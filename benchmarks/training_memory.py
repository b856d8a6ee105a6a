"""Peak memory and time of a SoftCAM training step at the paper's settings, with and without AMP
and the channels-last memory format.

    python benchmarks/training_memory.py            # ResNet-50 at 512 px: GPU batch 16 (if a GPU is there), CPU batch 2
    python benchmarks/training_memory.py --quick    # ResNet-18 at 128 px, CPU batch 2 (seconds)

Every configuration runs in a fresh process (its own peak): a few training steps (forward with
the evidence maps, SoftCAM loss with the sparse penalty, backward, SGD step). CPU: peak resident
set size of the process, and above what it held before the first step. GPU:
``torch.cuda.max_memory_allocated``. AMP (float16 autocast + gradient scaling) is GPU only.
Writes a markdown table (``--out``).
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
from _common import describe_machine, peak_rss_mb, rss_mb, run_fresh, synchronize, write_table  # noqa: E402


def _child(args: argparse.Namespace) -> None:
    import torch

    from monai_softcam.bundle import place_network
    from monai_softcam.losses import SoftCAMLoss
    from monai_softcam.networks import SoftCAM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = place_network(SoftCAM(args.backbone, 2, 3, 2, return_maps=True), device, args.channels_last).train()
    loss_fn = SoftCAMLoss(preset="sparse")
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 2, (args.batch,), device=device)
    held = rss_mb()
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.float16, enabled=args.amp):
            loss = loss_fn(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        synchronize(device)
        times.append(time.perf_counter() - start)
    result = {"seconds": statistics.median(times[1:]), "peak_mb": peak_rss_mb(), "held_mb": held}
    if device.type == "cuda":
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18 at 128 px on the CPU")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "training_memory.md"))
    for name, kind in (("--child", "store_true"),):
        parser.add_argument(name, action=kind, help=argparse.SUPPRESS)
    parser.add_argument("--backbone", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--amp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--channels_last", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    import torch

    backbone, size = ("resnet18", 128) if args.quick else ("resnet50", 512)
    configs = [("cpu", 2, False, False), ("cpu", 2, False, True)]
    gpu = torch.cuda.is_available() and not args.quick
    if gpu:
        configs += [("cuda", 16, amp, cl) for amp in (False, True) for cl in (False, True)]
    rows = []
    for device, batch, amp, channels_last in configs:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            "--backbone",
            backbone,
            "--size",
            str(size),
            "--batch",
            str(batch),
            "--device",
            device,
            "--steps",
            str(args.steps),
            "--threads",
            str(args.threads),
        ]
        command += (["--amp"] if amp else []) + (["--channels_last"] if channels_last else [])
        r = run_fresh(command)
        memory = (
            f"{r['gpu_peak_mb']:.0f} MB (GPU)"
            if device == "cuda"
            else f"{r['peak_mb']:.0f} MB RSS ({r['peak_mb'] - r['held_mb']:.0f} MB above the model)"
        )
        rows.append(
            f"| {device} | {batch} | {'yes' if amp else 'no'} | {'yes' if channels_last else 'no'} | "
            f"{r['seconds']:.2f} s | {memory} |"
        )
        print(rows[-1], flush=True)
    machines = describe_machine("cpu", args.threads) + (f"; GPU: {describe_machine('cuda')}" if gpu else "")
    write_table(
        args.out,
        f"Training memory: SoftCAM {backbone} at {size} px, one training step",
        machines
        + ("" if gpu else "; no GPU here, so no GPU rows")
        + f"; median of {args.steps} steps after a warm-up.",
        ["device", "batch", "AMP", "channels-last", "time per step", "peak memory"],
        rows,
        __file__,
        argv,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
