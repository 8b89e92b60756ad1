"""Opt-out queries (since, until, both, latest N) in the fewest API calls.

How (see ``shared/cc-api/README.md``, "Reading opt-outs"):

* Date filters go to the server as ``optout_after``/``optout_before`` and are checked again here, so results
  are right whether the server's bounds are inclusive or not. Windows sent to the server are padded by
  :data:`PAD` on both sides for the same reason. Locally ``since`` is inclusive and ``until`` exclusive.
* **Latest N** never scans the whole account: it asks for the whole range once (one page, with
  ``include_count``) and, if that range is large, walks ``optout_after`` windows back from the newest end,
  sizing each window from the density seen so far, until N opt-outs are found or the range is exhausted.
* A server that answers 400 to the opt-out filters still gets correct results, by scanning every unsubscribed
  contact and filtering here, after one notice.
* Results are deduplicated by contact id and read newest first (:class:`~ccoptout_xl.optouts.OptOutSet`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .client import MAX_PAGE_SIZE, Client, Page
from .exceptions import BadRequest, UsageError
from .optouts import OptOut
from .table import OptOutSet

log = logging.getLogger(__name__)

PAD = dt.timedelta(seconds=1)
FIRST_WINDOW = dt.timedelta(days=7)
SHORTEST_WINDOW = dt.timedelta(minutes=1)
MAX_LATEST = 10_000_000  # more than any account holds; beyond it --latest is a typo
# Constant Contact started in 1995: a window reaching back past this is the last one (and is left open).
EARLIEST_OPT_OUT = dt.datetime(1995, 1, 1, tzinfo=dt.timezone.utc)

Progress = Callable[[int, "int | None"], None]
Notice = Callable[[str], None]

FALLBACK_NOTICE = (
    "This Constant Contact server does not accept the optout_after/optout_before filters; reading every "
    "unsubscribed contact instead (more calls, same results)."
)


@dataclass(frozen=True)
class OptOutQuery:
    """What to fetch: opt-outs with ``since <= opt_out_date < until``, optionally only the ``latest`` N."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    latest: int | None = None
    include_deleted: bool = False

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise UsageError(f"The {name} date must carry a time zone.")
            if value is not None:  # UTC, so that window arithmetic is never wall-clock arithmetic
                object.__setattr__(self, name, value.astimezone(dt.timezone.utc))
        if self.since and self.until and self.since >= self.until:
            raise UsageError(
                f"The since date ({self.since.isoformat()}) must be before the until date ({self.until.isoformat()})."
            )
        if self.latest is not None and not 1 <= self.latest <= MAX_LATEST:
            raise UsageError(f"--latest must be a whole number from 1 to {MAX_LATEST:,}, not {self.latest:,}.")

    @property
    def statuses(self) -> str:
        # Deleted contacts can keep their opt-out data; whether status=unsubscribed returns them is unverified.
        return "unsubscribed,deleted" if self.include_deleted else "unsubscribed"

    def describe(self, zone: dt.tzinfo) -> str:
        """The query in words, its dates in ``zone``: "opted out from 2026-05-01 00:00 to now, newest 500"."""

        def when(moment: dt.datetime) -> str:
            return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")

        start = f"from {when(self.since)}" if self.since else "from the beginning"
        end = f"to {when(self.until)} (exclusive)" if self.until else "to now"
        words = f"opted out {start} {end}"
        if self.latest is not None:
            words += f", newest {self.latest:,} only"
        return words + (", deleted contacts included" if self.include_deleted else "")

    def matches(self, optout: OptOut) -> bool:
        """The local check of every filter the server was asked to apply."""
        if optout.deleted and not self.include_deleted:
            return False
        if self.since is not None and optout.opt_out_date < self.since:
            return False
        return self.until is None or optout.opt_out_date < self.until


class OptOutSource(Protocol):
    """Where a result's opt-outs are read from: a query's collection, or the local store."""

    def newest(self, limit: int | None = None) -> Iterator[OptOut]: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class QueryResult:
    """The opt-outs a query found, newest first, and what finding them cost."""

    query: OptOutQuery
    found: OptOutSource
    calls: int
    full_scan: bool = False
    notices: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[OptOut]:
        return self.found.newest(self.query.latest)

    def __len__(self) -> int:
        total = len(self.found)
        return total if self.query.latest is None else min(total, self.query.latest)

    def close(self) -> None:
        self.found.close()


class OptOutFiltersUnsupported(Exception):
    """The server answered 400 to ``optout_after``/``optout_before`` but accepts the same query without them."""


def from_api(
    client: Client,
    query: OptOutQuery,
    *,
    now: dt.datetime | None = None,
    on_progress: Progress | None = None,
    on_notice: Notice | None = None,
) -> QueryResult:
    """Run ``query`` against the API and return its opt-outs, newest first."""
    return _Search(client, query, now, on_progress, on_notice).run()


class _Search:
    def __init__(
        self,
        client: Client,
        query: OptOutQuery,
        now: dt.datetime | None,
        on_progress: Progress | None,
        on_notice: Notice | None,
    ) -> None:
        self.client = client
        self.query = query
        self.now = now or dt.datetime.now(dt.timezone.utc)
        self.on_progress = on_progress
        self.on_notice = on_notice if on_notice is not None else log.warning
        self.found = OptOutSet()
        self.fetched = 0  # contacts read, for progress
        self.seen: set[str] | None = None  # contact ids read, while walking windows
        self.calls_before = client.http.stats.calls

    def run(self) -> QueryResult:
        notices: list[str] = []
        full_scan = False
        try:
            if self.query.latest is None:
                self._collect(self._pages(self.query.since, self.query.until), total_hint=True)
            else:
                self._walk_back(self.query.latest)
        except OptOutFiltersUnsupported:
            notices.append(FALLBACK_NOTICE)
            self.on_notice(FALLBACK_NOTICE)
            full_scan = True
            self.found.close()
            self.found, self.fetched, self.seen = OptOutSet(), 0, None
            self._collect(self._pages(None, None), total_hint=True)
        calls = self.client.stats.calls - self.calls_before
        return QueryResult(self.query, self.found, calls, full_scan, notices)

    # -- fetching ------------------------------------------------------------------------------------------

    def _params(self, after: dt.datetime | None, before: dt.datetime | None) -> dict[str, object]:
        params: dict[str, object] = {
            "status": self.query.statuses,
            "include": "list_memberships",
            "include_count": True,
            "limit": MAX_PAGE_SIZE,
        }
        # A bound at the edge of what datetime can hold (year 1 or 9999) is no bound at all.
        if after is not None and after > dt.datetime.min.replace(tzinfo=dt.timezone.utc) + PAD:
            params["optout_after"] = after - PAD
        if before is not None and before < dt.datetime.max.replace(tzinfo=dt.timezone.utc) - PAD:
            params["optout_before"] = before + PAD
        return params

    def _pages(self, after: dt.datetime | None, before: dt.datetime | None) -> Generator[Page, None, None]:
        """Pages of the opt-outs the server holds in ``[after, before)`` (padded)."""
        params = self._params(after, before)
        pages = self.client.contact_pages(**params)
        try:
            first = next(pages, None)
        except BadRequest:
            if after is None and before is None:
                raise
            # Same question without the opt-out filters: if that is accepted, the server lacks them.
            probe = self._params(None, None) | {"limit": 1, "include_count": False}
            next(self.client.contact_pages(**probe), None)
            raise OptOutFiltersUnsupported from None
        if first is not None:
            yield first
            yield from pages

    def _collect(self, pages: Iterator[Page], *, total_hint: bool = False) -> int:
        """Add every opt-out on ``pages`` that matches the query; return how many contacts the pages held."""
        contacts = 0
        total: int | None = None
        for page in pages:
            if total_hint and total is None:
                total = page.total
            contacts += len(page.items)
            self._add(page, total)
        return contacts

    def _add(self, page: Page, total: int | None = None) -> None:
        optouts = [o for o in map(OptOut.from_contact, page.items) if o is not None and self.query.matches(o)]
        self.found.add_all(optouts)
        self.fetched += len(page.items)
        if self.seen is not None:
            self.seen.update(str(c.get("contact_id")) for c in page.items)
        if self.on_progress:
            self.on_progress(self.fetched, total)

    # -- latest N ------------------------------------------------------------------------------------------

    def _walk_back(self, wanted: int) -> None:
        since, until = self.query.since, self.query.until
        pages = self._pages(since, until)
        first = next(pages, None)
        if first is None:
            return
        self._add(first)
        total = first.total
        read_all = math.ceil(total / MAX_PAGE_SIZE) if total is not None else None  # calls to read the range
        if read_all is not None and read_all - 1 <= math.ceil(wanted / MAX_PAGE_SIZE) + 1:
            self._collect(pages)  # cheaper to read the whole range than to search it
            return
        pages.close()
        # The first page is a sample of the range, not its newest part: start afresh from the newest end.
        self.found.close()
        self.found, self.seen = OptOutSet(), set()

        started = self._calls()
        upper = until  # None: the newest end stays open, whatever this computer's clock says
        span = FIRST_WINDOW
        skipped: tuple[dt.datetime, int] | None = None  # a window given up as too wide: its lower end, its size
        may_narrow = True
        while True:
            if read_all is not None and self._calls() - started >= read_all:
                # The search has cost as much as reading everything would: read what is left, and stop.
                self._collect(self._pages(since, upper))
                return
            lower = self._lower_end(upper, span)
            window = self._pages(lower, upper)
            head = next(window, None)
            count = 0
            if head is not None:
                need = wanted - len(self.found)
                if may_narrow and lower is not None and span > SHORTEST_WINDOW and self._too_wide(head.total, need):
                    # Far more than needed: try the newest part only, as if the window were evenly spread...
                    window.close()
                    skipped, may_narrow = (lower, head.total or 0), False
                    span = max(SHORTEST_WINDOW, span * (need * 1.2 / (head.total or 1)))
                    continue
                count = self._collect(itertools.chain([head], window))
            if len(self.found) >= wanted or lower is None or lower == since:
                return
            if total is not None and len(self.seen) >= total:
                return  # every opt-out in the range has been read (one arriving meanwhile may be missed)
            if skipped is not None:
                # ...and if that was not enough, the rest of the window given up comes next, whole, not guessed
                # again: its size is known, and a burst inside it would make any guess thrash.
                span, skipped, may_narrow = lower - skipped[0], None, False
            else:
                growth = 8.0 if count == 0 else (wanted - len(self.found)) * 1.25 / count
                span, may_narrow = span * min(16.0, max(1.0, growth)), True
            upper = lower

    def _lower_end(self, upper: dt.datetime | None, span: dt.timedelta) -> dt.datetime | None:
        """The older end of the window of ``span`` below ``upper``: ``since``, or None (everything older)."""
        top = upper or self.now
        since = self.query.since
        if since is not None:
            return since if top - since <= span else top - span
        return None if top - EARLIEST_OPT_OUT <= span else top - span

    def _calls(self) -> int:
        return self.client.stats.calls

    @staticmethod
    def _too_wide(window_total: int | None, need: int) -> bool:
        """Whether reading a window of ``window_total`` would cost more than narrowing it to ``need``."""
        if window_total is None or window_total <= MAX_PAGE_SIZE:
            return False
        pages_left = math.ceil(window_total / MAX_PAGE_SIZE) - 1
        return pages_left > math.ceil(need * 1.2 / MAX_PAGE_SIZE)
