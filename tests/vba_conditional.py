"""VBA's conditional compilation (MS-VBAL 3.4): the text the compiler reads for one platform.

The one evaluator of ``#If``/``#Const`` for both readers of the workbook's VBA: tests/vba.py (the ANTLR grammar,
pyVBAanalysis) and tests/libreoffice_vba.py, which runs inside LibreOffice's own Python, so this module uses the
standard library only.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping

# The compiler constants of each platform the workbook is for. Built-in constants are 1 and 0, not True (-1)
# and False: `#If Not Win64` is true on every platform (Not 1 is -2), a known VBA trap. Win32 is on in 64-bit
# Office too (it means Windows). Mac Office 2016 and later is 64-bit VBA7 and sets MAC_OFFICE_VERSION.
PLATFORMS: dict[str, dict[str, int]] = {
    "Win64": {"VBA6": 1, "VBA7": 1, "Win16": 0, "Win32": 1, "Win64": 1, "Mac": 0},
    "Win32": {"VBA6": 1, "VBA7": 1, "Win16": 0, "Win32": 1, "Win64": 0, "Mac": 0},
    "Mac": {"VBA6": 1, "VBA7": 1, "Win16": 0, "Win32": 0, "Win64": 0, "Mac": 1, "MAC_OFFICE_VERSION": 16},
}


class VbaError(ValueError):
    """A directive this reader cannot evaluate or that VBA would reject (an unclosed ``#If``, say)."""


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
