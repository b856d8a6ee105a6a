"""The cost of explanations: SoftCAM's maps of all classes vs plain inference and post-hoc methods.

    python benchmarks/explanation_cost.py            # ResNet-50 and VGG-16 at 224 and 512 px, batch 1 and 8
    python benchmarks/explanation_cost.py --quick    # ResNet-18 at 64 px and 32^3: a smoke run in seconds
    python benchmarks/explanation_cost.py --spatial_dims 3 --sizes 64,128 --backbones resnet50 --batches 1
    python benchmarks/explanation_cost.py --device cuda   # on a GPU (the default when one is there)

Contenders, on the same backbone and input, run in alternation ``--repeats`` times:

* black box: logits of the black-box counterpart (global pooling + linear), ``torch.no_grad``;
* SoftCAM: logits AND the evidence maps of every class, one forward pass;
* Grad-CAM (one class, all classes), Grad-CAM++ (one class): MONAI's, on the black box's last stage;
* occlusion (one class; batch 1 at the smallest size only, it is slow; ``--no_occlusion`` skips it):
  MONAI's, a grid of 8 masks per axis.

On a GPU the clock stops only after the device has finished (``torch.cuda.synchronize``).
Each row gives the median time per batch and, per contender, the median over the repeats of its
time divided by the black box's time in the same repeat (the machine's drift hits both). Targets:
SoftCAM within 1.05x of plain inference; Grad-CAM for one class at least 3x slower than SoftCAM at
512 px. Writes a markdown table (``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import describe_machine, synchronize, write_table  # noqa: E402


def _contenders(
    backbone: str, spatial_dims: int, size: int, batch: int, occlusion: bool, device: str, classes: int = 2
):
    import torch

    from monai_softcam.explain import GradCAMExplainer, OcclusionExplainer
    from monai_softcam.networks import BlackBox, SoftCAM

    torch.manual_seed(0)
    in_channels = 3 if spatial_dims == 2 else 1
    softcam = SoftCAM(backbone, spatial_dims, in_channels, classes, return_maps=True).to(device).eval()
    # the tables were measured with the black box's global-pooling head and Grad-CAM at the trunk's
    # output; for VGG the defaults are now the paper's classic head and its pre-pool layer, which
    # these tables do not cover (pass them here to measure those)
    blackbox = BlackBox(backbone, spatial_dims, in_channels, classes, head="gap").to(device).eval()
    x = torch.randn(batch, in_channels, *([size] * spatial_dims), device=device)
    gradcam = GradCAMExplainer(blackbox, target_layer="backbone.features")
    gradcampp = GradCAMExplainer(blackbox, target_layer="backbone.features", plus=True)

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()

        return run

    contenders = {
        "black box (logits)": no_grad(lambda: blackbox(x)),
        "SoftCAM (logits + all maps)": no_grad(lambda: softcam(x)),
        "Grad-CAM, one class": lambda: gradcam(x, 1),
        "Grad-CAM, all classes": lambda: [gradcam(x, c) for c in range(classes)],
        "Grad-CAM++, one class": lambda: gradcampp(x, 1),
    }
    if occlusion:
        occ = OcclusionExplainer(blackbox, mask_size=max(1, size // 8), overlap=0.0, mode="mean_img")
        contenders["occlusion, one class"] = no_grad(lambda: occ(x, 1))
    return contenders


def measure(backbone, spatial_dims, size, batch, repeats, occlusion, device="cpu") -> dict[str, dict]:
    contenders = _contenders(backbone, spatial_dims, size, batch, occlusion, device)
    for fn in contenders.values():  # warm-up
        fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(repeats):
        names = list(contenders)
        order = names if r % 2 == 0 else names[::-1]  # alternate the order too
        for name in order:
            start = time.perf_counter()
            contenders[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    base = times["black box (logits)"]
    return {
        name: {
            "median": statistics.median(t),
            "min": min(t),
            "max": max(t),
            "ratio": statistics.median([a / b for a, b in zip(t, base)]),
        }
        for name, t in times.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18, 64 px and 32^3, batch 1 and 2, 2 repeats")
    parser.add_argument("--backbones", default=None, help="default resnet50,vgg16")
    parser.add_argument("--spatial_dims", type=int, default=None, help="2 or 3 (default 2; --quick runs both)")
    parser.add_argument("--sizes", default=None, help="default 224,512 (2D) / 64,128 (3D)")
    parser.add_argument("--batches", default=None, help="default 1,8")
    parser.add_argument("--repeats", type=int, default=None, help="default 5")
    parser.add_argument("--no_occlusion", action="store_true", help="skip occlusion (minutes per image in 3D on a CPU)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when there is a GPU)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "explanation_cost.md"))
    args = parser.parse_args(argv)

    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {device}: torch sees no GPU here (torch {torch.__version__}); use --device cpu")
    dims_list = [args.spatial_dims] if args.spatial_dims else ([2, 3] if args.quick else [2])
    backbones = (args.backbones or ("resnet18" if args.quick else "resnet50,vgg16")).split(",")
    batches = [int(b) for b in (args.batches or ("1,2" if args.quick else "1,8")).split(",")]
    repeats = args.repeats or (2 if args.quick else 5)
    rows = []
    for dims in dims_list:
        default_sizes = ("64" if args.quick else "224,512") if dims == 2 else ("32" if args.quick else "64,128")
        sizes = [int(s) for s in (args.sizes or default_sizes).split(",")]
        for backbone in backbones:
            for size in sizes:
                for batch in batches:
                    occlusion = batch == 1 and size == min(sizes) and not args.no_occlusion
                    result = measure(backbone, dims, size, batch, repeats, occlusion, device)
                    shape = "x".join([str(size)] * dims)
                    for name, r in result.items():
                        rows.append(
                            f"| {backbone} | {shape} | {batch} | {name} | {1000 * r['median']:.1f} "
                            f"({1000 * r['min']:.1f}-{1000 * r['max']:.1f}) | {r['ratio']:.2f}x |"
                        )
                        print(rows[-1], flush=True)
    write_table(
        args.out,
        "Explanation cost: SoftCAM's maps vs plain inference and post-hoc methods",
        f"{describe_machine(device, args.threads)}, {repeats} alternating repeats, 2 classes, random weights. "
        "Ratio: median over the repeats of time / black-box time in the same repeat.",
        ["backbone", "input", "batch", "method", "ms per batch, median (min-max)", "vs black box"],
        rows,
        __file__,
        argv,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
