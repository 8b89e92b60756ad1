"""One column schema: the report's ``OptOuts`` table, the workbook's ``OptOuts`` table, what Refresh writes into it
and what the worksheet functions spill all have the same columns in the same order, read back from real files."""

from __future__ import annotations

import ast
import datetime as dt
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from dateutil import tz as dateutil_tz
from openpyxl.utils import get_column_letter

from ccoptout_xl import columns, excel
from ccoptout_xl.formats import neutralise
from ccoptout_xl.optouts import OptOut
from ccoptout_xl.report import write_report
from ccoptout_xl.sandbox import AccountSpec, Sandbox

from .conftest import ANCHOR, sandbox_as_api
from .test_excel import FakeBook, sign_in_with_campaigns, truth_campaigns, truth_with_campaigns

ROOT = Path(__file__).resolve().parents[1]
WORKBOOK = ROOT / "workbook" / "OptOuts.xlsm"
LOCAL = dateutil_tz.tzlocal()
EXCEL_EPOCH = dt.datetime(1899, 12, 30)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A sandbox that Refresh reads with a sign-in that allows campaign reports, so the Campaign column is filled."""
    spec = AccountSpec(contacts=400, seed=5, unsubscribed_share=0.3, anchor=ANCHOR)
    with sandbox_as_api(spec, monkeypatch, tmp_path / "cache") as sb:
        yield sign_in_with_campaigns(sb, monkeypatch)


def table_of(path: Path, sheet_name: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The ``OptOuts`` table of a real file, as openpyxl reads it back: its header and its data rows. The table's
    own column names must be the header cells (Excel repairs a file where they differ)."""
    book = openpyxl.load_workbook(path, keep_vba=path.suffix == ".xlsm")
    try:
        sheet = book[sheet_name]
        table = sheet.tables["OptOuts"]
        header = [column.name for column in table.tableColumns]
        rows = [tuple(cell.value for cell in row) for row in sheet[table.ref]]
    finally:
        if book.vba_archive is not None:
            book.vba_archive.close()
    assert list(rows[0]) == header
    return header, rows[1:]


def write_the_report(sandbox: Sandbox, folder: Path) -> Path:
    """The report asked for campaigns (the workbook's table always has the Campaign column), of the ground truth."""
    names = {item["list_id"]: item["name"] for item in sandbox.account.lists()}
    path = folder / "report.xlsx"
    write_report(truth_with_campaigns(sandbox), path, zone=LOCAL, list_names=names, campaigns=truth_campaigns(sandbox))
    return path


def from_serial(value: float) -> dt.datetime:
    return EXCEL_EPOCH + dt.timedelta(milliseconds=round(value * 86_400_000))


def shown(value: Any) -> Any:
    """What Excel shows for a value Refresh writes: a date-time for the serial, text without the apostrophe prefix
    that keeps formula-like text from running (Excel does not show it)."""
    if isinstance(value, float):
        return from_serial(value)
    if isinstance(value, str) and value.startswith("'") and neutralise(value[1:]) == value:
        return value[1:]
    return value


# -- the drift defect: the two OptOuts tables had different column orders ----------------------------------------


def test_the_report_the_workbook_and_refresh_have_one_header(sandbox: Sandbox, tmp_path: Path) -> None:
    report_header, _ = table_of(write_the_report(sandbox, tmp_path), "Opt-outs")
    workbook_header, _ = table_of(WORKBOOK, excel.OPTOUTS_SHEET)
    assert report_header == workbook_header
    assert excel.TABLE_HEADER == workbook_header  # the order Refresh writes its rows in


def test_refresh_fills_each_column_with_what_the_report_shows_under_that_header(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    _, report_rows = table_of(write_the_report(sandbox, tmp_path), "Opt-outs")
    workbook_header, _ = table_of(WORKBOOK, excel.OPTOUTS_SHEET)
    book = FakeBook()
    excel.refresh(book)
    assert book.value(excel.STATUS).startswith("OK:"), book.value(excel.STATUS)
    refreshed = book.sheets[excel.OPTOUTS_SHEET].rows()
    assert len(refreshed) == len(report_rows) > 50
    report_header = table_of(tmp_path / "report.xlsx", "Opt-outs")[0]
    for ours, theirs in zip(refreshed, report_rows, strict=True):
        in_workbook = {name: shown(value) for name, value in zip(workbook_header, ours, strict=True)}
        in_report = {name: "" if value is None else value for name, value in zip(report_header, theirs, strict=True)}
        assert in_workbook == in_report
        assert all(value == neutralise(shown(value)) for value in ours if isinstance(value, str))  # never a formula
    reasons = [row[workbook_header.index("Reason")] for row in refreshed]
    assert any(reason.startswith("'=") for reason in reasons)  # the account has formula-like reasons
    assert len({row[workbook_header.index("Campaign")] for row in refreshed}) > 5  # filled, and compared above


def test_worksheet_functions_spill_the_table_columns_they_can_give_in_the_same_order(sandbox: Sandbox) -> None:
    book = FakeBook()
    excel.refresh(book)  # also syncs the local store the functions read
    table = book.sheets[excel.OPTOUTS_SHEET].rows()
    spilled = excel.OPTOUTS_SINCE("1990-01-01")
    header = spilled[0]
    assert header == [name for name in excel.TABLE_HEADER if name in header]  # a subsequence of the table's
    assert {"Email", "Opted out", "Source", "Reason"} <= set(header)
    assert len(spilled) - 1 == len(table)
    positions = [excel.TABLE_HEADER.index(name) for name in header]
    for row, table_row in zip(spilled[1:], table, strict=True):
        assert row == [shown(table_row[i]) for i in positions]


# -- the schema ------------------------------------------------------------------------------------------------


def test_the_schema_states_the_order_and_what_worksheet_functions_leave_out() -> None:
    assert columns.headers() == [
        "Email", "First name", "Last name", "Opted out", "Source", "Reason", "Campaign", "Lists", "Contact ID"
    ]  # fmt: skip
    assert [c.header for c in columns.COLUMNS if c.number_format] == ["Opted out"]
    left_out = [c for c in columns.COLUMNS if c not in columns.FUNCTION_COLUMNS]
    assert [c.header for c in left_out] == ["Campaign", "Lists"] and all(c.not_in_functions for c in left_out)
    assert excel.FUNCTION_HEADER == ["Email", "First name", "Last name", "Opted out", "Source", "Reason", "Contact ID"]
    assert list(columns.FUNCTION_COLUMNS) == [c for c in columns.COLUMNS if not c.not_in_functions]
    assert excel.TABLE == columns.TABLE_NAME == "OptOuts"


def test_each_column_reads_its_value_from_the_record() -> None:
    moment = dt.datetime(2026, 5, 3, 14, 2, 11, 734_000, tzinfo=dt.timezone.utc)
    optout = OptOut("c-1", "a@example.com", "Ann", "Lee", moment, "Contact", None, ("l-1", "l-2"))
    values = dict(zip(columns.headers(), (c.value(optout, {"l-2": "News"}) for c in columns.COLUMNS), strict=True))
    assert values == {
        "Email": "a@example.com",
        "First name": "Ann",
        "Last name": "Lee",
        "Opted out": moment,  # the aware instant, milliseconds and all: each front end shows it in its zone
        "Source": "Contact",
        "Reason": "",
        "Campaign": "",  # through no campaign (or not asked for)
        "Lists": "l-1, News",  # an id where the name is unknown
        "Contact ID": "c-1",
    }
    assert [c.value(optout) for c in columns.COLUMNS][7] == "l-1, l-2"  # no names: the ids
    through = replace(optout, campaign_id="k-1", campaign_name="-30% on everything")
    assert columns.CAMPAIGN.value(through) == "-30% on everything"  # as it is: each front end neutralises it
    assert excel.table_row(through)[excel.TABLE_HEADER.index("Campaign")] == "'-30% on everything"


def column_formats(path: Path, sheet_name: str) -> list[tuple[float, str | None]]:
    """(width, number format) of the table's columns: the report sets the format on the date cells, the workbook
    on the column (its table is empty until a Refresh)."""
    book = openpyxl.load_workbook(path, keep_vba=path.suffix == ".xlsm")
    try:
        sheet = book[sheet_name]
        found = []
        for index, cell in enumerate(sheet[2], start=1):
            letter = get_column_letter(index)
            number_format = sheet.column_dimensions[letter].number_format
            if cell.is_date:
                number_format = cell.number_format
            found.append((sheet.column_dimensions[letter].width, None if number_format == "General" else number_format))
    finally:
        if book.vba_archive is not None:
            book.vba_archive.close()
    return found


def test_the_report_and_the_workbook_take_widths_and_formats_from_the_schema(sandbox: Sandbox, tmp_path) -> None:
    expected = [(c.width, c.number_format) for c in columns.COLUMNS]
    assert column_formats(write_the_report(sandbox, tmp_path), "Opt-outs") == expected
    assert column_formats(WORKBOOK, excel.OPTOUTS_SHEET) == expected


def test_the_schema_is_a_leaf_module() -> None:
    tree = ast.parse((ROOT / "ccoptout_xl" / "columns.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    package = {name for name in imported if name.startswith(".") or name.startswith("ccoptout_xl")}
    assert package == {".optouts"}
    assert all(name.split(".")[0] in sys.stdlib_module_names for name in imported - package)
