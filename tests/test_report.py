"""The .xlsx report: its table, dates, text safety, summary and chart, atomic writing, the demo command."""

from __future__ import annotations

import csv
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zoneinfo
from pathlib import Path

import openpyxl
import pytest

from ccoptout_xl import __version__
from ccoptout_xl.cli import main
from ccoptout_xl.exceptions import OutputError
from ccoptout_xl.optouts import OptOut
from ccoptout_xl.report import COLUMNS, TABLE_NAME, ReportInfo, write_report
from ccoptout_xl.sandbox import Sandbox

from .conftest import truth

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
HEADERS = [name for name, _ in COLUMNS]


@pytest.fixture(scope="module")
def report(shared_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of every opt-out of the shared account, made by the command line."""
    path = tmp_path_factory.mktemp("report") / "optouts.xlsx"
    env = {"CCOPTOUT_API_URL": shared_sandbox.base_url, "CCOPTOUT_ACCESS_TOKEN": shared_sandbox.token}
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        assert main(["report", "--tz", "America/New_York", "-o", str(path)]) == 0
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return path


def rows_of(sheet) -> list[tuple]:
    return list(sheet.iter_rows(values_only=True))


def test_optouts_sheet_is_an_excel_table_newest_first(report: Path, shared_sandbox: Sandbox) -> None:
    book = openpyxl.load_workbook(report)
    assert book.sheetnames == ["Opt-outs", "Summary", "About"]
    sheet = book["Opt-outs"]
    expected = truth(shared_sandbox)
    assert list(sheet.tables) == [TABLE_NAME]
    assert sheet.tables[TABLE_NAME].ref == f"A1:H{len(expected) + 1}"
    assert [c.name for c in sheet.tables[TABLE_NAME].tableColumns] == HEADERS
    assert [cell.value for cell in sheet[1]] == HEADERS
    assert sheet.freeze_panes == "A2"
    assert "Contact" in sheet["E1"].comment.text and "Account" in sheet["E1"].comment.text
    body = rows_of(sheet)[1:]
    assert [row[7] for row in body] == [o.contact_id for o in expected]
    names = {item["list_id"]: item["name"] for item in shared_sandbox.account.lists()}
    for row, optout in zip(body, expected, strict=True):
        assert row[0] == optout.email
        assert row[3] == optout.opt_out_date.astimezone(NEW_YORK).replace(tzinfo=None)  # local time, a real date
        assert row[4] == optout.opt_out_source
        assert row[6] == (", ".join(names[i] for i in optout.list_ids) or None)
    assert all(cell.is_date and cell.number_format == "yyyy-mm-dd hh:mm" for cell in sheet["D"][1:])


def test_text_that_looks_like_a_formula_stays_text(report: Path, shared_sandbox: Sandbox) -> None:
    reasons = {o.contact_id: o.opt_out_reason for o in truth(shared_sandbox)}
    formula_like = {cid for cid, reason in reasons.items() if reason and reason.startswith(("=", "+", "-", "@"))}
    assert any(reasons[cid].startswith("=") for cid in formula_like)
    sheet = openpyxl.load_workbook(report)["Opt-outs"]
    seen = 0
    for row in sheet.iter_rows(min_row=2):
        if row[7].value in formula_like:
            assert row[5].data_type == "s" and row[5].value == reasons[row[7].value]
            seen += 1
    assert seen == len(formula_like)
    with zipfile.ZipFile(report) as archive:
        for name in archive.namelist():
            if name.startswith("xl/worksheets/"):
                assert b"<f>" not in archive.read(name)  # no formula anywhere


def test_summary_counts_equal_the_rows_and_has_a_chart(report: Path, shared_sandbox: Sandbox) -> None:
    expected = truth(shared_sandbox)
    book = openpyxl.load_workbook(report)
    rows = rows_of(book["Summary"])
    values = {row[0]: row[1] for row in rows if row and row[0] is not None}
    assert values["Total opt-outs"] == len(expected)
    by_source = {s: sum(o.opt_out_source == s for o in expected) for s in {o.opt_out_source for o in expected}}
    assert {source: values[source] for source in by_source} == by_source
    period_header = next(i for i, row in enumerate(rows) if row[0] in ("Day", "Week starting", "Month"))
    periods = rows[period_header + 1 :]
    assert sum(row[1] for row in periods) == len(expected)
    assert all(isinstance(row[0], dt.datetime) for row in periods)
    reasons_header = next(i for i, row in enumerate(rows) if row[0] == "Most common reasons")
    assert rows[reasons_header + 1][1] == max(
        sum((o.opt_out_reason or "").strip() == r for o in expected)
        for r in {(o.opt_out_reason or "").strip() for o in expected}
    )
    with zipfile.ZipFile(report) as archive:
        chart = archive.read("xl/charts/chart1.xml").decode()
    assert "<barChart>" in chart and "'Summary'!$B$" in chart


def test_about_sheet_says_how_it_was_made(report: Path, shared_sandbox: Sandbox) -> None:
    about = {row[0]: row[1] for row in rows_of(openpyxl.load_workbook(report)["About"]) if row and row[1] is not None}
    assert about["Query"] == "--tz America/New_York"
    assert about["Covers"] == "opted out from the beginning to now"
    assert about["Time zone"] == "America/New_York"
    assert about["Account"] == shared_sandbox.account.name
    assert about["Tool"] == f"ccoptout-xl {__version__}"
    assert about["API calls made"] >= 3  # the opt-outs, the list names, the account name
    assert isinstance(about["Generated at (UTC)"], dt.datetime)
    assert shared_sandbox.token not in str(about)


def test_any_text_is_written(tmp_path: Path) -> None:
    when = dt.datetime(2026, 5, 1, 12, tzinfo=dt.timezone.utc)
    odd = [
        '=HYPERLINK("http://x","y")',
        "bell\x07 and nul\x00 and escape\x1b[31m",
        "x" * 40_000,
        "太多邮件了 ✉️",
        "",
    ]
    optouts = [OptOut(f"id-{i}", f"{i}@example.com", text, "", when, "Contact", text) for i, text in enumerate(odd)]
    path = tmp_path / "odd.xlsx"
    summary = write_report(optouts, path)
    assert summary.total == len(odd)
    sheet = openpyxl.load_workbook(path)["Opt-outs"]
    reasons = [row[5] for row in rows_of(sheet)[1:]]
    assert reasons[0] == odd[0]
    assert reasons[1] == "bell\ufffd and nul\ufffd and escape\ufffd[31m"
    assert len(reasons[2]) == 32_767
    assert reasons[3] == odd[3]


def test_an_empty_report_is_still_a_valid_table(tmp_path: Path) -> None:
    path = tmp_path / "empty.xlsx"
    summary = write_report([], path, info=ReportInfo(query="--since today"))
    assert summary.total == 0
    book = openpyxl.load_workbook(path)
    assert book["Opt-outs"].tables[TABLE_NAME].ref == "A1:H2"


def test_a_failure_midway_leaves_the_previous_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "optouts.xlsx"
    path.write_bytes(b"the previous report")
    when = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)

    def optouts():
        for i in range(1_000):
            if i == 500:
                raise RuntimeError("the network went away")
            yield OptOut(f"id-{i}", f"{i}@example.com", "A", "B", when, "Contact", None)

    openpyxl_temporaries = set(Path(tempfile.gettempdir()).glob("openpyxl.*"))
    with pytest.raises(RuntimeError):
        write_report(optouts(), path)
    assert path.read_bytes() == b"the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["optouts.xlsx"]
    assert set(Path(tempfile.gettempdir()).glob("openpyxl.*")) <= openpyxl_temporaries


def test_a_locked_file_gets_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Windows refuses to replace a file open in Excel; here os.replace is made to refuse the same way.
    path = tmp_path / "optouts.xlsx"
    path.write_bytes(b"open in Excel")

    def refuse(source, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError, match="open in another program"):
        write_report([], path)
    assert path.read_bytes() == b"open in Excel"
    assert [p.name for p in tmp_path.iterdir()] == ["optouts.xlsx"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["report", "-o", "optouts.csv"], "name the file with .xlsx"),
        (["report", "-o", "/no/such/folder/r.xlsx"], "does not exist"),
        (["report", "--since", "never"], "--since date"),
    ],
)
def test_report_bad_input(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1


def test_demo_writes_the_report_and_says_where(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ccoptout_xl", "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / "optouts-demo.xlsx"
    assert str(path.resolve()) in done.stdout
    book = openpyxl.load_workbook(path)
    total = next(row[1] for row in rows_of(book["Summary"]) if row and row[0] == "Total opt-outs")
    assert f"{total:,} opt-outs" in done.stdout
    dates = [row[3] for row in rows_of(book["Opt-outs"])[1:]]
    assert dates == sorted(dates, reverse=True) and len(dates) == total > 0
    assert min(dates) >= dt.datetime.now() - dt.timedelta(days=91)


SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")


@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed")
def test_libreoffice_reads_the_same_rows(report: Path, shared_sandbox: Sandbox, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    done = subprocess.run(
        [
            SOFFICE,
            f"-env:UserInstallation=file://{profile}",
            "--headless",
            "--convert-to",
            "csv:Text - txt - csv (StarCalc):44,34,76",
            "--outdir",
            str(tmp_path),
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "optouts.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    expected = truth(shared_sandbox)
    assert rows[0] == HEADERS
    assert [row[7] for row in rows[1:]] == [o.contact_id for o in expected]
    assert [row[0] for row in rows[1:]] == [o.email for o in expected]
    # Text that looks like a formula arrives as the same text, not as a computed value.
    assert [row[5] for row in rows[1:]] == [o.opt_out_reason or "" for o in expected]
