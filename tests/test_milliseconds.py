"""Opt-out instants keep their milliseconds, exactly as the API gives them: through the local store, in JSON and
CSV (always three digits), in the report's date-time cells and in what Excel gets (Refresh and worksheet
functions). Everything goes through the public entry points, against a sandbox over HTTP on 127.0.0.1."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
from dateutil import tz as dateutil_tz

from ccoptout_xl import excel
from ccoptout_xl.cli import main
from ccoptout_xl.query import OptOutQuery
from ccoptout_xl.sandbox import AccountSpec, Sandbox
from ccoptout_xl.service import get_optouts
from ccoptout_xl.store import OptOutStore

from .conftest import ANCHOR, make_client, sandbox_as_api, truth
from .test_excel import FakeBook

UTC = dt.timezone.utc
SPEC = AccountSpec(contacts=300, seed=3, anchor=ANCHOR)
DAY = dt.datetime(2026, 5, 3, tzinfo=UTC)
# Three opt-outs within one second, and one on the next whole second. New York is at -04:00 on 3 May 2026.
MOMENTS = (
    dt.datetime(2026, 5, 3, 14, 2, 12, 0, tzinfo=UTC),
    dt.datetime(2026, 5, 3, 14, 2, 11, 999_000, tzinfo=UTC),
    dt.datetime(2026, 5, 3, 14, 2, 11, 734_000, tzinfo=UTC),
    dt.datetime(2026, 5, 3, 14, 2, 11, 1_000, tzinfo=UTC),
)
NEW_YORK_TEXT = (
    "2026-05-03T10:02:12.000-04:00",
    "2026-05-03T10:02:11.999-04:00",
    "2026-05-03T10:02:11.734-04:00",
    "2026-05-03T10:02:11.001-04:00",
)
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}$")
LOCAL = dateutil_tz.tzlocal()
EXCEL_EPOCH = dt.datetime(1899, 12, 30)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A sandbox the command line and Excel talk to, with a cache folder of this test's own."""
    with sandbox_as_api(SPEC, monkeypatch, tmp_path / "cache") as sb:
        yield sb


@pytest.fixture
def planted(sandbox: Sandbox) -> list[tuple[str, dt.datetime]]:
    """Four contacts opted out at MOMENTS (newest first): (contact id, instant) in that order.

    The three in one second get ids in the opposite order to their milliseconds, so a sort that lost the
    milliseconds (ties broken by contact id) would list them the other way round.
    """
    ids = sorted(_millisecond_contacts(sandbox, before=DAY, count=len(MOMENTS)))
    chosen = [ids[0], ids[3], ids[2], ids[1]]  # .999 -> the largest id of the three, .001 -> the smallest
    for contact_id, moment in zip(chosen, MOMENTS, strict=True):
        assert sandbox.account.opt_out(contact_ids=[contact_id], at=moment, reason="Too many emails")
    return list(zip(chosen, MOMENTS, strict=True))


def _millisecond_contacts(sandbox: Sandbox, *, before: dt.datetime, count: int) -> list[str]:
    """Active contacts that can opt out at an instant with milliseconds: the sandbox gives whole seconds to
    contacts whose instants it renders in the -05:00 style, milliseconds to those in the ``...Z`` style."""
    found = []
    for contact in sandbox.account.contacts():
        address = contact["email_address"]
        updated = dt.datetime.fromisoformat(address["updated_at"].replace("Z", "+00:00"))
        if (
            contact["created_at"].endswith("Z")
            and not contact.get("deleted_at")
            and address["permission_to_send"] in ("explicit", "implicit")
            and updated < before
        ):
            found.append(contact["contact_id"])
            if len(found) == count:
                return found
    raise AssertionError("the sandbox account has too few contacts for this test")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def local(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(LOCAL).replace(tzinfo=None)


def from_serial(value: float) -> dt.datetime:
    """An Excel serial number as Excel reads it (to the millisecond), independent of the code under test."""
    return EXCEL_EPOCH + dt.timedelta(milliseconds=round(value * 86_400_000))


def to_serial(moment: dt.datetime) -> float:
    """The serial number Excel holds for a naive date-time."""
    return (moment - EXCEL_EPOCH) / dt.timedelta(days=1)


QUERY = ("--since", "2026-05-03", "--until", "2026-05-04", "--tz", "America/New_York")


# -- JSON and CSV ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [[], ["--no-cache"]], ids=["through the store", "from the API"])
def test_json_gives_the_instant_to_the_millisecond(planted, capsys, source: list[str]) -> None:
    records = json.loads(run(capsys, "fetch", "--format", "json", *QUERY, *source))
    assert [(r["contact_id"], r["opt_out_date"]) for r in records] == [
        (contact_id, text) for (contact_id, _), text in zip(planted, NEW_YORK_TEXT, strict=True)
    ]


def test_csv_gives_the_instant_to_the_millisecond(planted, capsys) -> None:
    rows = list(csv.DictReader(io.StringIO(run(capsys, "fetch", "--format", "csv", *QUERY))))
    assert [(r["contact_id"], r["opt_out_date"]) for r in rows] == [
        (contact_id, text) for (contact_id, _), text in zip(planted, NEW_YORK_TEXT, strict=True)
    ]


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_every_instant_is_exact_and_has_three_digits(sandbox: Sandbox, capsys, fmt: str) -> None:
    """The account's own opt-outs, in both of the API's styles (``...108Z`` and whole seconds at -05:00)."""
    out = run(capsys, "fetch", "--format", fmt, "--include-deleted", "--tz", "Asia/Kolkata")
    records = json.loads(out) if fmt == "json" else list(csv.DictReader(io.StringIO(out)))
    expected = truth(sandbox, include_deleted=True)
    assert [r["contact_id"] for r in records] == [o.contact_id for o in expected]
    assert all(ISO_MS.match(r["opt_out_date"]) and r["opt_out_date"].endswith("+05:30") for r in records)
    got = [dt.datetime.fromisoformat(r["opt_out_date"]) for r in records]
    assert got == [o.opt_out_date for o in expected]  # equal instants, milliseconds included
    assert any(moment.microsecond for moment in got)


# -- the local store -------------------------------------------------------------------------------------------


def test_the_store_keeps_the_milliseconds_and_orders_and_filters_by_them(sandbox: Sandbox, planted) -> None:
    client = make_client(sandbox)
    day = OptOutQuery(since=DAY, until=DAY + dt.timedelta(days=1))
    get_optouts(client, day).close()  # the first question syncs the store
    sandbox.reset_log()
    answer = get_optouts(client, day)  # answered from the store
    assert answer.calls == 0 and sandbox.requests == []
    assert [(o.contact_id, o.opt_out_date) for o in answer] == planted
    answer.close()
    with OptOutStore.for_client(client) as store:
        # since is inclusive and until exclusive, to the millisecond
        at_734 = MOMENTS[2]
        assert [o.opt_out_date for o in store.query(OptOutQuery(since=at_734, until=MOMENTS[0]))] == [
            MOMENTS[1],
            MOMENTS[2],
        ]
        assert [o.opt_out_date for o in store.query(OptOutQuery(since=DAY, until=at_734))] == [MOMENTS[3]]


def test_an_incremental_sync_keeps_the_milliseconds(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as store:
        assert store.sync(client).kind == "full"
        (contact_id,) = _millisecond_contacts(sandbox, before=ANCHOR - dt.timedelta(days=1), count=1)
        moment = ANCHOR - dt.timedelta(minutes=1) + dt.timedelta(milliseconds=321)
        sandbox.account.opt_out(contact_ids=[contact_id], at=moment)
        assert store.sync(client).kind == "incremental"
        stored = {o.contact_id: o.opt_out_date for o in store.query(OptOutQuery(since=moment))}
    assert stored == {contact_id: moment}


# -- the .xlsx report --------------------------------------------------------------------------------------------


def test_the_report_cells_hold_the_milliseconds(planted, capsys, tmp_path: Path) -> None:
    path = tmp_path / "report.xlsx"
    run(capsys, "report", *QUERY, "-o", str(path))
    new_york = dateutil_tz.gettz("America/New_York")
    expected = [(contact_id, moment.astimezone(new_york).replace(tzinfo=None)) for contact_id, moment in planted]

    sheet = openpyxl.load_workbook(path)["Opt-outs"]
    rows = list(sheet.iter_rows(min_row=2, values_only=True))
    assert [(row[7], row[3]) for row in rows] == expected  # openpyxl reads serials back to the millisecond

    # The serials themselves, as any reader finds them in the file.
    with zipfile.ZipFile(path) as archive:
        xml = archive.read("xl/worksheets/sheet1.xml").decode()
    serials = [float(v) for v in re.findall(r'<c r="D\d+"[^>]*><v>([^<]+)</v>', xml)]
    assert [from_serial(v) for v in serials] == [moment for _, moment in expected]


# -- Excel -------------------------------------------------------------------------------------------------------


def test_worksheet_functions_return_the_milliseconds(sandbox: Sandbox, planted) -> None:
    get_optouts(make_client(sandbox), OptOutQuery()).close()  # as a Refresh leaves the store
    spilled = excel.OPTOUTS_SINCE(local(DAY), local(DAY + dt.timedelta(days=1)))
    emails = {o.contact_id: o.email for o in truth(sandbox)}
    when = excel.FUNCTION_HEADER.index("Opted out")
    assert [(row[0], row[when]) for row in spilled[1:]] == [(emails[c], local(m)) for c, m in planted]
    assert [row[when] for row in excel.OPTOUTS_LATEST(300) if row[0] in {emails[c] for c, _ in planted}] == [
        local(m) for _, m in planted
    ]
    # A date-time with milliseconds as the argument (a cell holding an opt-out's date, or its serial number)
    # bounds the answer at that very millisecond.
    for since in (local(MOMENTS[2]), to_serial(local(MOMENTS[2]))):
        assert [row[when] for row in excel.OPTOUTS_SINCE(since, local(MOMENTS[0]))[1:]] == [
            local(MOMENTS[1]),
            local(MOMENTS[2]),
        ]
        assert excel.OPTOUTS_COUNT(since, local(MOMENTS[0])) == 2


def test_refresh_writes_dates_that_hold_the_milliseconds(sandbox: Sandbox, planted) -> None:
    book = FakeBook(Since=local(DAY), Until=local(DAY + dt.timedelta(days=1)))
    excel.refresh(book)
    assert book.value(excel.STATUS).startswith("OK: 4 opt-outs"), book.value(excel.STATUS)
    rows = book.sheets[excel.OPTOUTS_SHEET].rows()
    opted_out = excel.TABLE_HEADER.index("Opted out")
    contact = excel.TABLE_HEADER.index("Contact ID")
    # A number (the serial Excel keeps for a date-time) on every platform: on macOS xlwings sends a datetime as
    # an AppleScript date, which has whole seconds only.
    assert all(isinstance(row[opted_out], float) for row in rows)
    assert [(row[contact], from_serial(row[opted_out])) for row in rows] == [(c, local(m)) for c, m in planted]
