"""The Excel workbook, checked without Excel: its parts, VBA, ribbon, UDF wrappers, and that it matches its build."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import zipfile
from pathlib import Path

import openpyxl
import pytest
import xmlschema
from oletools.olevba import VBA_Parser

from ccoptout_xl import columns, excel
from ccoptout_xl.cli import main

ROOT = Path(__file__).resolve().parents[1]
WORKBOOK = ROOT / "workbook" / "OptOuts.xlsm"
RIBBON_TYPE = "http://schemas.microsoft.com/office/2007/relationships/ui/extensibility"


def schema_path() -> Path:
    shared = ROOT.parent / "shared" / "office" / "customui14.xsd"
    return shared if shared.is_file() else ROOT / "workbook" / "schema" / "customui14.xsd"


@pytest.fixture(scope="module")
def modules() -> dict[str, str]:
    """VBA module name -> source, as olevba reads them."""
    parser = VBA_Parser(str(WORKBOOK))
    try:
        return {name.rsplit(".", 1)[0]: code for _, _, name, code in parser.extract_all_macros()}
    finally:
        parser.close()


def parts(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_workbook_is_up_to_date_with_its_build(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("workbook_build", ROOT / "workbook" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    fresh = build.build(tmp_path / WORKBOOK.name)
    committed, rebuilt = parts(WORKBOOK), parts(fresh)
    assert sorted(committed) == sorted(rebuilt)
    stale = [name for name in committed if committed[name] != rebuilt[name]]
    assert stale == [], f"workbook/OptOuts.xlsm is out of date: run python workbook/build.py ({stale})"
    assert fresh.read_bytes() == WORKBOOK.read_bytes()  # the build is deterministic to the byte


def test_olevba_lists_the_modules_and_their_macros(modules: dict[str, str]) -> None:
    assert {"xlwings", "Ribbon", "xlwings_udfs", "FunctionHelp", "ThisWorkbook", "Dictionary"} <= set(modules)
    assert "Module1" not in modules  # the template's sample macro is gone
    assert "xlwings64-" in modules["xlwings"]  # the standalone module: no add-in needed
    subs = re.findall(r"^Sub (\w+)\(control As IRibbonControl\)", modules["Ribbon"], re.MULTILINE)
    assert subs == ["RefreshOptOuts", "SignIn", "SignOut"]


def test_every_ribbon_button_calls_an_existing_callback(modules: dict[str, str]) -> None:
    ribbon = parts(WORKBOOK)["customUI/customUI14.xml"].decode()
    actions = re.findall(r'onAction="([^"]+)"', ribbon)
    assert len(actions) == 3
    for action in actions:
        module, sub = action.split(".")
        assert re.search(rf"^Sub {sub}\(control As IRibbonControl\)", modules[module], re.MULTILINE), action


def test_every_runpython_call_names_an_existing_python_function(modules: dict[str, str]) -> None:
    calls = re.findall(r'RunPython "([^"]+)"', modules["Ribbon"])
    assert len(calls) == 3
    for call in calls:
        imported = re.fullmatch(r"import ([\w.]+) as (\w+); \2\.(\w+)\(\)", call)
        assert imported, call
        module = importlib.import_module(imported.group(1))
        function = getattr(module, imported.group(3))
        assert callable(function) and all(
            p.default is not p.empty for p in inspect.signature(function).parameters.values()
        )


def test_udf_wrappers_declare_each_function_with_its_arguments(modules: dict[str, str]) -> None:
    wrappers = modules["xlwings_udfs"]
    declared = dict(re.findall(r"^Function (\w+)\(([^)]*)\)", wrappers, re.MULTILINE))
    assert set(declared) == set(excel.udf_names())
    for name in excel.udf_names():
        parameters = inspect.signature(getattr(excel, name)).parameters.values()
        expected = ", ".join(("Optional " if p.default is not p.empty else "") + p.name for p in parameters)
        assert declared[name] == expected, name
        assert f'XLPy.CallUDF("ccoptout_xl.excel", "{name}"' in wrappers
    assert "Application.Volatile" not in wrappers  # recalculated when inputs change, not on every edit


def test_the_campaign_function_has_its_wrapper(modules: dict[str, str]) -> None:
    wrappers = modules["xlwings_udfs"]
    assert re.search(r"^Function OPTOUTS_BY_CAMPAIGN\(since, Optional until_date\)\r?$", wrappers, re.MULTILINE)
    body = wrappers[wrappers.index("Function OPTOUTS_BY_CAMPAIGN(") :]
    body = body[: body.index("End Function")]
    assert 'XLPy.CallUDF("ccoptout_xl.excel", "OPTOUTS_BY_CAMPAIGN", Array(since, until_date)' in body


def vba_strings(text: str) -> list[str]:
    """The string literals in a piece of VBA, decoded ("" is one quote)."""
    return [literal.replace('""', '"') for literal in re.findall(r'"((?:[^"]|"")*)"', text)]


def macro_options(module: str) -> dict[str, tuple[str, str, list[str]]]:
    """Function name -> (description, category, argument descriptions) of each MacroOptions call in ``module``."""
    joined = re.sub(r" _\r?\n\s*", " ", module)  # VBA's line continuations
    calls = re.findall(r"^\s*Application\.MacroOptions (.*)$", joined, re.MULTILINE)
    found = {}
    for call in calls:
        parsed = re.fullmatch(
            r'Macro:=book & "(\w+)", Description:=("(?:[^"]|"")*"), Category:=("(?:[^"]|"")*")'
            r"(?:, ArgumentDescriptions:=Array\((.*)\))?",
            call.strip(),
        )
        assert parsed, call
        name, description, category, arguments = parsed.groups()
        found[name] = (vba_strings(description)[0], vba_strings(category)[0], vba_strings(arguments or ""))
    assert len(found) == len(calls)
    return found


def test_insert_function_help_is_set_on_open_from_the_python_texts(modules: dict[str, str]) -> None:
    # Workbook_Open runs DescribeFunctions, which gives each function what xlwings' "Import Functions" would.
    opening = r"^Private Sub Workbook_Open\(\)\r?\n(\s*'.*\r?\n)*\s*DescribeFunctions\r?\nEnd Sub\r?$"
    assert re.search(opening, modules["ThisWorkbook"], re.MULTILINE)
    help_module = modules["FunctionHelp"]
    assert re.search(r"^Public Sub DescribeFunctions\(\)\r?$", help_module, re.MULTILINE)
    described = macro_options(help_module)
    assert list(described) == list(excel.udf_names())
    for name, (description, category, arguments) in described.items():
        function = getattr(excel, name)
        parameters = inspect.signature(function).parameters
        assert description == function.__doc__ and category == excel.FUNCTION_CATEGORY == "Opt-outs", name
        assert arguments == [excel.ARGUMENT_HELP[parameter] for parameter in parameters], name
    description, category, arguments = described["OPTOUTS_BY_CAMPAIGN"]
    assert description.startswith("Opt-outs per campaign from since to until_date (exclusive)")
    assert category == "Opt-outs" and arguments == [excel.ARGUMENT_HELP["since"], excel.ARGUMENT_HELP["until_date"]]
    # The workbook's own functions, even with another workbook active; an apostrophe in its name doubled.
    assert 'book = "\'" & Replace(ThisWorkbook.Name, "\'", "\'\'") & "\'!"' in help_module


def test_insert_function_help_never_bothers_the_user(modules: dict[str, str]) -> None:
    code = modules["FunctionHelp"]
    body = code[code.index("Public Sub DescribeFunctions()") :]
    guard, first_call = body.index("On Error Resume Next"), body.index("Application.MacroOptions")
    assert guard < first_call and body.index("On Error GoTo 0") > body.rindex("Application.MacroOptions")
    # Describing is no change to save (no "Save changes?" on closing an untouched workbook)...
    assert body.index("wasSaved = ThisWorkbook.Saved") < first_call < body.index("ThisWorkbook.Saved = wasSaved")
    # ...and macOS, where xlwings has no worksheet functions, is left out.
    assert re.search(r"^#If Mac Then\r?\n(\s*'.*\r?\n)*#Else\r?$", body, re.MULTILINE)
    assert body.index("#Else") < first_call and body.rindex("#End If") > body.rindex("Application.MacroOptions")


def test_insert_function_texts_fit_what_macro_options_takes() -> None:
    texts = [getattr(excel, name).__doc__ or "" for name in excel.udf_names()] + list(excel.ARGUMENT_HELP.values())
    for text in texts:
        assert text and text.isascii() and "\n" not in text and len(text) <= 255 and "``" not in text, text
    parameters = {p for name in excel.udf_names() for p in inspect.signature(getattr(excel, name)).parameters}
    assert parameters == set(excel.ARGUMENT_HELP)


# VBA's reserved words (MS-VBAL 3.3.5.2): an argument named like one stops the whole module from compiling.
VBA_RESERVED = set(
    """
abs addressof and any as attribute boolean byref byte byval call case cbool cbyte ccur cdate cdbl cdec cint circle
clng clnglng clngptr close const csng cstr currency cvar cverr date debug decimal declare defbool defbyte defcur
defdate defdbl defdec defint deflng deflnglng deflngptr defobj defsng defstr defvar dim do double each else elseif
empty end endif enum eqv erase error event exit false fix for friend function get global gosub goto if imp
implements in input int integer is lbound len lenb let like lock long longlong longptr loop lset me mod new next
not nothing null on open option optional or paramarray preserve print private property pset public put raiseevent
randomize redim rem resume return rset scale seek select set sgn single spc static step stop string sub tab then
to true type typeof ubound until variant wend while with withevents write xor
""".split()
)


def test_udf_argument_names_are_not_vba_keywords(modules: dict[str, str]) -> None:
    declared = re.findall(r"^Function \w+\(([^)]*)\)", modules["xlwings_udfs"], re.MULTILINE)
    names = {part.split()[-1].lower() for arguments in declared for part in arguments.split(",") if part.strip()}
    assert names and not names & VBA_RESERVED, names & VBA_RESERVED


def test_ribbon_validates_and_is_linked() -> None:
    contents = parts(WORKBOOK)
    xmlschema.XMLSchema(str(schema_path())).validate(contents["customUI/customUI14.xml"].decode())
    relationships = contents["_rels/.rels"].decode()
    assert re.search(rf'Type="{re.escape(RIBBON_TYPE)}" Target="customUI/customUI14.xml"', relationships)


def test_openpyxl_finds_the_table_named_cells_and_settings() -> None:
    book = openpyxl.load_workbook(WORKBOOK, keep_vba=True)
    try:
        assert book.sheetnames == [excel.OPTOUTS_SHEET, "xlwings.conf", excel.SETTINGS_SHEET, "How to use"]
        sheet = book[excel.OPTOUTS_SHEET]
        table = sheet.tables[excel.TABLE]
        assert table.ref == "A1:I2"  # one empty row, Refresh resizes it
        assert [cell.value for cell in sheet[1]] == excel.TABLE_HEADER == columns.headers()
        assert excel.TABLE_HEADER == [
            "Email", "First name", "Last name", "Opted out", "Source", "Reason", "Campaign", "Lists", "Contact ID"
        ]  # fmt: skip
        assert [column.name for column in table.tableColumns] == excel.TABLE_HEADER
        for name in (excel.SINCE, excel.UNTIL, excel.LIMIT, excel.INCLUDE_DELETED, excel.FULL_SYNC,
                     excel.LAST_REFRESHED, excel.ROW_COUNT, excel.STATUS):  # fmt: skip
            destinations = list(book.defined_names[name].destinations)
            assert destinations[0][0] == excel.SETTINGS_SHEET, name
        conf = {row[0]: row[1] for row in book["xlwings.conf"].iter_rows(values_only=True) if row[0]}
        assert conf["UDF Modules"] == "ccoptout_xl.excel"
        validations = book[excel.SETTINGS_SHEET].data_validations.dataValidation
        assert {str(v.sqref) for v in validations} == {"B2", "B3", "B4", "B5", "B6"}
    finally:
        book.vba_archive.close()


def test_workbook_command_sets_this_python_and_keeps_the_rest(tmp_path: Path, capsys) -> None:
    dest = tmp_path / "Mine.xlsm"
    assert main(["workbook", "--dest", str(dest)]) == 0
    assert str(dest) in capsys.readouterr().out
    built, written = parts(WORKBOOK), parts(dest)
    changed = [name for name in built if built[name] != written[name]]
    assert changed == ["xl/worksheets/sheet2.xml"]  # only the xlwings.conf sheet
    book = openpyxl.load_workbook(dest, keep_vba=True)
    try:
        conf = {row[0]: row[1] for row in book["xlwings.conf"].iter_rows(values_only=True) if row[0]}
    finally:
        book.vba_archive.close()
    assert conf["Interpreter_Win"] == conf["Interpreter_Mac"] == sys.executable
    assert main(["workbook", "--dest", str(tmp_path / "Mine.xlsx")]) == 2


def test_vendored_ribbon_schema_is_microsofts() -> None:
    shared = ROOT.parent / "shared" / "office" / "customui14.xsd"
    if not shared.is_file():
        pytest.skip("shared/office is not beside this checkout")
    assert (ROOT / "workbook" / "schema" / "customui14.xsd").read_bytes() == shared.read_bytes()
