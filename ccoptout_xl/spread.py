"""Where the opt-outs of a range lie in time, as far as a query has learnt: exact counts and samples of dates.

A latest-N query asks where to put the older end of a window so that it holds a given number of opt-outs. What it
knows: counts (every first page's ``contacts_count``: the opt-outs from an instant to the newest end) and samples
(the dates on first pages, of the whole range or of one window). Counts are exact; samples show the shape, but are
sparse (one date per total / 500 opt-outs) and may be off where they are few. So between two counted instants, the
densest sample spreads the known number of opt-outs, and each new count corrects the samples around it. (A server
that lists contacts in the order of a date gives no sample at all: the query engine does not use this then.)
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

PAD = dt.timedelta(seconds=1)  # the padding of the windows sent to the server (query.PAD)
BURST = 3  # times a date is sampled for it to be taken as a burst


@dataclass(frozen=True)
class _Sample:
    dates: tuple[dt.datetime, ...]  # newest first
    low: dt.datetime  # the range it was drawn from: [low, high)
    high: dt.datetime


class Spread:
    """Opt-outs counted down from ``top`` (the newest end): 0 at ``top``, ``total`` at ``bottom``."""

    def __init__(self, top: dt.datetime, bottom: dt.datetime, total: float) -> None:
        self.top = top
        self.bottom = bottom
        self._anchors: list[tuple[dt.datetime, float]] = [(top, 0.0), (bottom, float(total))]  # newest first
        self._samples: list[_Sample] = []

    def counted(self, instant: dt.datetime, above: float) -> None:
        """``above`` opt-outs lie between ``instant`` and the top (a count the server gave)."""
        if not self.bottom < instant < self.top:
            return
        times = [-t.timestamp() for t, _ in self._anchors]
        at = bisect.bisect_left(times, -instant.timestamp())
        if at < len(self._anchors) and self._anchors[at][0] == instant:
            self._anchors[at] = (instant, above)
        else:
            self._anchors.insert(at, (instant, above))
        # A count that contradicts its neighbours (the account changed meanwhile) must not make time run backwards.
        counts = [count for _, count in self._anchors]
        for index in range(1, len(counts)):
            counts[index] = max(counts[index], counts[index - 1])
        self._anchors = [(t, count) for (t, _), count in zip(self._anchors, counts, strict=True)]

    def sampled(self, dates: Sequence[dt.datetime], low: dt.datetime | None, high: dt.datetime | None) -> None:
        """``dates``, the opt-out dates on a first page of ``[low, high)`` (None: the spread's own ends)."""
        low, high = low or self.bottom, high or self.top
        inside = sorted((d for d in dates if low <= d < high), reverse=True)
        if inside:
            self._samples.append(_Sample(tuple(inside), low, high))

    def above(self, instant: dt.datetime) -> float:
        """About how many opt-outs lie between ``instant`` and the top."""
        if instant >= self.top:
            return 0.0
        if instant <= self.bottom:
            return self._anchors[-1][1]
        (newer, count_newer), (older, count_older) = self._bracket(instant)
        knots = self._knots(older, newer)
        times = [-t.timestamp() for t, _ in knots]
        at = min(max(1, bisect.bisect_left(times, -instant.timestamp())), len(knots) - 1)
        (t1, r1), (t2, r2) = knots[at - 1], knots[at]
        share = r1 if t1 == t2 else r1 + (r2 - r1) * (t1 - instant) / (t1 - t2)
        return count_newer + (count_older - count_newer) * share

    def lower_end(self, above: float, upper: dt.datetime | None = None) -> dt.datetime:
        """The instant with about ``above`` opt-outs between it and the top (``bottom`` when there are fewer), for a
        window that ends at ``upper``. A burst (one date sampled many times: thousands of opt-outs in one second,
        perhaps) that the end falls on is left out unless nothing above it is left, however many it seems to
        hold: a sample may list it first. Nor does the end fall just above a sampled date: the window's padding
        would pull that date's opt-outs in, so it moves up to leave them out."""
        if above <= 0:
            return self.top
        anchors = self._anchors
        index = next((i for i in range(1, len(anchors)) if anchors[i][1] >= above), None)
        if index is None:
            return self.bottom
        (newer, count_newer), (older, count_older) = anchors[index - 1], anchors[index]
        share = (above - count_newer) / (count_older - count_newer) if count_older > count_newer else 1.0
        knots = self._knots(older, newer)
        # Above the newest sampled date nothing says where opt-outs are: reach down to it, where one is known.
        lower = _interpolate(knots, max(share, knots[1][1]))
        if sum(t == lower for t, _ in knots) >= BURST and lower + 2 * PAD < (upper or self.top):
            return lower + 2 * PAD
        cleared = self._clear_of_samples(lower)
        return cleared if upper is None or cleared < upper else lower

    def _bracket(self, instant: dt.datetime) -> tuple[tuple[dt.datetime, float], tuple[dt.datetime, float]]:
        anchors = self._anchors
        index = next(i for i in range(1, len(anchors)) if anchors[i][0] <= instant)
        return anchors[index - 1], anchors[index]

    def _knots(self, older: dt.datetime, newer: dt.datetime) -> list[tuple[dt.datetime, float]]:
        """The share of ``[older, newer)``'s opt-outs between ``newer`` and each knot, newest first: the densest
        sample's dates there, each the middle of an equal share (straight through time when none is there)."""
        best: list[dt.datetime] = []
        for sample in self._samples:
            if sample.low <= older and newer <= sample.high:
                inside = [d for d in sample.dates if older <= d < newer]
                if len(inside) > len(best):
                    best = inside
        share = 1.0 / len(best) if best else 0.0
        middle = [(date, (rank + 0.5) * share) for rank, date in enumerate(best)]
        return [(newer, 0.0), *middle, (older, 1.0)]

    def _clear_of_samples(self, lower: dt.datetime) -> dt.datetime:
        """``lower`` moved two seconds clear of the sampled date closest to it: padded, neither this window nor the
        next one (which ends at ``lower``) reaches a date on the other side of the end."""
        near = [d for s in self._samples for d in s.dates if abs(d - lower) < 2 * PAD]
        if not near:
            return lower
        closest = min(near, key=lambda d: abs(d - lower))
        if closest < lower and closest + 2 * PAD < self.top:
            return closest + 2 * PAD  # left out of this window
        return closest - 2 * PAD  # in this window, not in the next


def _interpolate(knots: list[tuple[dt.datetime, float]], share: float) -> dt.datetime:
    """The instant at ``share`` along ``knots`` (newest first, shares rising), straight between two knots."""
    at = next(i for i in range(1, len(knots)) if knots[i][1] >= share)
    (t1, r1), (t2, r2) = knots[at - 1], knots[at]
    return t1 if r2 == r1 else t1 - (t1 - t2) * ((share - r1) / (r2 - r1))
