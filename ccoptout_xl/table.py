"""The SQLite tables of opt-outs: one row per contact, read back newest first.

:class:`OptOutTable` is the local store's table; :class:`OptOutSet` a private temporary one that a query collects
into, so that reading every opt-out of a large account takes bounded memory.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .files import temporary_space_error
from .optouts import OptOut


class OptOutTable:
    """Opt-outs in an SQLite table, one row per contact, read back newest first; the caller owns transactions.

    Used for the temporary collections of a query (:class:`OptOutSet`) and for the persistent local store.
    """

    COLUMNS = (
        "contact_id, email, first_name, last_name, opt_out_date, opt_out_source, opt_out_reason, list_ids, deleted, "
        "created_at"
    )
    LAYOUT = (
        "contact_id TEXT PRIMARY KEY, sort_key INTEGER NOT NULL, email TEXT, first_name TEXT, last_name TEXT, "
        "opt_out_date TEXT, opt_out_source TEXT, opt_out_reason TEXT, list_ids TEXT, deleted INTEGER, "
        "created_at TEXT, created_key INTEGER"
    )

    def __init__(self, db: sqlite3.Connection, name: str = "optouts") -> None:
        self.db = db
        self.name = name
        db.execute(f"CREATE TABLE IF NOT EXISTS {name} ({self.LAYOUT})")
        db.execute(f"CREATE INDEX IF NOT EXISTS {name}_newest ON {name} (sort_key DESC, contact_id)")

    def add_all(self, optouts: Iterable[OptOut]) -> int:
        """Add opt-outs (a later copy of a contact replaces an earlier one); return how many were given."""
        return insert_rows(self.db, self.name, optouts)

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
            yield from_row(row)

    def count(
        self, *, since: dt.datetime | None = None, until: dt.datetime | None = None, include_deleted: bool = True
    ) -> int:
        where, args = self._where(since, until, include_deleted)
        return self.db.execute(f"SELECT COUNT(*) FROM {self.name}{where}", args).fetchone()[0]

    def count_in(self, region: Region, deleted: bool | None = None) -> int:
        """How many stored opt-outs ``region`` holds (only deleted contacts', or only the others', if asked)."""
        where, args = region.where(deleted)
        return self.db.execute(f"SELECT COUNT(*) FROM {self.name} WHERE {where}", args).fetchone()[0]

    def keys_in(self, region: Region, column: str, deleted: bool | None = None, every: int = 1) -> list[int]:
        """The sorted ``column`` keys (``sort_key``: opt-out instants, ``created_key``: creation instants) of the
        opt-outs ``region`` holds, every ``every``-th one (a sample of their distribution)."""
        if column not in ("sort_key", "created_key"):
            raise ValueError(column)
        where, args = region.where(deleted)
        rows = self.db.execute(
            f"SELECT {column} FROM {self.name} WHERE {where} AND {column} IS NOT NULL ORDER BY {column}", args
        )
        return [key for index, (key,) in enumerate(rows) if index % every == 0]

    def newest_date(self) -> dt.datetime | None:
        row = self.db.execute(f"SELECT opt_out_date FROM {self.name} ORDER BY sort_key DESC LIMIT 1").fetchone()
        return dt.datetime.fromisoformat(row[0]) if row else None

    @staticmethod
    def _where(
        since: dt.datetime | None, until: dt.datetime | None, include_deleted: bool
    ) -> tuple[str, tuple[int, ...]]:
        clauses, args = key_range("sort_key", since, until)
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
            if sqlite_kind(exc) == "full":  # the temporary folder it spilled to
                raise temporary_space_error() from None
            raise

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[OptOut]:
        return self.newest()

    def close(self) -> None:
        self.db.close()


@dataclass(frozen=True)
class Region:
    """Opt-outs dated strictly between ``after`` and ``before`` and created strictly between ``created_after`` and
    ``created_before`` (keys as :func:`sort_key` gives them; None: no bound)."""

    after: int | None = None
    before: int | None = None
    created_after: int | None = None
    created_before: int | None = None

    def where(self, deleted: bool | None = None, prefix: str = "") -> tuple[str, tuple[int, ...]]:
        """An SQL condition for the region (on the columns of table alias ``prefix``), and its arguments."""
        clauses, args = ["1"], []
        for column, low, high in (
            ("sort_key", self.after, self.before),
            ("created_key", self.created_after, self.created_before),
        ):
            if low is not None:
                clauses.append(f"{prefix}{column} > ?")
                args.append(low)
            if high is not None:
                clauses.append(f"{prefix}{column} < ?")
                args.append(high)
        if deleted is not None:
            clauses.append(f"{prefix}deleted = ?")
            args.append(int(deleted))
        return " AND ".join(clauses), tuple(args)

    def holds(self, optout: OptOut) -> bool:
        """Whether ``optout`` lies in the region (an opt-out with no creation date lies in every creation range)."""
        key = sort_key(optout.opt_out_date)
        if (self.after is not None and key <= self.after) or (self.before is not None and key >= self.before):
            return False
        if optout.created_at is None:
            return True
        created = sort_key(optout.created_at)
        return not (
            (self.created_after is not None and created <= self.created_after)
            or (self.created_before is not None and created >= self.created_before)
        )


EVERYWHERE = Region()


def insert_rows(db: sqlite3.Connection, table: str, optouts: Iterable[OptOut]) -> int:
    """Insert (or replace, by contact id) opt-outs into ``table`` of the opt-out layout; return how many."""
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
            None if o.created_at is None else o.created_at.isoformat(),
            None if o.created_at is None else sort_key(o.created_at),
        )
        for o in optouts
    ]
    db.executemany(
        f"INSERT OR REPLACE INTO {table} (sort_key, {OptOutTable.COLUMNS}, created_key) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return len(rows)


def from_row(row: tuple[object, ...]) -> OptOut:
    """The opt-out of a row of :attr:`OptOutTable.COLUMNS`."""
    contact_id, email, first, last, date, source, reason, lists, deleted, created = row
    return OptOut(
        contact_id=str(contact_id),
        email=str(email or ""),
        first_name=str(first or ""),
        last_name=str(last or ""),
        opt_out_date=dt.datetime.fromisoformat(str(date)),
        opt_out_source=str(source or ""),
        opt_out_reason=None if reason is None else str(reason),
        list_ids=tuple(str(lists).split("\x1f")) if lists else (),
        deleted=bool(deleted),
        created_at=None if created is None else dt.datetime.fromisoformat(str(created)),
    )


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def key_range(column: str, since: dt.datetime | None, until: dt.datetime | None) -> tuple[list[str], list[int]]:
    """SQL conditions (and their arguments) for a :func:`sort_key` ``column`` at or after ``since`` and before
    ``until`` (None: no bound)."""
    clauses, args = [], []
    if since is not None:
        clauses.append(f"{column} >= ?")
        args.append(sort_key(since))
    if until is not None:
        clauses.append(f"{column} < ?")
        args.append(sort_key(until))
    return clauses, args


def sort_key(moment: dt.datetime) -> int:
    """Microseconds since the epoch: orders instants correctly across offsets."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def instant(key: int) -> dt.datetime:
    """The instant (in UTC) of a :func:`sort_key`."""
    return EPOCH + dt.timedelta(microseconds=key)


def sqlite_kind(exc: sqlite3.Error) -> str:
    """What an SQLite error is about: "full", "readonly", "cantopen", "busy", "damaged", "io" or "other"."""
    name = getattr(exc, "sqlite_errorname", "") or ""  # Python 3.11+
    text = str(exc).lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return "full"
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return "readonly"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return "cantopen"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return "busy"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return "damaged"
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
        return "io"
    return "other"
