"""What a person meets on first use of the workbook, per platform: `ccoptout-xl workbook` sets up this computer's
Excel to start Python (macOS: xlwings' RunPython install step; Windows: the interpreter written exists).

No Excel and no Mac here: ``sys.platform`` is set for each path. xlwings' install step itself runs for real (it
copies a file into ``~/Library/Application Scripts/com.microsoft.Excel``), into a temporary home; only its failure
is imitated.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
import xlwings
from oletools.olevba import VBA_Parser

from ccoptout_xl import service
from ccoptout_xl import workbook as workbook_module
from ccoptout_xl.cli import main

ROOT = Path(__file__).resolve().parents[1]
WORKBOOK = ROOT / "workbook" / "OptOuts.xlsm"
XLWINGS_SCRIPT = Path(xlwings.__file__).parent / f"xlwings-{xlwings.__version__}.applescript"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary home folder: where xlwings' install step writes."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


def installed_script(home: Path) -> Path:
    return home / "Library" / "Application Scripts" / "com.microsoft.Excel" / XLWINGS_SCRIPT.name


def conf(path: Path) -> dict[str, str]:
    book = openpyxl.load_workbook(path, keep_vba=True)
    try:
        return {row[0]: row[1] for row in book["xlwings.conf"].iter_rows(values_only=True) if row[0]}
    finally:
        book.vba_archive.close()


# -- macOS --------------------------------------------------------------------------------------------------


def test_on_macos_the_command_does_xlwings_runpython_install(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    dest = tmp_path / "OptOuts.xlsm"
    assert main(["workbook", "--dest", str(dest)]) == 0
    out, err = capsys.readouterr()
    script = installed_script(home)
    assert script.read_bytes() == XLWINGS_SCRIPT.read_bytes()  # what `xlwings runpython install` copies
    assert f"macOS: enabled xlwings' RunPython for Excel ({script}): Refresh, Sign in and Sign out work." in out
    assert "worksheet functions (OPTOUTS_SINCE and the others) are Windows-only" in out
    assert err == "" and conf(dest)["Interpreter_Mac"] == sys.executable


def test_the_script_installed_is_the_one_the_workbooks_vba_calls() -> None:
    parser = VBA_Parser(str(WORKBOOK))
    try:
        vba = {name.rsplit(".", 1)[0]: code for _, _, name, code in parser.extract_all_macros()}["xlwings"]
    finally:
        parser.close()
    assert re.search(rf'^Public Const XLWINGS_VERSION As String = "{re.escape(xlwings.__version__)}"', vba, re.M)
    assert 'AppleScriptTask("xlwings-" & XLWINGS_VERSION & ".applescript", "VbaHandler"' in vba
    assert workbook_module.runpython_script().name == XLWINGS_SCRIPT.name


def test_on_macos_a_failed_install_says_exactly_what_to_run(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")

    def refused() -> Path:  # what a Mac says when the folder is not the user's to write
        raise PermissionError(13, "Permission denied", str(installed_script(home).parent))

    monkeypatch.setattr(workbook_module, "install_runpython", refused)
    dest = tmp_path / "OptOuts.xlsm"
    assert main(["workbook", "--dest", str(dest)]) == 0  # the copy is written all the same
    out, err = capsys.readouterr()
    assert dest.is_file() and f"Wrote {dest}" in out
    command = workbook_module.runpython_command()  # the next two tests show that it works
    assert command.endswith(" runpython install") or " -c " in command
    assert "note: macOS: Excel cannot start Python yet: xlwings' RunPython step failed (PermissionError:" in err
    assert f"Run this once in Terminal, then click Refresh: {command}" in err


def test_the_command_it_gives_installs_the_script(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `xlwings runpython install`, as the xlwings command reads it on a Mac (it offers "runpython" only there).
    from xlwings import cli as xlwings_cli

    if not Path(sys.executable).with_name("xlwings").is_file():
        pytest.skip("xlwings' command is not beside this Python: the next test covers the command given then")
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(sys, "argv", ["xlwings", *shlex.split(workbook_module.runpython_command())[1:]])
    assert sys.argv == ["xlwings", "runpython", "install"]
    xlwings_cli.main()
    assert installed_script(home).read_bytes() == XLWINGS_SCRIPT.read_bytes()


def test_without_the_xlwings_command_it_gives_one_through_this_python(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = sys.executable
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no scripts here" / "python3"))
    command = shlex.split(workbook_module.runpython_command())
    assert command[:2] == [sys.executable, "-c"]
    subprocess.run([python, *command[1:]], check=True, capture_output=True)  # HOME is the temporary one
    assert installed_script(home).read_bytes() == XLWINGS_SCRIPT.read_bytes()


# -- Windows ------------------------------------------------------------------------------------------------


def test_on_windows_the_command_says_the_interpreter_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(workbook_module, "install_runpython", lambda: pytest.fail("a macOS step on Windows"))
    assert main(["workbook", "--dest", str(tmp_path / "OptOuts.xlsm")]) == 0
    out, err = capsys.readouterr()
    console = " (no pythonw.exe beside it: a console window shows)"
    assert f"Windows: Excel will start {sys.executable} (it exists){console}." in out and err == ""
    windowless = tmp_path / "Python" / "pythonw.exe"
    windowless.parent.mkdir()
    windowless.write_bytes(b"MZ")
    copy = service.write_workbook(tmp_path / "Windowless.xlsm", python=str(windowless))
    assert copy.setup.ready and copy.setup.lines == (f"Windows: Excel will start {windowless} (it exists).",)


def test_on_windows_a_missing_interpreter_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    missing = r"C:\Users\me\gone\Scripts\pythonw.exe"
    copy = service.write_workbook(tmp_path / "OptOuts.xlsm", python=missing)
    assert not copy.setup.ready and conf(copy.path)["Interpreter_Win"] == missing
    (line,) = copy.setup.lines
    assert line.startswith(f"Windows: {missing} does not exist, so Excel cannot start Python.")
    assert "Interpreter_Win on the xlwings.conf sheet" in line


# -- elsewhere ----------------------------------------------------------------------------------------------


def test_where_excel_does_not_run_the_command_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(workbook_module, "install_runpython", lambda: pytest.fail("a macOS step on Linux"))
    assert main(["workbook", "--dest", str(tmp_path / "OptOuts.xlsm")]) == 0
    assert "note: Excel runs on Windows and macOS, not here (linux)" in capsys.readouterr().err
