"""The local opt-out store: instant repeat queries, a sync that stays exact in a few calls, and a guard on the
daily quota.

One SQLite file per account in the user's cache folder holds the account's opt-outs (deleted contacts
included), what the store learned when (:mod:`.history`: first seen opted out, re-subscribed, deleted) and its
sync state. Queries are answered from it with no API call while it is fresh (synced within ``max_age``, default 5
minutes); otherwise a sync runs first:

* **full** when there is no snapshot, when asked (``sync --full``), or as the backstop when the last full one is
  older than ``full_every`` (default 7 days, ``CCOPTOUT_FULL_SYNC_DAYS``; callers that must answer quickly, Excel's
  Refresh, skip the backstop): every opt-out is read, then replaces the snapshot in one transaction;
* **incremental** otherwise: the opt-outs dated from the newest stored one minus :data:`OVERLAP` are read and
  replace that part of the store, then the server's counts are compared with the store's and what differs is
  repaired (:mod:`.reconcile`): re-subscriptions, deletions and back-dated opt-outs are found in a few calls.

When the server's counts contradict the rows it returns, the store stops trusting them (one notice): incremental
syncs then only read new opt-outs, and a full sync runs daily as before. The file is in WAL mode: readers keep
working while a sync writes. Each write is one transaction, so a sync that fails or is killed leaves the store as
it was, or with some regions already repaired; a cross-process lock makes two processes that sync at once do the
work once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from . import attribution
from .attribution import CampaignTables
from .campaigns import Campaign, CampaignCount, with_campaigns
from .client import Client
from .credentials import jwt_claims
from .exceptions import ApiError, CcOptOutError, QuotaGuard, StoreError
from .files import disk_full
from .history import Change, History, RegionUpdate, replace_region
from .optouts import OptOut
from .query import EARLIEST_OPT_OUT, Notice, OptOutQuery, Progress, QueryResult, from_api
from .reconcile import ROOT, CountsContradict, Outcome, Reconciler, TooCostly, contradiction
from .retry import Sleep, retry_call
from .settings import CACHE_DIR_ENV, FULL_SYNC_ENV, QUOTA_ENV, SHARE_ENV, cache_dir, number_setting
from .table import EVERYWHERE, OptOutTable, Region, instant, sort_key, sqlite_kind

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: creation dates and the history of changes; 3: campaigns and their opt-out reports
MAX_AGE = dt.timedelta(minutes=5)
FULL_EVERY_DAYS = 7  # the backstop: counts cannot prove equality, a full sync can
UNTRUSTED_FULL_EVERY = dt.timedelta(hours=24)  # without trusted counts, as before them
OVERLAP = dt.timedelta(hours=1)  # re-read this much before the newest stored opt-out: late writes, clock skew
DAILY_QUOTA = 10_000
QUOTA_SHARE = 0.8
LOCK_TIMEOUT = 900.0  # a full sync of a large account takes minutes
REBUILD_TIMEOUT = 60.0  # moving an unusable file aside waits this long for a sync (of another file) to end
ROW_BYTES = 400  # about what one stored opt-out takes, with its index entry, before the store knows better
ELSEWHERE = f"set {CACHE_DIR_ENV} to another folder (or use --no-cache)"
SLACK_BYTES = 128 * 1024  # what any write needs beyond its data: the shared-memory index, a few log pages
LAST_USED = "last-used-store"
SPACE_NEEDED = "space_needed"  # meta: the bytes the last sync that failed for want of space needed
STORE_TABLES = {"meta", "calls", "optouts", "events", "campaigns", "report_rows", "report_marks"}
UNTRUSTED = "counts_untrusted"  # meta: why the server's counts are not used (they contradicted its rows)
CAMPAIGNS_SYNCED = "campaigns_synced_at"  # meta: when the campaign reports were last synced (none: never)


def backstop_interval() -> dt.timedelta:
    """How often a full sync runs as the backstop of count reconciliation (``CCOPTOUT_FULL_SYNC_DAYS``)."""
    days = number_setting(FULL_SYNC_ENV, float, FULL_EVERY_DAYS, 1, 365, "a number of days")
    return dt.timedelta(days=days)


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
    events: int = 0  # changes recorded (``ccoptout-xl changes``)
    full_sync_due: dt.datetime | None = None  # when the backstop full sync is next due
    counts_untrusted: str | None = None  # why counts are not used, if they are not


@dataclass(frozen=True)
class SyncReport:
    """What a sync did: ``kind`` is "full", "incremental" or "none" (already fresh, or done by another process)."""

    kind: str
    calls: int = 0
    fetched: int = 0
    rows: int = 0
    seconds: float = 0.0
    notices: tuple[str, ...] = ()  # what the sync noticed (a store moved aside, the full-scan fallback)
    changes: int = 0  # contacts found opted out, re-subscribed or deleted (recorded in the history)
    repaired: int = 0  # of those, found by comparing counts (invisible to a read of new opt-outs)
    counted: bool = False  # the server's counts were compared with the store's
    full_sync_due: dt.datetime | None = None  # when the backstop full sync is next due


class StoredOptOuts:
    """The stored opt-outs a query asks for, read newest first (what :class:`QueryResult` iterates)."""

    def __init__(
        self,
        table: OptOutTable,
        query: OptOutQuery,
        on_close: Callable[[], None] | None = None,
        failures: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
        campaigns: dict[str, Campaign] | None = None,
    ) -> None:
        self._table = table
        self._campaigns = campaigns  # the campaign of each opt-out that came through one, when asked for
        self._filters: dict[str, Any] = {
            "since": query.since,
            "until": query.until,
            "include_deleted": query.include_deleted,
        }
        self._on_close = on_close
        self._failures = failures  # turns a failure of the file into one clear line (StoreError)

    def newest(self, limit: int | None = None) -> Iterator[OptOut]:
        with self._failures():
            found = self._table.newest(limit, **self._filters)
            yield from found if self._campaigns is None else with_campaigns(found, self._campaigns)

    def __len__(self) -> int:
        with self._failures():
            return self._table.count(**self._filters)

    def close(self) -> None:
        if self._on_close:
            self._on_close()


class OptOutStore:
    """One account's opt-outs and sync state, in ``path``.

    Every failure of the file or its folder (a full disk, a read-only or unusable folder, a file or folder in the
    way) is a :class:`StoreError`: one line naming the path and what to do. A file that is not a store (damaged,
    or another program's SQLite database) is moved aside and a new store is built.
    """

    def __init__(self, path: Path, *, on_notice: Notice | None = None, sleep: Sleep = time.sleep) -> None:
        self.path = path
        self._sleep = sleep  # waits while another process sets the file up (see _open)
        self.on_notice = on_notice if on_notice is not None else log.warning
        self._db: sqlite3.Connection | None = None
        self._lock = FileLock(str(path) + ".lock")
        with self._failures():
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                raise StoreError(
                    f"The local opt-out store {path} is a folder, not a file: move it away (ccoptout-xl keeps its "
                    "store there) and try again."
                )
            self._db = self._open()
            self._identity = _identity(path)

    @classmethod
    def for_client(cls, client: Client, *, on_notice: Notice | None = None) -> OptOutStore:
        """The store of the account ``client`` signs in to."""
        path = cls.path_for(client)
        store = cls(path, on_notice=on_notice)
        _remember(path)
        return store

    @classmethod
    def at(cls, base_url: str, access_token: str, *, on_notice: Notice | None = None) -> OptOutStore:
        """The store of the account that ``access_token`` (as it is: expired or not) signs in to at ``base_url``."""
        return cls(cls.path_at(base_url, access_token), on_notice=on_notice)

    @classmethod
    def path_for(cls, client: Client) -> Path:
        """Where the store of ``client``'s account is (or would be)."""
        return cls.path_at(client.http.base_url, client.http.tokens.access_token())

    @staticmethod
    def path_at(base_url: str, access_token: str) -> Path:
        """Where the store of the account of ``access_token`` at ``base_url`` is (or would be)."""
        return cache_dir() / f"optouts-{account_key(base_url, access_token)}.sqlite3"

    @classmethod
    def last_used(cls) -> OptOutStore | None:
        """The store most recently opened for an account, found without any token or API call (for Excel's
        worksheet functions, which must never wait on the network); None if there is none yet. Anything else is
        a :class:`StoreError`, one line saying what to do (an unreadable cache folder, a store that cannot be
        opened): never another exception."""
        folder = cache_dir()
        try:
            name = (folder / LAST_USED).read_text(encoding="utf-8").strip()
            path = folder / name
            found = name.startswith("optouts-") and Path(name).name == name and path.is_file()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):  # nothing (usable) noted
            return None
        except OSError as exc:
            raise StoreError(
                f"The cache folder {folder} cannot be read ({exc.strerror or exc}): give yourself access to it, or "
                f"set {CACHE_DIR_ENV} to another folder."
            ) from None
        return cls(path) if found else None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> OptOutStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    # -- reading -------------------------------------------------------------------------------------------

    def query(self, query: OptOutQuery, *, close_store: bool = False, campaigns: bool = False) -> QueryResult:
        """The stored opt-outs ``query`` asks for, newest first, with no API call; with ``campaigns``, each with
        the campaign it came through (as far as the campaign reports were synced: :meth:`sync_campaigns`).

        With ``close_store`` the store closes when the result does (for a store opened just for this query).
        """
        through = self._campaigns.attributions(_region(query)) if campaigns else None
        found = StoredOptOuts(self._table, query, self.close if close_store else None, self._failures, through)
        return QueryResult(query, found, calls=0)

    def campaign_counts(self, query: OptOutQuery) -> list[CampaignCount]:
        """The stored opt-outs ``query`` asks for, counted per campaign (most first, then those through none);
        empty before the campaigns were ever synced."""
        with self._failures():
            if self._meta_time(CAMPAIGNS_SYNCED) is None:
                return []
            return self._campaigns.counts(_region(query), query.include_deleted)

    def campaigns_cover(self, since: dt.datetime | None) -> bool:
        """Whether the campaign reports are stored down to ``since`` (None: all of them)."""
        with self._failures():
            if self._meta_time(CAMPAIGNS_SYNCED) is None:
                return False
            return self._campaigns.cover(None if since is None else sort_key(since.replace(microsecond=0)))

    def campaigns(self) -> list[Campaign]:
        """Every campaign the store knows (with its last send time)."""
        with self._failures():
            return self._campaigns.all()

    def sync_campaigns(self, client: Client, since: dt.datetime | None, *, force: bool = False) -> int:
        """Bring the campaign reports up to date for opt-outs from ``since`` (None: all), in a few calls (see
        :mod:`.attribution`); return how many report rows were read. Needs the campaign_data permission. Past the
        daily quota guard it raises :class:`QuotaGuard`, unless ``force``."""
        with self._locked(LOCK_TIMEOUT, "sync"):
            with self._failures():
                self._check_quota(force)
            try:
                read = attribution.sync(client, self._campaigns, since, self._transaction)
                with self._transaction():
                    self._set_meta(**{CAMPAIGNS_SYNCED: _now()})
                return read
            finally:
                with contextlib.suppress(StoreError):
                    self.count_calls(client)

    def _check_quota(self, force: bool, daily_quota: int | None = None, quota_share: float | None = None) -> None:
        """Refuse (:class:`QuotaGuard`) to spend calls past ``quota_share`` of today's quota, unless ``force``."""
        daily_quota = daily_quota or number_setting(QUOTA_ENV, int, DAILY_QUOTA, 1, 10**9, "a whole number")
        quota_share = quota_share or number_setting(SHARE_ENV, float, QUOTA_SHARE, 0.01, 1.0)
        used, ceiling = self.calls_today(), int(daily_quota * quota_share)
        if used >= ceiling and not force:
            raise QuotaGuard(
                f"{used:,} of today's {daily_quota:,} API calls are used ({used / daily_quota:.0%}; the guard "
                f"stops syncs at {quota_share:.0%} so other integrations keep working): not syncing. Sync anyway "
                "with `ccoptout-xl sync --force` (or --force); the quota resets at 00:00 UTC."
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._failures(), self.db:
            yield

    @property
    def last_sync_at(self) -> dt.datetime | None:
        """When the data was last synced (its start), or None before the first sync; one cheap read."""
        with self._failures():
            return self._meta_time("last_sync_at")

    @property
    def history_since(self) -> dt.datetime | None:
        """Since when the store records what changes (its first full sync); None before it."""
        with self._failures():
            return self._meta_time("history_since")

    def is_fresh(self, max_age: dt.timedelta = MAX_AGE) -> bool:
        last = self.last_sync_at
        return last is not None and _now() - last < max_age

    def state(self) -> StoreState:
        with self._failures():
            files = [Path(str(self.path) + suffix) for suffix in ("", "-wal", "-shm")]
            size = sum(p.stat().st_size for p in files if p.is_file())
            full_at = self._meta_time("full_sync_at")
            untrusted = self._meta_text(UNTRUSTED)
            every = UNTRUSTED_FULL_EVERY if untrusted else backstop_interval()
            return StoreState(
                path=self.path,
                rows=self._table.count(),
                last_sync_at=self.last_sync_at,
                full_sync_at=full_at,
                newest_opt_out=self._table.newest_date(),
                calls_today=self.calls_today(),
                size_bytes=size,
                events=self._history.count(),
                full_sync_due=None if full_at is None else full_at + every,
                counts_untrusted=untrusted,
            )

    def calls_today(self) -> int:
        with self._failures():
            row = self.db.execute("SELECT count FROM calls WHERE day = ?", (_today(),)).fetchone()
            return row[0] if row else 0

    # -- writing -------------------------------------------------------------------------------------------

    def count_calls(self, client: Client) -> None:
        """Add the calls ``client`` made since it was last counted to today's count (the quota guard's)."""
        self.record_calls(client.stats.calls - client.calls_counted)
        client.calls_counted = client.stats.calls

    def record_calls(self, count: int) -> None:
        """Count API calls against today's (UTC) quota."""
        if count:
            with self._failures(), self.db:
                self.db.execute(
                    "INSERT INTO calls (day, count) VALUES (?, ?) ON CONFLICT(day) DO UPDATE SET count = count + ?",
                    (_today(), count, count),
                )

    def sync(
        self,
        client: Client,
        *,
        full: bool = False,
        force: bool = False,
        backstop: bool = True,
        full_every: dt.timedelta | None = None,
        daily_quota: int | None = None,
        quota_share: float | None = None,
        on_progress: Progress | None = None,
    ) -> SyncReport:
        """Bring the store up to date (full or incremental, see the module's docstring) and say what was done.

        ``backstop`` False skips a due backstop full sync (a caller that must answer quickly); a new store is always
        synced in full. Past ``quota_share`` of ``daily_quota`` calls today it raises :class:`QuotaGuard` instead,
        unless ``force``. If another process synced while this one waited for the lock, nothing more is done. A
        full sync that the disk cannot hold (judged from the store's size) is refused before any call; one whose
        write fails leaves the previous snapshot as it was. Both are a :class:`StoreError` saying how much space is
        needed.
        """
        full_every = full_every or backstop_interval()
        asked_at = _now()
        started, calls_before = time.monotonic(), client.stats.calls
        with self._locked(LOCK_TIMEOUT, "sync"):
            with self._failures():
                self._follow_replaced_file()
                finished = self._meta_time("sync_finished_at")
                if finished is not None and finished >= asked_at:
                    return SyncReport("none", rows=self._table.count())  # another process did it while we waited
                self._check_quota(force, daily_quota, quota_share)
                full_at = self._meta_time("full_sync_at")
                newest = self._table.newest_date()
                untrusted = self._meta_text(UNTRUSTED)
                due = full_at is not None and _now() - full_at > (UNTRUSTED_FULL_EVERY if untrusted else full_every)
                kind = "full" if full or full_at is None or newest is None or (due and backstop) else "incremental"
                self._check_room(kind)
                with self.db:  # a store that cannot be written (read-only, full) fails here, before any API call
                    self._set_meta(sync_started_at=asked_at)
            outcome, fetched, changes = Outcome(), 0, 0
            finish: dict[str, dt.datetime] = {"last_sync_at": asked_at}
            if kind == "incremental":
                # From the newest stored opt-out, but never later than the last sync: one opt-out dated in the
                # future (a clock error) must not hide everything that comes before it.
                assert newest is not None
                last_sync = self._meta_time("last_sync_at") or newest
                since = max(min(newest, last_sync) - OVERLAP, EARLIEST_OPT_OUT)
                region = Region(after=sort_key(since) - 1)
                update = self._read(client, since, region, on_progress, finish=finish if untrusted else None)
                fetched, changes = update.written, update.changed
                if not untrusted:
                    outcome = self._reconcile(client, asked_at)
                    changes += outcome.events
                    if outcome.read_all:
                        kind = "full"  # repairing would cost more than reading everything, or counts lie
                    else:
                        with self._failures(), self.db:
                            self._finish(finish)
            if kind == "full":
                finish["full_sync_at"] = asked_at
                if full_at is None:
                    finish["history_since"] = asked_at  # a new store: what it learns is recorded from now
                hint = self._table.keys_in(ROOT, "sort_key", every=max(1, self._table.count() // 400))
                update = self._read(client, EARLIEST_OPT_OUT, EVERYWHERE, on_progress, hint, finish)
                fetched, changes = fetched + update.written, changes + update.changed
                wrong = contradiction(outcome.totals, self._table, asked_at) if not untrusted else None
                if wrong:  # the counts that sent us here said something the rows now show untrue
                    self._distrust(wrong)
            with self._failures():
                rows = self._table.count()
                full_at = self._meta_time("full_sync_at")
            return SyncReport(
                kind,
                client.stats.calls - calls_before,
                fetched,
                rows,
                time.monotonic() - started,
                changes=changes,
                repaired=outcome.events,
                counted=outcome.counted > 0,
                full_sync_due=None if full_at is None else full_at + full_every,
            )

    def clear(self) -> None:
        """Forget every stored opt-out and the sync state (the next query makes a full sync), by deleting the
        file, which also works when it is damaged inside. Today's call count is kept.

        It waits for a sync in progress (in any process) to end first, so a sync never writes into a file that
        was just deleted."""
        with self._locked(LOCK_TIMEOUT, "clear"), self._failures():
            calls = self.calls_today_or_zero()
            self.db.close()
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(self.path) + suffix)
            self._db = self._open()
            self._identity = _identity(self.path)
            self.record_calls(calls)

    def calls_today_or_zero(self) -> int:
        try:
            return self.calls_today()
        except (sqlite3.DatabaseError, StoreError):
            return 0

    def _fetch(
        self, client: Client, since: dt.datetime, on_progress: Progress | None, hint: list[int] | None = None
    ) -> QueryResult:
        """Every opt-out from ``since`` (deleted contacts included), with the calls it took counted. ``hint``: the
        stored opt-outs' dates (keys), where a long read is cut into windows read at once."""
        try:
            found = from_api(
                client,
                OptOutQuery(since=since, include_deleted=True),
                on_progress=on_progress,
                on_notice=self.on_notice,
                split_hint=None if hint is None else [instant(key) for key in hint],
            )
        except BaseException as exc:
            with contextlib.suppress(StoreError):  # the calls made count, but this failure is the one to tell
                self.count_calls(client)
            if isinstance(exc, sqlite3.Error):  # the query's own collection, in SQLite's temporary folder
                raise StoreError(
                    f"Cannot collect the opt-outs read: the temporary folder ({tempfile.gettempdir()}, or "
                    f"SQLITE_TMPDIR) failed ({exc}); free some space there and try again. The local store "
                    f"{self.path} was left as it was."
                ) from exc
            raise
        try:
            self.count_calls(client)
        except BaseException:
            found.close()
            raise
        return found

    def _read(
        self,
        client: Client,
        since: dt.datetime,
        region: Region,
        on_progress: Progress | None,
        hint: list[int] | None = None,
        finish: dict[str, dt.datetime] | None = None,
    ) -> RegionUpdate:
        """Read every opt-out from ``since`` and make ``region`` of the store hold exactly those (one transaction,
        which also notes the sync's ``finish`` when this is its last step; a read that fails leaves the store as
        it was)."""
        full = region is EVERYWHERE
        found = self._fetch(client, since, on_progress, hint)
        try:
            with self._failures(writing=(len(found), full)):
                try:
                    with self.db:
                        update = replace_region(self._table, self._history, found.found.newest(), region, _now())
                        if finish is not None:
                            self._finish(finish)
                except BaseException:
                    self._shrink_log()  # the write-ahead log of a failed write holds nothing, but takes the space
                    raise
                if full:
                    # A full sync rewrites everything through the write-ahead log: fold it back into the file now,
                    # so the store does not take twice its size on disk until the next automatic checkpoint.
                    self._shrink_log()
                return update
        except StoreError as exc:
            self._note_space_needed(getattr(exc, "space_needed", None))
            raise
        finally:
            found.close()

    def _reconcile(self, client: Client, until: dt.datetime) -> Outcome:
        """Compare the server's counts with the store's and repair what differs (see :mod:`.reconcile`)."""

        def rewrite(found: list[OptOut], region: Region) -> RegionUpdate:
            with self._failures(writing=(len(found), False)), self.db:
                return replace_region(self._table, self._history, found, region, _now())

        reconciler = Reconciler(client, self._table, rewrite, until=until)
        try:
            return reconciler.run()
        except TooCostly:
            reconciler.outcome.read_all = True
        except CountsContradict as exc:
            self._distrust(str(exc))
            reconciler.outcome.read_all = True
        finally:
            with contextlib.suppress(StoreError):
                self.count_calls(client)
        return reconciler.outcome

    def _distrust(self, why: str) -> None:
        """Stop relying on the server's counts (they contradicted its rows), and say so once."""
        self.on_notice(
            f"The API's counts of opt-outs do not match the opt-outs it returns ({why}), so the local store will "
            "not rely on them: syncs read new opt-outs, and a full sync runs daily (`ccoptout-xl cache clear` "
            "tries counts again)."
        )
        with self._failures(), self.db:
            self._set_meta(**{UNTRUSTED: why})

    def _finish(self, times: dict[str, dt.datetime]) -> None:
        """Note that a sync ended (in the caller's transaction)."""
        self._set_meta(**times, sync_finished_at=_now())
        self.db.execute("DELETE FROM meta WHERE key = ?", (SPACE_NEEDED,))

    def settled_now(self) -> dt.datetime:
        """Now, once no sync (of any process) is writing: every change recorded before it is then visible, so it is
        the ``since`` that lists each change exactly once next time."""
        with self._locked(LOCK_TIMEOUT, "sync"):
            return _now()

    def changes(self, since: dt.datetime | None = None, until: dt.datetime | None = None) -> Iterator[Change]:
        """What the store learned (opted out, re-subscribed, deleted) at or after ``since``, oldest first."""
        with self._failures():
            yield from self._history.since(since, until)

    def _shrink_log(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- room on the disk ----------------------------------------------------------------------------------

    def _content_bytes(self) -> int:
        """The bytes the stored data takes (the file without its free pages)."""
        (pages,), (free,), (size,) = (
            self.db.execute(f"PRAGMA {name}").fetchone() for name in ("page_count", "freelist_count", "page_size")
        )
        return max(0, pages - free) * size

    def _bytes_for(self, rows: int, *, replacing: bool) -> int:
        """About how much free space writing ``rows`` opt-outs takes: their pages go through the write-ahead log,
        then into the file, which grows by what the pages it has (all of them when ``replacing``) cannot hold."""
        stored, content = self._table.count(), self._content_bytes()
        data = int(rows * (content / stored if stored >= 100 else ROW_BYTES))
        growth = max(0, data - content) if replacing else data
        return data + growth + SLACK_BYTES

    def _check_room(self, kind: str) -> None:
        """Refuse, before any API call, a sync that the disk cannot hold, so that no quota is spent on it: a full
        sync needs at least the current snapshot's size free (every page of the new one goes through the
        write-ahead log first), and any sync what the last one that failed for want of space needed."""
        need, why = SLACK_BYTES, "what any write needs"
        if kind == "full":
            need, why = self._content_bytes() + SLACK_BYTES, "the size of what it holds"
        noted = self._meta_text(SPACE_NEEDED)
        if noted and noted.isdigit() and int(noted) > need:
            need, why = int(noted), "what the last sync, which failed for want of space, needed"
        free = _free_bytes(self.path.parent)
        if free is not None and free < need:
            raise StoreError(
                f"Not syncing: the local opt-out store {self.path} needs about {_size(need)} free for a {kind} sync "
                f"({why}), and its disk has {_size(free)} free. Free some space there, or set {CACHE_DIR_ENV} to a "
                "folder on another disk; no API call was made and the stored opt-outs were left as they were."
            )

    def _note_space_needed(self, need: int | None) -> None:
        """Remember (if a few bytes still fit) how much space a failed sync needed, for :meth:`_check_room`."""
        if need:
            with contextlib.suppress(sqlite3.Error), self.db:
                self._set_meta(**{SPACE_NEEDED: str(need)})

    # -- the file ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, timeout: float, doing: str) -> Iterator[None]:
        """Hold the store's cross-process sync lock for ``doing`` ("sync", "clear" or "rebuild"), waiting up to
        ``timeout`` seconds for another process's sync to end."""
        lock = Path(self._lock.lock_file)
        try:
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                if doing != "sync":  # a sync that waits finds the work done: nothing to say
                    self.on_notice(f"Waiting for another process's sync of {self.path} to finish...")
                self._lock.acquire(timeout=timeout)
        except Timeout:
            if doing == "sync":
                raise ApiError(
                    f"Another ccoptout-xl process has been syncing {self.path.name} for {timeout / 60:.0f} min; "
                    "try again later."
                ) from None
            raise StoreError(
                f"Another ccoptout-xl process has been syncing {self.path} for {_wait(timeout)}, so the store was "
                f"not {'cleared' if doing == 'clear' else 'opened'}: try again when it has finished."
            ) from None
        except IsADirectoryError:
            raise StoreError(
                f"The lock file {lock} is a folder: move it away (ccoptout-xl keeps its lock file there) and try again."
            ) from None
        except OSError as exc:
            raise self._failure(exc) from None
        try:
            yield
        finally:
            self._lock.release()

    def _follow_replaced_file(self) -> None:
        """Reopen the store if another process replaced its file since it was opened (``cache clear``, a damaged
        file moved aside): writing to the old one would write to a deleted file, and be lost."""
        if _identity(self.path) != self._identity:
            self.db.close()
            self._db = self._open()
            self._identity = _identity(self.path)

    def _open(self) -> sqlite3.Connection:
        try:
            # While another process creates or changes the file's layout: try again every 0.1 s, 51 tries in all.
            return retry_call(
                self._connect,
                on=sqlite3.OperationalError,
                when=lambda exc: sqlite_kind(exc) == "busy",
                tries=51,
                delay=0.1,
                sleep=self._sleep,
            )
        except _NotAStore as exc:
            return self._rebuild(exc.reason, exc.identity)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            if sqlite_kind(exc) != "damaged":
                raise
            return self._rebuild(f"it could not be read ({exc})", None)

    def _rebuild(self, reason: str, identity: tuple[int, int] | None) -> sqlite3.Connection:
        """Move a file that is not a usable store aside (kept for inspection) and start a new one.

        Under the sync lock, and only if the file is still the one found unusable: two processes that find it at
        once must not move aside the new store that the first one built."""
        with self._locked(REBUILD_TIMEOUT, "rebuild"):
            if identity is None or _identity(self.path) == identity:
                aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
                for count in range(2, 100):  # never over an earlier one
                    if not aside.exists():
                        break
                    aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}-{count}")
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(str(self.path) + suffix, str(aside) + suffix)
                self.on_notice(
                    f"The local opt-out store {self.path} could not be used: {reason}. It was moved to {aside.name} "
                    "and a new one is being built (the next query makes a full sync)."
                )
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        identity = _identity(self.path)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # transactions are explicit here
        try:
            layout = _layout(db)  # read first: another program's file is never written to
            if layout == "foreign":
                raise _NotAStore("it is another program's SQLite database, not a ccoptout-xl store", identity)
            db.execute("PRAGMA journal_mode=WAL")
            if layout != SCHEMA_VERSION:
                db.execute("BEGIN IMMEDIATE")  # one process sets the layout up; the others wait, then see it done
                try:
                    layout = _layout(db)  # again: another process may have set it up meanwhile
                    rebuilt = layout not in (SCHEMA_VERSION, "foreign")
                    if rebuilt:
                        self._set_up(db)
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
                if layout == "foreign":
                    raise _NotAStore("it is another program's SQLite database, not a ccoptout-xl store", identity)
                if rebuilt and layout is not None:
                    self.on_notice(f"The local opt-out store had an older layout; it was rebuilt ({self.path.name}).")
            self._table = OptOutTable(db)  # (its tables exist: nothing is written)
            self._history = History(db)
            self._campaigns = CampaignTables(db)
            db.isolation_level = "DEFERRED"
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _set_up(db: sqlite3.Connection) -> None:
        """A new store's layout, or a new layout for an older (or newer) one: the next sync is full."""
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            if table not in ("meta", "calls"):  # today's call count outlives any layout
                db.execute(f"DROP TABLE {table}")
        db.execute("DELETE FROM meta")
        db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        db.execute("CREATE TABLE IF NOT EXISTS calls (day TEXT PRIMARY KEY, count INTEGER NOT NULL)")
        table = OptOutTable(db)
        db.execute(f"CREATE INDEX IF NOT EXISTS {table.name}_created ON {table.name} (created_key)")
        History(db)
        CampaignTables(db)

    def _meta_time(self, key: str) -> dt.datetime | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return dt.datetime.fromisoformat(row[0]) if row else None

    def _meta_text(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, **values: dt.datetime | str) -> None:
        self.db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(key, value if isinstance(value, str) else value.isoformat()) for key, value in values.items()],
        )

    # -- failures ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _failures(self, writing: tuple[int, bool] | None = None) -> Iterator[None]:
        """Turn a failure of the file or its folder into a :class:`StoreError`. ``writing``: how many opt-outs are
        being written, and whether they replace the stored ones, to say how much space they need."""
        try:
            yield
        except CcOptOutError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise self._failure(exc, writing) from exc

    def _failure(self, exc: BaseException, writing: tuple[int, bool] | None = None) -> StoreError:
        """One line for what went wrong with the store's file or folder, and what to do."""
        folder = self.path.parent
        if isinstance(exc, sqlite3.Error):
            kind = sqlite_kind(exc)
            if kind == "busy":
                return StoreError(
                    f"The local opt-out store {self.path} is busy: another program has held it for 30 s. Try again "
                    "in a moment."
                )
            if kind == "damaged":
                return StoreError(
                    f"The local opt-out store {self.path} is damaged ({exc}): run `ccoptout-xl cache clear` and "
                    "try again."
                )
            if kind == "full" or (kind == "io" and _low_on_space(folder)):
                return self._disk_full(writing)
        elif disk_full(exc):
            return self._disk_full(writing)
        blocker = _file_in_the_way(folder)
        if blocker is not None:
            return StoreError(
                f"The cache folder {folder} cannot be made: {blocker} is a file, not a folder. Move that file away, "
                f"or {ELSEWHERE}."
            )
        obstacle = _obstacle(self.path)
        if obstacle is not None:
            return StoreError(_explain_obstacle(self.path, *obstacle))
        if isinstance(exc, OSError):
            culprit = Path(os.fsdecode(exc.filename)) if exc.filename else self.path
            return StoreError(_explain_obstacle(self.path, culprit, exc))
        return StoreError(f"The local opt-out store {self.path} cannot be used ({exc}): {ELSEWHERE}.")

    def _disk_full(self, writing: tuple[int, bool] | None) -> StoreError:
        free = _free_bytes(self.path.parent)
        has = f"{_size(free)} free" if free is not None else "full"
        need = None
        if writing:
            rows, replacing = writing
            try:
                need = self._bytes_for(rows, replacing=replacing)
            except sqlite3.Error:
                need = rows * ROW_BYTES * 2 + SLACK_BYTES
            needed = f"about {_size(need)} needed to store the {rows:,} opt-outs read"
        else:
            needed = f"at least {_size(SLACK_BYTES)} needed"
        error = StoreError(
            f"The local opt-out store {self.path} cannot be written: its disk is full ({has}; {needed}). Free some "
            f"space there, or set {CACHE_DIR_ENV} to a folder on another disk, and try again; the stored opt-outs "
            "were left as they were."
        )
        error.space_needed = need  # type: ignore[attr-defined]
        return error


class _NotAStore(Exception):
    """The file is a readable SQLite database, but not a ccoptout-xl store."""

    def __init__(self, reason: str, identity: tuple[int, int] | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.identity = identity


def _layout(db: sqlite3.Connection) -> int | str | None:
    """What the database holds: None (nothing yet, or a store being set up), its layout's version (a
    ccoptout-xl store), or "foreign" (another program's tables, which must never be dropped)."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    columns = {row[1] for row in db.execute("PRAGMA table_info(meta)")}
    if not {"key", "value"} <= columns:
        return "foreign"
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return None if tables <= STORE_TABLES else "foreign"
    try:
        return int(row[0])
    except (TypeError, ValueError):
        return -1  # ours, in a layout that cannot be read: rebuilt


def _obstacle(path: Path) -> tuple[Path, OSError] | None:
    """The first thing that keeps the store from being read or written, found by trying: its folder, the file, its
    write-ahead log, its shared-memory file (permission bits do not stop root; a read-only file system, an
    immutable file or a folder in the way do)."""
    folder = path.parent
    try:
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(descriptor)
        os.unlink(probe)
    except FileNotFoundError:
        return None  # no folder yet: what failed is making it
    except OSError as exc:
        if not disk_full(exc):
            return folder, exc
    for name in (str(path), str(path) + "-wal", str(path) + "-shm"):
        try:
            descriptor = os.open(name, os.O_RDWR | getattr(os, "O_BINARY", 0))  # never created, never changed
        except FileNotFoundError:
            continue
        except OSError as exc:
            return Path(name), exc
        os.close(descriptor)
    return None


def _explain_obstacle(store: Path, culprit: Path, exc: OSError) -> str:
    """One line for a folder or file of the store that cannot be used, and what to do."""
    if isinstance(exc, IsADirectoryError):
        return (
            f"{culprit} is a folder, not a file: move it away (the local opt-out store keeps a file there) and retry."
        )
    what = f"The local opt-out store's {'file' if str(culprit).startswith(str(store)) else 'folder'} {culprit}"
    if exc.errno == errno.EROFS:
        return f"{what} is on a read-only file system: {ELSEWHERE.replace('another', 'a writable')}."
    if culprit.name.endswith(("-shm", "-wal")):
        return (
            f"{what} cannot be written ({exc.strerror}; left by another user or program?): remove it while no "
            f"ccoptout-xl or Excel uses the store, or make it writable; or {ELSEWHERE}."
        )
    if exc.errno == errno.EACCES:
        return f"{what} cannot be used ({exc.strerror}): give yourself access to it, or {ELSEWHERE}."
    if exc.errno == errno.EPERM:
        return f"{what} cannot be changed ({exc.strerror}; is it immutable?): make it writable, or {ELSEWHERE}."
    return f"{what} cannot be used ({exc.strerror or exc}): {ELSEWHERE}."


def _file_in_the_way(folder: Path) -> Path | None:
    """The file that stands where ``folder`` or one of its parents should be, if any."""
    for candidate in (folder, *folder.parents):
        try:
            if candidate.exists():
                return None if candidate.is_dir() else candidate
        except OSError:
            return None
    return None


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` is now (device and inode), or None if there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _low_on_space(folder: Path) -> bool:
    free = _free_bytes(folder)
    return free is not None and free < SLACK_BYTES * 4


def _wait(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _size(count: int) -> str:
    """A size as a person reads it: 64 KB, 3.2 MB, 1.4 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{max(1, round(count / 1e3))} KB"


def _remember(path: Path) -> None:
    """Note which store was used last (a file name, written atomically; a failure only loses the note)."""
    temporary = path.parent / f".{LAST_USED}.{os.getpid()}"
    try:
        temporary.write_text(path.name, encoding="utf-8")
        os.replace(temporary, path.parent / LAST_USED)
    except BaseException as exc:  # a full disk, or Ctrl-C / SIGTERM: never leave the temporary file behind
        with contextlib.suppress(OSError):
            temporary.unlink()
        if not isinstance(exc, OSError):
            raise


def _region(query: OptOutQuery) -> Region:
    """The stored opt-outs a query's dates ask for (since inclusive, until exclusive)."""
    return Region(
        after=None if query.since is None else sort_key(query.since) - 1,
        before=None if query.until is None else sort_key(query.until),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _today() -> str:
    return _now().date().isoformat()
