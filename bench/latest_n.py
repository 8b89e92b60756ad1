"""Benchmark: calls of "the latest N opt-outs", the current walk side by side with the one it replaced.

Calls are what a latest-N query costs (the 10,000 a day every integration of an account shares), so the sandbox runs
in this process without limits or latency. Every answer is checked against the account's ground truth (the N
newest, ties in one second broken by contact id, as the local store orders them).

1. The accounts of the other benchmarks (1,000,000 and 250,000 contacts: 70% of the opt-outs within hours of a
   campaign) and other shapes (a quiet last month, no opt-out for a month, a list removed in one second, small
   accounts), for N = 1, 100, 500, 1,000, 5,000. Target: ceil(N / 500) + 2 calls.
2. Many random accounts (sizes, shares, recent activity, bursts, an ``until``): how often the target is met, how often
   the current walk costs more than the previous one, and the calls of both in all.

    python bench/latest_n.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import math
import os
import platform
import random
import sys
from pathlib import Path

from ccoptout_xl.auth import StaticToken
from ccoptout_xl.client import MAX_PAGE_SIZE, Client
from ccoptout_xl.http_client import HTTPClient
from ccoptout_xl.query import EARLIEST_OPT_OUT, OptOutQuery, QueryResult, _Search, from_api
from ccoptout_xl.sandbox import AccountSpec, Sandbox
from ccoptout_xl.sandbox.accounts import OptOutFact
from ccoptout_xl.table import OptOutSet

ANCHOR = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
NS = (1, 100, 500, 1_000, 5_000)
ACCOUNTS = [
    ("1,000,000 contacts, the other benchmarks' account", AccountSpec(contacts=1_000_000)),
    ("250,000 contacts, its smaller one", AccountSpec(contacts=250_000)),
    ("200,000 contacts, a quiet last month", AccountSpec(contacts=200_000, seed=4, recent_share=0.002)),
    ("300,000, 40% opted out, a quiet last month",
     AccountSpec(contacts=300_000, seed=835, unsubscribed_share=0.4, recent_share=0.002)),
    ("100,000 contacts, no opt-out in the last month", AccountSpec(contacts=100_000, seed=3, recent_share=0.0)),
    ("30,000, half opted out, 3,000 removed in one second",
     AccountSpec(contacts=30_000, seed=5, unsubscribed_share=0.5, bulk_removal=3_000)),
    ("50,000 contacts", AccountSpec(contacts=50_000)),
    ("10,000 contacts", AccountSpec(contacts=10_000)),
]  # fmt: skip


class _PreviousWalk(_Search):
    """The latest-N walk this one replaced (commit b458cc2): a 7-day window from the newest end, grown from the
    density seen, narrowed once "as if evenly spread"."""

    def _walk_back(self, wanted: int) -> None:
        since, until = self.query.since, self.query.until
        pages = self._pages(since, until)
        first = next(pages, None)
        if first is None:
            return
        self._add(first)
        total = first.total
        read_all = math.ceil(total / MAX_PAGE_SIZE) if total is not None else None
        if read_all is not None and read_all - 1 <= math.ceil(wanted / MAX_PAGE_SIZE) + 1:
            self._collect(pages)
            return
        pages.close()
        self.found.close()
        self.found, self.seen = OptOutSet(), set()
        started = self._calls()
        upper, span = until, dt.timedelta(days=7)
        skipped: tuple[dt.datetime, int] | None = None
        may_narrow = True
        while True:
            if read_all is not None and self._calls() - started >= read_all:
                self._collect(self._pages(since, upper))
                return
            lower = self._previous_lower_end(upper, span)
            window = self._pages(lower, upper)
            head = next(window, None)
            count = 0
            if head is not None:
                need = wanted - len(self.found)
                narrow = may_narrow and lower is not None and span > dt.timedelta(minutes=1)
                if narrow and _too_wide(head.total, need):
                    window.close()
                    skipped, may_narrow = (lower, head.total or 0), False
                    span = max(dt.timedelta(minutes=1), span * (need * 1.2 / (head.total or 1)))
                    continue
                count = self._collect(itertools.chain([head], window))
            if len(self.found) >= wanted or lower is None or lower == since:
                return
            if total is not None and len(self.seen) >= total:
                return
            if skipped is not None:
                span, skipped, may_narrow = lower - skipped[0], None, False
            else:
                growth = 8.0 if count == 0 else (wanted - len(self.found)) * 1.25 / count
                span, may_narrow = span * min(16.0, max(1.0, growth)), True
            upper = lower

    def _previous_lower_end(self, upper: dt.datetime | None, span: dt.timedelta) -> dt.datetime | None:
        top = upper or self.now
        since = self.query.since
        if since is not None:
            return since if top - since <= span else top - span
        return None if top - EARLIEST_OPT_OUT <= span else top - span


def _too_wide(window_total: int | None, need: int) -> bool:
    if window_total is None or window_total <= MAX_PAGE_SIZE:
        return False
    return math.ceil(window_total / MAX_PAGE_SIZE) - 1 > math.ceil(need * 1.2 / MAX_PAGE_SIZE)


def previous(client: Client, query: OptOutQuery, now: dt.datetime) -> QueryResult:
    return _PreviousWalk(client, query, now, None, None).run()


def measure(sandbox: Sandbox, wanted: int, until: dt.datetime | None, truth: list[OptOutFact]) -> tuple[int, int]:
    """Calls of the current walk and of the previous one, each checked against the ground truth."""
    calls = []
    for walk in (from_api, previous):
        client = Client(HTTPClient(sandbox.base_url, StaticToken(sandbox.token), rate=None))
        result = walk(client, OptOutQuery(latest=wanted, until=until), now=ANCHOR)
        got = [(o.contact_id, o.opt_out_date) for o in result]
        if got != [(o.contact_id, o.opt_out_date) for o in truth[:wanted]]:
            raise AssertionError(f"{walk.__name__} is not the {wanted} newest")
        calls.append(result.calls)
        result.close()
    return calls[0], calls[1]


def ground_truth(sandbox: Sandbox, until: dt.datetime | None = None) -> list[OptOutFact]:
    """The account's opt-outs (deleted contacts left out, as the queries do), newest first, ties by contact id."""
    facts = sandbox.account.optouts_truth(include_deleted=False)
    return [fact for fact in facts if until is None or fact.opt_out_date < until]


def target(wanted: int) -> int:
    return math.ceil(wanted / MAX_PAGE_SIZE) + 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", type=int, default=40, help="random accounts in part 2")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--write", metavar="MARKDOWN")
    args = parser.parse_args()

    table = []
    for label, spec in ACCOUNTS:
        spec = dataclasses.replace(spec, anchor=ANCHOR)
        with Sandbox(spec, rate_limit=None, daily_quota=None) as sandbox:
            truth = ground_truth(sandbox)
            row = {"label": label, "optouts": len(truth), "calls": [measure(sandbox, n, None, truth) for n in NS]}
        print(row, file=sys.stderr)
        table.append(row)
    summary = random_accounts(args.random, args.seed)
    section = render(args, table, summary)
    print(section)
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from optout_queries import write_section

        write_section(Path(args.write), section)


def random_accounts(count: int, seed: int) -> dict:
    rng = random.Random(seed)
    cases = met = worse = better = now_calls = before_calls = most_worse = 0
    for _ in range(count):
        spec = AccountSpec(
            contacts=rng.choice([5_000, 20_000, 60_000, 150_000, 300_000]),
            seed=rng.randrange(1_000),
            unsubscribed_share=rng.choice([0.05, 0.2, 0.4]),
            recent_share=rng.choice([0.0, 0.002, 0.015, 0.05]),
            bulk_removal=rng.choice([0, 0, 1_000]),
            anchor=ANCHOR,
        )
        days = rng.choice([None, None, 60, 400])
        until = None if days is None else ANCHOR - dt.timedelta(days=days)
        with Sandbox(spec, rate_limit=None, daily_quota=None) as sandbox:
            truth = ground_truth(sandbox, until)
            for wanted in NS:
                now, before = measure(sandbox, wanted, until, truth)
                cases, met = cases + 1, met + (now <= target(wanted))
                worse, better = worse + (now > before), better + (now < before)
                now_calls, before_calls = now_calls + now, before_calls + before
                most_worse = max(most_worse, now - before)
        print(f"random account {spec}: done", file=sys.stderr)
    return {"accounts": count, "cases": cases, "met": met, "worse": worse, "better": better,
            "now": now_calls, "before": before_calls, "most_worse": most_worse}  # fmt: skip


def render(args: argparse.Namespace, table: list[dict], summary: dict) -> str:
    lines = [
        "## Latest N at the call minimum (issue 11, item 5)",
        "",
        f"Measured {dt.date.today()} on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Sandbox in the benchmark's process, no limits (calls are what is measured). "
        "Each cell: calls now / calls of the walk it replaced; target ceil(N / 500) + 2 (**bold**: missed). Every "
        "answer was checked against the account's ground truth. Command:",
        "",
        "    python bench/latest_n.py --write docs/benchmarks.md",
        "",
        "| account | opt-outs | " + " | ".join(f"N = {n:,} (≤ {target(n)})" for n in NS) + " |",
        "|---|---:|" + "---:|" * len(NS),
    ]
    for row in table:
        cells = [
            f"{now} / {before}" if now <= target(n) else f"**{now}** / {before}"
            for n, (now, before) in zip(NS, row["calls"], strict=True)
        ]
        lines.append(f"| {row['label']} | {row['optouts']:,} | " + " | ".join(cells) + " |")
    cases = [(n, now, before) for row in table for n, (now, before) in zip(NS, row["calls"], strict=True)]
    lines += [
        "",
        f"These accounts: target met in {sum(now <= target(n) for n, now, _ in cases)} of {len(cases)}; "
        f"{sum(now for _, now, _ in cases)} calls in all against {sum(before for *_, before in cases)} before; more "
        f"calls than before in {sum(now > before for _, now, before in cases)}.",
        "",
        f"{summary['accounts']} random accounts (`--random {args.random} --seed {args.seed}`: 5,000 to 300,000 "
        "contacts, 5 to 40% opted out, 0 to 5% of them in the last month, half with an `until`, some with 1,000 "
        f"removed in one second), N as above: target met in {summary['met']} of {summary['cases']}; fewer calls "
        f"than before in {summary['better']}, more in {summary['worse']} (at most {summary['most_worse']} more); "
        f"{summary['now']} calls in all against {summary['before']}.",
        "",
        "Where the target is missed, the first page of the range misled: the sandbox lists contacts in the order "
        "they were created, and a contact's opt-out comes after its creation, so a first page (the oldest contacts) "
        "holds too few recent opt-outs, and a window's first page too many of its newest ones. The walk trusts "
        "counts over samples (each first page's count is exact and anchors the estimate), takes the narrower of "
        "two estimates where it has no count, and grows geometrically after empty windows.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
