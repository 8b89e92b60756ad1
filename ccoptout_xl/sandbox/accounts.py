"""Synthetic accounts: the spec, the cached SQLite database, and ground truth for tests.

The database holds instants relative to the anchor, so it does not depend on the anchor and the cache
key leaves it out: a 1,000,000-contact account built once serves every later run, whatever "now" is.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import generator
from .render import CONTACT_COLUMNS, DELETED_OFFSET, EASTERN_STYLE, PERMISSIONS, contact_json, format_instant

GENERATOR_VERSION = "5"
"""Bump whenever generated data changes: it is part of the cache key."""

CACHE_ENV = "CCOPTOUT_SANDBOX_CACHE"
NEW_SUBSCRIBER_WINDOW_MS = 30 * 24 * 3600 * 1000


@dataclass(frozen=True)
class AccountSpec:
    """What to generate. ``anchor`` is the account's "now" (aware); None means now, to the minute."""

    contacts: int = 2000
    seed: int = 1
    unsubscribed_share: float = 0.2
    recent_share: float = 0.015
    anchor: datetime | None = None
    bulk_removal: int = 0  # long-ago opt-outs moved to one single second, as when an owner removes a list

    def __post_init__(self) -> None:
        if isinstance(self.contacts, bool) or not isinstance(self.contacts, int) or self.contacts < 0:
            raise ValueError(f"contacts must be an integer >= 0, got {self.contacts!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
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
    """``$CCOPTOUT_SANDBOX_CACHE``, else ``<tempdir>/ccoptout-xl-sandbox``."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "ccoptout-xl-sandbox")


class Account:
    """A generated account, read-only. Also the ground truth that tests compare the API with."""

    def __init__(self, spec: AccountSpec, path: Path) -> None:
        self.spec = spec
        self.path = path
        self.anchor = spec.resolved_anchor()
        self.anchor_ms = int(self.anchor.timestamp()) * 1000
        self.name = f"Sandbox Outfitters (seed {spec.seed})"
        self.cursor_secret = hashlib.sha256(f"cursor:{spec.cache_key}:{self.anchor_ms}".encode()).digest()
        conn = self.connect()
        try:
            rows = conn.execute(
                "SELECT list_id, name, description, favorite, created, updated, members_all, members_active"
                " FROM lists ORDER BY bit"
            ).fetchall()
            meta = dict(conn.execute("SELECT name, value FROM meta"))
        finally:
            conn.close()
        self._lists = rows
        self.list_ids: tuple[str, ...] = tuple(r[0] for r in rows)
        self.created_in_seq_order = meta.get("created_in_seq_order") == "1"
        self._counts: dict[str, int] | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, spec: AccountSpec, db_path: str | os.PathLike[str] | None = None) -> Account:
        """Open the account from the cache (or ``db_path``), generating it first if needed."""
        path = Path(db_path) if db_path is not None else default_cache_dir() / f"account-{spec.cache_key[:24]}.sqlite3"
        path = path.resolve()
        if _stored_key(path) != spec.cache_key:
            build(spec, path)
        return cls(spec, path)

    def connect(self) -> sqlite3.Connection:
        """A new read-only connection, usable from any thread (one thread at a time)."""
        uri = f"{self.path.as_uri()}?mode=ro&immutable=1"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("PRAGMA mmap_size = 1073741824")
        conn.execute("PRAGMA cache_size = -16384")
        return conn

    def contacts(self) -> Iterator[dict[str, Any]]:
        """Every contact (deleted ones too) in API order, as ``ContactResource`` with list_memberships."""
        conn = self.connect()
        try:
            for row in conn.execute(f"SELECT {CONTACT_COLUMNS} FROM contacts ORDER BY seq"):
                yield contact_json(row, self.anchor_ms, self.list_ids, ("list_memberships",))
        finally:
            conn.close()

    def lifecycles(self) -> Iterator[tuple[str, str]]:
        """(contact_id, lifecycle) pairs, e.g. "resubscribed" or "unsubscribed_recently" (see generator)."""
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

    def counts(self, new_subscriber: bool = False) -> dict[str, int]:
        """``ContactsCounts``: non-deleted contacts per permission (new_subscriber: created in 30 days)."""
        with self._lock:
            if self._counts is None:
                conn = self.connect()
                try:
                    per_state = dict(conn.execute("SELECT state, COUNT(*) FROM contacts GROUP BY state"))
                    (new,) = conn.execute(
                        "SELECT COUNT(*) FROM contacts WHERE created > ? AND state < ?",
                        (-NEW_SUBSCRIBER_WINDOW_MS, DELETED_OFFSET),
                    ).fetchone()
                finally:
                    conn.close()
                by_name = {name: per_state.get(code, 0) for code, name in enumerate(PERMISSIONS)}
                self._counts = {
                    "total": sum(v for k, v in per_state.items() if k < DELETED_OFFSET),
                    "explicit": by_name["explicit"],
                    "implicit": by_name["implicit"],
                    "pending": by_name["pending_confirmation"],
                    "unsubscribed": by_name["unsubscribed"],
                    "new_subscriber": new,
                }
            counts = dict(self._counts)
        if not new_subscriber:
            del counts["new_subscriber"]
        return counts

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
