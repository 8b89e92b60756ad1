"""The standalone opt-out report: an ``.xlsx`` workbook that opens cleanly in Excel and LibreOffice.

Sheets: **Opt-outs** (an Excel table ``OptOuts``, newest first), **Summary** (totals, counts by source, opt-outs
per day/week/month as a table and a bar chart, the most common reasons) and **About** (the query, time zone,
account, when, tool version, API calls). Written with openpyxl's write-only mode, so 200,000 rows take bounded
memory, and atomically: a failure leaves any previous file as it was.

Asked for campaigns (``write_report(..., campaigns=...)``), the report also says which email each opt-out came
through: a Campaign column in ``OptOuts``, a **By campaign** sheet (an Excel table of opt-outs per campaign, most
first, with the row of those through none, and a bar chart of the top campaigns), and the campaigns sent in each
period beside the Summary's per-period counts, so a spike and its email sit side by side. The counts are taken in
the same single pass that writes the rows: the opt-outs are never all held in memory.

Text from the API is always written as text: a reason such as ``=HYPERLINK("http://x","y")`` stays those
characters and is never a formula; characters that XML cannot carry are shown as U+FFFD.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.chart import BarChart, Reference
from openpyxl.chart.data_source import AxDataSource, StrRef
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.filters import AutoFilter
from openpyxl.worksheet.table import Table, TableColumn, TableStyleInfo

from .campaigns import Campaign, CampaignCount
from .columns import DATE_TIME_FORMAT, NO_CAMPAIGN, TABLE_NAME, Column, campaign_label, report_columns
from .files import abandon_zip_files, atomic_path, disk_full, temporary_space_error
from .optouts import OptOut
from .version import __version__

DAY_FORMAT = "yyyy-mm-dd"
NO_REASON = "(no reason given)"
TOP_REASONS = 10
MAX_DISTINCT_REASONS = 10_000  # beyond this, new reasons are counted under "(other reasons)"
EXCEL_TEXT_LIMIT = 32_767
CAMPAIGN_TABLE = "OptOutsByCampaign"
TOP_CAMPAIGNS = 10  # charted on the By campaign sheet
NO_CAMPAIGN_MEANS = (
    "The opt-out was not made through an email's unsubscribe link: the account removed the contact, or they left "
    "through a form or an import, or they once left through an email, opted back in and later left another way."
)


@dataclass
class ReportInfo:
    """What the About sheet says about how the report was made."""

    query: str = "all opt-outs"
    covers: str = ""
    time_zone: str = "UTC"
    account_name: str = ""
    api_calls: int | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    latest: int | None = None  # only the newest N were kept: the rows' own dates are the range covered
    generated_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))


@dataclass
class ReportSummary:
    """What the Summary sheet shows, also returned to the caller."""

    total: int = 0
    first: dt.datetime | None = None  # earliest opt-out, local time
    last: dt.datetime | None = None  # latest opt-out, local time
    by_source: collections.Counter[str] = field(default_factory=collections.Counter)
    by_day: collections.Counter[dt.date] = field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    period: str = "day"
    periods: list[tuple[dt.date, int]] = field(default_factory=list)
    by_campaign_id: collections.Counter[str | None] = field(default_factory=collections.Counter)
    campaign_names: dict[str, str] = field(default_factory=dict)  # as the opt-outs name them, for unknown ids
    by_campaign: list[CampaignCount] = field(default_factory=list)  # the By campaign table, when asked for

    def add(self, optout: OptOut, local: dt.datetime) -> None:
        self.total += 1
        self.first = local if self.first is None or local < self.first else self.first
        self.last = local if self.last is None or local > self.last else self.last
        self.by_source[optout.opt_out_source or "(unknown)"] += 1
        self.by_day[local.date()] += 1
        reason = (optout.opt_out_reason or "").strip()[:255] or NO_REASON
        if reason in self.reasons or len(self.reasons) < MAX_DISTINCT_REASONS:
            self.reasons[reason] += 1
        else:
            self.reasons["(other reasons)"] += 1
        self.by_campaign_id[optout.campaign_id] += 1
        if optout.campaign_id is not None and optout.campaign_name and optout.campaign_id not in self.campaign_names:
            self.campaign_names[optout.campaign_id] = optout.campaign_name

    def count_campaigns(self, campaigns: Iterable[Campaign]) -> None:
        """The opt-outs per campaign, as :func:`~ccoptout_xl.campaigns.count_by_campaign` counts them: most first,
        then the row of those through no campaign."""
        known = {c.campaign_id: c for c in campaigns}
        rows = []
        for campaign_id, n in self.by_campaign_id.items():
            if campaign_id is None:
                continue
            found = known.get(campaign_id)  # None: a campaign the summaries no longer list
            name, sent_at = (found.name, found.sent_at) if found else (None, None)
            rows.append(CampaignCount(campaign_id, name, sent_at, n))
        rows.sort(key=lambda row: (-row.optouts, row.campaign_name or "", row.campaign_id or ""))
        self.by_campaign = [*rows, CampaignCount(None, None, None, self.by_campaign_id.get(None, 0))]

    def bucket(self, start: dt.date | None, end: dt.date | None) -> None:
        """Group the daily counts by day, week (from Monday) or month, by the length of ``start..end``."""
        if start is None or end is None or end < start:
            self.periods = []
            return
        days = (end - start).days + 1
        self.period = "day" if days <= 62 else "week" if days <= 731 else "month"
        starts: collections.Counter[dt.date] = collections.Counter()
        for day, count in self.by_day.items():
            starts[_period_start(day, self.period)] += count
        self.periods = []
        current = _period_start(start, self.period)
        while current <= end:
            self.periods.append((current, starts.get(current, 0)))
            current = _next_period(current, self.period)


def write_report(
    optouts: Iterable[OptOut],
    path: str | os.PathLike[str],
    *,
    zone: dt.tzinfo = dt.timezone.utc,
    list_names: Mapping[str, str] | None = None,
    info: ReportInfo | None = None,
    campaigns: Sequence[Campaign] | None = None,
) -> ReportSummary:
    """Write the report for ``optouts`` (newest first, as a query returns them) to ``path``; return its summary.

    ``campaigns``: the report was asked for campaigns, and these are every campaign the account's summaries list
    (with opt-outs or not, with their send times); each opt-out's ``campaign_id``/``campaign_name`` says which one
    it came through. None: the report without campaigns.
    """
    info = info or ReportInfo()
    list_names = list_names or {}
    xlsx = Workbook(write_only=True)
    summary = ReportSummary()
    try:
        try:  # openpyxl stages each sheet's rows in a temporary file
            _write_optouts(xlsx, optouts, zone, list_names, summary, campaigns is not None)
            start, end = _covered(info, summary, zone)
            summary.bucket(*_charted(start, end, summary, dt.datetime.now(zone).date()))
            _write_summary(
                xlsx, summary, start, end, None if campaigns is None else _sent_by_period(campaigns, summary, zone)
            )
            if campaigns is not None:
                summary.count_campaigns(campaigns)
                _write_by_campaign(xlsx, summary, zone)
            _write_about(xlsx, info, summary, campaigns is not None)
        except Exception as exc:
            # lxml reports libxml2's failed write as SerialisationError('IO_ENOSPC'), with no errno.
            if disk_full(exc) or "ENOSPC" in str(exc):
                raise temporary_space_error() from None
            raise
        with atomic_path(path) as temporary:
            try:
                xlsx.save(temporary)
            except BaseException as exc:
                abandon_zip_files(exc, temporary)  # before the temporary file is deleted, and never finished later
                raise
    except BaseException:
        _discard(xlsx)
        raise
    return summary


def _covered(info: ReportInfo, summary: ReportSummary, zone: dt.tzinfo) -> tuple[dt.date | None, dt.date | None]:
    """The local days the report speaks for: the query's range, or the rows' own when only the newest N are kept."""
    first = summary.first.date() if summary.first else None
    last = summary.last.date() if summary.last else None
    if info.latest is not None:
        return first, last
    start = _local_day(info.since, zone) if info.since else first
    end: dt.date | None
    if info.until:
        end = _local_day(info.until - dt.timedelta(microseconds=1), zone)  # until is exclusive
    else:
        end = dt.datetime.now(zone).date() if info.since else last
    return start, end


def _charted(
    start: dt.date | None, end: dt.date | None, summary: ReportSummary, today: dt.date
) -> tuple[dt.date | None, dt.date | None]:
    """The per-period table's days: the range covered, without the years before the first opt-out or the future."""
    if start is None or end is None:
        return None, None
    earliest = (summary.first.date() if summary.first else today) - dt.timedelta(days=365)
    latest = max(summary.last.date() if summary.last else today, today)
    return max(start, earliest), min(end, latest)


def _local_day(moment: dt.datetime, zone: dt.tzinfo) -> dt.date:
    try:
        return moment.astimezone(zone).date()
    except OverflowError:  # within a day of year 1 or 9999
        return moment.date()


def _discard(xlsx: Workbook) -> None:
    """Close a write-only report that will not be saved, and delete the temporary files openpyxl made for it.

    openpyxl has no public way to abandon a write-only workbook; these calls are guarded, so a change in its
    internals can only leave a temporary file behind, never fail the caller.
    """
    for sheet in xlsx.worksheets:
        with contextlib.suppress(Exception):
            sheet.close()
        writer = getattr(sheet, "_writer", None)
        if writer is not None:
            with contextlib.suppress(OSError, ValueError):
                writer.cleanup()


# -- sheets --------------------------------------------------------------------------------------------------


def _write_optouts(
    xlsx: Workbook, optouts: Iterable[OptOut], zone, list_names, summary: ReportSummary, campaigns: bool
) -> None:
    sheet = xlsx.create_sheet("Opt-outs")
    sheet.freeze_panes = "A2"
    _print_landscape(sheet)
    sheet.print_title_rows = "1:1"
    header = []
    columns = report_columns(campaigns)
    for index, column in enumerate(columns, start=1):  # the columns of the workbook's OptOuts table too
        sheet.column_dimensions[get_column_letter(index)].width = column.width
        header.append(_header(sheet, column.header))
        if column.comment:
            header[-1].comment = Comment(column.comment, "ccoptout-xl", width=360, height=90)
    sheet.append(header)
    for optout in optouts:
        sheet.append([_cell(sheet, column, column.read(optout, list_names), zone) for column in columns])
        summary.add(optout, optout.opt_out_date.astimezone(zone).replace(tzinfo=None))
    last_row = max(summary.total, 1) + 1  # a table needs one data row, even an empty one
    table = Table(displayName=TABLE_NAME, ref=f"A1:{get_column_letter(len(columns))}{last_row}")
    table.tableColumns = [TableColumn(id=i, name=column.header) for i, column in enumerate(columns, start=1)]
    _add_table(sheet, table)


def _add_table(sheet, table: Table) -> None:
    """Add ``table`` to a write-only ``sheet``, in the report's style."""
    table.tableStyleInfo = TableStyleInfo(name="TableStyleMedium2", showRowStripes=True)
    table.autoFilter = AutoFilter(ref=table.ref)
    with warnings.catch_warnings():  # openpyxl warns about write-only tables even when the columns are given
        warnings.simplefilter("ignore", UserWarning)
        sheet.add_table(table)


def _write_summary(
    xlsx: Workbook,
    summary: ReportSummary,
    start: dt.date | None,
    end: dt.date | None,
    sent: Mapping[dt.date, str] | None,
) -> None:
    """The Summary sheet; ``sent``: the campaigns sent in each period (by its first day), when asked for."""
    sheet = xlsx.create_sheet("Summary")
    _print_landscape(sheet)
    sheet.column_dimensions["A"].width = 44
    sheet.column_dimensions["B"].width = 14
    if sent is not None:
        sheet.column_dimensions["C"].width = 60
    rows: list[list[object]] = [
        [_title(sheet, "Opt-outs summary")],
        [],
        [_label(sheet, "Total opt-outs"), summary.total],
        [_label(sheet, "From"), _day(sheet, start)],
        [_label(sheet, "To"), _day(sheet, end)],
        [],
        [_header(sheet, "Source"), _header(sheet, "Opt-outs")],
    ]
    for source, count in sorted(summary.by_source.items(), key=lambda item: (-item[1], item[0])):
        rows.append([_text(sheet, source), count])
    rows += [[], [_header(sheet, "Most common reasons"), _header(sheet, "Opt-outs")]]
    rows += [[_text(sheet, reason), count] for reason, count in summary.reasons.most_common(TOP_REASONS)]
    period_title = {"day": "Day", "week": "Week starting", "month": "Month"}[summary.period]
    rows += [[], [_header(sheet, period_title), _header(sheet, "Opt-outs")]]
    header_row = len(rows)  # 1-based row number of the per-period header
    period_format = "yyyy-mm" if summary.period == "month" else DAY_FORMAT
    rows += [[_day(sheet, start_day, period_format), count] for start_day, count in summary.periods]
    if sent is not None:  # the emails beside the counts, so a spike and its email sit side by side
        rows[header_row - 1].append(_header(sheet, "Campaigns sent"))
        for row, (start_day, _) in zip(rows[header_row:], summary.periods, strict=True):
            row.append(_text(sheet, sent.get(start_day, "")))
    for row in rows:
        sheet.append(row)
    if summary.periods:
        chart = BarChart()
        chart.type = "col"
        chart.title = f"Opt-outs per {summary.period}"
        chart.y_axis.title = "Opt-outs"
        chart.legend = None
        chart.x_axis.delete = chart.y_axis.delete = False  # openpyxl 3.1 hides both axes in Excel otherwise
        chart.width, chart.height = 24, 9
        chart.add_data(Reference(sheet, min_col=2, min_row=header_row, max_row=len(rows)), titles_from_data=True)
        chart.set_categories(Reference(sheet, min_col=1, min_row=header_row + 1, max_row=len(rows)))
        sheet.add_chart(chart, "D3" if sent is None else "E3")


def _sent_by_period(campaigns: Iterable[Campaign], summary: ReportSummary, zone: dt.tzinfo) -> dict[dt.date, str]:
    """The names of the campaigns sent in each of the Summary's periods (by its first day), newest first."""
    by_start: dict[dt.date, list[tuple[dt.datetime, str]]] = {}
    for campaign in campaigns:
        if campaign.sent_at is not None:
            start = _period_start(_local_day(campaign.sent_at, zone), summary.period)
            by_start.setdefault(start, []).append(
                (campaign.sent_at, _campaign_label(campaign.name, campaign.campaign_id))
            )
    return {
        start: ", ".join(name for _, name in sorted(sent, key=lambda pair: pair[0], reverse=True))
        for start, sent in by_start.items()
    }


def _write_by_campaign(xlsx: Workbook, summary: ReportSummary, zone: dt.tzinfo) -> None:
    """The By campaign sheet: an Excel table of the opt-outs per campaign, and a bar chart of the top campaigns."""
    sheet = xlsx.create_sheet("By campaign")
    sheet.freeze_panes = "A2"
    _print_landscape(sheet)
    for letter, width in zip("ABC", (48, 20, 12), strict=True):
        sheet.column_dimensions[letter].width = width
    headers = ("Campaign", "Last sent", "Opt-outs")
    sheet.append([_header(sheet, name) for name in headers])
    for row in summary.by_campaign:
        if row.campaign_id is None:
            label: WriteOnlyCell | str = NO_CAMPAIGN
        else:
            label = _text(sheet, _campaign_label(row.campaign_name, row.campaign_id, summary.campaign_names))
        sent = "" if row.sent_at is None else _moment(sheet, row.sent_at, zone)
        sheet.append([label, sent, row.optouts])
    last_row = len(summary.by_campaign) + 1  # never empty: the row of those through no campaign is always there
    table = Table(displayName=CAMPAIGN_TABLE, ref=f"A1:C{last_row}")
    table.tableColumns = [TableColumn(id=i, name=name) for i, name in enumerate(headers, start=1)]
    _add_table(sheet, table)
    charted = min(TOP_CAMPAIGNS, len(summary.by_campaign) - 1)  # the top rows; the no-campaign row comes last
    if charted > 0:
        chart = BarChart()
        chart.type = "bar"  # across: campaign names are long
        chart.title = f"Top {charted} campaigns by opt-outs" if charted > 1 else "Opt-outs by campaign"
        chart.x_axis.scaling.orientation = "maxMin"  # the most at the top, as in the table
        chart.legend = None
        chart.x_axis.delete = chart.y_axis.delete = False  # openpyxl 3.1 hides both axes in Excel otherwise
        chart.width, chart.height = 24, max(6, 1.2 * charted)
        chart.add_data(Reference(sheet, min_col=3, min_row=1, max_row=charted + 1), titles_from_data=True)
        names = Reference(sheet, min_col=1, min_row=2, max_row=charted + 1)
        chart.series[0].cat = AxDataSource(strRef=StrRef(f=str(names)))  # text categories (set_categories: numbers)
        sheet.add_chart(chart, "E2")


def _campaign_label(name: str | None, campaign_id: str, seen: Mapping[str, str] | None = None) -> str:
    """A campaign as the report names it: its name, else the name its opt-outs carried, else its id."""
    return campaign_label(campaign_id, name or (seen or {}).get(campaign_id))


def _write_about(xlsx: Workbook, info: ReportInfo, summary: ReportSummary, campaigns: bool) -> None:
    sheet = xlsx.create_sheet("About")
    sheet.column_dimensions["A"].width = 22
    sheet.column_dimensions["B"].width = 70
    generated = info.generated_at.astimezone(dt.timezone.utc).replace(tzinfo=None)
    rows = [
        ("Query", info.query),
        ("Covers", info.covers or info.query),
        ("Time zone", info.time_zone),
        ("Account", info.account_name or "(unknown)"),
        ("Opt-outs", summary.total),
        ("Generated at (UTC)", generated),
        ("Tool", f"ccoptout-xl {__version__}"),
        ("API calls made", info.api_calls if info.api_calls is not None else "(not recorded)"),
    ]
    if campaigns:
        rows += [
            ("Campaigns", "included: the Campaign column, the By campaign sheet, the campaigns sent per period"),
            ("No campaign", NO_CAMPAIGN_MEANS),
        ]
    sheet.append([_title(sheet, "About this report")])
    sheet.append([])
    for label, value in rows:
        if isinstance(value, dt.datetime):
            cell = WriteOnlyCell(sheet, value=value)
            cell.number_format = "yyyy-mm-dd hh:mm:ss"
        elif isinstance(value, str):
            cell = _text(sheet, value)
        else:
            cell = value
        sheet.append([_label(sheet, label), cell])


# -- cells ---------------------------------------------------------------------------------------------------

_HEADER_FONT = Font(bold=True, color="FFFFFF")
_HEADER_FILL = PatternFill("solid", fgColor="305496")


def _cell(sheet, column: Column, value: str | dt.datetime, zone: dt.tzinfo) -> WriteOnlyCell | str:
    """The report's cell for a value of ``column``: text as text (:func:`_text`), an instant as a date-time in
    ``zone``. The serial openpyxl writes keeps the fraction of a second (16 significant digits: well under a
    millisecond), so the cell holds the API's milliseconds; the column's format shows whole seconds."""
    if isinstance(value, str):
        return _text(sheet, value)
    return _moment(sheet, value, zone, column.number_format or DATE_TIME_FORMAT)


def _moment(sheet, moment: dt.datetime, zone: dt.tzinfo, number_format: str = DATE_TIME_FORMAT) -> WriteOnlyCell:
    """An aware instant as a date-time cell in ``zone``."""
    cell = WriteOnlyCell(sheet, value=moment.astimezone(zone).replace(tzinfo=None))
    cell.number_format = number_format
    return cell


def _text(sheet, value: str) -> WriteOnlyCell | str:
    """A cell that is text whatever it starts with (openpyxl would make ``=...`` a formula), and stays that text.

    Characters XML cannot carry become U+FFFD; ``_x0041_``-like text is escaped, since spreadsheet readers decode
    it; text is cut to Excel's limit of 32,767 UTF-16 code units without splitting a character.
    """
    clean = value
    if _NEEDS_CARE.search(value):  # rare: most text passes untouched
        clean = _ESCAPED.sub(r"_x005F\g<0>", _NOT_XML.sub("\ufffd", value))
    if len(clean) > EXCEL_TEXT_LIMIT // 2:
        clean = _cut_utf16(clean, EXCEL_TEXT_LIMIT)
    if not clean.startswith("="):
        return clean
    cell = WriteOnlyCell(sheet, value=clean)
    cell.data_type = "s"
    return cell


_NOT_XML = re.compile(ILLEGAL_CHARACTERS_RE.pattern + "|[\ud800-\udfff\ufffe\uffff]")
_ESCAPED = re.compile(r"_x[0-9A-Fa-f]{4}_")
_NEEDS_CARE = re.compile(f"{_NOT_XML.pattern}|{_ESCAPED.pattern}")


def _cut_utf16(text: str, units: int) -> str:
    """The longest start of ``text`` that fits in ``units`` UTF-16 code units."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > units:
            return text[:index]
    return text


def _header(sheet, name: str) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=name)
    cell.font = _HEADER_FONT
    cell.fill = _HEADER_FILL
    cell.alignment = Alignment(vertical="center")
    return cell


def _label(sheet, name: str) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=name)
    cell.font = Font(bold=True)
    return cell


def _title(sheet, text: str) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=text)
    cell.font = Font(bold=True, size=14)
    return cell


def _day(sheet, day: dt.date | None, number_format: str = DAY_FORMAT) -> WriteOnlyCell | str:
    if day is None:
        return "-"
    if day.year < 1900:  # Excel has no dates before 1900
        return day.isoformat()
    cell = WriteOnlyCell(sheet, value=day)
    cell.number_format = number_format
    return cell


def _print_landscape(sheet) -> None:
    """Print across, every column on one page wide."""
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr.fitToPage = True


def _period_start(day: dt.date, period: str) -> dt.date:
    if period == "week":
        return day - dt.timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def _next_period(start: dt.date, period: str) -> dt.date:
    if period == "week":
        return start + dt.timedelta(days=7)
    if period == "month":
        return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return start + dt.timedelta(days=1)
