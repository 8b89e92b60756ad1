"""``ccoptout-xl workbook``: a copy of ``OptOuts.xlsm`` set up for the Python it runs in.

The workbook is built by ``workbook/build.py`` and installed with the package; this only writes the
interpreter's path into its ``xlwings.conf`` sheet (Interpreter_Win and Interpreter_Mac), editing that one part of
the file so that the VBA project and the ribbon stay exactly as built.

:func:`set_up_excel` then does what this computer's Excel needs to start that Python, decided by ``sys.platform``:
on macOS, xlwings' RunPython install step (``xlwings runpython install``: Excel can call Python only through an
AppleScript in its scripts folder), or exactly what to run when it fails; on Windows, whether the interpreter
written exists.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from .exceptions import ConfigError
from .files import atomic_path

WORKBOOK_NAME = "OptOuts.xlsm"
CONF_CELLS = {"Interpreter_Win": "B1", "Interpreter_Mac": "B2"}
# Where Excel for Mac looks for the scripts that VBA's AppleScriptTask runs (its sandbox allows no other place).
EXCEL_SCRIPTS = Path("Library", "Application Scripts", "com.microsoft.Excel")
NO_FUNCTIONS_ON_MAC = "macOS: the worksheet functions (OPTOUTS_SINCE and the others) are Windows-only in xlwings."


@dataclass(frozen=True)
class ExcelSetup:
    """What this computer's Excel needs to start the workbook's Python: ``ready`` when nothing is left to do, and
    what to tell the user (each line a sentence or two)."""

    ready: bool
    lines: tuple[str, ...]


def built_workbook() -> Path:
    """The built workbook: installed with the package (``<prefix>/share/ccoptout-xl``), or in this checkout."""
    for candidate in (
        Path(sys.prefix) / "share" / "ccoptout-xl" / WORKBOOK_NAME,
        Path(__file__).resolve().parents[1] / "workbook" / WORKBOOK_NAME,
    ):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{WORKBOOK_NAME} was not installed with ccoptout-xl; reinstall it with pip install.")


def interpreter() -> str:
    """This Python, as Excel should start it: ``pythonw.exe`` on Windows (no console window) when it exists."""
    executable = Path(sys.executable)
    windowless = executable.with_name("pythonw.exe")
    return str(windowless if os.name == "nt" and windowless.is_file() else executable)


def write_workbook(dest: str | os.PathLike[str], python: str | None = None) -> Path:
    """Write the workbook to ``dest`` with ``python`` (default: this interpreter) in its xlwings.conf sheet."""
    python = python or interpreter()
    target = Path(dest)
    with zipfile.ZipFile(built_workbook()) as source:
        entries = [(info, source.read(info.filename)) for info in source.infolist()]
    conf_part = _conf_sheet_part(entries)
    with atomic_path(target) as temporary, zipfile.ZipFile(temporary, "w") as out:
        for info, data in entries:
            if info.filename == conf_part:
                data = _set_cells(data.decode("utf-8"), {cell: python for cell in CONF_CELLS.values()}).encode()
            out.writestr(info, data)
    return target


def _conf_sheet_part(entries: list[tuple[zipfile.ZipInfo, bytes]]) -> str:
    parts = {info.filename: data.decode("utf-8", "replace") for info, data in entries if info.filename.endswith(".xml")}
    parts |= {info.filename: data.decode() for info, data in entries if info.filename.endswith(".rels")}
    sheet = re.search(r'<sheet [^>]*name="xlwings\.conf"[^>]*r:id="([^"]+)"', parts["xl/workbook.xml"])
    if not sheet:
        raise ConfigError("The workbook has no xlwings.conf sheet: reinstall ccoptout-xl.")
    target = re.search(
        rf'<Relationship [^>]*Target="([^"]+)" Id="{sheet.group(1)}"', parts["xl/_rels/workbook.xml.rels"]
    )
    if not target:
        raise ConfigError("The workbook's xlwings.conf sheet cannot be found: reinstall ccoptout-xl.")
    return target.group(1).lstrip("/")


def _set_cells(sheet_xml: str, values: dict[str, str]) -> str:
    """Replace the text of inline-string cells (as openpyxl writes them) in a worksheet part."""
    for cell, value in values.items():
        pattern = rf'(<c r="{cell}"[^>]*t="inlineStr"[^>]*><is><t[^>]*>)[^<]*(</t>)'
        text = escape(value)
        sheet_xml, found = re.subn(pattern, lambda m: m.group(1) + text + m.group(2), sheet_xml)  # noqa: B023
        if found != 1:
            raise ConfigError(f"The workbook's xlwings.conf sheet has no cell {cell} to set: reinstall ccoptout-xl.")
    return sheet_xml


def set_up_excel(python: str) -> ExcelSetup:
    """Make this computer's Excel able to start ``python`` for the workbook, as far as a program can, and say what
    is true on this platform: on macOS, xlwings' RunPython install step (:func:`install_runpython`); on Windows,
    whether ``python`` exists."""
    if sys.platform == "darwin":
        return _set_up_mac()
    if sys.platform == "win32":
        return _check_windows(python)
    return ExcelSetup(
        False,
        (
            f"Excel runs on Windows and macOS, not here ({sys.platform}): install ccoptout-xl on the computer with"
            " Excel and run `ccoptout-xl workbook` there (this copy names a Python of this computer).",
        ),
    )


def install_runpython() -> Path:
    """``xlwings runpython install``, through xlwings' own function: copy xlwings' AppleScript (named with its
    version, as the workbook's xlwings module calls it) into Excel's scripts folder; return where it is."""
    from xlwings import cli as xlwings_cli

    xlwings_cli.runpython_install(None)  # None: as `xlwings addin install` calls it, without printing
    script = runpython_script()
    if not script.is_file():
        raise OSError(f"xlwings did not write {script}")
    return script


def runpython_script() -> Path:
    """Where :func:`install_runpython` puts xlwings' AppleScript (``~/Library/Application Scripts/...``)."""
    import xlwings

    return Path.home() / EXCEL_SCRIPTS / f"xlwings-{xlwings.__version__}.applescript"


def runpython_command() -> str:
    """The command that does :func:`install_runpython` by hand, for this Python's xlwings."""
    script = Path(sys.executable).with_name("xlwings")
    if script.is_file():
        return f"{shlex.quote(str(script))} runpython install"
    code = "import xlwings.cli as c; c.runpython_install(True)"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def _set_up_mac() -> ExcelSetup:
    try:
        script = install_runpython()
    except Exception as exc:  # any failure: the user can do the same step, and is told exactly how
        return ExcelSetup(
            False,
            (
                f"macOS: Excel cannot start Python yet: xlwings' RunPython step failed ({type(exc).__name__}: {exc})."
                f" Run this once in Terminal, then click Refresh: {runpython_command()}",
                NO_FUNCTIONS_ON_MAC,
            ),
        )
    return ExcelSetup(
        True,
        (
            f"macOS: enabled xlwings' RunPython for Excel ({script}): Refresh, Sign in and Sign out work.",
            NO_FUNCTIONS_ON_MAC,
        ),
    )


def _check_windows(python: str) -> ExcelSetup:
    path = Path(python)
    if not path.is_file():
        return ExcelSetup(
            False,
            (
                f"Windows: {python} does not exist, so Excel cannot start Python. Run `ccoptout-xl workbook` with"
                " the Python that has ccoptout-xl, or put its pythonw.exe in Interpreter_Win on the xlwings.conf"
                " sheet.",
            ),
        )
    console = "" if path.name.lower() == "pythonw.exe" else " (no pythonw.exe beside it: a console window shows)"
    return ExcelSetup(True, (f"Windows: Excel will start {python} (it exists){console}.",))
