"""Benchmark: how many calls keep the local store exact, and how often it is exact, after random changes.

A sandbox account of 1,000,000 contacts (about 200,000 opt-outs) is synced once in full. Then, for each trial, the
store goes back to that snapshot, the account gets k random changes the read of new opt-outs cannot see (each a
re-subscription, a deletion or a back-dated opt-out, of a contact and to a date chosen at random), and three syncs
are compared side by side on the same changes:

* **reconciled**: today's incremental sync (the newest page, then counts, descending where they differ);
* **read only**: the incremental sync before counts (what a store that does not trust counts does);
* **full read**: every opt-out again (the cost is that of the snapshot's full sync).

Each result is checked against the sandbox's ground truth. The issue's target: exact, for at most
``min(full read, 18 + k (ceil(log2(U / 500)) + 2))`` calls, for k = 1, 4, 16; and 2 calls when nothing changed.
Calls are what counts here: the sandbox answers in-process without rate limit or latency.

    python bench/sync_reconcile.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("resubscribe", "delete", "backdated")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=20, help="random placements per k")
    parser.add_argument("--ks", default="0,1,4,16", help="numbers of changes, comma-separated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", metavar="MARKDOWN")
    args = parser.parse_args()

    from ccoptout_xl.auth import StaticToken
    from ccoptout_xl.client import Client
    from ccoptout_xl.http_client import HTTPClient
    from ccoptout_xl.sandbox import AccountSpec, Sandbox
    from ccoptout_xl.store import UNTRUSTED, OptOutStore

    rng = random.Random(args.seed)
    rows: list[dict] = []
    with (
        tempfile.TemporaryDirectory() as folder,
        Sandbox(AccountSpec(contacts=args.contacts, seed=1), rate_limit=None, daily_quota=None) as sandbox,
    ):
        os.environ["CCOPTOUT_CACHE_DIR"] = folder

        def client() -> Client:
            return Client(HTTPClient(sandbox.base_url, StaticToken(sandbox.token), rate=None))

        with client() as first, OptOutStore.for_client(first) as store:
            started = time.perf_counter()
            full = store.sync(first)
            path = store.path
        seconds = time.perf_counter() - started
        print(f"full sync: {full.calls} calls, {full.rows:,} rows, {seconds:.0f} s", file=sys.stderr)
        snapshot = Path(folder) / "snapshot.sqlite3"
        shutil.copyfile(path, snapshot)
        opted_out = sum(1 for f in sandbox.account.optouts_truth(include_deleted=False))
        anchor = sandbox.account.anchor

        def restore(trust_counts: bool) -> None:
            for suffix in ("-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            shutil.copyfile(snapshot, path)
            if not trust_counts:
                with OptOutStore(path) as old, old.db:
                    old.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (UNTRUSTED, "benchmark: read only"))

        def synced(trust_counts: bool) -> tuple[int, bool]:
            restore(trust_counts)
            with client() as api, OptOutStore(path) as opened:
                report = opened.sync(api)
                exact = stored(opened) == truth(sandbox)
            return report.calls, exact

        for k in [int(k) for k in args.ks.split(",")]:
            trials = min(args.trials, 3) if k == 0 else args.trials
            result = {"k": k, "trials": trials, "calls": [], "exact": 0, "old_calls": [], "old_exact": 0}
            for trial in range(trials):
                sandbox.account.close()  # the account as generated again
                change(sandbox, rng, k, anchor)
                calls, exact = synced(trust_counts=True)
                old_calls, old_exact = synced(trust_counts=False)
                result["calls"].append(calls)
                result["exact"] += exact
                result["old_calls"].append(old_calls)
                result["old_exact"] += old_exact
                print(f"k={k} trial {trial}: {calls} calls, exact {exact}; read only {old_calls}, {old_exact}",
                      file=sys.stderr)  # fmt: skip
            rows.append(result)
    section = render(args, full.calls, full.rows, opted_out, rows)
    print(section)
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from optout_queries import write_section

        write_section(Path(args.write), section)


def change(sandbox, rng: random.Random, k: int, anchor: dt.datetime) -> None:
    """k changes the newest page cannot show: each of a random kind, on a random contact, at a random date."""
    account = sandbox.account
    now = dt.datetime.now(dt.timezone.utc)
    old = [f for f in account.optouts_truth(include_deleted=False) if f.opt_out_date < anchor - dt.timedelta(days=2)]
    touched: set[str] = set()
    while len(touched) < k:
        kind = rng.choice(KINDS)
        if kind == "backdated":
            at = anchor - dt.timedelta(days=2 + rng.random() * 700)
            (contact,) = account.pick("active", 1, rng, created_by=at)
            if contact not in touched:
                account.opt_out(contact_ids=[contact], at=at, backdated=True)
        else:
            contact = rng.choice(old).contact_id
            if contact not in touched:
                (account.resubscribe if kind == "resubscribe" else account.delete)([contact], at=now)
        touched.add(contact)


def truth(sandbox) -> set[tuple[str, dt.datetime, bool]]:
    return {(f.contact_id, f.opt_out_date, f.deleted) for f in sandbox.account.optouts_truth()}


def stored(store) -> set[tuple[str, dt.datetime, bool]]:
    from ccoptout_xl.query import OptOutQuery

    return {
        (o.contact_id, o.opt_out_date.astimezone(dt.timezone.utc), o.deleted)
        for o in store.query(OptOutQuery(include_deleted=True))
    }


def render(args: argparse.Namespace, full_calls: int, rows: int, opted_out: int, results: list[dict]) -> str:
    depth = math.ceil(math.log2(opted_out / 500))
    lines = [
        "## Keeping the local store exact: count reconciliation (issue 11)",
        "",
        f"Measured {dt.date.today()} on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Sandbox: {args.contacts:,} contacts, {opted_out:,} opted out "
        f"({rows:,} stored with deleted contacts); a full sync costs {full_calls} calls. Each trial: the synced "
        "store, then k random changes the newest page cannot show (re-subscriptions, deletions, back-dated "
        "opt-outs: kinds, contacts and dates at random), then the sync. Exact = equal to the sandbox's ground "
        "truth (contact, opt-out date, deleted). Command:",
        "",
        "    python bench/sync_reconcile.py --write docs/benchmarks.md",
        "",
        "| k changes | trials | reconciled: calls (median / max) | target | exact | read only: calls | exact | "
        "full read: calls |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        k = r["k"]
        target = 2 if k == 0 else min(full_calls, 18 + k * (depth + 2))
        worst = max(r["calls"])
        lines.append(
            f"| {k} | {r['trials']} | {statistics.median(r['calls']):.0f} / {worst} | ≤ {target} "
            f"({'met' if worst <= target else '**not met**'}) | {r['exact']}/{r['trials']} | "
            f"{statistics.median(r['old_calls']):.0f} | {r['old_exact']}/{r['trials']} | {full_calls} |"
        )
    lines += [
        "",
        "A store that is not exact after a reconciled sync holds changes that cancel out in the first count (a "
        "re-subscription or deletion balanced by a back-dated opt-out): no count can see them, and the weekly full "
        "sync (the backstop) repairs them.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
