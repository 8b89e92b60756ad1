"""Benchmark: the local opt-out store. Sync time and calls, query latency, size on disk.

The sandbox (1,000,000 contacts, 200,000 opt-outs) runs in this process with 100 ms added latency and the real
4 requests/second limit; each sync and the query run happen in a fresh child process with its own cache folder.

1. A full sync into an empty store.
2. 300 new opt-outs happen in the account; an incremental sync picks them up.
3. 1,000 queries with random since-dates (each returning at most 1,000 rows) against the stored 200,000
   opt-outs, timed one by one as a worksheet function makes them (find and open the store, check its freshness,
   read the rows): p50 and p99. Beside them, the same questions asked of the API
   (``--no-cache``), for a handful of dates only: each takes seconds.

    python bench/store_sync.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERIES = 1_000


def child_sync() -> dict:
    from ccoptout_xl import connect
    from ccoptout_xl.store import OptOutStore

    with connect() as client, OptOutStore.for_client(client) as store:
        started = time.perf_counter()
        report = store.sync(client)
        return {"kind": report.kind, "calls": report.calls, "seconds": time.perf_counter() - started,
                "rows": report.rows, "bytes": store.state().size_bytes}  # fmt: skip


def child_queries(seed: int) -> dict:
    from ccoptout_xl import connect
    from ccoptout_xl.query import OptOutQuery
    from ccoptout_xl.store import OptOutStore

    with connect() as client, OptOutStore.for_client(client) as store:
        dates = [o.opt_out_date for o in store.query(OptOutQuery(latest=1_000))]
    newest, oldest = dates[0], dates[-1]  # any since in between returns at most 1,000 rows
    rng = random.Random(seed)
    times, sizes = [], []
    for _ in range(QUERIES):
        since = oldest + (newest - oldest) * rng.random()
        started = time.perf_counter()
        # What a worksheet function does each time: find the store, open it, check it, read the rows.
        with OptOutStore.last_used() as store:
            store.is_fresh()
            rows = list(store.query(OptOutQuery(since=since)))
        times.append(time.perf_counter() - started)
        sizes.append(len(rows))
    times.sort()
    return {
        "p50_ms": 1000 * statistics.median(times),
        "p99_ms": 1000 * times[int(len(times) * 0.99) - 1],
        "max_rows": max(sizes),
        "mean_rows": statistics.mean(sizes),
    }


def child_api_queries(seed: int, count: int) -> dict:
    from ccoptout_xl import connect
    from ccoptout_xl.query import OptOutQuery, from_api

    rng = random.Random(seed)
    now = dt.datetime.now(dt.timezone.utc)
    times = []
    with connect() as client:
        for _ in range(count):
            since = now - dt.timedelta(days=10 * rng.random())  # about 1,000 rows at most, like the store's
            started = time.perf_counter()
            from_api(client, OptOutQuery(since=since)).close()
            times.append(time.perf_counter() - started)
        calls = client.stats.calls
    return {"median_s": statistics.median(times), "calls": calls, "count": count}


def run_child(name: str, env: dict[str, str], *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "child", name, *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--write", metavar="MARKDOWN")
    args = parser.parse_args()

    from ccoptout_xl.sandbox import AccountSpec, Sandbox

    with (
        tempfile.TemporaryDirectory() as cache,
        Sandbox(AccountSpec(contacts=args.contacts), latency=0.1, rate_limit=4, daily_quota=None) as sandbox,
    ):
        env = {**os.environ, "CCOPTOUT_API_URL": sandbox.base_url, "CCOPTOUT_ACCESS_TOKEN": sandbox.token,
               "CCOPTOUT_CACHE_DIR": cache}  # fmt: skip
        full = run_child("sync", env)
        print("full", full, file=sys.stderr)
        time.sleep(1.5)  # let the per-second window clear between runs
        sandbox.account.opt_out(count=300, at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5))
        incremental = run_child("sync", env)
        print("incremental", incremental, file=sys.stderr)
        queries = run_child("queries", env, "1")
        print("queries", queries, file=sys.stderr)
        time.sleep(1.5)
        api = run_child("api", env, "2", "5")
        print("api", api, file=sys.stderr)
    section = render(args, full, incremental, queries, api)
    print(section)
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from optout_queries import write_section

        write_section(Path(args.write), section)


def render(args: argparse.Namespace, full: dict, incremental: dict, queries: dict, api: dict) -> str:
    met = queries["p99_ms"] < 20
    return "\n".join(
        [
            "## The local opt-out store (issue: store)",
            "",
            f"Measured {dt.date.today()} on {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}. Sandbox: {args.contacts:,} contacts ({full['rows']:,} opt-outs stored, "
            "deleted contacts included), 100 ms added latency, 4 requests/second. Command:",
            "",
            "    python bench/store_sync.py --write docs/benchmarks.md",
            "",
            "| what | calls | time | result |",
            "|---|---:|---:|---|",
            f"| full sync into an empty store | {full['calls']:,} | {full['seconds']:.1f} s | "
            f"{full['rows']:,} opt-outs, {full['bytes'] / 1e6:.0f} MB on disk |",
            f"| incremental sync after 300 new opt-outs | {incremental['calls']:,} | {incremental['seconds']:.1f} s | "
            f"{incremental['rows']:,} opt-outs |",
            f"| {QUERIES:,} since-queries from the store (≤ {queries['max_rows']:,} rows, mean "
            f"{queries['mean_rows']:.0f}) | 0 | p50 {queries['p50_ms']:.1f} ms, p99 {queries['p99_ms']:.1f} ms | "
            f"target p99 < 20 ms: {'met' if met else '**not met**'} |",
            f"| the same kind of question asked of the API ({api['count']} dates) | {api['calls'] / api['count']:.1f} "
            f"each | median {api['median_s']:.2f} s | what a query costs without the store |",
            "",
        ]
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        name = sys.argv[2]
        result = {
            "sync": lambda: child_sync(),
            "queries": lambda: child_queries(int(sys.argv[3])),
            "api": lambda: child_api_queries(int(sys.argv[3]), int(sys.argv[4])),
        }[name]()
        print(json.dumps(result))
    else:
        main()
