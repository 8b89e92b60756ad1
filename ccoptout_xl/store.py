"""The local opt-out store: instant repeat queries, incremental sync, and a guard on the daily quota.

One SQLite file per account in the user's cache folder holds the account's opt-outs (deleted contacts
included) and its sync state. Queries are answered from it with no API call while it is fresh (synced within
``max_age``, default 5 minutes); otherwise a sync runs first:

* **full** when there is no snapshot or the last full one is older than ``full_every`` (default 24 hours): every
  opt-out is fetched, then replaces the snapshot in one transaction;
* **incremental** otherwise: ``optout_after`` the newest opt-out stored minus :data:`OVERLAP`, upserted.

A contact who opts back in (or is deleted after opting out) is only seen by a full sync, so it may stay in the
store for up to ``full_every``. The file is in WAL mode: readers keep working while a sync writes. A sync
fetches everything before it touches the file, so one that fails or is killed leaves the previous snapshot as it
was; a cross-process lock makes two processes that sync at once do the work once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from filelock import FileLock, Timeout

from .client import Client
from .config import APP_NAME, number_setting
from .credentials import jwt_claims
from .exceptions import ApiError
from .optouts import OptOut, OptOutTable
from .query import EARLIEST_OPT_OUT, Notice, OptOutQuery, Progress, QueryResult, find_optouts

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CACHE_DIR_ENV = "CCOPTOUT_CACHE_DIR"
MAX_AGE = dt.timedelta(minutes=5)
FULL_EVERY = dt.timedelta(hours=24)
OVERLAP = dt.timedelta(hours=1)  # re-read this much before the newest stored opt-out: late writes, clock skew
DAILY_QUOTA = 10_000
QUOTA_SHARE = 0.8
LOCK_TIMEOUT = 900.0  # a full sync of a large account takes minutes
LAST_USED = "last-used-store"
QUOTA_ENV = "CCOPTOUT_DAILY_QUOTA"
SHARE_ENV = "CCOPTOUT_QUOTA_SHARE"


class QuotaGuard(ApiError):
    """Syncing would eat into the last part of the daily quota that every integration of the account shares."""

    exit_code = 5


def cache_dir() -> Path:
    """``$CCOPTOUT_CACHE_DIR``, else the user's cache folder (e.g. ``~/.cache/ccoptout-xl``)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def account_key(base_url: str, access_token: str) -> str:
    """A stable name for the account behind a token: its user id from the JWT (no API call), with the API address."""
    claims = jwt_claims(access_token)
    who = claims.get("platform_user_id") or claims.get("uid") or claims.get("sub")
    who = str(who or hashlib.sha256(access_token.encode()).hexdigest())  # not a JWT: one store per token
    return hashlib.sha256(f"{base_url}|{who}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class StoreState:
    """What ``ccoptout-xl cache status`` shows."""

    path: Path
    rows: int
    last_sync_at: dt.datetime | None
    full_sync_at: dt.datetime | None
    newest_opt_out: dt.datetime | None
    calls_today: int
    size_bytes: int


@dataclass(frozen=True)
class SyncReport:
    """What a sync did: ``kind`` is "full", "incremental" or "none" (already fresh, or done by another process)."""

    kind: str
    calls: int = 0
    fetched: int = 0
    rows: int = 0
    seconds: float = 0.0


class StoredOptOuts:
    """The stored opt-outs a query asks for, read newest first (what :class:`QueryResult` iterates)."""

    def __init__(self, table: OptOutTable, query: OptOutQuery, on_close: Callable[[], None] | None = None) -> None:
        self._table = table
        self._filters = {"since": query.since, "until": query.until, "include_deleted": query.include_deleted}
        self._on_close = on_close

    def newest(self, limit: int | None = None) -> Iterator[OptOut]:
        return self._table.newest(limit, **self._filters)

    def __len__(self) -> int:
        return self._table.count(**self._filters)

    def close(self) -> None:
        if self._on_close:
            self._on_close()


class OptOutStore:
    """One account's opt-outs and sync state, in ``path``."""

    def __init__(self, path: Path, *, on_notice: Notice | None = None) -> None:
        self.path = path
        self.on_notice = on_notice or log.warning
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(path) + ".lock")
        self._db = self._open()

    @classmethod
    def for_client(cls, client: Client, *, on_notice: Notice | None = None) -> OptOutStore:
        """The store of the account ``client`` signs in to."""
        path = cls.path_for(client)
        store = cls(path, on_notice=on_notice)
        _remember(path)
        return store

    @staticmethod
    def path_for(client: Client) -> Path:
        """Where the store of ``client``'s account is (or would be)."""
        return cache_dir() / f"optouts-{account_key(client.http.base_url, client.http.tokens.access_token())}.sqlite3"

    @classmethod
    def last_used(cls) -> OptOutStore | None:
        """The store most recently opened for an account, found without any token or API call (for Excel's
        worksheet functions, which must never wait on the network); None if there is none yet."""
        try:
            name = (cache_dir() / LAST_USED).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        path = cache_dir() / name
        return cls(path) if name.startswith("optouts-") and path.is_file() else None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> OptOutStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------------------

    def query(self, query: OptOutQuery, *, close_store: bool = False) -> QueryResult:
        """The stored opt-outs ``query`` asks for, newest first, with no API call.

        With ``close_store`` the store closes when the result does (for a store opened just for this query).
        """
        return QueryResult(query, StoredOptOuts(self._table, query, self.close if close_store else None), calls=0)

    @property
    def last_sync_at(self) -> dt.datetime | None:
        """When the data was last synced (its start), or None before the first sync; one cheap read."""
        return self._meta_time("last_sync_at")

    def is_fresh(self, max_age: dt.timedelta = MAX_AGE) -> bool:
        last = self.last_sync_at
        return last is not None and _now() - last < max_age

    def state(self) -> StoreState:
        files = [Path(str(self.path) + suffix) for suffix in ("", "-wal", "-shm")]
        size = sum(p.stat().st_size for p in files if p.is_file())
        return StoreState(
            path=self.path,
            rows=self._table.count(),
            last_sync_at=self.last_sync_at,
            full_sync_at=self._meta_time("full_sync_at"),
            newest_opt_out=self._table.newest_date(),
            calls_today=self.calls_today(),
            size_bytes=size,
        )

    def calls_today(self) -> int:
        row = self._db.execute("SELECT count FROM calls WHERE day = ?", (_today(),)).fetchone()
        return row[0] if row else 0

    # -- writing -------------------------------------------------------------------------------------------

    def count_calls(self, client: Client) -> None:
        """Add the calls ``client`` made since it was last counted to today's count (the quota guard's)."""
        self.record_calls(client.stats.calls - client.stats.counted)
        client.stats.counted = client.stats.calls

    def record_calls(self, count: int) -> None:
        """Count API calls against today's (UTC) quota."""
        if count:
            with self._db:
                self._db.execute(
                    "INSERT INTO calls (day, count) VALUES (?, ?) ON CONFLICT(day) DO UPDATE SET count = count + ?",
                    (_today(), count, count),
                )

    def sync(
        self,
        client: Client,
        *,
        full: bool = False,
        force: bool = False,
        full_every: dt.timedelta = FULL_EVERY,
        daily_quota: int | None = None,
        quota_share: float | None = None,
        on_progress: Progress | None = None,
    ) -> SyncReport:
        """Bring the store up to date (full or incremental, see the module's docstring) and say what was done.

        Past ``quota_share`` of ``daily_quota`` calls today it raises :class:`QuotaGuard` instead, unless
        ``force``. If another process synced while this one waited for the lock, nothing more is done.
        """
        daily_quota = daily_quota or number_setting(QUOTA_ENV, int, DAILY_QUOTA, 1, 10**9, "a whole number")
        quota_share = quota_share or number_setting(SHARE_ENV, float, QUOTA_SHARE, 0.01, 1.0)
        asked_at = _now()
        started = time.monotonic()
        try:
            with self._lock.acquire(timeout=LOCK_TIMEOUT):
                finished = self._meta_time("sync_finished_at")
                if finished is not None and finished >= asked_at:
                    return SyncReport("none", rows=self._table.count())  # another process did it while we waited
                used, ceiling = self.calls_today(), int(daily_quota * quota_share)
                if used >= ceiling and not force:
                    raise QuotaGuard(
                        f"{used:,} of today's {daily_quota:,} API calls are used ({used / daily_quota:.0%}; the "
                        f"guard stops syncs at {quota_share:.0%} so other integrations keep working): not syncing. "
                        "Use --force to sync anyway; the quota resets at 00:00 UTC."
                    )
                full_at = self._meta_time("full_sync_at")
                newest = self._table.newest_date()
                if full or full_at is None or newest is None or _now() - full_at > full_every:
                    kind, since = "full", EARLIEST_OPT_OUT
                else:
                    # From the newest stored opt-out, but never later than the last sync: one opt-out dated in the
                    # future (a clock error) must not hide everything that comes before it.
                    last_sync = self._meta_time("last_sync_at") or newest
                    kind, since = "incremental", max(min(newest, last_sync) - OVERLAP, EARLIEST_OPT_OUT)
                try:
                    found = find_optouts(
                        client,
                        OptOutQuery(since=since, include_deleted=True),
                        on_progress=on_progress,
                        on_notice=self.on_notice,
                    )
                finally:
                    self.count_calls(client)
                try:
                    fetched = self._replace(found, asked_at) if kind == "full" else self._update(found, asked_at)
                finally:
                    found.close()
                return SyncReport(kind, found.calls, fetched, self._table.count(), time.monotonic() - started)
        except Timeout:
            raise ApiError(
                f"Another ccoptout-xl process has been syncing {self.path.name} for {LOCK_TIMEOUT / 60:.0f} min; "
                "try again later."
            ) from None

    def clear(self) -> None:
        """Forget every stored opt-out and the sync state (the next query makes a full sync), by deleting the
        file, which also works when it is damaged inside. Today's call count is kept."""
        calls = self.calls_today_or_zero()
        self._db.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(self.path) + suffix)
        self._db = self._open()
        self.record_calls(calls)

    def calls_today_or_zero(self) -> int:
        try:
            return self.calls_today()
        except sqlite3.DatabaseError:
            return 0

    def _replace(self, found: QueryResult, synced_at: dt.datetime) -> int:
        with self._db:  # one transaction: readers see the old snapshot until it commits
            self._db.execute(f"DELETE FROM {self._table.name}")
            fetched = self._table.add_all(found.found.newest())
            self._set_meta(full_sync_at=synced_at, last_sync_at=synced_at, sync_finished_at=_now())
        # A full sync rewrites everything through the write-ahead log: fold it back into the file now, so the
        # store does not take twice its size on disk until the next automatic checkpoint.
        with contextlib.suppress(sqlite3.OperationalError):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return fetched

    def _update(self, found: QueryResult, synced_at: dt.datetime) -> int:
        with self._db:
            fetched = self._table.add_all(found.found.newest())
            self._set_meta(last_sync_at=synced_at, sync_finished_at=_now())
        return fetched

    # -- the file ------------------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        for _ in range(50):
            try:
                return self._connect()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.1)  # another process is creating or changing the file's layout
            except sqlite3.DatabaseError as exc:
                if "not a database" not in str(exc) and "malformed" not in str(exc):
                    raise
                return self._rebuild(exc)
        return self._connect()

    def _rebuild(self, exc: sqlite3.DatabaseError) -> sqlite3.Connection:
        """Move a damaged file aside (kept for inspection) and start a new one."""
        aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(str(self.path) + suffix, str(aside) + suffix)
        self.on_notice(
            f"The local opt-out store {self.path} could not be read ({exc}); it was moved to {aside.name} "
            "and a new one is being built (the next query makes a full sync)."
        )
        return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level="DEFERRED")
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else None
            if version != SCHEMA_VERSION:
                with db:  # an older (or newer) layout: rebuilt, the next sync is full
                    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                        if table not in ("meta", "calls"):  # today's call count outlives any layout
                            db.execute(f"DROP TABLE {table}")
                    db.execute("DELETE FROM meta")
                    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                if version is not None:
                    self.on_notice(f"The local opt-out store had an older layout; it was rebuilt ({self.path.name}).")
            db.execute("CREATE TABLE IF NOT EXISTS calls (day TEXT PRIMARY KEY, count INTEGER NOT NULL)")
            self._table = OptOutTable(db)
            db.commit()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _meta_time(self, key: str) -> dt.datetime | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return dt.datetime.fromisoformat(row[0]) if row else None

    def _set_meta(self, **values: dt.datetime) -> None:
        self._db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(key, value.isoformat()) for key, value in values.items()],
        )


def fetch_optouts(
    client: Client,
    query: OptOutQuery,
    *,
    use_store: bool = True,
    refresh: bool = False,
    max_age: dt.timedelta = MAX_AGE,
    force: bool = False,
    on_progress: Progress | None = None,
    on_notice: Notice | None = None,
) -> QueryResult:
    """The opt-outs ``query`` asks for, newest first: what the command line, the report and Excel all call.

    From the local store, synced first when older than ``max_age`` or when ``refresh``; past the quota guard
    (unless ``force``), from the data already stored, after a notice. With ``use_store=False``, from the API.
    """
    notice = on_notice or log.warning
    if not use_store:
        return find_optouts(client, query, on_progress=on_progress, on_notice=notice)
    store = OptOutStore.for_client(client, on_notice=notice)
    try:
        calls = 0
        if refresh or not store.is_fresh(max_age):
            try:
                calls = store.sync(client, force=force, on_progress=on_progress).calls
            except QuotaGuard as guard:
                synced = store.last_sync_at
                if synced is None:
                    raise
                notice(f"{guard} Answering from the opt-outs stored at {synced:%Y-%m-%d %H:%M} UTC.")
        result = store.query(query, close_store=True)
        result.calls = calls
        return result
    except BaseException:
        store.close()
        raise


def count_calls(client: Client) -> None:
    """Count what ``client`` spent outside syncs (list names, account, --no-cache) against today's quota, in the
    account's store if it has one (``--no-cache`` never creates a store)."""
    if client.stats.calls > client.stats.counted and OptOutStore.path_for(client).is_file():
        with OptOutStore.for_client(client) as store:
            store.count_calls(client)


def _remember(path: Path) -> None:
    """Note which store was used last (a file name, written atomically)."""
    with contextlib.suppress(OSError):
        temporary = path.parent / f".{LAST_USED}.{os.getpid()}"
        temporary.write_text(path.name, encoding="utf-8")
        os.replace(temporary, path.parent / LAST_USED)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _today() -> str:
    return _now().date().isoformat()
