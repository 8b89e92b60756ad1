"""The local store stays exact in a few calls: count reconciliation against the sandbox's ground truth.

Re-subscriptions, deletions and back-dated opt-outs are invisible to a read of new opt-outs; the sync finds them by
comparing the API's counts with the store's (``ccoptout_xl/reconcile.py``). These tests make such changes on a
sandbox account, sync over HTTP, and compare the store with ``Account.optouts_truth()``.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccoptout_xl.cli import main
from ccoptout_xl.query import OptOutQuery
from ccoptout_xl.sandbox import AccountSpec, Sandbox
from ccoptout_xl.store import OVERLAP, OptOutStore

from .conftest import ANCHOR, make_client, sandbox_as_api

MEDIUM = AccountSpec(contacts=60_000, seed=3, unsubscribed_share=0.4, anchor=ANCHOR)  # about 24,700 opt-outs
SMALL = AccountSpec(contacts=1_500, seed=8, unsubscribed_share=0.3, anchor=ANCHOR)  # about 450: one page


@pytest.fixture
def medium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with sandbox_as_api(MEDIUM, monkeypatch, tmp_path / "cache") as sb:
        yield sb


@pytest.fixture
def small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with sandbox_as_api(SMALL, monkeypatch, tmp_path / "cache") as sb:
        yield sb


def truth(sandbox: Sandbox) -> set[tuple[str, dt.datetime, bool]]:
    return {(f.contact_id, f.opt_out_date, f.deleted) for f in sandbox.account.optouts_truth()}


def stored(store: OptOutStore) -> set[tuple[str, dt.datetime, bool]]:
    return {
        (o.contact_id, o.opt_out_date.astimezone(dt.timezone.utc), o.deleted)
        for o in store.query(OptOutQuery(include_deleted=True))
    }


def issue_bound(changes: int, optouts: int) -> int:
    """The issue's target: at most 18 + k (ceil(log2(U / 500)) + 2) calls for k changes on U opt-outs."""
    return 18 + changes * (math.ceil(math.log2(optouts / 500)) + 2)


def old_changes(sandbox: Sandbox, rng: random.Random, resubscribe: int, delete: int, backdate: int) -> dict[str, str]:
    """Changes an incremental read cannot see (dated long before the newest opt-out); their contact ids."""
    account = sandbox.account
    done: dict[str, str] = {}
    cutoff = ANCHOR - dt.timedelta(days=60)
    facts = [f for f in account.optouts_truth(include_deleted=False) if f.opt_out_date < cutoff]
    chosen = rng.sample(facts, resubscribe + delete)
    for fact in chosen[:resubscribe]:
        account.resubscribe([fact.contact_id], at=ANCHOR)
        done[fact.contact_id] = "resubscribed"
    for fact in chosen[resubscribe:]:
        account.delete([fact.contact_id], at=ANCHOR)
        done[fact.contact_id] = "deleted"
    for _ in range(backdate):
        at = ANCHOR - dt.timedelta(days=rng.uniform(60, 900))
        (contact,) = account.pick("active", 1, rng, created_by=at)
        account.opt_out(contact_ids=[contact], at=at, backdated=True)
        done[contact] = "opted_out"
    return done


def test_an_unchanged_account_costs_two_calls(medium: Sandbox) -> None:
    client = make_client(medium)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        before = client.stats.calls
        report = store.sync(client)
        assert report.kind == "incremental" and report.counted and report.changes == 0
        assert client.stats.calls - before == report.calls == 2  # the newest page, one count
        assert stored(store) == truth(medium)


def test_resubscriptions_deletions_and_backdated_optouts_are_found_in_a_few_calls(medium: Sandbox) -> None:
    client = make_client(medium)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        rows = store.state().rows
        assert rows > 20_000
        changed = old_changes(medium, random.Random(11), resubscribe=1, delete=1, backdate=1)
        report = store.sync(client)
        assert report.kind == "incremental" and report.repaired == 3
        assert stored(store) == truth(medium)
        assert report.calls <= issue_bound(3, rows)
        learned = {(c.contact_id, c.event) for c in store.changes(store.last_sync_at)}
    expected = {(contact, event) for contact, event in changed.items()}
    deleted = next(contact for contact, event in changed.items() if event == "deleted")
    assert learned == expected, "a deletion is a 'deleted' event, not a re-subscription"
    assert (deleted, "resubscribed") not in learned


def test_four_changes_are_found_within_the_bound(medium: Sandbox) -> None:
    client = make_client(medium)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        rows = store.state().rows
        old_changes(medium, random.Random(5), resubscribe=2, delete=1, backdate=1)
        report = store.sync(client)
        assert stored(store) == truth(medium)
        assert report.kind == "incremental" and report.calls <= issue_bound(4, rows)


def test_many_changes_are_read_whole_for_no_more_than_a_full_read(medium: Sandbox) -> None:
    client = make_client(medium)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        full_read = math.ceil(store.state().rows / 500) + 1
        old_changes(medium, random.Random(3), resubscribe=150, delete=150, backdate=150)
        report = store.sync(client)
        assert report.kind == "full" and report.changes == 450
        # The newest page and two counts decided it; then everything once.
        assert report.calls <= 3 + full_read
        assert stored(store) == truth(medium)


def test_counts_that_contradict_the_rows_are_noticed_once_and_no_longer_used(medium: Sandbox) -> None:
    notices: list[str] = []
    client = make_client(medium)
    with OptOutStore.for_client(client, on_notice=notices.append) as store:
        store.sync(client)
        medium.counts_ignore_optout_filters = True  # counts leave the opt-out filters out
        old_changes(medium, random.Random(7), resubscribe=1, delete=0, backdate=0)
        report = store.sync(client)
        assert report.kind == "full" and stored(store) == truth(medium)
        assert len(notices) == 1 and "counts" in notices[0] and "do not match" in notices[0]
        assert store.state().counts_untrusted
        old_changes(medium, random.Random(8), resubscribe=0, delete=0, backdate=1)
        again = store.sync(client)
        assert again.kind == "incremental" and not again.counted and again.calls == 1  # the newest page only
        assert len(notices) == 1
    # What a user sees: why, and how to try counts again.
    assert main(["cache", "status"]) == 0


def test_the_backstop_full_sync_runs_when_due_unless_the_caller_must_answer_quickly(medium: Sandbox) -> None:
    client = make_client(medium)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        week = dt.timedelta(days=7)
        assert store.state().full_sync_due is not None
        later = store.sync(client, full_every=dt.timedelta(microseconds=1), backstop=False)
        assert later.kind == "incremental"
        due = store.sync(client, full_every=dt.timedelta(microseconds=1))
        assert due.kind == "full"
        state = store.state()
        assert state.full_sync_at is not None and state.full_sync_due == state.full_sync_at + week


def test_changes_that_cancel_out_in_the_first_count_wait_for_the_backstop(medium: Sandbox) -> None:
    """The one case no count can see: what the read misses adds up to nothing in the count of opted-out
    contacts. The sync costs what an unchanged account does, and the next full sync repairs the store."""
    client = make_client(medium)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        old_changes(medium, random.Random(5), resubscribe=1, delete=1, backdate=2)
        blind = store.sync(client)
        assert blind.kind == "incremental" and blind.calls == 2 and blind.changes == 0
        assert stored(store) != truth(medium)
        assert store.sync(client, full=True).changes == 4
        assert stored(store) == truth(medium)


def test_the_full_sync_interval_is_a_setting(small: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("CCOPTOUT_FULL_SYNC_DAYS", "2")
    assert main(["sync"]) == 0
    assert main(["cache", "status"]) == 0
    out = capsys.readouterr().out
    assert "Next full sync (the backstop)" in out and "(in 47 h" in out


# -- the property: random changes and syncs on a small account ---------------------------------------------------


KINDS = ("opt_out", "backdated", "resubscribe", "delete")


@pytest.mark.parametrize("seed", range(10))
def test_after_every_sync_the_store_equals_the_account(small: Sandbox, seed: int) -> None:
    """Random changes between syncs; after each sync the store equals the account, except in the one case no
    count can see (changes the read misses that cancel out in the count of opted-out contacts), which the next
    full sync repairs. Every change is recorded as the event it was."""
    rng = random.Random(seed)
    account = small.account
    client = make_client(small)
    with OptOutStore.for_client(client) as store:
        store.sync(client)
        for _ in range(10):
            state = store.state()
            assert state.newest_opt_out is not None and state.last_sync_at is not None
            read_from = min(state.newest_opt_out, state.last_sync_at) - OVERLAP  # what the next read covers
            invisible = 0  # what the changes the read misses do to the count of opted-out contacts
            hidden = 0  # how many changes the read misses
            expected: dict[str, str] = {}
            for _ in range(rng.randint(0, 3)):
                clock = dt.datetime.now(dt.timezone.utc)  # after every earlier change, back-dated ones included
                kind = rng.choice(KINDS)
                if kind in ("resubscribe", "delete"):
                    fact = rng.choice(account.optouts_truth(include_deleted=False))
                    if fact.contact_id in expected:
                        continue  # one change per contact between syncs: its event is then unambiguous
                    if kind == "resubscribe":
                        account.resubscribe([fact.contact_id], at=clock)
                    else:
                        account.delete([fact.contact_id], at=clock)
                    missed = fact.opt_out_date < read_from
                    invisible -= missed
                    expected[fact.contact_id] = "resubscribed" if kind == "resubscribe" else "deleted"
                else:
                    at = clock if kind == "opt_out" else clock - dt.timedelta(days=rng.uniform(30, 700))
                    (contact,) = account.pick("active", 1, rng, created_by=at)
                    if contact in expected:
                        continue
                    account.opt_out(contact_ids=[contact], at=at, backdated=kind == "backdated")
                    missed = at < read_from
                    invisible += missed
                    expected[contact] = "opted_out"
                hidden += missed
            started = dt.datetime.now(dt.timezone.utc)
            report = store.sync(client)
            if stored(store) != truth(small):
                # Only where the read missed changes that cancel out in the count: then a full sync repairs it.
                assert hidden and invisible == 0 and report.kind == "incremental", (seed, expected, report)
                store.sync(client, full=True)
                assert stored(store) == truth(small)
            learned = {c.contact_id: c.event for c in store.changes(started)}
            assert learned == expected, (seed, report)


def test_an_optout_arriving_during_the_sync_is_no_contradiction(medium: Sandbox) -> None:
    """Opt-outs keep arriving while a sync counts (a campaign going out): they are the next sync's, never a reason
    to stop trusting counts."""
    client = make_client(medium)
    notices: list[str] = []
    with OptOutStore.for_client(client, on_notice=notices.append) as store:
        store.sync(client)
        old_changes(medium, random.Random(13), resubscribe=1, delete=0, backdate=0)
        arrived: list[str] = []

        def opt_out_once_counting_began() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if any(r.query.get("include_count") == "true" and r.query.get("limit") == "1" for r in medium.requests):
                    arrived.extend(medium.account.opt_out(count=1))
                    return
                time.sleep(0.001)

        medium.reset_log()
        racer = threading.Thread(target=opt_out_once_counting_began)
        racer.start()
        report = store.sync(client)
        racer.join()
        assert arrived and report.kind == "incremental" and report.repaired >= 1  # found now, or next time
        assert not notices and not store.state().counts_untrusted
        store.sync(client)  # the newcomer is the next sync's
        assert stored(store) == truth(medium)
