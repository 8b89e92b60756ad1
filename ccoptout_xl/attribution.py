"""The local store's campaign tables: which email each stored opt-out came through, kept current in a few calls.

Campaigns (name, last send, sending activities) never change once sent, so they are read once. Each activity's
opt-outs report is newest first: a sync reads it down to what is already stored (or to the window asked for, the
first time), and skips a campaign whose unique opt-out count in the summaries has not moved since the last read.
Attribution is then a join in SQLite: a stored opt-out came through an activity when its report lists the contact
at the contact's current opt-out date, to the second (:mod:`.campaigns`).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from .campaigns import Campaign, CampaignCount, ReportRow, campaign, report_rows, summaries
from .client import Client
from .table import Region, instant, sort_key

SECOND = 1_000_000  # in keys (microseconds)


@dataclass(frozen=True)
class Mark:
    """How much of an activity's report is stored: its newest row, and how far down (None: all of it)."""

    newest: int | None
    down_to: int | None

    def covers(self, since: int | None) -> bool:
        return self.down_to is None or (since is not None and self.down_to <= since)


class CampaignTables:
    """The campaign tables of a store (the caller owns transactions)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.execute(
            "CREATE TABLE IF NOT EXISTS campaigns (campaign_id TEXT PRIMARY KEY, name TEXT, sent_at TEXT, "
            "activities TEXT, optouts INTEGER)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS report_rows (activity_id TEXT NOT NULL, contact_id TEXT NOT NULL, "
            "created_key INTEGER NOT NULL, PRIMARY KEY (activity_id, contact_id, created_key))"
        )
        db.execute("CREATE INDEX IF NOT EXISTS report_rows_contact ON report_rows (contact_id)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS report_marks (activity_id TEXT PRIMARY KEY, newest INTEGER, down_to INTEGER)"
        )

    # -- campaigns (a CampaignBook) ---------------------------------------------------------------------------

    def campaign(self, campaign_id: str) -> Campaign | None:
        row = self.db.execute(
            "SELECT campaign_id, name, sent_at, activities FROM campaigns WHERE campaign_id = ?", (campaign_id,)
        ).fetchone()
        return _campaign(row) if row else None

    def keep(self, found: Campaign) -> None:
        self.db.execute(
            "INSERT INTO campaigns (campaign_id, name, sent_at, activities) VALUES (?, ?, ?, ?) ON CONFLICT "
            "(campaign_id) DO UPDATE SET name = excluded.name, sent_at = excluded.sent_at, activities = "
            "excluded.activities",
            (
                found.campaign_id,
                found.name,
                found.sent_at and found.sent_at.isoformat(),
                "\x1f".join(found.activity_ids),
            ),
        )

    def all(self) -> list[Campaign]:
        """Every campaign read so far."""
        return [
            _campaign(row) for row in self.db.execute("SELECT campaign_id, name, sent_at, activities FROM campaigns")
        ]

    def cover(self, since: int | None) -> bool:
        """Whether the reports read are stored down to ``since`` (a key; None: all of them), every campaign's
        whole (one whose reading stopped half-way is not)."""
        if self.db.execute("SELECT 1 FROM campaigns WHERE optouts IS NULL LIMIT 1").fetchone() is not None:
            return False
        if since is None:
            return self.db.execute("SELECT 1 FROM report_marks WHERE down_to IS NOT NULL LIMIT 1").fetchone() is None
        return self.db.execute("SELECT 1 FROM report_marks WHERE down_to > ? LIMIT 1", (since,)).fetchone() is None

    # -- reports ---------------------------------------------------------------------------------------------

    def optouts_read(self, campaign_id: str) -> int | None:
        """The campaign's unique opt-outs in the summaries when its reports were last read."""
        row = self.db.execute("SELECT optouts FROM campaigns WHERE campaign_id = ?", (campaign_id,)).fetchone()
        return row[0] if row else None

    def mark(self, activity_id: str) -> Mark | None:
        row = self.db.execute(
            "SELECT newest, down_to FROM report_marks WHERE activity_id = ?", (activity_id,)
        ).fetchone()
        return Mark(*row) if row else None

    def add(self, activity_id: str, rows: list[ReportRow], mark: Mark) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO report_rows VALUES (?, ?, ?)",
            [(r.activity_id, r.contact_id, sort_key(r.created_time)) for r in rows],
        )
        self.db.execute(
            "INSERT OR REPLACE INTO report_marks VALUES (?, ?, ?)", (activity_id, mark.newest, mark.down_to)
        )

    def read_all(self, campaign_id: str, optouts: int) -> None:
        self.db.execute("UPDATE campaigns SET optouts = ? WHERE campaign_id = ?", (optouts, campaign_id))

    # -- attribution -----------------------------------------------------------------------------------------

    def attributions(self, region: Region) -> dict[str, Campaign]:
        """The campaign of each stored opt-out in ``region`` that came through one (by contact id)."""
        by_activity = {a: c for c in self.all() for a in c.activity_ids}
        found = {}
        for contact_id, activity_id in self._joined(region):
            if activity_id in by_activity:
                found[contact_id] = by_activity[activity_id]
        return found

    def counts(self, region: Region, include_deleted: bool = True) -> list[CampaignCount]:
        """Opt-outs in ``region`` per campaign, most first, then those through none (:func:`count_by_campaign`)."""
        campaigns = {c.campaign_id: c for c in self.all()}
        by_activity = {a: c.campaign_id for c in campaigns.values() for a in c.activity_ids}
        tally: dict[str | None, int] = {}
        for _, activity_id in self._joined(region, include_deleted, with_none=True):
            key = by_activity.get(activity_id) if activity_id else None
            tally[key] = tally.get(key, 0) + 1
        rows = [CampaignCount(key, campaigns[key].name, campaigns[key].sent_at, n) for key, n in tally.items() if key]
        rows.sort(key=lambda row: (-row.optouts, row.campaign_name or "", row.campaign_id or ""))
        return [*rows, CampaignCount(None, None, None, tally.get(None, 0))]

    def _joined(
        self, region: Region, include_deleted: bool = True, with_none: bool = False
    ) -> Iterator[tuple[str, str | None]]:
        """(contact id, activity id) of the stored opt-outs in ``region`` whose report row is at their opt-out
        second; with ``with_none`` also (contact id, None) for the others."""
        where, args = region.where(None if include_deleted else False, prefix="o.")
        rows = self.db.execute(
            "SELECT o.contact_id, (SELECT r.activity_id FROM report_rows r WHERE r.contact_id = o.contact_id "
            f"AND r.created_key / {SECOND} = o.sort_key / {SECOND} ORDER BY r.created_key DESC LIMIT 1) "
            f"FROM optouts o WHERE {where}",
            args,
        )
        for contact_id, activity_id in rows:
            if activity_id is not None or with_none:
                yield contact_id, activity_id


def sync(
    client: Client,
    tables: CampaignTables,
    since: dt.datetime | None,
    transaction: Callable[[], AbstractContextManager[object]],
) -> int:
    """Bring the campaign tables up to date for opt-outs from ``since`` (None: all); return the report rows read.

    One call for the summaries; then, for each campaign with opt-outs whose count moved (or whose reports are not
    stored down to ``since``), its activities' reports, newest first, down to what is stored.
    """
    floor = None if since is None else sort_key(since.replace(microsecond=0))
    read = 0
    for summary in summaries(client):
        if summary.optouts <= 0:
            continue
        found = campaign(client, summary, _Keeping(tables, transaction))
        if found is None:
            continue
        marks = {a: tables.mark(a) for a in found.activity_ids}
        current = tables.optouts_read(found.campaign_id) == summary.optouts
        if current and all(m is not None and m.covers(floor) for m in marks.values()):
            continue
        for activity_id, mark in marks.items():
            read += _read_report(client, tables, activity_id, mark, floor, transaction)
        with transaction():
            tables.read_all(found.campaign_id, summary.optouts)
    return read


def _read_report(
    client: Client,
    tables: CampaignTables,
    activity_id: str,
    mark: Mark | None,
    floor: int | None,
    transaction: Callable[[], AbstractContextManager[object]],
) -> int:
    """Read one activity's report down to what is stored (when that covers ``floor``) or down to ``floor``."""
    known = mark.newest if mark is not None and mark.covers(floor) else None
    stop = known if known is not None else floor  # newest first: what is older than this is stored, or not asked for
    rows = list(report_rows(client, activity_id, None if stop is None else instant(stop)))
    newest = max([sort_key(r.created_time) for r in rows] + ([known] if known is not None else []), default=None)
    down_to = mark.down_to if mark is not None and mark.covers(floor) else floor
    with transaction():
        tables.add(activity_id, rows, Mark(newest, down_to))
    return len(rows)


class _Keeping:
    """The tables as a campaign book whose every write is its own transaction (never one held across a call)."""

    def __init__(self, tables: CampaignTables, transaction: Callable[[], AbstractContextManager[object]]) -> None:
        self._tables = tables
        self._transaction = transaction

    def campaign(self, campaign_id: str) -> Campaign | None:
        return self._tables.campaign(campaign_id)

    def keep(self, found: Campaign) -> None:
        with self._transaction():
            self._tables.keep(found)


def _campaign(row: tuple[str, str, str | None, str]) -> Campaign:
    campaign_id, name, sent_at, activities = row
    return Campaign(
        campaign_id,
        name or "",
        dt.datetime.fromisoformat(sent_at) if sent_at else None,
        tuple(activities.split("\x1f")) if activities else (),
    )
