"""The .xlsx report: its table, dates, text safety, summary and chart, atomic writing, the demo command; with
campaigns, the Campaign column, the By campaign sheet and chart, and the campaigns sent per period."""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as dt
import functools
import itertools
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

from ccoptout_xl import __version__, files
from ccoptout_xl.campaigns import Campaign, count_by_campaign
from ccoptout_xl.cli import main
from ccoptout_xl.columns import headers, report_columns
from ccoptout_xl.exceptions import OutputError
from ccoptout_xl.optouts import OptOut
from ccoptout_xl.report import TABLE_NAME, ReportInfo, write_report
from ccoptout_xl.sandbox import Sandbox

from .conftest import ANCHOR, truth

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
HEADERS = headers(report_columns(campaigns=False))  # the report without campaigns: no Campaign column


@pytest.fixture(scope="module")
def report(shared_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of every opt-out of the shared account, made by the command line."""
    path = tmp_path_factory.mktemp("report") / "optouts.xlsx"
    env = {"CCOPTOUT_API_URL": shared_sandbox.base_url, "CCOPTOUT_ACCESS_TOKEN": shared_sandbox.token}
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        assert main(["report", "--tz", "America/New_York", "--refresh", "-o", str(path)]) == 0
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
    assert all(cell.is_date and cell.number_format == "yyyy-mm-dd hh:mm:ss" for cell in sheet["D"][1:])


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


def summary_tables(rows: list[tuple]) -> dict[str, list[tuple]]:
    """The Summary sheet's small tables, by their first header cell."""
    tables: dict[str, list[tuple]] = {}
    current: list[tuple] | None = None
    for row in rows:
        if not row or row[0] is None:
            current = None
        elif row[1] == "Opt-outs":
            current = tables.setdefault(row[0], [])
        elif current is not None:
            current.append(row[:2])
    return tables


def test_summary_counts_equal_the_rows_and_has_a_chart(report: Path) -> None:
    book = openpyxl.load_workbook(report)
    rows = rows_of(book["Opt-outs"])[1:]
    summary = rows_of(book["Summary"])
    values = {row[0]: row[1] for row in summary if row and row[0] is not None}
    tables = summary_tables(summary)
    assert values["Total opt-outs"] == len(rows)
    assert dict(tables["Source"]) == dict(collections.Counter(row[4] for row in rows))
    reasons = collections.Counter((row[5] or "").strip() or "(no reason given)" for row in rows)
    assert tables["Most common reasons"] == [tuple(pair) for pair in reasons.most_common(10)]
    # All time, so by month: each month's count is the number of rows dated in it.
    months = collections.Counter(row[3].replace(day=1, hour=0, minute=0, second=0, microsecond=0) for row in rows)
    periods = tables["Month"]
    assert {start: count for start, count in periods if count} == dict(months)
    assert all(later > earlier for (earlier, _), (later, _) in itertools.pairwise(periods))
    with zipfile.ZipFile(report) as archive:
        chart = archive.read("xl/charts/chart1.xml").decode()
    first = next(i for i, row in enumerate(summary, start=1) if row[0] == "Month")
    assert "<barChart>" in chart
    assert f"<f>'Summary'!B{first}</f>" in chart  # the series' title: its header
    assert f"'Summary'!$B${first + 1}:$B${first + len(periods)}" in chart  # the counts
    assert f"'Summary'!$A${first + 1}:$A${first + len(periods)}" in chart  # the periods as categories


@pytest.mark.parametrize(
    ("days", "period"), [(1, "Day"), (62, "Day"), (63, "Week starting"), (731, "Week starting"), (732, "Month")]
)
def test_period_follows_the_length_of_the_range(tmp_path: Path, days: int, period: str) -> None:
    until = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    since = until - dt.timedelta(days=days)
    optouts = [
        OptOut(f"id{i}", f"{i}@example.com", "", "", moment, "Contact", None)
        for i, moment in enumerate((until - dt.timedelta(hours=1), since + dt.timedelta(hours=1)))
    ]
    write_report(optouts, tmp_path / "r.xlsx", info=ReportInfo(since=since, until=until))
    tables = summary_tables(rows_of(openpyxl.load_workbook(tmp_path / "r.xlsx")["Summary"]))
    assert period in tables
    assert sum(count for _, count in tables[period]) == 2


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


def test_any_text_is_written_and_keeps_its_meaning(tmp_path: Path) -> None:
    when = dt.datetime(2026, 5, 1, 12, tzinfo=dt.timezone.utc)
    odd = [
        '=HYPERLINK("http://x","y")',
        "bell\x07 and nul\x00 and escape\x1b[31m",
        "x" * 40_000,
        "太多邮件了 ✉️",
        "",
        "lone \ud800 surrogate and \ufffe \uffff non-characters",
        "_x0041_ and _x000D_ stay as typed",
        "😀" * 20_000,
    ]
    optouts = [OptOut(f"id-{i}", f"{i}@example.com", text, "", when, "Contact", text) for i, text in enumerate(odd)]
    path = tmp_path / "odd.xlsx"
    summary = write_report(optouts, path)
    assert summary.total == len(odd)
    rows = rows_of(openpyxl.load_workbook(path)["Opt-outs"])[1:]
    expected = [
        odd[0],
        "bell\ufffd and nul\ufffd and escape\ufffd[31m",
        "x" * 32_767,
        odd[3],
        None,
        "lone \ufffd surrogate and \ufffd \ufffd non-characters",
        "_x005F_x0041_ and _x005F_x000D_ stay as typed",  # escaped: Excel and LibreOffice decode _xHHHH_
        "😀" * 16_383,  # 32,766 UTF-16 units: one more emoji would not fit
    ]
    assert [row[5] for row in rows] == expected
    assert [row[1] for row in rows] == expected  # the first-name column goes through the same path
    if SOFFICE:  # a reader that decodes the escape, as Excel does, gets the text as it was typed
        assert libreoffice_rows(path, tmp_path)[6][5] == odd[6]


def test_an_empty_report_is_still_a_complete_workbook(tmp_path: Path) -> None:
    path = tmp_path / "empty.xlsx"
    summary = write_report([], path, info=ReportInfo(query="--since today"))
    assert summary.total == 0
    book = openpyxl.load_workbook(path)
    assert book["Opt-outs"].tables[TABLE_NAME].ref == "A1:H2"
    assert next(row[1] for row in rows_of(book["Summary"]) if row and row[0] == "Total opt-outs") == 0
    assert next(row[1] for row in rows_of(book["About"]) if row and row[0] == "Query") == "--since today"
    if SOFFICE:
        assert libreoffice_rows(path, tmp_path) == []


def test_a_failure_inside_the_writer_leaves_the_previous_file_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "optouts.xlsx"
    path.write_bytes(b"the previous report")
    when = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    optouts = [OptOut(f"id-{i}", f"{i}@example.com", "A", "B", when, "Contact", None) for i in range(1_000)]
    real_save = openpyxl.Workbook.save

    def save_then_fail(self, filename):  # the disk fills up halfway through the zip
        real_save(self, filename)
        Path(filename).write_bytes(Path(filename).read_bytes()[:5_000])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(openpyxl.Workbook, "save", save_then_fail)
    openpyxl_temporaries = set(Path(tempfile.gettempdir()).glob("openpyxl.*"))
    with pytest.raises(OSError, match="No space"):
        write_report(optouts, path)
    assert path.read_bytes() == b"the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["optouts.xlsx"]
    assert set(Path(tempfile.gettempdir()).glob("openpyxl.*")) <= openpyxl_temporaries


def test_a_failing_source_of_optouts_leaves_the_previous_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "optouts.xlsx"
    path.write_bytes(b"the previous report")
    when = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)

    def optouts():
        for i in range(1_000):
            if i == 500:
                raise RuntimeError("the network went away")
            yield OptOut(f"id-{i}", f"{i}@example.com", "A", "B", when, "Contact", None)

    with pytest.raises(RuntimeError):
        write_report(optouts(), path)
    assert path.read_bytes() == b"the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["optouts.xlsx"]


def test_list_ids_without_a_name_are_shown_as_ids(tmp_path: Path) -> None:
    when = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    optout = OptOut("id", "a@example.com", "", "", when, "Contact", None, list_ids=("L1", "L2", "L3"))
    write_report([optout], tmp_path / "r.xlsx", list_names={"L1": None, "L2": "News", "L3": ""})
    assert rows_of(openpyxl.load_workbook(tmp_path / "r.xlsx")["Opt-outs"])[1][6] == "L1, News, L3"


def test_a_locked_file_gets_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Windows refuses to replace a file open in Excel; here os.replace is made to refuse the same way.
    path = tmp_path / "optouts.xlsx"
    path.write_bytes(b"open in Excel")

    def refuse(source, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    slept: list[float] = []  # it is tried again for about a second, none of which is slept here
    monkeypatch.setattr(files, "retry_while_busy", functools.partial(files.retry_while_busy, sleep=slept.append))
    with pytest.raises(OutputError, match="open in another program"):
        write_report([], path)
    assert slept == [0.05] * 19
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


@pytest.mark.parametrize(
    ("argv", "check"),
    [
        (["--until", "9998-12-31"], "ends by today"),  # the latest and earliest dates accepted
        (["--since", "1900-01-01", "--tz", "UTC"], "starts near the first"),
        (["--since", "2025-01-01", "--latest", "50"], "the rows' own range"),
    ],
)
def test_extreme_or_partial_ranges_chart_what_is_there(
    argv: list[str], check: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.xlsx"
    assert main(["report", "--demo", *argv, "-o", str(path)]) == 0, capsys.readouterr().err
    book = openpyxl.load_workbook(path)
    dates = [row[3] for row in rows_of(book["Opt-outs"])[1:]]
    tables = summary_tables(rows_of(book["Summary"]))
    ((_, periods),) = [(k, v) for k, v in tables.items() if k in ("Day", "Week starting", "Month")]
    assert sum(count for _, count in periods) == len(dates) > 0
    assert len(periods) <= 400
    if check == "ends by today":
        assert periods[-1][0] <= dt.datetime.now()
    elif check == "starts near the first":
        assert periods[0][0] >= min(dates) - dt.timedelta(days=400)
    else:
        assert periods[0][0] <= min(dates) and periods[0][1] > 0 and periods[-1][1] > 0


def test_default_file_name_is_todays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--demo", "--latest", "5", "--tz", "UTC"]) == 0
    expected = tmp_path / f"optouts-{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}.xlsx"
    assert str(expected) in capsys.readouterr().out and expected.is_file()


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
    # The demo shows campaigns: the Campaign column, and the By campaign sheet whose rows add up to the total.
    assert rows_of(book["Opt-outs"])[0][6] == "Campaign" and any(row[6] for row in rows_of(book["Opt-outs"])[1:])
    by_campaign = rows_of(book["By campaign"])
    counts = [row[2] for row in by_campaign[1:] if row and isinstance(row[2], int)]
    assert sum(counts) == total and len(counts) > 2


# -- with campaigns ------------------------------------------------------------------------------------------

CAMPAIGN_SINCE = ANCHOR - dt.timedelta(days=60)  # a window of 60 days: the Summary counts per day
FORMULA_NAME = '=HYPERLINK("http://x","y")'
DELETED_NAME = "Spring promo (deleted since)"


def sent(days_before: float, hour: int = 0) -> dt.datetime:
    return ANCHOR - dt.timedelta(days=days_before) + dt.timedelta(hours=hour)


# Hand-made campaigns, as the summaries list them: names from the API that look like formulas, two sent on the same
# local day (newest first in the Summary), one never sent (no send time) and one without opt-outs in the window.
CAMPAIGNS = [
    Campaign("c01", FORMULA_NAME, sent(55), ("a01",)),
    Campaign("c02", "+1 more offer", sent(50), ("a02",)),
    Campaign("c03", "-50% sale", sent(45), ("a03",)),
    Campaign("c04", "@team news", sent(40), ("a04",)),
    Campaign("c05", "Morning edition", sent(35, hour=2), ("a05",)),  # 2026-10-16 10:00 in New York
    Campaign("c06", "Evening edition", sent(35, hour=10), ("a06",)),  # the same day, 18:00 in New York
    *(Campaign(f"c{n:02}", f"Newsletter {n}", sent(3 * n), (f"a{n:02}",)) for n in range(7, 13)),
    Campaign("c13", "Nobody left through this one", sent(2), ("a13",)),
    Campaign("c14", "Draft never sent", None, ()),
]
# Opt-outs per campaign, in turn, most first; "gone" is a campaign deleted since (its opt-outs still name it), None
# the opt-outs through no campaign (the account's removals are always these).
WEIGHTS = {"c01": 12, "c02": 10, "c03": 9, "c04": 8, "c05": 7, "c06": 6, "c07": 5, "c08": 4, "c09": 3, "c10": 2}
WEIGHTS |= {"c11": 2, "c12": 1, "gone": 3, None: 10}


def with_campaign_fields(optouts: list[OptOut]) -> list[OptOut]:
    """The opt-outs, each through a campaign in turn by WEIGHTS (those the account made, through none)."""
    names = {c.campaign_id: c.name for c in CAMPAIGNS} | {"gone": DELETED_NAME}
    turns = itertools.cycle([campaign_id for campaign_id, weight in WEIGHTS.items() for _ in range(weight)])
    return [
        dataclasses.replace(o, campaign_id=campaign_id, campaign_name=names.get(campaign_id))
        if o.opt_out_source == "Contact" and (campaign_id := next(turns)) is not None
        else o
        for o in optouts
    ]


@pytest.fixture(scope="module")
def campaign_optouts(shared_sandbox: Sandbox) -> list[OptOut]:
    return with_campaign_fields([o for o in truth(shared_sandbox) if o.opt_out_date >= CAMPAIGN_SINCE])


CAMPAIGN_INFO = ReportInfo(
    query="--since 60 days --campaigns",
    since=CAMPAIGN_SINCE,
    until=ANCHOR,
    generated_at=ANCHOR,
    time_zone="America/New_York",
)


@pytest.fixture(scope="module")
def campaign_report(campaign_optouts: list[OptOut], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("campaigns") / "optouts.xlsx"
    summary = write_report(  # a generator: the report streams the opt-outs once
        (o for o in campaign_optouts), path, zone=NEW_YORK, info=CAMPAIGN_INFO, campaigns=CAMPAIGNS
    )
    assert summary.total == len(campaign_optouts)
    assert summary.by_campaign == count_by_campaign(campaign_optouts, CAMPAIGNS)
    return path


def test_without_campaigns_the_report_is_as_before(campaign_optouts: list[OptOut], tmp_path: Path) -> None:
    plain = [dataclasses.replace(o, campaign_id=None, campaign_name=None) for o in campaign_optouts]
    assert plain != campaign_optouts
    paths = tmp_path / "plain.xlsx", tmp_path / "campaign-fields.xlsx"
    for optouts, path in zip((plain, campaign_optouts), paths, strict=True):
        write_report(optouts, path, zone=NEW_YORK, info=CAMPAIGN_INFO)
    books = [openpyxl.load_workbook(path) for path in paths]
    assert books[0].sheetnames == books[1].sheetnames == ["Opt-outs", "Summary", "About"]
    for name in books[0].sheetnames:
        assert rows_of(books[0][name]) == rows_of(books[1][name]), name
    assert [c.name for c in books[1]["Opt-outs"].tables[TABLE_NAME].tableColumns] == HEADERS
    assert "Campaign" not in HEADERS and not any("Campaigns sent" in row for row in rows_of(books[1]["Summary"]))


def test_the_campaign_column_names_each_optouts_email(campaign_report: Path, campaign_optouts: list[OptOut]) -> None:
    book = openpyxl.load_workbook(campaign_report)
    assert book.sheetnames == ["Opt-outs", "Summary", "By campaign", "About"]
    sheet = book["Opt-outs"]
    columns = headers(report_columns(campaigns=True))
    assert columns == [*HEADERS[:6], "Campaign", *HEADERS[6:]]
    assert sheet.tables[TABLE_NAME].ref == f"A1:I{len(campaign_optouts) + 1}"
    assert [c.name for c in sheet.tables[TABLE_NAME].tableColumns] == columns
    assert [cell.value for cell in sheet[1]] == columns
    assert "unsubscribe link" in sheet["G1"].comment.text
    body = rows_of(sheet)[1:]
    assert [row[8] for row in body] == [o.contact_id for o in campaign_optouts]
    assert [row[6] for row in body] == [o.campaign_name for o in campaign_optouts]  # None: an empty cell
    assert {row[6] for row in body} >= {FORMULA_NAME, DELETED_NAME, None}


def by_campaign_label(row) -> str:
    if row.campaign_id is None:
        return "(no campaign)"
    return row.campaign_name or DELETED_NAME  # a campaign the summaries no longer list: its opt-outs' name


def test_the_by_campaign_sheet_counts_per_campaign_most_first(
    campaign_report: Path, campaign_optouts: list[OptOut]
) -> None:
    sheet = openpyxl.load_workbook(campaign_report)["By campaign"]
    expected = count_by_campaign(campaign_optouts, CAMPAIGNS)
    (table,) = sheet.tables.values()
    assert table.name == "OptOutsByCampaign" and table.ref == f"A1:C{len(expected) + 1}"
    assert table.tableStyleInfo.name == "TableStyleMedium2"
    assert [c.name for c in table.tableColumns] == ["Campaign", "Last sent", "Opt-outs"]
    header, *body = rows_of(sheet)
    assert header == ("Campaign", "Last sent", "Opt-outs")
    assert body == [
        (by_campaign_label(row), row.sent_at and row.sent_at.astimezone(NEW_YORK).replace(tzinfo=None), row.optouts)
        for row in expected
    ]
    # Only the campaigns people left through, most first; then the row of those through none, even when not least.
    counts = [count for _, _, count in body[:-1]]
    assert counts == sorted(counts, reverse=True)
    assert [label for label, _, _ in body[:2]] == [FORMULA_NAME, "+1 more offer"]
    assert "Nobody left through this one" not in {label for label, _, _ in body}
    assert body[-1] == ("(no campaign)", None, sum(1 for o in campaign_optouts if o.campaign_id is None))
    assert body[-1][2] > 10  # the account's removals as well as the opt-outs without a campaign
    assert sum(count for _, _, count in body) == len(campaign_optouts)
    assert (DELETED_NAME, None, 3) in body  # no send time known for a campaign deleted since
    sent_cells = [row[1] for row in sheet.iter_rows(min_row=2) if row[1].value is not None]
    assert sent_cells and all(cell.is_date and cell.number_format == "yyyy-mm-dd hh:mm:ss" for cell in sent_cells)


def test_the_by_campaign_chart_shows_the_top_campaigns(campaign_report: Path, campaign_optouts: list[OptOut]) -> None:
    with zipfile.ZipFile(campaign_report) as archive:
        charts = [archive.read(name).decode() for name in archive.namelist() if name.startswith("xl/charts/chart")]
    (chart,) = [chart for chart in charts if "'By campaign'" in chart]
    assert '<barChart><barDir val="bar"/>' in chart  # bars across, for long names
    assert "<f>'By campaign'!C1</f>" in chart  # the series' title: its header
    assert "<val><numRef><f>'By campaign'!$C$2:$C$11</f></numRef></val>" in chart  # the top 10 counts
    assert "<cat><strRef><f>'By campaign'!$A$2:$A$11</f></strRef></cat>" in chart  # their names as categories
    rows = rows_of(openpyxl.load_workbook(campaign_report)["By campaign"])
    top = count_by_campaign(campaign_optouts, CAMPAIGNS)[:10]
    assert [row[0] for row in rows[1:11]] == [by_campaign_label(row) for row in top]
    assert all(row.campaign_id is not None for row in top)  # the no-campaign row is not charted


def test_the_summary_names_the_campaigns_sent_in_each_period(campaign_report: Path) -> None:
    rows = rows_of(openpyxl.load_workbook(campaign_report)["Summary"])
    first = next(i for i, row in enumerate(rows) if row[0] == "Day")
    assert rows[first][:3] == ("Day", "Opt-outs", "Campaigns sent")
    periods = [row for row in rows[first + 1 :] if row and row[0] is not None]
    assert len(periods) >= 60
    listed = {row[0].date(): row[2] for row in periods}
    expected: dict[dt.date, list[Campaign]] = {}
    for campaign in CAMPAIGNS:
        if campaign.sent_at is not None:
            expected.setdefault(campaign.sent_at.astimezone(NEW_YORK).date(), []).append(campaign)
    assert set(expected) <= set(listed)
    for day, names in listed.items():
        sent_that_day = sorted(expected.get(day, []), key=lambda c: c.sent_at, reverse=True)
        assert names == (", ".join(c.name for c in sent_that_day) or None), day
    assert listed[dt.date(2026, 10, 16)] == "Evening edition, Morning edition"  # newest first
    assert "Draft never sent" not in str(listed)  # never sent: in no period
    other = summary_tables(rows)  # the other tables keep their two columns
    assert set(other) == {"Source", "Most common reasons", "Day"}


def test_campaign_names_that_look_like_formulas_stay_text(campaign_report: Path) -> None:
    book = openpyxl.load_workbook(campaign_report)
    formula_like = ("=", "+", "-", "@")
    cells = [row[6] for row in book["Opt-outs"].iter_rows(min_row=2)]
    cells += [row[0] for row in book["By campaign"].iter_rows(min_row=2)]
    cells += [row[2] for row in book["Summary"].iter_rows() if len(row) > 2]
    seen = [cell for cell in cells if isinstance(cell.value, str) and cell.value.startswith(formula_like)]
    assert {cell.value for cell in seen} >= {FORMULA_NAME, "+1 more offer", "-50% sale", "@team news"}
    assert all(cell.data_type == "s" for cell in seen)
    assert any(cell.value == FORMULA_NAME for cell in cells[-len(book["Summary"]["C"]) :])  # in the Summary too
    with zipfile.ZipFile(campaign_report) as archive:
        for name in archive.namelist():
            if name.startswith("xl/worksheets/"):
                assert b"<f>" not in archive.read(name)  # no formula anywhere


def test_the_about_sheet_says_what_no_campaign_means(campaign_report: Path) -> None:
    about = {row[0]: row[1] for row in rows_of(openpyxl.load_workbook(campaign_report)["About"]) if row and row[1]}
    assert "By campaign" in about["Campaigns"]
    meaning = about["No campaign"]
    assert "unsubscribe link" in meaning and "account removed" in meaning
    assert all(word in meaning for word in ("form", "import", "opted back in"))


def test_an_empty_report_with_campaigns(tmp_path: Path) -> None:
    path = tmp_path / "empty.xlsx"
    summary = write_report([], path, campaigns=[])
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Opt-outs", "Summary", "By campaign", "About"]
    assert book["Opt-outs"].tables[TABLE_NAME].ref == "A1:I2"
    assert rows_of(book["By campaign"])[1:] == [("(no campaign)", None, 0)]
    assert book["By campaign"].tables["OptOutsByCampaign"].ref == "A1:C2"
    assert summary.by_campaign == count_by_campaign([], [])
    with zipfile.ZipFile(path) as archive:
        assert not [name for name in archive.namelist() if name.startswith("xl/charts/")]  # nothing to chart


SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")


def libreoffice_rows(path: Path, folder: Path) -> list[list[str]]:
    """The Opt-outs sheet as LibreOffice reads it (CSV, UTF-8), without its header."""
    out = folder / "libreoffice"
    done = subprocess.run(
        [
            SOFFICE,
            f"-env:UserInstallation=file://{folder / 'profile'}",
            "--headless",
            "--convert-to",
            "csv:Text - txt - csv (StarCalc):44,34,76",
            "--outdir",
            str(out),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    with open(out / (path.stem + ".csv"), encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == HEADERS
    return [row for row in rows[1:] if any(row)]


@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed")
def test_libreoffice_reads_the_same_rows(report: Path, shared_sandbox: Sandbox, tmp_path: Path) -> None:
    rows = libreoffice_rows(report, tmp_path)
    expected = truth(shared_sandbox)
    assert [row[7] for row in rows] == [o.contact_id for o in expected]
    assert [row[0] for row in rows] == [o.email for o in expected]
    local = [o.opt_out_date.astimezone(NEW_YORK) for o in expected]
    assert [row[3] for row in rows] == [f"{moment:%Y-%m-%d %H:%M:%S}" for moment in local]
    # Text that looks like a formula arrives as the same text, not as a computed value.
    assert [row[5] for row in rows] == [o.opt_out_reason or "" for o in expected]
