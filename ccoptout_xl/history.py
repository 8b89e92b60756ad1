"""What the local store learned, when: contacts first seen opted out, re-subscribed, deleted.

Every write of fetched opt-outs into the store goes through :func:`replace_region`: the opt-outs read cover a
:class:`~ccoptout_xl.table.Region` completely, so a stored contact of that region that is not among them no longer
carries an opt-out (it re-subscribed), and one that is among them with another date or state changed. Each change
becomes an event, dated when it was detected (the time of the write that records it): what someone who keeps a
CRM or a second mailing system in step asks for (``ccoptout-xl changes --since D``).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .optouts import OptOut
from .table import OptOutTable, Region, insert_rows, key_range, sort_key

OPTED_OUT = "opted_out"  # first seen opted out (or opted out again, with a new date)
RESUBSCRIBED = "resubscribed"  # no longer carries an opt-out: opted back in
DELETED = "deleted"  # the account deleted the contact (who keeps the opt-out)
EVENTS = (OPTED_OUT, RESUBSCRIBED, DELETED)
INCOMING = "temp.incoming"


@dataclass(frozen=True)
class Change:
    """One thing the store learned about a contact: ``event`` is one of :data:`EVENTS`."""

    contact_id: str
    email: str
    event: str
    opt_out_date: dt.datetime
    detected_at: dt.datetime


@dataclass(frozen=True)
class RegionUpdate:
    """What :func:`replace_region` changed: opt-outs written, and events by kind."""

    written: int
    opted_out: int = 0
    resubscribed: int = 0
    deleted: int = 0

    @property
    def changed(self) -> int:
        return self.opted_out + self.resubscribed + self.deleted


class History:
    """The store's table of events (the caller owns transactions)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, contact_id TEXT NOT NULL, email TEXT, "
            "event TEXT NOT NULL, opt_out_date TEXT NOT NULL, detected_at TEXT NOT NULL, detected_key INTEGER NOT "
            "NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS events_detected ON events (detected_key, id)")

    def since(self, since: dt.datetime | None = None, until: dt.datetime | None = None) -> Iterator[Change]:
        """Events detected at or after ``since`` (and before ``until``), oldest first."""
        clauses, args = key_range("detected_key", since, until)
        rows = self.db.execute(
            "SELECT contact_id, email, event, opt_out_date, detected_at FROM events "
            f"WHERE {' AND '.join(['1', *clauses])} ORDER BY detected_key, id",
            args,
        )
        for contact_id, email, event, opt_out_date, detected_at in rows:
            yield Change(
                contact_id,
                email or "",
                event,
                dt.datetime.fromisoformat(opt_out_date),
                dt.datetime.fromisoformat(detected_at),
            )

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def replace_region(
    table: OptOutTable, history: History, incoming: Iterable[OptOut], region: Region, detected_at: dt.datetime
) -> RegionUpdate:
    """Make ``region`` of the store hold exactly ``incoming`` (every opt-out the API holds there, nothing outside
    it), recording each change in ``history``; in the caller's transaction."""
    db = table.db
    db.execute(f"DROP TABLE IF EXISTS {INCOMING}")
    db.execute(f"CREATE TABLE {INCOMING} ({OptOutTable.LAYOUT})")
    try:
        written = insert_rows(db, INCOMING, incoming)
        stamp = (detected_at.isoformat(), sort_key(detected_at))
        store = table.name
        # New contacts, and known ones with another opt-out date (they opted back in and out again meanwhile).
        opted_out = _record(
            db,
            f"SELECT i.contact_id, i.email, '{OPTED_OUT}', i.opt_out_date, ?, ? FROM {INCOMING} i "
            f"LEFT JOIN {store} s ON s.contact_id = i.contact_id "
            "WHERE s.contact_id IS NULL OR s.sort_key != i.sort_key",
            stamp,
        )
        deleted = _record(
            db,
            f"SELECT i.contact_id, i.email, '{DELETED}', i.opt_out_date, ?, ? FROM {INCOMING} i "
            f"LEFT JOIN {store} s ON s.contact_id = i.contact_id WHERE i.deleted = 1 AND "
            "(s.contact_id IS NULL OR s.deleted = 0 OR s.sort_key != i.sort_key)",
            stamp,
        )
        inside, args = region.where(prefix=f"{store}.")
        gone = f"{inside} AND {store}.contact_id NOT IN (SELECT contact_id FROM {INCOMING})"
        resubscribed = _record(
            db,
            f"SELECT contact_id, email, '{RESUBSCRIBED}', opt_out_date, ?, ? FROM {store} WHERE {gone}",
            (*stamp, *args),
        )
        db.execute(f"DELETE FROM {store} WHERE {gone}", args)
        db.execute(f"INSERT OR REPLACE INTO {store} SELECT * FROM {INCOMING}")
    finally:
        db.execute(f"DROP TABLE IF EXISTS {INCOMING}")
    return RegionUpdate(written, opted_out, resubscribed, deleted)


def _record(db: sqlite3.Connection, select: str, args: tuple[object, ...]) -> int:
    cursor = db.execute(
        f"INSERT INTO events (contact_id, email, event, opt_out_date, detected_at, detected_key) {select}", args
    )
    return cursor.rowcount
