"""Two readers of the workbook's VBA that are not the tools that wrote it, for tests/test_vba.py.

* :func:`grammar_errors`: the VBA 7.1 grammar of the ANTLR grammars-v4 project (the ``antlr4-vba`` package) parses
  a module after :func:`compile_conditionally` has evaluated its ``#If``/``#Const`` directives for one platform, as
  the VBA compiler does before it reads anything else (the grammar itself does not know the directives).
* :func:`compile_errors`: pyVBAanalysis' errors (not its warnings) under one platform's compiler constants, with
  the whole project read for context: a call to a procedure that exists nowhere (not in the project, VBA's library
  or Excel's object model as pyVBAanalysis knows them), a procedure declared twice, a reserved word as a
  parameter, a ``Declare`` without ``PtrSafe`` for 64-bit Windows; and :func:`declares_without_ptrsafe`, that
  last check for 64-bit Mac Office too, which pyVBAanalysis does not make.

Modules are read with oletools (olevba), as tests/test_workbook.py does: not pyOpenVBA, which wrote them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import xlwings
from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from antlr4_vba.vbaLexer import vbaLexer
from antlr4_vba.vbaParser import vbaParser
from oletools.olevba import VBA_Parser
from pyvbaanalysis import ConditionalCompilationEnvironment, DiagnosticSeverity, ModuleInput, analyze_project
from pyvbaanalysis.reader.workbook import read_office_project

from .vba_conditional import PLATFORMS, VbaError, compile_conditionally

TEMPLATE = Path(xlwings.__file__).parent / "quickstart_standalone.xlsm"

# Where a Declare needs PtrSafe: 64-bit VBA7 ("The code in this project must be updated for use on 64-bit
# systems"). 32-bit Office accepts either form.
POINTERS_64 = ("Win64", "Mac")


@dataclasses.dataclass(frozen=True)
class Module:
    name: str
    code: str  # as stored in the project, line ends normalised to \n
    is_class: bool  # class and document modules (.cls): the grammar wants their export header

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.code.encode("utf-8")).hexdigest()


def read_modules(path: Path) -> dict[str, Module]:
    """Every VBA module of the workbook at ``path``, by name, as olevba reads it."""
    parser = VBA_Parser(str(path))
    try:
        modules = {}
        for _, _, filename, code in parser.extract_all_macros():
            name, _, extension = filename.rpartition(".")
            modules[name] = Module(name, code.replace("\r\n", "\n"), extension.lower() == "cls")
        return modules
    finally:
        parser.close()


@functools.cache
def template_digests() -> dict[str, str]:
    """Module name -> hash of its text, in the template of the installed (pinned) xlwings."""
    return {name: module.digest for name, module in read_modules(TEMPLATE).items()}


def unchanged_from_xlwings(module: Module) -> bool:
    """Whether ``module`` is the same-named module of the installed xlwings' template, to the byte (line ends aside)."""
    return template_digests().get(module.name) == module.digest


# --- The grammar ---------------------------------------------------------------------------------------------

# A class module as the VBE exports it: the grammar wants this header before the attributes, which is not stored
# in the project. Of the attributes of a class module's header, the grammar knows only these; the lines of the
# others (VB_Base, VB_TemplateDerived, a module's VB_Description) are emptied, keeping the line numbers.
_CLASS_HEADER = "VERSION 1.0 CLASS\nBEGIN\n  MultiUse = -1  'True\nEND\n"
_CLASS_ATTRIBUTES = {
    "vb_name",
    "vb_globalnamespace",
    "vb_creatable",
    "vb_predeclaredid",
    "vb_exposed",
    "vb_customizable",
}


def _as_exported_class(code: str) -> str:
    lines = code.split("\n")
    for index, line in enumerate(lines):
        attribute = re.match(r"Attribute (VB_\w+) = ", line, re.IGNORECASE)
        if not attribute:
            break  # the header is the leading run of Attribute lines
        if attribute.group(1).lower() not in _CLASS_ATTRIBUTES:
            lines[index] = ""
    return _CLASS_HEADER + "\n".join(lines)


class _Errors(ErrorListener):
    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.found: list[str] = []

    def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e) -> None:  # ANTLR's names
        self.found.append(f"line {line - self.offset}:{column}: {msg}")


@functools.lru_cache(maxsize=256)  # the same text under several platforms, or in several tests, is parsed once
def syntax_errors(code: str, is_class: bool) -> tuple[str, ...]:
    """What the grammar rejects in ``code`` (already compiled conditionally); empty when it parses."""
    offset = 0
    if is_class:
        code = _as_exported_class(code)
        offset = _CLASS_HEADER.count("\n")
    errors = _Errors(offset)
    lexer = vbaLexer(InputStream(code))
    lexer.removeErrorListeners()
    lexer.addErrorListener(errors)
    parser = vbaParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(errors)
    parser.startRule()
    return tuple(errors.found)


def grammar_errors(module: Module, platform: str) -> list[str]:
    """What keeps ``module`` from parsing on ``platform``: a directive error, or what the grammar rejects."""
    try:
        code = compile_conditionally(module.code, PLATFORMS[platform])
    except VbaError as error:
        return [f"{module.name} ({platform}): {error}"]
    return [f"{module.name} ({platform}) {error}" for error in syntax_errors(code, module.is_class)]


# --- Compile-level checks ------------------------------------------------------------------------------------

_DECLARE = re.compile(
    r"^[ \t]*(?:(?:Public|Private|Global)[ \t]+)?Declare[ \t]+(?!PtrSafe\b)(.*)$", re.IGNORECASE | re.M
)


def declares_without_ptrsafe(module: Module, platform: str) -> list[str]:
    """The ``Declare`` statements without ``PtrSafe`` compiled on ``platform``, where that is 64-bit VBA7."""
    if platform not in POINTERS_64:
        return []
    try:
        code = compile_conditionally(module.code, PLATFORMS[platform])
    except VbaError as error:
        return [f"{module.name} ({platform}): {error}"]
    return [
        f"{module.name} ({platform}) line {code.count(chr(10), 0, found.start()) + 1}: Declare without PtrSafe"
        for found in _DECLARE.finditer(code)
    ]


def project_inputs(path: Path) -> tuple[list[ModuleInput], dict]:
    """pyVBAanalysis' own reading of the workbook: its modules, and the project facts its analysis needs."""
    project = read_office_project(path)
    facts = {
        "host": project.host,
        "referenced_hosts": project.referenced_hosts,
        "referenced_libraries": project.referenced_libraries,
        "workbook_sheets": project.workbook_sheets,
        "project_constants": project.project_constants,
    }
    return [module.as_module_input() for module in project.modules], facts


def compile_errors(inputs: Iterable[ModuleInput], facts: dict, platform: str, only: Iterable[str]) -> list[str]:
    """pyVBAanalysis' errors in the modules named in ``only`` (the whole project is read for context)."""
    facts = dict(facts)
    environment = ConditionalCompilationEnvironment(
        compiler_constants=PLATFORMS[platform], project_constants=facts.pop("project_constants") or None
    )
    found = analyze_project(list(inputs), only=list(only), conditional_compilation=environment, **facts)
    return [
        f"{name} ({platform}) {problem.code}: {problem.message}"
        for name, problems in found.items()
        for problem in problems
        if problem.severity == DiagnosticSeverity.ERROR
    ]
