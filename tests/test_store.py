"""The local opt-out store: repeat queries without calls, incremental and full syncs, robustness, quota guard."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccoptout_xl.cli import main
from ccoptout_xl.exceptions import QuotaGuard
from ccoptout_xl.optouts import OptOut
from ccoptout_xl.query import OptOutQuery
from ccoptout_xl.sandbox import AccountSpec, Sandbox
from ccoptout_xl.service import get_optouts
from ccoptout_xl.store import OptOutStore

from .conftest import ANCHOR, make_client, sandbox_as_api, truth


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """1,200 opt-outs (3 pages), and a cache folder of this test's own."""
    spec = AccountSpec(contacts=2_000, seed=6, unsubscribed_share=0.6, anchor=ANCHOR)
    with sandbox_as_api(spec, monkeypatch, tmp_path / "cache") as sb:
        yield sb


def ids(optouts) -> list[str]:
    return [o.contact_id for o in optouts]


def api_calls(sandbox: Sandbox) -> int:
    return sum(r.path.startswith("/v3/") for r in sandbox.requests)


def stored_ids(sandbox: Sandbox, **query) -> list[str]:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as store:
        return ids(store.query(OptOutQuery(**query)))


def test_a_repeat_query_within_the_freshness_window_makes_no_call(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    query = OptOutQuery(since=ANCHOR - dt.timedelta(days=400), latest=50)
    first = get_optouts(client, query)
    assert ids(first) == ids([o for o in truth(sandbox) if o.opt_out_date >= query.since][:50])
    assert first.calls == 3  # the full sync: three pages
    sandbox.reset_log()
    for since_days in (400, 30, 3_000):
        again = get_optouts(client, OptOutQuery(since=ANCHOR - dt.timedelta(days=since_days)))
        assert ids(again) == ids(
            [o for o in truth(sandbox) if o.opt_out_date >= ANCHOR - dt.timedelta(days=since_days)]
        )
        assert again.calls == 0
    assert api_calls(sandbox) == 0
    deleted = get_optouts(client, OptOutQuery(include_deleted=True))
    assert ids(deleted) == ids(truth(sandbox, include_deleted=True)) and api_calls(sandbox) == 0


def test_incremental_sync_picks_up_new_optouts_in_a_handful_of_calls(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as store:
        assert store.sync(client).kind == "full"
        sandbox.reset_log()
        new = sandbox.account.opt_out(count=25)
        report = store.sync(client)
        assert report.kind == "incremental" and report.calls <= 2
        sent = [r.query for r in sandbox.requests if r.path == "/v3/contacts"]
        assert sent and all("optout_after" in q or "cursor" in q for q in sent)
        assert set(new) <= set(ids(store.query(OptOutQuery())))
    assert stored_ids(sandbox) == ids(truth(sandbox))


def test_a_resubscribed_contact_leaves_the_store_at_the_next_incremental_sync(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    gone = ids(truth(sandbox))[-3:]  # the oldest: far behind what an incremental read covers
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        sandbox.account.resubscribe(gone)
        report = store.sync(client)  # the counts differ; on 3 pages, reading them all is the cheapest repair
        assert report.kind == "full" and report.counted and report.changes == 3
        assert not set(gone) & set(ids(store.query(OptOutQuery())))
        assert {(c.contact_id, c.event) for c in store.changes(store.last_sync_at)} == {
            (contact, "resubscribed") for contact in gone
        }
    assert stored_ids(sandbox) == ids(truth(sandbox))


def test_a_killed_sync_leaves_the_previous_snapshot_readable_and_complete(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
    before = stored_ids(sandbox, include_deleted=True)
    sandbox.account.opt_out(count=40)  # a completed sync would store these
    sandbox.latency = 0.5  # three pages take 1.5 s: time to kill it midway
    sync = subprocess.Popen([sys.executable, "-m", "ccoptout_xl", "sync", "--full"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not any(r.path == "/v3/contacts" for r in sandbox.requests[-5:]) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.7)  # inside the second page
    sync.send_signal(signal.SIGKILL)
    sync.wait(timeout=30)
    assert sync.returncode == -signal.SIGKILL
    sandbox.latency = 0.0
    assert stored_ids(sandbox, include_deleted=True) == before  # the old snapshot, whole
    with OptOutStore.for_client(client) as store:
        assert store.sync(client, full=True).kind == "full"  # and the lock died with the process
    assert stored_ids(sandbox) == ids(truth(sandbox))


def test_two_syncs_at_once_call_the_api_once(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
    sandbox.latency = 0.2
    sandbox.reset_log()
    start_at = time.time() + 2.0
    script = (
        f"import time; time.sleep(max(0.0, {start_at} - time.time())); "
        "from ccoptout_xl.cli import main; raise SystemExit(main(['sync']))"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert sorted("Already up to date" in out for out in outputs) == [False, True]
    contact_requests = [r for r in sandbox.requests if r.path == "/v3/contacts"]
    assert len(contact_requests) == 2  # one incremental sync: one page, one count


def test_a_corrupt_store_is_moved_aside_and_rebuilt(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as store:
        path = store.path
    path.write_bytes(b"this is not a database" * 100)
    notices: list[str] = []
    result = get_optouts(client, OptOutQuery(), on_notice=notices.append)
    assert ids(result) == ids(truth(sandbox))
    assert len(notices) == 1 and "could not be read" in notices[0] and "moved to" in notices[0]
    aside = [p for p in path.parent.iterdir() if ".damaged-" in p.name]
    assert aside and aside[0].read_bytes().startswith(b"this is not a database")


def test_an_older_layout_is_rebuilt(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        path = store.path
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    notices: list[str] = []
    with OptOutStore(path, on_notice=notices.append) as store:
        assert store.state().rows == 0 and store.state().last_sync_at is None
        assert store.sync(client).kind == "full"
    assert notices and "older layout" in notices[0]


def test_the_quota_guard_stops_syncs_near_the_daily_quota(sandbox: Sandbox, capsys) -> None:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        store.record_calls(7)
        assert store.calls_today() == 10  # 3 from the sync, 7 recorded
        sandbox.reset_log()
        with pytest.raises(QuotaGuard, match="10 of today's 12 API calls are used"):
            store.sync(client, daily_quota=12, quota_share=0.8)
        assert api_calls(sandbox) == 0
        assert store.sync(client, daily_quota=12, quota_share=0.8, force=True).kind == "incremental"
    os.environ["CCOPTOUT_DAILY_QUOTA"] = "12"
    try:
        assert main(["sync"]) == 5
        assert "--force" in capsys.readouterr().err
        # A stale store past the guard still answers, from what it holds, after saying so.
        assert main(["fetch", "--max-age", "1", "--latest", "2", "--format", "json"]) == 0
    finally:
        del os.environ["CCOPTOUT_DAILY_QUOTA"]


def test_cache_commands_and_bypassing_the_store(sandbox: Sandbox, capsys, tmp_path: Path) -> None:
    assert main(["fetch", "--no-cache", "--latest", "1"]) == 0
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("optouts-*.sqlite3"))
    assert main(["sync"]) == 0
    assert "Full sync: " in capsys.readouterr().out
    assert main(["cache", "status"]) == 0
    out = capsys.readouterr().out
    assert (
        f"Opt-outs stored: {len(truth(sandbox, include_deleted=True)):,}" in out and "API calls today (UTC): 3" in out
    )
    sandbox.reset_log()
    assert main(["fetch", "--refresh", "--latest", "1"]) == 0
    assert api_calls(sandbox) >= 1  # --refresh syncs however fresh
    assert main(["cache", "clear"]) == 0
    assert "Cleared" in capsys.readouterr().out
    with OptOutStore.for_client(make_client(sandbox)) as store:
        assert store.state().rows == 0


def test_stored_optouts_are_the_same_records(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    get_optouts(client, OptOutQuery()).close()
    stored = list(get_optouts(client, OptOutQuery(include_deleted=True)))
    expected: list[OptOut] = truth(sandbox, include_deleted=True)
    assert [(o.contact_id, o.opt_out_date, o.opt_out_reason, o.list_ids, o.deleted) for o in stored] == [
        (o.contact_id, o.opt_out_date, o.opt_out_reason, o.list_ids, o.deleted) for o in expected
    ]


def test_an_optout_dated_in_the_future_does_not_hide_later_ones(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        sandbox.account.opt_out(count=1, at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2))  # a clock error
        store.sync(client)
        later = sandbox.account.opt_out(count=5, at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=2))
        assert store.sync(client).kind == "incremental"
        assert set(later) <= set(ids(store.query(OptOutQuery())))


def test_processes_creating_a_new_store_at_once_wait_for_each_other(tmp_path: Path) -> None:
    # Twelve processes opening a store that does not exist yet: one creates it, the others wait while it is
    # busy (locked is not corrupt), and nothing is moved aside.
    path = tmp_path / "new.sqlite3"
    script = (
        "import sys, time; from ccoptout_xl.store import OptOutStore; "
        f"time.sleep(max(0.0, {time.time() + 1.5} - time.time())); "
        f"store = OptOutStore(__import__('pathlib').Path({str(path)!r}), on_notice=lambda t: sys.exit('moved: ' + t)); "
        "print(store.state().rows)"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(12)]  # fmt: skip
    results = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0] * 12, [err for _, err in results]
    assert [out.strip() for out, _ in results] == ["0"] * 12
    assert not [p for p in tmp_path.iterdir() if ".damaged-" in p.name]


def test_clear_works_on_a_store_damaged_inside(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        path = store.path
    with open(path, "r+b") as handle:  # damage the middle of the file, not its header
        handle.seek(8_192)
        handle.write(b"\xff" * 8_192)
    with OptOutStore(path) as store:
        store.clear()
        assert store.state().rows == 0
        assert store.sync(client).kind == "full"
    assert stored_ids(sandbox) == ids(truth(sandbox))


def test_a_layout_rebuild_keeps_todays_call_count(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        path, calls = store.path, store.calls_today()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with OptOutStore(path, on_notice=lambda text: None) as store:
        assert store.calls_today() == calls > 0


def test_every_api_call_counts_against_the_day_not_only_syncs(sandbox: Sandbox, tmp_path: Path) -> None:
    assert main(["report", "-o", str(tmp_path / "r.xlsx")]) == 0  # a full sync, then list names and account
    with OptOutStore.for_client(make_client(sandbox)) as store:
        assert store.calls_today() == api_calls(sandbox) == 5
    assert main(["fetch", "--no-cache", "--latest", "1"]) == 0
    assert main(["fetch", "--latest", "1"]) == 0  # fresh: no call, nothing to count
    with OptOutStore.for_client(make_client(sandbox)) as store:
        assert store.calls_today() == api_calls(sandbox) > 5
