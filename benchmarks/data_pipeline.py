"""Throughput of the presets' training data pipeline (read + resize + augment + normalise) against
the rate at which the preset's model consumes images in training.

    python benchmarks/data_pipeline.py            # 48 images per preset, 0/1/2 workers, memory cache
    python benchmarks/data_pipeline.py --quick    # 8 images, fundus only, no model (seconds)

Presets: ``fundus`` (512-px RGB PNG in, ResNet-50 at 512 px) and ``rsna`` (1024-px grey DICOM in,
resized to 512 px, VGG-16). Images are generated stand-ins of the original formats and sizes.
Each loader setting reads every image once per pass (``--passes`` passes, alternating the
settings); with the memory cache, the decode + resize is done once before the timed passes and
only the random augmentation and normalisation run per pass. The model rate is images/s of
forward + backward + step at ``--batch`` (one warm-up step, then ``--steps`` timed steps).
Writes a markdown table (``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _common import describe_machine, synchronize, write_table  # noqa: E402

PRESETS = {"fundus": "configs/fundus.yaml", "rsna": "configs/rsna.yaml"}


def _write_images(preset: str, folder: str, count: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        if preset == "fundus":
            import SimpleITK

            path = os.path.join(folder, f"fundus_{i}.png")
            pixels = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
            SimpleITK.WriteImage(SimpleITK.GetImageFromArray(pixels, isVector=True), path)
        else:
            from pydicom.dataset import Dataset, FileMetaDataset
            from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

            path = os.path.join(folder, f"xray_{i}.dcm")
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = (
                meta,
                meta.MediaStorageSOPClassUID,
                meta.MediaStorageSOPInstanceUID,
            )
            ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "CR", 1024, 1024, 1
            ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 8, 8, 7
            ds.PixelRepresentation, ds.PixelSpacing = 0, [0.14, 0.14]
            ds.PixelData = rng.integers(0, 255, (1024, 1024), dtype=np.uint8).tobytes()
            ds.save_as(path, enforce_file_format=True)
        items.append({"image": path, "label": i % 2})
    return items


def _parser(preset: str, root: str):
    from monai.bundle import ConfigParser

    config = ConfigParser()
    config.read_config(f=[os.path.join(REPO, "bundle", "configs", "train.yaml"), os.path.join(REPO, PRESETS[preset])])
    # the preset's own statistics (no split CSV needed to resolve them)
    config.update(
        {"bundle_root": root, "dataset_dir": root, "num_workers": 0, "trained_task": "@task", "pretrained": "none"}
    )  # no ImageNet file here
    return config


def _loader_rate(items, transform, workers: int, cache: bool, passes: int, batch: int) -> list[float]:
    from monai.data import DataLoader

    from monai_softcam.data import make_dataset

    dataset = make_dataset(items, transform, cache="memory" if cache else "none", num_workers=max(1, workers))
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, shuffle=False)
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        for _ in loader:
            pass
        rates.append(len(items) / (time.perf_counter() - start))
    return rates


def _model_rate(config, batch: int, steps: int) -> float:
    import torch

    network, optimizer, loss = (config.get_parsed_content(k) for k in ("network", "optimizer", "loss"))
    size, device = config.get_parsed_content("image_size"), config.get_parsed_content("device")
    x = torch.randn(batch, config.get_parsed_content("in_channels"), *size, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        value = loss(network(x), y)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        synchronize(device)
        if step:  # the first step is a warm-up
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 fundus images, 0 and 1 workers, no model")
    parser.add_argument("--presets", default=None, help="default fundus,rsna (--quick: fundus)")
    parser.add_argument("--images", type=int, default=None, help="images per preset (default 48; --quick 8)")
    parser.add_argument("--workers", default=None, help="default 0,1,2 (--quick 0,1)")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2, help="batch of the loaders and of the model step")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps for the model rate (0: skip)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "data_pipeline.md"))
    args = parser.parse_args(argv)

    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    presets = (args.presets or ("fundus" if args.quick else "fundus,rsna")).split(",")
    count = args.images or (8 if args.quick else 48)
    workers = [int(w) for w in (args.workers or ("0,1" if args.quick else "0,1,2")).split(",")]
    steps = 0 if args.quick else args.steps
    from monai_softcam.bundle import default_device

    model_device = "the same CPU" if default_device().type == "cpu" else describe_machine(str(default_device()))
    rows = []
    for preset in presets:
        with tempfile.TemporaryDirectory() as root:
            items = _write_images(preset, root, count)
            config = _parser(preset, root)
            transform = config.get_parsed_content("train#preprocessing")
            settings = [(w, False) for w in workers] + [(0, True)]
            rates: dict = {s: [] for s in settings}
            for _ in range(args.passes):  # alternate the settings
                for w, cache in settings:
                    rates[(w, cache)] += _loader_rate(items, transform, w, cache, 1, args.batch)
            model = _model_rate(config, args.batch, steps) if steps else None
            for (w, cache), r in rates.items():
                what = f"{w} worker(s)" + (", memory cache (decoded once)" if cache else "")
                rows.append(f"| {preset} | {what} | {statistics.median(r):.1f} ({min(r):.1f}-{max(r):.1f}) |")
                print(rows[-1], flush=True)
            if model is not None:
                backbone = config.get_parsed_content("backbone")
                rows.append(f"| {preset} | model: {backbone} training step, batch {args.batch} | {model:.1f} |")
                print(rows[-1], flush=True)
    write_table(
        args.out,
        "Data pipeline: the presets' training preprocessing vs the model's consumption",
        f"loaders on {describe_machine('cpu', args.threads)}; model on {model_device}; {count} images per preset, "
        f"{args.passes} alternating passes; fundus: 512-px RGB PNG, rsna: 1024-px grey DICOM (-> 512 px).",
        ["preset", "loader / consumer", "images/s, median (min-max)"],
        rows,
        __file__,
        argv,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
