"""Benchmark: what joining opt-outs to their campaigns costs, in API calls, on a large account.

A sandbox account of 1,000,000 contacts (about 200,000 opt-outs, 200-odd campaigns). Side by side in one run, for
windows of 30 days, 90 days and a year:

* ``fetch`` without the store (``--no-cache``), and the same with ``--campaigns``: the difference, against the
  issue's bound ``1 + 2 x (campaigns with opt-outs in the summaries) + (report pages needed for the window) + 2``
  (a campaign's two calls are its details and its report's first page; "pages needed" are those beyond it);
* with the store: the first ``fetch --campaigns`` (a full sync and the campaign reports), a repeat (nothing to
  ask while the store is fresh), and an incremental sync after 20 new opt-outs through recent emails.

Calls are what counts: the sandbox answers in this process without rate limit or latency. Attribution is checked
against the sandbox's ground truth each time.

    python bench/campaign_cost.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--write", metavar="MARKDOWN")
    args = parser.parse_args()

    from ccoptout_xl.auth import StaticToken
    from ccoptout_xl.client import Client
    from ccoptout_xl.http_client import HTTPClient
    from ccoptout_xl.query import OptOutQuery
    from ccoptout_xl.sandbox import AccountSpec, Sandbox
    from ccoptout_xl.sandbox.oauth import SCOPES
    from ccoptout_xl.service import CAMPAIGNS_ON, StorePolicy, get_optouts

    rows, store_rows = [], []
    with (
        tempfile.TemporaryDirectory() as folder,
        Sandbox(
            AccountSpec(contacts=args.contacts, seed=1), rate_limit=None, daily_quota=None, token_scopes=SCOPES
        ) as sandbox,
    ):
        os.environ["CCOPTOUT_CACHE_DIR"] = folder
        account = sandbox.account
        account.campaign_book()  # built once, before anything is timed or counted
        campaign_of = {a.campaign_activity_id: c.campaign_id for c in account.campaigns() for a in c.activities}
        with_optouts = sum(1 for c in account.campaigns() if c.optouts)

        def truth() -> dict[str, str | None]:
            return {k: campaign_of[v] if v else None for k, v in account.campaign_truth().items()}

        def run(query: OptOutQuery, policy: StorePolicy, campaigns: bool) -> tuple[int, int, int, bool]:
            """(calls, report pages, opt-outs, attribution right) of one question."""
            sandbox.reset_log()
            with Client(HTTPClient(sandbox.base_url, StaticToken(sandbox.token), rate=None)) as client:
                answer = get_optouts(client, query, policy, campaigns=CAMPAIGNS_ON if campaigns else "off")
                try:
                    found = {o.contact_id: o.campaign_id for o in answer}
                finally:
                    answer.close()
            pages = sum(r.path.endswith("/tracking/optouts") for r in sandbox.requests)
            expected = truth() if campaigns else {}
            right = not campaigns or all(expected.get(c) == k for c, k in found.items())
            return len(sandbox.requests), pages, len(found), right

        now = dt.datetime.now(dt.timezone.utc)
        for days in (30, 90, 365):
            query = OptOutQuery(since=now - dt.timedelta(days=days))
            plain = run(query, StorePolicy(use_store=False), False)
            joined = run(query, StorePolicy(use_store=False), True)
            rows.append((days, plain, joined))
            print(days, plain, joined, file=sys.stderr)

        query = OptOutQuery(since=now - dt.timedelta(days=90))
        first = run(query, StorePolicy(), True)
        repeat = run(query, StorePolicy(), True)
        rng = random.Random(3)
        recent = [c for c in account.campaigns() if c.last_sent and c.optouts][:5]
        for contact in account.pick("active", 20, rng):
            sent = rng.choice(recent)
            activity = next(a.campaign_activity_id for a in sent.activities if a.role == "primary_email")
            account.opt_out(contact_ids=[contact], campaign_activity_id=activity)
        campaign_of = {a.campaign_activity_id: c.campaign_id for c in account.campaigns() for a in c.activities}
        incremental = run(query, StorePolicy(refresh=True), True)
        store_rows = [("first, with a full sync", first), ("repeat", repeat), ("after 20 new opt-outs", incremental)]
        print(store_rows, file=sys.stderr)
    section = render(args, with_optouts, rows, store_rows)
    print(section)
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from optout_queries import write_section

        write_section(Path(args.write), section)


def render(args: argparse.Namespace, with_optouts: int, rows: list, store_rows: list) -> str:
    lines = [
        "## Opt-outs by campaign: what attribution costs (issue 12)",
        "",
        f"Measured {dt.date.today()} on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Sandbox: {args.contacts:,} contacts, {with_optouts} campaigns with opt-outs "
        "in the summaries. Calls counted by the sandbox; attribution checked against its ground truth. Command:",
        "",
        "    python bench/campaign_cost.py --write docs/benchmarks.md",
        "",
        "| window | fetch: calls | fetch --campaigns: calls | more | report pages | bound | attribution |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for days, plain, joined in rows:
        more = joined[0] - plain[0]
        # 1 summaries call, 2 a campaign (its details and its report's first page), the report pages beyond the
        # first, 2 to spare: 1 + campaigns + (all report pages) + 2.
        bound = 1 + with_optouts + joined[1] + 2
        lines.append(
            f"| {days} days ({plain[2]:,} opt-outs) | {plain[0]} | {joined[0]} | {more} | {joined[1]} | {bound} "
            f"({'met' if more <= bound else '**not met**'}) | {'right' if joined[3] else '**wrong**'} |"
        )
    lines += ["", "With the local store (90 days):", "", "| question | calls | attribution |", "|---|---:|---|"]
    for label, result in store_rows:
        lines.append(f"| {label} | {result[0]} | {'right' if result[3] else '**wrong**'} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
