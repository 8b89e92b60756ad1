"""The opt-out record, read from a V3 contact, and a collection of them that dedupes and sorts.

A contact carries opt-out data in ``email_address`` (``opt_out_source``, ``opt_out_date``, ``opt_out_reason``)
only while it is opted out; a contact who opted back in loses them. Deleted contacts may keep them.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dateutil import parser as date_parser

from .files import temporary_space_error


@dataclass(frozen=True)
class OptOut:
    """One person who opted out of the account's email, as of the time it was fetched."""

    contact_id: str
    email: str
    first_name: str
    last_name: str
    opt_out_date: dt.datetime  # aware, as the API gave it
    opt_out_source: str  # "Contact": the person unsubscribed; "Account": the account removed them
    opt_out_reason: str | None  # the person's own words; None when they gave none
    list_ids: tuple[str, ...] = ()
    deleted: bool = False

    @classmethod
    def from_contact(cls, contact: Mapping[str, Any]) -> OptOut | None:
        """The opt-out a contact carries, or None if it carries none (active, re-subscribed, malformed)."""
        email = contact.get("email_address") or {}
        raw_date = email.get("opt_out_date")
        contact_id = contact.get("contact_id")
        if not raw_date or not contact_id:
            return None
        deleted = bool(contact.get("deleted_at"))
        permission = email.get("permission_to_send")
        if not deleted and permission not in (None, "unsubscribed"):
            return None  # stale opt-out fields on a contact who can be emailed again
        opt_out_date = parse_api_datetime(raw_date)
        if opt_out_date is None:
            return None
        reason = email.get("opt_out_reason")
        return cls(
            contact_id=str(contact_id),
            email=str(email.get("address") or ""),
            first_name=str(contact.get("first_name") or ""),
            last_name=str(contact.get("last_name") or ""),
            opt_out_date=opt_out_date,
            opt_out_source=str(email.get("opt_out_source") or ""),
            opt_out_reason=None if reason is None else str(reason),
            list_ids=tuple(str(i) for i in contact.get("list_memberships") or ()),
            deleted=deleted,
        )


def parse_api_datetime(value: Any) -> dt.datetime | None:
    """An aware datetime from the API's ISO-8601 text (``...108Z`` or ``...-05:00``); None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = date_parser.isoparse(value)
    except (ValueError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


class OptOutTable:
    """Opt-outs in an SQLite table, one row per contact, read back newest first; the caller owns transactions.

    Used for the temporary collections of a query (:class:`OptOutSet`) and for the persistent local store.
    """

    COLUMNS = (
        "contact_id, email, first_name, last_name, opt_out_date, opt_out_source, opt_out_reason, list_ids, deleted"
    )

    def __init__(self, db: sqlite3.Connection, name: str = "optouts") -> None:
        self.db = db
        self.name = name
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {name} (contact_id TEXT PRIMARY KEY, sort_key INTEGER NOT NULL, "
            "email TEXT, first_name TEXT, last_name TEXT, opt_out_date TEXT, opt_out_source TEXT, "
            "opt_out_reason TEXT, list_ids TEXT, deleted INTEGER)"
        )
        db.execute(f"CREATE INDEX IF NOT EXISTS {name}_newest ON {name} (sort_key DESC, contact_id)")

    def add_all(self, optouts: Iterable[OptOut]) -> int:
        """Add opt-outs (a later copy of a contact replaces an earlier one); return how many were given."""
        rows = [
            (
                sort_key(o.opt_out_date),
                o.contact_id,
                o.email,
                o.first_name,
                o.last_name,
                o.opt_out_date.isoformat(),
                o.opt_out_source,
                o.opt_out_reason,
                "\x1f".join(o.list_ids),
                int(o.deleted),
            )
            for o in optouts
        ]
        self.db.executemany(
            f"INSERT OR REPLACE INTO {self.name} (sort_key, {self.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return len(rows)

    def newest(
        self,
        limit: int | None = None,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        include_deleted: bool = True,
    ) -> Iterator[OptOut]:
        """Opt-outs newest first (ties by contact id) with ``since <= date < until``, at most ``limit``."""
        where, args = self._where(since, until, include_deleted)
        cursor = self.db.execute(
            f"SELECT {self.COLUMNS} FROM {self.name}{where} ORDER BY sort_key DESC, contact_id LIMIT ?",
            (*args, -1 if limit is None else limit),
        )
        for row in cursor:
            yield OptOut(
                contact_id=row[0],
                email=row[1],
                first_name=row[2],
                last_name=row[3],
                opt_out_date=dt.datetime.fromisoformat(row[4]),
                opt_out_source=row[5],
                opt_out_reason=row[6],
                list_ids=tuple(row[7].split("\x1f")) if row[7] else (),
                deleted=bool(row[8]),
            )

    def count(
        self, *, since: dt.datetime | None = None, until: dt.datetime | None = None, include_deleted: bool = True
    ) -> int:
        where, args = self._where(since, until, include_deleted)
        return self.db.execute(f"SELECT COUNT(*) FROM {self.name}{where}", args).fetchone()[0]

    def newest_date(self) -> dt.datetime | None:
        row = self.db.execute(f"SELECT opt_out_date FROM {self.name} ORDER BY sort_key DESC LIMIT 1").fetchone()
        return dt.datetime.fromisoformat(row[0]) if row else None

    @staticmethod
    def _where(
        since: dt.datetime | None, until: dt.datetime | None, include_deleted: bool
    ) -> tuple[str, tuple[int, ...]]:
        clauses, args = [], []
        if since is not None:
            clauses.append("sort_key >= ?")
            args.append(sort_key(since))
        if until is not None:
            clauses.append("sort_key < ?")
            args.append(sort_key(until))
        if not include_deleted:
            clauses.append("deleted = 0")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


class OptOutSet(OptOutTable):
    """Opt-outs deduplicated by contact id and read back newest first, in bounded memory.

    Backed by a private temporary SQLite database: it stays in memory while small and spills to a temporary
    file as it grows, so collecting every opt-out of a large account does not grow the process.
    """

    def __init__(self, optouts: Iterable[OptOut] = ()) -> None:
        super().__init__(sqlite3.connect(""))  # "" = private temporary database, deleted on close
        self.add_all(optouts)

    def add_all(self, optouts: Iterable[OptOut]) -> int:
        try:
            with self.db:
                return super().add_all(optouts)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):  # SQLITE_FULL: the temporary folder it spilled to
                raise temporary_space_error() from None
            raise

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[OptOut]:
        return self.newest()

    def close(self) -> None:
        self.db.close()


def sort_key(moment: dt.datetime) -> int:
    """Microseconds since the epoch: orders instants correctly across offsets."""
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
