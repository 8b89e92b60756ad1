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
from collections.abc import Iterable
from typing import IO

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


def write_optouts(optouts: Iterable[OptOut], out: IO[str], fmt: str, zone: dt.tzinfo, *, raw: bool = False) -> int:
    """Write ``optouts`` to ``out`` in ``fmt`` (``table``, ``csv`` or ``json``); return how many rows."""
    writer = {"table": _write_table, "csv": _write_csv, "json": _write_json}[fmt]
    return writer(optouts, out, zone, raw)


def _write_json(optouts: Iterable[OptOut], out: IO[str], zone: dt.tzinfo, raw: bool) -> int:
    # A stream that is not UTF-8 (a Windows console redirect in cp1252) gets \u escapes: still exactly the data.
    ascii_only = not writes_utf8(out)
    count = 0
    out.write("[")
    for optout in optouts:
        out.write(",\n  " if count else "\n  ")
        out.write(json.dumps(as_record(optout, zone), ensure_ascii=ascii_only))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def _write_csv(optouts: Iterable[OptOut], out: IO[str], zone: dt.tzinfo, raw: bool) -> int:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(FIELDS)
    count = 0
    for optout in optouts:
        record = as_record(optout, zone)
        cells = ["" if record[f] is None else str(record[f]) for f in FIELDS]
        writer.writerow(cells if raw else [neutralise(c) for c in cells])
        count += 1
    return count


_TABLE_COLUMNS = (("Opted out", 25), ("Email", 34), ("Name", 24), ("Source", 7), ("Reason", 40))


def _write_table(optouts: Iterable[OptOut], out: IO[str], zone: dt.tzinfo, raw: bool) -> int:
    def line(cells: Iterable[str]) -> str:
        return "  ".join(_fit(c, w) for c, (_, w) in zip(cells, _TABLE_COLUMNS, strict=True)).rstrip() + "\n"

    out.write(line(name for name, _ in _TABLE_COLUMNS))
    out.write(line("-" * width for _, width in _TABLE_COLUMNS))
    count = 0
    for o in optouts:
        when = o.opt_out_date.astimezone(zone).strftime("%Y-%m-%d %H:%M %z")
        name = f"{o.first_name} {o.last_name}".strip()
        deleted = " (deleted)" if o.deleted else ""
        out.write(line((when, o.email + deleted, name, o.opt_out_source, o.opt_out_reason or "")))
        count += 1
    out.write(plural(count, "opt-out") + "\n")
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
