"""Built-in demo data: a seeded "lesion present / absent" task with ground-truth masks and boxes.

Every image is a textured background (fractal noise with an illumination ramp); half of them hold
one low-contrast *lesion*: a compact bright blob with a granular interior, of random size,
position and orientation. Any image may also hold *distractors* that are not lesions: bright
rings, bright elongated streaks and dark blobs of the same size and contrast range. Distractors
appear equally often with and without a lesion, so neither the brightness of the image nor "is
there a bright thing" tells the class: a classifier has to find the lesion itself.

Files written by :func:`generate_demo_dataset` (paths relative to the output folder)::

    images/demo_00000.png      2D: 8-bit grey PNG; 3D: float32 NIfTI (.nii.gz), 1 mm voxels
    masks/demo_00000.png       the lesion mask (its half-maximum region; 0/255 PNG or 0/1 uint8 NIfTI);
                               empty without lesion
    train.csv val.csv test.csv  one row per image, RSNA split-CSV column style
    demo.json                  the generator's parameters (a re-run with the same ones is a no-op)

CSV columns (2D): ``filename, x, y, width, height, type, bin_target, target, mask`` where
``x, y, width, height`` is the lesion's bounding box in pixels of the saved image (``x`` = column
from the left, ``y`` = row from the top, as in the RSNA CSVs; empty without lesion), ``type`` is
``Train``/``Val``/``Test``, ``bin_target`` is 1 with a lesion, and ``target`` mirrors RSNA's three
classes: 0 = clean, 1 = distractors but no lesion ("abnormal, not a lesion"), 2 = lesion.
3D adds ``z`` and ``depth``; ``x, y, z`` index the NIfTI array's axes 0, 1, 2.

Each sample depends only on ``(seed, index)``, so the data are identical on every machine and
adding samples does not change the existing ones.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..utils import InputError

__all__ = ["DemoDataConfig", "DemoSample", "ensure_demo_dataset", "generate_demo_dataset", "render_sample"]

SPLITS = ("train", "val", "test")
_SPLIT_TYPES = {"train": "Train", "val": "Val", "test": "Test"}
DISTRACTOR_KINDS = ("ring", "streak", "dark_blob")


@dataclass
class DemoDataConfig:
    """Parameters of the demo generator (all sizes in pixels/voxels of the saved image).

    Args:
        spatial_dims: 2 (PNG images) or 3 (NIfTI volumes).
        size: side length of the square image / cubic volume.
        num_train, num_val, num_test: number of images per split.
        seed: master seed; sample ``i`` is drawn from ``(seed, i)`` alone.
        lesion_fraction: probability that an image holds a lesion.
        distractor_fraction: probability that an image holds 1-3 distractors (independent of the lesion).
        radius: range of the lesion's (and distractors') radius.
        contrast: range of the lesion's peak contrast, in units of the background texture's standard deviation.
        background_std: standard deviation of the background texture (intensities are in [0, 1]).
        noise_std: standard deviation of the additive pixel noise.
    """

    spatial_dims: int = 2
    size: int = 96
    num_train: int = 800
    num_val: int = 200
    num_test: int = 200
    seed: int = 0
    lesion_fraction: float = 0.5
    distractor_fraction: float = 0.6
    radius: tuple[float, float] = (4.0, 9.0)
    contrast: tuple[float, float] = (1.8, 2.8)
    background_std: float = 0.07
    noise_std: float = 0.02
    version: int = field(default=1, repr=False)  # bump when the image model changes

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if self.size < 4 * self.radius[1]:
            raise ValueError(f"size must be >= 4 * the largest radius ({4 * self.radius[1]}), got {self.size}")
        for name in ("num_train", "num_val", "num_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.radius = tuple(float(r) for r in self.radius)  # type: ignore[assignment]
        self.contrast = tuple(float(c) for c in self.contrast)  # type: ignore[assignment]

    def counts(self) -> dict[str, int]:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}


@dataclass
class DemoSample:
    """One rendered sample: ``image`` in [0, 1] and boolean ``mask``, both in numpy axis order."""

    image: np.ndarray
    mask: np.ndarray
    label: int
    target: int
    box: tuple[int, ...] | None  # per axis: (start_0, ..., start_n, size_0, ..., size_n)
    distractors: list[str]


def _fractal_noise(rng: np.random.Generator, shape: tuple[int, ...], beta: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with a 1/f^beta power spectrum (a natural-looking texture)."""
    white = rng.standard_normal(shape)
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(f**2 for f in freqs))
    radius[(0,) * len(shape)] = 1.0
    spectrum = np.fft.fftn(white) / radius ** (beta / 2.0)
    spectrum[(0,) * len(shape)] = 0.0
    field_ = np.real(np.fft.ifftn(spectrum))
    return (field_ - field_.mean()) / (field_.std() + 1e-8)


def _random_rotation(rng: np.random.Generator, dims: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dims, dims)))
    return q * np.sign(np.diag(r))


def _ellipsoid(
    grid: np.ndarray, center: np.ndarray, radii: np.ndarray, rotation: np.ndarray, softness: float = 0.12
) -> np.ndarray:
    """Soft ellipsoid indicator in [0, 1] (0.5 on the surface)."""
    offsets = np.tensordot(rotation.T, grid - center.reshape((-1,) + (1,) * (grid.ndim - 1)), axes=1)
    dist = np.sqrt(sum((offsets[i] / radii[i]) ** 2 for i in range(len(radii))))
    return 1.0 / (1.0 + np.exp(np.clip((dist - 1.0) / softness, -50, 50)))


def _place(rng: np.random.Generator, size: int, dims: int, margin: float) -> np.ndarray:
    return rng.uniform(margin, size - 1 - margin, size=dims)


def render_sample(config: DemoDataConfig, index: int, with_lesion: bool = True) -> DemoSample:
    """Render sample ``index`` of the demo dataset described by ``config`` (deterministic).

    ``with_lesion=False`` renders the same image without its lesion (same background, distractors
    and noise; mask, label and box still describe the lesion that was left out): a counterfactual
    for tests and faithfulness checks.
    """
    rng = np.random.default_rng([config.seed, index, config.spatial_dims])
    dims, size = config.spatial_dims, config.size
    shape = (size,) * dims
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float64)] * dims, indexing="ij"))
    r_lo, r_hi = config.radius
    std = config.background_std

    image = 0.5 + std * _fractal_noise(rng, shape, beta=2.6)
    ramp = rng.uniform(-0.06, 0.06, size=dims)
    image += sum(ramp[i] * (grid[i] / size - 0.5) for i in range(dims))

    has_lesion = bool(rng.random() < config.lesion_fraction)
    n_distractors = int(rng.integers(1, 4)) if rng.random() < config.distractor_fraction else 0

    kinds = [str(k) for k in rng.choice(DISTRACTOR_KINDS, size=n_distractors)]
    for kind in kinds:
        radius = rng.uniform(r_lo, r_hi)
        contrast = std * rng.uniform(*config.contrast)
        rotation = _random_rotation(rng, dims)
        center = _place(rng, size, dims, margin=radius)
        if kind == "ring":
            radii = np.full(dims, radius * 1.2)
            shape_ = _ellipsoid(grid, center, radii, rotation) - _ellipsoid(grid, center, radii * 0.55, rotation)
            image += contrast * shape_
        elif kind == "streak":
            radii = np.full(dims, radius * 0.35)
            radii[0] = radius * 3.0
            image += contrast * _ellipsoid(grid, center, radii, rotation, softness=0.2)
        else:  # dark blob
            image -= contrast * _ellipsoid(grid, center, np.full(dims, radius), rotation)

    mask = np.zeros(shape, dtype=bool)
    box = None
    if has_lesion:
        radius = rng.uniform(r_lo, r_hi)
        radii = radius * rng.uniform(0.8, 1.2, size=dims)
        center = _place(rng, size, dims, margin=radii.max() + 1)
        profile = _ellipsoid(grid, center, radii, _random_rotation(rng, dims))
        grain = 0.5 + 0.5 * (rng.random(shape) < 0.6)
        lesion = std * rng.uniform(*config.contrast) * profile * grain
        if with_lesion:
            image += lesion
        mask = profile > 0.5
        where = np.nonzero(mask)
        starts = [int(w.min()) for w in where]
        sizes = [int(w.max()) - s + 1 for w, s in zip(where, starts)]
        box = tuple(starts + sizes)

    image += config.noise_std * rng.standard_normal(shape)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    target = 2 if has_lesion else (1 if n_distractors else 0)
    return DemoSample(image, mask, int(has_lesion), target, box, kinds)


def _fingerprint(config: DemoDataConfig) -> str:
    return hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:16]


def _write_image(path: str, array: np.ndarray, spatial_dims: int, is_mask: bool) -> None:
    if spatial_dims == 2:
        data = (array.astype(np.uint8) * 255) if is_mask else np.round(array * 255).astype(np.uint8)
        Image.fromarray(data, mode="L").save(path)
    else:
        data = array.astype(np.uint8) if is_mask else array.astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def _csv_columns(spatial_dims: int) -> list[str]:
    axes = ["x", "y"] + (["z"] if spatial_dims == 3 else [])
    extents = ["width", "height"] + (["depth"] if spatial_dims == 3 else [])
    return ["filename"] + axes + extents + ["type", "bin_target", "target", "mask"]


def _box_fields(box: tuple[int, ...] | None, spatial_dims: int) -> list[Any]:
    if box is None:
        return [""] * (2 * spatial_dims)
    starts, sizes = list(box[:spatial_dims]), list(box[spatial_dims:])
    if spatial_dims == 2:  # numpy (row, col) -> image (x = col, y = row)
        starts, sizes = starts[::-1], sizes[::-1]
    return [float(v) for v in starts + sizes]


def generate_demo_dataset(out_dir: str, config: DemoDataConfig | None = None, progress: bool = True) -> dict[str, str]:
    """Write the demo dataset to ``out_dir`` (which must not exist yet); return the split CSV paths.

    Files are written to a temporary folder beside ``out_dir`` and moved into place at the end,
    so an interrupted run never leaves a half-written dataset that looks complete.
    """
    config = config or DemoDataConfig()
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        raise FileExistsError(f"demo data folder already exists: {out_dir}")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".demo-partial-", dir=parent)
    try:
        ext = ".png" if config.spatial_dims == 2 else ".nii.gz"
        os.makedirs(os.path.join(work, "images"))
        os.makedirs(os.path.join(work, "masks"))
        total = sum(config.counts().values())
        bar = _progress(total, "demo data", progress)
        index = 0
        for split in SPLITS:
            rows = []
            for _ in range(config.counts()[split]):
                sample = render_sample(config, index)
                name = f"demo_{index:05d}{ext}"
                _write_image(os.path.join(work, "images", name), sample.image, config.spatial_dims, False)
                _write_image(os.path.join(work, "masks", name), sample.mask, config.spatial_dims, True)
                rows.append(
                    [f"images/{name}"]
                    + _box_fields(sample.box, config.spatial_dims)
                    + [_SPLIT_TYPES[split], sample.label, sample.target, f"masks/{name}"]
                )
                index += 1
                bar.update(1)
            with open(os.path.join(work, f"{split}.csv"), "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(_csv_columns(config.spatial_dims))
                writer.writerows(rows)
        bar.close()
        with open(os.path.join(work, "demo.json"), "w", encoding="utf-8") as f:
            json.dump({"fingerprint": _fingerprint(config), "config": asdict(config)}, f, indent=2)
        os.replace(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {split: os.path.join(out_dir, f"{split}.csv") for split in SPLITS}


def ensure_demo_dataset(out_dir: str, config: DemoDataConfig | None = None, progress: bool = True) -> dict[str, str]:
    """Generate the demo dataset in ``out_dir`` unless the same one is already there; return the CSV paths.

    An existing folder made with other parameters (or not by this generator) is left untouched and
    reported with a ValueError, never overwritten.
    """
    config = config or DemoDataConfig()
    out_dir = os.path.abspath(out_dir)
    manifest = os.path.join(out_dir, "demo.json")
    if not os.path.exists(out_dir):
        return generate_demo_dataset(out_dir, config, progress)
    try:
        with open(manifest) as f:
            found = json.load(f).get("fingerprint")
    except (OSError, ValueError):
        found = None
    if found != _fingerprint(config):
        raise InputError(
            f"{out_dir} exists but does not hold the demo data for these parameters "
            f"(its {os.path.basename(manifest)} is missing or differs); remove it or choose another folder"
        )
    return {split: os.path.join(out_dir, f"{split}.csv") for split in SPLITS}


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="img")
