"""monai_softcam: self-explaining SoftCAM classifiers for medical images on MONAI."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "monai_softcam", "__init__.py")) as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)
with open(os.path.join(HERE, "README.md")) as f:
    LONG_DESCRIPTION = f.read()

CAPTUM = ["captum>=0.7"]
ONNX = ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"]
TUNE = ["optuna>=4.9"]  # run tune: λ selection on an Optuna study (SQLite by default)
# MONAI's --tracking mlflow: the MLflow client and its SQL store (MONAI's default tracking URI is SQLite)
TRACKING = ["mlflow-skinny>=3.0", "sqlalchemy>=2.0", "alembic>=1.13"]
# the documentation site (scripts/docs.sh): Sphinx (autodoc/autosummary, as MONAI's site) with MyST for the
# Markdown pages and the tutorial notebook (executed by jupytext with a Jupyter kernel), every public name
# documented (interrogate)
DOCS = ["sphinx>=7.3", "furo>=2024.1", "myst-nb>=1.1", "sphinx-copybutton>=0.5", "jupytext>=1.16", "nbconvert>=7.0",
        "nbclient>=0.10", "ipykernel>=6.29", "interrogate>=1.7"]

setup(
    name="monai_softcam",
    version=VERSION,
    description="SoftCAM: self-explaining CNN classifiers (class evidence maps) for 2D/3D medical images, on MONAI",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["monai_softcam", "monai_softcam.*"]),
    python_requires=">=3.10",
    # torch is pinned by the Quick-start scripts (a CPU build) before this package is installed;
    # any torch >= 2.3 satisfies the requirement, so pip never swaps it for another build.
    install_requires=[
        "torch>=2.3",
        "monai>=1.4",
        "pytorch-ignite>=0.4.11",
        "numpy>=1.24",
        "nibabel>=5.0",
        "pydicom>=3.0",  # pydicom.pixels: decoder plugins, LUTs
        # pydicom's decoder plugins for compressed DICOM (JPEG baseline/extended/lossless and JPEG-LS:
        # libjpeg, GPLv3; JPEG 2000: openjpeg; RLE: rle, faster than pydicom's own), all binary wheels
        "pylibjpeg>=2.0",
        "pylibjpeg-libjpeg>=2.1",
        "pylibjpeg-openjpeg>=2.2",
        "pylibjpeg-rle>=2.0",
        "SimpleITK>=2.2",
        "pyyaml>=6.0",
        "fire>=0.5",
        "jsonschema>=4.0",
        "tensorboard>=2.12",
        "pillow>=9.0",
        "tqdm>=4.60",
        "matplotlib>=3.5",  # the explanation report's figures
    ],
    # captum: Integrated Gradients as an extra post-hoc baseline (the tests use it too)
    # onnx: ONNX export (torch.export-based exporter: onnx + onnxscript) and its check (onnxruntime)
    # tracking: python -m monai.bundle run ... --tracking mlflow
    # test: pyjpegls encodes the JPEG-LS files of the DICOM transfer-syntax tests; pre-commit-hooks are the
    # Model Zoo's pre-commit checks, run on the bundle; OpenCV is the resizer and dilation of the paper's
    # evaluation code, which the tests of the paper's metric protocol compare with; pytest-xdist runs the suite on
    # every core (scripts/test.sh), coverage measures it (scripts/coverage.sh); CI also builds the docs
    extras_require={"captum": CAPTUM, "onnx": ONNX, "tune": TUNE, "tracking": TRACKING, "docs": DOCS,
                    "test": ["pytest>=7.0", "pytest-xdist>=3.5", "pyjpegls>=1.3", "pre-commit-hooks>=4.6",
                             "opencv-python-headless>=4.8", "coverage>=7.4", *CAPTUM, *ONNX, *TUNE, *TRACKING, *DOCS]},
    entry_points={"console_scripts": ["monai-softcam=monai_softcam.__main__:main"]},
)
