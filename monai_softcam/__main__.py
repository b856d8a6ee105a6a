"""Command line of the package: ``python -m monai_softcam <command>``.

Commands:
    check-data  check a dataset's CSVs and files against a preset before training
    demo-data   write the built-in demo dataset (2D PNG or 3D NIfTI, with masks and split CSVs)
    backbones   list the registered backbones
    package-bundle  write a trained model as a MONAI Model Zoo bundle (configs, metadata, URLs, scripts/)
    slicer-extension  write the Slicer extension as its own repository (SlicerSoftCAM) and its Extensions Index entry

Training, evaluation and inference run through the MONAI bundle in ``bundle/``
(``python -m monai.bundle run training --config_file bundle/configs/train.yaml``).
"""

from __future__ import annotations

import argparse
import os
import sys

from .data.check import check_data
from .data.demo import DemoDataConfig, generate_demo_dataset
from .networks.backbones import available_backbones, get_backbone_spec
from .package import CODE_FORMS, package_bundle, parse_urls
from .slicer_index import write_slicer_extension
from .utils import install_error_hook


def _demo_data(args: argparse.Namespace) -> int:
    config = DemoDataConfig(
        spatial_dims=args.spatial_dims,
        size=args.size if args.size else (96 if args.spatial_dims == 2 else 48),
        num_train=args.num_train,
        num_val=args.num_val,
        num_test=args.num_test,
        seed=args.seed,
        variant=args.variant,
    )
    paths = generate_demo_dataset(args.output, config)
    print("wrote demo data to", args.output)
    for split, path in paths.items():
        print(f"  {split}: {path}")
    return 0


def _check_data(args: argparse.Namespace) -> int:
    problems = check_data(args.config, args.dataset_dir, args.splits, not args.no_images, args.report)
    return 1 if problems else 0


def _backbones(args: argparse.Namespace) -> int:
    for name in available_backbones():
        print(f"{name:<18} {get_backbone_spec(name).description}")
    return 0


def _package_bundle(args: argparse.Namespace) -> int:
    urls = parse_urls(args.url, allow_local=args.allow_local_urls)
    out = package_bundle(
        args.ckpt_dir,
        args.out,
        args.name,
        urls,
        metrics=args.metrics or (),
        metadata=args.metadata,
        version=args.version,
        changelog=args.changelog,
        source=args.source,
        unit_test=args.unit_test,
        authors=args.authors,
        hardware=args.hardware,
        code=args.code,
    )
    print(f"wrote the Model Zoo bundle {args.name} to {out}")
    print(f"  weights (not in the folder; large_files.yml lists their URLs and SHA-256): {', '.join(urls)}")
    if args.unit_test:
        dist = os.path.join(os.path.dirname(args.unit_test), f"test_{args.name}_dist.py")
        print(f"  the Zoo's unit tests: {args.unit_test} and {dist} (copy them to the Zoo's ci/unit_tests/)")
    return 0


def _slicer_extension(args: argparse.Namespace) -> int:
    paths = write_slicer_extension(args.output, owner=args.owner, branch=args.branch, git=args.git)
    print(f"wrote the Slicer extension repository to {paths['repository']}")
    print(f"  its Extensions Index entry: {paths['entry']} (see slicer_extension/README.md, Publishing)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line: parse ``argv`` (default ``sys.argv[1:]``), run the chosen command, return its exit status
    (2, with the message on stderr, for a ValueError or a missing/existing file)."""
    install_error_hook()
    parser = argparse.ArgumentParser(prog="python -m monai_softcam", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-data", help="check a dataset against a preset (exit status 1 on problems)")
    check.add_argument(
        "--config", action="append", required=True, help="preset or bundle config (repeat to merge several, in order)"
    )
    check.add_argument("--dataset_dir", required=True, help="the dataset's folder")
    check.add_argument("--splits", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test"])
    check.add_argument("--no-images", action="store_true", help="check CSVs and file existence only, decode no image")
    check.add_argument("--report", help="also write every problem to this CSV file")
    check.set_defaults(func=_check_data)
    demo = sub.add_parser("demo-data", help="write the built-in demo dataset")
    demo.add_argument("output", help="folder to create (must not exist)")
    demo.add_argument("--spatial_dims", type=int, choices=(2, 3), default=2)
    demo.add_argument("--size", type=int, default=0, help="image side in pixels (default 96 in 2D, 48 in 3D)")
    demo.add_argument("--num_train", type=int, default=800)
    demo.add_argument("--num_val", type=int, default=200)
    demo.add_argument("--num_test", type=int, default=200)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--variant",
        default="default",
        choices=("default", "small", "multifocal", "shortcut"),
        help="small: lesions of 1-3 map cells; multifocal: 1-4 lesions; shortcut: a marker that follows "
        "the label in train/val but not in test (see monai_softcam/data/demo.py)",
    )
    demo.set_defaults(func=_demo_data)
    sub.add_parser("backbones", help="list the registered backbones").set_defaults(func=_backbones)
    pack = sub.add_parser(
        "package-bundle",
        help="write a trained model as a MONAI Model Zoo bundle",
        description="Write a trained model as a self-contained MONAI Model Zoo bundle folder "
        "(see monai_softcam/package.py); nothing is written if a check fails.",
    )
    pack.add_argument("--ckpt_dir", required=True, help="the trained model's folder (model.pt, task.json)")
    pack.add_argument("--out", required=True, help="the bundle folder to write (new or empty)")
    pack.add_argument("--name", required=True, help="the bundle's Zoo name: <task>_<modality>_softcam_classification")
    pack.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="FILE=URL",
        help="where the Zoo downloads a weight file: model.pt (required), model.ts, model.onnx; a public "
        "http(s) URL, which the Zoo's CI runner can reach",
    )
    pack.add_argument(
        "--allow_local_urls",
        action="store_true",
        help="accept file://, localhost, private-network and .local URLs (offline checks of the download step; "
        "the Zoo refuses them)",
    )
    pack.add_argument(
        "--metrics",
        action="append",
        metavar="FILE",
        help="an evaluation report metrics_<split>.json of this model (repeatable; default: "
        "metrics_test.json and metrics_val.json in the eval folder beside --ckpt_dir)",
    )
    pack.add_argument(
        "--metadata",
        metavar="FILE",
        help="JSON with the metadata text of the data (data_source, "
        "description, ...); required for a model not trained on the built-in demo data",
    )
    pack.add_argument(
        "--authors", help="the model's authors (metadata and README; default: the --metadata file's, else the bundle's)"
    )
    pack.add_argument(
        "--hardware",
        help="what the model was trained on, for the README's System Configuration (e.g. '1 NVIDIA A100 GPU, "
        "2 h'); default: the device and training time the model's task.json records",
    )
    pack.add_argument("--version", default="0.1.0", help="the bundle version (default 0.1.0)")
    pack.add_argument("--changelog", help="the changelog line of this version")
    pack.add_argument("--source", help="the bundle whose configs are packaged (default: the project's bundle/)")
    pack.add_argument("--unit_test", metavar="FILE", help="also write the Zoo's unit test test_<name>.py here")
    pack.add_argument(
        "--code",
        choices=CODE_FORMS,
        default="scripts",
        help="scripts (default): copy the modules the configs import into the bundle's scripts/; pip: the configs "
        "import monai_softcam, pinned to this version in the metadata (once the package is published)",
    )
    pack.set_defaults(func=_package_bundle)
    ext = sub.add_parser(
        "slicer-extension",
        help="write the Slicer extension as its own repository and its Extensions Index entry",
        description="Write OUTPUT/SlicerSoftCAM, the Slicer extension as a standalone repository (root "
        "CMakeLists.txt, the module with monai_softcam inside it, README, LICENSE, icon, screenshot), and "
        "OUTPUT/SoftCAM.json, its catalog entry for Slicer's ExtensionsIndex (see monai_softcam/slicer_index.py).",
    )
    ext.add_argument("output", help="folder to write into (created if missing; must not hold either yet)")
    ext.add_argument("--owner", default="monai-softcam", help="GitHub owner of SlicerSoftCAM (default monai-softcam)")
    ext.add_argument("--branch", default="main", help="the branch the entry and the URLs name (default main)")
    ext.add_argument("--git", action="store_true", help="also git init the repository and commit it on --branch")
    ext.set_defaults(func=_slicer_extension)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
