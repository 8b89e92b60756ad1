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
import operator
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import xlwings
from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from antlr4_vba.vbaLexer import vbaLexer
from antlr4_vba.vbaParser import vbaParser
from oletools.olevba import VBA_Parser
from pyvbaanalysis import ConditionalCompilationEnvironment, DiagnosticSeverity, ModuleInput, analyze_project
from pyvbaanalysis.reader.workbook import read_office_project

TEMPLATE = Path(xlwings.__file__).parent / "quickstart_standalone.xlsm"

# The compiler constants of each platform the workbook is for. Built-in constants are 1 and 0, not True (-1)
# and False: `#If Not Win64` is true on every platform (Not 1 is -2), a known VBA trap. Win32 is on in 64-bit
# Office too (it means Windows). Mac Office 2016 and later is 64-bit VBA7 and sets MAC_OFFICE_VERSION.
PLATFORMS: dict[str, dict[str, int]] = {
    "Win64": {"VBA6": 1, "VBA7": 1, "Win16": 0, "Win32": 1, "Win64": 1, "Mac": 0},
    "Win32": {"VBA6": 1, "VBA7": 1, "Win16": 0, "Win32": 1, "Win64": 0, "Mac": 0},
    "Mac": {"VBA6": 1, "VBA7": 1, "Win16": 0, "Win32": 0, "Win64": 0, "Mac": 1, "MAC_OFFICE_VERSION": 16},
}
# Where a Declare needs PtrSafe: 64-bit VBA7 ("The code in this project must be updated for use on 64-bit
# systems"). 32-bit Office accepts either form.
POINTERS_64 = ("Win64", "Mac")


class VbaError(Exception):
    """A directive this reader cannot evaluate or that VBA would reject (an unclosed ``#If``, say)."""


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


# --- Conditional compilation (MS-VBAL 3.4) -------------------------------------------------------------------

_DIRECTIVE = re.compile(r"^\s*#\s*(ElseIf|Else|End\s*If|If|Const)\b(.*)$", re.IGNORECASE)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"]|"")*")
      | (?P<number>&H[0-9A-F]+&?|&O?[0-7]+&?|(?:\d+\.?\d*|\.\d+)(?:E[+-]?\d+)?[%&!#@^]?)
      | (?P<name>[A-Z][A-Z0-9_]*)
      | (?P<operator><=|>=|<>|=<|=>|><|[-+*/\\^&=<>()])
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_COMPARISONS = {
    "=": operator.eq,
    "<>": operator.ne,
    "><": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    "=<": operator.le,
    ">=": operator.ge,
    "=>": operator.ge,
}
_LOGICAL = ("and", "or", "xor", "eqv", "imp")  # lowest precedence last
Value = int | float | str | None  # None is Empty, what an undefined constant is


def compile_conditionally(code: str, constants: Mapping[str, Value]) -> str:
    """``code`` as the compiler reads it under ``constants``: directive lines and inactive lines left empty.

    Line numbers are kept, so errors point at the module's own lines. ``#Const`` values are module-level, as in
    VBA. Raises :class:`VbaError` for an ``#If`` without ``#End If`` and the other mistakes VBA rejects.
    """
    known: dict[str, Value] = {name.lower(): value for name, value in constants.items()}
    stack: list[tuple[bool, bool, bool]] = []  # (enclosing block active, a branch taken, after #Else)
    active = True
    out = []
    for number, line in enumerate(code.split("\n"), start=1):
        directive = _DIRECTIVE.match(line)
        if not directive:
            out.append(line if active else "")
            continue
        out.append("")
        keyword = re.sub(r"\s+", " ", directive.group(1).lower())
        rest = _strip_comment(directive.group(2)).strip()
        where = f"line {number}: {line.strip()}"
        if keyword == "const":
            assignment = re.fullmatch(r"([A-Z][A-Z0-9_]*)\s*=\s*(.+)", rest, re.IGNORECASE)
            if not assignment:
                raise VbaError(f"malformed #Const at {where}")
            if active:
                known[assignment.group(1).lower()] = _evaluate(assignment.group(2), known, where)
        elif keyword in ("if", "elseif"):
            condition = re.fullmatch(r"(.+?)\s+Then", rest, re.IGNORECASE)
            if not condition:
                raise VbaError(f"#{directive.group(1)} without Then at {where}")
            if keyword == "if":
                stack.append((active, False, False))
            elif not stack or stack[-1][2]:
                raise VbaError(f"#ElseIf without #If, or after #Else, at {where}")
            enclosing, taken, _ = stack[-1]
            holds = enclosing and not taken and _truth(_evaluate(condition.group(1), known, where), where)
            stack[-1] = (enclosing, taken or holds, False)
            active = holds
        elif keyword == "else":
            if rest or not stack or stack[-1][2]:
                raise VbaError(f"#Else without #If, or a second #Else, at {where}")
            enclosing, taken, _ = stack[-1]
            stack[-1] = (enclosing, True, True)
            active = enclosing and not taken
        else:  # end if
            if rest or not stack:
                raise VbaError(f"#End If without #If at {where}")
            active = stack.pop()[0]
    if stack:
        raise VbaError(f"{len(stack)} #If without #End If")
    return "\n".join(out)


def _strip_comment(text: str) -> str:
    """``text`` without a trailing ' comment (a quote inside a string literal is not one)."""
    in_string = False
    for index, char in enumerate(text):
        if char == '"':
            in_string = not in_string
        elif char == "'" and not in_string:
            return text[:index]
    return text


def _evaluate(text: str, known: Mapping[str, Value], where: str) -> Value:
    """A conditional-compilation expression (MS-VBAL 5.6.16.2), with VBA's operator precedence."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while text[position:].strip():
        token = _TOKEN.match(text, position)
        if not token:
            raise VbaError(f"cannot read {text[position:]!r} at {where}")
        kind = token.lastgroup or ""
        tokens.append((kind, token.group(kind)))
        position = token.end()
    tokens.append(("end", ""))
    index = 0

    def peek() -> str:
        kind, word = tokens[index]
        return word.lower() if kind in ("name", "operator") else ""

    def take() -> tuple[str, str]:
        nonlocal index
        index += 1
        return tokens[index - 1]

    def numbers(*values: Value) -> list[int | float]:
        out = []
        for value in values:
            if isinstance(value, str):
                raise VbaError(f"type mismatch (a string where a number is needed) at {where}")
            out.append(0 if value is None else value)
        return out

    def logical(level: int) -> Value:
        if level == len(_LOGICAL):
            return negation()
        left = logical(level + 1)
        while peek() == _LOGICAL[level]:
            take()
            a, b = (int(v) for v in numbers(left, logical(level + 1)))
            left = {
                "and": a & b,
                "or": a | b,
                "xor": a ^ b,
                "eqv": ~(a ^ b),
                "imp": ~a | b,
            }[_LOGICAL[level]]
        return left

    def negation() -> Value:
        if peek() == "not":
            take()
            return ~int(numbers(negation())[0])
        return comparison()

    def comparison() -> Value:
        left = concatenation()
        while peek() in _COMPARISONS:
            symbol = take()[1]
            right = concatenation()
            if isinstance(left, str) or isinstance(right, str):
                if not all(isinstance(v, str) or v is None for v in (left, right)):
                    raise VbaError(f"type mismatch (a string compared with a number) at {where}")
                a, b = left or "", right or ""
            else:
                a, b = numbers(left, right)
            holds = _COMPARISONS[symbol](a, b)
            left = -1 if holds else 0
        return left

    def concatenation() -> Value:
        left = additive()
        while peek() == "&":
            take()
            right = additive()
            left = _text(left) + _text(right)
        return left

    def additive() -> Value:
        left = modulo()
        while peek() in ("+", "-"):
            symbol = take()[1]
            a, b = numbers(left, modulo())
            left = a + b if symbol == "+" else a - b
        return left

    def modulo() -> Value:
        left = integer_division()
        while peek() == "mod":
            take()
            a, b = whole(left, integer_division())
            left = a - b * _truncated(a, b, where)
        return left

    def integer_division() -> Value:
        left = product()
        while peek() == "\\":
            take()
            left = _truncated(*whole(left, product()), where)
        return left

    def whole(*values: Value) -> list[int]:
        return [round(value) for value in numbers(*values)]  # \ and Mod round first, to even like VBA

    def product() -> Value:
        left = unary()
        while peek() in ("*", "/"):
            symbol = take()[1]
            a, b = numbers(left, unary())
            if symbol == "/" and b == 0:
                raise VbaError(f"division by zero at {where}")
            left = a * b if symbol == "*" else a / b
        return left

    def unary() -> Value:
        if peek() == "-":
            take()
            return -numbers(unary())[0]
        return power()

    def power() -> Value:
        left = atom()
        while peek() == "^":
            take()
            a, b = numbers(left, atom())
            left = a**b
        return left

    def atom() -> Value:
        kind, word = take()
        if kind == "string":
            return word[1:-1].replace('""', '"')
        if kind == "number":
            return _number(word)
        if word == "(":
            value = logical(0)
            if take()[1] != ")":
                raise VbaError(f"missing ) at {where}")
            return value
        if kind == "name":
            name = word.lower()
            literals: dict[str, Value] = {"true": -1, "false": 0, "empty": None}
            if name in literals:
                return literals[name]
            if tokens[index][1] == "(":
                raise VbaError(f"function {word} is not supported by this reader, at {where}")
            return known.get(name)  # an undefined constant is Empty
        raise VbaError(f"unexpected {word or 'end'!r} at {where}")

    value = logical(0)
    if tokens[index][0] != "end":
        raise VbaError(f"unexpected {tokens[index][1]!r} at {where}")
    return value


def _number(word: str) -> int | float:
    digits = word.rstrip("%&!#@^")
    if digits[:2].lower() == "&h":
        return int(digits[2:], 16)
    if digits[:1] == "&":
        return int(digits.lstrip("&oO"), 8)
    value = float(digits)
    return int(value) if value.is_integer() and not re.search(r"[.E]", digits, re.IGNORECASE) else value


def _truncated(a: int, b: int, where: str) -> int:
    """``a`` divided by ``b``, rounded toward zero as VBA's \\ does (Python's // rounds down)."""
    if b == 0:
        raise VbaError(f"division by zero at {where}")
    quotient = abs(a) // abs(b)
    return -quotient if (a < 0) != (b < 0) else quotient


def _text(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _truth(value: Value, where: str) -> bool:
    if isinstance(value, str):
        raise VbaError(f"type mismatch (a string as a condition) at {where}")
    return bool(value)


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
