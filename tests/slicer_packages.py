"""The Python packages of a 3D Slicer release, modelled over this interpreter's: the package/pip
part of the stand-ins (tests/slicer_stubs.py installs it with ``install(release=...)``).

``tests/fixtures/slicer_releases.json`` holds, per release, the versions Slicer bundles (each
citing the SuperBuild file and tag it was read from), the packages Slicer imports when it starts,
and its pip API. :class:`ReleaseEnvironment` makes this interpreter look like that release:

- ``importlib.metadata.version`` / ``distribution`` report the release's versions (and any given in
  ``installed``: a package another extension installed); every other package reports its real one;
- a module that the loaded version of its distribution lacks (``modules_since``: ``pydicom.pixels``
  before pydicom 3.0) cannot be imported: ``ModuleNotFoundError: No module named 'pydicom.pixels'``;
- pip "installs" a requirement by reporting this interpreter's version of it from then on, when
  that version satisfies it (otherwise pip fails, as the real pip would); nothing is downloaded;
- a package imported when Slicer starts keeps its loaded version until Slicer restarts, which is a
  new process reading the same ``state_file``.

It runs on this project's Python 3.11 with its installed packages (both releases ship Python
3.12.10, for which the project's CPU torch has no wheel): only the reported versions, the missing
modules and the API are the release's.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

RELEASES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "slicer_releases.json")
RELEASES = ("5.10", "5.12")

_REAL_VERSION = importlib.metadata.version  # calls the module's distribution(): use _real_version
_REAL_DISTRIBUTION = importlib.metadata.distribution


def _real_version(name: str) -> str:
    return _REAL_DISTRIBUTION(name).version


def pip_args(requirements) -> list:
    """pip's arguments for Slicer's ``pip_install(requirements)`` (Base/Python/slicer/util.py in 5.10,
    ``slicer.packaging._build_pip_args`` in 5.12): a str is split with shlex.split (POSIX rules:
    backslashes are escapes, spaces separate), a list is passed as is, anything else is a ValueError."""
    if type(requirements) == str:  # noqa: E721 (Slicer compares the exact type)
        return ["install", *shlex.split(requirements)]
    if type(requirements) == list:  # noqa: E721
        return ["install", *requirements]
    raise ValueError("pip_install requirement input must be string or list")


def slicer_releases() -> dict:
    with open(RELEASES_FILE, encoding="utf-8") as f:
        return json.load(f)


class _ModelledDistribution:
    """A real distribution whose version is the modelled one (what importlib.metadata returns)."""

    def __init__(self, real, version: str) -> None:
        self._real, self.version = real, version

    @property
    def metadata(self):
        meta = dict(self._real.metadata.items())
        meta["Version"] = self.version
        return meta

    def __getattr__(self, name):
        return getattr(self._real, name)


class _MissingModules(importlib.abc.MetaPathFinder):
    """Refuses the modules that the loaded version of their distribution does not have."""

    def __init__(self, env: ReleaseEnvironment) -> None:
        self.env = env

    def find_spec(self, name, path=None, target=None):
        for module, since in self.env.modules_since.items():
            if name == module or name.startswith(module + "."):
                loaded = self.env.loaded_version(since["distribution"])
                if loaded is not None and Version(loaded) < Version(since["version"]):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


class ReleaseEnvironment:
    def __init__(self, release: str, state_file: str, installed: dict | None = None) -> None:
        data = slicer_releases()
        self.name = release
        self.release = data["releases"][release]
        self.modules_since = data["modules_since"]
        self.state_file = state_file
        if os.path.isfile(state_file):  # Slicer restarted: what pip installed before is there now
            with open(state_file, encoding="utf-8") as f:
                self.versions = json.load(f)
        else:
            self.versions = {canonicalize_name(n): p["version"] for n, p in self.release["packages"].items()}
            self.versions.update({canonicalize_name(n): v for n, v in (installed or {}).items()})
            self._save()
        self.loaded: dict[str, str | None] = {}
        self.pip_runs: list[list[str]] = []
        self._finder = _MissingModules(self)

    # -------------------------------------------------------------- importlib.metadata
    def reported_version(self, name: str) -> str | None:
        key = canonicalize_name(name)
        if key in self.versions:
            return self.versions[key]
        try:
            return _real_version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    def loaded_version(self, name: str) -> str | None:
        key = canonicalize_name(name)
        return self.loaded[key] if key in self.loaded else self.reported_version(name)

    def version(self, name: str) -> str:
        found = self.reported_version(name)
        if found is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return found

    def distribution(self, name: str):
        found = self.reported_version(name)
        if found is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return _ModelledDistribution(_REAL_DISTRIBUTION(name), found)

    # -------------------------------------------------------------- the running Slicer
    def start(self) -> None:
        """Slicer starting: the metadata and importer are the release's, and the packages its
        modules import at start-up are imported with the version the environment has now."""
        importlib.metadata.version = self.version
        importlib.metadata.distribution = self.distribution
        for module in self.release["imported_at_startup"]:
            self.loaded[canonicalize_name(module)] = self.reported_version(module)
            importlib.import_module(module)
        sys.meta_path.insert(0, self._finder)
        for module in list(sys.modules):  # what the loaded versions lack goes (pydicom 3 imports its pixels)
            try:
                self._finder.find_spec(module)
            except ModuleNotFoundError:
                del sys.modules[module]
                parent, _, child = module.rpartition(".")
                if parent in sys.modules and getattr(sys.modules[parent], child, None) is not None:
                    delattr(sys.modules[parent], child)

    def stop(self) -> None:
        importlib.metadata.version = _REAL_VERSION
        importlib.metadata.distribution = _REAL_DISTRIBUTION
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)

    def pip(self, args: list[str]) -> None:
        """``python -m pip <args>`` (Slicer runs it in a subprocess, so what is imported stays as it
        was): ``install`` makes each requirement report this interpreter's version when that
        satisfies it; pip fails (CalledProcessError) when it does not, or on another command."""
        self.pip_runs.append(list(args))
        if not args or args[0] != "install":
            raise subprocess.CalledProcessError(2, ["pip", *args])
        for arg in args[1:]:
            if arg.startswith("-"):
                raise subprocess.CalledProcessError(2, ["pip", *args], stderr=f"option {arg} not modelled")
            req = Requirement(arg)
            try:
                available = _real_version(req.name)
            except importlib.metadata.PackageNotFoundError:
                raise subprocess.CalledProcessError(1, ["pip", *args], stderr=f"no {req.name} here") from None
            if not req.specifier.contains(available, prereleases=True):
                raise subprocess.CalledProcessError(1, ["pip", *args], stderr=f"no {req} here ({available})")
            self.versions[canonicalize_name(req.name)] = available
        self._save()

    def _save(self) -> None:
        with open(self.state_file, "w", encoding="utf-8") as f:
            json.dump(self.versions, f)


# ------------------------------------------------------------------ Slicer 5.12's slicer.packaging
def packaging_module(env: ReleaseEnvironment, slicer, pip_calls: list) -> types.ModuleType:
    """``slicer.packaging`` of v5.12.3 (Base/Python/slicer/packaging.py): load_requirements,
    pip_check (installed version in the specifier, markers evaluated; extras are not modelled and
    refused), pip_install (``_build_pip_args``: a str through shlex.split, a list as is, ``-c``
    constraints) and pip_ensure (check, optional prompt, install what fails pip_check, then with
    prompt_restart a restart prompt when an updated package was already imported)."""
    module = types.ModuleType("slicer.packaging")
    module.calls = []

    def load_requirements(path):
        reqs = []
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and not line.startswith("-"):
                    reqs.append(Requirement(line))
        return reqs

    def _to_requirements(reqs):
        if isinstance(reqs, str):
            try:
                return [Requirement(reqs)]
            except InvalidRequirement:
                return [Requirement(s) for s in reqs.split()]
        if isinstance(reqs, Requirement):
            return [reqs]
        if isinstance(reqs, list):
            return [Requirement(r) if isinstance(r, str) else r for r in reqs]
        raise TypeError(f"Expected str, Requirement, or list, got {type(reqs).__name__}")

    def pip_check(req) -> bool:
        for r in _to_requirements(req):
            if r.extras:
                raise NotImplementedError("extras are not modelled")
            if r.marker is not None and not r.marker.evaluate(default_environment()):
                continue
            try:
                installed = importlib.metadata.version(r.name)
            except importlib.metadata.PackageNotFoundError:
                return False
            if installed not in r.specifier:
                return False
        return True

    def pip_install(
        requirements,
        constraints=None,
        no_deps_requirements=None,
        skip_packages=None,
        blocking=True,
        show_progress=True,
        requester=None,
        parent=None,
        logCallback=None,  # noqa: N803 (Slicer's parameter names)
        completedCallback=None,  # noqa: N803
    ):
        if skip_packages is not None or no_deps_requirements is not None or not blocking:
            raise NotImplementedError("skip_packages, no_deps_requirements and non-blocking installs are not modelled")
        args = pip_args(requirements)
        if constraints is not None:
            args.extend(["-c", str(constraints)])
        pip_calls.append(args)
        env.pip(args)
        return None

    def pip_ensure(
        requirements,
        constraints=None,
        skip_packages=None,
        prompt_install=True,
        prompt_restart=True,
        requester=None,
        skip_in_testing=True,
        show_progress=True,
    ):
        module.calls.append(("pip_ensure", [str(r) for r in _to_requirements(requirements)], requester))
        missing = [r for r in _to_requirements(requirements) if not pip_check(r)]
        if not missing:
            return None
        if skip_in_testing and slicer.app.testingEnabled():
            return None
        if prompt_install and not slicer.util.confirmOkCancelDisplay(
            "Python packages need to be installed.", requester or "", detailedText="\n".join(map(str, missing))
        ):
            raise RuntimeError("User declined package installation")
        before = {canonicalize_name(r.name): env.reported_version(r.name) for r in missing}
        skipped = pip_install([str(r) for r in missing], constraints=constraints, skip_packages=skip_packages)
        if prompt_restart:
            imported = importlib.metadata.packages_distributions()
            updated = [
                name
                for name, old in before.items()
                if env.reported_version(name) != old
                and any(m in sys.modules for m, dists in imported.items() if name in map(canonicalize_name, dists))
            ]
            if updated and not slicer.app.testingEnabled():
                if slicer.util.confirmYesNoDisplay("Restart recommended", requester or "", detailedText=str(updated)):
                    slicer.util.restart()
        return skipped

    module.load_requirements = load_requirements
    module.pip_check = pip_check
    module.pip_install = pip_install
    module.pip_ensure = pip_ensure
    module.Path = Path
    return module
