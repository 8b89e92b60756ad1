"""Opt-out queries against the sandbox, checked against the account's ground truth."""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccoptout_xl.dates import parse_when
from ccoptout_xl.query import FALLBACK_NOTICE, OptOutQuery, from_api
from ccoptout_xl.sandbox import AccountSpec, Sandbox

from .conftest import ANCHOR, make_client, truth

UTC = dt.timezone.utc


def ids(optouts) -> list[str]:
    return [o.contact_id for o in optouts]


def run(sandbox: Sandbox, query: OptOutQuery, **kwargs):
    return from_api(make_client(sandbox), query, now=ANCHOR, **kwargs)


def test_all_optouts_newest_first(shared_sandbox: Sandbox) -> None:
    result = run(shared_sandbox, OptOutQuery())
    expected = truth(shared_sandbox)
    assert ids(result) == ids(expected)
    assert len(result) == len(expected) > 500
    full_last_page = len(expected) % 500 == 0  # then the API links to an empty page
    assert result.calls == math.ceil(len(expected) / 500) + full_last_page


def test_since_until_matches_ground_truth_with_server_side_filters(shared_sandbox: Sandbox) -> None:
    since, until = ANCHOR - dt.timedelta(days=400), ANCHOR - dt.timedelta(days=100)
    shared_sandbox.reset_log()
    result = run(shared_sandbox, OptOutQuery(since=since, until=until))
    expected = [o for o in truth(shared_sandbox) if since <= o.opt_out_date < until]
    assert ids(result) == ids(expected) and expected
    sent = shared_sandbox.requests[0].query
    assert sent["optout_after"] < since.strftime("%Y-%m-%dT%H:%M:%S") + "Z"  # padded window, checked again here
    assert "optout_before" in sent and sent["status"] == "unsubscribed"


def test_since_is_inclusive_and_until_exclusive(shared_sandbox: Sandbox) -> None:
    moment = truth(shared_sandbox)[10].opt_out_date
    included = run(shared_sandbox, OptOutQuery(since=moment, until=moment + dt.timedelta(microseconds=1)))
    assert [o.opt_out_date for o in included] == [moment] * len(included) and len(included) >= 1
    before = [o for o in truth(shared_sandbox) if moment - dt.timedelta(days=30) <= o.opt_out_date < moment]
    excluded = run(shared_sandbox, OptOutQuery(since=moment - dt.timedelta(days=30), until=moment))
    assert ids(excluded) == ids(before) and before


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Paris", "Asia/Kolkata", "Pacific/Auckland"])
def test_calendar_days_in_a_time_zone_across_dst(shared_sandbox: Sandbox, zone: str) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    everything = truth(shared_sandbox)
    # A busy local day, and a stretch spanning that zone's DST changes of the anchor's year.
    busy = everything[len(everything) // 3].opt_out_date.astimezone(tz).date()
    for since_text, until_text in [
        (busy.isoformat(), (busy + dt.timedelta(days=1)).isoformat()),
        ("2026-03-01", "2026-11-15"),
    ]:
        since, until = parse_when(since_text, tz), parse_when(until_text, tz)
        result = run(shared_sandbox, OptOutQuery(since=since, until=until))
        expected = [
            o for o in everything if since_text <= o.opt_out_date.astimezone(tz).date().isoformat() < until_text
        ]
        assert ids(result) == ids(expected) and expected


def test_updated_after_would_miss_recent_optouts(shared_sandbox: Sandbox) -> None:
    since = ANCHOR - dt.timedelta(days=30)
    recent = run(shared_sandbox, OptOutQuery(since=since))
    client = make_client(shared_sandbox)
    updated = {c["contact_id"] for c in client.contacts(status="unsubscribed", updated_after=since, limit=500)}
    assert len(recent) > 0
    assert any(o.contact_id not in updated for o in recent)  # why updated_after is never used


@pytest.fixture(scope="module")
def large_sandbox() -> Iterator[Sandbox]:
    """15,000 opt-outs, 3,000 of them removed by the account owner in one second, 200 days before the anchor."""
    spec = AccountSpec(contacts=30_000, seed=5, unsubscribed_share=0.5, anchor=ANCHOR, bulk_removal=3_000)
    with Sandbox(spec, rate_limit=None, daily_quota=1_000_000) as sb:
        yield sb


def test_latest_n_walks_back_in_few_calls(large_sandbox: Sandbox) -> None:
    everything = truth(large_sandbox)
    reading_everything = math.ceil(len(everything) / 500)
    for wanted in (1, 25, 300, 800, 1_500):
        result = run(large_sandbox, OptOutQuery(latest=wanted))
        assert ids(result) == ids(everything[:wanted])
        assert result.calls <= 1.5 * math.ceil(wanted / 500) + 3, (wanted, result.calls)
        assert result.calls < reading_everything / 3


def test_a_burst_in_one_second_does_not_make_the_walk_thrash(large_sandbox: Sandbox) -> None:
    until = ANCHOR - dt.timedelta(days=150)  # the walk meets the 3,000 at -200 days on its way back
    in_range = [o for o in truth(large_sandbox) if o.opt_out_date < until]
    reading_everything = math.ceil(len(in_range) / 500)
    for wanted in (1, 10, 600, 4_000):
        result = run(large_sandbox, OptOutQuery(until=until, latest=wanted))
        assert ids(result) == ids(in_range[:wanted])
        assert result.calls <= 2 * reading_everything + 1, (wanted, result.calls)


def test_optouts_newer_than_this_computers_clock_are_not_missed(large_sandbox: Sandbox) -> None:
    # This computer's clock is 5 days behind the server's: the newest end of the walk stays open.
    result = from_api(make_client(large_sandbox), OptOutQuery(latest=5), now=ANCHOR - dt.timedelta(days=5))
    assert ids(result) == ids(truth(large_sandbox)[:5])


@pytest.mark.parametrize(
    "spec",
    [
        AccountSpec(contacts=40_000, seed=8, recent_share=0.002, anchor=ANCHOR),
        AccountSpec(contacts=40_000, seed=3, recent_share=0.0, anchor=ANCHOR),
        AccountSpec(contacts=20_000, seed=6, unsubscribed_share=0.4, bulk_removal=1_500, anchor=ANCHOR),
        AccountSpec(contacts=60_000, seed=970, unsubscribed_share=0.05, recent_share=0.05, anchor=ANCHOR),
    ],
    ids=["a quiet last month", "no opt-out for a month", "1,500 removed in one second", "a busy last month"],
)
def test_latest_n_is_exact_on_accounts_of_several_shapes(spec: AccountSpec) -> None:
    with Sandbox(spec, rate_limit=None, daily_quota=None) as sandbox:
        everything = truth(sandbox)
        for listing in ("scrambled", "created"):
            sandbox.listing = listing
            for wanted in (1, 100, 500, 1_000, 5_000):
                result = run(sandbox, OptOutQuery(latest=wanted))
                assert [(o.contact_id, o.opt_out_date) for o in result] == [
                    (o.contact_id, o.opt_out_date) for o in everything[:wanted]
                ]
                if listing == "scrambled":  # a first page that samples the dates places the windows
                    assert result.calls <= 1.5 * math.ceil(wanted / 500) + 3, (wanted, result.calls)


def test_latest_n_on_a_clustered_account_takes_few_calls() -> None:
    # 40,000 opt-outs, 70% within hours of a campaign, few in the last month: the newest 500 took 12 calls before.
    # Listed in no date order, the first page is a sample of the opt-out dates that places the first window.
    spec = AccountSpec(contacts=200_000, seed=4, recent_share=0.002, anchor=ANCHOR)
    with Sandbox(spec, rate_limit=None, daily_quota=None) as sandbox:
        everything = sandbox.account.optouts_truth(include_deleted=False)
        for wanted in (1, 100, 500, 1_000, 5_000):
            sandbox.listing = "created"
            by_counts = run(sandbox, OptOutQuery(latest=wanted))
            sandbox.listing = "scrambled"
            sampled = run(sandbox, OptOutQuery(latest=wanted))
            assert ids(sampled) == ids(by_counts) == ids(everything[:wanted])
            allowed = math.ceil(wanted / 500) + 2 + (wanted > 1_000)  # the target; a page over it for 5,000
            assert sampled.calls <= min(allowed, by_counts.calls), (wanted, sampled.calls, by_counts.calls)


def test_a_server_that_lists_contacts_by_creation_date_is_searched_by_counts(large_sandbox: Sandbox) -> None:
    # Its first page is the contacts created first, not a sample of the opt-out dates: the walk does not place
    # windows from it but starts with the last 7 days, and widens from the counts it sees.
    for listing, from_the_sample in (("created", False), ("scrambled", True)):
        large_sandbox.listing = listing
        try:
            large_sandbox.reset_log()
            result = run(large_sandbox, OptOutQuery(latest=30))
        finally:
            large_sandbox.listing = "created"
        assert ids(result) == ids(truth(large_sandbox)[:30])
        window = large_sandbox.requests[1].query
        week = (ANCHOR - dt.timedelta(days=7, seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
        assert (window["optout_after"].startswith(week)) != from_the_sample, (listing, window)


def test_a_read_of_whole_pages_does_not_fetch_the_empty_page_after_them() -> None:
    # 2,000 opt-outs: reading them all is 4 full pages, and the count on the first says there is nothing after.
    with Sandbox(AccountSpec(contacts=10_000, anchor=ANCHOR), rate_limit=None, daily_quota=None) as sandbox:
        everything = truth(sandbox)
        assert len(everything) == 2_000
        result = run(sandbox, OptOutQuery(latest=1_000))
        assert ids(result) == ids(everything[:1_000])
        assert result.calls == 4 and len(sandbox.requests) == 4


def test_fallback_when_the_walk_meets_a_server_without_optout_filters(large_sandbox: Sandbox) -> None:
    notices: list[str] = []
    large_sandbox.optout_filters = False
    try:
        result = run(large_sandbox, OptOutQuery(latest=30), on_notice=notices.append)
    finally:
        large_sandbox.optout_filters = True
    # The first call (no date filter) is accepted; the first window is not: one notice, then the full scan.
    assert notices == [FALLBACK_NOTICE] and result.full_scan
    assert ids(result) == ids(truth(large_sandbox)[:30])


def test_latest_n_within_a_range(shared_sandbox: Sandbox) -> None:
    until = ANCHOR - dt.timedelta(days=365)
    result = run(shared_sandbox, OptOutQuery(until=until, latest=40))
    assert ids(result) == ids([o for o in truth(shared_sandbox) if o.opt_out_date < until][:40])


def test_deleted_contacts_only_on_request(shared_sandbox: Sandbox) -> None:
    without = run(shared_sandbox, OptOutQuery())
    with_deleted = run(shared_sandbox, OptOutQuery(include_deleted=True))
    assert not any(o.deleted for o in without)
    assert ids(with_deleted) == ids(truth(shared_sandbox, include_deleted=True))
    assert any(o.deleted for o in with_deleted)


def test_resubscribed_and_active_contacts_never_appear(shared_sandbox: Sandbox) -> None:
    found = set(ids(run(shared_sandbox, OptOutQuery(include_deleted=True))))
    for contact in shared_sandbox.account.contacts():
        email = contact["email_address"]
        if "opt_out_date" not in email:
            assert contact["contact_id"] not in found


def test_server_without_optout_filters_falls_back_to_a_full_scan(sandbox: Sandbox) -> None:
    sandbox.optout_filters = False
    notices: list[str] = []
    since = ANCHOR - dt.timedelta(days=200)
    result = run(sandbox, OptOutQuery(since=since, latest=30), on_notice=notices.append)
    assert notices == [FALLBACK_NOTICE]
    assert result.full_scan
    assert ids(result) == ids([o for o in truth(sandbox) if o.opt_out_date >= since][:30])
    assert sum(r.status == 400 for r in sandbox.requests) == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    contacts=st.integers(min_value=30, max_value=12_000),
    share=st.sampled_from([0.05, 0.2, 0.6, 0.9]),
    bulk=st.sampled_from([0, 0, 700]),
    seed=st.integers(min_value=0, max_value=10_000),
    wanted=st.integers(min_value=1, max_value=1_200),
    until_days=st.one_of(st.none(), st.integers(min_value=0, max_value=2_000)),
    include_deleted=st.booleans(),
    listing=st.sampled_from(["created", "scrambled"]),
)
def test_latest_n_equals_brute_force(contacts, share, bulk, seed, wanted, until_days, include_deleted, listing) -> None:
    spec = AccountSpec(contacts=contacts, seed=seed, unsubscribed_share=share, anchor=ANCHOR, bulk_removal=bulk)
    until = None if until_days is None else ANCHOR - dt.timedelta(days=until_days)
    with Sandbox(spec, rate_limit=None, daily_quota=1_000_000) as sandbox:
        sandbox.listing = listing
        result = run(sandbox, OptOutQuery(until=until, latest=wanted, include_deleted=include_deleted))
        everything = truth(sandbox, include_deleted=include_deleted)
        expected = [o for o in everything if until is None or o.opt_out_date < until][:wanted]
        assert ids(result) == ids(expected)
        assert [o.opt_out_date for o in result] == [o.opt_out_date for o in expected]
