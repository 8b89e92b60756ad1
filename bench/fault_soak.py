"""Fault soak: the real client against a sandbox that fails ~5% of its answers, compared row by row with the truth.

Not a unit test: about 10,000 requests over real HTTP on 127.0.0.1, a few minutes. The sandbox runs in this process
with its rate limit raised (the soak is about faults, not the 4 requests/second pacing) and these faults, on about
5% of the API requests, drawn from seeded random streams:

* HTTP 500 and 503 answers, a dropped connection, a body cut short of its Content-Length, an answer slower than
  the client's read timeout, a slow answer within it, a malformed JSON body, and bursts of three 429 throttled;
* at fixed request numbers, an invalidation of every live access token in the middle of the scans: each worker's
  next request gets a 401 and the client must renew the sign-in through the sandbox's OAuth server (a
  ``SignedInTokens`` with a ``TokenFile``, rotating refresh tokens, one refresh lock shared by the workers).

Several workers (threads, each with its own client and token provider, as separate processes would have) run a
mix of queries with ``from_api`` (full reads, deleted contacts included or not, since-dates, since/until
windows, latest N) and store syncs (``OptOutStore.sync``, full and incremental, then read back). Between rounds the
account changes (new opt-outs, re-subscriptions, deletions, back-dated opt-outs), so incremental syncs have work to
do, and must find it: every sync leaves the store equal to the account. Every result
is compared with the sandbox's ground truth (its account's own data): rows lost, duplicated, extra, or altered.

Afterwards, without faults, one scripted case: a client idle while the access tokens are invalidated twice, another
client renewing the sign-in in between, makes its next call.

A query that fails (the client does not retry a malformed JSON body: exit code 3, by design) is counted and run
again, as a person would run the command again; it is the final answer that is compared with the truth.

The client paces itself at a raised rate and uses a small ``RetryPolicy.base_delay`` (20 ms instead of 500 ms) so
backoff does not dominate the wall time; its wait after a 429 is the client's own (at least 1 s).

    python bench/fault_soak.py --write docs/reliability.md
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import itertools
import os
import platform
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccoptout_xl.auth import SignedInTokens
from ccoptout_xl.client import Client
from ccoptout_xl.config import OAuthApp
from ccoptout_xl.credentials import TokenFile, Tokens
from ccoptout_xl.exceptions import CcOptOutError
from ccoptout_xl.http_client import HTTPClient, RetryPolicy
from ccoptout_xl.optouts import OptOut
from ccoptout_xl.query import OptOutQuery, from_api
from ccoptout_xl.sandbox import AccountSpec, Fault, Sandbox
from ccoptout_xl.store import OptOutStore

SECTION = "## Fault soak"
TITLE = "# Reliability"
COMMAND = "python bench/fault_soak.py --write docs/reliability.md"
READ_TIMEOUT = 2.0  # seconds: the client's read timeout in the soak (60 s by default)
# (kind, share of all API requests, extra settings): about 5% in all, every kind the sandbox has.
FAULT_MIX: list[tuple[str, float, dict[str, Any]]] = [
    ("500", 0.008, {}),
    ("503", 0.008, {}),
    ("drop", 0.008, {}),
    ("truncated", 0.006, {}),
    ("slow", 0.004, {"delay": READ_TIMEOUT + 1.0}),  # past the read timeout: the client gives up and retries
    ("slow", 0.004, {"delay": 0.25}),  # within it: just late
    ("malformed", 0.004, {}),
    ("429", 0.003, {"burst": 3}),  # bursts of three: about 0.9% of requests
]
ATTEMPTS = 6  # runs of one query before the soak gives up on it


@dataclass
class Tally:
    """What the workers saw, added up under a lock."""

    queries: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)  # attempts that raised, by type
    given_up: int = 0  # queries that failed ATTEMPTS times
    rows_expected: int = 0
    rows_returned: int = 0
    lost: int = 0
    duplicated: int = 0
    extra: int = 0
    altered: int = 0
    out_of_order: int = 0
    lagging: int = 0  # stale store rows of contacts changed after the sync started (the next sync sees them)
    retries: int = 0
    throttled: int = 0
    calls: int = 0
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def example(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)


class Truth:
    """The account's opt-outs as the sandbox holds them (not over HTTP), newest first."""

    def __init__(self, sandbox: Sandbox) -> None:
        found = [o for o in map(OptOut.from_contact, sandbox.account.contacts()) if o is not None]
        self.all = sorted(found, key=lambda o: (-o.opt_out_date.timestamp(), o.contact_id))

    def answer(self, query: OptOutQuery) -> list[OptOut]:
        rows = [o for o in self.all if query.matches(o)]
        return rows if query.latest is None else rows[: query.latest]


def compare(
    query: OptOutQuery, got: list[OptOut], truth: Truth, tally: Tally, label: str, lagging: frozenset[str] = frozenset()
) -> None:
    """Count rows lost, duplicated, extra and altered in ``got`` against the truth.

    ``lagging``: contacts changed after the store's last sync started: that sync could not see them, so their stale
    rows are counted apart, not as errors.
    """
    expected = truth.answer(query)
    want = {o.contact_id: o for o in expected}
    ids = [o.contact_id for o in got]
    seen = collections.Counter(ids)
    duplicated = sum(n - 1 for n in seen.values())
    extra = [i for i in seen if i not in want]
    lost = [i for i in want if i not in seen]
    if query.latest is not None and len(expected) == query.latest and expected:
        # Latest N: at the boundary, opt-outs of the same instant as the Nth are interchangeable.
        edge = expected[-1].opt_out_date
        by_id = {o.contact_id: o for o in truth.all}
        swapped = [i for i in extra if i in by_id and by_id[i].opt_out_date == edge and query.matches(by_id[i])]
        extra = [i for i in extra if i not in swapped]
        lost = [i for i in lost if want[i].opt_out_date != edge] if swapped else lost
    altered = [o.contact_id for o in got if o.contact_id in want and o != want[o.contact_id]]
    lag = [i for i in extra if i in lagging] + [i for i in altered if i in lagging]
    extra = [i for i in extra if i not in lagging]
    altered = [i for i in altered if i not in lagging]
    dates = [o.opt_out_date for o in got]
    out_of_order = sum(1 for a, b in itertools.pairwise(dates) if a < b)
    with tally.lock:
        tally.queries[label] += 1
        tally.rows_expected += len(expected)
        tally.rows_returned += len(got)
        tally.lost += len(lost)
        tally.duplicated += duplicated
        tally.extra += len(extra)
        tally.altered += len(altered)
        tally.out_of_order += out_of_order
        tally.lagging += len(lag)
        if lost or duplicated or extra or altered or out_of_order:
            tally.example(
                f"{label} {query}: {len(lost)} lost, {duplicated} duplicated, {len(extra)} extra, "
                f"{len(altered)} altered, {out_of_order} out of order (e.g. lost {lost[:3]}, extra {extra[:3]})"
            )


class Worker(threading.Thread):
    """One client (and token provider) running random queries until told to stop."""

    def __init__(self, number: int, soak: Soak) -> None:
        super().__init__(name=f"soak-worker-{number}", daemon=True)
        self.soak = soak
        self.rng = random.Random(f"soak:{soak.args.seed}:{number}")
        provider = SignedInTokens(soak.app, soak.token_keeper, lock_path=soak.folder / "refresh.lock")
        http = HTTPClient(
            soak.sandbox.base_url,
            provider,
            rate=soak.args.client_rate,
            retry=RetryPolicy(attempts=6, throttled_attempts=8, base_delay=0.02, max_delay=0.5),
            timeout=(5.0, READ_TIMEOUT),
        )
        self.client = Client(http)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.soak.round_over():
                self.one()
        except BaseException as exc:  # a bug of the soak itself: stop everything and say so
            self.error = exc
            self.soak.stop.set()
        finally:
            with self.soak.tally.lock:
                stats = self.client.stats
                self.soak.tally.retries += stats.retries
                self.soak.tally.throttled += stats.throttled
                self.soak.tally.calls += stats.calls
                stats.retries = stats.throttled = stats.calls = 0

    def one(self) -> None:
        pick = self.rng.random()
        now = dt.datetime.now(dt.timezone.utc)
        if pick < 0.18:
            label, query = "store sync", None
        elif pick < 0.36:
            label, query = "full read", OptOutQuery(include_deleted=self.rng.random() < 0.5)
        elif pick < 0.60:
            since = now - dt.timedelta(days=self.rng.uniform(0.5, 500))
            label, query = "since", OptOutQuery(since=since)
        elif pick < 0.70:
            since = now - dt.timedelta(days=self.rng.uniform(30, 900))
            until = since + dt.timedelta(days=self.rng.uniform(1, 200))
            label, query = "since/until", OptOutQuery(since=since, until=until)
        else:
            latest = self.rng.choice([1, 10, 50, 200, 500, 501, 1_000, 2_500])
            since = now - dt.timedelta(days=self.rng.uniform(10, 700)) if self.rng.random() < 0.3 else None
            label, query = "latest N", OptOutQuery(latest=latest, since=since)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if query is None:
                    self.sync_and_check(full=self.rng.random() < 0.3)
                else:
                    result = from_api(self.client, query, on_notice=lambda text: None)
                    try:
                        got = list(result)
                    finally:
                        result.close()
                    compare(query, got, self.soak.truth, self.soak.tally, label)
                return
            except CcOptOutError as exc:
                with self.soak.tally.lock:
                    self.soak.tally.failures[type(exc).__name__] += 1
                    if attempt == ATTEMPTS:
                        self.soak.tally.given_up += 1
                        self.soak.tally.example(f"{label} {query} gave up: {type(exc).__name__}: {exc}")

    def sync_and_check(self, full: bool) -> None:
        with OptOutStore.for_client(self.client, on_notice=lambda text: None) as store:
            store.sync(self.client, full=full, daily_quota=10**9, quota_share=1.0)
            synced_at = store.state().last_sync_at
            query = OptOutQuery(include_deleted=True)
            result = store.query(query)
            try:
                got = list(result)
            finally:
                result.close()
        lagging = frozenset(i for at, i in self.soak.changes if synced_at is None or at > synced_at)
        compare(query, got, self.soak.truth, self.soak.tally, "store sync", lagging)


class Soak:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.tally = Tally()
        self.stop = threading.Event()
        spec = AccountSpec(contacts=args.contacts, seed=args.seed)
        self.sandbox = Sandbox(spec, rate_limit=args.server_rate, daily_quota=None)
        self.truth: Truth
        self.target = 0  # API requests after which the current round ends
        self.changes: list[tuple[dt.datetime, str]] = []  # (when, contact id) of re-subscriptions and deletions
        self.deadline = 0.0

    def round_over(self) -> bool:
        return self.stop.is_set() or len(self.sandbox.requests) >= self.target or time.monotonic() > self.deadline

    def run(self) -> dict[str, Any]:
        args = self.args
        with self.sandbox as sandbox:
            self.token_keeper = TokenFile(self.folder / "tokens.json")
            self.token_keeper.save(Tokens.from_response(sandbox.oauth.issue()))  # as `ccoptout-xl login` leaves it
            self.app = OAuthApp(client_id=sandbox.oauth.client_id, auth_url=sandbox.auth_url)
            per_round = args.requests // args.rounds
            for number in range(1, args.invalidations + 1):  # spread over the run, never on a round's edge
                at = int(args.requests * (number - 0.5) / args.invalidations)  # first: the first fault that fires wins
                sandbox.faults.add(Fault(kind="invalidate", at_request=at, path_prefix="/v3/"))
            for index, (kind, rate, extra) in enumerate(FAULT_MIX):
                sandbox.faults.add(
                    Fault(kind=kind, rate=rate, seed=args.seed * 100 + index, path_prefix="/v3/", **extra)
                )
            started = time.monotonic()
            self.deadline = started + args.max_seconds
            rng = random.Random(f"soak:{args.seed}:changes")
            for round_number in range(args.rounds):
                if round_number:
                    self.change_account(rng)
                self.truth = Truth(sandbox)
                self.target = per_round * (round_number + 1)
                workers = [Worker(n, self) for n in range(args.workers)]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
                errors = [w.error for w in workers if w.error is not None]
                if errors:
                    raise RuntimeError(f"a soak worker failed: {errors[0]!r}") from errors[0]
                print(
                    f"round {round_number + 1}/{args.rounds}: {len(sandbox.requests):,} requests, "
                    f"{sum(self.tally.queries.values()):,} queries, {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                )
                if self.stop.is_set() or time.monotonic() > self.deadline:
                    break
            wall = time.monotonic() - started
            log = sandbox.requests.snapshot()
            fired = sandbox.faults.fired()
            figures = {
                "wall": wall,
                "api_requests": sum(1 for r in log if r.path.startswith("/v3/")),
                "oauth_requests": sum(1 for r in log if not r.path.startswith("/v3/")),
                "statuses": collections.Counter(r.status for r in log if r.path.startswith("/v3/")),
                "fired": fired,
                "renewals": sum(1 for r in sandbox.oauth.token_requests if r.grant_type == "refresh_token"),
                "renewals_refused": sum(
                    1 for r in sandbox.oauth.token_requests if r.grant_type == "refresh_token" and r.status != 200
                ),
                "optouts": len(self.truth.all),
                "stores": len(list((self.folder / "cache").glob("optouts-*.sqlite3"))),  # one account: one store
                "finished": not self.stop.is_set() and wall <= args.max_seconds,
            }
            figures["idle"] = self.idle_client()
            return figures

    def idle_client(self) -> str:
        """After the soak, without faults: a client that sat idle while the access tokens were invalidated twice
        (another client renewing the sign-in in between) makes its next call. What happens to it?"""
        self.sandbox.faults.clear()
        active, idle = Worker(-1, self).client, Worker(-2, self).client
        active.contact_counts()
        idle.contact_counts()
        self.sandbox.oauth.invalidate_access_tokens()
        active.contact_counts()  # a 401, a renewal: the stored sign-in now holds a new access token...
        self.sandbox.oauth.invalidate_access_tokens()  # ...which is invalidated in turn
        try:
            idle.contact_counts()
        except CcOptOutError as exc:
            second = "answered" if self._again(idle) else "failed again"
            return f"failed: {type(exc).__name__} (exit code {exc.exit_code}); run again, it {second}"
        return "answered"

    @staticmethod
    def _again(client: Client) -> bool:
        try:
            client.contact_counts()
        except CcOptOutError:
            return False
        return True

    def change_account(self, rng: random.Random) -> None:
        """Between rounds, while no worker runs: new opt-outs, re-subscriptions, deletions, back-dated opt-outs."""
        account = self.sandbox.account
        account.opt_out(count=40, at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=2))
        picked = rng.sample([o.contact_id for o in Truth(self.sandbox).all if not o.deleted], 10)
        when = dt.datetime.now(dt.timezone.utc)
        account.resubscribe(picked[:5])
        account.delete(picked[5:])  # they keep their opt-out data: seen only with deleted contacts included
        old = when - dt.timedelta(days=rng.uniform(30, 300))  # opt-outs that arrive now with an old date
        backdated = account.pick("active", 3, rng, created_by=old)
        account.opt_out(contact_ids=backdated, at=old, backdated=True)
        self.changes += [(when, contact_id) for contact_id in [*picked, *backdated]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="API requests to make (default 10,000)")
    parser.add_argument("--contacts", type=int, default=20_000, help="contacts in the sandbox account")
    parser.add_argument("--workers", type=int, default=6, help="concurrent clients (threads)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds; the account changes between them")
    parser.add_argument("--invalidations", type=int, default=4, help="access-token invalidations during the run")
    parser.add_argument("--server-rate", type=float, default=1_000.0, help="the sandbox's requests/second limit")
    parser.add_argument("--client-rate", type=float, default=100.0, help="each client's pacing, requests/second")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop starting queries after this")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", metavar="MARKDOWN", help="replace the '## Fault soak' section of this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ccoptout-soak-") as temporary:
        folder = Path(temporary)
        os.environ["CCOPTOUT_CONFIG_DIR"] = str(folder / "config")  # nothing of the user's is read or written
        os.environ["CCOPTOUT_CACHE_DIR"] = str(folder / "cache")
        soak = Soak(args, folder)
        figures = soak.run()
    section = render(args, figures, soak.tally)
    print(section)
    if soak.tally.examples:
        print("\n".join(soak.tally.examples), file=sys.stderr)
    if args.write:
        write_section(Path(args.write), section)


def render(args: argparse.Namespace, figures: dict[str, Any], tally: Tally) -> str:
    fired = figures["fired"]
    kinds = [
        ("HTTP 500", fired.get("500", 0)),
        ("HTTP 503", fired.get("503", 0)),
        ("dropped connection", fired.get("drop", 0)),
        ("truncated body", fired.get("truncated", 0)),
        ("slow answer (past the read timeout, or within it)", fired.get("slow", 0)),
        ("malformed JSON", fired.get("malformed", 0)),
        ("429 throttled (bursts of 3)", fired.get("429", 0)),
        ("access tokens invalidated (401)", fired.get("invalidate", 0)),
    ]
    injected = sum(count for _, count in kinds)
    failures = ", ".join(f"{name} {count:,}" for name, count in sorted(tally.failures.items())) or "none"
    queries = ", ".join(f"{label} {count:,}" for label, count in sorted(tally.queries.items()))
    api = figures["api_requests"]
    lines = [
        SECTION,
        "",
        f"Measured {dt.date.today()} on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, with `bench/fault_soak.py` (see its docstring). {args.workers} clients "
        f"(threads, each with its own token provider) against an in-process sandbox over HTTP on 127.0.0.1: "
        f"{args.contacts:,} contacts, {figures['optouts']:,} opt-outs at the end (deleted contacts included), "
        f"changed between {args.rounds} rounds (40 new opt-outs, 5 re-subscriptions, 5 deletions, 3 back-dated "
        "opt-outs each time). "
        f"For the soak the sandbox's rate limit is raised to {args.server_rate:,.0f} requests/second and each "
        f"client paces itself at {args.client_rate:,.0f}/second instead of 4, with `RetryPolicy(base_delay=0.02, "
        f"max_delay=0.5)` instead of 0.5 s and 20 s, and a {READ_TIMEOUT:g} s read timeout, so that backoff does not "
        "dominate the wall time; a 429 still costs the client's own wait of at least 1 s. Every result is compared "
        "with the sandbox account's own data. Command:",
        "",
        f"    {COMMAND}",
        "",
        "| what | figure |",
        "|---|---:|",
        f"| API requests | {api:,} |",
        f"| faults injected | {injected:,} ({injected / max(api, 1):.1%} of requests) |",
    ]
    lines += [f"| - {name} | {count:,} |" for name, count in kinds]
    lines += [
        f"| client retries (5xx, dropped, truncated, timed out, 429) | {tally.retries:,} |",
        f"| API answers 401 (tokens found dead: the invalidated request and each client's next) | "
        f"{figures['statuses'][401]:,} |",
        f"| sign-in renewals through the OAuth server (refused) | {figures['renewals']:,} "
        f"({figures['renewals_refused']:,}) |",
        f"| local store files (one account: should be 1) | {figures['stores']:,} |",
        f"| queries and syncs checked | {sum(tally.queries.values()):,} |",
        f"| attempts that failed and were run again | {sum(tally.failures.values()):,} |",
        f"| queries given up after {ATTEMPTS} attempts | {tally.given_up:,} |",
        f"| rows compared | {tally.rows_expected:,} |",
        f"| **rows lost** | **{tally.lost:,}** |",
        f"| **rows duplicated** | **{tally.duplicated:,}** |",
        f"| rows not in the truth / with a wrong field / out of order | {tally.extra:,} / {tally.altered:,} / "
        f"{tally.out_of_order:,} |",
        f"| stale store rows of contacts changed while their sync ran (see below) | {tally.lagging:,} |",
        f"| wall time | {figures['wall']:.0f} s |",
        f"| afterwards: a client idle across two invalidations, the other renewing in between | {figures['idle']} |",
        "",
        f"Queries: {queries}. Attempts that failed, by error: {failures}. A failed attempt is what the command line "
        "reports as exit code 3 (a malformed JSON body is not retried, by design: the README's exit codes) or 4; the "
        "soak runs the query again, as a person would, and compares the final answer. Every sync, incremental ones "
        "included, must leave the store equal to the account (re-subscriptions and deletions are found by comparing "
        "counts); only contacts changed after a sync started are counted apart, and any other difference is an "
        "error.",
    ]
    if figures["idle"] != "answered":
        lines += [
            "",
            "The last row is a defect of `SignedInTokens.refresh` (`ccoptout_xl/auth.py`), not fixed here: told that "
            "its access token was refused, a client is handed the stored one whenever it differs from the refused "
            "one, without any sign that the API still accepts it; the HTTP client retries a 401 only once, so the "
            "call ends with exit code 4 although the stored refresh token still works (the next run renews).",
        ]
    if not figures["finished"]:
        lines += [
            "",
            f"The run stopped at its time limit ({args.max_seconds:.0f} s) before {args.requests:,} requests.",
        ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace this soak's section of ``path`` (from its heading to the next '## '), or add it; keep the rest."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"{TITLE}\n"
    if SECTION in text.splitlines():
        start = text.index(f"{SECTION}\n") if text.startswith(f"{SECTION}\n") else text.index(f"\n{SECTION}\n") + 1
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + ("\n" + text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
