"""The Excel front end: worksheet functions (xlwings UDFs) and the ribbon's entry points (VBA ``RunPython``).

Worksheet functions read the local opt-out store only, so they never wait on the network and cost no API call;
Refresh syncs the store (and its campaign reports, when the sign-in allows them) and fills the ``OptOuts`` table.
Both are thin: the work is in :mod:`ccoptout_xl.store`.
Names of sheets and named cells live here, the table's name and columns in :mod:`ccoptout_xl.columns`; the
workbook build uses the same ones.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import numbers
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import xlwings as xw
from dateutil import tz as dateutil_tz

from . import service
from .columns import COLUMNS, FUNCTION_COLUMNS, TABLE_NAME, campaign_label, headers
from .dates import parse_when
from .exceptions import CcOptOutError, UsageError
from .formats import neutralise
from .service import MAX_LATEST, CampaignCount, OptOut, OptOutQuery

log = logging.getLogger(__name__)
OPTOUTS_SHEET = "Opt-outs"
SETTINGS_SHEET = "Settings"
TABLE = TABLE_NAME
TABLE_HEADER = headers()  # the report's columns, in its order (ccoptout_xl.columns)
FUNCTION_HEADER = headers(FUNCTION_COLUMNS)  # the same, without what needs the API (campaign and list names)
CAMPAIGN_HEADER = ["Campaign", "Last sent", "Opt-outs"]  # what OPTOUTS_BY_CAMPAIGN spills
# Named cells of the Settings sheet: the query (inputs) and what the last refresh did (outputs).
SINCE, UNTIL, LIMIT, INCLUDE_DELETED, FULL_SYNC = "Since", "Until", "Limit", "IncludeDeleted", "FullSync"
LAST_REFRESHED, ROW_COUNT, STATUS = "LastRefreshed", "RowCount", "Status"
NO_DATA = "No opt-out data yet: click Refresh on the Opt-outs tab"
NO_CAMPAIGN_DATA = (
    "No campaign data yet: Refresh with a sign-in that allows campaign reports (Opt-outs tab > Sign in, then Refresh)"
)
PROGRESS_PREFIX = "Opt-outs Refresh"  # what the status bar shows while Refresh works
EXCEL_EPOCH = dt.datetime(1899, 12, 30)  # serial 0 of the 1900 date system (which counts a 29 Feb 1900)
LAST_SERIAL = 2_958_465  # 31 December 9999

# -- worksheet functions ------------------------------------------------------------------------------------


# Excel error values (#N/A...) reach Python as None unless asked for as text; as text they get a clear message.
# Argument names become the VBA wrapper's, so none may be a VBA keyword ("Until" is one).
#
# What Insert Function shows is written here once, where xlwings' "Import Functions" reads it: the docstring is a
# function's description, ``category`` its category, an argument's ``doc`` its help. The workbook build turns the
# same texts into the ``Application.MacroOptions`` calls that its Workbook_Open makes (workbook/build.py), so each
# is plain text, one line, ASCII, at most 255 characters (what MacroOptions takes).
FUNCTION_CATEGORY = "Opt-outs"
ARGUMENT_HELP = {
    "since": 'The first day, inclusive: a date, DATE(2026,5,1), TODAY()-30, or text such as "2026-05-01" or "30d".',
    "until_date": "Optional. The day to stop before (exclusive): a date like since; blank for up to now.",
    "limit": f"Optional. At most this many rows, the newest: a whole number from 1 to {MAX_LATEST:,}.",
    "include_deleted": "Optional. TRUE to include contacts that were deleted; FALSE or blank leaves them out.",
    "n": f"How many of the most recent opt-outs: a whole number from 1 to {MAX_LATEST:,}.",
}


@xw.func(category=FUNCTION_CATEGORY)
@xw.arg("since", err_to_str=True, doc=ARGUMENT_HELP["since"])
@xw.arg("until_date", err_to_str=True, doc=ARGUMENT_HELP["until_date"])
@xw.arg("limit", err_to_str=True, doc=ARGUMENT_HELP["limit"])
@xw.arg("include_deleted", err_to_str=True, doc=ARGUMENT_HELP["include_deleted"])
def OPTOUTS_SINCE(since: Any, until_date: Any = None, limit: Any = None, include_deleted: Any = False) -> Any:
    """The opt-outs from since to until_date (exclusive), newest first, with a header row, as of the last Refresh."""
    return _answer(lambda store: _rows(store, _query(since, until_date, limit, include_deleted, since_required=True)))


@xw.func(category=FUNCTION_CATEGORY)
@xw.arg("n", err_to_str=True, doc=ARGUMENT_HELP["n"])
def OPTOUTS_LATEST(n: Any) -> Any:
    """The n most recent opt-outs, newest first, with a header row, as of the last Refresh."""
    return _answer(lambda store: _rows(store, OptOutQuery(latest=_count(n, "n"))))


@xw.func(category=FUNCTION_CATEGORY)
@xw.arg("since", err_to_str=True, doc=ARGUMENT_HELP["since"])
@xw.arg("until_date", err_to_str=True, doc=ARGUMENT_HELP["until_date"])
def OPTOUTS_COUNT(since: Any, until_date: Any = None) -> Any:
    """How many opt-outs from since to until_date (exclusive), as of the last Refresh."""
    return _answer(lambda store: len(store.query(_query(since, until_date, None, False, since_required=True))))


@xw.func(category=FUNCTION_CATEGORY)
@xw.arg("since", err_to_str=True, doc=ARGUMENT_HELP["since"])
@xw.arg("until_date", err_to_str=True, doc=ARGUMENT_HELP["until_date"])
def OPTOUTS_BY_CAMPAIGN(since: Any, until_date: Any = None) -> Any:
    """Opt-outs per campaign from since to until_date (exclusive), most first, as of the last Refresh."""
    return _answer(lambda store: _campaign_rows(store, _query(since, until_date, None, False, since_required=True)))


@xw.func(category=FUNCTION_CATEGORY)
def OPTOUTS_SYNCED_AT() -> Any:
    """When Refresh last synced the opt-out data, in this computer's time zone."""
    return _answer(lambda store: _local(store.last_sync_at) or NO_DATA)


def _answer(compute: Callable[[Any], Any]) -> Any:
    """Run a worksheet function on the local store: a one-line message in the cell for any problem."""
    try:
        with service.last_store() as store:
            return NO_DATA if store is None else compute(store)
    except Exception as exc:  # a cell shows one line, never a traceback
        return one_line(exc)


def _rows(store: Any, query: OptOutQuery) -> list[list[Any]]:
    rows = [_function_row(o) for o in store.query(query)]
    return [FUNCTION_HEADER, *rows] if rows else [FUNCTION_HEADER, ["(none)"] + [""] * (len(FUNCTION_HEADER) - 1)]


def _campaign_rows(store: Any, query: OptOutQuery) -> list[list[Any]] | str:
    """OPTOUTS_BY_CAMPAIGN's rows: a header, each campaign (most first), then the opt-outs through none. Counted
    like OPTOUTS_COUNT (deleted contacts left out), so the rows add up to it. Before campaign reports were ever
    synced (a sign-in without them), or when they do not reach back to ``since``, a message says so: every opt-out
    would otherwise land in the row without a campaign."""
    counts: list[CampaignCount] = store.campaign_counts(query)
    if not any(row.campaign_id is not None for row in counts) and not store.campaigns():
        return NO_CAMPAIGN_DATA
    if not store.campaigns_cover(query.since):
        start = _local(query.since)
        return (
            f"The campaign data does not reach back to {start:%Y-%m-%d}: set Since on the Settings sheet to that "
            "date or earlier (or blank), then Refresh"
        )
    return [CAMPAIGN_HEADER, *(_campaign_row(row) for row in counts)]


def _campaign_row(row: CampaignCount) -> list[Any]:
    # The name as it is: what a function returns is a value, never read as a formula (as the Reason of
    # OPTOUTS_SINCE; an apostrophe prefix would show). The last send as a local date-time, as the other dates.
    return [campaign_label(row.campaign_id, row.campaign_name), _local(row.sent_at) or "", row.optouts]


def _function_row(optout: OptOut) -> list[Any]:
    # The table's columns that need no API call, in its order. The instant as a local datetime, so Excel shows a
    # date: worksheet functions run on Windows only, where pywin32 passes the milliseconds on (a COM date is a
    # serial number). Text as it is: what a function returns is a value, never read as a formula.
    values = (column.value(optout) for column in FUNCTION_COLUMNS)
    return [_local(value) if isinstance(value, dt.datetime) else value for value in values]


def _query(since: Any, until: Any, limit: Any, include_deleted: Any, *, since_required: bool) -> OptOutQuery:
    start = to_moment(since, "since", required=since_required)
    end = to_moment(until, "until_date")
    latest = None if _blank(limit) else _count(limit, "limit")
    return OptOutQuery(since=start, until=end, latest=latest, include_deleted=_flag(include_deleted))


# -- reading Excel's values ---------------------------------------------------------------------------------


def to_moment(value: Any, name: str, *, required: bool = False) -> dt.datetime | None:
    """An aware instant from what Excel passes for a date: a date cell (datetime), a serial number (from
    ``TODAY()`` or ``DATE()``), or text ("2026-05-01", "5/1/2026", "30d"); dates are in this computer's time zone."""
    zone = dateutil_tz.tzlocal()
    if _blank(value):
        if required:
            raise UsageError(f'{name}: a date is needed, e.g. DATE(2026,5,1) or "2026-05-01".')
        return None
    if isinstance(value, bool):
        raise UsageError(f"{name}: {str(value).upper()} is not a date; give a date, e.g. DATE(2026,5,1).")
    if isinstance(value, dt.datetime):
        local = value if value.tzinfo else value.replace(tzinfo=zone)
        return dateutil_tz.resolve_imaginary(local).astimezone(dt.timezone.utc)
    if isinstance(value, dt.date):
        return to_moment(dt.datetime.combine(value, dt.time()), name)
    if isinstance(value, numbers.Real):
        if not 0 < float(value) <= LAST_SERIAL:
            raise UsageError(f"{name}: {value:g} is not a date serial number (1 to {LAST_SERIAL:,}).")
        return to_moment(EXCEL_EPOCH + dt.timedelta(days=float(value)), name)
    if isinstance(value, str):
        return parse_when(value, zone, what=name)
    raise UsageError(f"{name}: {value!r} is not a date; give a date, e.g. DATE(2026,5,1).")


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise UsageError(f"{name}: give a whole number from 1 to {MAX_LATEST:,}.")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{name}: {value!r} is not a number; give a whole number from 1 to {MAX_LATEST:,}.") from None
    if not math.isfinite(number) or number != int(number) or not 1 <= number <= MAX_LATEST:
        raise UsageError(f"{name}: {value} is not a whole number from 1 to {MAX_LATEST:,}.")
    return int(number)


def _flag(value: Any) -> bool:
    if _blank(value):
        return False
    if isinstance(value, (bool, numbers.Real)):
        return bool(value)
    if isinstance(value, str) and value.strip().upper() in ("TRUE", "YES", "1", "FALSE", "NO", "0"):
        return value.strip().upper() in ("TRUE", "YES", "1")
    raise UsageError(f"include_deleted: give TRUE or FALSE, not {value!r}.")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _local(moment: dt.datetime | None) -> dt.datetime | None:
    """A naive local datetime, as Excel shows dates (None stays None)."""
    return None if moment is None else _naive_local(moment)


def _naive_local(moment: dt.datetime) -> dt.datetime:
    """A naive local datetime, as Excel shows dates; to the microsecond, so the API's milliseconds stay."""
    return moment.astimezone(dateutil_tz.tzlocal()).replace(tzinfo=None)


def serial(local: dt.datetime) -> float:
    """The Excel serial number of a naive local date-time (what a date cell holds), milliseconds included."""
    return (local - EXCEL_EPOCH) / dt.timedelta(days=1)


# -- the ribbon (RunPython) ---------------------------------------------------------------------------------


def refresh(book: Any = None) -> None:
    """Ribbon "Refresh": sync the store, then fill the OptOuts table with what the Settings sheet asks for.

    The sync never waits on the weekly backstop full sync unless the store is new or "Full sync" is set on the
    Settings sheet: the status cell says when one is due, and what the sync did. The Campaign column is filled
    when the sign-in allows campaign reports (they are synced down to Since); otherwise it stays empty and the
    status cell says so and what to do (sign in again). The rows go in one bulk write. If anything fails, the
    table keeps its rows and the status cell says what went wrong and what to do. While it works, Excel's status
    bar shows how far it got (Excel is blocked meanwhile); afterwards Excel has its own status bar back, also after
    a failure.
    """
    book = book or xw.Book.caller()
    with _reporting(book, "Refresh"), _status_bar(book) as show:
        check_table(book.sheets[OPTOUTS_SHEET])
        query = _query(
            _setting(book, SINCE), _setting(book, UNTIL), _setting(book, LIMIT), _setting(book, INCLUDE_DELETED),
            since_required=False,
        )  # fmt: skip
        show(f"{PROGRESS_PREFIX}: asking Constant Contact for new opt-outs...")
        with service.connect() as client:

            def progress(fetched: int, total: int | None) -> None:
                show(progress_text(fetched, total, client.stats.pages))

            policy = service.StorePolicy(refresh=True, backstop=False, full=_flag(_optional_setting(book, FULL_SYNC)))
            answer = service.get_optouts(
                client, query, policy, list_names=True, campaigns=service.CAMPAIGNS_IF_ALLOWED, on_progress=progress
            )
        try:
            rows = [table_row(o, answer.list_names) for o in answer]  # list ids where names could not be read
        finally:
            answer.close()
        show(f"{PROGRESS_PREFIX}: writing {len(rows):,} {'row' if len(rows) == 1 else 'rows'} to the table...")
        write_table(book.sheets[OPTOUTS_SHEET], rows)
        book.names[LAST_REFRESHED].refers_to_range.value = dt.datetime.now().replace(microsecond=0)
        book.names[ROW_COUNT].refers_to_range.value = len(rows)
        notes = "".join(f" Note: {one_line_text(notice)}" for notice in answer.notices)
        synced = f" {sync_text(answer.synced)}" if answer.synced else ""
        _status(book, f"OK: {len(rows):,} opt-outs ({query.describe(dateutil_tz.tzlocal())}).{synced}{notes}")
        recalculate(book)


def sync_text(report: service.SyncReport) -> str:
    """What Refresh's sync did, for the status cell: its kind, calls, changes, and whether a full sync is due."""
    if report.kind == "none":
        return "Synced by another process meanwhile."
    what = "a full sync" if report.kind == "full" else "new opt-outs read, counts compared"
    if not report.counted and report.kind != "full":
        what = "new opt-outs read"
    changes = f", {report.changes:,} {'change' if report.changes == 1 else 'changes'} found" if report.changes else ""
    text = f"Synced: {what}{changes}, {report.calls:,} API {'call' if report.calls == 1 else 'calls'}."
    due = report.full_sync_due
    if report.kind != "full" and due is not None and due <= dt.datetime.now(dt.timezone.utc):
        text += (
            " The weekly full sync is due: set Full sync to TRUE on the Settings sheet and Refresh (it reads every "
            "opt-out; the counts cannot see everything)."
        )
    return text


def check_table(sheet: Any) -> None:
    """Refuse, before any work, a table whose columns are not this version's (a workbook written by an earlier
    one): the rows are written by position and would land under the wrong headers."""
    found = sheet.tables[TABLE].header_row_range.value
    if list(found or []) != TABLE_HEADER:
        raise UsageError(
            "This workbook's OptOuts table has other columns than this version of ccoptout-xl writes: make a new "
            "copy with `ccoptout-xl workbook` (the old rows were left as they were)."
        )


def progress_text(fetched: int, total: int | None, pages: int) -> str:
    """The status bar during a Refresh: the contacts read (of how many, when the API says), and the pages."""
    of = f" of {total:,}" if total is not None else ""
    return f"{PROGRESS_PREFIX}: {fetched:,}{of} contacts read ({pages:,} {'page' if pages == 1 else 'pages'})..."


@contextlib.contextmanager
def _status_bar(book: Any) -> Iterator[Callable[[str], None]]:
    """Excel's status bar for the progress of long work; Excel's own back afterwards (``False``), also on failure.

    Progress is a courtesy: when Excel refuses it (busy, a cell being edited), the work goes on without it."""
    try:
        yield lambda text: _set_status_bar(book, text)
    finally:
        _set_status_bar(book, False)  # xlwings: False gives the status bar back to Excel


def _set_status_bar(book: Any, value: str | bool) -> None:
    try:
        book.app.status_bar = value
    except Exception as exc:
        log.debug("the status bar could not be set: %s", type(exc).__name__)


def recalculate(book: Any) -> None:
    """Recalculate every formula: the worksheet functions are not volatile and their arguments did not change,
    so an ordinary recalculation would leave them showing the old data."""
    api = getattr(book.app, "api", None)
    if api is not None and hasattr(api, "CalculateFull"):
        api.CalculateFull()  # Windows (COM)
    else:
        book.app.calculate()  # macOS: the functions are Windows-only anyway


def table_row(optout: OptOut, list_names: dict[str, str] | None = None) -> list[Any]:
    """One row of the OptOuts table. Excel runs text written through COM that looks like a formula: text gets
    the apostrophe prefix (:func:`~ccoptout_xl.formats.neutralise`), which Excel does not show.

    The opt-out date goes in as its serial number, which the workbook's date format on the column shows as a
    date-time: on macOS xlwings passes a datetime as an AppleScript date, whole seconds only, and the API's
    milliseconds would be lost; a number reaches Excel as it is on every platform. The columns and their order
    are the workbook's table's and the report's (:data:`~ccoptout_xl.columns.COLUMNS`)."""
    values = (column.value(optout, list_names) for column in COLUMNS)
    return [serial(_naive_local(value)) if isinstance(value, dt.datetime) else neutralise(value) for value in values]


def write_table(sheet: Any, rows: list[list[Any]]) -> None:
    """Resize the ``OptOuts`` table to ``rows`` and write them in one call (never cell by cell)."""
    table = sheet.tables[TABLE]
    header = table.header_row_range
    top, left = header.row, header.column
    width = len(TABLE_HEADER)
    old_rows = table.data_body_range.rows.count if table.data_body_range is not None else 0
    body = rows or [[""] * width]  # a table keeps at least one (empty) data row
    table.resize(sheet.range((top, left), (top + len(body), left + width - 1)))
    sheet.range((top + 1, left)).value = body
    if old_rows > len(body):  # rows the table no longer covers
        sheet.range((top + len(body) + 1, left), (top + old_rows, left + width - 1)).clear_contents()


def sign_in(book: Any = None) -> None:
    """Ribbon "Sign in": the device flow. The browser opens on the sign-in page and a message shows the code;
    approving in the browser and clicking OK completes it."""
    import webbrowser

    book = book or xw.Book.caller()
    with _reporting(book, "Sign-in"):

        def show(text: str) -> None:
            _status(book, text)
            book.app.alert(f"{text}\n\nApprove in the browser, then click OK; this workbook waits for it.", "Sign in")

        kept_in, account = service.sign_in(show=show, opener=webbrowser.open)
        to = f" to {neutralise(account)}" if account else ""
        _status(book, f"Signed in{to}; the sign-in is kept in {kept_in}. Click Refresh.")


def sign_out(book: Any = None) -> None:
    """Ribbon "Sign out": forget the stored sign-in."""
    book = book or xw.Book.caller()
    with _reporting(book, "Sign-out"):
        removed, _ = service.sign_out()
        _status(book, "Signed out." if removed else "Not signed in.")


@contextlib.contextmanager
def _reporting(book: Any, action: str) -> Iterator[None]:
    """Any failure of ``action`` goes to the Settings sheet's status cell as one line: no traceback dialog."""
    try:
        yield
    except Exception as exc:
        _status(book, f"{action} failed: {one_line(exc)}")


def one_line(exc: BaseException) -> str:
    """What a cell shows for a failure: the message of an expected one, only the kind of another (its text may
    hold a request header, a token or a person's address, and a workbook is shared)."""
    text = str(exc) if isinstance(exc, CcOptOutError) else f"Error: {type(exc).__name__} (unexpected)"
    return one_line_text(text) or type(exc).__name__


def one_line_text(text: str) -> str:
    """The first line of ``text``."""
    return text.splitlines()[0] if text else ""


def _status(book: Any, text: str) -> None:
    book.names[STATUS].refers_to_range.value = text


def _setting(book: Any, name: str) -> Any:
    return book.names[name].refers_to_range.value


def _optional_setting(book: Any, name: str) -> Any:
    """A setting that workbooks made by earlier versions lack (None there)."""
    names = book.names
    present = names.contains(name) if hasattr(names, "contains") else name in names
    return _setting(book, name) if present else None


def udf_names() -> Iterable[str]:
    """The worksheet functions this module offers (for the workbook build and its tests)."""
    return ("OPTOUTS_SINCE", "OPTOUTS_LATEST", "OPTOUTS_COUNT", "OPTOUTS_BY_CAMPAIGN", "OPTOUTS_SYNCED_AT")
