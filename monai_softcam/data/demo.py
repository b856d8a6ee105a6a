"""Built-in demo data: a seeded "lesion present / absent" task with ground-truth masks and boxes.

Every image is a textured background (fractal noise with an illumination ramp); half of them hold
one low-contrast *lesion*: a compact bright blob with a granular interior, of random size,
position and orientation. Any image may also hold *distractors* that are not lesions: bright
rings, bright elongated streaks and dark blobs of the same size and contrast range. Distractors
appear equally often with and without a lesion, so neither the brightness of the image nor "is
there a bright thing" tells the class: a classifier has to find the lesion itself.

Variants (``DemoDataConfig.variant``) make the task harder in one controlled way each, so that
explanation methods can be told apart. A variant's sample ``i`` has the same background,
illumination, distractors, label, ``target`` and pixel noise as the default sample ``i`` of the same
seed: only the lesions and the marker differ.

``default``
    The task above: one lesion of radius ``radius`` (per-axis radii 0.8-1.2 times it).
``small``
    One lesion of nominal diameter ``small_diameter`` map cells, a map cell being ``map_stride``
    pixels (the demo network's output stride, 8: a 96 px image gives 12 x 12 maps). The defaults
    (0.5-1.5 cells, per-axis diameters 0.8-1.2 times the nominal one) give lesions of 3-15 px
    across at stride 8, so a lesion touches 1-3 map cells along each axis. Its peak contrast is
    drawn from ``small_contrast`` (default 2.5-3.6 background standard deviations, above the
    default's 1.8-2.8: so small a lesion is invisible at that contrast). Distractors keep their
    ``radius``, contrast and shapes.
``multifocal``
    A lesion image holds ``n`` lesions, ``n`` uniform in ``1 .. max_lesions`` (default 1-4); the
    first is the default variant's lesion, the others are drawn like it, placed at least 2 px
    apart from each other's (largest-radius) extent. A lesion that finds no free place in 100
    tries is left out, so ``n_lesions`` may be below the ``n`` drawn (rare at 96 px). The mask is
    the union of the lesions' masks, ``x, y, width, height`` the union's bounding box, and the
    ``boxes`` column lists every lesion's box.
``shortcut``
    The default images, plus a *marker*: a flat bright square (a cube in 3D) of side ``map_stride``
    at ``map_stride // 2`` from the border, in one corner (drawn at random among the corners whose
    square keeps 1 px away from the lesion), value ``MARKER_VALUE`` (0.95), painted last. With
    ``u`` a uniform draw of the sample's own stream, the marker is present when ``u < p`` with
    ``p = shortcut_correlation`` (default 0.9) for lesion images and ``1 - shortcut_correlation``
    for the others in the train and val splits, and ``p = 0.5`` for every test image (marker
    independent of the label). A classifier can thus reach about ``shortcut_correlation`` accuracy
    on train/val from the marker alone, and only the lesion works on the test split. The marker
    has its own mask (``marker_mask`` column, files under ``markers/``, empty without marker) so
    that an audit can measure how much explanation evidence falls on it.

Files written by :func:`~monai_softcam.data.demo.generate_demo_dataset` (paths relative to the output folder)::

    images/demo_00000.png      2D: 8-bit grey PNG; 3D: float32 NIfTI (.nii.gz), 1 mm voxels
    masks/demo_00000.png       the lesion mask (its half-maximum region; 0/255 PNG or 0/1 uint8 NIfTI);
                               empty without lesion
    markers/demo_00000.png     shortcut variant only: the marker's mask (empty without marker)
    train.csv val.csv test.csv  one row per image, RSNA split-CSV column style
    demo.json                  the generator's parameters (a re-run with the same ones is a no-op)

CSV columns (2D): ``filename, x, y, width, height, type, bin_target, target, mask`` where
``x, y, width, height`` is the lesion's bounding box in pixels of the saved image (``x`` = column
from the left, ``y`` = row from the top, as in the RSNA CSVs; empty without lesion), ``type`` is
``Train``/``Val``/``Test``, ``bin_target`` is 1 with a lesion, and ``target`` mirrors RSNA's three
classes: 0 = clean, 1 = distractors but no lesion ("abnormal, not a lesion"), 2 = lesion.
3D adds ``z`` and ``depth``; ``x, y, z`` index the NIfTI array's axes 0, 1, 2.
The multifocal variant adds ``n_lesions`` (0 without lesion) and ``boxes``, a JSON list of every
lesion's box in the same convention (``[[x, y, width, height], ...]``, 3D
``[[x, y, z, width, height, depth], ...]``; ``[]`` without lesion). The shortcut variant adds
``marker`` (1 when the image holds the marker) and ``marker_mask`` (its mask file). The bundle's
data spec reads ``filename``, ``bin_target`` and ``mask`` and ignores the other columns.

Each sample depends only on ``(seed, index)``, so the data are identical on every machine and
adding samples does not change the existing ones. The one exception is the shortcut variant's
marker, which depends on ``(seed, index, split)``: the split of index ``i`` is train for
``i < num_train``, val for the next ``num_val`` indices and test after them (images are numbered
across the splits in this order), so changing ``num_train`` or ``num_val`` moves later indices to
another split and may change their markers, never anything else. Two random streams are used: the
sample's main stream ``(seed, index, spatial_dims)``, which draws everything of the default
variant, and a variant stream ``(seed, index, spatial_dims, 1)`` for the extra multifocal lesions
and for the marker, so that the variants leave the shared content untouched.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..utils import InputError, pid_alive
from .datalist import SPLITS

logger = logging.getLogger("monai_softcam")

__all__ = ["DemoDataConfig", "DemoSample", "ensure_demo_dataset", "generate_demo_dataset", "render_sample"]

_SPLIT_TYPES = {"train": "Train", "val": "Val", "test": "Test"}
DISTRACTOR_KINDS = ("ring", "streak", "dark_blob")
VARIANTS = ("default", "small", "multifocal", "shortcut")
MARKER_VALUE = 0.95  # intensity of the shortcut variant's marker (the background is about 0.5 +- 0.07)
_PLACEMENT_TRIES = 100  # multifocal: tries to place each extra lesion apart from the others
# the parameters that only some variants read: (field, variants that read it). They enter the
# fingerprint and demo.json only for those variants, so the default variant's (and every dataset
# made before the variants existed) stay the same.
_VARIANT_FIELDS = {
    "variant": VARIANTS[1:],
    "map_stride": ("small", "shortcut"),
    "small_diameter": ("small",),
    "small_contrast": ("small",),
    "max_lesions": ("multifocal",),
    "shortcut_correlation": ("shortcut",),
}


def _positive_range(value: Any, name: str) -> tuple[float, float]:
    """``value`` as a range ``(low, high)`` of floats with ``0 < low <= high``; else a ValueError naming ``name``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo, hi = 0.0, 0.0  # reported below
    if not 0 < lo <= hi:
        raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high, got {value!r}")
    return lo, hi


@dataclass
class DemoDataConfig:
    """Parameters of the demo generator (all sizes in pixels/voxels of the saved image).

    Args:
        spatial_dims: 2 (PNG images) or 3 (NIfTI volumes).
        size: side length of the square image / cubic volume (or an image size of equal sides, as
            the bundle passes its ``image_size``).
        num_train: number of training images.
        num_val: number of validation images.
        num_test: number of test images.
        seed: master seed; sample ``i`` is drawn from ``(seed, i)`` alone (the shortcut variant's
            marker from ``(seed, i)`` and the split of ``i``).
        lesion_fraction: probability that an image holds a lesion.
        distractor_fraction: probability that an image holds 1-3 distractors (independent of the lesion).
        radius: range of the lesion's (and distractors') radius.
        contrast: range of the lesion's peak contrast, in units of the background texture's standard deviation.
        background_std: standard deviation of the background texture (intensities are in [0, 1]).
        noise_std: standard deviation of the additive pixel noise.
        variant: ``"default"`` (one lesion of ``radius``), ``"small"`` (one lesion of
            ``small_diameter`` map cells), ``"multifocal"`` (1 to ``max_lesions`` lesions per lesion
            image; mask = their union) or ``"shortcut"`` (a corner marker correlated with the label
            in train/val, independent of it in test). The module docstring gives each rule exactly.
            Every variant works in 2D and 3D (3D: ellipsoids and a cube marker in one of the 8
            corners). A variant keeps the default sample's background, distractors, label and noise.
        map_stride: pixels per cell of the network's evidence map (the demo backbone's output
            stride, 8); the unit of ``small_diameter`` and the marker's side (small, shortcut).
        small_diameter: range of the small lesions' nominal diameter in map cells (times
            ``map_stride`` pixels; per-axis diameters vary 0.8-1.2 around it). The default
            (0.5, 1.5) is 4-12 px at stride 8: lesions touching 1-3 map cells along each axis.
        small_contrast: range of the small lesions' peak contrast (in ``contrast``'s units; it
            replaces ``contrast`` for them). A lesion of a few pixels, half its pixels at half
            contrast, needs more contrast than a large one to be seen through the texture and the
            noise. The default (2.5, 3.6) sits between chance and the ceiling: with the full demo
            benchmark's training (96 px, 800 training images, 6 epochs; configs/demo_small.yaml
            gives the command) the sparse SoftCAM's validation AUC was 0.61 at (1.8, 2.8),
            0.87 at (2.3, 3.3) and 0.996 at (2.8, 4.0).
        max_lesions: multifocal: a lesion image holds 1 to ``max_lesions`` lesions (uniform).
        shortcut_correlation: shortcut: in train and val the marker is on ``shortcut_correlation``
            of the lesion images and ``1 - shortcut_correlation`` of the others (0.5: no
            correlation, 1: the marker tells the label); in test on half of all images.
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
    variant: str = "default"
    map_stride: int = 8
    small_diameter: tuple[float, float] = (0.5, 1.5)
    small_contrast: tuple[float, float] = (2.5, 3.6)
    max_lesions: int = 4
    shortcut_correlation: float = 0.9

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if isinstance(self.size, (list, tuple)):
            if len(set(self.size)) != 1:
                raise ValueError(f"the demo images are square: size must have equal sides, got {list(self.size)}")
            self.size = int(self.size[0])
        if self.size < 4 * self.radius[1]:
            raise ValueError(f"size must be >= 4 * the largest radius ({4 * self.radius[1]}), got {self.size}")
        for name in ("num_train", "num_val", "num_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.radius = tuple(float(r) for r in self.radius)  # type: ignore[assignment]
        self.contrast = tuple(float(c) for c in self.contrast)  # type: ignore[assignment]
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if (
            isinstance(self.map_stride, bool)
            or not isinstance(self.map_stride, (int, np.integer))
            or self.map_stride < 1
        ):
            raise ValueError(f"map_stride must be an integer >= 1, got {self.map_stride!r}")
        self.map_stride = int(self.map_stride)
        self.small_diameter = _positive_range(self.small_diameter, "small_diameter")
        self.small_contrast = _positive_range(self.small_contrast, "small_contrast")
        if (
            isinstance(self.max_lesions, bool)
            or not isinstance(self.max_lesions, (int, np.integer))
            or self.max_lesions < 1
        ):
            raise ValueError(f"max_lesions must be an integer >= 1, got {self.max_lesions!r}")
        self.max_lesions = int(self.max_lesions)
        correlation = self.shortcut_correlation
        if isinstance(correlation, bool) or not isinstance(correlation, (int, float)) or not 0.0 <= correlation <= 1.0:
            raise ValueError(f"shortcut_correlation must be a number in [0, 1], got {correlation!r}")
        self.shortcut_correlation = float(correlation)
        if self.variant == "small" and self.size < 4 * self.small_radius()[1]:
            raise ValueError(
                f"size must be >= 4 * the largest small-lesion radius (small_diameter[1] * map_stride * 1.2 = "
                f"{2 * self.small_radius()[1]:g} px across) for variant 'small', got {self.size}"
            )
        if self.variant == "shortcut" and self.size < 3 * self.map_stride:
            raise ValueError(
                f"size must be >= 3 * map_stride ({3 * self.map_stride}) for variant 'shortcut', got {self.size}"
            )

    def counts(self) -> dict[str, int]:
        """Number of images per split: ``{"train", "val", "test"}``."""
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}

    def small_radius(self) -> tuple[float, float]:
        """Range of the small variant's per-axis lesion radii in pixels: half the nominal diameter
        range (``small_diameter * map_stride``) times 0.8-1.2."""
        return (self.small_diameter[0] * self.map_stride / 2 * 0.8, self.small_diameter[1] * self.map_stride / 2 * 1.2)

    def split_of(self, index: int) -> str:
        """The split of sample ``index``: images are numbered train, then val, then test."""
        if index < self.num_train:
            return "train"
        return "val" if index < self.num_train + self.num_val else "test"

    def marker_probability(self, split: str, label: int) -> float:
        """Shortcut variant: the probability that an image of ``split`` with ``label`` holds the marker."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if split == "test":
            return 0.5
        return self.shortcut_correlation if label else 1.0 - self.shortcut_correlation


@dataclass
class DemoSample:
    """One rendered sample: ``image`` in [0, 1] and boolean ``mask``, both in numpy axis order.

    ``box`` is the bounding box of ``mask`` (of all lesions' union in the multifocal variant);
    ``lesion_masks`` and ``boxes`` describe each lesion on its own (one or none outside the
    multifocal variant); ``marker``/``marker_mask`` the shortcut variant's marker (0 and None in
    the other variants).
    """

    image: np.ndarray
    mask: np.ndarray
    label: int
    target: int
    box: tuple[int, ...] | None  # per axis: (start_0, ..., start_n, size_0, ..., size_n)
    distractors: list[str]
    lesion_masks: list[np.ndarray] = field(default_factory=list)
    boxes: list[tuple[int, ...]] = field(default_factory=list)
    marker: int = 0
    marker_mask: np.ndarray | None = None
    split: str | None = None  # the split the sample was rendered for (it matters to the shortcut marker only)

    @property
    def n_lesions(self) -> int:
        return len(self.boxes)


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


def _bounding_box(mask: np.ndarray) -> tuple[int, ...]:
    where = np.nonzero(mask)
    starts = [int(w.min()) for w in where]
    sizes = [int(w.max()) - s + 1 for w, s in zip(where, starts)]
    return tuple(starts + sizes)


def _draw_lesion(
    rng: np.random.Generator,
    config: DemoDataConfig,
    grid: np.ndarray,
    radius_range: tuple[float, float],
    contrast_range: tuple[float, float],
    keep_apart: list[tuple[np.ndarray, float]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """Draw one lesion: (its added intensity, its mask, its centre, its largest radius).

    The draws are the default variant's, in its order (radius, per-axis radii, centre, rotation,
    grain, contrast). With ``keep_apart`` (centres and largest radii of lesions already placed) the
    centre is redrawn until the lesion keeps 2 px away from them; None when no place is found.
    """
    dims, size = config.spatial_dims, config.size
    shape = (size,) * dims
    std = config.background_std
    radius = rng.uniform(*radius_range)
    radii = radius * rng.uniform(0.8, 1.2, size=dims)
    center = _place(rng, size, dims, margin=radii.max() + 1)
    if keep_apart:
        tries = 1
        while any(np.linalg.norm(center - c) < radii.max() + r + 2.0 for c, r in keep_apart):
            if tries == _PLACEMENT_TRIES:
                return None
            center = _place(rng, size, dims, margin=radii.max() + 1)
            tries += 1
    profile = _ellipsoid(grid, center, radii, _random_rotation(rng, dims))
    grain = 0.5 + 0.5 * (rng.random(shape) < 0.6)
    lesion = std * rng.uniform(*contrast_range) * profile * grain
    return lesion, profile > 0.5, center, float(radii.max())


def _marker_mask(rng: np.random.Generator, config: DemoDataConfig, avoid: np.ndarray) -> np.ndarray:
    """The shortcut marker's mask: a square/cube of side ``map_stride`` at ``map_stride // 2`` from
    the border, in a random corner among those keeping 1 px away from ``avoid`` (the lesion mask)."""
    dims, size, side = config.spatial_dims, config.size, config.map_stride
    offset = config.map_stride // 2
    corners = [tuple((c >> axis) & 1 for axis in range(dims)) for c in range(2**dims)]
    order = rng.permutation(len(corners))
    chosen = None
    for k in order:
        lo = [offset if high == 0 else size - offset - side for high in corners[k]]
        square = tuple(slice(s, s + side) for s in lo)
        grown = tuple(slice(max(0, s - 1), s + side + 1) for s in lo)
        if chosen is None:
            chosen = square  # the fallback, should every corner touch the lesion
        if not avoid[grown].any():
            chosen = square
            break
    mask = np.zeros((size,) * dims, dtype=bool)
    mask[chosen] = True
    return mask


def render_sample(
    config: DemoDataConfig, index: int, with_lesion: bool = True, split: str | None = None, with_marker: bool = True
) -> DemoSample:
    """Render sample ``index`` of the demo dataset described by ``config`` (deterministic).

    ``with_lesion=False`` renders the same image without its lesion(s) (same background, distractors,
    marker and noise; mask, label and box still describe the lesions that were left out): a
    counterfactual for tests and faithfulness checks. ``with_marker=False`` likewise leaves out the
    shortcut variant's marker (``marker`` and ``marker_mask`` still describe it). ``split`` matters
    to the shortcut variant only (the marker's rule); by default it follows from ``index`` and the
    split sizes (:meth:`DemoDataConfig.split_of`).
    """
    rng = np.random.default_rng([config.seed, index, config.spatial_dims])
    dims, size = config.spatial_dims, config.size
    shape = (size,) * dims
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float64)] * dims, indexing="ij"))
    r_lo, r_hi = config.radius
    std = config.background_std
    split = config.split_of(index) if split is None else split
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")

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

    variant_rng = np.random.default_rng([config.seed, index, config.spatial_dims, 1])  # the variants' own draws
    mask = np.zeros(shape, dtype=bool)
    box = None
    lesion_masks: list[np.ndarray] = []
    if has_lesion:
        if config.variant == "small":
            lo, hi = config.small_diameter
            radius_range = (lo * config.map_stride / 2, hi * config.map_stride / 2)
            contrast_range = config.small_contrast
        else:
            radius_range, contrast_range = (r_lo, r_hi), config.contrast
        lesion, first_mask, center, largest = _draw_lesion(rng, config, grid, radius_range, contrast_range)  # type: ignore[misc]
        lesions, lesion_masks, placed = [lesion], [first_mask], [(center, largest)]
        if config.variant == "multifocal":
            for _ in range(int(variant_rng.integers(1, config.max_lesions + 1)) - 1):
                extra = _draw_lesion(variant_rng, config, grid, radius_range, contrast_range, keep_apart=placed)
                if extra is not None:
                    lesions.append(extra[0])
                    lesion_masks.append(extra[1])
                    placed.append((extra[2], extra[3]))
        if with_lesion:
            for lesion in lesions:
                image += lesion
        mask = np.logical_or.reduce(lesion_masks) if len(lesion_masks) > 1 else first_mask
        box = _bounding_box(mask)

    image += config.noise_std * rng.standard_normal(shape)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)

    marker, marker_mask = 0, None
    if config.variant == "shortcut":
        marker = int(variant_rng.random() < config.marker_probability(split, int(has_lesion)))
        marker_mask = _marker_mask(variant_rng, config, mask) if marker else np.zeros(shape, dtype=bool)
        if marker and with_marker:
            image[marker_mask] = MARKER_VALUE

    target = 2 if has_lesion else (1 if n_distractors else 0)
    boxes = [_bounding_box(m) for m in lesion_masks]
    return DemoSample(image, mask, int(has_lesion), target, box, kinds, lesion_masks, boxes, marker, marker_mask, split)


def _manifest_config(config: DemoDataConfig) -> dict[str, Any]:
    """The parameters that shape the data: every field, less the variant fields that the config's
    variant does not read (so a default-variant config has exactly the fields of the generator
    before the variants existed, and the same fingerprint)."""
    values = asdict(config)
    for name, readers in _VARIANT_FIELDS.items():
        if config.variant not in readers:
            del values[name]
    return values


def _fingerprint(config: DemoDataConfig) -> str:
    return hashlib.sha256(json.dumps(_manifest_config(config), sort_keys=True).encode()).hexdigest()[:16]


def _write_image(path: str, array: np.ndarray, spatial_dims: int, is_mask: bool) -> None:
    if spatial_dims == 2:
        data = (array.astype(np.uint8) * 255) if is_mask else np.round(array * 255).astype(np.uint8)
        Image.fromarray(data, mode="L").save(path)
    else:
        data = array.astype(np.uint8) if is_mask else array.astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def _csv_columns(spatial_dims: int, variant: str = "default") -> list[str]:
    axes = ["x", "y"] + (["z"] if spatial_dims == 3 else [])
    extents = ["width", "height"] + (["depth"] if spatial_dims == 3 else [])
    extra = {"multifocal": ["n_lesions", "boxes"], "shortcut": ["marker", "marker_mask"]}.get(variant, [])
    return ["filename"] + axes + extents + ["type", "bin_target", "target", "mask"] + extra


def _box_fields(box: tuple[int, ...] | None, spatial_dims: int) -> list[Any]:
    if box is None:
        return [""] * (2 * spatial_dims)
    starts, sizes = list(box[:spatial_dims]), list(box[spatial_dims:])
    if spatial_dims == 2:  # numpy (row, col) -> image (x = col, y = row)
        starts, sizes = starts[::-1], sizes[::-1]
    return [float(v) for v in starts + sizes]


def generate_demo_dataset(out_dir: str, config: DemoDataConfig | None = None, progress: bool = True) -> dict[str, str]:
    """Write the demo dataset to ``out_dir`` (which must not exist yet); return the split CSV paths.

    Files are written to a temporary folder beside ``out_dir`` (``.demo-partial-<pid>-...``) and moved into
    place at the end, so an interrupted run never leaves a half-written dataset that looks complete; it is
    removed on any error, and the partial folder of a run killed outright (``kill -9``) is removed by the
    next run here.
    """
    config = config or DemoDataConfig()
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        raise FileExistsError(f"demo data folder already exists: {out_dir}")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    _remove_dead_partials(parent)
    work = tempfile.mkdtemp(prefix=f"{_PARTIAL}{os.getpid()}-", dir=parent)
    try:
        ext = ".png" if config.spatial_dims == 2 else ".nii.gz"
        os.makedirs(os.path.join(work, "images"))
        os.makedirs(os.path.join(work, "masks"))
        if config.variant == "shortcut":
            os.makedirs(os.path.join(work, "markers"))
        total = sum(config.counts().values())
        bar = _progress(total, "demo data", progress)
        index = 0
        for split in SPLITS:
            rows = []
            for _ in range(config.counts()[split]):
                sample = render_sample(config, index, split=split)
                name = f"demo_{index:05d}{ext}"
                _write_image(os.path.join(work, "images", name), sample.image, config.spatial_dims, False)
                _write_image(os.path.join(work, "masks", name), sample.mask, config.spatial_dims, True)
                row = (
                    [f"images/{name}"]
                    + _box_fields(sample.box, config.spatial_dims)
                    + [_SPLIT_TYPES[split], sample.label, sample.target, f"masks/{name}"]
                )
                if config.variant == "multifocal":
                    boxes = [_box_fields(b, config.spatial_dims) for b in sample.boxes]
                    row += [sample.n_lesions, json.dumps(boxes)]
                elif config.variant == "shortcut":
                    assert sample.marker_mask is not None
                    _write_image(os.path.join(work, "markers", name), sample.marker_mask, config.spatial_dims, True)
                    row += [sample.marker, f"markers/{name}"]
                rows.append(row)
                index += 1
                bar.update(1)
            with open(os.path.join(work, f"{split}.csv"), "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(_csv_columns(config.spatial_dims, config.variant))
                writer.writerows(rows)
        bar.close()
        with open(os.path.join(work, "demo.json"), "w", encoding="utf-8") as f:
            json.dump({"fingerprint": _fingerprint(config), "config": _manifest_config(config)}, f, indent=2)
        os.replace(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {split: os.path.join(out_dir, f"{split}.csv") for split in SPLITS}


_PARTIAL = ".demo-partial-"


def _remove_dead_partials(parent: str) -> None:
    """Remove the partial folders in ``parent`` of generator processes that no longer run (killed outright)."""
    for name in os.listdir(parent):
        pid = name[len(_PARTIAL) :].split("-", 1)[0] if name.startswith(_PARTIAL) else ""
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            logger.info("removed %s, the partial demo data of a run that was killed", os.path.join(parent, name))


def ensure_demo_dataset(out_dir: str, config: DemoDataConfig | None = None, progress: bool = True) -> dict[str, str]:
    """Generate the demo dataset in ``out_dir`` unless the same one is already there; return the CSV paths.

    An existing folder made with other parameters (or not by this generator) is left untouched and
    reported with a ValueError, never overwritten. Processes that start together may both generate:
    the first to finish moves its folder into place, the others check that one and use it.
    """
    config = config or DemoDataConfig()
    out_dir = os.path.abspath(out_dir)
    manifest = os.path.join(out_dir, "demo.json")
    if not os.path.exists(out_dir):
        try:
            return generate_demo_dataset(out_dir, config, progress)
        except OSError:  # the folder appeared meanwhile: another process (e.g. a second tune worker) made it
            if not os.path.isfile(manifest):
                raise
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
