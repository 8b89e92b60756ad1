"""Opt-out queries against the sandbox, checked against the account's ground truth."""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccoptout_xl.dates import parse_when
from ccoptout_xl.query import FALLBACK_NOTICE, OptOutQuery, find_optouts
from ccoptout_xl.sandbox import AccountSpec, Sandbox

from .conftest import ANCHOR, make_client, truth

UTC = dt.timezone.utc


def ids(optouts) -> list[str]:
    return [o.contact_id for o in optouts]


def run(sandbox: Sandbox, query: OptOutQuery, **kwargs):
    return find_optouts(make_client(sandbox), query, now=ANCHOR, **kwargs)


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
    excluded = run(shared_sandbox, OptOutQuery(since=moment - dt.timedelta(hours=1), until=moment))
    assert all(o.opt_out_date < moment for o in excluded)


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


def test_latest_n_walks_back_in_few_calls(shared_sandbox: Sandbox) -> None:
    everything = truth(shared_sandbox)
    for wanted in (1, 25, 300, 800):
        result = run(shared_sandbox, OptOutQuery(latest=wanted))
        assert ids(result) == ids(everything[:wanted])
        assert result.calls <= 1.5 * math.ceil(wanted / 500) + 3, (wanted, result.calls)


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


def test_results_are_deduplicated(sandbox: Sandbox) -> None:
    # Windows overlap by the padding on each side; a contact read twice is listed once.
    result = run(sandbox, OptOutQuery(latest=150))
    assert len(set(ids(result))) == len(ids(result)) == 150


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    contacts=st.integers(min_value=30, max_value=2_500),
    seed=st.integers(min_value=0, max_value=10_000),
    wanted=st.integers(min_value=1, max_value=700),
    until_days=st.one_of(st.none(), st.integers(min_value=0, max_value=2_000)),
    include_deleted=st.booleans(),
)
def test_latest_n_equals_brute_force(contacts, seed, wanted, until_days, include_deleted) -> None:
    spec = AccountSpec(contacts=contacts, seed=seed, anchor=ANCHOR)
    until = None if until_days is None else ANCHOR - dt.timedelta(days=until_days)
    with Sandbox(spec, rate_limit=None, daily_quota=1_000_000) as sandbox:
        result = run(sandbox, OptOutQuery(until=until, latest=wanted, include_deleted=include_deleted))
        everything = truth(sandbox, include_deleted=include_deleted)
        expected = [o for o in everything if until is None or o.opt_out_date < until][:wanted]
        assert ids(result) == ids(expected)
        assert [o.opt_out_date for o in result] == [o.opt_out_date for o in expected]
