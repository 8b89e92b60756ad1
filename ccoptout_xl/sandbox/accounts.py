"""Synthetic accounts: the spec, the cached SQLite database, and ground truth for tests.

The database holds instants relative to the anchor, so it does not depend on the anchor and the cache
key leaves it out: a 1,000,000-contact account built once serves every later run, whatever "now" is.

The cached database is shared by every account opened on the same spec and is never written after it
is built. ``Account.opt_out`` (back-dated or not), ``resubscribe`` and ``delete`` change one account while
it is served: the first change copies the database to a private temporary file, and from then on every
reader (the API's connections, ``contacts()``, ``counts()``...) uses that copy, in WAL mode so that reads
and the change never block each other. ``close()`` discards the copy (and the changes) and goes back to
the cache.

``Account.pick`` draws contacts of a kind at random (deterministically, for tests and benchmarks) and
``Account.optouts_truth`` lists every contact that carries an opt-out: both in SQL, fast on 1,000,000 contacts.

``Account.campaigns()`` lists the account's email campaigns, ``campaign_truth()`` says which campaign activity each
opt-out came through (or None) and ``campaign_cases()`` names the contacts of each hard case (see campaigns.py):
all derived from the cached data on first use, without changing a contact, in about a second for 1,000,000
contacts (``campaign_book()`` builds it ahead of time). ``opt_out(..., campaign_activity_id=...)`` is an opt-out
through an email: its activity's report lists it.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import hashlib
import json
import logging
import math
import os
import random
import re
import secrets
import shutil
import sqlite3
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

from . import generator
from .campaigns import CampaignBook, CampaignFact, Row, build_book
from .render import (
    CONTACT_COLUMNS,
    DELETED_OFFSET,
    EASTERN_STYLE,
    PERMISSIONS,
    UNSUBSCRIBED,
    contact_json,
    format_instant,
)
from .settings import MAX_CONTACTS, MAX_SEED, whole

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "5"
"""Bump whenever generated data changes: it is part of the cache key."""

CACHE_ENV = "CCOPTOUT_SANDBOX_CACHE"
NEW_SUBSCRIBER_WINDOW_MS = 30 * 24 * 3600 * 1000
OPT_OUT_SOURCES = ("Contact", "Account")
MAX_REASON_LENGTH = 255
ACTIVE_STATES = (0, 1)  # explicit, implicit
_LISTS_SQL = (
    "SELECT list_id, name, description, favorite, created, updated, members_all, members_active FROM lists ORDER BY bit"
)
# What a change needs to know about a contact.
_CHANGE_COLUMNS = "seq, contact_id, state, style, lists, email_updated, opt_out, created"
PICK_KINDS: dict[str, tuple[int, ...]] = {
    "active": ACTIVE_STATES,  # can opt out
    "unsubscribed": (UNSUBSCRIBED,),  # opted out, not deleted: can re-subscribe or be deleted
    "any_not_deleted": tuple(range(len(PERMISSIONS))),
}
_PICK_CHUNK = 500  # seqs per "seq IN (...)" query
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class OptOutFact(NamedTuple):
    """One contact that carries opt-out data, as ``Account.optouts_truth`` sees it.

    Instants are aware datetimes in UTC, equal to what the API renders (``...108Z`` or ``...-05:00``).
    """

    contact_id: str
    opt_out_date: datetime
    deleted: bool
    created_at: datetime


@dataclass(frozen=True)
class AccountSpec:
    """What to generate. ``anchor`` is the account's "now" (aware); None means now, to the minute.

    ``contacts`` from 0 to 5,000,000 (MAX_CONTACTS) and ``seed`` from 0 to 2**63 - 1; anything else is a
    SettingError (a ValueError) before anything is generated.
    """

    contacts: int = 2000
    seed: int = 1
    unsubscribed_share: float = 0.2
    recent_share: float = 0.015
    anchor: datetime | None = None
    bulk_removal: int = 0  # long-ago opt-outs moved to one single second, as when an owner removes a list

    def __post_init__(self) -> None:
        whole("contacts", self.contacts, 0, MAX_CONTACTS)
        whole("seed", self.seed, 0, MAX_SEED)
        for name in ("unsubscribed_share", "recent_share"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 or math.isnan(value):
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if isinstance(self.bulk_removal, bool) or not isinstance(self.bulk_removal, int) or self.bulk_removal < 0:
            raise ValueError(f"bulk_removal must be an integer >= 0, got {self.bulk_removal!r}")
        if self.anchor is not None and (self.anchor.tzinfo is None or self.anchor.utcoffset() is None):
            raise ValueError("anchor must be an aware datetime")

    @property
    def cache_key(self) -> str:
        """Hash of everything that shapes the stored data (the anchor does not)."""
        fields = [GENERATOR_VERSION, self.contacts, self.seed, self.unsubscribed_share, self.recent_share]
        if self.bulk_removal:  # only when used, so existing cached accounts keep their key
            fields.append(self.bulk_removal)
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()

    def resolved_anchor(self) -> datetime:
        """The anchor in UTC, truncated to the second (default: now, truncated to the minute)."""
        if self.anchor is None:
            return datetime.now(timezone.utc).replace(second=0, microsecond=0)
        return self.anchor.astimezone(timezone.utc).replace(microsecond=0)


def default_cache_dir() -> Path:
    """``$CCOPTOUT_SANDBOX_CACHE``, else ``<tempdir>/ccoptout-xl-<user>/ccoptout-xl-sandbox``: this user's own.

    ``<user>`` is the numeric user id (the user name where there is none, as on Windows), so that two users of
    one machine never share the folder. Only the path: see ``usable_cache_dir``.
    """
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"ccoptout-xl-{_user_tag()}" / "ccoptout-xl-sandbox"


def usable_cache_dir() -> Path:
    """``default_cache_dir()``, created if needed; a private temporary folder, with a notice, if it is unusable.

    The default folder and its parent are created owner-only (0700). A folder that is not a folder (a file, a
    symbolic link where the default should be), that this user cannot write, or that belongs to another user is
    not used: generated accounts then go to a private temporary folder for this process (removed at exit), after
    a warning on the ``ccoptout_xl.sandbox.accounts`` logger saying why and how to fix it.
    """
    folder = default_cache_dir()
    try:
        problem = _unusable(folder, private=not os.environ.get(CACHE_ENV))
    except OSError as exc:
        problem = f"cannot be created or read ({exc.strerror or exc})"
    if problem is None:
        return folder
    return _fallback_dir(folder, problem)


def _user_tag() -> str:
    """This user, as a short file-name-safe tag: the uid on POSIX, the sanitized user name elsewhere."""
    getuid = getattr(os, "getuid", None)
    if getuid is not None:
        return str(getuid())
    try:
        name = getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        name = ""
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64].strip(".")
    return tag or "user"


def _unusable(folder: Path, private: bool) -> str | None:
    """Why ``folder`` cannot hold this user's cache (None: it can), creating it (and, if ``private``, its parent,
    both owner-only) when missing."""
    levels = [folder.parent, folder] if private else [folder]
    if not private:
        with contextlib.suppress(FileExistsError):  # a file in the way: said below
            folder.mkdir(parents=True, exist_ok=True)
    for level in levels:
        if private:
            with contextlib.suppress(FileExistsError):
                level.mkdir(mode=0o700)
        info = os.lstat(level) if private else os.stat(level)
        if stat.S_ISLNK(info.st_mode):
            return f"is a symbolic link ({level}), not a folder of this user's own"
        if not stat.S_ISDIR(info.st_mode):
            return f"is not a folder ({level} is a file)"
        getuid = getattr(os, "getuid", None)
        if getuid is None:  # Windows: the temporary folder is the user's own already
            continue
        if info.st_uid != getuid():
            return f"belongs to another user ({level} is owned by uid {info.st_uid})"
        if private and info.st_mode & 0o077:
            os.chmod(level, 0o700)  # ours, but open to others: make it private
    if not os.access(folder, os.W_OK | os.X_OK):
        return "is not writable by this user"
    return None


_fallback_lock = threading.Lock()
_fallback: Path | None = None


def _fallback_dir(wanted: Path, problem: str) -> Path:
    """This process's private temporary cache folder (created once, removed at exit), after one warning."""
    global _fallback
    with _fallback_lock:
        if _fallback is None:
            _fallback = Path(tempfile.mkdtemp(prefix="ccoptout-xl-sandbox-private-"))
            atexit.register(shutil.rmtree, _fallback, True)
            logger.warning(
                "note: the sandbox cache folder %s %s; generating sandbox accounts in %s for this run only "
                "(set %s to a folder of your own to keep them between runs).",
                wanted,
                problem,
                _fallback,
                CACHE_ENV,
            )
        return _fallback


@dataclass(frozen=True)
class _LiveCopy:
    """An account's private, writable copy of its database (see ``Account._go_live``)."""

    path: Path
    writer: sqlite3.Connection
    discard: weakref.finalize


class Account:
    """A generated account, and the ground truth that tests compare the API with.

    Read-only on the shared cache until ``opt_out``, ``resubscribe`` or ``delete`` changes it (see the module
    docstring); every method is thread-safe, and a change is visible to every reader once the call returns.
    """

    def __init__(self, spec: AccountSpec, path: Path) -> None:
        self.spec = spec
        self.path = path
        self.anchor = spec.resolved_anchor()
        self.anchor_ms = int(self.anchor.timestamp()) * 1000
        self.name = f"Sandbox Outfitters (seed {spec.seed})"
        self.cursor_secret = hashlib.sha256(f"cursor:{spec.cache_key}:{self.anchor_ms}".encode()).digest()
        self._counts: tuple[int, dict[str, int]] | None = None  # (data version, counts)
        self._lock = threading.Lock()  # the counts cache
        self._write_lock = threading.RLock()  # changes, one at a time
        self._file_lock = threading.Lock()  # _live and _generation, read together
        self._live: _LiveCopy | None = None
        self._generation = 0
        self._version = 0  # data version of the latest change; the cached database is version 0
        self._book: CampaignBook | None = None
        self._book_lock = threading.Lock()
        conn = self.connect()
        try:
            rows = conn.execute(_LISTS_SQL).fetchall()
            meta = dict(conn.execute("SELECT name, value FROM meta"))
        finally:
            conn.close()
        self._base_lists = rows
        self._lists = rows
        self.list_ids: tuple[str, ...] = tuple(r[0] for r in rows)
        # Changes never touch ``created`` or ``seq``, so this stays true.
        self.created_in_seq_order = meta.get("created_in_seq_order") == "1"

    @classmethod
    def open(cls, spec: AccountSpec, db_path: str | os.PathLike[str] | None = None) -> Account:
        """Open the account from the cache (or ``db_path``), generating it first if needed.

        The cache is ``usable_cache_dir()``; if generating into it fails all the same (a full disk, a file
        that cannot be replaced), the account is generated in the private fallback folder, after a notice.
        """
        if db_path is not None:
            path = Path(db_path).resolve()
            if _stored_key(path) != spec.cache_key:
                build(spec, path)
            return cls(spec, path)
        name = f"account-{spec.cache_key[:24]}.sqlite3"
        path = (usable_cache_dir() / name).resolve()
        if _stored_key(path) != spec.cache_key:
            try:
                build(spec, path)
            except (OSError, sqlite3.OperationalError) as exc:
                if _fallback is not None and path.parent == _fallback.resolve():
                    raise
                problem = f"cannot take a generated account ({exc})"
                path = (_fallback_dir(path.parent, problem) / name).resolve()
                if _stored_key(path) != spec.cache_key:
                    build(spec, path)
        return cls(spec, path)

    def __enter__(self) -> Account:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def changed(self) -> bool:
        """True once a change gave the account its private copy (until ``close``)."""
        return self._live is not None

    @property
    def generation(self) -> int:
        """Bumps whenever readers must switch database files: connections of an older generation are stale."""
        return self._generation

    def connect(self) -> sqlite3.Connection:
        """A new read-only connection to the current data, usable from any thread (one thread at a time)."""
        return self.open_reader()[0]

    def open_reader(self) -> tuple[sqlite3.Connection, int]:
        """A read-only connection to the current data, and the ``generation`` it belongs to."""
        with self._file_lock:
            live, generation = self._live, self._generation
            if live is None:
                uri = f"{self.path.as_uri()}?mode=ro&immutable=1"
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                conn = sqlite3.connect(f"{live.path.as_uri()}?mode=rw", uri=True, check_same_thread=False, timeout=10.0)
                conn.execute("PRAGMA query_only = 1")
        conn.execute("PRAGMA mmap_size = 1073741824")
        conn.execute("PRAGMA cache_size = -16384")
        return conn, generation

    @staticmethod
    def data_version(conn: sqlite3.Connection) -> int:
        """The data version ``conn`` sees (in its current transaction): 0 for the cached data, then one up per change.

        Results cached under a data version (counts) stay true for that version.
        """
        row = conn.execute("SELECT value FROM meta WHERE name = 'data_version'").fetchone()
        return int(row[0]) if row else 0

    def contacts(self) -> Iterator[dict[str, Any]]:
        """Every contact (deleted ones too) in API order, as ``ContactResource`` with list_memberships."""
        conn = self.connect()
        try:
            for row in conn.execute(f"SELECT {CONTACT_COLUMNS} FROM contacts ORDER BY seq"):
                yield contact_json(row, self.anchor_ms, self.list_ids, ("list_memberships",))
        finally:
            conn.close()

    def lifecycles(self) -> Iterator[tuple[str, str]]:
        """(contact_id, lifecycle) pairs, e.g. "resubscribed" or "unsubscribed_recently" (see generator).

        A change sets the lifecycle it implies: "unsubscribed_recently" (or "_long_ago", for an opt-out dated more
        than 30 days before the anchor), "resubscribed", "deleted" or "deleted_unsubscribed".
        """
        conn = self.connect()
        try:
            for contact_id, lifecycle in conn.execute("SELECT contact_id, lifecycle FROM contacts ORDER BY seq"):
                yield contact_id, generator.LIFECYCLES[lifecycle]
        finally:
            conn.close()

    def lists(self, membership_count: str | None = None) -> list[dict[str, Any]]:
        """The contact lists as ``ContactList``; membership_count "all" or "active" adds the count."""
        result = []
        for list_id, name, description, favorite, created, updated, members_all, members_active in self._lists:
            item: dict[str, Any] = {"list_id": list_id, "name": name}
            if description is not None:
                item["description"] = description
            item["favorite"] = bool(favorite)
            item["created_at"] = format_instant(self.anchor_ms + created)
            item["updated_at"] = format_instant(self.anchor_ms + updated, EASTERN_STYLE)
            if membership_count == "all":
                item["membership_count"] = members_all
            elif membership_count == "active":
                item["membership_count"] = members_active
            result.append(item)
        return result

    def counts(self, new_subscriber: bool = False, conn: sqlite3.Connection | None = None) -> dict[str, int]:
        """``ContactsCounts``: non-deleted contacts per permission (new_subscriber: created in 30 days).

        ``conn``: read with this connection (in the caller's transaction) instead of a new one.
        """
        own = conn is None
        if conn is None:
            conn = self.connect()
            conn.execute("BEGIN")  # one snapshot for the version and the counts
        try:
            version = self.data_version(conn)
            with self._lock:
                if self._counts is None or self._counts[0] != version:
                    self._counts = (version, self._count(conn))
                counts = dict(self._counts[1])
        finally:
            if own:
                conn.close()
        if not new_subscriber:
            del counts["new_subscriber"]
        return counts

    @staticmethod
    def _count(conn: sqlite3.Connection) -> dict[str, int]:
        per_state = dict(conn.execute("SELECT state, COUNT(*) FROM contacts GROUP BY state"))
        (new,) = conn.execute(
            "SELECT COUNT(*) FROM contacts WHERE created > ? AND state < ?",
            (-NEW_SUBSCRIBER_WINDOW_MS, DELETED_OFFSET),
        ).fetchone()
        by_name = {name: per_state.get(code, 0) for code, name in enumerate(PERMISSIONS)}
        return {
            "total": sum(v for k, v in per_state.items() if k < DELETED_OFFSET),
            "explicit": by_name["explicit"],
            "implicit": by_name["implicit"],
            "pending": by_name["pending_confirmation"],
            "unsubscribed": by_name["unsubscribed"],
            "new_subscriber": new,
        }

    # --- ground truth and random picks, for tests and benchmarks ------------------------------------------

    def optouts_truth(self, *, include_deleted: bool = True) -> list[OptOutFact]:
        """Every contact that carries opt-out data, newest opt-out first (ties by contact_id).

        That is each unsubscribed contact that is not deleted, and (``include_deleted``) each deleted contact
        that kept an opt-out date: exactly the contacts for which ``OptOut.from_contact`` of the API's
        rendering gives an opt-out. Read with SQL from one snapshot (no JSON rendered): about half a second
        on a 1,000,000-contact account. ``contacts()`` gives the full rendering when that is needed.
        """
        deleted = f" OR state >= {DELETED_OFFSET}" if include_deleted else ""
        conn = self.connect()
        try:
            rows = conn.execute(
                f"SELECT contact_id, opt_out, state >= {DELETED_OFFSET}, created FROM contacts INDEXED BY idx_optout"
                f" WHERE opt_out IS NOT NULL AND (state = {UNSUBSCRIBED}{deleted}) ORDER BY opt_out DESC, contact_id"
            ).fetchall()
        finally:
            conn.close()
        base = _EPOCH + timedelta(milliseconds=self.anchor_ms)
        ms = timedelta(milliseconds=1)
        return [OptOutFact(i, base + ms * opt_out, bool(gone), base + ms * made) for i, opt_out, gone, made in rows]

    def pick(self, kind: str, n: int, rng: random.Random | int, *, created_by: datetime | None = None) -> list[str]:
        """Ids of ``n`` distinct contacts of ``kind``, drawn at random: uniformly, without replacement.

        ``kind``: "active" (explicit or implicit, not deleted: can opt out), "unsubscribed" (opted out and not
        deleted: can re-subscribe or be deleted) or "any_not_deleted". ``rng``: a ``random.Random`` (drawn from,
        so successive picks differ) or an int seed. ``created_by`` (aware): only contacts created at or before
        that instant, e.g. those that can take a back-dated opt-out dated then. Deterministic: the same data
        and the same rng state (or seed) give the same ids in the same order. ValueError if the account has
        fewer than ``n`` such contacts.

        Fast on large accounts: random seqs are drawn and checked by primary key (rejection sampling), so the
        cost grows with ``n``, not with the account (about 10 ms for 1,000 of 1,000,000 contacts); only a rare
        kind (under 5% of the contacts drawn from) or a pick of more than half of a kind reads that kind's seqs
        from its index.
        """
        if kind not in PICK_KINDS:
            raise ValueError(f"kind must be one of {', '.join(PICK_KINDS)}, got {kind!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if isinstance(rng, int) and not isinstance(rng, bool):
            rng = random.Random(rng)
        if not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or an int seed, not {type(rng).__name__}")
        limit = None if created_by is None else _epoch_ms(created_by) - self.anchor_ms
        states = PICK_KINDS[kind]
        conn = self.connect()
        try:
            conn.execute("BEGIN")  # one snapshot for the sizes and the picks
            counts = self.counts(conn=conn)
            total = {
                "active": counts["explicit"] + counts["implicit"],
                "unsubscribed": counts["unsubscribed"],
                "any_not_deleted": counts["total"],
            }[kind]
            (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM contacts").fetchone()
            top, created_clause = last, ""
            if limit is not None and self.created_in_seq_order:  # those created by then are the seqs up to top
                row = conn.execute(
                    "SELECT seq FROM contacts INDEXED BY idx_created WHERE created <= ? ORDER BY created DESC LIMIT 1",
                    (limit,),
                ).fetchone()
                top = 0 if row is None else row[0]
                total = total * top // last if last else 0  # an estimate: the kinds are spread along seq
            elif limit is not None:
                created_clause = f" AND created <= {int(limit)}"
            if n == 0:
                return []
            if limit is None and n > total:
                raise ValueError(f"only {total} {kind} contacts, not {n}")
            if not created_clause and total * 20 >= top and n <= total // 2:
                seqs = self._draw(conn, states, n, total, top, rng)
            else:
                marks = ", ".join("?" * len(states))
                query = f"SELECT seq FROM contacts WHERE state IN ({marks}) AND seq <= ?{created_clause}"
                every = sorted(row[0] for row in conn.execute(query, (*states, top)))
                if n > len(every):
                    raise ValueError(f"only {len(every)} {kind} contacts created by {created_by}, not {n}")
                seqs = rng.sample(every, n)
            ids: dict[int, str] = {}
            for start in range(0, n, _PICK_CHUNK):
                chunk = seqs[start : start + _PICK_CHUNK]
                query = f"SELECT seq, contact_id FROM contacts WHERE seq IN ({', '.join('?' * len(chunk))})"
                ids.update(conn.execute(query, chunk).fetchall())
            return [ids[seq] for seq in seqs]
        finally:
            conn.close()

    @staticmethod
    def _draw(
        conn: sqlite3.Connection, states: tuple[int, ...], n: int, total: int, top: int, rng: random.Random
    ) -> list[int]:
        """Rejection sampling: random seqs in 1..top, kept when their contact's state is one of ``states``.

        ``total``: about how many of the seqs qualify (it sizes the batches); ValueError if fewer than ``n`` do.
        """
        chosen: list[int] = []
        tried: set[int] = set()
        while len(chosen) < n and len(tried) < top:
            want = min(5_000, (n - len(chosen)) * top // max(total, 1) + 16)
            batch: list[int] = []
            while len(batch) < want and len(tried) < top:
                seq = rng.randrange(top) + 1
                if seq not in tried:
                    tried.add(seq)
                    batch.append(seq)
            found: dict[int, int] = {}
            for start in range(0, len(batch), _PICK_CHUNK):
                chunk = batch[start : start + _PICK_CHUNK]
                query = f"SELECT seq, state FROM contacts WHERE seq IN ({', '.join('?' * len(chunk))})"
                found.update(conn.execute(query, chunk).fetchall())
            for seq in batch:
                if found.get(seq) in states:
                    chosen.append(seq)
                    if len(chosen) == n:
                        break
        if len(chosen) < n:
            raise ValueError(f"only {len(chosen)} such contacts, not {n}")
        return chosen

    # --- email campaigns ----------------------------------------------------------------------------------

    def campaign_book(self) -> CampaignBook:
        """The account's campaigns and opt-out reports (campaigns.py), generated from the cached data on first use.

        The generated part depends on the spec alone (campaign names on the anchor too), never on changes made
        since: changes add to it (``opt_out`` through an activity) until ``close`` discards them.
        """
        with self._book_lock:
            if self._book is None:
                conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro&immutable=1", uri=True)
                try:
                    spec = self.spec
                    self._book = build_book(
                        conn,
                        contacts=spec.contacts,
                        seed=spec.seed,
                        unsubscribed_share=spec.unsubscribed_share,
                        recent_share=spec.recent_share,
                        cache_key=spec.cache_key,
                        anchor_ms=self.anchor_ms,
                    )
                finally:
                    conn.close()
            return self._book

    def campaigns(self) -> list[CampaignFact]:
        """Every email campaign (sent, removed after sending, draft, scheduled), newest update first, with its
        activities (id, role, send time), whether its summary gives counts as strings, and its unique opt-outs."""
        return self.campaign_book().facts()

    def campaign_truth(self) -> dict[str, str | None]:
        """For every contact that carries an opt-out (``optouts_truth()``'s, deleted ones too): the
        ``campaign_activity_id`` its current opt-out came through, or None (an ``Account`` opt-out, a form, an
        import: anything but an email's unsubscribe link; a report row of an opt-out reversed since does not count).

        The rule: the activity's report lists the contact with a ``created_time`` equal to its current
        ``opt_out_date`` (to the second, as the API renders them; the truth compares milliseconds).
        """
        conn = self.connect()
        try:
            rows = conn.execute(
                f"SELECT contact_id, opt_out FROM contacts INDEXED BY idx_optout WHERE opt_out IS NOT NULL"
                f" AND (state = {UNSUBSCRIBED} OR state >= {DELETED_OFFSET})"
            ).fetchall()
        finally:
            conn.close()
        return self.campaign_book().truth(rows)

    def campaign_cases(self) -> dict[str, list[str]]:
        """Contact ids of each hard case of the generated reports, in seq order: "burst" and "old_email" (opt-outs
        through an email within 3 days of its send, or from one 1 to 26 weeks old), "deleted" (through an email,
        deleted since), "reversed_then_removed" (a report row from an opt-out reversed since; the account removed the
        contact later), "resubscribed" (a report row; subscribed again now), "twice" (an older row in another
        campaign's report, then the current one). Live changes do not update these lists."""
        return {name: list(ids) for name, ids in self.campaign_book().cases.items()}

    # --- changes ---------------------------------------------------------------------------------------

    def opt_out(
        self,
        count: int | None = None,
        *,
        contact_ids: Iterable[str] | None = None,
        at: datetime | None = None,
        source: str = "Contact",
        reason: str | None = "Too many emails",
        backdated: bool = False,
        campaign_activity_id: str | None = None,
    ) -> list[str]:
        """Opt contacts out; returns their ids. Give ``count`` or ``contact_ids``, not both.

        ``count``: the first ``count`` active (explicit or implicit, not deleted) contacts in seq order whose
        email address was last updated at or before ``at``; ValueError if there are fewer. ``contact_ids``: any
        contacts neither deleted nor already unsubscribed, in the order given.

        Each becomes "unsubscribed" with opt_out_source ``source`` ("Contact" or "Account"), opt_out_reason
        ``reason`` (None: absent) and opt_out_date ``at`` (aware; default now, the real time, not the anchor),
        truncated to the millisecond, or to the second for contacts in the -05:00 style, which has no
        milliseconds. The email address's updated_at becomes the opt-out date; the contact's own updated_at
        does not move (as on the real service).

        ``backdated=True``: an opt-out that arrives now with an older date, as an import of unsubscribes from
        another system or a removal back-dated by support. ``at`` is then required and is the opt_out_date: any
        instant from the contact's creation on (even before its email's last update), never in the future
        (after the real time of the call); the email address's updated_at becomes the real time of the change,
        not ``at``. With ``count``, the first active contacts created at or before ``at``. The lifecycle follows
        the opt-out date ("unsubscribed_long_ago" if more than 30 days before the anchor). Lists, counts, the
        data version and open cursors change as for any opt-out, and the contact shows in optout_after/
        optout_before windows and include_count counts at its old date.

        ``campaign_activity_id``: the opt-out came through that email (a sent ``primary_email`` or ``resend``
        activity of ``campaigns()``): its report lists each contact at the opt-out date (newest first) and its
        campaign's unique opt-outs grow. ``source`` must then be "Contact"; each contact must have been created by
        the send, and the opt-out date must not be before it (with ``count``: the first active contacts created by
        the send). ValueError otherwise, and nothing changes.
        """
        if (count is None) == (contact_ids is None):
            raise ValueError("give either count or contact_ids")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        if source not in OPT_OUT_SOURCES:
            raise ValueError(f"source must be one of {', '.join(OPT_OUT_SOURCES)}, got {source!r}")
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH):
            raise ValueError(f"reason must be None or a string of at most {MAX_REASON_LENGTH} characters")
        if backdated and at is None:
            raise ValueError("a back-dated opt-out needs at: the date it carries")
        at_ms = _epoch_ms(at)
        changed_ms = _epoch_ms(None) if backdated else at_ms  # the real time of the change
        if at_ms > changed_ms:
            raise ValueError(f"a back-dated opt-out cannot be in the future: {format_instant(at_ms)} is after now")
        ids = None if contact_ids is None else _id_list(contact_ids)
        book = activity = None
        if campaign_activity_id is not None:
            if source != "Contact":
                raise ValueError("an opt-out through an email is the person's own: source must be Contact")
            book = self.campaign_book()
            activity = book.tracked(campaign_activity_id)
        sent = None if activity is None else activity.sent
        created_limit = at_ms // 1000 * 1000 - self.anchor_ms
        if sent is not None:
            created_limit = min(created_limit, sent)
        report: list[Row] = []

        def apply(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if ids is None:
                assert count is not None  # checked above: a count, or the contacts
                rows = conn.execute(
                    f"SELECT {_CHANGE_COLUMNS} FROM contacts"
                    f" WHERE state IN ({', '.join('?' * len(ACTIVE_STATES))}) AND email_updated <= ? AND created <= ?"
                    " ORDER BY seq LIMIT ?",
                    (
                        *ACTIVE_STATES,
                        changed_ms // 1000 * 1000 - self.anchor_ms,
                        created_limit,
                        count,
                    ),
                ).fetchall()
                if len(rows) < count:
                    raise ValueError(f"only {len(rows)} active contacts can opt out at {at_ms} ms, not {count}")
            else:
                rows = self._select(conn, ids)
                for row in rows:
                    if row[2] >= DELETED_OFFSET or row[2] == UNSUBSCRIBED:
                        state = "deleted" if row[2] >= DELETED_OFFSET else "already unsubscribed"
                        raise ValueError(f"contact {row[1]} is {state}")
            updates = []
            for row in rows:
                stamp = self._stamp(changed_ms, row)  # the email's updated_at
                dated = self._stamp(at_ms, row, backdated=True) if backdated else stamp
                lifecycle = (
                    generator.UNSUBSCRIBED_RECENTLY
                    if dated > -generator.RECENT_WINDOW
                    else generator.UNSUBSCRIBED_LONG_AGO
                )
                updates.append((UNSUBSCRIBED, UNSUBSCRIBED, dated, source, reason, stamp, lifecycle, row[0]))
                if sent is not None:
                    if row[7] > sent:
                        raise ValueError(f"contact {row[1]} was created after {campaign_activity_id} was sent")
                    if dated < sent:
                        raise ValueError(
                            f"contact {row[1]}: an opt-out through {campaign_activity_id} is before its send"
                        )
                    report.append(Row((-dated, row[0]), row[1], reason))
            conn.executemany(
                "UPDATE contacts SET permission = ?, state = ?, opt_out = ?, opt_out_source = ?,"
                " opt_out_reason = ?, email_updated = ?, lifecycle = ? WHERE seq = ?",
                updates,
            )
            return [(row, UNSUBSCRIBED) for row in rows]

        with self._write_lock:  # the report changes with the contacts: close() cannot come in between
            changed = self._change(apply, empty=count == 0 or ids == [])
            if book is not None and activity is not None and report:
                book.add(activity, report)
        return changed

    def resubscribe(self, contact_ids: Iterable[str], *, at: datetime | None = None) -> list[str]:
        """Opted-out (and not deleted) contacts opt back in, at ``at`` (default now); returns their ids.

        Like on the real service, they become "explicit" (opt_in_source "Contact", confirmed) and lose
        opt_out_source, opt_out_date and opt_out_reason, so they leave status=unsubscribed results and
        optout_after/optout_before windows. opt_in_date and the email address's updated_at become ``at``;
        the contact's own updated_at does not move.
        """
        at_ms = _epoch_ms(at)
        ids = _id_list(contact_ids)

        def apply(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows = self._select(conn, ids)
            for row in rows:
                if row[2] != UNSUBSCRIBED:
                    raise ValueError(f"contact {row[1]} is not an opted-out contact that is not deleted")
            explicit = PERMISSIONS.index("explicit")
            updates = []
            for row in rows:
                stamp = self._stamp(at_ms, row)
                updates.append((explicit, explicit, stamp, stamp, generator.RESUBSCRIBED, row[0]))
            conn.executemany(
                "UPDATE contacts SET permission = ?, state = ?, opt_out = NULL, opt_out_source = NULL,"
                " opt_out_reason = NULL, opt_in = ?, opt_in_source = 'Contact', confirm_status = 'confirmed',"
                " email_updated = ?, lifecycle = ? WHERE seq = ?",
                updates,
            )
            return [(row, explicit) for row in rows]

        return self._change(apply, empty=not ids)

    def delete(self, contact_ids: Iterable[str], *, at: datetime | None = None) -> list[str]:
        """Delete contacts (not yet deleted); deleted_at is the UTC date of ``at`` (default now, so today).

        They keep their permission and any opt-out data, and show only under status=deleted (or all).
        """
        at_ms = _epoch_ms(at)
        ids = _id_list(contact_ids)

        def apply(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows = self._select(conn, ids)
            for row in rows:
                if row[2] >= DELETED_OFFSET:
                    raise ValueError(f"contact {row[1]} is already deleted")
            conn.executemany(
                "UPDATE contacts SET state = ?, deleted = ?, lifecycle = ? WHERE seq = ?",
                [
                    (
                        row[2] + DELETED_OFFSET,
                        self._stamp(at_ms, row),
                        generator.DELETED if row[6] is None else generator.DELETED_UNSUBSCRIBED,
                        row[0],
                    )
                    for row in rows
                ],
            )
            return [(row, row[2] + DELETED_OFFSET) for row in rows]

        return self._change(apply, empty=not ids)

    def close(self) -> None:
        """Discard the changes, if any: delete the private copy and read the shared cache again. Idempotent.

        The account stays usable (a later change starts a new copy). Close connections from ``connect``
        that read the copy first: on Windows its files cannot be deleted while open (they are left behind).
        """
        with self._write_lock:
            live = self._live
            if live is None:
                return
            with self._file_lock:
                self._live = None
                self._generation += 1
            self._lists = self._base_lists
            if self._book is not None:
                self._book.discard_live()
            live.discard()

    def _stamp(self, at_ms: int, row: tuple[Any, ...], *, backdated: bool = False) -> int:
        """``at`` relative to the anchor, in the contact's precision; never before its email's last update, or for
        a back-dated opt-out's date never before the contact's creation.

        ``row``: the contact's _CHANGE_COLUMNS.
        """
        _seq, contact_id, _state, style, _lists, email_updated, _opt_out, created = row
        if style == EASTERN_STYLE:
            at_ms = at_ms // 1000 * 1000
        stamp = at_ms - self.anchor_ms
        earliest, what = (created, "its creation") if backdated else (email_updated, "its last change")
        if stamp < earliest:
            when = format_instant(self.anchor_ms + earliest, style)
            raise ValueError(f"contact {contact_id}: {format_instant(at_ms, style)} is before {what} ({when})")
        return stamp

    @staticmethod
    def _select(conn: sqlite3.Connection, ids: list[str]) -> list[tuple[Any, ...]]:
        """The contacts with these ids, in that order (one scan: contact_id has no index); ValueError if unknown."""
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (contact_id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM temp.wanted")
        conn.executemany("INSERT INTO temp.wanted VALUES (?)", [(i,) for i in ids])
        found = {
            row[1]: row
            for row in conn.execute(
                f"SELECT {_CHANGE_COLUMNS} FROM contacts WHERE contact_id IN (SELECT contact_id FROM temp.wanted)"
            )
        }
        missing = [i for i in ids if i not in found]
        if missing:
            raise ValueError(f"no such contact: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        return [found[i] for i in ids]

    def _change(
        self, apply: Callable[[sqlite3.Connection], list[tuple[tuple[Any, ...], int]]], empty: bool
    ) -> list[str]:
        """Run ``apply`` (which updates contacts and returns (row, new state) pairs) in one write transaction."""
        if empty:
            return []
        with self._write_lock:
            live = self._live if self._live is not None else self._go_live()
            conn = live.writer
            version = self._version + 1
            conn.execute("BEGIN IMMEDIATE")
            try:
                moves = apply(conn)
                _move_members(conn, [(row[4], row[2], new_state) for row, new_state in moves], len(self.list_ids))
                conn.execute("UPDATE meta SET value = ? WHERE name = 'data_version'", (str(version),))
                lists = conn.execute(_LISTS_SQL).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._version = version
            self._lists = lists
        return [row[1] for row, _ in moves]

    def _go_live(self) -> _LiveCopy:
        """Copy the shared database to a private temporary file and switch every reader to it."""
        directory = Path(tempfile.mkdtemp(prefix="ccoptout-sandbox-changes-"))
        path = directory / "account.sqlite3"
        try:
            shutil.copyfile(self.path, path)
            writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                writer.execute("PRAGMA journal_mode = WAL")
                writer.execute("PRAGMA synchronous = OFF")  # a throwaway file
                writer.execute("PRAGMA busy_timeout = 10000")
                writer.execute("INSERT OR REPLACE INTO meta VALUES ('data_version', '0')")  # still the cached data
            except BaseException:
                writer.close()
                raise
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        live = _LiveCopy(path, writer, weakref.finalize(self, _discard, writer, directory))
        with self._file_lock:
            self._live = live
            self._generation += 1
        return live

    def summary(self, extra_fields: tuple[str, ...] = ()) -> dict[str, Any]:
        """The account owner's ``Customer`` record; extra_fields may add physical_address, company_logo."""
        digest = hashlib.sha256(f"account:{self.spec.seed}".encode()).digest()
        encoded = "".join("abcdefghijklmnopqrstuvwxyz0123456789"[b % 36] for b in digest[:14])
        body: dict[str, Any] = {
            "contact_email": "owner@sandbox-outfitters.example",
            "contact_phone": "6175550100",
            "country_code": "US",
            "encoded_account_id": encoded,
            "first_name": "Sandra",
            "last_name": "Boxwell",
            "organization_name": self.name,
            "organization_phone": "617-555-0100",
            "state_code": "MA",
            "time_zone_id": "US/Eastern",
            "website": "https://sandbox-outfitters.example",
        }
        if "physical_address" in extra_fields:
            body["physical_address"] = {
                "address_line1": "1 Main Street",
                "address_line2": "Suite 100",
                "city": "Waltham",
                "state_code": "MA",
                "postal_code": "02451",
                "country_code": "US",
            }
        if "company_logo" in extra_fields:
            body["company_logo"] = {
                "url": "https://files.sandbox-outfitters.example/logo.png",
                "internal_id": "ACCOUNT.IMAGE.1",
            }
        return body


def _epoch_ms(at: datetime | None) -> int:
    """An aware instant (default: now) as epoch milliseconds, truncated."""
    if at is None:
        return time.time_ns() // 1_000_000
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("at must be an aware datetime")
    delta = at - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _id_list(contact_ids: Iterable[str]) -> list[str]:
    """Contact ids as a list without repeats, in the order given."""
    if isinstance(contact_ids, (str, bytes)):
        raise TypeError("contact_ids must be a list of contact ids, not one string")
    ids = list(dict.fromkeys(contact_ids))
    if not all(isinstance(i, str) for i in ids):
        raise TypeError("contact ids must be strings")
    return ids


def _move_members(conn: sqlite3.Connection, moves: list[tuple[int, int, int]], bits: int) -> None:
    """Keep lists.members_all (not deleted) and members_active (explicit, implicit) true after state changes.

    ``moves``: (lists mask, old state, new state) per changed contact.
    """
    members_all = [0] * bits
    members_active = [0] * bits
    for mask, old, new in moves:
        d_all = (new < DELETED_OFFSET) - (old < DELETED_OFFSET)
        d_active = (new in ACTIVE_STATES) - (old in ACTIVE_STATES)
        if d_all or d_active:
            for bit in range(bits):
                if mask >> bit & 1:
                    members_all[bit] += d_all
                    members_active[bit] += d_active
    conn.executemany(
        "UPDATE lists SET members_all = members_all + ?, members_active = members_active + ? WHERE bit = ?",
        [(members_all[b], members_active[b], b) for b in range(bits) if members_all[b] or members_active[b]],
    )


def _discard(writer: sqlite3.Connection, directory: Path) -> None:
    """Close an account's private copy and delete it (also run at exit for accounts never closed)."""
    try:
        writer.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def build(spec: AccountSpec, path: Path) -> None:
    """Generate the account into ``path``: into a temp file first, then an atomic os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        conn = sqlite3.connect(tmp)
        try:
            for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -65536", "temp_store = MEMORY"):
                conn.execute(f"PRAGMA {pragma}")
            generator.populate(
                conn, spec.contacts, spec.seed, spec.unsubscribed_share, spec.recent_share, spec.bulk_removal
            )
            meta = {
                "key": spec.cache_key,
                "generator_version": GENERATOR_VERSION,
                "spec": json.dumps([spec.contacts, spec.seed, spec.unsubscribed_share, spec.recent_share]),
            }
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            conn.commit()
        finally:
            conn.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _stored_key(path: Path) -> str | None:
    """The cache key recorded in an existing database, or None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE name = 'key'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row else None
