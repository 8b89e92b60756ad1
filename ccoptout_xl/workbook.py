"""``ccoptout-xl workbook``: a copy of ``OptOuts.xlsm`` set up for the Python it runs in.

The workbook is built by ``workbook/build.py`` and installed with the package; this only writes the
interpreter's path into its ``xlwings.conf`` sheet (Interpreter_Win and Interpreter_Mac), editing that one part of
the file so that the VBA project and the ribbon stay exactly as built.
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

from .exceptions import ConfigError
from .files import atomic_path

WORKBOOK_NAME = "OptOuts.xlsm"
CONF_CELLS = {"Interpreter_Win": "B1", "Interpreter_Mac": "B2"}


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
