"""The explanation report: classification and explanation metrics of one or more models and
explanation methods on one split, with confidence intervals, curves, a sanity check, a gallery
and an ``index.html`` that shows them together.

Run through the bundle (``python -m monai.bundle run explain_eval --config_file
"['bundle/configs/train.yaml','bundle/configs/explain.yaml']"``) or call
:func:`~monai_softcam.explanation_report.report.explanation_report`.

Written to ``output_dir``:

* ``report.json`` / ``report.csv``: per model, its classification metrics; per model and method,
  each explanation metric's mean, 95 % bootstrap confidence interval, ``n`` and ``n_excluded``,
  and whether higher or lower is better;
* ``cases.csv``: every per-image value (image, label, prediction, model, method, metrics);
* ``faithfulness.png``: mean deletion and insertion curves;
* ``topk_curve.png``: the paper's top-k curve, k = 1 .. ``topk_curve`` (paper protocol; also a table in
  ``table.md``);
* ``sanity.png`` and ``sanity.csv``: cascading randomisation (Spearman correlation per layer);
* ``gallery.png``: image, ground truth, SoftCAM's map of every class and each method's map;
* ``table.md``: the headline table in Markdown (AUC; localisation and faithfulness per method);
* ``paired.csv`` / ``paired.md``: each SoftCAM map against each other model/method on the same
  images: the mean per-image difference (SoftCAM minus the other), its 95 % bootstrap CI and a
  paired sign-flip permutation test (:func:`~monai_softcam.metrics.statistics.paired_difference`);
* ``index.html``: all of the above on one page.

**Both protocols** are reported side by side (``table.md`` has a table for each):

* this project's (``activation_precision``, ``pointing_game``, ``topk_precision``, ``deletion_auc``,
  ...): maps brought to the image grid bi/trilinearly, masks as annotated, top-k patches ranked by
  their mean, deletion tiles ranked by their mean, relative confidence on every image;
* the paper's (``paper_*``, :mod:`monai_softcam.metrics.paper`): every map first resized cubically to the
  reference's grid (``paper_map_size``, 16 at 512 px: post-hoc maps from their layer's or the image's grid,
  SoftCAM's already on it), then upsampled cubically, masks dilated (``dilation``), activation precision and
  sensitivity, the share of cells of the right sign (``paper_consistency``), top-k from the point values above a
  threshold with counts pooled over images (``paper_topk_precision``, and ``_tp`` on the images the
  model assigns to the explained class; the curve over k as ``paper_topk_precision@k``), and
  ``paper_deletion_auc``: deletion on the **diseased** images only (label other than ``healthy_class``),
  tiles ranked by their **max**, scored by accuracy for two classes (is the image still assigned to its class?) and by relative
  confidence for more.

The paper's top-k threshold is in raw map units, and each method has its own (``paper_thresholds``:
a number for every method, or ``{method: number}`` with 0 for the methods not named; SoftCAM's is
the settings' ``paper_threshold``). The reference's 1 is in SoftCAM's units: a cell of 1 adds
``1/N`` to the logit of an ``N``-cell map. Post-hoc maps have no such unit (Grad-CAM's are gradients
times activations, Integrated Gradients' sum to the logit over the pixels, Score-CAM's are weights
that sum to 1 over the channels), so by default they count every patch with positive evidence, the
most lenient choice for them. On a ResNet, Grad-CAM of a model equals ``ReLU(CAM - b)/N`` of the *same*
model's weights (``tests/test_equivalence.py``); the black box and a SoftCAM model are trained apart and share
no weights, so no threshold of one translates into the other's.

Rules: localisation metrics use only images with a non-empty mask (the others are counted in
``n_excluded``); deletion and insertion use only the images that **every** compared model
classifies correctly (as the paper, which compares two models at a time: with more models the set
is the images all of them get right), so that all methods are compared on the same images.
Pooled metrics (:data:`~monai_softcam.metrics.explanation.WEIGHTS`) are summarised as the pooled
ratio with an image-resampling bootstrap, and are left out of the paired tests (a per-image
difference of pooled ratios is not what they measure).

The per-image values are those of :func:`monai_softcam.metrics.explanation.explanation_values` (the same
function, names and settings as the bundle's evaluation), plus ``deletion_auc`` and ``insertion_auc``.
:func:`~monai_softcam.explanation_report.report.explanation_report` runs three steps, each usable on its own:
:func:`~monai_softcam.explanation_report.collection.collect` (one pass over the data: probabilities, per-image
values, curves, gallery cases, the sanity check),
:func:`~monai_softcam.explanation_report.aggregation.aggregate` (the report dict: classification metrics, means
with confidence intervals, mean curves) and :func:`~monai_softcam.explanation_report.files.write` (the files)."""

from .aggregation import Aggregated, aggregate
from .collection import ALL_METHODS, Collected, collect, method_thresholds
from .files import markdown_table, paired_table, write
from .report import explanation_report

__all__ = [
    "ALL_METHODS",
    "Aggregated",
    "Collected",
    "aggregate",
    "collect",
    "explanation_report",
    "markdown_table",
    "method_thresholds",
    "paired_table",
    "write",
]
