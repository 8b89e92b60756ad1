"""How typed dates become instants: forms, time zones, DST, and bad input."""

import datetime as dt
import zoneinfo

import pytest

from ccoptout_xl.dates import local_midnight, parse_when, resolve_timezone
from ccoptout_xl.exceptions import UsageError

NY = zoneinfo.ZoneInfo("America/New_York")
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
NOW = dt.datetime(2026, 11, 26, 15, 30, tzinfo=dt.timezone.utc)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-01", utc(2026, 5, 1, 4)),  # midnight New York (EDT, UTC-4)
        ("May 1 2026", utc(2026, 5, 1, 4)),
        ("1 May 2026", utc(2026, 5, 1, 4)),
        ("5/1/2026", utc(2026, 5, 1, 4)),  # month first unless --dayfirst
        ("2026-01-15", utc(2026, 1, 15, 5)),  # EST, UTC-5
        ("2026-05-01T09:30", utc(2026, 5, 1, 13, 30)),
        ("2026-05-01T09:30:00Z", utc(2026, 5, 1, 9, 30)),
        ("2026-05-01T09:30:00+02:00", utc(2026, 5, 1, 7, 30)),
        ("today", utc(2026, 11, 26, 5)),
        ("yesterday", utc(2026, 11, 25, 5)),
        ("now", NOW),
        ("30d", NOW - dt.timedelta(days=30)),
        ("2w", NOW - dt.timedelta(weeks=2)),
        ("12h", NOW - dt.timedelta(hours=12)),
        ("90 days ago", NOW - dt.timedelta(days=90)),
        ("May 2026", utc(2026, 5, 1, 4)),  # a missing day is the first of the month
        ("2026", utc(2026, 1, 1, 5)),  # a year alone is its first day
        ("Mar 3", utc(2026, 3, 3, 5)),  # a missing year is this year
    ],
)
def test_forms_are_read_in_the_chosen_zone(text: str, expected: dt.datetime) -> None:
    assert parse_when(text, NY, now=NOW) == expected


def test_dayfirst_reads_day_before_month() -> None:
    assert parse_when("1/5/2026", PARIS, dayfirst=True, now=NOW) == utc(2026, 4, 30, 22)
    assert parse_when("1/5/2026", PARIS, now=NOW) == utc(2026, 1, 4, 23)


def test_midnight_across_dst_changes() -> None:
    # The day DST starts in New York has 23 hours; the day it ends has 25.
    start = parse_when("2026-03-08", NY, now=NOW)
    assert parse_when("2026-03-09", NY, now=NOW) - start == dt.timedelta(hours=23)
    end = parse_when("2026-11-01", NY, now=NOW)
    assert parse_when("2026-11-02", NY, now=NOW) - end == dt.timedelta(hours=25)


def test_midnight_that_does_not_exist_is_the_first_instant_of_the_day() -> None:
    # Chile moves its clocks from 00:00 to 01:00 on the first Sunday of September.
    santiago = zoneinfo.ZoneInfo("America/Santiago")
    first = local_midnight(dt.date(2026, 9, 6), santiago)
    assert first.hour == 1
    assert first.astimezone(dt.timezone.utc) == utc(2026, 9, 6, 4)


@pytest.mark.parametrize("text", ["", "   ", "soon", "2026-13-45", "31/31/2026", "yesterdayish", "abc 12"])
def test_unreadable_dates_name_the_problem(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_when(text, NY, now=NOW, what="--since date")
    message = str(caught.value)
    assert "--since date" in message and "2026-05-01" in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "zone", "hint"),
    [
        ("30", NY, "write 30d"),
        ("99999999d", NY, "out of range"),
        ("0001-01-01", zoneinfo.ZoneInfo("Asia/Tokyo"), "out of range"),
    ],
)
def test_dates_that_are_not_quite_dates(text: str, zone: dt.tzinfo, hint: str) -> None:
    with pytest.raises(UsageError, match=hint):
        parse_when(text, zone, now=NOW, what="--since date")


def test_time_zones() -> None:
    assert resolve_timezone("UTC") is dt.timezone.utc
    assert resolve_timezone("Europe/Paris") == PARIS
    assert resolve_timezone(None).utcoffset(dt.datetime(2026, 1, 1)) is not None  # this computer's zone
    with pytest.raises(UsageError, match="Unknown time zone 'Mars/Olympus'"):
        resolve_timezone("Mars/Olympus")
    with pytest.raises(UsageError, match="Unknown time zone"):
        resolve_timezone("../etc/passwd")


def test_a_time_without_a_date_is_today_s() -> None:
    zone = resolve_timezone("Europe/Paris")
    now = dt.datetime(2026, 11, 29, 8, 0, tzinfo=dt.timezone.utc)
    assert parse_when("10am", zone, now=now) == dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.timezone.utc)
    assert parse_when("12:30", zone, now=now) == dt.datetime(2026, 11, 29, 11, 30, tzinfo=dt.timezone.utc)
    assert parse_when("Mar 3", zone, now=now) == dt.datetime(2026, 3, 2, 23, 0, tzinfo=dt.timezone.utc)  # as before
