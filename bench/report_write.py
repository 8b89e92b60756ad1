"""Benchmark: time and peak memory to write the .xlsx report, side by side with XlsxWriter's constant_memory mode.

Both writers get the same synthetic opt-outs (made on the fly, so the input takes no memory) and write the same
eight columns with a real date-time per row and a frozen header; ccoptout-xl's rows are also an Excel table,
which XlsxWriter cannot add in constant_memory mode. ccoptout-xl's side is the
whole report (`write_report`: also the Summary sheet with its chart and the About sheet). Each run is a fresh
child process, so its peak memory (ru_maxrss) is its own; runs alternate between the writers.

    pip install XlsxWriter
    python bench/report_write.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROWS = (10_000, 200_000)
REASONS = ["Too many emails", "", '=HYPERLINK("http://x","y")', "Moved to a different provider", "太多邮件了"]


def optouts(count: int) -> Iterator:
    from ccoptout_xl.optouts import OptOut

    rng = random.Random(count)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    for i in range(count):
        yield OptOut(
            contact_id=f"{rng.getrandbits(128):032x}",
            email=f"person{i}@example.com",
            first_name="Ada",
            last_name=f"Lovelace {i % 97}",
            opt_out_date=start - dt.timedelta(seconds=i * 37),
            opt_out_source="Contact" if i % 7 else "Account",
            opt_out_reason=REASONS[i % len(REASONS)] or None,
            list_ids=("list-1", "list-2") if i % 3 else (),
        )


def write_ours(count: int, path: str) -> None:
    from ccoptout_xl.report import write_report

    write_report(optouts(count), path, list_names={"list-1": "Newsletter", "list-2": "Customers"})


def write_xlsxwriter(count: int, path: str) -> None:
    import xlsxwriter

    from ccoptout_xl.columns import headers, report_columns

    names = {"list-1": "Newsletter", "list-2": "Customers"}
    book = xlsxwriter.Workbook(path, {"constant_memory": True, "strings_to_formulas": False})
    sheet = book.add_worksheet("Opt-outs")
    when = book.add_format({"num_format": "yyyy-mm-dd hh:mm"})
    header = headers(report_columns(campaigns=False))  # the report without campaigns: the same eight columns
    sheet.freeze_panes(1, 0)
    sheet.write_row(0, 0, header)
    row = 0
    for row, optout in enumerate(optouts(count), start=1):
        sheet.write_string(row, 0, optout.email)
        sheet.write_string(row, 1, optout.first_name)
        sheet.write_string(row, 2, optout.last_name)
        sheet.write_datetime(row, 3, optout.opt_out_date.replace(tzinfo=None), when)
        sheet.write_string(row, 4, optout.opt_out_source)
        sheet.write_string(row, 5, optout.opt_out_reason or "")
        sheet.write_string(row, 6, ", ".join(names[i] for i in optout.list_ids))
        sheet.write_string(row, 7, optout.contact_id)
    # XlsxWriter cannot add a table in constant_memory mode (it warns and skips it): no table on this side.
    book.close()


def child(writer: str, count: int) -> None:
    import xlsxwriter  # noqa: F401 - imports are not part of the time measured

    import ccoptout_xl.report  # noqa: F401

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "report.xlsx")
        started = time.perf_counter()
        (write_ours if writer == "ccoptout-xl" else write_xlsxwriter)(count, path)
        seconds = time.perf_counter() - started
        size = os.path.getsize(path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "bytes": size}))


def measure(writer: str, count: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "child", writer, str(count)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{writer} {count} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per writer and size (the median is reported)")
    parser.add_argument("--write", metavar="MARKDOWN", help="write the results section into this file")
    args = parser.parse_args()
    results: dict[tuple[str, int], list[dict]] = {}
    for count in ROWS:
        for _ in range(args.repeat):
            for writer in ("ccoptout-xl", "XlsxWriter"):
                run = measure(writer, count)
                results.setdefault((writer, count), []).append(run)
                print(writer, count, run, file=sys.stderr)
    report = render(args, results)
    print(report)
    if args.write:
        from optout_queries import write_section  # the same markdown section writer

        write_section(Path(args.write), report)


def render(args: argparse.Namespace, results: dict[tuple[str, int], list[dict]]) -> str:
    lines = [
        "## Writing the .xlsx report (issue: report)",
        "",
        f"Measured {dt.date.today()} on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; median of {args.repeat} runs each, alternating writers. Command:",
        "",
        "    python bench/report_write.py --write docs/benchmarks.md",
        "",
        "| rows | writer | time | peak memory | file size | targets | met |",
        "|---:|---|---:|---:|---:|---|---|",
    ]
    for count in ROWS:
        ours = _median(results[("ccoptout-xl", count)])
        theirs = _median(results[("XlsxWriter", count)])
        ratio = ours["seconds"] / theirs["seconds"]
        met = ratio <= 2.5 and (count < 200_000 or ours["peak_mb"] < 250)
        targets = f"time ≤ 2.5× XlsxWriter ({ratio:.2f}×)" + ("; memory < 250 MB" if count >= 200_000 else "")
        lines.append(_row(count, "ccoptout-xl (openpyxl, write-only)", ours, targets, "yes" if met else "**no**"))
        lines.append(_row(count, "XlsxWriter (constant_memory)", theirs, "", ""))
    return "\n".join(lines) + "\n"


def _median(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _row(count: int, writer: str, run: dict, targets: str, met: str) -> str:
    return (
        f"| {count:,} | {writer} | {run['seconds']:.2f} s | {run['peak_mb']:.0f} MB | "
        f"{run['bytes'] / 1e6:.1f} MB | {targets} | {met} |"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
