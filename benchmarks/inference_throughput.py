"""Inference throughput and output size: the bundle's ``run inference`` against bare read + forward.

    python benchmarks/inference_throughput.py            # 24 images per folder
    python benchmarks/inference_throughput.py --quick    # 3 small images per folder (seconds; a smoke test)

Two folders of generated stand-ins: 1024x1024 12-bit CR DICOMs (uncompressed, in a 16-bit
container) and 2000x2000 grey JPEGs (quality 90, the size of a chest X-ray export). The model is
an untrained SoftCAM ResNet-18 at 512 px (16x16 maps, two classes; weights do not change the cost),
saved with its task as a training run leaves it.

For each folder, in the same process, after one warm-up run of each, ``--repeats`` rounds of:

* **bare**: the task's preprocessing (read, map to [0, 1], resize, normalise) and the forward pass,
  through the same DataLoader and batch size, nothing written: the rate inference cannot beat;
* **inference**: ``python -m monai.bundle run inference`` (in-process ``monai.bundle.run``):
  the header check of every input, the same read and forward, probabilities, the compact maps
  (the default) and the overlay PNG of every image, ``predictions.csv``;
* **inference, no overlay**: the same with ``--overlays false`` (the maps and predictions only);
* **inference, full-resolution maps**: the default with ``--full_resolution_maps true``.

Times are wall-clock from the start of the run to its end (model building and weight loading
included in both). Bytes are what the run wrote per image: the evidence maps (``*.nii.gz``, all
classes) and the overlay PNG separately. Writes a markdown table (``--out``).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
from _common import describe_machine, write_table  # noqa: E402

INFERENCE = os.path.join(REPO, "bundle", "configs", "inference.yaml")


def _smooth(rng, size: int):
    """A smooth random picture in [0, 1] (compresses like a radiograph, unlike white noise)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    coarse = torch.as_tensor(rng.uniform(0, 1, (1, 1, 24, 24)), dtype=torch.float32)
    fine = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()
    fine += rng.normal(0, 0.02, fine.shape)
    return np.clip(fine, 0, 1)


def write_folders(root: str, count: int, dicom_size: int, jpeg_size: int) -> dict[str, str]:
    """``{"DICOM": folder, "JPEG": folder}`` of ``count`` generated images each."""
    import numpy as np
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    rng = np.random.default_rng(0)
    folders = {"DICOM": os.path.join(root, "dicom"), "JPEG": os.path.join(root, "jpeg")}
    for folder in folders.values():
        os.makedirs(folder)
    for i in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = (
            meta,
            meta.MediaStorageSOPClassUID,
            meta.MediaStorageSOPInstanceUID,
        )
        ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "CR", dicom_size, dicom_size, 1
        ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 16, 12, 11
        ds.PixelRepresentation, ds.PixelSpacing = 0, [0.14, 0.14]
        ds.PixelData = (_smooth(rng, dicom_size) * 4095).astype(np.uint16).tobytes()
        ds.save_as(os.path.join(folders["DICOM"], f"cr_{i:03d}.dcm"), enforce_file_format=True)
        picture = Image.fromarray((_smooth(rng, jpeg_size) * 255).astype(np.uint8))
        picture.save(os.path.join(folders["JPEG"], f"cxr_{i:03d}.jpg"), quality=90)
    return folders


def write_model(ckpt_dir: str, image_size: int) -> None:
    """An untrained SoftCAM ResNet-18 and its task, as training saves them."""
    import torch

    from monai_softcam.checkpoint import save_checkpoint
    from monai_softcam.task import Task

    task = Task(
        class_names=["normal", "opacity"],
        spatial_dims=2,
        in_channels=1,
        image_size=[image_size] * 2,
        intensity_mean=[0.5],
        intensity_std=[0.25],
        backbone="resnet18",
    )
    os.makedirs(ckpt_dir, exist_ok=True)
    task.save(os.path.join(ckpt_dir, "task.json"))
    torch.manual_seed(0)
    save_checkpoint(task.network().state_dict(), os.path.join(ckpt_dir, "model.pt"))


def bare_run(ckpt_dir: str, folder: str, batch: int) -> float:
    """Seconds to read, preprocess and classify every image of ``folder`` (nothing written)."""
    import torch
    from monai.data import DataLoader, Dataset

    from monai_softcam.checkpoint import load_weights
    from monai_softcam.task import load_task

    start = time.perf_counter()
    task = load_task(ckpt_dir, explicit={})
    network = task.network(return_maps=True)
    load_weights(network, os.path.join(ckpt_dir, "model.pt"))
    network.eval()
    files = sorted(glob.glob(os.path.join(folder, "*")))
    loader = DataLoader(Dataset([{"image": f} for f in files], transform=task.preprocessing()), batch_size=batch)
    with torch.no_grad():
        for data in loader:
            network(data["image"].as_tensor())
    return time.perf_counter() - start


#: the inference runs measured: (name, overrides)
RUNS = (
    ("inference (default: compact maps + overlay)", {}),
    ("inference, no overlay (--overlays false)", {"overlays": False}),
    ("inference, full-resolution maps", {"full_resolution_maps": True}),
)


def bundle_run(ckpt_dir: str, folder: str, out: str, batch: int, extra: dict) -> float:
    """Seconds of ``run inference`` on ``folder`` (in this process), with ``extra`` overrides."""
    import monai.bundle

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    overrides = {"ckpt_dir": ckpt_dir, "input_path": folder, "output_dir": out, "batch_size": batch, "device": "cpu"}
    overrides.update(extra)
    monai.bundle.run("inference", config_file=INFERENCE, **overrides)
    return time.perf_counter() - start


def written_bytes(out: str, count: int) -> tuple[float, float]:
    """(map bytes, overlay bytes) per image in ``out``."""
    maps = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "maps", "*", "*.nii.gz")))
    overlays = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "maps", "*", "*.png")))
    return maps / count, overlays / count


def _size(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 images per folder of 256/300 px, model at 64 px")
    parser.add_argument("--images", type=int, default=None, help="images per folder (default 24; --quick 3)")
    parser.add_argument("--batch", type=int, default=8, help="inference batch size (inference.yaml's default)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="rounds of all runs, alternated (default 3; --quick 1)"
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "inference_throughput.md"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    count = args.images or (3 if args.quick else 24)
    args.repeats = args.repeats or (1 if args.quick else 3)
    dicom_size, jpeg_size, image_size = (256, 300, 64) if args.quick else (1024, 2000, 512)
    rows = []
    with tempfile.TemporaryDirectory(prefix="softcam_throughput_") as root:
        print(f"writing {count} DICOMs of {dicom_size} px and {count} JPEGs of {jpeg_size} px ...", flush=True)
        folders = write_folders(root, count, dicom_size, jpeg_size)
        ckpt_dir = os.path.join(root, "models")
        write_model(ckpt_dir, image_size)
        warm = os.path.join(root, "warm")
        os.makedirs(warm)
        shutil.copy(sorted(glob.glob(os.path.join(folders["DICOM"], "*")))[0], warm)
        bare_run(ckpt_dir, warm, args.batch)
        bundle_run(ckpt_dir, warm, os.path.join(root, "warm_out"), args.batch, {})
        for kind, folder in folders.items():
            size = dicom_size if kind == "DICOM" else jpeg_size
            label = f"{count} {kind} {size}x{size}"
            seconds: dict[str, list[float]] = {"bare": [], **{name: [] for name, _ in RUNS}}
            written = {}
            for repeat in range(args.repeats):  # the contenders alternate, so that drift hits all alike
                print(f"{label}, round {repeat + 1}/{args.repeats}: bare read + forward ...", flush=True)
                seconds["bare"].append(bare_run(ckpt_dir, folder, args.batch))
                for k, (name, extra) in enumerate(RUNS):
                    print(f"{label}, round {repeat + 1}/{args.repeats}: {name} ...", flush=True)
                    out = os.path.join(root, f"out_{kind}_{k}")
                    seconds[name].append(bundle_run(ckpt_dir, folder, out, args.batch, extra))
                    written[name] = written_bytes(out, count)
            bare = statistics.median(seconds["bare"])
            rows.append(f"| {label} | bare read + forward | {count / bare:.2f} | 1.00x | - | - |")
            for name, _ in RUNS:
                run = statistics.median(seconds[name])
                ratio = statistics.median(b / r for b, r in zip(seconds["bare"], seconds[name]))
                maps, overlays = written[name]
                rows.append(
                    f"| {label} | {name} | {count / run:.2f} | {ratio:.2f}x | "
                    f"{_size(maps)} | {_size(overlays) if overlays else '-'} |"
                )
    about = (
        f"{describe_machine('cpu', args.threads)}; untrained SoftCAM ResNet-18 at {image_size} px, "
        f"2 classes, batch {args.batch}; {args.repeats} round(s) of every run, alternated: images/s of the median "
        "run, the median of the per-round ratios to bare, bytes per image"
    )
    write_table(
        args.out,
        "Inference throughput and bytes written",
        about,
        ["images", "run", "images/s", "vs bare", "maps / image", "overlay PNG / image"],
        rows,
        __file__,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
