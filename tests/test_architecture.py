"""The package's layers, read from its source with ``ast``: no import cycle (imports inside functions included),
imports point down only, and the front ends call only the use-case layer (see docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ccoptout_xl"

# Higher imports lower, never the other way round; modules of one layer may import each other (without a cycle).
LAYERS = {
    "front ends": ("cli", "excel", "__main__"),
    "use cases": ("service",),
    "store and report": ("store", "report", "workbook"),
    "sync and attribution": ("reconcile", "campaigns", "attribution"),
    "queries": ("query", "parallel", "spread"),
    "API client and sign-in": ("client", "auth", "signin", "credentials", "config"),
    "transport": ("http_client",),
    "leaves": (
        "settings",
        "text",
        "dates",
        "files",
        "formats",
        "table",
        "history",
        "optouts",
        "exceptions",
        "version",
        "columns",
        "retry",
    ),
    "the sandbox (a program of its own)": ("sandbox",),
}
RANK = {module: -index for index, modules in enumerate(LAYERS.values()) for module in modules}
# What shows results (formats, columns, text, dates, files) and the sandbox, whose command is its own front end.
FRONT_END_MAY_USE = {"service", "formats", "columns", "dates", "text", "exceptions", "version", "settings", "files"}
FRONT_END_MAY_USE |= {"sandbox"}


def module_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE).with_suffix("")
    return relative.parts[0] if relative.parts[0] == "sandbox" else ".".join(relative.parts)


def imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it (inside functions too)."""
    found: set[str] = set()
    in_sandbox = module_of(path) == "sandbox"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == "ccoptout_xl":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
                continue
            if in_sandbox and node.level == 1:
                continue  # within the sandbox package
            if node.level == 2 and in_sandbox:
                base = (node.module or "").split(".")[0] or "__init__"
                found.add(base)
                continue
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import x, y
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ccoptout_xl":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    found.discard(module_of(path))
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        edges.setdefault(module_of(path), set()).update(imports(path))
    return edges


def test_every_module_has_a_layer() -> None:
    assert set(graph()) - {"__init__"} <= set(RANK)


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    edges = graph()
    edges.pop("__init__")  # the public facade imports everything, and nothing imports it
    assert not any("__init__" in targets for targets in edges.values()), "a module imports the package's facade"
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            pytest.fail("import cycle: " + " -> ".join((*path[path.index(module) :], module)))
        if module in done:
            return
        for target in sorted(edges.get(module, ())):
            visit(target, (*path, module))
        done.add(module)

    for module in sorted(edges):
        visit(module, ())


def test_imports_point_down() -> None:
    upward = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        if source != "__init__"
        for target in targets
        if RANK[target] > RANK[source]
    ]
    assert upward == []


def test_the_front_ends_call_only_the_use_case_layer() -> None:
    edges = graph()
    for front_end in ("cli", "excel"):
        assert edges[front_end] - FRONT_END_MAY_USE == set(), front_end


def test_the_public_api_is_what_the_command_line_uses() -> None:
    import ccoptout_xl
    from ccoptout_xl import cli, service

    assert set(ccoptout_xl.__all__) <= set(dir(ccoptout_xl))
    for name in ("connect", "get_optouts", "sync", "make_report", "cache_state", "clear_cache", "sign_in", "sign_out"):
        assert getattr(ccoptout_xl, name) is getattr(service, name)
        assert f"service.{name}(" in (PACKAGE / "cli.py").read_text(encoding="utf-8")
    assert cli.service is service


def test_settings_are_read_in_one_place() -> None:
    import re

    from ccoptout_xl.settings import VARIABLES

    for path in PACKAGE.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name != "settings.py":
            assert "os.environ" not in text and "getenv" not in text, f"{path.name} reads the environment"
        assert set(re.findall(r"CCOPTOUT_[A-Z_]+", text)) <= set(VARIABLES), path.name
