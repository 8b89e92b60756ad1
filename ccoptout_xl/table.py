"""The SQLite tables of opt-outs: one row per contact, read back newest first.

:class:`OptOutTable` is the local store's table; :class:`OptOutSet` a private temporary one that a query collects
into, so that reading every opt-out of a large account takes bounded memory.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator

from .files import temporary_space_error
from .optouts import OptOut


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
            if sqlite_kind(exc) == "full":  # the temporary folder it spilled to
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
