"""Benchmark: calls, wall time and peak memory of opt-out queries, ccoptout-xl side by side with the alternatives.

The sandbox runs in its own process with the real limits (4 requests/second) and added latency; each approach
runs in a fresh child process so its peak memory (ru_maxrss) is its own.

Approaches:
  ccoptout-xl  the library: server-side opt-out windows, paced at 4/s, streamed to a CSV file.
  support      what Constant Contact's support suggested: page every status=unsubscribed contact at limit=500
               (paced like ccoptout-xl, so only the strategy differs), filter and sort locally.
  script       a typical hand-written script: default limit (50), 0.34 s sleep between calls, filter locally.

Queries: (a) since 30 days, (b) latest 500, (c) all opt-outs. The two alternatives send the same requests for
every query (they cannot filter on the server), so each runs its scan once and answers all three from it.

    python bench/optout_queries.py --contacts 1000000 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

QUERIES = {"a": "since 30 days", "b": "latest 500", "c": "all opt-outs"}


# -- children: one approach each, printing one JSON line ----------------------------------------------------


def child_ours(base_url: str, token: str, query: str, out_path: str) -> dict:
    from ccoptout_xl.auth import StaticToken
    from ccoptout_xl.client import Client
    from ccoptout_xl.formats import write_optouts
    from ccoptout_xl.http_client import HTTPClient
    from ccoptout_xl.query import OptOutQuery, from_api

    now = dt.datetime.now(dt.timezone.utc)
    wanted = {
        "a": OptOutQuery(since=now - dt.timedelta(days=30)),
        "b": OptOutQuery(latest=500),
        "c": OptOutQuery(),
    }[query]
    client = Client(HTTPClient(base_url, StaticToken(token)))
    started = time.perf_counter()
    result = from_api(client, wanted, now=now)
    with open(out_path, "w", newline="", encoding="utf-8") as out:
        rows = write_optouts(result, out, "csv", dt.timezone.utc)
    wall = time.perf_counter() - started
    return {"rows": {query: rows}, "calls": client.stats.calls, "throttled": client.stats.throttled, "wall": wall}


def child_scan(base_url: str, token: str, approach: str) -> dict:
    """The alternatives: read every unsubscribed contact, then answer the three queries locally."""
    import requests

    from ccoptout_xl.auth import StaticToken
    from ccoptout_xl.client import Client
    from ccoptout_xl.http_client import HTTPClient
    from ccoptout_xl.optouts import OptOut

    now = dt.datetime.now(dt.timezone.utc)
    since = now - dt.timedelta(days=30)
    optouts: list[OptOut] = []
    started = time.perf_counter()
    calls = throttled = 0
    if approach == "support":
        client = Client(HTTPClient(base_url, StaticToken(token)))
        for contact in client.contacts(status="unsubscribed", limit=500):
            optouts.append(OptOut.from_contact(contact))
        calls, throttled = client.stats.calls, client.stats.throttled
    else:  # a typical script
        session = requests.Session()
        headers = {"Authorization": f"Bearer {token}"}
        url: str | None = base_url + "/contacts?status=unsubscribed"
        while url:
            response = session.get(url, headers=headers, timeout=60)
            calls += 1
            if response.status_code == 429:
                throttled += 1
                time.sleep(1)
                continue
            response.raise_for_status()
            body = response.json()
            optouts.extend(OptOut.from_contact(c) for c in body["contacts"])
            href = body.get("_links", {}).get("next", {}).get("href")
            url = urljoin(base_url, href) if href else None
            time.sleep(0.34)
    optouts = [o for o in optouts if o is not None]
    optouts.sort(key=lambda o: o.opt_out_date, reverse=True)
    rows = {"a": sum(o.opt_out_date >= since for o in optouts), "b": min(500, len(optouts)), "c": len(optouts)}
    wall = time.perf_counter() - started
    return {"rows": rows, "calls": calls, "throttled": throttled, "wall": wall}


def run_child(args: argparse.Namespace) -> None:
    if args.approach == "ccoptout-xl":
        result = child_ours(args.base_url, args.token, args.query, args.out)
    else:
        result = child_scan(args.base_url, args.token, args.approach)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# -- the orchestrator -------------------------------------------------------------------------------------


def start_sandbox(contacts: int, latency: float, rate: float) -> tuple[subprocess.Popen, str, str]:
    command = [sys.executable, "-m", "ccoptout_xl", "sandbox", "--port", "0", "--contacts", str(contacts)]
    command += ["--latency", str(latency), "--rate-limit", str(rate), "--daily-quota", "1000000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    base_url = token = ""
    for line in process.stdout:
        if line.startswith("Sandbox API:"):
            base_url = line.split(":", 1)[1].strip()
        elif line.startswith("Token:"):
            token = line.split(":", 1)[1].strip()
        if base_url and token:
            return process, base_url, token
    raise RuntimeError("the sandbox did not start")


def measure(base_url: str, token: str, approach: str, query: str = "-") -> dict:
    # The limit is per API key: let the previous run's requests leave the server's 1-second window first.
    time.sleep(1.5)
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, __file__, "child", approach, base_url, query, os.path.join(folder, "o.csv")]
        env = {**os.environ, "CCOPTOUT_ACCESS_TOKEN": token}  # not in argv, where any process can read it
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"{approach} {query} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def call_target(rows: int) -> float:
    return 1.5 * math.ceil(max(rows, 1) / 500) + 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--smaller", type=int, default=250_000, help="second account size, for memory growth")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--rate", type=float, default=4.0)
    parser.add_argument("--skip-script", action="store_true", help="skip the typical script (about 30 minutes)")
    parser.add_argument("--write", metavar="MARKDOWN", help="write the results section into this file")
    args = parser.parse_args()

    results: dict[str, dict] = {}
    sizes: dict[int, dict] = {}
    for contacts in (args.contacts, args.smaller):
        print(f"starting the sandbox with {contacts:,} contacts...", file=sys.stderr)
        process, base_url, token = start_sandbox(contacts, args.latency, args.rate)
        try:
            if contacts == args.contacts:
                for query in QUERIES:
                    results[f"ccoptout-xl/{query}"] = measure(base_url, token, "ccoptout-xl", query)
                    print(query, results[f"ccoptout-xl/{query}"], file=sys.stderr)
                results["support"] = measure(base_url, token, "support")
                print("support", results["support"], file=sys.stderr)
                if not args.skip_script:
                    results["script"] = measure(base_url, token, "script")
                    print("script", results["script"], file=sys.stderr)
                sizes[contacts] = results["ccoptout-xl/c"]
            else:
                sizes[contacts] = measure(base_url, token, "ccoptout-xl", "c")
                print("smaller", sizes[contacts], file=sys.stderr)
        finally:
            process.terminate()
            process.wait(timeout=30)

    report = render(args, results, sizes)
    print(report)
    if args.write:
        write_section(Path(args.write), report)


def render(args: argparse.Namespace, results: dict[str, dict], sizes: dict[int, dict]) -> str:
    lines = [
        "## Opt-out queries against the sandbox (issue: core)",
        "",
        f"Measured {dt.date.today()} on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Sandbox in its own process: {args.contacts:,} contacts (20% unsubscribed, "
        f"1.5% of those in the last 30 days), {args.latency * 1000:.0f} ms added latency, {args.rate:g} requests/s "
        "limit. Command:",
        "",
        "    python bench/optout_queries.py --contacts 1000000 --write docs/benchmarks.md",
        "",
        "| query | approach | rows | calls | 429s | wall time | peak memory | target | met |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for query, label in QUERIES.items():
        ours = results[f"ccoptout-xl/{query}"]
        rows = ours["rows"][query]
        if query in "ab":
            limit = call_target(rows)
            target, met = f"≤ {limit:g} calls", ours["calls"] <= limit
        else:
            ideal = ours["calls"] / args.rate
            target = f"≤ {ideal * 1.1:.1f} s (calls/4 + 10%), no 429"
            met = ours["wall"] <= ideal * 1.1 and ours["throttled"] == 0
        lines.append(row(label, "ccoptout-xl", rows, ours, target, "yes" if met else "**no**"))
        for name, title in (("support", "support's approach"), ("script", "typical script")):
            if name in results:
                lines.append(row(label, title, results[name]["rows"][query], results[name], "", ""))
    big, small = sizes[args.contacts], sizes[args.smaller]
    growth = big["peak_mb"] / small["peak_mb"]
    lines += [
        "",
        "The two alternatives cannot filter on the server, so they send the same requests whatever the question: "
        "each ran its scan once, and its row repeats for (a), (b) and (c).",
        "",
        "Memory as the account grows, all opt-outs streamed to CSV:",
        "",
        "| account | opt-outs | peak memory |",
        "|---:|---:|---:|",
        f"| {args.smaller:,} contacts | {small['rows']['c']:,} | {small['peak_mb']:.0f} MB |",
        f"| {args.contacts:,} contacts | {big['rows']['c']:,} | {big['peak_mb']:.0f} MB |",
        "",
        f"{args.contacts // args.smaller}× the account, {growth:.2f}× the peak memory "
        f"({'flat' if growth < 1.25 else '**not flat**'}).",
    ]
    return "\n".join(lines) + "\n"


def row(label: str, approach: str, rows: int, result: dict, target: str, met: str) -> str:
    return (
        f"| {label} | {approach} | {rows:,} | {result['calls']:,} | {result['throttled']} | {result['wall']:.1f} s | "
        f"{result['peak_mb']:.0f} MB | {target} | {met} |"
    )


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section of the markdown file (from its heading to the next '## ')."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    heading = section.splitlines()[0]
    if heading in text:
        start = text.index(heading)
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + (section.rstrip("\n") + "\n\n" + text[end + 1 :] if end != -1 else section)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_args = argparse.Namespace(
            approach=sys.argv[2],
            base_url=sys.argv[3],
            token=os.environ["CCOPTOUT_ACCESS_TOKEN"],
            query=sys.argv[4],
            out=sys.argv[5],
        )
        run_child(child_args)
    else:
        main()
