"""Writing output files atomically: a failure never leaves a truncated file, and the old one stays.

A file is written to a temporary file beside it, then moved into its place. A symbolic link is written through:
its final target is replaced (the temporary file goes beside the target) and the link stays a link. Anything
that is not a regular file (a folder, a FIFO, a device, a socket) is refused before any work is done, so
``-o /dev/stdout`` or ``-o some-fifo`` can never replace a device or a pipe with a file. A full disk, a read-only
folder or a file locked by another program ends in one :class:`OutputError` line naming the file, and the
temporary file is removed: also on Ctrl-C or SIGTERM (any :class:`BaseException`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from .exceptions import OutputError, UsageError
from .retry import Sleep, retry_call
from .settings import temporary_folder

T = TypeVar("T")

# Errors of the disk or the folder, as opposed to errors of whatever produces the content.
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
STORAGE_ERRORS = DISK_FULL | {errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}


class OutputWriteFailed(OutputError, OSError):
    """Writing an output file failed (a full disk, a read-only folder): one line naming it (exit 6). It is still
    an :class:`OSError`, as the failure was before it was explained, for library callers that catch those."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it replaces ``path``, on failure it is deleted.

    ``path`` may be a symbolic link (even a dangling one): its final target is what gets replaced. The new file
    gets ``mode``, or else the permissions of the file it replaces (the usual ones for a new file). The
    temporary file is owner-only while it is written.
    """
    target = output_target(path)
    shown = _shown(path, target)
    existed = target.exists()
    try:
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputWriteFailed(_cannot_write(shown, exc, existed, folder=target.parent)) from exc
    try:
        os.close(descriptor)
        yield Path(temporary)
        with open(temporary, "rb+") as written:  # on disk before it replaces anything
            os.fsync(written.fileno())
        os.chmod(temporary, _mode_for(target) if mode is None else mode)
        replace_file(temporary, target)
    except BaseException as exc:  # Ctrl-C and SIGTERM included: never leave the temporary file behind
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError) and exc.errno in STORAGE_ERRORS:
            raise OutputWriteFailed(_cannot_write(shown, exc, existed)) from exc
        raise


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "w", **open_args: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success replace ``path`` with it, on failure delete it."""
    with atomic_path(path) as temporary, open(temporary, mode, **open_args) as handle:
        yield handle


def output_target(path: str | os.PathLike[str]) -> Path:
    """The file that writing ``path`` replaces: ``path`` itself, or the final target of a symbolic link.

    A :class:`UsageError` if the folder it would be written in does not exist; an :class:`OutputError` if it
    exists and is not a regular file (a folder, a FIFO, a device, a socket), or is a loop of links.
    """
    given = Path(path)
    if str(path).endswith(("/", os.sep)):  # Path() drops the slash, and would write a file by the folder's name
        raise UsageError(f"Cannot write {path}: it names a folder; give the name of a file to write.")
    if not given.parent.is_dir():
        raise UsageError(f"Cannot write {given}: the folder {given.parent} does not exist.")
    try:
        info: os.stat_result | None = given.stat()  # through any links
    except FileNotFoundError:
        info = None  # a new file, or a link whose target does not exist yet
    except OSError as exc:  # a loop of links, a file used as a folder on the way to the target
        raise OutputError(f"Cannot write {given}: {exc.strerror or exc}; give the name of a file to write.") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise OutputError(
            f"Cannot write {given}: it is {_kind(info.st_mode)}, not a regular file; give the name of a file to "
            "write (an existing file is replaced)."
        )
    if not given.is_symlink():
        return given
    target = Path(os.path.realpath(given))
    if not target.parent.is_dir():  # a dangling link into a folder that does not exist
        raise UsageError(
            f"Cannot write {given}: it is a link to {target}, and the folder {target.parent} does not exist."
        )
    return target


def require_folder(path: str | os.PathLike[str]) -> Path:
    """The folder ``path`` would be written in (its link's target's, for a link), checked before any work is done:
    a :class:`UsageError` if it does not exist, an :class:`OutputError` if ``path`` is not a file that can be
    replaced (see :func:`output_target`)."""
    return output_target(path).parent


def abandon_zip_files(exc: BaseException, filename: str | os.PathLike[str]) -> None:
    """Close, without finishing them, the :class:`zipfile.ZipFile` objects that a failed writer (openpyxl's save)
    left open on ``filename``, as seen in ``exc``'s traceback.

    Left alone, such an archive writes its central directory when it is garbage-collected: after the failure was
    reported, to a disk that is still full (an "Exception ignored" traceback), and on Windows it keeps the file
    open so that it cannot be deleted.
    """
    wanted = os.fspath(filename)
    traceback = exc.__traceback__
    while traceback is not None:
        for value in list(traceback.tb_frame.f_locals.values()):
            if isinstance(value, zipfile.ZipFile) and getattr(value, "filename", None) == wanted:
                stream, value.fp = value.fp, None  # ZipFile.close() and __del__ now do nothing
                if stream is not None:
                    with contextlib.suppress(OSError, ValueError):
                        stream.close()
        traceback = traceback.tb_next


def retry_while_busy(operation: Callable[[], T], tries: int = 20, sleep: Sleep = time.sleep) -> T:
    """Windows refuses to open or replace a file that another process is replacing or reading at that moment
    (and virus scanners hold new files briefly): try again every 50 ms, for about a second, before giving up."""
    return retry_call(operation, on=PermissionError, tries=tries, delay=0.05, sleep=sleep)


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
        raise OutputWriteFailed(
            f"Cannot write {target}: {exc.strerror or exc}; the existing file was not changed."
        ) from exc


class NotARegularFile(OSError):
    """What :func:`read_regular_file` found instead of a file: ``kind`` says what (a folder, a FIFO...)."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        super().__init__(errno.EINVAL, f"it is {kind}, not a file", str(path))
        self.kind = kind


def read_regular_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the file ``path``: a :class:`NotARegularFile` for a folder, FIFO, device or socket, found
    without blocking on it (opening a FIFO to read waits for a writer, for ever)."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(descriptor, "rb", closefd=True) as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, _kind(mode))
        return handle.read()


def temporary_space_error() -> OutputError:
    """The error for a full temporary folder (where opt-outs are collected and report sheets are staged)."""
    return OutputError(
        f"The temporary folder {temporary_folder()} is full: free some space there, or set TMPDIR to a folder "
        "on a disk with room, and try again; no file was changed."
    )


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says that the disk (or the user's quota on it) is full."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def _cannot_write(shown: str, exc: OSError, existed: bool, folder: Path | None = None) -> str:
    """One line: what could not be written, why, that nothing changed, and what to do."""
    kept = "the existing file was left as it was" if existed else "nothing was written"
    if disk_full(exc):
        return (
            f"Cannot write {shown}: the disk is full ({exc.strerror or 'no space left'}); {kept}. "
            "Free some space, or write the file on another disk, and try again."
        )
    if exc.errno == errno.EROFS:
        return f"Cannot write {shown}: its folder is on a read-only file system; {kept}. Write it somewhere else."
    where = f" in {folder}" if folder is not None else ""
    return f"Cannot write {shown}{where}: {exc.strerror or exc}; {kept}."


def _shown(path: str | os.PathLike[str], target: Path) -> str:
    """``path`` as the user gave it, with the file it leads to when that is another one (a link)."""
    given = Path(path)
    return str(given) if target == given else f"{given} (a link to {target})"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _mode_for(target: Path) -> int:
    """The permissions the new file should have: those of the file it replaces, else the usual (0666 - umask)."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
