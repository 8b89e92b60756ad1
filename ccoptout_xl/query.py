"""Opt-out queries (since, until, both, latest N) in the fewest API calls, long reads at the rate limit.

How (see ``shared/cc-api/README.md``, "Reading opt-outs"):

* Date filters go to the server as ``optout_after``/``optout_before`` and are checked again here, so results
  are right whether the server's bounds are inclusive or not. Windows sent to the server are padded by
  :data:`PAD` on both sides for the same reason. Locally ``since`` is inclusive and ``until`` exclusive.
* Every query starts with the first page of its whole range, with ``include_count``: the number of opt-outs
  in the range, and, when the server lists contacts in an order unrelated to their dates, a sample of the opt-out
  dates. The contract does not say which order; a page whose contacts follow one of their dates (the order they
  were created in, say) is the contacts at one end of that order, and is not taken for a sample.
* **A long read** (every opt-out of a range of many pages) is cut into opt-out-date windows whose cursors are
  followed at once (:mod:`.parallel`), through the client's one pacer, so that pages that take a second still
  make 4 calls a second. The windows are cut at the sample's quantiles (or at a ``split_hint``'s), and as many
  are in flight as the first call's latency says keep the rate busy. Windows overlap only by their padding,
  and the collection deduplicates: the result is the one a sequential read gives.
* **Latest N** never scans the whole account: windows walk back from the newest end, each placed to hold what is
  still missing (:mod:`.spread`: the counts seen so far, spread by the samples),
  one found too wide by its first page's count is narrowed from that page, a denser sample of it, and one too
  narrow is read and followed by the next, older one; until N opt-outs are found or the range is exhausted.
  Without a sample (a server listing by date) the walk is the one from before samples: a 7-day window, grown from
  the counts. A read whose count fills whole pages stops without fetching the empty page after them.
* A server that answers 400 to the opt-out filters still gets correct results, by scanning every unsubscribed
  contact and filtering here, after one notice.
* Results are deduplicated by contact id and read newest first (:class:`~ccoptout_xl.optouts.OptOutSet`).
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .client import MAX_PAGE_SIZE, Client, Page
from .exceptions import BadRequest, UsageError
from .optouts import OptOut, parse_api_datetime
from .parallel import ParallelPages
from .spread import Spread
from .table import OptOutSet

log = logging.getLogger(__name__)

PAD = dt.timedelta(seconds=1)
MAX_LATEST = 10_000_000  # more than any account holds; beyond it --latest is a typo
# Constant Contact started in 1995: a window reaching back past this is the last one (and is left open).
EARLIEST_OPT_OUT = dt.datetime(1995, 1, 1, tzinfo=dt.timezone.utc)

MAX_WORKERS = 12  # windows in flight at most
PARALLEL_FROM = 8  # pages: a shorter read is not worth the windows' partial last pages
WINDOW_PAGES = 4  # the fewest pages a window of a long read is cut to hold
SHORTEST_WINDOW = dt.timedelta(minutes=1)  # cut evenly in time, a window is never narrower than this
COUNTED_FIRST_WINDOW = dt.timedelta(days=7)  # latest N without a sample: the first window's length
HEADROOM = 1.5  # windows in flight, per request the rate allows during one call's latency
# A first page is taken for a sample of the range's dates unless, over this many contacts, one of their dates
# rises (or falls) from each to the next more often than a listing in no such order could make it by chance.
LISTING_SAMPLE = 40
LISTED_IN_NO_ORDER = (0.2, 0.8)  # the share of rising steps, about a half in no order
DEFAULT_RATE = 4.0  # requests/second an unpaced client is sized for: the API's limit

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


Bounds = tuple[dt.datetime | None, dt.datetime | None]  # a window [after, before); None: no bound


def from_api(
    client: Client,
    query: OptOutQuery,
    *,
    now: dt.datetime | None = None,
    on_progress: Progress | None = None,
    on_notice: Notice | None = None,
    split_hint: Sequence[dt.datetime] | None = None,
    workers: int | None = None,
) -> QueryResult:
    """Run ``query`` against the API and return its opt-outs, newest first.

    A long read follows several windows at once: ``workers`` is how many at most (None: as many as keep the rate
    limit busy at the first call's latency; 1: one page after another). ``split_hint``, opt-out dates of an
    earlier read (a few hundred, any order), says where its windows are cut; by default the first page's dates.
    """
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be 1 or more, not {workers}.")
    search = _Search(client, query, now, on_progress, on_notice)
    search.workers = workers
    search.split_hint = sorted(d.astimezone(dt.timezone.utc) for d in split_hint) if split_hint else None
    return search.run()


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
        self.workers: int | None = None
        self.split_hint: list[dt.datetime] | None = None
        self.found = OptOutSet()
        self.fetched = 0  # contacts read, for progress
        self.seen: set[str] | None = None  # contact ids read, while walking windows
        self.counts_trusted = True  # False once a count showed it leaves out the opt-out filters
        self.calls_before = client.http.stats.calls

    def run(self) -> QueryResult:
        notices: list[str] = []
        full_scan = False
        try:
            if self.query.latest is None:
                self._read_range()
            else:
                self._walk_back(self.query.latest)
        except OptOutFiltersUnsupported:
            notices.append(FALLBACK_NOTICE)
            self.on_notice(FALLBACK_NOTICE)
            full_scan = True
            self._restart()
            self._collect(self._pages(None, None), total_hint=True)
        calls = self.client.stats.calls - self.calls_before
        return QueryResult(self.query, self.found, calls, full_scan, notices)

    def _restart(self) -> None:
        """Forget what was collected (not what it cost)."""
        self.found.close()
        self.found, self.fetched, self.seen = OptOutSet(), 0, None

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

    def _pages(
        self, after: dt.datetime | None, before: dt.datetime | None, cancel: threading.Event | None = None
    ) -> Generator[Page, None, None]:
        """Pages of the opt-outs the server holds in ``[after, before)`` (padded)."""
        params = self._params(after, before)
        pages = self.client.contact_pages(cancel=cancel, **params)
        try:
            first = next(pages, None)
        except BadRequest:
            if after is None and before is None:
                raise
            # Same question without the opt-out filters: if that is accepted, the server lacks them.
            probe = self._params(None, None) | {"limit": 1, "include_count": False}
            next(self.client.contact_pages(cancel=cancel, **probe), None)
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

    def _upto(self, pages: Iterator[Page], count: int | None, read: int = 0) -> Generator[Page, None, None]:
        """``pages`` until ``count`` contacts have been read (``read`` of them already): a read whose count is a
        whole number of pages does not fetch the empty page that ends it. A count not to be trusted reads on."""
        try:
            for page in pages:
                yield page
                read += len(page.items)
                if count is not None and self.counts_trusted and read >= count:
                    return
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    def _add(self, page: Page, total: int | None = None) -> None:
        optouts = [o for o in map(OptOut.from_contact, page.items) if o is not None and self.query.matches(o)]
        self.found.add_all(optouts)
        self.fetched += len(page.items)
        if self.seen is not None:
            self.seen.update(str(c.get("contact_id")) for c in page.items)
        if self.on_progress:
            self.on_progress(self.fetched, total)

    def _calls(self) -> int:
        return self.client.stats.calls

    # -- every opt-out of the range ------------------------------------------------------------------------

    def _read_range(self) -> None:
        """Every opt-out of the query's range: its first page, then the rest in windows at once when that pays."""
        since, until = self.query.since, self.query.until
        pages = self._pages(since, until)
        started = time.monotonic()
        first = next(pages, None)
        if first is None:
            return
        plan = self._plan(first, latency=time.monotonic() - started)
        if plan is None:
            self._collect(itertools.chain([first], pages), total_hint=True)
            return
        pages.close()
        try:
            with ParallelPages(plan.windows, self._window, workers=plan.workers, split=plan.split) as windows:
                for page in windows:
                    self._add(page, first.total)
        except OptOutFiltersUnsupported:
            if since is not None or until is not None:
                raise
            # The windows' filters, not the query's: such a server is read one page after another, as before.
            self._restart()
            self._collect(self._pages(None, None), total_hint=True)

    def _window(self, bounds: Bounds, cancel: threading.Event) -> Generator[Page, None, None]:
        return self._pages(*bounds, cancel)

    def _plan(self, first: Page, latency: float) -> _Plan | None:
        """How to read the rest of the range in windows at once, or None when one page after another is as good."""
        total = first.total
        if total is None or first.next_href is None:
            return None
        pages = math.ceil(total / MAX_PAGE_SIZE)
        rate = self.client.http.pacer.rate or DEFAULT_RATE
        workers = self.workers or min(MAX_WORKERS, math.ceil(rate * latency * HEADROOM))
        parts = min(2 * workers, pages // WINDOW_PAGES)
        if workers < 2 or parts < 2 or pages < PARALLEL_FROM:
            return None
        since, until = self.query.since, self.query.until
        dates = [d for d in self.split_hint if _within(d, since, until)] if self.split_hint else None
        dates = dates or _dates(first.items, since, until)
        if not dates:
            return None
        span = (dates[0], max(dates[-1], self.now))  # where opt-outs were seen, for the ends left open
        windows = _windows(dates, parts, (since, until), pages, span)
        if len(windows) < 2:
            return None
        log.debug("%d pages in %d windows, %d at once (first call: %.2f s)", pages, len(windows), workers, latency)
        # A window longer than this would still be read when the others are done: it is cut again.
        longest = max(2.0 * WINDOW_PAGES, 0.75 * pages / (rate * max(latency, 1e-3)))
        return _Plan(windows, workers, total, pages / parts, longest, span)

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
            self._collect(self._upto(pages, total, len(first.items)))  # cheaper to read the range than search it
            return
        pages.close()
        # The first page is a sample of the range, not its newest part: start afresh from the newest end.
        self._restart()
        self.seen = set()
        if _listed_by_date(first.items):
            self._walk_back_by_counts(wanted, total, read_all)
        else:
            self._walk_back_by_sample(wanted, first, total, read_all)

    def _walk_back_by_counts(self, wanted: int, total: int | None, read_all: int | None) -> None:
        """Latest N where the first page is no sample of the range's dates (the server lists contacts in the order
        of one of their dates): windows from the newest end, the first of 7 days, each next one grown from the
        density the last one showed, one narrowed once when its count shows it too wide."""
        since, until = self.query.since, self.query.until
        started = self._calls()
        upper, span = until, COUNTED_FIRST_WINDOW
        skipped: dt.datetime | None = None  # the older end of a window narrowed by its count
        may_narrow = True
        while True:
            if read_all is not None and self._calls() - started >= read_all:
                self._collect(self._pages(since, upper))  # as costly as reading what is left: read it
                return
            lower = self._span_back(upper, span)
            window = self._pages(lower, upper)
            head = next(window, None)
            read = 0
            if head is not None:
                need = wanted - len(self.found)
                count = self._count(head, (lower, upper), total)
                narrow = may_narrow and lower is not None and span > SHORTEST_WINDOW
                if narrow and lower is not None and count is not None and _too_wide(count, need):
                    window.close()
                    skipped, may_narrow = lower, False
                    span = max(SHORTEST_WINDOW, span * (need * 1.2 / max(count, 1)))
                    continue
                read = self._collect(self._upto(itertools.chain([head], window), count))
            if len(self.found) >= wanted or lower is None or lower == since:
                return
            if total is not None and len(self.seen or ()) >= total:
                return  # every opt-out in the range has been read (one arriving meanwhile may be missed)
            if skipped is not None:
                span, skipped, may_narrow = lower - skipped, None, False
            else:
                growth = 8.0 if read == 0 else (wanted - len(self.found)) * 1.25 / read
                span, may_narrow = span * min(16.0, max(1.0, growth)), True
            upper = lower

    def _span_back(self, upper: dt.datetime | None, span: dt.timedelta) -> dt.datetime | None:
        """The older end of a window of ``span`` that ends at ``upper`` (None: the range's own older end)."""
        top = upper or self.now
        since = self.query.since
        if since is not None:
            return since if top - since <= span else top - span
        return None if top - EARLIEST_OPT_OUT <= span else top - span

    def _walk_back_by_sample(self, wanted: int, first: Page, total: int | None, read_all: int | None) -> None:
        """Latest N placed from the first page, a sample of the range's dates, and the counts of the windows."""
        since, until = self.query.since, self.query.until
        spread = self._spread(first)
        started = self._calls()
        upper, above = until, 0.0  # the window's newest end (None: open), and the opt-outs counted above it
        narrowed: dt.datetime | None = None  # the older end of a window narrowed from the last one's first page
        while True:
            if read_all is not None and self._calls() - started >= read_all:
                # The search has cost as much as reading everything would: read what is left, and stop.
                self._collect(self._pages(since, upper))
                return
            need = wanted - len(self.found)
            budget = math.ceil(wanted / MAX_PAGE_SIZE) + 2 - (self._calls() - started + 1)  # calls left for the target
            lower: dt.datetime | None = narrowed
            if lower is None:
                lower = self._bound(spread.lower_end(above + _aim(need, budget), upper))
            window = self._pages(lower, upper)
            head = next(window, None)
            count = self._count(head, (lower, upper), total)
            narrowed = None
            if head is not None and count is not None:
                spread.counted(lower or spread.bottom, above + count)
                spread.sampled(_dates(head.items, lower, upper), lower, upper)
                narrowed = self._narrower(spread, count, need, above, (lower, upper), budget - 1)
                if narrowed is not None:
                    window.close()
                    continue  # the same newest end, the older one placed again with what this page showed
            if head is not None:
                self._collect(self._upto(itertools.chain([head], window), count))
            if len(self.found) >= wanted or lower is None or lower == since:
                return
            if total is not None and len(self.seen or ()) >= total:
                return  # every opt-out in the range has been read (one arriving meanwhile may be missed)
            upper, above = lower, above + count if count is not None else spread.above(lower)

    def _spread(self, first: Page) -> Spread:
        """The range's opt-outs in time, as its first page shows them."""
        dates = _dates(first.items, self.query.since, self.query.until)
        top = self.query.until or max([self.now, *dates[-1:]]) + PAD
        bottom = self.query.since or min([EARLIEST_OPT_OUT, *dates[:1]])
        spread = Spread(top, bottom, first.total or len(first.items))
        spread.sampled(dates, None, None)
        return spread

    def _bound(self, lower: dt.datetime) -> dt.datetime | None:
        """A window's older end as sent: the query's own when the window reaches it (None: no bound)."""
        since = self.query.since
        if since is not None:
            return max(lower, since)
        return None if lower <= EARLIEST_OPT_OUT else lower

    def _count(self, head: Page | None, bounds: Bounds, total: int | None) -> int | None:
        """The number of opt-outs in a window, from its first page, unless counts cannot be trusted: a window
        narrower than the range counted as large as the range is a count that leaves out the opt-out filters."""
        if head is None:
            return 0
        count = head.total
        whole = bounds == (self.query.since, self.query.until)
        if count is not None and total is not None and count >= total and not whole:
            self.counts_trusted = False
        return count if self.counts_trusted and count is not None and count >= len(head.items) else None

    @staticmethod
    def _narrower(
        spread: Spread, count: int, need: int, above: float, bounds: Bounds, budget: int
    ) -> dt.datetime | None:
        """The older end of a narrower window, placed with what the first page showed, if it costs fewer calls than
        the rest of this one."""
        lower, upper = bounds
        if count <= MAX_PAGE_SIZE or count < need:
            return None
        narrower = spread.lower_end(above + _aim(need, budget), upper)
        if lower is not None and narrower <= lower:
            return None
        expected = spread.above(narrower) - above
        return narrower if math.ceil(expected / MAX_PAGE_SIZE) < math.ceil(count / MAX_PAGE_SIZE) - 1 else None


@dataclass
class _Plan:
    """How a long read is cut: its windows (with their estimated pages), how many are read at once, and when a
    window whose first page shows it too long is cut again."""

    windows: list[tuple[Bounds, float]]
    workers: int
    total: int  # contacts in the whole range
    part: float  # pages a window is meant to hold
    longest: float  # pages a window may hold and still end with the others
    span: tuple[dt.datetime, dt.datetime]  # the oldest and newest opt-out dates seen
    splits: int = 0  # windows cut again so far: each cost a first page read for nothing
    lock: threading.Lock = field(default_factory=threading.Lock)

    def split(self, bounds: Bounds, head: Page) -> list[tuple[Bounds, float]] | None:
        """Smaller windows to read instead of ``bounds``, cut at its first page's dates, if it is too long."""
        count = head.total
        # A window counted as large as the whole range: a count that leaves out the opt-out filters. Not cut.
        if count is None or count >= self.total or head.next_href is None:
            return None
        pages = math.ceil(count / MAX_PAGE_SIZE)
        if pages <= self.longest:
            return None
        windows = _windows(_dates(head.items, *bounds), math.ceil(pages / self.part), bounds, pages, self.span)
        if len(windows) < 2:
            return None
        with self.lock:  # (called by the workers)
            if self.splits >= self.workers:
                return None  # a few first pages spent for nothing at most, whatever the dates
            self.splits += 1
        return windows


def _aim(need: int, budget: int) -> float:
    """How many opt-outs to place a window to hold, to find ``need`` more in ``budget`` calls: the middle
    (geometrically) of what it may hold, from ``need`` to the ``budget``'s pages (the fewest pages once the budget
    is spent)."""
    most = MAX_PAGE_SIZE * max(budget, math.ceil(need / MAX_PAGE_SIZE))
    return math.sqrt(max(need, 1) * most) if most > need else need * 1.05


def _too_wide(count: int, need: int) -> bool:
    """Whether a window of ``count`` opt-outs costs more pages than one placed to hold ``need`` (and a fifth)."""
    if count <= MAX_PAGE_SIZE:
        return False
    return math.ceil(count / MAX_PAGE_SIZE) - 1 > math.ceil(need * 1.2 / MAX_PAGE_SIZE)


def _listed_by_date(contacts: list[dict[str, Any]]) -> bool:
    """Whether the server lists ``contacts`` (a first page) in the order of one of their dates: created, updated
    or opted out. Then a page is not a sample of the opt-out dates but the contacts at one end of that order (the
    first ones created, say), and their dates say little of where the newest opt-outs lie. The order is not in
    the contract; the sandbox lists contacts in the order they were created unless told otherwise."""
    if len(contacts) < LISTING_SAMPLE:
        return False
    for key in (_created, _updated, _opted_out):
        values = [key(contact) for contact in contacts]
        pairs = [(a, b) for a, b in itertools.pairwise(values) if a is not None and b is not None and a != b]
        if len(pairs) >= LISTING_SAMPLE // 2:
            rising = sum(a < b for a, b in pairs) / len(pairs)
            if not LISTED_IN_NO_ORDER[0] <= rising <= LISTED_IN_NO_ORDER[1]:
                return True
    return False


def _created(contact: dict[str, Any]) -> dt.datetime | None:
    return parse_api_datetime(contact.get("created_at"))


def _updated(contact: dict[str, Any]) -> dt.datetime | None:
    return parse_api_datetime(contact.get("updated_at"))


def _opted_out(contact: dict[str, Any]) -> dt.datetime | None:
    return parse_api_datetime((contact.get("email_address") or {}).get("opt_out_date"))


def _within(date: dt.datetime, since: dt.datetime | None, until: dt.datetime | None) -> bool:
    return (since is None or date >= since) and (until is None or date < until)


def _dates(contacts: list[dict[str, Any]], after: dt.datetime | None, before: dt.datetime | None) -> list[dt.datetime]:
    """The sorted opt-out dates of ``contacts`` in ``[after, before)``."""
    found = (OptOut.from_contact(contact) for contact in contacts)
    return sorted(o.opt_out_date for o in found if o is not None and _within(o.opt_out_date, after, before))


def _windows(
    dates: Sequence[dt.datetime], parts: int, bounds: Bounds, pages: float, span: tuple[dt.datetime, dt.datetime]
) -> list[tuple[Bounds, float]]:
    """``bounds`` cut into up to ``parts`` windows of similar numbers of sorted ``dates``, each with its share of
    ``pages``. Every cut is halfway between two different dates: a burst of opt-outs in one second stays whole,
    and is not read twice through the windows' padding. Dates all of one second (a page of one burst) cannot be
    cut: then the windows are of equal time, from the oldest to the newest date of ``span`` where a bound is open."""
    between = [i for i in range(1, len(dates)) if dates[i] > dates[i - 1]]  # a cut may go just before dates[i]
    cuts: list[int] = []
    for part in range(1, parts):
        target = len(dates) * part / parts
        at = bisect.bisect_left(between, target)
        near = between[max(0, at - 1) : at + 1]
        if near:
            best = min(near, key=lambda i: abs(i - target))
            if not cuts or best > cuts[-1]:
                cuts.append(best)
    if not cuts:
        return _even_windows(parts, bounds, pages, span)
    instants = [dates[i - 1] + (dates[i] - dates[i - 1]) / 2 for i in cuts]
    edges = [bounds[0], *instants, bounds[1]]
    shares = [b - a for a, b in zip([0, *cuts], [*cuts, len(dates)], strict=True)]
    return [((edges[n], edges[n + 1]), pages * share / len(dates)) for n, share in enumerate(shares)]


def _even_windows(
    parts: int, bounds: Bounds, pages: float, span: tuple[dt.datetime, dt.datetime]
) -> list[tuple[Bounds, float]]:
    low, high = bounds[0] or span[0], bounds[1] or span[1]
    if parts < 2 or high - low < parts * SHORTEST_WINDOW:
        return [(bounds, pages)]
    edges = [bounds[0], *(low + (high - low) * n / parts for n in range(1, parts)), bounds[1]]
    return [((edges[n], edges[n + 1]), pages / parts) for n in range(parts)]
