"""Benchmark: a full read of every opt-out, one page after another and in parallel windows, side by side.

The sandbox (1,000,000 contacts, 200,000 opt-outs) runs in a process of its own with the real 4 requests/second limit
and a fixed latency per page; each read runs in a fresh child of this small process, so its peak memory (ru_maxrss,
which counts what a child inherits before exec) is its own.

1. At 1 s and at 100 ms per page: ``from_api(OptOutQuery())`` with ``workers=1`` (today's sequential read) and with
   the default (parallel windows). Calls, 429s, seconds, the ratio to the rate ceiling (the fewest calls,
   ceil(opt-outs / 500), at 4 a second) and peak memory; both reads must return the same rows in the same order.
2. Peak memory of the parallel read (at 1 s a page) as the account grows (50,000, 100,000, 200,000 opt-outs).

    python bench/full_read.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

LATENCIES = (1.0, 0.1)
TARGETS = {1.0: 1.15, 0.1: 1.05}  # most the parallel read may take, in rate ceilings


def child_read(workers: int | None) -> dict:
    from ccoptout_xl.auth import StaticToken
    from ccoptout_xl.client import Client
    from ccoptout_xl.http_client import HTTPClient
    from ccoptout_xl.query import OptOutQuery, from_api

    plans: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: plans.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("ccoptout_xl.query").addHandler(handler)
    logging.getLogger("ccoptout_xl.query").setLevel(logging.DEBUG)
    client = Client(HTTPClient(os.environ["BENCH_API_URL"], StaticToken(os.environ["CCOPTOUT_ACCESS_TOKEN"])))
    started = time.perf_counter()
    result = from_api(client, OptOutQuery(), workers=workers)
    wall = time.perf_counter() - started
    digest = hashlib.sha256("\n".join(o.contact_id for o in result).encode()).hexdigest()[:16]
    return {
        "rows": len(result),
        "calls": client.stats.calls,
        "throttled": client.stats.throttled,
        "wall": wall,
        "digest": digest,
        "plan": plans[-1] if plans else "one page after another",
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def read(env: dict[str, str], workers: int | None) -> dict:
    command = [sys.executable, __file__, "child", "auto" if workers is None else str(workers)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"the read failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--growth", default="250000,500000", help="smaller accounts, for memory as it grows")
    parser.add_argument("--write", metavar="MARKDOWN")
    args = parser.parse_args()
    smaller = [int(n) for n in args.growth.split(",") if n]

    sys.path.insert(0, str(Path(__file__).parent))
    from optout_queries import start_sandbox, write_section

    runs: list[dict] = []
    growth: list[dict] = []
    plan = [(args.contacts, latency, workers) for latency in LATENCIES for workers in (1, None)]
    plan += [(contacts, 1.0, None) for contacts in smaller]
    for contacts, latency, workers in plan:
        print(f"{contacts:,} contacts, {latency} s a page, workers={workers}...", file=sys.stderr)
        process, base_url, token = start_sandbox(contacts, latency, 4.0)
        try:
            env = {**os.environ, "BENCH_API_URL": base_url, "CCOPTOUT_ACCESS_TOKEN": token}
            result = read(env, workers) | {"latency": latency, "workers": workers, "contacts": contacts}
        finally:
            process.terminate()
            process.wait(timeout=30)
        print(result, file=sys.stderr)
        (runs if contacts == args.contacts else growth).append(result)
    growth.append(next(r for r in runs if r["latency"] == 1.0 and r["workers"] is None))
    section = render(args, runs, growth)
    print(section)
    if args.write:
        write_section(Path(args.write), section)


def render(args: argparse.Namespace, runs: list[dict], growth: list[dict]) -> str:
    rows = runs[0]["rows"]
    ceiling = math.ceil(rows / 500) / 4
    lines = [
        "## Full reads at the rate limit, whatever the latency (issue 11, item 3)",
        "",
        f"Measured {dt.date.today()} on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Sandbox in a process of its own: {args.contacts:,} contacts ({rows:,} "
        "opt-outs), 4 requests/second, a fixed latency per page; each read in a child process of its own. Rate "
        f"ceiling: the fewest calls, ceil({rows:,} / 500) = {math.ceil(rows / 500)}, at 4 a second = {ceiling:.0f} s. "
        "Command:",
        "",
        "    python bench/full_read.py --write docs/benchmarks.md",
        "",
        "| latency | read | how it read | calls | 429s | time | × ceiling | peak memory | target | met |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        ratio = run["wall"] / ceiling
        parallel = run["workers"] is None
        target = TARGETS[run["latency"]]
        met = ratio <= target and run["throttled"] == 0
        lines.append(
            f"| {run['latency'] * 1000:.0f} ms | {'now (default)' if parallel else 'before (`workers=1`)'} | "
            f"{run['plan']} | {run['calls']:,} | {run['throttled']} | "
            f"{run['wall']:.1f} s | {ratio:.2f} | {run['peak_mb']:.0f} MB | "
            + (f"≤ {target}× ceiling, no 429 | {'yes' if met else '**no**'} |" if parallel else " |  |")
        )
    same = {run["digest"] for run in runs}
    if any(run["workers"] is None and run["plan"] == "one page after another" for run in runs):
        lines += [
            "",
            "Where the default read went one page after another, its first call was quick enough for one cursor to "
            "keep 4 calls a second busy: windows would only have added their part pages.",
        ]
    lines += [
        "",
        "Every read returned the same rows in the same order: "
        + ("yes" if len(same) == 1 else f"**no** ({len(same)} different results)")
        + f" ({rows:,} rows).",
        "",
        "Peak memory of the parallel read at 1 s a page as the account grows:",
        "",
        "| account | opt-outs | calls | time | peak memory |",
        "|---:|---:|---:|---:|---:|",
    ]
    for run in sorted(growth, key=lambda r: r["rows"]):
        lines.append(
            f"| {run['contacts']:,} contacts | {run['rows']:,} | {run['calls']:,} | {run['wall']:.1f} s | "
            f"{run['peak_mb']:.0f} MB |"
        )
    small, big = min(growth, key=lambda r: r["rows"]), max(growth, key=lambda r: r["rows"])
    factor = big["peak_mb"] / small["peak_mb"]
    lines += [
        "",
        f"{big['rows'] / small['rows']:.0f}× the opt-outs, {factor:.2f}× the peak memory "
        f"({'flat' if factor < 1.25 else '**not flat**'}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        print(json.dumps(child_read(None if sys.argv[2] == "auto" else int(sys.argv[2]))))
    else:
        main()
