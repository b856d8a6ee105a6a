"""The bundle's Ignite trainer vs a minimal hand-written PyTorch loop: same model, data, batch, optimiser.

    python benchmarks/workflow_overhead.py            # the main job's settings (demo data, 96 px, batch 32)
    python benchmarks/workflow_overhead.py --quick    # 32-px images, a few dozen (seconds)

The trainer is built from ``bundle/configs/train.yaml`` with all its handlers (learning-rate
schedule, checkpoint, statistics, TensorBoard, progress bar); only validation is switched off,
since the hand-written loop does not validate. The two alternate epoch by epoch over the same
cached data loader: after each trainer epoch, one hand-written epoch runs (inside the trainer's
last EPOCH_COMPLETED handler, outside the trainer's timing). The first epoch of each is a warm-up.
Target: the trainer within 1.10x of the loop's time per epoch. Writes a markdown table (``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import describe_machine, synchronize, write_table  # noqa: E402

REPO = os.path.dirname(HERE)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data (tests/configs/tiny.yaml)")
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs of each (default 3; --quick 2)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "workflow_overhead.md"))
    args = parser.parse_args(argv)

    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 3)
    configs = [os.path.join(REPO, "bundle", "configs", "train.yaml")]
    if args.quick:
        configs.append(os.path.join(REPO, "tests", "configs", "tiny.yaml"))
    with tempfile.TemporaryDirectory() as root:
        config = ConfigParser()
        config.read_config(f=configs)
        config.update({"bundle_root": root, "epochs": repeats + 1, "val_interval": 10**9})
        config.get_parsed_content("initialize")
        trainer = config.get_parsed_content("train#trainer")
        loader = config.get_parsed_content("train#dataloader")
        network, optimizer = config.get_parsed_content("network"), config.get_parsed_content("optimizer")
        loss_function, device = config.get_parsed_content("loss"), config.get_parsed_content("device")
        images = len(loader.dataset)

        def hand_written_epoch() -> None:
            network.train()
            for batch in loader:
                x, y = batch["image"].to(device), batch["label"].to(device)
                loss = loss_function(network(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            synchronize(device)

        times: dict[str, list[float]] = {"bundle trainer (Ignite)": [], "hand-written loop": []}
        clock = {}
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: clock.__setitem__("start", time.perf_counter()))

        def after_epoch(engine) -> None:  # registered last: the trainer's own handlers are inside its time
            synchronize(device)
            if engine.state.epoch > 1:
                times["bundle trainer (Ignite)"].append(time.perf_counter() - clock["start"])
            start = time.perf_counter()
            hand_written_epoch()
            if engine.state.epoch > 1:
                times["hand-written loop"].append(time.perf_counter() - start)

        trainer.add_event_handler(Events.EPOCH_COMPLETED, after_epoch)
        trainer.run()

    ratio = statistics.median(a / b for a, b in zip(times["bundle trainer (Ignite)"], times["hand-written loop"]))
    rows = []
    for name, t in times.items():
        r = ratio if name.startswith("bundle") else 1.0
        rows.append(
            f"| {name} | {statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f}) | "
            f"{images / statistics.median(t):.1f} | {r:.3f}x |"
        )
    write_table(
        args.out,
        "Workflow overhead: the bundle's Ignite trainer vs a hand-written loop",
        f"{describe_machine(device, args.threads)}; {images} training images per epoch, batch {loader.batch_size}, "
        f"{repeats} timed epochs each, alternating.",
        ["loop", "s per epoch, median (min-max)", "images/s", "time vs hand-written"],
        rows,
        __file__,
        argv,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
