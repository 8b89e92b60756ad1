"""The ``ccoptout-xl`` command line: reads the arguments, calls :mod:`ccoptout_xl.service`, shows the results.

Exit codes: 0 done; 2 bad input; 3 API or network failure; 4 not allowed or sign-in failed; 5 daily quota used
up; 6 a file (the output, the local store) could not be written; 7 sign in again (no sign-in, or it was
revoked); 130 interrupted (Ctrl-C); 143 stopped (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TextIO

from . import service
from .dates import DATE_FORMS, parse_when, resolve_timezone
from .exceptions import CcOptOutError, OutputError, UsageError
from .files import atomic_output, require_folder
from .formats import FORMATS, write_campaign_counts, write_changes, write_optouts
from .service import MAX_AGE, OptOutQuery
from .text import duration, plural, quoted, writes_utf8
from .version import __version__

MAX_AGE_MINUTES = 366 * 24 * 60  # a year
CAMPAIGNS_HELP = "with the campaign each opt-out came through (needs a sign-in that allows campaign reports)"
DEMO_REPORT = "optouts-demo.xlsx"


class _Parser(argparse.ArgumentParser):
    """argparse, but bad input is one line on stderr (exit 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ccoptout-xl", description="Constant Contact opt-outs, into Excel.")
    parser.add_argument("--version", action="version", version=f"ccoptout-xl {__version__}")
    parser.add_argument("--debug", action="store_true", help="log API calls and show tracebacks")
    common = _Parser(add_help=False)  # so that --debug also works after the command's name
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    fetch = commands.add_parser(
        "fetch",
        parents=[common],
        help="list who opted out",
        description="List who opted out, newest first. Dates: " + DATE_FORMS + ". A date without a time is "
        "midnight in --tz; --since is inclusive, --until exclusive.",
    )
    add_query_options(fetch)
    add_output_options(fetch)
    fetch.add_argument("--campaigns", action="store_true", help=CAMPAIGNS_HELP)
    fetch.set_defaults(run=run_fetch)

    campaigns = commands.add_parser(
        "campaigns",
        parents=[common],
        help="opt-outs per campaign: which email made them leave",
        description="Count the opt-outs of a window per campaign, most first, with each campaign's name and last "
        "send time, and one row for the opt-outs through no campaign (the account removed them, a form, an "
        "import, or an older opt-out the person reversed). Needs a sign-in that allows campaign reports. Dates: "
        + DATE_FORMS
        + ".",
    )
    campaigns.add_argument("--since", metavar="DATE", type=_given, help="opted out at or after DATE")
    campaigns.add_argument("--until", metavar="DATE", type=_given, help="opted out before DATE")
    campaigns.add_argument("--include-deleted", action="store_true", help="include deleted contacts")
    campaigns.add_argument(
        "--tz", metavar="ZONE", type=_given, help="time zone for dates, e.g. Europe/Paris (default: this computer's)"
    )
    campaigns.add_argument("--dayfirst", action="store_true", help="read 1/5/2026 as 1 May, not 5 January")
    add_output_options(campaigns)
    add_store_options(campaigns)
    campaigns.set_defaults(run=run_campaigns, latest=None, demo=False)

    report = commands.add_parser(
        "report",
        parents=[common],
        help="write an Excel report (.xlsx) of who opted out",
        description="Write a standalone .xlsx report: the opt-outs as an Excel table, a summary with a chart, and "
        "how it was made. Dates: " + DATE_FORMS + ".",
    )
    add_query_options(report)
    report.add_argument(
        "-o", "--output", metavar="FILE", type=_given, help="the .xlsx file (default: optouts-YYYY-MM-DD.xlsx)"
    )
    report.add_argument("--campaigns", action="store_true", help=CAMPAIGNS_HELP + ", and a By campaign sheet")
    report.set_defaults(run=run_report)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="write a report of the last 90 days from the built-in sandbox account",
        description="Start the built-in sandbox, write the report of its last 90 days of opt-outs, and say where.",
    )
    demo.add_argument(
        "-o", "--output", metavar="FILE", type=_given, default=DEMO_REPORT, help=f"(default: {DEMO_REPORT})"
    )
    demo.add_argument("--tz", metavar="ZONE", type=_given, help="time zone for dates (default: this computer's)")
    demo.set_defaults(
        run=run_demo,
        since="90d",
        until=None,
        latest=None,
        include_deleted=False,
        dayfirst=False,
        refresh=False,
        no_cache=True,
        max_age=5,
        campaigns=True,  # the demo shows what a report with campaigns looks like
    )

    login = commands.add_parser(
        "login",
        parents=[common],
        help="sign in to Constant Contact (once; the sign-in is kept and renewed)",
        description="Sign in with the device flow: open the address shown, enter the code, approve. --browser uses "
        "the authorization code flow with PKCE instead (the browser comes back to this computer).",
    )
    login.add_argument("--browser", action="store_true", help="sign in through a browser redirect (PKCE)")
    login.add_argument("--no-open", action="store_true", help="do not open a browser; just show the address")
    login.set_defaults(run=run_login)
    logout = commands.add_parser(
        "logout", parents=[common], help="forget the stored sign-in", description="Remove the stored tokens."
    )
    logout.set_defaults(run=run_logout)
    status = commands.add_parser(
        "status",
        parents=[common],
        help="show whether you are signed in, to which account, and where the sign-in is kept",
        description="Show the sign-in's state without renewing it.",
    )
    status.set_defaults(run=run_status)

    changes = commands.add_parser(
        "changes",
        parents=[common],
        help="what changed since a date: opted out, re-subscribed, deleted",
        description="List what the local store learned at or after --since, oldest first: contacts first seen "
        "opted out, re-subscribed or deleted, with when it was detected (the store is synced first when older "
        "than --max-age). To keep another system in step, pass the time this prints as the next --since. "
        "Dates: " + DATE_FORMS + ".",
    )
    changes.add_argument("--since", metavar="DATE", type=_given, required=True, help="detected at or after DATE")
    changes.add_argument("--until", metavar="DATE", type=_given, help="detected before DATE")
    changes.add_argument(
        "--tz", metavar="ZONE", type=_given, help="time zone for dates, e.g. Europe/Paris (default: this computer's)"
    )
    changes.add_argument("--dayfirst", action="store_true", help="read 1/5/2026 as 1 May, not 5 January")
    add_output_options(changes)
    add_store_options(changes, local_only=True)
    changes.set_defaults(run=run_changes, no_cache=False)

    sync = commands.add_parser(
        "sync",
        parents=[common],
        help="bring the local opt-out store up to date",
        description="Sync the local store: read the opt-outs newer than the newest stored one, then compare the "
        "API's counts with the store's and repair what differs (re-subscriptions, deletions, back-dated "
        "opt-outs) in a few calls; in full when the store is new, when asked, or weekly as a backstop "
        "(CCOPTOUT_FULL_SYNC_DAYS).",
    )
    sync.add_argument("--full", action="store_true", help="a full sync, whatever the last one was")
    sync.add_argument("--force", action="store_true", help="sync even past the daily quota guard")
    sync.set_defaults(run=run_sync)
    cache = commands.add_parser("cache", parents=[common], help="the local opt-out store: status, clear")
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=_Parser)
    cache_commands.required = True
    cache_status = cache_commands.add_parser("status", parents=[common], help="what is stored, how fresh, calls today")
    cache_status.set_defaults(run=run_cache_status)
    cache_clear = cache_commands.add_parser("clear", parents=[common], help="forget the stored opt-outs")
    cache_clear.set_defaults(run=run_cache_clear)

    workbook = commands.add_parser(
        "workbook",
        parents=[common],
        help="write the Excel workbook (OptOuts.xlsm), set up for this Python",
        description="Write a copy of OptOuts.xlsm whose xlwings settings point at this Python, ready to open.",
    )
    workbook.add_argument(
        "--dest", metavar="PATH", type=_given, default="OptOuts.xlsm", help="(default: OptOuts.xlsm here)"
    )
    workbook.set_defaults(run=run_workbook)

    sandbox = commands.add_parser(
        "sandbox",
        parents=[common],
        help="run a local imitation of the Constant Contact API",
        description="Serve a deterministic synthetic account on this computer, for trying things out and tests.",
    )
    sandbox.add_argument(
        "--port", type=_whole_number(0, 65535), default=8800, help="TCP port on 127.0.0.1 (default: 8800, 0 = any)"
    )
    sandbox.add_argument("--contacts", type=_whole_number(1, 10**12), default=100_000, help="contacts in the account")
    sandbox.add_argument("--seed", type=_whole_number(0), default=1, help="seed of the synthetic account (default: 1)")
    sandbox.add_argument("--rate-limit", type=float, default=4.0, help="requests per second before 429 (default 4)")
    sandbox.add_argument("--daily-quota", type=_whole_number(1, 10**12), default=10_000, help="requests per UTC day")
    sandbox.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    sandbox.add_argument(
        "--listing",
        choices=("created", "scrambled"),
        default="created",
        help="the order contacts are listed in: as created (default), or scrambled, unrelated to any date",
    )
    sandbox.set_defaults(run=run_sandbox)
    return parser


def add_query_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose which opt-outs (shared by every command that fetches them)."""
    parser.add_argument("--since", metavar="DATE", type=_given, help="opted out at or after DATE")
    parser.add_argument("--until", metavar="DATE", type=_given, help="opted out before DATE")
    parser.add_argument("--latest", metavar="N", type=_whole_number(1), help="only the N most recent opt-outs")
    parser.add_argument("--include-deleted", action="store_true", help="include deleted contacts")
    parser.add_argument(
        "--tz", metavar="ZONE", type=_given, help="time zone for dates, e.g. Europe/Paris (default: this computer's)"
    )
    parser.add_argument("--dayfirst", action="store_true", help="read 1/5/2026 as 1 May, not 5 January")
    parser.add_argument("--demo", action="store_true", help="use the built-in sandbox account instead of the API")
    add_store_options(parser)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """Where and how rows are written (shared by fetch and changes)."""
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("-o", "--output", metavar="FILE", type=_given, help="write to FILE instead of standard output")
    parser.add_argument("--raw", action="store_true", help="CSV: do not neutralise cells Excel would run as formulas")


def add_store_options(parser: argparse.ArgumentParser, *, local_only: bool = False) -> None:
    """How the local opt-out store is used (shared by fetch, report and changes; ``local_only``: no --no-cache)."""
    parser.add_argument("--refresh", action="store_true", help="sync the local store first, however fresh it is")
    if not local_only:
        parser.add_argument("--no-cache", action="store_true", help="ask the API directly; leave the local store alone")
    parser.add_argument(
        "--max-age",
        metavar="MINUTES",
        type=_whole_number(1, MAX_AGE_MINUTES),
        default=int(MAX_AGE.total_seconds() // 60),
        help="use the local store without syncing if synced within MINUTES (default: %(default)s)",
    )


def _whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (``1,000`` and ``1_000`` are read too)."""

    def whole_number(text: str) -> int:
        digits = text.strip().replace(",", "").replace("_", "")
        if not (digits.isascii() and digits.lstrip("-").isdigit()) or len(digits) > 40:
            raise argparse.ArgumentTypeError(f"{quoted(text)} is not a whole number (or is far too large)")
        value = int(digits)
        if value < low or (high is not None and value > high):
            bounds = f"at least {low:,}" if high is None else f"from {low:,} to {high:,}"
            raise argparse.ArgumentTypeError(f"{quoted(text)} must be {bounds}")
        return value

    return whole_number


def _given(text: str) -> str:
    """An argparse type for text options: refuses an empty value (what a script with an unset variable sends)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the value is empty (an unset variable in a script?)")
    if len(text) > 4096 or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{quoted(text)} is too long or has control characters")
    return text


def query_from_args(args: argparse.Namespace) -> tuple[OptOutQuery, dt.tzinfo]:
    """The :class:`OptOutQuery` and time zone that the query options describe."""
    zone = resolve_timezone(args.tz)
    since = parse_when(args.since, zone, dayfirst=args.dayfirst, what="--since date") if args.since else None
    until = parse_when(args.until, zone, dayfirst=args.dayfirst, what="--until date") if args.until else None
    query = OptOutQuery(since=since, until=until, latest=args.latest, include_deleted=args.include_deleted)
    return query, zone


def store_policy(args: argparse.Namespace) -> service.StorePolicy:
    """How the local store is used, as the options say."""
    return service.StorePolicy(
        use_store=not (args.no_cache or getattr(args, "demo", False)),  # the demo's sandbox is gone when it ends
        refresh=args.refresh,
        max_age=dt.timedelta(minutes=args.max_age),
    )


def run_fetch(args: argparse.Namespace) -> int:
    query, zone = query_from_args(args)
    _check_output(args)
    with service.connect(demo=args.demo) as client, _progress_bar(client) as on_progress:
        joined = service.CAMPAIGNS_ON if args.campaigns else service.CAMPAIGNS_OFF
        answer = service.get_optouts(
            client, query, store_policy(args), campaigns=joined, on_progress=on_progress, on_notice=_notice
        )
    try:
        count = _write_rows(
            args, lambda out: write_optouts(answer, out, args.format, zone, raw=args.raw, campaigns=args.campaigns)
        )
        if args.output:
            _tell(f"Wrote {plural(count, 'opt-out')} to {args.output} ({plural(answer.calls, 'API call')}).")
    finally:
        answer.close()
    return 0


def run_campaigns(args: argparse.Namespace) -> int:
    query, zone = query_from_args(args)
    _check_output(args)
    with service.connect() as client, _progress_bar(client) as on_progress:
        counted = service.get_campaign_counts(
            client, query, store_policy(args), on_progress=on_progress, on_notice=_notice
        )
    count = _write_rows(args, lambda out: write_campaign_counts(counted.rows, out, args.format, zone, raw=args.raw))
    if args.output:
        _tell(f"Wrote {plural(count, 'row')} to {args.output} ({plural(counted.calls, 'API call')}).")
    return 0


def run_changes(args: argparse.Namespace) -> int:
    zone = resolve_timezone(args.tz)
    since = parse_when(args.since, zone, dayfirst=args.dayfirst, what="--since date")
    until = parse_when(args.until, zone, dayfirst=args.dayfirst, what="--until date") if args.until else None
    if until is not None and since >= until:
        raise UsageError(
            f"The --since date ({since.isoformat()}) must be before the --until date ({until.isoformat()})."
        )
    _check_output(args)
    with service.connect() as client, _progress_bar(client) as on_progress:
        found = service.get_changes(
            client, since, until, store_policy(args), on_progress=on_progress, on_notice=_notice
        )
    try:
        count = _write_rows(args, lambda out: write_changes(found, out, args.format, zone, raw=args.raw))
    finally:
        found.close()
    if args.output:
        _tell(f"Wrote {plural(count, 'change')} to {args.output} ({plural(found.calls, 'API call')}).")
    # To the millisecond, rounded up: what was listed now is never listed again (--since is inclusive).
    shown = found.as_of + dt.timedelta(microseconds=-found.as_of.microsecond % 1000)
    as_of = shown.astimezone(zone).isoformat(timespec="milliseconds")
    _tell(f"Changes known as of {as_of}: next time, use --since {shlex.quote(as_of)} to get only what is new.")
    return 0


def _check_output(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output that cannot be written."""
    check_output_folder(args.output)
    if not args.output and sys.stdout is None:
        raise OutputError("Standard output is closed: write to a file with -o FILE instead.")


def _write_rows(args: argparse.Namespace, write: Callable[[IO[str]], int]) -> int:
    """Write rows with ``write`` to ``-o FILE`` (atomically) or standard output; return how many."""
    if args.output:
        # A byte-order mark tells Excel a CSV file is UTF-8; without it accents and emoji come out garbled.
        encoding = "utf-8-sig" if args.format == "csv" else "utf-8"
        with atomic_output(args.output, newline="", encoding=encoding) as out:
            return write(out)
    if args.format == "csv" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(newline="")  # CSV rows end in CRLF already: no second CR on Windows
    try:
        count = write(sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"Cannot write to standard output: {exc.strerror or type(exc).__name__}.") from None
    return count


def run_report(args: argparse.Namespace) -> int:
    query, zone = query_from_args(args)
    path = Path(args.output or f"optouts-{dt.datetime.now(zone):%Y-%m-%d}.xlsx")
    if path.suffix.lower() != ".xlsx":
        raise UsageError(f"The report is an Excel workbook: name the file with .xlsx, not {path.name!r}.")
    check_output_folder(str(path))
    with service.connect(demo=args.demo) as client, _progress_bar(client) as on_progress:
        done = service.make_report(
            client,
            query,
            path,
            store_policy(args),
            zone=zone,
            query_text=_query_text(args),
            campaigns=args.campaigns,
            on_progress=on_progress,
            on_notice=_notice,
        )
    summary = done.summary
    span = f" from {summary.first:%Y-%m-%d} to {summary.last:%Y-%m-%d}" if summary.first and summary.last else ""
    sources = ", ".join(f"{source} {count:,}" for source, count in summary.by_source.most_common())
    print(plural(summary.total, "opt-out") + span + (f" ({sources})" if sources else "") + ".")
    print(f"Wrote {path.resolve()} ({plural(done.calls, 'API call')}).")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    args.demo = True
    return run_report(args)


def run_sync(args: argparse.Namespace) -> int:
    with service.connect() as client, _progress_bar(client) as on_progress:
        report = service.sync(client, full=args.full, force=args.force, on_progress=on_progress, on_notice=_notice)
    if report.kind == "none":
        print(f"Already up to date: another process synced meanwhile. {plural(report.rows, 'opt-out')} stored.")
        return 0
    found = f", {plural(report.changes, 'change')} found" if report.changes else ""
    if report.repaired:
        found += f" ({report.repaired:,} by comparing counts)"
    checked = "; the API's counts agree with the store" if report.counted and report.kind == "incremental" else ""
    print(
        f"{report.kind.capitalize()} sync: {plural(report.fetched, 'opt-out')} read{found}, "
        f"{plural(report.rows, 'opt-out')} stored, {plural(report.calls, 'API call')}, {report.seconds:.1f} s"
        f"{checked}."
    )
    return 0


def run_cache_status(args: argparse.Namespace) -> int:
    state = service.cache_state(on_notice=_notice)
    now = dt.datetime.now(dt.timezone.utc)

    def ago(moment: dt.datetime | None) -> str:
        return "never" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC ({duration(now - moment)} ago)"

    print(f"Store: {state.path} ({state.size_bytes / 1e6:.1f} MB)")
    print(f"Opt-outs stored: {state.rows:,} (newest {state.newest_opt_out or '-'})")
    print(f"Last sync: {ago(state.last_sync_at)}; last full sync: {ago(state.full_sync_at)}")
    if state.full_sync_due is not None:
        due = state.full_sync_due
        when = "now (the next sync)" if due <= now else f"{due:%Y-%m-%d %H:%M} UTC (in {duration(due - now)})"
        print(f"Next full sync (the backstop): {when}")
    if state.counts_untrusted:
        print(f"The API's counts are not used: {state.counts_untrusted} (`ccoptout-xl cache clear` tries again).")
    print(f"Changes recorded: {state.events:,} (see `ccoptout-xl changes --since DATE`)")
    print(f"API calls today (UTC): {state.calls_today:,}")
    return 0


def run_cache_clear(args: argparse.Namespace) -> int:
    rows = service.clear_cache(on_notice=_notice)
    print(f"Cleared the local store ({plural(rows, 'opt-out')}); the next query makes a full sync.")
    return 0


def run_workbook(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    if dest.suffix.lower() != ".xlsm":
        raise UsageError(f"The workbook has macros: name the file with .xlsm, not {dest.name!r}.")
    check_output_folder(str(dest))
    copy = service.write_workbook(dest)
    print(f"Wrote {copy.path.resolve()}, set up for {copy.python}.")
    for line in copy.setup.lines:  # what this computer's Excel needs to start Python (the service checks)
        if copy.setup.ready:
            print(line)
        else:
            _notice(line)
    print("Open it in Excel (unblock it first if Windows blocks its macros), then Opt-outs tab > Sign in, Refresh.")
    return 0


def run_login(args: argparse.Namespace) -> int:
    import webbrowser

    opener = None if args.no_open else webbrowser.open
    kept_in, name = service.sign_in(browser=args.browser, opener=opener)
    print(f"Signed in. The sign-in is kept in {kept_in}.")
    if name:
        print(f"Account: {name}")
    return 0


def run_logout(args: argparse.Namespace) -> int:
    removed, kept_in = service.sign_out()
    print(f"Signed out; removed the sign-in from {kept_in}." if removed else "Not signed in: nothing to remove.")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """What is known without calling the token endpoint: a renewal is never started from here."""
    status = service.sign_in_status()
    if status.app is None:
        print(f"App: not set up (set CCOPTOUT_CLIENT_ID or edit {service.config_file()}).")
        print("Signed in: no")
        return 0
    app, tokens = status.app, status.tokens
    print(f"App: {app.client_id} ({'confidential' if app.confidential else 'public'}), sign-in server {app.auth_url}")
    print(f"Sign-in kept in: {status.kept_in}")
    if tokens is None:
        print("Signed in: no (run `ccoptout-xl login`)")
        return 0
    now = dt.datetime.now(dt.timezone.utc)
    if tokens.expires_at is None:
        expiry = "unknown"
    elif tokens.expires_at > now:
        expiry = f"{tokens.expires_at:%Y-%m-%d %H:%M} UTC (in {duration(tokens.expires_at - now)})"
    else:
        expiry = f"expired at {tokens.expires_at:%Y-%m-%d %H:%M} UTC; renewed on next use"
    print("Signed in: yes" + ("" if tokens.refresh_token else " (no refresh token: sign in again when it expires)"))
    print(f"Access token expires: {expiry}")
    if tokens.expires_at is None or tokens.expires_at > now:
        print(f"Account: {status.account_name or '(could not be read)'}")
    return 0


def _query_text(args: argparse.Namespace) -> str:
    """The query options as the user gave them, for the report's About sheet."""
    if args.command == "demo":
        return "ccoptout-xl demo (the last 90 days of the built-in sandbox account)"
    parts = []
    for option in ("since", "until", "latest", "tz"):
        value = getattr(args, option, None)
        if value is not None:
            parts.append(f"--{option} {shlex.quote(str(value))}")
    if args.include_deleted:
        parts.append("--include-deleted")
    if args.dayfirst:
        parts.append("--dayfirst")
    if args.demo:
        parts.append("--demo")
    return " ".join(parts) or "(all opt-outs)"


def check_output_folder(path: str | None) -> None:
    """Fail before any API call if the output file's folder does not exist."""
    if path:
        require_folder(path)


def run_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import AccountSpec, Sandbox, SettingError, check_server_settings

    rate_limit = args.rate_limit or None  # 0: no limit
    try:  # every setting, before an account is generated or a port is bound
        spec = AccountSpec(contacts=args.contacts, seed=args.seed)
        check_server_settings(args.port, rate_limit, args.daily_quota, args.latency)
    except SettingError as exc:
        no_limit = " (0: no limit)" if exc.setting == "rate_limit" else ""
        raise UsageError(f"--{exc.setting.replace('_', '-')} {exc.requirement}{no_limit}, not {exc.shown}.") from None
    print(f"Preparing a sandbox account of {args.contacts:,} contacts (seed {args.seed})...", file=sys.stderr)
    sandbox = Sandbox(spec, port=args.port, rate_limit=rate_limit, daily_quota=args.daily_quota, latency=args.latency)
    sandbox.listing = args.listing
    try:
        sandbox.start()
    except OSError as exc:
        raise UsageError(
            f"Cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}; try another --port."
        ) from None
    print(f"Sandbox API: {sandbox.base_url}")
    print(f"Token:       {sandbox.token}")
    print(f"Sign-in:     {sandbox.auth_url} (client id {sandbox.oauth.client_id}; approve in the browser page)")
    print(
        f"Try:  CCOPTOUT_API_URL={sandbox.base_url} CCOPTOUT_ACCESS_TOKEN={sandbox.token} ccoptout-xl fetch --latest 20"
    )
    print("Press Ctrl+C to stop.", file=sys.stderr, flush=True)
    try:
        sandbox.wait()
    finally:
        sandbox.stop()
    return 0


def _notice(message: str) -> None:
    _tell(f"note: {message}")


def _tell(message: str) -> None:
    """A line on stderr, which may be closed (then print() would fall back to stdout, into the output)."""
    if sys.stderr is not None:
        print(message, file=sys.stderr)


@contextlib.contextmanager
def _progress_bar(client: Any, stream: TextIO | None = None) -> Iterator[Any]:
    """A tqdm bar of contacts read (and pages) on a terminal; nothing when stderr is redirected."""
    stream = stream or sys.stderr
    if stream is None or not stream.isatty():  # None: stderr is closed
        yield None
        return
    from tqdm import tqdm

    # mininterval=0: updates come once a page (a few a second), so every one may be shown.
    with tqdm(file=stream, unit=" contacts", leave=False, dynamic_ncols=True, mininterval=0) as bar:

        def update(fetched: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            bar.set_postfix_str(f"{client.stats.pages} pages", refresh=False)
            bar.update(fetched - bar.n)

        yield update


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, systemd and Task Scheduler send): stopped like Ctrl-C, temporary files removed."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ccoptout-xl`` command; returns the exit code."""
    _tolerant_streams()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s")
    previous = _catch_sigterm()
    try:
        return args.run(args)
    except CcOptOutError as exc:
        _error(str(exc))
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other commands do
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        _error("stopped (SIGTERM)." if isinstance(exc, Terminated) else "interrupted.")
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:
        if args.debug:
            raise
        # Only the type: an exception's text may hold a request header, a token or a person's address.
        _error(f"unexpected error ({type(exc).__name__}). Run again with --debug for details.")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _error(message: str) -> None:
    """One line on stderr (which may be closed, or unable to encode the message)."""
    if sys.stderr is None:  # closed: print() would fall back to stdout, into the output
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(f"ccoptout-xl: {message}", file=sys.stderr, flush=True)


def _catch_sigterm() -> Any:
    """Turn SIGTERM into :class:`Terminated` (main thread only); return the handler to restore."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return None
    return signal.signal(signal.SIGTERM, _terminate)


def _tolerant_streams() -> None:
    """Text that the console's encoding cannot show (cp1252, a non-UTF-8 locale) is replaced, not an error."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure") and not writes_utf8(stream):
            with contextlib.suppress(OSError, ValueError):
                stream.reconfigure(errors="replace")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
