"""The extension repository that ``python -m monai_softcam slicer-extension`` writes keeps the rules
of 3D Slicer's Extensions Index: those of its ``scripts/check_description_files.py`` and its catalog
entry schema at github.com/Slicer/ExtensionsIndex commit 07f1d1b2781c7dd9f6e2a9f5521b3ed43631724c,
and what the index's factory needs to build it (Slicer's
``Extensions/CMake/SlicerBlockBuildPackageAndUploadExtensions.cmake`` configures the repository's
root: a root CMakeLists.txt, nothing outside the repository). The checker itself clones the
repository and downloads the schema and images; slicer_extension/README.md (Publishing) says how it was
run offline on this output. Its GitHub topic check ('3d-slicer-extension') needs GitHub's API and is
a step of publishing, not testable here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from conftest import REPO_ROOT, TESTS_DIR

from monai_softcam.__main__ import main
from monai_softcam.slicer_index import REQUIRED_VARIABLES, cmake_variables, write_slicer_extension

#: ACCEPTED_EXTENSION_CATEGORIES of scripts/check_description_files.py, ExtensionsIndex commit 07f1d1b
ACCEPTED_EXTENSION_CATEGORIES = [
    "Active Learning",
    "Analysis",
    "Auto3dgm",
    "BigImage",
    "Cardiac",
    "Chest Imaging Platform",
    "Conda",
    "Converters",
    "DICOM",
    "DSCI",
    "Developer Tools",
    "Diffusion",
    "Examples",
    "Exporter",
    "FTV Segmentation",
    "Filtering",
    "Filtering.Morphology",
    "Filtering.Vesselness",
    "Holographic Display",
    "Image Synthesis",
    "IGT",
    "Informatics",
    "Netstim",
    "Neuroimaging",
    "Nuclear Medicine",
    "Orthodontics",
    "Osteotomy Planning",
    "Otolaryngology",
    "Photogrammetry",
    "Pipelines",
    "Planning",
    "Printing",
    "Quantification",
    "Radiotherapy",
    "Registration",
    "Remote",
    "Rendering",
    "SPHARM",
    "Segmentation",
    "Sequences",
    "Shape Analysis",
    "Shape Regression",
    "Shape Visualization",
    "Simulation",
    "SlicerCMF",
    "SlicerMorph",
    "Spectral Imaging",
    "Supervisely",
    "Surface Models",
    "SurfaceLearner",
    "Tomographic Reconstruction",
    "Tracking",
    "Tractography",
    "Training",
    "Ultrasound",
    "Utilities",
    "Vascular Modeling Toolkit",
    "Virtual Reality",
    "VisSimTools",
    "Web System Tools",
    "Wizards",
]
#: check_git_repository_name's allowed prefixes (same file and commit)
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
#: check_license_file's names (same file and commit)
LICENSE_NAMES = ("LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt")
#: schemas/slicer-extension-catalog-entry-schema-v1.0.2.json of ExtensionsIndex commit 07f1d1b (the
#: same text as Schemas/ of Slicer/Slicer, where the entry's $schema URL points)
SCHEMA = os.path.join(TESTS_DIR, "fixtures", "slicer-extension-catalog-entry-schema-v1.0.2.json")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("index")
    assert main(["slicer-extension", str(out), "--git"]) == 0
    repo = out / "SlicerSoftCAM"
    entry = json.loads((out / "SoftCAM.json").read_text(encoding="utf-8"))
    variables = cmake_variables((repo / "CMakeLists.txt").read_text(encoding="utf-8"))
    return out, repo, entry, variables


def _raw_path(url: str, owner: str, branch: str) -> str:
    prefix = f"https://raw.githubusercontent.com/{owner}/SlicerSoftCAM/{branch}/"
    assert url.startswith(prefix), url
    return url[len(prefix) :]


def test_the_root_cmakelists_names_the_extension_and_its_meta_information(generated):
    out, repo, entry, variables = generated
    text = (repo / "CMakeLists.txt").read_text(encoding="utf-8")
    name = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", text, re.I)[0]  # check_cmakelists_content's pattern
    assert name == "SoftCAM" and (out / f"{name}.json").is_file()  # the entry's file name is the project's
    assert not name.lower().startswith("slicer")  # check_extension_name
    assert "add_subdirectory(SoftCAM)" in text and (repo / "SoftCAM" / "CMakeLists.txt").is_file()
    for variable in REQUIRED_VARIABLES:  # Slicer's extension template, Utilities/Templates/Extensions/Default
        assert variables.get(variable, "").strip(), variable
    assert variables["EXTENSION_CATEGORY"] in ACCEPTED_EXTENSION_CATEGORIES
    assert entry["category"] == variables["EXTENSION_CATEGORY"]
    assert entry["build_dependencies"] == variables["EXTENSION_DEPENDS"].split() == ["PyTorch"]  # PyTorch.json
    source = cmake_variables((Path(REPO_ROOT) / "slicer_extension" / "CMakeLists.txt").read_text(encoding="utf-8"))
    for variable in ("EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_DEPENDS"):
        assert variables[variable] == source[variable]  # one source of truth: slicer_extension/CMakeLists.txt


def test_the_entry_validates_against_the_index_schema_and_names_a_slicer_repository(generated):
    out, repo, entry, _ = generated
    raw = (out / "SoftCAM.json").read_bytes()
    assert b"\r" not in raw  # check_json_file_format: LF only
    schema = json.loads(open(SCHEMA, encoding="utf-8").read())
    assert entry["$schema"].split("#")[0].rsplit("/", 1)[1] == os.path.basename(SCHEMA)
    jsonschema.validate(entry, schema)
    assert set(schema["required"]) <= set(entry) == set(entry) & set(schema["properties"])
    url = entry["scm_url"]
    assert re.fullmatch(r"https://github\.com/[A-Za-z0-9-]+/[^/]+\.git", url)  # check_scm_url_syntax: git/https
    repo_name = os.path.splitext(url.rstrip("/").rsplit("/", 1)[1])[0]
    assert repo_name == repo.name and "slicer" in repo_name.lower() and repo_name.startswith(REPOSITORY_PREFIXES)
    assert entry["scm_revision"] == "main" and entry["build_subdirectory"] == "." and entry["tier"] == 1


def test_the_icon_and_screenshot_urls_are_the_entry_repositorys_own_files(generated):
    _, repo, entry, variables = generated
    owner = entry["scm_url"].split("/")[3]
    branch = entry["scm_revision"]
    assert variables["EXTENSION_HOMEPAGE"] == f"https://github.com/{owner}/SlicerSoftCAM"
    urls = [variables["EXTENSION_ICONURL"], *variables["EXTENSION_SCREENSHOTURLS"].split()]
    assert _raw_path(urls[0], owner, branch) == "SoftCAM.png" and len(urls) >= 2
    for url in urls:
        assert (repo / _raw_path(url, owner, branch)).read_bytes()[:8] == PNG, url
    text = (repo / "CMakeLists.txt").read_text(encoding="utf-8")  # the checker's own patterns find them
    assert re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text, re.I) == urls[:1]
    assert re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text, re.I)[0].split() == urls[1:]
    assert any((repo / name).is_file() for name in LICENSE_NAMES) and (repo / "README.md").is_file()


def test_nothing_reaches_outside_the_repository_and_the_runtime_is_inside(generated):
    _, repo, _, _ = generated
    module = repo / "SoftCAM"
    for path in repo.rglob("*"):
        if ".git" in path.relative_to(repo).parts:
            continue
        assert not path.is_symlink(), path
        if path.is_file() and path.suffix != ".png":
            text = path.read_text(encoding="utf-8")
            assert "../.." not in text and "..\\.." not in text, path
            if path.suffix == ".cmake" or path.name == "CMakeLists.txt":
                assert not re.search(r'(^|[\s/"(])\.\.([/\\\s")]|$)', text, re.M), path  # no parent folder at all
    assert "set(SOFTCAM_SOURCE_ROOT ${CMAKE_CURRENT_SOURCE_DIR})" in (module / "CMakeLists.txt").read_text()
    package = Path(REPO_ROOT) / "monai_softcam"
    expected = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    shipped = module / "monai_softcam"
    assert sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file()) == expected
    assert all((shipped / p).read_bytes() == (package / p).read_bytes() for p in expected)
    assert (module / "bundle" / "configs" / "inference.yaml").is_file()
    assert not list(repo.rglob("__pycache__"))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake to run CopyRuntime.cmake")
def test_the_module_cmake_installs_the_runtime_from_inside_the_repository(generated, tmp_path):
    _, repo, _, _ = generated
    module = repo / "SoftCAM"
    subprocess.run(
        ["cmake", f"-DSOFTCAM_SOURCE_ROOT={module}", f"-DSOFTCAM_DESTINATION={tmp_path}", "-P", "CopyRuntime.cmake"],
        cwd=module,
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "monai_softcam" / "networks" / "softcam.py").is_file()
    assert (tmp_path / "Resources" / "bundle" / "configs" / "inference.yaml").is_file()


def test_the_repository_is_committed_and_the_cli_refuses_to_overwrite(generated, capsys):
    out, repo, entry, _ = generated
    git = ["git", "-C", str(repo)]
    branch = subprocess.run([*git, "branch", "--show-current"], capture_output=True, text=True, check=True)
    assert branch.stdout.strip() == entry["scm_revision"]
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True)
    assert status.stdout == ""  # every file committed
    assert main(["slicer-extension", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_owner_and_branch_go_into_every_url(tmp_path):
    paths = write_slicer_extension(str(tmp_path), owner="someone", branch="release")
    entry = json.loads(open(paths["entry"], encoding="utf-8").read())
    assert entry["scm_url"] == "https://github.com/someone/SlicerSoftCAM.git" and entry["scm_revision"] == "release"
    variables = cmake_variables(open(os.path.join(paths["repository"], "CMakeLists.txt"), encoding="utf-8").read())
    assert (
        variables["EXTENSION_ICONURL"] == "https://raw.githubusercontent.com/someone/SlicerSoftCAM/release/SoftCAM.png"
    )
    assert not os.path.isdir(os.path.join(paths["repository"], ".git"))
    with pytest.raises(ValueError):
        write_slicer_extension(str(tmp_path / "other"), owner="bad/owner")
