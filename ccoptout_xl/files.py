"""Writing output files atomically: a failure never leaves a truncated file, and the old one stays."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from .exceptions import OutputError, UsageError

T = TypeVar("T")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it replaces ``path``, on failure it is deleted.

    The new file gets ``mode``, or else the permissions of the file it replaces (the usual ones for a new file).
    The temporary file is owner-only while it is written.
    """
    target = Path(path)
    folder = require_folder(target)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"Cannot write in {folder}: {exc.strerror or exc}.") from None
    os.close(descriptor)
    try:
        yield Path(temporary)
        with open(temporary, "rb+") as written:  # on disk before it replaces anything
            os.fsync(written.fileno())
        os.chmod(temporary, _mode_for(target) if mode is None else mode)
        replace_file(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "w", **open_args: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success replace ``path`` with it, on failure delete it."""
    with atomic_path(path) as temporary, open(temporary, mode, **open_args) as handle:
        yield handle


def _mode_for(target: Path) -> int:
    """The permissions the new file should have: those of the file it replaces, else the usual (0666 - umask)."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def require_folder(path: str | os.PathLike[str]) -> Path:
    """The folder ``path`` would be written in, or a :class:`UsageError` if it does not exist."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise UsageError(f"Cannot write {path}: the folder {folder} does not exist.")
    return folder


def retry_while_busy(operation: Callable[[], T], tries: int = 20) -> T:
    """Windows refuses to open or replace a file that another process is replacing or reading at that moment
    (and virus scanners hold new files briefly): try again for about a second before giving up."""
    for _ in range(tries - 1):
        try:
            return operation()
        except PermissionError:
            time.sleep(0.05)
    return operation()


def replace_file(source: str | os.PathLike[str], target: Path) -> None:
    """``os.replace`` with a clear message when the target stays locked (open in Excel on Windows)."""
    try:
        retry_while_busy(lambda: os.replace(source, target))
    except PermissionError:
        raise OutputError(
            f"Cannot replace {target}: it is open in another program (Excel?) or read-only. "
            "Close it and try again; the existing file was not changed."
        ) from None
    except OSError as exc:
        raise OutputError(f"Cannot write {target}: {exc.strerror or exc}.") from None
