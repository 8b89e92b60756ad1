"""The Excel front end without Excel: worksheet functions called as Excel would, Refresh through a test double."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dateutil import tz as dateutil_tz

from ccoptout_xl import excel, service
from ccoptout_xl.campaigns import Campaign
from ccoptout_xl.columns import NO_CAMPAIGN
from ccoptout_xl.optouts import OptOut
from ccoptout_xl.query import OptOutQuery
from ccoptout_xl.sandbox import AccountSpec, Sandbox
from ccoptout_xl.sandbox.oauth import SCOPES
from ccoptout_xl.service import get_optouts
from ccoptout_xl.store import OptOutStore

from .conftest import ANCHOR, make_client, sandbox_as_api, truth

LOCAL = dateutil_tz.tzlocal()


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    spec = AccountSpec(contacts=2_000, seed=8, unsubscribed_share=0.3, anchor=ANCHOR)
    with sandbox_as_api(spec, monkeypatch, tmp_path / "cache") as sb:
        yield sb


def sign_in_with_campaigns(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """Refresh signed in to ``sandbox`` with a token that allows campaign reports (its own token does not).

    Refresh's client is not paced: reading every campaign's report takes hundreds of calls, minutes at the real
    API's 4 a second (the sandbox has no rate limit here)."""
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", sandbox.oauth.access_token(SCOPES))
    connect = service.connect
    monkeypatch.setattr(service, "connect", lambda **http: connect(**({"rate": None} | http)))
    return sandbox


@pytest.fixture
def campaign_sign_in(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The sandbox, with Refresh signed in with a token that allows campaign reports."""
    return sign_in_with_campaigns(sandbox, monkeypatch)


@pytest.fixture
def synced(sandbox: Sandbox) -> Sandbox:
    """The local store filled from the sandbox, as a Refresh would leave it."""
    get_optouts(make_client(sandbox), OptOutQuery()).close()
    return sandbox


def local(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(LOCAL).replace(tzinfo=None)


def truth_campaigns(sandbox: Sandbox) -> list[Campaign]:
    """Every campaign of the sandbox's ground truth, as the core describes one (sending activities only)."""
    return [
        Campaign(
            fact.campaign_id,
            fact.name,
            fact.last_sent,
            tuple(a.campaign_activity_id for a in fact.activities if a.role in ("primary_email", "resend")),
        )
        for fact in sandbox.account.campaigns()
    ]


def truth_with_campaigns(sandbox: Sandbox, *, include_deleted: bool = False) -> list[OptOut]:
    """The ground truth's opt-outs, newest first, each with the campaign it came through (its attribution truth)."""
    by_activity = {activity: c for c in truth_campaigns(sandbox) for activity in c.activity_ids}
    through = sandbox.account.campaign_truth()
    found = []
    for optout in truth(sandbox, include_deleted=include_deleted):
        activity = through[optout.contact_id]
        campaign = by_activity[activity] if activity is not None else None
        if campaign is not None:
            optout = replace(optout, campaign_id=campaign.campaign_id, campaign_name=campaign.name)
        found.append(optout)
    return found


def expected_campaign_rows(sandbox: Sandbox, since: dt.datetime, until: dt.datetime | None = None) -> list[list[Any]]:
    """What OPTOUTS_BY_CAMPAIGN spills for a window, counted from the ground truth: most first, then by name."""
    window = [
        o for o in truth_with_campaigns(sandbox) if since <= o.opt_out_date and (not until or o.opt_out_date < until)
    ]
    tally = Counter(o.campaign_id for o in window)
    campaigns = {c.campaign_id: c for c in truth_campaigns(sandbox)}
    rows = [(campaigns[key].name, key, campaigns[key].sent_at, n) for key, n in tally.items() if key is not None]
    rows.sort(key=lambda row: (-row[3], row[0], row[1]))
    spilled = [[name, local(sent_at) if sent_at else "", n] for name, _, sent_at, n in rows]
    return [excel.CAMPAIGN_HEADER, *spilled, [NO_CAMPAIGN, "", tally[None]]]


def expected_rows(sandbox: Sandbox, since: dt.datetime, until: dt.datetime | None = None) -> list[list[Any]]:
    return [
        [
            o.email,
            o.first_name,
            o.last_name,
            local(o.opt_out_date),
            o.opt_out_source,
            o.opt_out_reason or "",
            o.contact_id,
        ]
        for o in truth(sandbox)
        if o.opt_out_date >= since and (until is None or o.opt_out_date < until)
    ]


# -- worksheet functions ------------------------------------------------------------------------------------


def test_no_data_yet_says_what_to_do(sandbox: Sandbox) -> None:
    assert excel.OPTOUTS_SINCE(dt.datetime(2026, 5, 1)) == excel.NO_DATA
    assert excel.OPTOUTS_SYNCED_AT() == excel.NO_DATA
    assert excel.OPTOUTS_BY_CAMPAIGN(dt.datetime(2026, 5, 1)) == excel.NO_DATA
    assert sandbox.requests == []  # a worksheet function never calls the API


def since_2026() -> dt.datetime:
    return dt.datetime(2026, 5, 1, tzinfo=LOCAL).astimezone(dt.timezone.utc)


@pytest.mark.parametrize(
    "since",
    [
        dt.datetime(2026, 5, 1),  # a date cell
        46143.0,  # DATE(2026,5,1) or a serial typed in
        46143,
        "2026-05-01",
        "5/1/2026",
        "May 1 2026",
        dt.date(2026, 5, 1),
    ],
)
def test_since_accepts_every_way_excel_gives_a_date(synced: Sandbox, since: Any) -> None:
    synced.reset_log()
    spilled = excel.OPTOUTS_SINCE(since)
    assert spilled[0] == excel.FUNCTION_HEADER
    assert spilled[0] == ["Email", "First name", "Last name", "Opted out", "Source", "Reason", "Contact ID"]
    assert spilled[1:] == expected_rows(synced, since_2026())
    assert len(spilled) > 2
    assert synced.requests == []


def test_until_limit_and_deleted(synced: Sandbox) -> None:
    until = dt.datetime(2026, 9, 1)
    rows = excel.OPTOUTS_SINCE(dt.datetime(2026, 5, 1), until, 5)
    until_utc = until.replace(tzinfo=LOCAL).astimezone(dt.timezone.utc)
    assert rows[1:] == expected_rows(synced, since_2026(), until_utc)[:5]
    with_deleted = excel.OPTOUTS_SINCE(dt.datetime(2000, 1, 1), None, None, True)
    assert len(with_deleted) - 1 == len(truth(synced, include_deleted=True))
    assert excel.OPTOUTS_COUNT("2026-05-01", until) == len(expected_rows(synced, since_2026(), until_utc))


def test_latest_and_synced_at(synced: Sandbox) -> None:
    rows = excel.OPTOUTS_LATEST(3)
    assert [row[0] for row in rows[1:]] == [o.email for o in truth(synced)[:3]]
    assert excel.OPTOUTS_LATEST(3.0) == rows
    synced_at = excel.OPTOUTS_SYNCED_AT()
    assert isinstance(synced_at, dt.datetime) and abs(synced_at - dt.datetime.now()) < dt.timedelta(minutes=1)


def test_an_empty_answer_still_has_its_header(synced: Sandbox) -> None:
    assert excel.OPTOUTS_SINCE("2099-01-01") == [excel.FUNCTION_HEADER, ["(none)", "", "", "", "", "", ""]]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: excel.OPTOUTS_SINCE(None), "since: a date is needed"),
        (lambda: excel.OPTOUTS_SINCE(""), "since: a date is needed"),
        (lambda: excel.OPTOUTS_SINCE(True), "since: TRUE is not a date"),
        (lambda: excel.OPTOUTS_SINCE("soon"), "Cannot read the since 'soon'"),
        (lambda: excel.OPTOUTS_SINCE(-5.0), "since: -5 is not a date serial number"),
        (lambda: excel.OPTOUTS_SINCE("#N/A"), "Cannot read the since '#N/A'"),  # an error cell, as text
        (lambda: excel.OPTOUTS_SINCE("2026-05-01", "#REF!"), "Cannot read the until_date '#REF!'"),
        (lambda: excel.OPTOUTS_SINCE("2026-05-01", None, "#DIV/0!"), "limit: '#DIV/0!' is not a number"),
        (lambda: excel.OPTOUTS_SINCE("2026-05-01", None, "nan"), "limit: nan is not a whole number"),
        (lambda: excel.OPTOUTS_SINCE("2026-05-01", None, None, "#N/A"), "include_deleted: give TRUE or FALSE"),
        (lambda: excel.OPTOUTS_SINCE(-2146826246), "since: -2.14683e+09 is not a date serial number"),
        (lambda: excel.OPTOUTS_SINCE("2026-05-01", "2026-04-01"), "must be before the until date"),
        (lambda: excel.OPTOUTS_SINCE("2026-05-01", None, 0), "limit: 0 is not a whole number"),
        (lambda: excel.OPTOUTS_SINCE("2026-05-01", None, 2.5), "limit: 2.5 is not a whole number"),
        (lambda: excel.OPTOUTS_SINCE("2026-05-01", None, None, "maybe"), "include_deleted: give TRUE or FALSE"),
        (lambda: excel.OPTOUTS_LATEST("many"), "n: 'many' is not a number"),
        (lambda: excel.OPTOUTS_LATEST(False), "n: give a whole number"),
        (lambda: excel.OPTOUTS_COUNT(None), "since: a date is needed"),
        (lambda: excel.OPTOUTS_BY_CAMPAIGN(None), "since: a date is needed"),
        (lambda: excel.OPTOUTS_BY_CAMPAIGN(" "), "since: a date is needed"),
        (lambda: excel.OPTOUTS_BY_CAMPAIGN(False), "since: FALSE is not a date"),
        (lambda: excel.OPTOUTS_BY_CAMPAIGN("soon"), "Cannot read the since 'soon'"),
        (lambda: excel.OPTOUTS_BY_CAMPAIGN("#N/A"), "Cannot read the since '#N/A'"),
        (lambda: excel.OPTOUTS_BY_CAMPAIGN(0.0), "since: 0 is not a date serial number"),
        (lambda: excel.OPTOUTS_BY_CAMPAIGN("2026-05-01", "#VALUE!"), "Cannot read the until_date '#VALUE!'"),
        (lambda: excel.OPTOUTS_BY_CAMPAIGN("2026-05-01", 1e9), "until_date: 1e+09 is not a date serial number"),
        (lambda: excel.OPTOUTS_BY_CAMPAIGN("2026-05-01", "2026-05-01"), "must be before the until date"),
    ],
)
def test_bad_arguments_are_one_line_in_the_cell(synced: Sandbox, call, message: str) -> None:
    answer = call()
    assert isinstance(answer, str) and message in answer and "\n" not in answer and "Traceback" not in answer


# -- Refresh, through a test double of the xlwings objects it uses ---------------------------------------------


class Grid:
    """The cells of one sheet, and how many writes reached them."""

    def __init__(self) -> None:
        self.cells: dict[tuple[int, int], Any] = {}
        self.writes = 0


class FakeRange:
    def __init__(self, grid: Grid, first: tuple[int, int], last: tuple[int, int] | None = None) -> None:
        self.grid, self.first, self.last = grid, first, last or first

    @property
    def row(self) -> int:
        return self.first[0]

    @property
    def column(self) -> int:
        return self.first[1]

    @property
    def rows(self) -> Any:
        return type("Rows", (), {"count": self.last[0] - self.first[0] + 1})()

    @property
    def value(self) -> Any:
        if self.first[0] == self.last[0] and self.first[1] != self.last[1]:  # one row: a list, as xlwings gives
            return [self.grid.cells.get((self.first[0], c)) for c in range(self.first[1], self.last[1] + 1)]
        return self.grid.cells.get(self.first)

    @value.setter
    def value(self, value: Any) -> None:
        self.grid.writes += 1
        rows = value if isinstance(value, list) and value and isinstance(value[0], list) else [[value]]
        for r, row in enumerate(rows):
            for c, cell in enumerate(row):
                self.grid.cells[(self.first[0] + r, self.first[1] + c)] = cell

    def clear_contents(self) -> None:
        for r in range(self.first[0], self.last[0] + 1):
            for c in range(self.first[1], self.last[1] + 1):
                self.grid.cells.pop((r, c), None)


class FakeTable:
    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.ref = ((1, 1), (2, len(excel.TABLE_HEADER)))

    @property
    def header_row_range(self) -> FakeRange:
        return FakeRange(self.grid, self.ref[0], (self.ref[0][0], self.ref[1][1]))

    @property
    def data_body_range(self) -> FakeRange:
        return FakeRange(self.grid, (self.ref[0][0] + 1, self.ref[0][1]), self.ref[1])

    def resize(self, new: FakeRange) -> None:
        self.ref = (new.first, new.last)


class FakeSheet:
    def __init__(self) -> None:
        self.grid = Grid()
        self.tables = {excel.TABLE: FakeTable(self.grid)}
        for column, header in enumerate(excel.TABLE_HEADER, start=1):  # as the built workbook has them
            self.grid.cells[(1, column)] = header

    def range(self, first: tuple[int, int], last: tuple[int, int] | None = None) -> FakeRange:
        return FakeRange(self.grid, first, last)

    def rows(self) -> list[list[Any]]:
        table = self.tables[excel.TABLE]
        (top, left), (bottom, right) = table.ref
        return [[self.grid.cells.get((r, c)) for c in range(left, right + 1)] for r in range(top + 1, bottom + 1)]


class FakeName:
    def __init__(self, value: Any = None) -> None:
        self.refers_to_range = type("Cell", (), {"value": value})()


class FakeApp:
    """Excel's Application: a full recalculation through COM, the message box of ``alert``, and the status bar
    (every value set, in order; ``refuse_status_bar`` makes it fail as a busy Excel does)."""

    def __init__(self, events: list[str] | None = None, *, refuse_status_bar: bool = False) -> None:
        self.full_calculations = 0
        self.events = events if events is not None else []
        self.api = type("Api", (), {"CalculateFull": lambda _: self._calculate_full()})()
        self.status_bars: list[str | bool] = []
        self.refuse_status_bar = refuse_status_bar

    @property
    def status_bar(self) -> str | bool:
        return self.status_bars[-1] if self.status_bars else False

    @status_bar.setter
    def status_bar(self, value: str | bool) -> None:
        if self.refuse_status_bar:
            raise RuntimeError("Call was rejected by callee.")  # what pywin32 says while a cell is being edited
        self.status_bars.append(value)

    def _calculate_full(self) -> None:
        self.full_calculations += 1

    def alert(self, prompt: str, title: str | None = None) -> None:
        self.events.append(f"alert: {prompt}")


class FakeBook:
    def __init__(self, **settings: Any) -> None:
        self.sheets = {excel.OPTOUTS_SHEET: FakeSheet()}
        self.names = {name: FakeName() for name in (excel.LAST_REFRESHED, excel.ROW_COUNT, excel.STATUS)}
        for name in (excel.SINCE, excel.UNTIL, excel.LIMIT, excel.INCLUDE_DELETED, excel.FULL_SYNC):
            self.names[name] = FakeName(settings.get(name))
        self.app = FakeApp()

    def value(self, name: str) -> Any:
        return self.names[name].refers_to_range.value


def test_refresh_fills_the_table_in_one_write(sandbox: Sandbox) -> None:
    book = FakeBook(Since=dt.datetime(2026, 5, 1), Limit=40.0, IncludeDeleted=False)
    excel.refresh(book)
    sheet = book.sheets[excel.OPTOUTS_SHEET]
    names = {item["list_id"]: item["name"] for item in sandbox.account.lists()}
    expected = [excel.table_row(o, names) for o in truth(sandbox) if o.opt_out_date >= since_2026()][:40]
    assert sheet.rows() == expected and len(expected) == 40
    assert sheet.grid.writes == 1  # one bulk write, never cell by cell
    assert book.value(excel.ROW_COUNT) == 40 and book.value(excel.STATUS).startswith("OK: 40 opt-outs")
    assert isinstance(book.value(excel.LAST_REFRESHED), dt.datetime)
    assert book.app.full_calculations == 1  # not volatile: only a full recalculation shows the new data
    # Text that Excel would run as a formula is written with its text prefix.
    reasons = [row[excel.TABLE_HEADER.index("Reason")] for row in sheet.rows()]
    assert all(not reason.startswith(("=", "+", "-", "@")) for reason in reasons)


def test_refresh_shrinks_the_table_and_clears_what_it_left(sandbox: Sandbox) -> None:
    book = FakeBook(Since="2026-01-01")
    excel.refresh(book)
    sheet = book.sheets[excel.OPTOUTS_SHEET]
    many = len(sheet.rows())
    book.names[excel.LIMIT].refers_to_range.value = 2
    excel.refresh(book)
    assert len(sheet.rows()) == 2 < many
    assert all(sheet.grid.cells.get((r, 1)) is None for r in range(4, many + 2))


def test_a_token_pasted_across_two_lines_never_reaches_the_workbook(sandbox: Sandbox, monkeypatch) -> None:
    book = FakeBook(Since="2026-01-01")
    token = sandbox.token
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", token[:300] + "\r\n" + token[300:])
    excel.refresh(book)
    status = book.value(excel.STATUS)
    assert status.startswith("Refresh failed:") and "not an access token" in status
    assert token[280:300] not in status and token[300:320] not in status
    assert excel.one_line(ValueError(f"Bearer {token}")) == "Error: ValueError (unexpected)"


def test_a_failed_refresh_keeps_the_rows_and_says_why(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    book = FakeBook(Since="2026-01-01")
    excel.refresh(book)
    sheet = book.sheets[excel.OPTOUTS_SHEET]
    before = sheet.rows()
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", "expired-or-wrong")
    excel.refresh(book)
    assert sheet.rows() == before
    status = book.value(excel.STATUS)
    assert status.startswith("Refresh failed:") and "HTTP 401" in status and "expired-or-wrong" not in status
    book.names[excel.SINCE].refers_to_range.value = "someday"
    excel.refresh(book)
    assert sheet.rows() == before and "Cannot read the since 'someday'" in book.value(excel.STATUS)


PROGRESS = re.compile(r"Opt-outs Refresh: ([\d,]+)(?: of ([\d,]+))? contacts read \((\d+) pages?\)\.\.\.")


def test_refresh_shows_its_progress_in_the_status_bar_and_gives_it_back(sandbox: Sandbox) -> None:
    book = FakeBook(Since="2026-01-01")
    excel.refresh(book)
    shown = book.app.status_bars
    assert shown[0] == "Opt-outs Refresh: asking Constant Contact for new opt-outs..."
    progress = [PROGRESS.fullmatch(text) for text in shown[1:-2]]
    assert len(progress) >= 2 and all(progress), shown  # a first sync reads more than one page
    fetched = [int(match.group(1).replace(",", "")) for match in progress if match]
    pages = [int(match.group(3)) for match in progress if match]
    totals = {match.group(2) for match in progress if match}
    assert fetched == sorted(fetched) and pages == list(range(1, len(pages) + 1))
    assert totals != {None} and f"{fetched[-1]:,}" in totals  # the total, when the API gives it, is reached
    rows = book.value(excel.ROW_COUNT)
    assert shown[-2] == f"Opt-outs Refresh: writing {rows} rows to the table..."
    assert shown[-1] is False and False not in shown[:-1]  # Excel has its status bar back, once, at the end
    assert book.value(excel.STATUS).startswith(f"OK: {rows} opt-outs")


def test_the_status_bar_is_given_back_after_a_failed_refresh(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    book = FakeBook(Since="someday")  # fails before any call
    excel.refresh(book)
    assert book.app.status_bars == [False] and book.value(excel.STATUS).startswith("Refresh failed:")
    book = FakeBook(Since="2026-01-01")
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", "expired-or-wrong")  # fails at the API, after progress began
    excel.refresh(book)
    assert book.app.status_bars[0].startswith("Opt-outs Refresh:") and book.app.status_bars[-1] is False
    assert "HTTP 401" in book.value(excel.STATUS)


def test_a_status_bar_that_excel_refuses_does_not_stop_refresh(sandbox: Sandbox) -> None:
    book = FakeBook(Since="2026-01-01")
    book.app = FakeApp(refuse_status_bar=True)
    excel.refresh(book)
    assert book.value(excel.STATUS).startswith("OK:") and book.sheets[excel.OPTOUTS_SHEET].rows()


def test_progress_text_with_and_without_the_total() -> None:
    assert excel.progress_text(1500, 20000, 3) == "Opt-outs Refresh: 1,500 of 20,000 contacts read (3 pages)..."
    assert excel.progress_text(500, None, 1) == "Opt-outs Refresh: 500 contacts read (1 page)..."


def test_a_refresh_with_no_rows_leaves_one_empty_table_row(sandbox: Sandbox) -> None:
    book = FakeBook(Since="2099-01-01")
    excel.refresh(book)
    assert book.sheets[excel.OPTOUTS_SHEET].rows() == [[""] * len(excel.TABLE_HEADER)]
    assert book.value(excel.ROW_COUNT) == 0


def test_sign_in_opens_the_browser_before_the_blocking_message_then_sign_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import webbrowser

    with Sandbox(AccountSpec(contacts=50, seed=1, anchor=ANCHOR), rate_limit=None) as sb:
        sb.oauth.auto_approve = True
        sb.oauth.device_interval = 0.05
        monkeypatch.setenv("CCOPTOUT_CONFIG_DIR", str(tmp_path / "config"))
        monkeypatch.setenv("CCOPTOUT_CLIENT_ID", sb.oauth.client_id)
        monkeypatch.setenv("CCOPTOUT_AUTH_URL", sb.auth_url)
        monkeypatch.setenv("CCOPTOUT_API_URL", sb.base_url)  # signing in reads the account's name
        events: list[str] = []
        monkeypatch.setattr(webbrowser, "open", lambda url: events.append(f"browser: {url}"))
        book = FakeBook()
        book.app = FakeApp(events)
        excel.sign_in(book)
        assert [event.split(":")[0] for event in events] == ["browser", "alert"]
        assert "enter the code" in events[1]
        status = book.value(excel.STATUS)
        assert status.startswith(f"Signed in to {sb.account.summary()['organization_name']}; the sign-in is kept in")
        excel.sign_out(book)
        assert book.value(excel.STATUS) == "Signed out."
        excel.sign_out(book)
        assert book.value(excel.STATUS) == "Not signed in."
        monkeypatch.delenv("CCOPTOUT_CLIENT_ID")
        excel.sign_in(book)
        assert book.value(excel.STATUS).startswith("Sign-in failed: No Constant Contact app is set up")


def test_a_workbook_from_an_earlier_version_is_refused_before_any_work(sandbox: Sandbox) -> None:
    book = FakeBook(Since="2026-01-01")
    sheet = book.sheets[excel.OPTOUTS_SHEET]
    old = ["Email", "Opted out", "Source", "Reason", "First name", "Last name", "Lists", "Contact ID"]  # 097439a's
    for column, header in enumerate(old, start=1):
        sheet.grid.cells[(1, column)] = header
    sheet.grid.cells[(2, 1)] = "an earlier row"
    sandbox.reset_log()
    excel.refresh(book)
    assert "other columns" in book.value(excel.STATUS) and "ccoptout-xl workbook" in book.value(excel.STATUS)
    assert sheet.grid.cells[(2, 1)] == "an earlier row" and list(sandbox.requests) == []


# -- Refresh and the weekly backstop full sync ---------------------------------------------------------------------


def backstop_overdue(sandbox: Sandbox) -> None:
    """Make the store's last full sync eight days old (the backstop is due after seven)."""
    with OptOutStore.for_client(make_client(sandbox)) as store:
        week_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=8)
        with store.db:
            store.db.execute("UPDATE meta SET value = ? WHERE key = 'full_sync_at'", (week_ago.isoformat(),))


def test_refresh_does_not_wait_on_a_due_full_sync_but_says_it_is_due(sandbox: Sandbox) -> None:
    book = FakeBook(Since="2026-01-01")
    excel.refresh(book)  # a new store: synced in full
    assert "Synced: a full sync" in book.value(excel.STATUS)
    backstop_overdue(sandbox)
    sandbox.reset_log()
    excel.refresh(book)
    status = book.value(excel.STATUS)
    assert "Synced: new opt-outs read, counts compared, 2 API calls." in status
    assert "The weekly full sync is due: set Full sync to TRUE" in status
    assert sum(r.path == "/v3/contacts" for r in sandbox.requests) == 2


def test_refresh_with_full_sync_set_reads_everything(sandbox: Sandbox) -> None:
    book = FakeBook(Since="2026-01-01")
    excel.refresh(book)
    backstop_overdue(sandbox)
    book.names[excel.FULL_SYNC].refers_to_range.value = True
    excel.refresh(book)
    status = book.value(excel.STATUS)
    assert "Synced: a full sync" in status and "is due" not in status


def test_a_workbook_from_before_full_sync_still_refreshes(sandbox: Sandbox) -> None:
    book = FakeBook(Since="2026-01-01")
    del book.names[excel.FULL_SYNC]  # built by an earlier version
    excel.refresh(book)
    assert book.value(excel.STATUS).startswith("OK: ")


# -- campaigns: the Campaign column and OPTOUTS_BY_CAMPAIGN -----------------------------------------------------


def campaign_requests(sandbox: Sandbox) -> list[str]:
    return [r.path for r in sandbox.requests if r.path.startswith(("/v3/reports", "/v3/emails"))]


def test_refresh_fills_the_campaign_column_when_the_sign_in_allows_it(campaign_sign_in: Sandbox) -> None:
    sandbox = campaign_sign_in
    book = FakeBook(Since="2026-01-01")
    excel.refresh(book)
    status = book.value(excel.STATUS)
    assert status.startswith("OK:") and "Note:" not in status, status
    names = {item["list_id"]: item["name"] for item in sandbox.account.lists()}
    since = dt.datetime(2026, 1, 1, tzinfo=LOCAL)
    expected = [excel.table_row(o, names) for o in truth_with_campaigns(sandbox) if o.opt_out_date >= since]
    rows = book.sheets[excel.OPTOUTS_SHEET].rows()
    assert rows == expected
    campaigns = [row[excel.TABLE_HEADER.index("Campaign")] for row in rows]
    assert len({c for c in campaigns if c}) > 5 and "" in campaigns  # many campaigns, and opt-outs through none
    assert campaign_requests(sandbox)  # the campaign reports were read


def test_refresh_fills_the_campaign_column_of_new_opt_outs_never_as_a_formula(campaign_sign_in: Sandbox) -> None:
    sandbox = campaign_sign_in
    book = FakeBook()
    excel.refresh(book)
    # Two people leave now through emails whose names a spreadsheet would run as formulas ("-30%", "@home").
    campaigns = {c.name: c for c in truth_campaigns(sandbox) if c.sent_at is not None}
    tricky = [campaigns["-30% on everything"], campaigns["@home: winter essentials"]]
    through = {}
    for campaign in tricky:
        (contact_id,) = sandbox.account.opt_out(1, campaign_activity_id=campaign.activity_ids[0])
        through[contact_id] = campaign.name
    excel.refresh(book)
    assert book.value(excel.STATUS).startswith("OK:")
    rows = book.sheets[excel.OPTOUTS_SHEET].rows()
    column = excel.TABLE_HEADER.index("Campaign"), excel.TABLE_HEADER.index("Contact ID")
    written = {row[column[1]]: row[column[0]] for row in rows}
    prefixed = {contact_id: "'" + name for contact_id, name in through.items()}  # a prefix Excel does not show
    assert {contact_id: written[contact_id] for contact_id in through} == prefixed
    names = {item["list_id"]: item["name"] for item in sandbox.account.lists()}
    assert rows == [excel.table_row(o, names) for o in truth_with_campaigns(sandbox)]
    # The function returns values, which Excel never runs: the names as they are, no prefix to show.
    spilled = excel.OPTOUTS_BY_CAMPAIGN(dt.datetime.now() - dt.timedelta(days=1))
    by_name = sorted(through.values())  # one each: by name
    assert spilled[1:] == [
        *([name, local(campaigns[name].sent_at), 1] for name in by_name),
        [NO_CAMPAIGN, "", 0],
    ]


def test_refresh_without_campaign_permission_leaves_the_column_empty_and_says_what_to_do(sandbox: Sandbox) -> None:
    book = FakeBook(Since="2026-01-01")  # the sandbox's own token: a sign-in from before campaign reports
    excel.refresh(book)
    status = book.value(excel.STATUS)
    assert status.startswith("OK:") and "\n" not in status
    assert "Note: The sign-in does not allow campaign reports" in status and "sign in again" in status
    rows = book.sheets[excel.OPTOUTS_SHEET].rows()
    names = {item["list_id"]: item["name"] for item in sandbox.account.lists()}
    since = dt.datetime(2026, 1, 1, tzinfo=LOCAL)
    assert rows == [excel.table_row(o, names) for o in truth(sandbox) if o.opt_out_date >= since] and rows
    assert {row[excel.TABLE_HEADER.index("Campaign")] for row in rows} == {""}
    assert excel.OPTOUTS_BY_CAMPAIGN("2026-01-01") == excel.NO_CAMPAIGN_DATA


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (dt.datetime(2026, 5, 1), None),
        (dt.datetime(2026, 8, 1), dt.datetime(2026, 10, 1)),
        (dt.datetime(1990, 1, 1), None),
    ],
)
def test_by_campaign_counts_what_the_ground_truth_counts(
    campaign_sign_in: Sandbox, since: dt.datetime, until: dt.datetime | None
) -> None:
    sandbox = campaign_sign_in
    excel.refresh(FakeBook())  # every opt-out, and the campaign reports down to the first
    sandbox.reset_log()
    spilled = excel.OPTOUTS_BY_CAMPAIGN(since, until)
    assert sandbox.requests == []  # from the local store only
    start = since.replace(tzinfo=LOCAL).astimezone(dt.timezone.utc)
    end = until and until.replace(tzinfo=LOCAL).astimezone(dt.timezone.utc)
    assert spilled == expected_campaign_rows(sandbox, start, end)
    assert spilled[0] == ["Campaign", "Last sent", "Opt-outs"] and spilled[-1][0] == "(no campaign)"
    assert len(spilled) > 4 and all(isinstance(row[1], dt.datetime) for row in spilled[1:-1])
    assert sum(row[2] for row in spilled[1:]) == excel.OPTOUTS_COUNT(since, until)  # every opt-out once
    assert excel.OPTOUTS_BY_CAMPAIGN(since.strftime("%Y-%m-%d"), until) == spilled  # text dates too


def test_by_campaign_in_a_window_without_opt_outs_is_the_row_of_none(campaign_sign_in: Sandbox) -> None:
    excel.refresh(FakeBook())
    assert excel.OPTOUTS_BY_CAMPAIGN("2099-01-01") == [excel.CAMPAIGN_HEADER, [NO_CAMPAIGN, "", 0]]


def test_by_campaign_before_campaign_data_says_what_to_do(synced: Sandbox) -> None:
    # A store synced without campaigns (the command line's fetch, or a sign-in without the permission).
    answer = excel.OPTOUTS_BY_CAMPAIGN("2026-05-01")
    assert answer == excel.NO_CAMPAIGN_DATA
    assert answer.startswith("No campaign data yet: Refresh with a sign-in that allows campaign reports")


def test_by_campaign_says_when_the_campaign_data_does_not_reach_back_to_since(campaign_sign_in: Sandbox) -> None:
    book = FakeBook(Since="2026-09-01")  # the campaign reports are read down to the Settings sheet's Since
    excel.refresh(book)
    answer = excel.OPTOUTS_BY_CAMPAIGN("2026-05-01")
    assert isinstance(answer, str) and answer.startswith("The campaign data does not reach back to 2026-05-01")
    assert "Settings" in answer and "\n" not in answer
    since = dt.datetime(2026, 9, 15)
    start = since.replace(tzinfo=LOCAL).astimezone(dt.timezone.utc)
    assert excel.OPTOUTS_BY_CAMPAIGN(since) == expected_campaign_rows(campaign_sign_in, start)
    book.names[excel.SINCE].refers_to_range.value = None
    excel.refresh(book)  # blank: all of them
    start = dt.datetime(2026, 5, 1, tzinfo=LOCAL).astimezone(dt.timezone.utc)
    assert excel.OPTOUTS_BY_CAMPAIGN("2026-05-01") == expected_campaign_rows(campaign_sign_in, start)
