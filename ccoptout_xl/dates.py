"""Reading the dates people type, in their time zone.

A date without a time means midnight in the chosen time zone (``--tz``, default this computer's). ``since`` is
inclusive and ``until`` exclusive, so ``--since 2026-05-01 --until 2026-06-01`` is exactly May.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from dateutil import parser as date_parser
from dateutil import tz as dateutil_tz

from .exceptions import UsageError
from .text import quoted

_RELATIVE = re.compile(r"^\s*(\d+)\s*(m|min|minutes?|h|hours?|d|days?|w|weeks?)\s*(ago)?\s*$", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)?")  # 30, 365, 3.5: not dates
_POSIX_OFFSET = re.compile(r"\b(?:UTC|GMT)\s*[+-]\s*\d", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.timezone.utc)
LATEST = dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)  # a day's margin for any conversion later
DATE_FORMS = "2026-05-01, 'May 1 2026', 5/1/2026, 2026-05-01T09:30, today, yesterday or 30d"


def resolve_timezone(name: str | None) -> dt.tzinfo:
    """The IANA zone ``name`` (``Europe/Paris``), ``UTC``, or this computer's zone when ``name`` is empty."""
    if not name:
        return dateutil_tz.tzlocal()
    if name.upper() in ("UTC", "Z"):
        return dt.timezone.utc
    try:
        if len(name) > 100 or not name.isprintable():
            raise ValueError(name)
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as "Europe"
        raise UsageError(
            f"Unknown time zone {quoted(name)}: use an IANA name such as America/New_York, Europe/Paris or UTC."
        ) from None


def zone_name(zone: dt.tzinfo) -> str:
    """A name for ``zone`` to show people: the IANA key, ``UTC``, or this computer's zone and its abbreviation."""
    key = getattr(zone, "key", None)
    if key:
        return key
    if zone is dt.timezone.utc:
        return "UTC"
    return f"this computer's time zone ({dt.datetime.now(zone).tzname()})"


def local_midnight(day: dt.date, zone: dt.tzinfo) -> dt.datetime:
    """Midnight starting ``day`` in ``zone``; where a DST change skips midnight, the first instant of the day."""
    return dateutil_tz.resolve_imaginary(dt.datetime.combine(day, dt.time(), tzinfo=zone))


def parse_when(
    text: str, zone: dt.tzinfo, *, dayfirst: bool = False, now: dt.datetime | None = None, what: str = "date"
) -> dt.datetime:
    """An aware datetime for what a person typed.

    Accepts ISO dates and date-times (with or without an offset), written forms (``May 1 2026``,
    ``5/1/2026``; ``dayfirst`` reads ``1/5/2026`` as 1 May), ``today``, ``yesterday``, ``now``, and ages such
    as ``30d``, ``2w``, ``12h`` (that long before now). Raises :class:`UsageError` naming ``what`` otherwise.
    The result is in UTC: arithmetic on datetimes that share a zone is wall-clock arithmetic in Python,
    which is wrong across a DST change.
    """
    shown = quoted(text)
    try:
        moment = _parse_local(text, zone, dayfirst, now or dt.datetime.now(dt.timezone.utc), what)
        moment = moment.astimezone(dt.timezone.utc)
    except OverflowError:
        moment = None
    except ValueError as exc:  # an offset of a day or more, such as +99:00
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"The {what} {shown} has an impossible time-zone offset: use one such as -05:00.") from None
    if moment is None or not EARLIEST <= moment < LATEST:
        raise UsageError(f"The {what} {shown} is out of range: use a date between the years 1900 and 9999.")
    return moment


def _parse_local(text: str, zone: dt.tzinfo, dayfirst: bool, now: dt.datetime, what: str) -> dt.datetime:
    now = now.astimezone(dt.timezone.utc)
    cleaned = text.strip()
    word = cleaned.lower()
    if word == "now":
        return now
    if word in ("today", "yesterday"):
        days_back = 1 if word == "yesterday" else 0
        return local_midnight(now.astimezone(zone).date() - dt.timedelta(days=days_back), zone)
    relative = _RELATIVE.match(cleaned)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2).lower()
        unit = "m" if unit.startswith("min") else unit[0]
        return now - dt.timedelta(**{_UNITS[unit]: amount})
    shown = quoted(text)
    if not cleaned or len(cleaned) > 100 or not any(ch.isdigit() for ch in cleaned):
        raise UsageError(f"Cannot read the {what} {shown}: use {DATE_FORMS}.")
    if any(ch.isdigit() and not ch.isascii() for ch in cleaned):
        raise UsageError(f"The {what} {shown} has digits of another script: write them as 0-9.")
    if _NUMBER.fullmatch(cleaned) and not (cleaned.isdigit() and len(cleaned) in (4, 8)):
        days = f"{cleaned[:12]}d" if cleaned.isdigit() else "e.g. 30d"
        raise UsageError(f"The {what} {shown} is only a number: for days ago write {days}, or give a full date.")
    if _POSIX_OFFSET.search(cleaned):  # dateutil reads "UTC+3" the POSIX way: three hours *behind* UTC
        raise UsageError(
            f"The {what} {shown} has a UTC+N offset, which reads two ways: write the offset as +03:00, or use --tz."
        )
    if cleaned.isdigit() and len(cleaned) == 4:  # a year: 2026 is its first day (dateutil would take 0030 as a day)
        return local_midnight(dt.date(max(int(cleaned), 1), 1, 1), zone)
    today = now.astimezone(zone).date()
    try:
        # Missing parts start their period: "May 2026" is 1 May, "2026" is 1 January; a missing year is this year.
        parsed = date_parser.parse(cleaned, dayfirst=dayfirst, default=dt.datetime(today.year, 1, 1))
        # A time without any date ("10am") is today's, not the first of January's: no part of the date was read
        # if another default changes the year, the month and the day.
        other = date_parser.parse(cleaned, dayfirst=dayfirst, default=dt.datetime(today.year - 1, 2, 2))
    except (ValueError, OverflowError):
        raise UsageError(f"Cannot read the {what} {shown}: use {DATE_FORMS}.") from None
    if (parsed.year, parsed.month, parsed.day) != (other.year, other.month, other.day) and (
        parsed.year != other.year and parsed.month != other.month and parsed.day != other.day
    ):
        parsed = dt.datetime.combine(today, parsed.timetz())
    if parsed.tzinfo is not None:
        return parsed
    if parsed.time() == dt.time():
        return local_midnight(parsed.date(), zone)
    return dateutil_tz.resolve_imaginary(parsed.replace(tzinfo=zone))
