"""A second reader of the workbook's VBA, where LibreOffice is installed: its Basic compiler compiles every module.

Run it with LibreOffice and its Python scripting installed (Debian/Ubuntu: ``apt-get install
libreoffice-calc-nogui libreoffice-script-provider-python``), then ``python -m pytest tests/test_vba_libreoffice.py``
(about 5 s). Where ``soffice`` is absent the LibreOffice tests are skipped, as the report's LibreOffice test is; CI
does not install LibreOffice (it would add minutes to every run). The conditional-compilation tests at the end need
no LibreOffice and always run.

How: ``soffice --headless`` (a throwaway profile, a timeout, killed on timeout) runs ``tests/libreoffice_vba.py`` as
a Python macro inside the office. It opens the built workbook hidden, read-only and with macros never executed;
LibreOffice imports the VBA modules as Basic with ``Option VBASupport 1``. It then has LibreOffice compile every
module once per platform (Excel on 64-bit Windows, 32-bit Windows, the Mac) and collects each compile error, with
its module, line, columns and message, through a Basic error handler that it installs with ctypes: LibreOffice has
no API that returns a compile error, only the Basic IDE's dialog. Any error fails the test, with the module, the
line as the VBA editor numbers it, the platforms and LibreOffice's message.

VBA that Excel accepts and LibreOffice cannot express does not fail the test spuriously:

- ``#If``/``#Const``: LibreOffice ignores these lines and would compile both branches of each (xlwings declares
  ``Function GetUdfModules(Optional wb As Workbook)`` for Excel and ``... As Variant`` for other hosts, so two
  functions of one name). LibreOffice has no conditional constants of its own to take a branch with; so each
  module is first resolved for each platform, with Excel's constants (``Win64``, ``Win32``, ``Mac``, ``VBA7``...)
  and the module's ``#Const`` values, lines keeping their numbers, and each platform's text is compiled.
- Win32 ``Declare PtrSafe ... Lib "kernel32"``, ``AppleScriptTask``, ``Application.Caller``: LibreOffice compiles
  them (it resolves such names at run time), so they need nothing.
- ``LIBREOFFICE_LIMITS``: the errors LibreOffice reports in VBA that Excel accepts, each recognised by what it is
  (the message and the erroneous text), never by a line number. The compiler goes on after them, so the rest of
  the module is still read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyopenvba
import pytest
from oletools.olevba import VBA_Parser

from .vba_conditional import PLATFORMS, VbaError, compile_conditionally

ROOT = Path(__file__).resolve().parents[1]
WORKBOOK = ROOT / "workbook" / "OptOuts.xlsm"
HELPER = Path(__file__).with_name("libreoffice_vba.py")
CONDITIONAL = Path(__file__).with_name("vba_conditional.py")
SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
TIMEOUT = 180  # seconds for one soffice run, which takes about 1 (more on LibreOffice's first start on a machine)


def python_scripting(soffice: str | None) -> bool:
    """Whether this LibreOffice can run Python macros (its script provider sits beside the program or in Resources)."""
    if soffice is None:
        return False
    program = Path(soffice).resolve().parent
    return any((folder / "pythonscript.py").is_file() for folder in (program, program.parent / "Resources"))


needs_libreoffice = pytest.mark.skipif(
    not python_scripting(SOFFICE),
    reason="LibreOffice (soffice) is not installed"
    if SOFFICE is None
    else "LibreOffice cannot run Python macros here (Debian/Ubuntu: libreoffice-script-provider-python)",
)


@dataclass(frozen=True)
class Limit:
    """VBA that Excel compiles and LibreOffice's compiler refuses, recognised by LibreOffice's message and text."""

    why: str
    message: str
    matches: Callable[[list[str], int, str], bool]  # (the module's lines, the 0-based line, the erroneous text)


def in_enum_or_const(lines: list[str], index: int) -> bool:
    """Whether line ``index`` is a ``Const`` declaration or a member of an ``Enum`` block."""
    if re.match(r"\s*(?:(?:Public|Private|Global)\s+)?Const\s", lines[index], re.IGNORECASE):
        return True
    for line in reversed(lines[:index]):
        if re.match(r"\s*End\s+Enum\b", line, re.IGNORECASE):
            return False
        if re.match(r"\s*(?:(?:Public|Private)\s+)?Enum\s+\w+", line, re.IGNORECASE):
            return True
    return False


LIBREOFFICE_LIMITS = [
    Limit(
        # The Dictionary class (VBA-Dictionary 1.4.1, which xlwings' standalone workbook carries unchanged as its
        # Mac stand-in for Scripting.Dictionary) has "BinaryCompare = VBA.vbBinaryCompare" in "Public Enum
        # CompareMethod". In VBA, vbBinaryCompare is a constant of the VBA library, so a constant expression; in
        # LibreOffice it is a name known only at run time, and its compiler takes only literals as the values of
        # Enum members and Consts: "Syntax error." on the name (checked with Const too, and "vbBinaryCompare"
        # without "VBA."). LibreOffice reports the Enum's first such member only, and compiles the rest.
        "a VBA built-in constant (vbBinaryCompare...) as an Enum member's or a Const's value",
        "Syntax error.",
        lambda lines, index, text: re.fullmatch(r"vb[A-Z]\w*", text) is not None and in_enum_or_const(lines, index),
    ),
]


@dataclass(frozen=True)
class Problem:
    module: str
    line: int  # as the VBA editor numbers it (LibreOffice's source starts with lines of its own)
    text: str
    message: str
    platforms: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.module} line {self.line} ({', '.join(self.platforms)}): {self.message}\n    {self.text.strip()}"


def clean_environment() -> dict[str, str]:
    """This environment without its virtual environment, for LibreOffice's own Python.

    That Python finds its home through the ``python3`` on the PATH: a virtual environment's (beside its
    ``pyvenv.cfg``) would give it another Python's standard library, and the office aborts.
    """
    environment = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
    folders = environment.get("PATH", "").split(os.pathsep)
    environment["PATH"] = os.pathsep.join(f for f in folders if f and not (Path(f).parent / "pyvenv.cfg").exists())
    return environment


def compile_with_libreoffice(workbook: Path, folder: Path) -> dict:
    """What LibreOffice's Basic compiler says of ``workbook``'s VBA (tests/libreoffice_vba.py's report)."""
    assert SOFFICE is not None
    profile = folder / "profile"
    scripts = profile / "user" / "Scripts" / "python"
    scripts.mkdir(parents=True)
    shutil.copy(HELPER, scripts / HELPER.name)
    (scripts / "pythonpath").mkdir()  # on the office's sys.path: the one #If evaluator, shared with tests/vba.py
    shutil.copy(CONDITIONAL, scripts / "pythonpath" / CONDITIONAL.name)
    report = folder / "libreoffice-vba.json"
    environment = clean_environment() | {"LOVBA_WORKBOOK": str(workbook), "LOVBA_REPORT": str(report)}
    command = [
        SOFFICE,
        f"-env:UserInstallation={profile.as_uri()}",
        "--headless",
        "--norestore",
        f"vnd.sun.star.script:{HELPER.name}$main?language=Python&location=user",
    ]
    process = subprocess.Popen(
        command,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=sys.platform != "win32",  # its own process group: a timeout ends all of it
    )
    try:
        _, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        if sys.platform != "win32":
            os.killpg(process.pid, signal.SIGKILL)
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"LibreOffice did not finish within {TIMEOUT} s and was killed: {stderr[-2000:]}")
    assert report.is_file(), f"LibreOffice ended with {process.returncode} and no report: {stderr[-2000:]}"
    result = json.loads(report.read_text(encoding="utf-8"))
    if "unsupported" in result:
        pytest.skip(result["unsupported"])
    assert "failure" not in result, result["failure"]
    return result


def header_lines(source: list[str]) -> int:
    """How many lines LibreOffice put before the module's code (its type, ``Option VBASupport 1``, ...)."""
    count = 0
    for line in source[:3]:
        if not re.fullmatch(r"Rem Attribute VBA_ModuleType=\w+|Option VBASupport 1|Option ClassModule", line):
            break
        count += 1
    return count


def problems(report: dict) -> list[Problem]:
    """LibreOffice's compile errors, except LIBREOFFICE_LIMITS, one per place with the platforms that have it."""
    found: dict[tuple, list[str]] = {}
    for error in report["errors"]:
        lines = report["modules"].get(error["module"], {}).get("source", "").split("\n")
        index = error["line"] - 1
        text = lines[index] if 0 <= index < len(lines) else ""
        span = text[error["column1"] : error["column2"] + 1]
        if any(limit.message == error["message"] and limit.matches(lines, index, span) for limit in LIBREOFFICE_LIMITS):
            continue
        where = (error["module"], error["line"] - header_lines(lines), text, error["message"])
        found.setdefault(where, []).append(error["platform"])
    return [Problem(*where, tuple(platforms)) for where, platforms in found.items()]


def describe(report: dict, found: list[Problem]) -> str:
    return f"{report['libreoffice']} cannot compile the workbook's VBA:\n" + "\n".join(map(str, found))


def olevba_modules(path: Path) -> dict[str, str]:
    """Module name -> code, as olevba reads them (with their Attribute lines), line ends as "\\n"."""
    parser = VBA_Parser(str(path))
    try:
        return {name.rsplit(".", 1)[0]: code.replace("\r\n", "\n") for _, _, name, code in parser.extract_all_macros()}
    finally:
        parser.close()


def seeded_copy(folder: Path, module: str, edit: Callable[[str], str]) -> Path:
    """A copy of the workbook whose ``module`` has ``edit`` applied to its code (CRLF line ends, as stored)."""
    copy = folder / "Seeded.xlsm"
    with pyopenvba.ExcelFile(WORKBOOK) as book:
        project = book.vba_project()
        source = project.get_module(module).source
        changed = edit(source)
        assert changed != source, f"the seed does not apply to {module}"
        project.delete_module(module)
        project.add_module(module, changed)
        book.save(copy)
    return copy


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return compile_with_libreoffice(WORKBOOK, tmp_path_factory.mktemp("libreoffice-vba"))


@needs_libreoffice
def test_libreoffice_compiles_every_module_of_the_workbook(report: dict) -> None:
    assert report["vba_mode"], "LibreOffice did not import the VBA as VBA (Option VBASupport)"
    modules = olevba_modules(WORKBOOK)
    assert set(report["modules"]) == set(modules)  # every module was read, whatever the workbook holds
    for name, code in modules.items():  # the same code as olevba reads, so LibreOffice's lines are the module's
        source = report["modules"][name]["source"].rstrip("\n").split("\n")
        code_lines = [line for line in code.rstrip("\n").split("\n") if not line.startswith("Attribute ")]
        assert source[header_lines(source) :] == code_lines, name
    assert len(report["probe"]) == len(PLATFORMS)  # one library of VBA, compiled once for each platform
    found = problems(report)
    assert not found, describe(report, found)


# Where a seed goes in the Ribbon module: the first procedure, whatever the module holds when this runs.
FIRST_SUB = re.compile(r"^(Sub \w+\([^)\r\n]*\)\r\n)", re.MULTILINE)


@needs_libreoffice
@pytest.mark.parametrize(
    "seed",
    [
        pytest.param(lambda code: FIRST_SUB.sub(r"\1    If True Then\r\n", code, count=1), id="an unclosed If"),
        pytest.param(lambda code: code.replace("\r\nEnd Sub\r\n", "\r\n", 1), id="a missing End Sub"),
    ],
)
def test_a_seeded_mistake_in_the_ribbon_module_is_caught(tmp_path: Path, seed: Callable[[str], str]) -> None:
    seeded = seeded_copy(tmp_path, "Ribbon", seed)
    result = compile_with_libreoffice(seeded, tmp_path)
    found = problems(result)
    assert found, "LibreOffice compiled a Ribbon module with a seeded mistake"
    assert {problem.module for problem in found} == {"Ribbon"}
    assert {platform for problem in found for platform in problem.platforms} == set(PLATFORMS)
    code = olevba_modules(seeded)["Ribbon"].split("\n")
    code = [line for line in code if not line.startswith("Attribute ")]
    subs = [number for number, line in enumerate(code, start=1) if line.startswith("Sub ")] + [len(code)]
    # Where LibreOffice notices: in the seeded procedure, or where the next one starts (it cannot tell sooner).
    assert all(subs[0] <= problem.line <= subs[1] for problem in found), found
    assert re.search(r"\nRibbon line \d+ \(Win64, Win32, Mac\): \S", describe(result, found))


@needs_libreoffice
def test_a_mistake_in_one_platform_s_branch_is_caught_for_that_platform_only(tmp_path: Path) -> None:
    mac_only = "#If Mac Then\r\nSub OnlyOnTheMac()\r\n    If True Then\r\nEnd Sub\r\n#End If\r\n"
    win32_only = "#If Win64 Then\r\n#ElseIf Win32 Then\r\nSub Only32Bit()\r\n    Do\r\nEnd Sub\r\n#End If\r\n"
    seeded = seeded_copy(tmp_path, "Ribbon", lambda code: code + mac_only + win32_only)
    found = problems(compile_with_libreoffice(seeded, tmp_path))
    assert {problem.platforms for problem in found} == {("Mac",), ("Win32",)}, found


@needs_libreoffice
def test_after_what_libreoffice_cannot_express_the_module_is_still_compiled(tmp_path: Path) -> None:
    # Dictionary holds LIBREOFFICE_LIMITS' Enum; a mistake after it, at the module's end, is still found.
    mistake = "\r\nPrivate Sub Seeded()\r\n    If True Then\r\nEnd Sub\r\n"
    found = problems(
        compile_with_libreoffice(seeded_copy(tmp_path, "Dictionary", lambda code: code + mistake), tmp_path)
    )
    assert [(problem.module, problem.platforms) for problem in found] == [("Dictionary", tuple(PLATFORMS))], found


# -- Conditional compilation, without LibreOffice --------------------------------------------------------------

BRANCHES = """\
#Const App = "Microsoft Excel" 'Adjust when using outside of Excel
#If App = "Microsoft Excel" Then
excel
#ElseIf App = "Microsoft Word" Then
word
#Else
other
#End If
#If Mac Then
  #If MAC_OFFICE_VERSION >= 15 Then
mac 2016
  #Else
mac 2011
  #End If
#ElseIf Win64 Then
win64
#Else
win32
#End If
#If VBA7 And Not (Mac Or Win16) Then ' a comment with "quotes"
windows
#End If"""


@pytest.mark.parametrize(
    ("platform", "kept"),
    [
        ("Win64", ["excel", "win64", "windows"]),
        ("Win32", ["excel", "win32", "windows"]),
        ("Mac", ["excel", "mac 2016"]),
    ],
)
def test_conditional_compilation_takes_each_platform_s_branches(platform: str, kept: list[str]) -> None:
    resolved = compile_conditionally(BRANCHES, PLATFORMS[platform]).split("\n")
    assert len(resolved) == len(BRANCHES.split("\n"))  # lines keep their numbers
    assert [line for line in resolved if line] == kept


def test_every_directive_of_the_workbook_is_understood() -> None:
    for name, code in olevba_modules(WORKBOOK).items():
        for platform, constants in PLATFORMS.items():
            resolved = compile_conditionally(code, constants).split("\n")
            assert len(resolved) == len(code.split("\n")), (name, platform)
            assert not [line for line in resolved if line.lstrip().startswith("#")], (name, platform)


@pytest.mark.parametrize(
    "source",
    ['#If App Like "Microsoft*" Then\n#End If', "#If Mac Then\nx", "#Else\n", "#If (Mac Then\n#End If", "#Const = 1"],
)
def test_a_directive_it_cannot_read_is_an_error_not_a_guess(source: str) -> None:
    with pytest.raises(VbaError):
        compile_conditionally(source, PLATFORMS["Win64"])
