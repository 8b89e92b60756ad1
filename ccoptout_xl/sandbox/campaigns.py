"""Email campaigns of a synthetic account, and which campaign activity each opt-out came through.

The generator's "campaign days" (``generator.campaign_days``: the sends behind the bursts of opt-outs) become
campaigns: each day is the send of a ``primary_email`` activity, or of a ``resend`` of the campaign sent a few days
before. Every campaign also has a ``permalink`` activity (never sent), a few campaigns were deleted after sending
(status ``Removed``: still in the summaries and reports, and ``GET /emails/{id}`` still answers, as the contract's
``Removed`` status and ``GET /emails`` "including deleted email campaigns" say), a draft and a scheduled campaign
were never sent (no summary; their activities' reports are empty), and about a third of the campaigns give their
summary counts as strings (the developer guide's examples) instead of integers (the contract).

Nothing about the contacts changes: campaigns and the opt-out reports ("report rows") are derived from the cached
account, deterministically (the spec decides everything; the anchor only the names), in memory, on first use
(about a second for 1,000,000 contacts). A report row is (activity, contact, created, reason):

- ``Contact``-source opt-outs within ``BURST_WINDOW`` after a send came through it (``BURST_SHARE`` of them);
- of the others, ``TAIL_SHARE`` came through an older email, one to 26 weeks old ("old_email");
- the rest, and every ``Account``-source opt-out, came through no email (a form, an import, the account owner).

Rows that no longer match the contact's opt-out make attribution hard, as on the real service:

- "reversed_then_removed": an ``Account``-source opt-out whose contact opted out through an email earlier, opted
  back in and was removed by the account later: the report keeps the old row, at the old time;
- "resubscribed": a contact who opted out through an email and opted back in: listed, no longer opted out;
- "twice": a contact who opted out through one campaign, opted back in, then out through a later one;
- "deleted": an opt-out through an email by a contact deleted since (the report shows ``deleted_at``).

The first candidate of each kind always gets it, so even a small account has them all. Every contact with a report
row that is not current has no ``opt_in_date`` or one after the row (nothing contradicts the re-subscription).

A report's ``created_time`` is the opt-out instant to the second (``...:44.000Z``); the contact's ``opt_out_date``
keeps its milliseconds: an opt-out came through an activity when that activity's report lists the contact with a
``created_time`` equal to its current ``opt_out_date`` to the second. ``CampaignBook.truth`` applies that rule
(exactly, in milliseconds) to the current data.

Live changes (``Account.opt_out(..., campaign_activity_id=...)``) add rows on top of the generated ones until the
account's changes are discarded; re-subscriptions and deletions never remove a row.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from . import generator
from .generator import DAY, HOUR, SECOND
from .render import DELETED_OFFSET, UNSUBSCRIBED, format_instant

CAMPAIGN_VERSION = "1"
"""Part of the seed of everything here: bump it whenever generated campaigns or report rows change."""

RESEND_GAP = 6 * DAY  # a send this soon after a campaign's primary send may be its resend
RESEND_SHARE = 0.8
BURST_WINDOW = 3 * DAY
BURST_SHARE = 0.9
TAIL_SHARE = 0.35
TAIL_MIN_AGE = 7 * DAY
TAIL_MAX_AGE = 182 * DAY
REVERSED_SHARE = 0.15  # of Account-source opt-outs without an opt-in date
RESUBSCRIBED_SHARE = 0.5
TWICE_SHARE = 0.05  # of opt-outs through an email, by contacts without an opt-in date
REMOVED_SHARE = 0.05
STRING_COUNTS_SHARE = 0.3
TRACKED_ROLES = ("primary_email", "resend")
"""Roles whose sends are tracked: only these activities' reports can list anyone."""

CASES = ("burst", "old_email", "deleted", "reversed_then_removed", "resubscribed", "twice")
# (summary campaign_type, EmailCampaign type, type_code)
KINDS = (
    ("Newsletter", "NEWSLETTER", 10),
    ("Newsletter", "NEWSLETTER", 10),
    ("Announcement", "ANNOUNCEMENT", 11),
    ("Product/Service News", "PRODUCT_SERVICE_NEWS", 12),
    ("Sale Promotion", "SALE_PROMOTION", 22),
    ("Event Announcement", "EVENT_ANNOUNCEMENT", 20),
    ("Custom Code Email", "CUSTOM_CODE_EMAIL", 26),
)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")  # fmt: skip
TOPICS = ("Spring sale", "Summer clearance", "Back to school", "Holiday gift guide", "Product update",
          "Customer stories", "Webinar invitation", "New arrivals", "Members' evening",
          "Survey: tell us more")  # fmt: skip
# The most recent campaigns get these names, in this order: what a spreadsheet or a CSV must not take as a formula,
# and text beyond ASCII.
TRICKY_NAMES = (
    '=HYPERLINK("http://x.example","Black Friday preview")',
    "+1 day flash sale 📬",
    'Café "Friday" specials, new menu',
    "-30% on everything",
    "@home: winter essentials",
    "新品上市 — Neuheiten — Nouveautés",
)


class Activity(NamedTuple):
    """One campaign activity. ``sent``: ms relative to the anchor, None if never sent."""

    number: int  # its place in CampaignBook.activities
    activity_id: str
    campaign: int
    role: str
    sent: int | None


class Row(NamedTuple):
    """One line of an opt-outs report, in report order (newest first: ``key`` ascending)."""

    key: tuple[int, int]  # (-created, seq)
    contact_id: str
    reason: str | None

    @property
    def created(self) -> int:
        return -self.key[0]

    @property
    def seq(self) -> int:
        return self.key[1]


@dataclass
class Campaign:
    """One email campaign. Instants are ms relative to the anchor."""

    index: int
    campaign_id: str
    name: str
    kind: tuple[str, str, int]
    status: str  # Done, Removed, Draft, Scheduled
    created: int
    updated: int
    activities: list[int]
    string_counts: bool = False
    stats: dict[str, int] = field(default_factory=dict)  # unique counts but optouts

    def last_sent(self, activities: Sequence[Activity]) -> int | None:
        sent = [t for t in (activities[i].sent for i in self.activities) if t is not None]
        return max(sent) if sent else None


class ActivityFact(NamedTuple):
    """A campaign activity as ``Account.campaigns`` describes it."""

    campaign_activity_id: str
    role: str
    sent_at: datetime | None


class CampaignFact(NamedTuple):
    """A campaign as ``Account.campaigns`` describes it: ground truth for tests."""

    campaign_id: str
    name: str
    current_status: str
    last_sent: datetime | None
    activities: tuple[ActivityFact, ...]
    string_counts: bool
    optouts: int


class CampaignBook:
    """The campaigns, activities and opt-out reports of one account (generated rows plus live ones)."""

    def __init__(
        self,
        anchor_ms: int,
        campaigns: list[Campaign],
        activities: list[Activity],
        rows: dict[int, list[Row]],
        cases: dict[str, list[str]],
    ) -> None:
        self.anchor_ms = anchor_ms
        self.campaigns = campaigns
        self.activities = activities
        self.by_campaign_id = {c.campaign_id: c for c in campaigns}
        self.by_activity_id = {a.activity_id: a for a in activities}
        self.cases = cases
        self._base_rows = rows
        self._rows = rows  # activity index -> rows in report order; live changes replace a list by a longer copy
        self._base_optouts = [self._unique(c, rows) for c in campaigns]
        self._optouts = list(self._base_optouts)
        self._lock = threading.Lock()
        # Summaries: sent campaigns, newest send first (ties by index); the list never changes.
        sent = [(c.last_sent(activities), c.index) for c in campaigns]
        self.sent_order = [
            i for last, i in sorted(((s, i) for s, i in sent if s is not None), key=lambda p: (-p[0], p[1]))
        ]
        # GET /emails: newest update first.
        self.updated_order = [c.index for c in sorted(campaigns, key=lambda c: (-c.updated, c.index))]

    # --- reading ---------------------------------------------------------------------------------------

    def rows(self, activity: int) -> list[Row]:
        """The report of one activity, newest first (a list that is never changed afterwards: safe to keep)."""
        with self._lock:
            return self._rows.get(activity, [])

    def page(self, activity: int, after: tuple[int, int] | None, limit: int) -> tuple[list[Row], bool]:
        """Up to ``limit`` rows after the key ``after`` (None: from the newest), and whether more follow."""
        rows = self.rows(activity)
        start = 0 if after is None else bisect_right(rows, after, key=lambda r: r.key)
        return rows[start : start + limit], start + limit < len(rows)

    def optouts(self, campaign: int) -> int:
        """Unique contacts in the reports of the campaign's activities."""
        with self._lock:
            return self._optouts[campaign]

    def truth(self, optouts: Iterable[tuple[str, int]]) -> dict[str, str | None]:
        """contact_id -> the activity id its current opt-out came through, or None; ``optouts``: (contact_id,
        opt_out in ms relative to the anchor) of every contact that carries an opt-out."""
        with self._lock:
            current = self._rows
        by_contact: dict[str, list[tuple[int, int]]] = {}
        for activity, rows in current.items():
            for row in rows:
                by_contact.setdefault(row.contact_id, []).append((row.created, activity))
        result: dict[str, str | None] = {}
        for contact_id, opt_out in optouts:
            found = [a for created, a in by_contact.get(contact_id, ()) if created == opt_out]
            result[contact_id] = self.activities[found[0]].activity_id if found else None
        return result

    def facts(self) -> list[CampaignFact]:
        """Every campaign, newest update first, as ``CampaignFact``."""
        return [self._fact(self.campaigns[i]) for i in self.updated_order]

    def _fact(self, campaign: Campaign) -> CampaignFact:
        activities = tuple(
            ActivityFact(a.activity_id, a.role, self.instant(a.sent))
            for a in (self.activities[i] for i in campaign.activities)
        )
        return CampaignFact(
            campaign.campaign_id,
            campaign.name,
            campaign.status,
            self.instant(campaign.last_sent(self.activities)),
            activities,
            campaign.string_counts,
            self.optouts(campaign.index),
        )

    def instant(self, relative: int | None) -> datetime | None:
        """A relative instant as an aware UTC datetime."""
        if relative is None:
            return None
        return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=self.anchor_ms + relative)

    def render_time(self, relative: int) -> str:
        return format_instant(self.anchor_ms + relative)

    # --- live changes ----------------------------------------------------------------------------------

    def tracked(self, activity_id: str) -> Activity:
        """The sent ``primary_email`` or ``resend`` activity with this id; ValueError otherwise."""
        activity = self.by_activity_id.get(activity_id)
        if activity is None:
            raise ValueError(f"no campaign activity {activity_id!r}")
        if activity.role not in TRACKED_ROLES or activity.sent is None:
            state = "never sent" if activity.role in TRACKED_ROLES else f"a {activity.role}, not an email"
            raise ValueError(f"campaign activity {activity_id} is {state}: nobody can opt out through it")
        return activity

    def add(self, activity: Activity, rows: Iterable[Row]) -> None:
        """Live opt-outs through ``activity`` (call with the account's write lock held)."""
        with self._lock:
            current = list(self._rows.get(activity.number, []))
            for row in rows:
                insort(current, row)
            self._rows = {**self._rows, activity.number: current}
            campaign = self.campaigns[activity.campaign]
            self._optouts[campaign.index] = self._unique(campaign, self._rows)

    def discard_live(self) -> None:
        """Forget the live rows: back to the generated reports."""
        with self._lock:
            self._rows = self._base_rows
            self._optouts = list(self._base_optouts)

    def _unique(self, campaign: Campaign, rows: dict[int, list[Row]]) -> int:
        return len({row.contact_id for i in campaign.activities for row in rows.get(i, ())})


# --- generation ------------------------------------------------------------------------------------------


def build_book(
    conn: sqlite3.Connection,
    *,
    contacts: int,
    seed: int,
    unsubscribed_share: float,
    recent_share: float,
    cache_key: str,
    anchor_ms: int,
) -> CampaignBook:
    """Generate the campaigns and report rows of an account from its cached data (``conn``: the cached database)."""
    rnd = random.Random(f"ccoptout-xl-sandbox-campaigns:{CAMPAIGN_VERSION}:{cache_key}")
    days, bursts = generator.campaign_days(contacts, seed, unsubscribed_share, recent_share)
    campaigns, activities = _campaigns(rnd, sorted(days + bursts))
    sends = sorted((a.sent, a.number) for a in activities if a.sent is not None and a.role in TRACKED_ROLES)
    rows, cases = _attribute(conn, rnd, sends, activities)
    _name(rnd, campaigns, activities, anchor_ms)
    reports = {i: sorted(r) for i, r in rows.items()}
    optouts = [len({r.contact_id for i in c.activities for r in reports.get(i, ())}) for c in campaigns]
    _finish(rnd, campaigns, activities, optouts, contacts)
    return CampaignBook(anchor_ms, campaigns, activities, reports, cases)


def _campaigns(rnd: random.Random, days: list[int]) -> tuple[list[Campaign], list[Activity]]:
    """Campaigns and activities from the sends (ascending), plus a draft and a scheduled campaign."""
    campaigns: list[Campaign] = []
    activities: list[Activity] = []

    def activity(campaign: int, role: str, sent: int | None) -> int:
        activities.append(Activity(len(activities), generator.new_uuid(rnd), campaign, role, sent))
        return len(activities) - 1

    def campaign(first_send: int | None, created: int) -> Campaign:
        index = len(campaigns)
        new = Campaign(
            index, generator.new_uuid(rnd), "", KINDS[int(rnd.random() * len(KINDS))], "Done", created, created, []
        )
        new.activities += [activity(index, "primary_email", first_send), activity(index, "permalink", None)]
        campaigns.append(new)
        return new

    last: Campaign | None = None
    for day in days:
        if last is not None and len(last.activities) == 2:
            primary = activities[last.activities[0]].sent
            assert primary is not None
            if day - primary <= RESEND_GAP and rnd.random() < RESEND_SHARE:
                last.activities.append(activity(last.index, "resend", day))
                continue
        last = campaign(day, day - HOUR - int(rnd.random() * 5 * DAY))
    for status, created in (("Draft", -3 * DAY), ("Scheduled", -2 * DAY)):
        unsent = campaign(None, created + int(rnd.random() * HOUR))
        unsent.status = status
        unsent.updated = unsent.created + int(rnd.random() * DAY)
    return campaigns, activities


def _attribute(
    conn: sqlite3.Connection, rnd: random.Random, sends: list[tuple[int, int]], activities: list[Activity]
) -> tuple[dict[int, list[Row]], dict[str, list[str]]]:
    """Report rows (activity -> rows, unsorted) and the contacts of each hard case, from the contacts in seq order."""
    times = [t for t, _ in sends]
    rows: dict[int, list[Row]] = {}
    cases: dict[str, list[str]] = {name: [] for name in CASES}
    rand = rnd.random
    plain = generator.REASONS["plain"]

    def add(send: int, contact_id: str, seq: int, created: int, reason: str | None) -> None:
        rows.setdefault(sends[send][1], []).append(Row((-created, seq), contact_id, reason))

    def between(lo: int, hi: int) -> tuple[int, int]:
        """Indexes [first, last) of the sends at or after lo and at or before hi."""
        return bisect_left(times, lo), bisect_right(times, hi)

    def former(first: int, last: int, before: int) -> tuple[int, int]:
        """A send among ``first..last-1`` and an opt-out instant a while after it, before ``before``."""
        send = first + int(rand() * (last - first))
        sent = times[send]
        return send, min(sent + SECOND + int(rnd.expovariate(1 / (8 * HOUR))), sent + (before - sent) // 2)

    query = (
        "SELECT seq, contact_id, created, opt_in, opt_out, opt_out_source, opt_out_reason, state, lifecycle"
        " FROM contacts WHERE opt_out IS NOT NULL OR lifecycle = ? ORDER BY seq"
    )
    for seq, contact_id, created, opt_in, opt_out, source, reason, state, lifecycle in conn.execute(
        query, (generator.RESUBSCRIBED,)
    ):
        if lifecycle == generator.RESUBSCRIBED:
            if opt_out is not None or opt_in is None:
                continue
            first, last = between(created, opt_in - HOUR)
            if first < last and (rand() < RESUBSCRIBED_SHARE or not cases["resubscribed"]):
                send, when = former(first, last, opt_in)
                add(send, contact_id, seq, when, plain[int(rand() * len(plain))] if rand() < 0.5 else None)
                cases["resubscribed"].append(contact_id)
            continue
        if state != UNSUBSCRIBED and state < DELETED_OFFSET:
            continue  # not a contact that carries an opt-out
        if source == "Account":
            first, last = between(created, opt_out - 3 * DAY)
            wanted = rand() < REVERSED_SHARE or not cases["reversed_then_removed"]
            if opt_in is None and first < last and wanted:
                send, when = former(first, last, opt_out - DAY)
                add(send, contact_id, seq, when, plain[int(rand() * len(plain))] if rand() < 0.5 else None)
                cases["reversed_then_removed"].append(contact_id)
            continue
        deleted = state >= DELETED_OFFSET
        latest = bisect_right(times, opt_out) - 1
        through: int | None = None
        if latest >= 0 and times[latest] >= created and opt_out - times[latest] <= BURST_WINDOW:
            if rand() < BURST_SHARE or (deleted and not cases["deleted"]):
                through = latest
                cases["burst"].append(contact_id)
        else:
            first, last = between(max(created, opt_out - TAIL_MAX_AGE), opt_out - TAIL_MIN_AGE)
            if first < last and (rand() < TAIL_SHARE or not cases["old_email"] or (deleted and not cases["deleted"])):
                through = first + int(rand() * (last - first))
                cases["old_email"].append(contact_id)
        if through is None:
            continue
        add(through, contact_id, seq, opt_out, reason)
        if deleted:
            cases["deleted"].append(contact_id)
        if opt_in is None and (rand() < TWICE_SHARE or not cases["twice"]):
            campaign = activities[sends[through][1]].campaign
            first, last = between(created, times[through] - 2 * DAY)
            others = [i for i in range(first, last) if activities[sends[i][1]].campaign != campaign]
            if others:
                send = others[int(rand() * len(others))]
                _, when = former(send, send + 1, times[through] - HOUR)
                add(send, contact_id, seq, when, plain[int(rand() * len(plain))] if rand() < 0.5 else None)
                cases["twice"].append(contact_id)
    return rows, cases


def _name(rnd: random.Random, campaigns: list[Campaign], activities: list[Activity], anchor_ms: int) -> None:
    """Unique names of at most 80 characters; the most recent campaigns get the tricky ones."""
    taken: set[str] = set()
    newest_first = sorted(campaigns, key=lambda c: (-c.created, c.index))
    for n, campaign in enumerate(newest_first):
        when = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=anchor_ms + campaign.created)
        if n < len(TRICKY_NAMES):
            name = TRICKY_NAMES[n]
        elif campaign.kind[0] == "Newsletter":
            name = f"{MONTHS[when.month - 1]} {when.year} Newsletter"
        else:
            topic = TOPICS[int(rnd.random() * len(TOPICS))]
            name = f"{topic} — {MONTHS[when.month - 1][:3]} {when.day}, {when.year}"
        unique, k = name, 2
        while unique in taken:
            unique = f"{name} ({k})"
            k += 1
        taken.add(unique)
        campaign.name = unique[:80]


def _finish(
    rnd: random.Random, campaigns: list[Campaign], activities: list[Activity], optouts: list[int], contacts: int
) -> None:
    """Statuses (some sent campaigns removed since), string counts, and the other unique counts."""
    sent = [c for c in campaigns if c.last_sent(activities) is not None]
    for campaign in sent:
        last = campaign.last_sent(activities)
        assert last is not None
        campaign.updated = last + int(rnd.random() * HOUR)
        if rnd.random() < REMOVED_SHARE:
            campaign.status = "Removed"
            campaign.updated = last + DAY + int(rnd.random() * max(-last - 2 * DAY, 0))
        campaign.string_counts = rnd.random() < STRING_COUNTS_SHARE
        first = activities[campaign.activities[0]].sent
        assert first is not None
        audience = max(0, int(contacts * (first + generator.CREATION_SPAN) / generator.CREATION_SPAN))
        sends = max(int(audience * (0.55 + 0.2 * rnd.random())), 4 * optouts[campaign.index])
        opens = int(sends * (0.12 + 0.23 * rnd.random()))
        campaign.stats = {
            "sends": sends,
            "opens": opens,
            "clicks": int(opens * (0.05 + 0.2 * rnd.random())),
            "forwards": int(opens * 0.01 * rnd.random()),
            "abuse": int(sends * 0.0005 * rnd.random()),
            "bounces": int(sends * (0.002 + 0.018 * rnd.random())),
            "not_opened": sends - opens,
        }
    with_optouts = [c for c in sent if optouts[c.index] > 0]
    if with_optouts and not any(c.status == "Removed" for c in with_optouts):
        _removed(with_optouts[len(with_optouts) // 2], activities, rnd)
    for flag in (True, False):  # both forms among the campaigns with opt-outs, when there are two of them
        if len(with_optouts) >= 2 and not any(c.string_counts == flag for c in with_optouts):
            with_optouts[-1 if flag else 0].string_counts = flag


def _removed(campaign: Campaign, activities: list[Activity], rnd: random.Random) -> None:
    last = campaign.last_sent(activities)
    assert last is not None
    campaign.status = "Removed"
    campaign.updated = last + DAY + int(rnd.random() * max(-last - 2 * DAY, 0))
