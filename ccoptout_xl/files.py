"""Writing output files atomically: a failure never leaves a truncated file, and the old one stays."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .exceptions import OutputError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "w", **open_args: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success replace ``path`` with it, on failure delete it."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"Cannot write {target}: the folder {folder} does not exist.")
    try:
        handle = tempfile.NamedTemporaryFile(
            mode, dir=folder, prefix=f".{target.name}.", suffix=".tmp", delete=False, **open_args
        )
    except OSError as exc:
        raise OutputError(f"Cannot write in {folder}: {exc.strerror or exc}.") from None
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        replace_file(handle.name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def replace_file(source: str | os.PathLike[str], target: Path) -> None:
    """``os.replace`` with a clear message when the target is locked (open in Excel on Windows)."""
    try:
        os.replace(source, target)
    except PermissionError:
        raise OutputError(
            f"Cannot replace {target}: it is open in another program (Excel?) or read-only. "
            "Close it and try again; the existing file was not changed."
        ) from None
    except OSError as exc:
        raise OutputError(f"Cannot write {target}: {exc.strerror or exc}.") from None
