"""Build ``workbook/OptOuts.xlsm`` from the sources beside this file. Never edit the workbook by hand.

    pip install -e ".[test]"          # openpyxl, pyOpenVBA, xmlschema, xlwings (pinned)
    python workbook/build.py          # writes workbook/OptOuts.xlsm; --out PATH to write elsewhere

Steps, in this order (each later one would undo an earlier one otherwise):

1. Start from the installed xlwings' ``quickstart_standalone.xlsm``: it embeds xlwings' VBA module for exactly this
   xlwings version, so no add-in is needed.
2. openpyxl (``keep_vba=True``): the Opt-outs sheet with an empty ``OptOuts`` table (its columns, widths and
   number formats from ``ccoptout_xl.columns``, as in the report), the Settings sheet with named cells and data
   validation, the ``xlwings.conf`` sheet, the How to use sheet.
3. pyOpenVBA: the ``Ribbon`` module (``src/Ribbon.bas``); ``xlwings_udfs``, the wrappers that xlwings' "Import
   Functions" would write, made by xlwings' own generator, so formulas work on first open; ``FunctionHelp``, the
   ``Application.MacroOptions`` calls that "Import Functions" would make (description, category, argument help,
   from the functions' docstrings and decorators), run by ``ThisWorkbook``'s Workbook_Open (``src/ThisWorkbook.cls``).
4. The ribbon part ``customUI/customUI14.xml`` and its relationship, validated against Microsoft's schema, added
   last (an openpyxl save drops the relationship), and the zip rewritten deterministically (fixed timestamps
   and order), so the same sources give the same bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import io
import re
import sys
import tempfile
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pyopenvba
import xlwings
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.table import Table, TableStyleInfo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ccoptout_xl import columns, excel  # noqa: E402 - the columns, sheet and name constants are the package's

OUTPUT = HERE / "OptOuts.xlsm"
SOURCES = HERE / "src"
SCHEMA = HERE / "schema" / "customui14.xsd"
TEMPLATE = Path(xlwings.__file__).parent / "quickstart_standalone.xlsm"
UDF_MODULE = "ccoptout_xl.excel"
RIBBON_PART = "customUI/customUI14.xml"
RIBBON_RELATIONSHIP = "http://schemas.microsoft.com/office/2007/relationships/ui/extensibility"
FIXED_TIME = dt.datetime(2026, 1, 1)  # docProps dates: the build must not depend on when it ran
ZIP_TIME = (1980, 1, 1, 0, 0, 0)

# (named cell, label, default, number format, validation or None): inputs first, then what Refresh reports.
SETTINGS = [
    (excel.SINCE, "Since (date, inclusive)", None, "yyyy-mm-dd", "date"),
    (excel.UNTIL, "Until (date, exclusive)", None, "yyyy-mm-dd", "date"),
    (excel.LIMIT, "Limit (newest N rows)", 1000, "0", "whole"),
    (excel.INCLUDE_DELETED, "Include deleted contacts", False, "General", "flag"),
    (excel.FULL_SYNC, "Full sync (read everything; weekly)", False, "General", "flag"),
    (None, None, None, None, None),
    (excel.LAST_REFRESHED, "Last refreshed", None, "yyyy-mm-dd hh:mm:ss", None),
    (excel.ROW_COUNT, "Rows", None, "#,##0", None),
    (excel.STATUS, "Status", "Not refreshed yet: Opt-outs tab > Sign in, then Refresh.", "General", None),
]


def build(out: Path = OUTPUT) -> Path:
    """Build the workbook at ``out`` (atomically) and return the path."""
    with tempfile.TemporaryDirectory() as folder:
        sheets, macros = Path(folder, "sheets.xlsm"), Path(folder, "macros.xlsm")
        build_sheets(TEMPLATE, sheets)
        with real_udfs() as (udfs, module):
            modules = {
                "Ribbon": read(SOURCES / "Ribbon.bas"),
                "xlwings_udfs": udf_wrappers(udfs, module, out.name),
                "FunctionHelp": function_help(module),
            }
        add_vba(sheets, macros, modules, this_workbook=read(SOURCES / "ThisWorkbook.cls"))
        finished = finish(macros, read(SOURCES / "customUI14.xml"))
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_bytes(finished)
    temporary.replace(out)
    return out


def build_sheets(template: Path, out: Path) -> None:
    book = openpyxl.load_workbook(template, keep_vba=True)

    optouts = book["Sheet1"]  # the template's first sheet keeps its VBA document module
    optouts.title = excel.OPTOUTS_SHEET
    for index, column in enumerate(columns.COLUMNS, start=1):  # the report's columns, in its order
        optouts.cell(1, index, column.header)
        dimension = optouts.column_dimensions[get_column_letter(index)]
        dimension.width = column.width
        if column.number_format:  # what Refresh writes there is a serial number: the format makes it a date-time
            dimension.number_format = column.number_format
    table = Table(displayName=columns.TABLE_NAME, ref=f"A1:{get_column_letter(len(columns.COLUMNS))}2")
    table.tableStyleInfo = TableStyleInfo(name="TableStyleMedium2", showRowStripes=True)
    optouts.add_table(table)
    optouts.freeze_panes = "A2"

    settings = book.create_sheet(excel.SETTINGS_SHEET)
    settings.column_dimensions["A"].width = 28
    settings.column_dimensions["B"].width = 60
    settings["A1"], settings["B1"] = "Setting", "Value"
    settings["A1"].font = settings["B1"].font = Font(bold=True)
    for row, (name, label, default, number_format, validation) in enumerate(SETTINGS, start=2):
        if name is None:
            continue
        settings.cell(row, 1, label)
        cell = settings.cell(row, 2, default)
        cell.number_format = number_format
        book.defined_names[name] = DefinedName(name, attr_text=f"'{excel.SETTINGS_SHEET}'!$B${row}")
        if validation:
            rule = {
                "date": DataValidation(type="date", operator="greaterThan", formula1="DATE(1995,1,1)"),
                "whole": DataValidation(type="whole", operator="between", formula1="1", formula2="10000000"),
                "flag": DataValidation(type="list", formula1='"TRUE,FALSE"'),
            }[validation]
            rule.allow_blank = True
            rule.error, rule.errorTitle, rule.showErrorMessage = f"Not a valid value for {label}.", label, True
            settings.add_data_validation(rule)
            rule.add(cell.coordinate)

    conf = book["_xlwings.conf"]  # xlwings reads its settings from a sheet named exactly "xlwings.conf"
    conf.title = "xlwings.conf"
    conf_values = {"Interpreter_Win": "python", "Interpreter_Mac": "python3", "UDF Modules": UDF_MODULE}
    for key, value in conf.iter_rows(min_row=1, max_row=20, max_col=2):
        if key.value in conf_values:  # `ccoptout-xl workbook` puts this computer's interpreter in B1 and B2
            value.value = conf_values[key.value]
    for row in range(11, conf.max_row + 1):  # the template's "rename this sheet" instructions
        conf.cell(row, 1).value = None

    how = book.create_sheet("How to use")
    how.column_dimensions["A"].width = 120
    for row, line in enumerate(read(SOURCES / "how-to-use.txt").splitlines(), start=1):
        how.cell(row, 1, line)
    how["A1"].font = Font(bold=True, size=14)

    book.active = book.sheetnames.index(excel.OPTOUTS_SHEET)
    book.properties.creator = book.properties.lastModifiedBy = "ccoptout-xl build"
    book.properties.created = FIXED_TIME
    book.save(out)
    book.vba_archive.close()


@contextlib.contextmanager
def real_udfs() -> Iterator[tuple[Any, types.ModuleType]]:
    """``xlwings.udfs`` and the UDF module imported afresh with xlwings' real decorators, as on Windows.

    ``xlwings.udfs`` imports pywin32, absent here: stand-ins are put in place for the import. xlwings' decorators
    do nothing on Linux, so the real ones are put in place while the UDF module is imported, which gives each
    function the ``__xlfunc__`` that "Import Functions" reads. Everything is put back afterwards.
    """
    stubs = {name: types.ModuleType(name) for name in ("pythoncom", "pywintypes", "win32com", "win32com.client")}
    stubs["pythoncom"].CoInitialize = lambda: None
    stubs["pywintypes"].com_error = type("com_error", (Exception,), {})
    stubs["win32com.client"].Dispatch = lambda *args, **kwargs: None
    stubs["win32com"].client = stubs["win32com.client"]
    saved_modules = {name: sys.modules.get(name) for name in [*stubs, UDF_MODULE, "xlwings.udfs"]}
    saved_decorators = {name: getattr(xlwings, name) for name in ("func", "arg", "ret", "sub", "script")}
    sys.modules.update(stubs)
    try:
        import xlwings.udfs as udfs

        xlwings.func, xlwings.arg, xlwings.ret = udfs.xlfunc, udfs.xlarg, udfs.xlret
        xlwings.sub = xlwings.script = udfs.xlsub
        sys.modules.pop(UDF_MODULE, None)
        yield udfs, importlib.import_module(UDF_MODULE)
    finally:
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        package, _, attribute = UDF_MODULE.rpartition(".")
        if saved_modules[UDF_MODULE] is not None:  # the import above also rebound the package's attribute
            setattr(sys.modules[package], attribute, saved_modules[UDF_MODULE])
        for name, decorator in saved_decorators.items():
            setattr(xlwings, name, decorator)


def udf_wrappers(udfs: Any, module: types.ModuleType, workbook_name: str) -> str:
    """The ``xlwings_udfs`` module that xlwings' "Import Functions" would write, from xlwings' own generator."""
    text = io.StringIO()
    text.write('Attribute VB_Name = "xlwings_udfs"\n')  # the header xlwings.udfs.import_udfs writes
    text.write("'Autogenerated code by xlwings - changes will be lost with next import!\n")
    text.write("""#Const App = "Microsoft Excel" 'Adjust when using outside of Excel\n""")
    udfs.generate_vba_wrapper(UDF_MODULE, module, text, types.SimpleNamespace(Name=workbook_name))
    return text.getvalue()


def function_help(module: types.ModuleType) -> str:
    """The ``FunctionHelp`` module: ``DescribeFunctions`` makes, for each worksheet function, the
    ``Application.MacroOptions`` call that xlwings' "Import Functions" makes after writing the wrappers
    (``xlwings.udfs.import_udfs``): the docstring as its description, its category, each argument's ``doc``.
    The texts are the functions' own (``__xlfunc__``), so Insert Function says what the Python says.

    Prebuilt wrappers are never imported, so ThisWorkbook's Workbook_Open runs this on every open. A failure
    (a hidden workbook, an Excel without argument help) only leaves the help out: it never shows a message.
    Describing the functions is no change to save, so the workbook's Saved state is put back. macOS is left out:
    xlwings' worksheet functions are Windows-only.
    """
    lines = [
        'Attribute VB_Name = "FunctionHelp"',
        "Option Explicit",
        "Option Private Module",
        "",
        f"' Generated by workbook/build.py from {UDF_MODULE} (docstrings, @xw.func category, @xw.arg doc).",
        "' Do not edit: the next build overwrites it.",
        "' What Insert Function shows for each worksheet function, as xlwings' \"Import Functions\" would set it.",
        "' ThisWorkbook's Workbook_Open runs DescribeFunctions; a failure here never bothers the user.",
        "",
        "Public Sub DescribeFunctions()",
        "#If Mac Then",
        "    ' xlwings' worksheet functions are Windows-only: nothing to describe.",
        "#Else",
        "    Dim wasSaved As Boolean",
        "    Dim book As String",
        "    On Error Resume Next ' a function without its help is better than a message on opening",
        "    wasSaved = ThisWorkbook.Saved",
        '    book = "\'" & Replace(ThisWorkbook.Name, "\'", "\'\'") & "\'!"',
    ]
    for name in excel.udf_names():
        spec = getattr(module, name).__xlfunc__
        where = f"{UDF_MODULE}.{name}"
        if getattr(module, name).__doc__ is None:
            raise SystemExit(f"{where} has no docstring: it is the function's description in Insert Function.")
        arguments = [argument for argument in spec["args"] if not argument["vba"]]
        for argument in arguments:
            if argument["doc"].startswith("Positional argument "):  # xlwings' default: no help given
                raise SystemExit(f"{where}: give the argument {argument['name']!r} a doc in its @xw.arg.")
        call = [
            f'    Application.MacroOptions Macro:=book & "{name}", _',
            f"        Description:={vba_text(spec['ret']['doc'], where)}, _",
            f"        Category:={vba_text(spec['category'], where)}",
        ]
        if arguments:
            call[-1] += ", _"
            call.append("        ArgumentDescriptions:=Array( _")
            texts = [vba_text(argument["doc"], f"{where}({argument['name']})") for argument in arguments]
            call += [f"            {text}, _" for text in texts[:-1]] + [f"            {texts[-1]})"]
        lines += call
    lines += [
        "    ThisWorkbook.Saved = wasSaved ' describing the functions is no change to save",
        "    On Error GoTo 0",
        "#End If",
        "End Sub",
    ]
    return "\n".join(lines) + "\n"


def vba_text(text: str, where: str) -> str:
    """``text`` as a VBA string literal, once it is what ``Application.MacroOptions`` takes: one line of at most
    255 characters (Excel's limit for a description and for each argument's help), ASCII (a module is stored in
    the project's code page)."""
    if "\n" in text or "\r" in text or len(text) > 255 or not text.isascii() or not text.strip():
        raise SystemExit(f"{where}: Insert Function's text must be one line of ASCII, 1-255 characters: {text!r}")
    return '"' + text.replace('"', '""') + '"'


def add_vba(source: Path, out: Path, modules: dict[str, str], this_workbook: str) -> None:
    """Add ``modules`` (name -> source) and give the ``ThisWorkbook`` document module the code ``this_workbook``
    (its attributes stay the template's)."""
    with pyopenvba.ExcelFile(source) as workbook:
        project = workbook.vba_project()
        project.delete_module("Module1")  # the template's sample macro
        for name, code in modules.items():
            project.add_module(name, crlf(code))
        project.get_module("ThisWorkbook").body = crlf(this_workbook)
        workbook.save(out)
    report = pyopenvba.check_file(out)
    if not report.ok:
        raise SystemExit(f"pyOpenVBA found problems in the VBA project: {report.issues}")


def finish(source: Path, ribbon: str) -> bytes:
    """Add the ribbon part and its relationship, and rewrite the zip with fixed times and order."""
    import xmlschema

    xmlschema.XMLSchema(str(SCHEMA)).validate(ribbon)  # Excel silently drops a ribbon that does not validate
    with zipfile.ZipFile(source) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    parts[RIBBON_PART] = ribbon.encode("utf-8")
    relationships = re.sub(r"<Relationship [^>]*ui/extensibility\"[^>]*/>", "", parts["_rels/.rels"].decode())
    link = f'<Relationship Id="rIdCustomUI14" Type="{RIBBON_RELATIONSHIP}" Target="{RIBBON_PART}"/>'
    parts["_rels/.rels"] = relationships.replace("</Relationships>", link + "</Relationships>").encode()
    stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ")
    core = parts["docProps/core.xml"].decode()
    parts["docProps/core.xml"] = re.sub(
        r"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)", rf"\g<1>{stamp}\g<2>", core
    ).encode()
    order = ["[Content_Types].xml", "_rels/.rels", *sorted(set(parts) - {"[Content_Types].xml", "_rels/.rels"})]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in order:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 0
            archive.writestr(info, parts[name], compresslevel=6)
    return out.getvalue()


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"where to write (default: {OUTPUT})")
    print(build(parser.parse_args().out))
