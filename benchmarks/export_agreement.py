"""Eager vs TorchScript vs ONNX (onnxruntime) outputs of SoftCAM for the registered backbones, 2D and 3D.

    python benchmarks/export_agreement.py            # every backbone, 2D and 3D (about 10 minutes on 2 CPU cores)
    python benchmarks/export_agreement.py --quick    # resnet18 and vgg11 only

Random weights and randomised batch-norm statistics (so that normalisation is not the identity),
2D inputs of 64 x 96 px, 3D inputs of 32 x 32 x 64 voxels, batch 3. Prints and writes a markdown
table (``--out``): the largest absolute difference of any output (logits, evidence maps) to eager
PyTorch, and relative to the largest output value.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import write_table  # noqa: E402


def _randomise_batch_norm(net, seed: int = 1) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def measure(name: str, spatial_dims: int, folder: str) -> dict:
    import numpy as np
    import torch

    from monai_softcam.export import export_onnx, run_onnx
    from monai_softcam.networks import SoftCAM

    size = (64, 96) if spatial_dims == 2 else (32, 32, 64)
    torch.manual_seed(0)
    net = SoftCAM(name, spatial_dims, 1, 2, return_maps=True).eval()
    _randomise_batch_norm(net)
    x = torch.randn(3, 1, *size)
    start = time.perf_counter()
    with torch.no_grad():
        eager = net(x)
        scripted = torch.jit.script(net)(x)
    path = os.path.join(folder, f"{name}_{spatial_dims}d.onnx")
    export_onnx(net, path, size, verify=False)
    onnx = run_onnx(path, x)
    scale = max(float(v.abs().max()) for v in eager.values())
    ts = max(float((scripted[k] - eager[k]).abs().max()) for k in eager)
    ox = max(float(np.abs(onnx[k] - eager[k].numpy()).max()) for k in eager)
    return {"ts": ts, "onnx": ox, "scale": scale, "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="resnet18 and vgg11 only")
    parser.add_argument("--backbones", default=None, help="comma-separated names (default: all registered)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "export_agreement.md"))
    args = parser.parse_args(argv)

    import warnings

    import torch

    from monai_softcam.networks import available_backbones

    warnings.filterwarnings("ignore")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    names = (
        args.backbones.split(",")
        if args.backbones
        else (["resnet18", "vgg11"] if args.quick else available_backbones())
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            for dims in (2, 3):
                try:
                    r = measure(name, dims, folder)
                    rows.append(
                        f"| {name} | {dims}D | {r['ts']:.1e} | {r['onnx']:.1e} | {r['onnx'] / r['scale']:.1e} | {r['scale']:.3g} |"
                    )
                except Exception as err:  # reported, not hidden: the table says which configuration fails
                    rows.append(
                        f"| {name} | {dims}D | failed: {type(err).__name__}: {str(err).splitlines()[0][:120]} | | | |"
                    )
                print(rows[-1], flush=True)
    import onnxruntime

    write_table(
        args.out,
        "Export agreement: eager PyTorch vs TorchScript vs ONNX (onnxruntime)",
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, CPU; random weights and batch-norm "
        "statistics; 2D 64 x 96 px, 3D 32 x 32 x 64 voxels, batch 3. Largest absolute difference over logits and "
        "evidence maps.",
        ["backbone", "dims", "TorchScript", "ONNX", "ONNX / max output", "max output"],
        rows,
        __file__,
        argv,
    )
    return 0 if all("failed" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
