"""Writing opt-outs as a terminal table, CSV meant for Excel, or JSON; streaming, one row at a time.

CSV cells that Excel would run as a formula (text starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
return) are neutralised with a leading apostrophe unless ``raw`` is asked for (OWASP "CSV injection"). JSON is
never altered.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Protocol

from .columns import campaign_label
from .history import Change
from .optouts import OptOut
from .text import plural, writes_utf8

FIELDS = (
    "contact_id",
    "email",
    "first_name",
    "last_name",
    "opt_out_date",
    "opt_out_source",
    "opt_out_reason",
)
CHANGE_FIELDS = ("contact_id", "email", "event", "opt_out_date", "detected_at")
CAMPAIGN_FIELDS = ("campaign_id", "campaign_name")
CAMPAIGN_COUNT_FIELDS = ("campaign_id", "campaign_name", "sent_at", "optouts")


class CampaignCount(Protocol):
    """A window's opt-outs through one campaign (:class:`ccoptout_xl.campaigns.CampaignCount`)."""

    @property
    def campaign_id(self) -> str | None: ...

    @property
    def campaign_name(self) -> str | None: ...

    @property
    def sent_at(self) -> dt.datetime | None: ...

    @property
    def optouts(self) -> int: ...


FORMATS = ("table", "csv", "json")
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_INVISIBLE = " \n\u00a0\u200b\u200c\u200d\u2060\ufeff"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def as_record(optout: OptOut, zone: dt.tzinfo) -> dict[str, str | None]:
    """The JSON/CSV record of an opt-out, its date in ISO 8601 with the offset of ``zone`` (see :func:`instant`)."""
    return {
        "contact_id": optout.contact_id,
        "email": optout.email,
        "first_name": optout.first_name,
        "last_name": optout.last_name,
        "opt_out_date": instant(optout.opt_out_date, zone),
        "opt_out_source": optout.opt_out_source,
        "opt_out_reason": optout.opt_out_reason,
    }


def instant(moment: dt.datetime, zone: dt.tzinfo) -> str:
    """``2026-05-03T10:02:11.734-04:00``: an instant in ``zone`` to the millisecond, as the API gives it, always
    with three digits (``.000`` on a whole second), so every row has the same form."""
    return moment.astimezone(zone).isoformat(timespec="milliseconds")


def neutralise(text: str) -> str:
    """Text that a spreadsheet will show as text, never run as a formula.

    Leading spaces and invisible characters are looked through: a spreadsheet may trim them before it decides.
    """
    return "'" + text if text.lstrip(_INVISIBLE).startswith(FORMULA_TRIGGERS) else text


def write_optouts(
    optouts: Iterable[OptOut], out: IO[str], fmt: str, zone: dt.tzinfo, *, raw: bool = False, campaigns: bool = False
) -> int:
    """Write ``optouts`` to ``out`` in ``fmt`` (``table``, ``csv`` or ``json``); return how many rows. With
    ``campaigns`` each row also has the campaign it came through (``campaign_id``, ``campaign_name``: null when
    none)."""
    if fmt == "table":
        columns = (*_TABLE_COLUMNS, ("Campaign", 30)) if campaigns else _TABLE_COLUMNS
        return _write_table(map(_optout_cells(zone, campaigns), optouts), columns, out, "opt-out")
    fields = (*FIELDS, *CAMPAIGN_FIELDS) if campaigns else FIELDS
    records = (
        as_record(o, zone) | ({"campaign_id": o.campaign_id, "campaign_name": o.campaign_name} if campaigns else {})
        for o in optouts
    )
    return write_records(records, fields, out, fmt, raw=raw)


def write_campaign_counts(
    rows: Iterable[CampaignCount], out: IO[str], fmt: str, zone: dt.tzinfo, *, raw: bool = False
) -> int:
    """Write opt-outs per campaign (``ccoptout-xl campaigns``) to ``out`` in ``fmt``; return how many rows."""
    if fmt == "table":
        cells = (
            (
                campaign_label(r.campaign_id, r.campaign_name),
                _when(r.sent_at, zone) if r.sent_at else "",
                f"{r.optouts:,}",
            )
            for r in rows
        )
        return _write_table(cells, _CAMPAIGN_COLUMNS, out, "campaign row")
    records = (
        {
            "campaign_id": r.campaign_id,
            "campaign_name": r.campaign_name,
            "sent_at": instant(r.sent_at, zone) if r.sent_at else None,
            "optouts": r.optouts,
        }
        for r in rows
    )
    return write_records(records, CAMPAIGN_COUNT_FIELDS, out, fmt, raw=raw)


def write_changes(changes: Iterable[Change], out: IO[str], fmt: str, zone: dt.tzinfo, *, raw: bool = False) -> int:
    """Write what the local store learned (``ccoptout-xl changes``) to ``out`` in ``fmt``; return how many rows."""
    if fmt == "table":
        return _write_table(map(_change_cells(zone), changes), _CHANGE_COLUMNS, out, "change")
    records = (
        {
            "contact_id": c.contact_id,
            "email": c.email,
            "event": c.event,
            "opt_out_date": instant(c.opt_out_date, zone),
            "detected_at": instant(c.detected_at, zone),
        }
        for c in changes
    )
    return write_records(records, CHANGE_FIELDS, out, fmt, raw=raw)


def write_records(
    records: Iterable[Mapping[str, object]], fields: tuple[str, ...], out: IO[str], fmt: str, *, raw: bool = False
) -> int:
    """Write ``records`` (with keys ``fields``) as JSON or CSV; return how many."""
    writer = {"csv": _write_csv, "json": _write_json}[fmt]
    return writer(records, fields, out, raw)


def _write_json(records: Iterable[Mapping[str, object]], fields: tuple[str, ...], out: IO[str], raw: bool) -> int:
    # A stream that is not UTF-8 (a Windows console redirect in cp1252) gets \u escapes: still exactly the data.
    ascii_only = not writes_utf8(out)
    count = 0
    out.write("[")
    for record in records:
        out.write(",\n  " if count else "\n  ")
        out.write(json.dumps(record, ensure_ascii=ascii_only))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def _write_csv(records: Iterable[Mapping[str, object]], fields: tuple[str, ...], out: IO[str], raw: bool) -> int:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(fields)
    count = 0
    for record in records:
        cells = ["" if record[f] is None else str(record[f]) for f in fields]
        writer.writerow(cells if raw else [neutralise(c) for c in cells])
        count += 1
    return count


_TABLE_COLUMNS = (("Opted out", 25), ("Email", 34), ("Name", 24), ("Source", 7), ("Reason", 40))
_CHANGE_COLUMNS = (("Detected", 25), ("Event", 13), ("Email", 34), ("Opted out", 25))
_CAMPAIGN_COLUMNS = (("Campaign", 44), ("Last sent", 25), ("Opt-outs", 9))
_EVENT_WORDS = {"opted_out": "opted out", "resubscribed": "re-subscribed", "deleted": "deleted"}


def _optout_cells(zone: dt.tzinfo, campaigns: bool = False) -> Callable[[OptOut], tuple[str, ...]]:
    def cells(o: OptOut) -> tuple[str, ...]:
        name = f"{o.first_name} {o.last_name}".strip()
        deleted = " (deleted)" if o.deleted else ""
        row = (_when(o.opt_out_date, zone), o.email + deleted, name, o.opt_out_source, o.opt_out_reason or "")
        return (*row, o.campaign_name or "") if campaigns else row

    return cells


def _change_cells(zone: dt.tzinfo) -> Callable[[Change], tuple[str, ...]]:
    def cells(c: Change) -> tuple[str, ...]:
        return _when(c.detected_at, zone), _EVENT_WORDS.get(c.event, c.event), c.email, _when(c.opt_out_date, zone)

    return cells


def _when(moment: dt.datetime, zone: dt.tzinfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %z")


def _write_table(rows: Iterable[tuple[str, ...]], columns: tuple[tuple[str, int], ...], out: IO[str], noun: str) -> int:
    def line(cells: Iterable[str]) -> str:
        return "  ".join(_fit(c, w) for c, (_, w) in zip(cells, columns, strict=True)).rstrip() + "\n"

    out.write(line(name for name, _ in columns))
    out.write(line("-" * width for _, width in columns))
    count = 0
    for row in rows:
        out.write(line(row))
        count += 1
    out.write(plural(count, noun) + "\n")
    return count


def _fit(text: str, width: int) -> str:
    """Text for one table cell, padded or cut to ``width`` terminal columns (wide CJK characters take two).

    Control characters (terminal escapes) from the API are shown as spaces.
    """
    text = _CONTROL.sub(" ", text)
    cells: list[str] = []
    used = 0
    for char in text:
        size = 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
        if used + size > width:
            while cells and used + 1 > width:  # room for the ellipsis
                used -= 2 if unicodedata.east_asian_width(cells.pop()) in ("W", "F") else 1
            return "".join(cells) + "…" + " " * (width - used - 1)
        cells.append(char)
        used += size
    return text + " " * (width - used)
