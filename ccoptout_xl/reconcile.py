"""Count reconciliation: keep the local store exact in a few API calls.

An incremental read sees new opt-outs, but not a contact who re-subscribed, one deleted after opting out, or an
opt-out that arrives with an old date. Counts see them: ``include_count=true&limit=1`` is one small call that
says how many contacts a filter matches (``shared/cc-api/README.md``, "Counting what a filter matches"). So after
the incremental read the store compares the server's count of opted-out contacts with its own:

* **equal**: done (an unchanged account costs the incremental read and this one count);
* **different**: the account changed where the store cannot see. Count along a few more boxes: deleted contacts
  with opt-out data, groups of contacts by creation date (a second dimension: a re-subscription and a back-dated
  opt-out in one opt-out window cancel out there, rarely in one creation group too) and opt-out windows cut at
  other points than the bisection's. Then, for every box whose count differs, split it in two at the median of
  the store's opt-out dates inside it (so halves hold similar numbers), count one half and derive the other from
  the parent, descend into halves that differ, and re-read a box wholesale once it holds one page of opt-outs.

No set of counts proves equality: a re-subscription balanced by a back-dated opt-out between two syncs leaves the
first count equal. The weekly full sync (the backstop) catches what the counts cannot see. Reconciliation never
spends more than a full read would (:class:`TooCostly`: read everything instead), and never trusts a count over
data: when a box's rows contradict its count (a server that does not apply the opt-out filters to counts), it
stops (:class:`CountsContradict`) so the store can fall back to full reads.

Cut instants are whole milliseconds (the API's precision) strictly between two stored dates, so whether the
server's bounds are inclusive never matters for a stored opt-out.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .client import MAX_PAGE_SIZE, Client
from .history import RegionUpdate
from .optouts import OptOut
from .query import EARLIEST_OPT_OUT, PAD
from .table import OptOutTable, Region, instant, sort_key

UNSUBSCRIBED, DELETED = "unsubscribed", "deleted"
CREATION_GROUPS = 8
OTHER_CUTS = 4  # opt-out windows cut at fifths: never where the bisection cuts (halves, quarters...)
ROOT = Region(after=sort_key(EARLIEST_OPT_OUT))
MS = 1000  # a millisecond, in keys (microseconds)
TOLERANCE = 2  # contacts a box's rows may differ from its count by (changes made meanwhile) before counts are doubted

Rewrite = Callable[[list[OptOut], Region], RegionUpdate]


class TooCostly(Exception):
    """Reconciling would cost more calls than reading everything: read everything instead."""


class CountsContradict(Exception):
    """The server's count of a box differs from the rows it returns for it: counts cannot be trusted here."""


@dataclass
class Box:
    """A region of opt-outs of one status (``unsubscribed`` or ``deleted``) and the server's count of it."""

    status: str
    region: Region
    server: int

    @property
    def deleted(self) -> bool:
        return self.status == DELETED


@dataclass
class Outcome:
    """What a reconciliation did."""

    calls: int = 0  # counts and re-reads (not the incremental read)
    counted: int = 0  # boxes counted on the server
    reread: int = 0  # boxes re-read wholesale
    events: int = 0  # changes recorded
    differed: bool = False  # the first count differed from the store's
    read_all: bool = False  # stopped: reading everything is cheaper, or counts cannot be trusted
    totals: dict[str, int] = field(default_factory=dict)  # the server's count of each status, over everything


class Reconciler:
    """Compares and repairs one store's opt-outs against the API (see the module's docstring)."""

    def __init__(
        self,
        client: Client,
        table: OptOutTable,
        rewrite: Rewrite,
        *,
        page_size: int = MAX_PAGE_SIZE,
        until: dt.datetime | None = None,
    ) -> None:
        self.client = client
        self.table = table
        self.rewrite = rewrite
        self.page_size = page_size
        # Opt-outs dated after the sync began are left to the next one (its read covers them): counted here, one
        # arriving meanwhile would look like a difference, or like a count contradicting its rows.
        self.root = ROOT if until is None else replace(ROOT, before=_after_cut(sort_key(until)))
        self.outcome = Outcome()
        self.budget = math.inf

    # -- the plan ------------------------------------------------------------------------------------------

    def run(self) -> Outcome:
        """Compare the store with the account and repair what differs; raises :class:`TooCostly` or
        :class:`CountsContradict` (the store is left correct as far as it was repaired)."""
        started = self.client.stats.calls
        try:
            unsubscribed = self._count(UNSUBSCRIBED, self.root)
            self.outcome.totals[UNSUBSCRIBED] = unsubscribed.server
            if unsubscribed.server == self._stored(unsubscribed):
                return self.outcome
            self.outcome.differed = True
            deleted = self._count(DELETED, self.root)
            self.outcome.totals[DELETED] = deleted.server
            self.budget = self._full_read_cost(unsubscribed.server + deleted.server)
            spread = abs(unsubscribed.server - self._stored(unsubscribed))
            spread += abs(deleted.server - self._stored(deleted))
            if self._spent(started) + self._plan_cost(spread, unsubscribed.server) >= self.budget:
                raise TooCostly
            boxes = [unsubscribed, deleted, *self._creation_groups(unsubscribed), *self._other_cuts(unsubscribed)]
            for box in boxes:
                self._settle(box, started)
        finally:
            self.outcome.calls = self._spent(started)
        return self.outcome

    def _plan_cost(self, changes: int, rows: int) -> int:
        """About what the checks and descents for ``changes`` cost on ``rows`` opt-outs (the issue's bound)."""
        depth = math.ceil(math.log2(max(rows, 1) / self.page_size)) if rows > self.page_size else 0
        return CREATION_GROUPS + OTHER_CUTS + changes * (depth + 2)

    def _full_read_cost(self, rows: int) -> int:
        return rows // self.page_size + 1

    def _spent(self, started: int) -> int:
        return self.client.stats.calls - started

    # -- boxes ---------------------------------------------------------------------------------------------

    def _creation_groups(self, whole: Box) -> list[Box]:
        """The opted-out contacts in groups of similar size by creation date; the last group's count derived."""
        keys = self.table.keys_in(whole.region, "created_key", deleted=False)
        if len(keys) < CREATION_GROUPS * 2 or self.table.count_in(whole.region, deleted=False) != len(keys):
            return []  # too few, or opt-outs without a creation date: counts along it would never agree
        cuts = _cuts(keys, CREATION_GROUPS)
        regions = [
            replace(whole.region, created_after=low, created_before=high)
            for low, high in zip([None, *cuts], [*cuts, None], strict=True)
        ]
        return self._counted(whole, regions)

    def _other_cuts(self, whole: Box) -> list[Box]:
        """Opt-out windows cut at fifths of the store's dates (the bisection cuts at halves, quarters...)."""
        keys = self.table.keys_in(whole.region, "sort_key")
        if len(keys) < (OTHER_CUTS + 1) * 2:
            return []
        cuts = _cuts(keys, OTHER_CUTS + 1)
        regions = [
            replace(whole.region, after=low if low is not None else whole.region.after, before=high)
            for low, high in zip([None, *cuts], [*cuts, None], strict=True)
        ]
        return self._counted(whole, regions)

    def _counted(self, whole: Box, regions: list[Region]) -> list[Box]:
        """Boxes of ``regions`` (which partition ``whole``), counted on the server but the last, derived."""
        boxes = [self._count(whole.status, region) for region in regions[:-1]]
        boxes.append(Box(whole.status, regions[-1], whole.server - sum(box.server for box in boxes)))
        _check_parts(whole, boxes)
        return boxes

    def _settle(self, top: Box, started: int) -> None:
        """Make the store agree with the server's count of ``top``, descending into the halves that differ."""
        pending = [top]
        while pending:
            box = pending.pop()
            stored = self._stored(box)
            if box.server == stored:
                continue
            other = self.table.count_in(box.region, deleted=not box.deleted)
            cut = self._median_cut(box)
            if box.server + other <= self.page_size or cut is None:
                self._check_budget(started, math.ceil((box.server + other + 1) / self.page_size))
                self._reread(box)
                continue
            self._check_budget(started, 1)
            left = self._count(box.status, replace(box.region, before=cut))
            right = Box(box.status, replace(box.region, after=cut), box.server - left.server)
            _check_parts(box, [left, right])
            pending.extend([right, left])

    def _check_budget(self, started: int, next_calls: int) -> None:
        if self._spent(started) + next_calls > self.budget:
            raise TooCostly

    def _median_cut(self, box: Box) -> int | None:
        """A cut near the median of the store's opt-out dates in ``box`` (any status), or, with too few of them,
        near the middle of its time span; None if the box cannot be cut."""
        region = box.region
        keys = self.table.keys_in(region, "sort_key")
        if len(keys) >= 2:
            cuts = _cuts(keys, 2)
            if cuts:
                return cuts[0]
        low = region.after if region.after is not None else sort_key(EARLIEST_OPT_OUT)
        now = sort_key(dt.datetime.now(dt.timezone.utc))
        high = region.before if region.before is not None else now + _key(dt.timedelta(days=1))
        middle = (low + high) // 2 // MS * MS
        taken = set(keys)
        while middle in taken:
            middle += MS
        return middle if low < middle < high else None

    # -- the API -------------------------------------------------------------------------------------------

    def _count(self, status: str, region: Region) -> Box:
        """The server's count of ``status`` contacts with opt-out data in ``region`` (one call)."""
        params = _filters(region, pad=False) | {"status": status, "include_count": True, "limit": 1}
        page = next(self.client.contact_pages(**params), None)
        total = page.total if page is not None else 0
        if total is None:
            raise CountsContradict("the API sent no contacts_count")
        self.outcome.counted += 1
        return Box(status, region, total)

    def _reread(self, box: Box) -> None:
        """Read every opt-out in ``box``'s region (both statuses) and make the store hold exactly those."""
        params = _filters(box.region, pad=True) | {
            "status": f"{UNSUBSCRIBED},{DELETED}",
            "include": "list_memberships",
            "limit": self.page_size,
        }
        found: list[OptOut] = []
        for page in self.client.contact_pages(**params):
            found.extend(o for o in map(OptOut.from_contact, page.items) if o is not None and box.region.holds(o))
        seen = sum(1 for o in found if o.deleted == box.deleted)
        if abs(seen - box.server) > TOLERANCE:  # a contact or two changed meanwhile is no contradiction
            raise CountsContradict(
                f"the API counted {box.server:,} {box.status} contacts in a window but returned {seen:,}"
            )
        update = self.rewrite(found, box.region)
        self.outcome.reread += 1
        self.outcome.events += update.changed

    def _stored(self, box: Box) -> int:
        return self.table.count_in(box.region, deleted=box.deleted)


def contradiction(totals: dict[str, int], table: OptOutTable, until: dt.datetime | None = None) -> str | None:
    """Why the server's counts over everything (``totals``, of opt-outs dated before ``until``) contradict what a
    full read just stored, if they do; a few contacts of difference are changes made meanwhile."""
    root = ROOT if until is None else replace(ROOT, before=_after_cut(sort_key(until)))
    for status, counted in totals.items():
        read = table.count_in(root, deleted=status == DELETED)
        if abs(counted - read) > max(TOLERANCE, counted // 100):
            return f"it counted {counted:,} {status} contacts with opt-out data, then returned {read:,}"
    return None


def _check_parts(whole: Box, parts: list[Box]) -> None:
    """Parts of a box never hold more than it: counts that say otherwise ignore some filter."""
    if any(part.server < 0 or part.server > whole.server for part in parts):
        raise CountsContradict(
            f"the API counted {whole.server:,} {whole.status} contacts in a window and "
            f"{max(part.server for part in parts[:-1] or parts):,} in a part of it"
        )


def _filters(region: Region, *, pad: bool) -> dict[str, Any]:
    """The API's filters for ``region``: exact bounds for a count (cuts never fall on an opt-out), padded ones for
    a read (filtered again here), so both work whether the server's bounds are inclusive or not."""
    margin = _key(PAD) if pad else 0
    params: dict[str, Any] = {}
    for name, key, sign in (
        ("optout_after", region.after, -1),
        ("optout_before", region.before, 1),
        ("created_after", region.created_after, -1),
        ("created_before", region.created_before, 1),
    ):
        if key is not None:
            params[name] = instant(key + sign * margin)
    params.setdefault("optout_after", EARLIEST_OPT_OUT)  # only contacts with opt-out data (deleted ones too)
    return params


def _cuts(keys: list[int], parts: int) -> list[int]:
    """Up to ``parts - 1`` cut instants that split sorted ``keys`` into ``parts`` groups of similar size: whole
    milliseconds strictly between two neighbouring keys (never on one)."""
    cuts: list[int] = []
    for part in range(1, parts):
        cut = _gap_near(keys, len(keys) * part // parts)
        if cut is not None and (not cuts or cut > cuts[-1]):
            cuts.append(cut)
    return cuts


def _gap_near(keys: list[int], index: int) -> int | None:
    """A whole-millisecond instant strictly between ``keys[i - 1]`` and ``keys[i]``, for the ``i`` nearest
    ``index`` where there is room (opt-outs often share a second)."""
    for distance in range(len(keys)):
        for i in (index - distance, index + distance):
            if 0 < i < len(keys):
                low, high = keys[i - 1], keys[i]
                cut = (low // MS + 1) * MS
                if cut < high:
                    return cut
    return None


def _after_cut(key: int) -> int:
    """A whole-millisecond cut just after ``key``."""
    return (key // MS + 1) * MS


def _key(span: dt.timedelta) -> int:
    return (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds
