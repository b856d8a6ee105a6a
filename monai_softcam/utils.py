"""Small shared helpers: atomic file writes and rank checks."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Any, Iterator

import torch.distributed as dist

__all__ = ["atomic_open", "is_main_process"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and move it onto ``path`` only when the block succeeds
    (text is UTF-8 unless ``encoding`` says otherwise).

    A crash (or SIGKILL) while writing leaves the previous ``path`` untouched and never a truncated
    file under the final name.
    """
    path = os.fspath(path)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")  # whatever the locale says
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialised process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
