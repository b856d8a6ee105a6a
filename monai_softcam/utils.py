"""Small shared helpers: atomic file writes, rank checks, and the user errors."""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import queue
import sys
import tempfile
import threading
import warnings
from typing import IO, Any, Callable, Iterator

import torch.distributed as dist

__all__ = [
    "BackgroundWriter",
    "renamed_keywords",
    "ConfigError",
    "InputError",
    "MissingInputError",
    "UserError",
    "as_flag",
    "atomic_open",
    "barrier",
    "find_user_error",
    "install_error_hook",
    "is_main_process",
    "pid_alive",
    "sha256_file",
    "WriteError",
]


class UserError(Exception):
    """A mistake in what the user gave (a file, a CSV row, a config key, a checkpoint): the message
    names the culprit, says what is wrong and what to do. Uncaught, it is printed once more as the
    last lines of the output, below the wrappers MONAI puts around it (:func:`install_error_hook`)."""


class ConfigError(UserError, ValueError):
    """A config key or value that cannot work (unknown key, contradicting setting, missing value)."""


class InputError(UserError, ValueError):
    """A data file, CSV row or checkpoint that cannot be used as it is."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user named (or that a setting implies) does not exist."""


class WriteError(UserError, OSError):
    """An output that could not be written (a full disk, a read-only folder, no permission): the message names
    the file and the system's reason."""


_FLAGS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def as_flag(value: Any, name: str) -> bool:
    """A yes/no setting as a bool. The bundle's command line hands ``--resume false`` over as the
    *string* ``"false"`` (Python Fire reads only ``True``/``False`` as booleans), which plain
    ``if value`` would take for yes; ``true``/``false``/``yes``/``no``/``1``/``0`` in any case are read
    here, anything else is a :class:`ConfigError` naming the key."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _FLAGS:
        return _FLAGS[value.strip().lower()]
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def find_user_error(error: BaseException | None) -> UserError | None:
    """The :class:`UserError` in ``error``'s chain (``raise ... from``, or raised while handling),
    e.g. under MONAI's ``RuntimeError: Failed to evaluate ConfigExpression``; None if there is none."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def install_error_hook() -> None:
    """Make an uncaught exception that carries a :class:`UserError` end with that error's message.

    The traceback is printed as before (Python's hook, or whichever was installed), then
    ``error: <message>`` as the last lines, so that a mistake in a bundle run is not buried under
    the config-expression and transform wrappers. Other exceptions are left as they are.
    Installed (once) where the package's runs start: the first step of every bundle run id
    (:func:`monai_softcam.bundle.start`) and ``python -m monai_softcam``; importing the package
    leaves ``sys.excepthook`` alone (in Slicer, say)."""
    if getattr(sys.excepthook, "monai_softcam", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
        previous(kind, error, traceback)
        user_error = find_user_error(error)
        if user_error is not None and user_error is not error:
            sys.stderr.write(f"\nerror: {user_error}\n")
            sys.stderr.flush()

    hook.monai_softcam = True  # type: ignore[attr-defined]
    sys.excepthook = hook


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and move it onto ``path`` only when the block succeeds
    (text is UTF-8 unless ``encoding`` says otherwise).

    A crash (or SIGKILL) while writing leaves the previous ``path`` untouched and never a truncated
    file under the final name. A system error while writing (a full disk, no permission) is raised as a
    :class:`WriteError` naming ``path``.
    """
    path = os.fspath(path)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")  # whatever the locale says
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError) and not isinstance(err, UserError) and err.errno is not None:
            raise WriteError(f"cannot write {path}: {err.strerror or err}") from err
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user's counts)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialised process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every process of the group; nothing to wait for without one (a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def renamed_keywords(**renames: str) -> Callable[[Callable], Callable]:
    """Decorator: keyword arguments renamed ``old=new`` keep working under their old names, with a
    ``FutureWarning`` naming the new one; giving both names (neither None) is a ``TypeError``. An old
    name given as None is not given: a bundle config passes its deprecated keys through as null
    unless the user sets them."""

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                value = kwargs.pop(old, None)
                if value is None:
                    continue
                if kwargs.get(new) is not None:
                    raise TypeError(f"{func.__name__}() got both {old!r} and its new name {new!r}")
                warnings.warn(f"{func.__name__}({old}=...) is deprecated: use {new}=...", FutureWarning, stacklevel=2)
                kwargs[new] = value
            return func(*args, **kwargs)

        return wrapper

    return decorate


class BackgroundWriter:
    """Writes files off the caller's thread: each :meth:`submit`-ted job runs in one worker thread,
    in order, with at most ``max_pending`` jobs waiting (a full queue makes :meth:`submit` wait, so
    memory stays bounded when writing is slower than the work that feeds it).

    A job that fails is reported by the file it was writing: the next :meth:`submit` or :meth:`wait`
    raises an :class:`InputError` naming it (the first failure; the jobs after it still run).
    :meth:`wait` returns when every job submitted so far is done. ``max_pending=0`` runs each job at
    once in the caller's thread (no thread at all).
    """

    def __init__(self, max_pending: int = 8) -> None:
        self.max_pending = int(max_pending)
        if self.max_pending < 0:
            raise ConfigError(f"max_pending must be >= 0, got {max_pending!r}")
        self._jobs: queue.Queue = queue.Queue(maxsize=max(1, self.max_pending))
        self._errors: list[tuple[str, BaseException]] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _work(self) -> None:
        while True:
            label, job, args = self._jobs.get()
            if job is None:  # close()
                self._jobs.task_done()
                return
            try:
                job(*args)
            except Exception as err:  # reported by the caller's next submit or wait
                with self._lock:
                    self._errors.append((label, err))
            finally:
                self._jobs.task_done()

    def _raise_failure(self) -> None:
        with self._lock:
            if not self._errors:
                return
            label, err = self._errors[0]
            self._errors.clear()
        if isinstance(err, UserError):  # names its file already (a full disk: WriteError)
            raise type(err)(str(err)) from err
        raise InputError(f"cannot write {label}: {err}") from err

    def submit(self, label: str, job: Callable[..., Any], *args: Any) -> None:
        """Run ``job(*args)`` in the worker thread; ``label`` (the file written) names it in errors."""
        self._raise_failure()
        if self.max_pending == 0:
            try:
                job(*args)
            except UserError:
                raise
            except Exception as err:
                raise InputError(f"cannot write {label}: {err}") from err
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="monai_softcam-writer", daemon=True)
            self._thread.start()
            atexit.register(self.close)
        self._jobs.put((label, job, args))

    def close(self) -> None:
        """Drop the jobs still waiting and stop the worker thread after the job it runs (called at exit: a run
        that failed does not go on writing, and the process never ends with the thread inside a job)."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Empty):
            while True:
                self._jobs.get_nowait()
                self._jobs.task_done()
        self._jobs.put((None, None, None))
        self._thread.join(timeout=60)
        self._thread = None

    def wait(self) -> None:
        """Block until every submitted job is done; raise the first failure, naming its file."""
        if self._thread is not None:
            self._jobs.join()
        self._raise_failure()
