"""The workbook's VBA read as VBA, by readers that did not write it (tests/vba.py): a grammar and a compile check.

Each module is read under the conditional compilation of Windows 64-bit, Windows 32-bit and Mac. xlwings' own
modules are read only when they differ from the pinned xlwings' template (the grammar takes seconds on them);
``VBA_READ_ALL=1`` reads them anyway. Each reader is shown to catch mistakes seeded into a copy of the real modules.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import xlwings

from . import vba

ROOT = Path(__file__).resolve().parents[1]
WORKBOOK = ROOT / "workbook" / "OptOuts.xlsm"
PLATFORMS = list(vba.PLATFORMS)


@pytest.fixture(scope="module")
def modules() -> dict[str, vba.Module]:
    return vba.read_modules(WORKBOOK)


@pytest.fixture(scope="module")
def checked(modules: dict[str, vba.Module]) -> list[str]:
    """The modules read: ours, and any of xlwings' that is not exactly the pinned template's."""
    if os.environ.get("VBA_READ_ALL") == "1":
        return sorted(modules)
    return sorted(name for name, module in modules.items() if not vba.unchanged_from_xlwings(module))


@pytest.fixture(scope="module")
def project() -> tuple[list, dict]:
    return vba.project_inputs(WORKBOOK)


def test_only_xlwings_unchanged_modules_go_unread(modules: dict[str, vba.Module], checked: list[str]) -> None:
    pin = re.search(r'"xlwings==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin and pin.group(1) == xlwings.__version__  # the template compared with is the pinned xlwings'
    assert {"Ribbon", "xlwings_udfs"} <= set(checked)
    skipped = set(modules) - set(checked)
    assert skipped <= set(vba.template_digests())
    assert all(vba.unchanged_from_xlwings(modules[name]) for name in skipped)
    edited = dataclasses.replace(modules["xlwings"], code=modules["xlwings"].code + "' one more line\n")
    assert not vba.unchanged_from_xlwings(edited)  # any change to xlwings' module gets it read


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_module_parses(modules: dict[str, vba.Module], checked: list[str], platform: str) -> None:
    errors = [error for name in checked for error in vba.grammar_errors(modules[name], platform)]
    assert errors == []


@pytest.mark.parametrize("platform", PLATFORMS)
def test_no_compile_errors(
    modules: dict[str, vba.Module], checked: list[str], project: tuple[list, dict], platform: str
) -> None:
    inputs, facts = project
    assert {module.module_name for module in inputs} == set(modules)  # both readers see the same project
    assert vba.compile_errors(inputs, facts, platform, only=checked) == []
    assert [error for name in checked for error in vba.declares_without_ptrsafe(modules[name], platform)] == []


# --- Conditional compilation ---------------------------------------------------------------------------------


def test_conditional_compilation_picks_each_platforms_declarations(modules: dict[str, vba.Module]) -> None:
    """xlwings' own #If VBA7 / #If Mac / #If Win64 block, evaluated the way each platform compiles it."""
    declared = {
        platform: re.findall(
            r"Declare (PtrSafe )?Function (\w+) Lib \"([^\"]+)\"",
            vba.compile_conditionally(modules["xlwings"].code, vba.PLATFORMS[platform]),
        )
        for platform in PLATFORMS
    }
    version = xlwings.__version__
    assert ("PtrSafe ", "XLPyDLLActivateAuto", f"xlwings64-{version}.dll") in declared["Win64"]
    assert ("PtrSafe ", "XLPyDLLActivateAuto", f"xlwings32-{version}.dll") in declared["Win32"]
    assert ("PtrSafe ", "system", "libc.dylib") in declared["Mac"]
    assert not any(library.startswith("xlwings64") for _, _, library in declared["Win32"] + declared["Mac"])
    assert all(ptrsafe for platform in PLATFORMS for ptrsafe, _, _ in declared[platform])  # never the VBA6 branch


@pytest.mark.parametrize(
    ("expression", "platform", "expected"),
    [
        ("Win64", "Win64", True),
        ("Win64", "Win32", False),
        ("Win32 And Not Win64", "Win32", True),
        ("Not Mac", "Mac", True),  # Mac is 1, Not 1 is -2: true, as in VBA
        ("Mac = False", "Mac", False),
        ("Mac Or Not UseScriptingDictionaryIfAvailable", "Win64", False),
        ('App = "Microsoft Excel"', "Win64", True),
        ('Undefined = ""', "Win64", True),  # an undefined constant is Empty
        ("MAC_OFFICE_VERSION >= 15", "Mac", True),
        ("MAC_OFFICE_VERSION >= 15", "Win64", False),
        ("-2 ^ 2 = -4 And 7 \\ 2 = 3 And -7 \\ 2 = -3 And -7 Mod 4 = -3 And 7 Mod 4 * 2 = 7", "Win64", True),
        ("2 + 3 * 4 = 14 And 2.5 \\ 1 = 2 And 3.5 \\ 1 = 4", "Win64", True),  # \\ rounds to even first
    ],
)
def test_conditional_expressions(expression: str, platform: str, expected: bool) -> None:
    code = (
        '#Const App = "Microsoft Excel" \' a comment\n#Const UseScriptingDictionaryIfAvailable = True\n'
        f"#If {expression} Then\nyes\n#ElseIf True Then\nno\n#Else\nnever\n#End If\n"
    )
    lines = vba.compile_conditionally(code, vba.PLATFORMS[platform]).split("\n")
    assert len(lines) == code.count("\n") + 1  # line numbers kept
    assert [line for line in lines if line] == (["yes"] if expected else ["no"])


@pytest.mark.parametrize(
    "code",
    [
        "#If Mac Then\nx\n",  # no #End If
        "#End If\n",
        "#If Mac Then\n#Else\n#Else\n#End If\n",
        "#If Mac\n#End If\n",  # no Then
        '#If "text" Then\n#End If\n',
        "#If Int(1) Then\n#End If\n",  # a function this reader does not evaluate: said, not guessed
    ],
)
def test_directives_vba_rejects_are_errors(code: str) -> None:
    with pytest.raises(vba.VbaError):
        vba.compile_conditionally(code, vba.PLATFORMS["Win64"])


# --- Seeded mistakes -----------------------------------------------------------------------------------------


def declarations(text: str) -> Callable[[str], str]:
    """Put ``text`` in the module's declarations, after its Attribute and Option lines."""
    return lambda code: re.sub(r"\A((?:(?:Attribute|Option) .*\n|'.*\n|[ \t]*\n)*)", lambda m: m.group(1) + text, code)


def first_procedure(code: str) -> str:
    found = re.search(r"^(?:Public |Private )?(Sub|Function) \w+.*?^End \1\n", code, re.MULTILINE | re.DOTALL)
    assert found, "the module has no procedure to copy"
    return found.group(0)


# (mistake, module, the mistake made, {reader that must catch it: a pattern its report must match})
# Readers: "grammar" (tests/vba.py: conditional compilation, then the ANTLR grammar), "compile" (pyVBAanalysis'
# errors, by diagnostic code), "ptrsafe" (tests/vba.py's own check of Declare statements on 64-bit platforms).
SEEDS: list[tuple[str, str, Callable[[str], str], dict[str, str]]] = [
    (
        "an unclosed If",
        "Ribbon",
        lambda code: re.sub(r"^(Sub .*\n)", r"\1    If True Then\n", code, count=1, flags=re.MULTILINE),
        {"grammar": "expecting 'IF'"},
    ),
    (
        "a missing End Sub",
        "Ribbon",
        lambda code: re.sub(r"^End Sub\n", "", code, count=1, flags=re.MULTILINE),
        {"grammar": "no viable alternative"},
    ),
    ("an unclosed #If", "Ribbon", declarations("#If Mac Then\n"), {"grammar": "#If without #End If"}),
    (
        "a reserved word as a parameter",
        "Ribbon",
        lambda code: re.sub(r"^(Sub \w+\()\w+", r"\1Next", code, count=1, flags=re.MULTILINE),
        {"grammar": "no viable alternative", "compile": "invalid-declaration-name"},
    ),
    (
        "a reserved word as a worksheet function's argument",
        "xlwings_udfs",
        lambda code: re.sub(r"^(Function \w+\()\w+", r"\1Date", code, count=1, flags=re.MULTILINE),
        {"grammar": "no viable alternative", "compile": "invalid-declaration-name"},
    ),
    (
        "an undefined procedure",
        "Ribbon",
        lambda code: re.sub(r"^([ \t]+)RunPython ", r"\1RunPythonn ", code, count=1, flags=re.MULTILINE),
        {"compile": "unknown-call"},
    ),
    (
        "a duplicate procedure",
        "Ribbon",
        lambda code: code + "\n" + first_procedure(code),
        {"compile": "duplicate-procedure"},
    ),
    (
        "a Declare without PtrSafe for VBA7",
        "Ribbon",
        declarations('#If VBA7 Then\nPrivate Declare Function GetTickCount Lib "kernel32" () As Long\n#End If\n'),
        {"compile": "declare-missing-ptrsafe", "ptrsafe": "Declare without PtrSafe"},
    ),
    (
        "a Declare without PtrSafe on 64-bit Mac",
        "Ribbon",
        declarations('#If Mac Then\nPrivate Declare Function getpid Lib "libc.dylib" () As Long\n#End If\n'),
        {"ptrsafe": r"\(Mac\) line \d+: Declare without PtrSafe"},
    ),
]


@pytest.mark.parametrize(("mistake", "name", "seed", "expected"), SEEDS, ids=[seed[0] for seed in SEEDS])
def test_each_reader_catches_its_seeded_mistakes(
    modules: dict[str, vba.Module],
    project: tuple[list, dict],
    mistake: str,
    name: str,
    seed: Callable[[str], str],
    expected: dict[str, str],
) -> None:
    real = modules[name]
    seeded = dataclasses.replace(real, code=seed(real.code))
    assert seeded.code != real.code, f"the seed of {mistake} no longer applies to {name}"
    inputs, facts = project
    copy = [
        dataclasses.replace(module, source=seed(module.source.replace("\r\n", "\n")))
        if module.module_name == name
        else module
        for module in inputs
    ]
    readers: dict[str, Callable[[str], list[str]]] = {
        "grammar": lambda platform: vba.grammar_errors(seeded, platform),
        "compile": lambda platform: vba.compile_errors(copy, facts, platform, [name]),
        "ptrsafe": lambda platform: vba.declares_without_ptrsafe(seeded, platform),
    }
    for reader, says in expected.items():
        found = [error for platform in PLATFORMS for error in readers[reader](platform)]
        assert any(re.search(says, error) for error in found), f"{reader} misses {mistake} in {name}: {found}"
