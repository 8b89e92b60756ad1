"""The sandbox's latency model: ``latency`` for every answer, plus ``latency_per_contact`` per contact in a page."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ccoptout_xl.sandbox import AccountSpec, Sandbox, SettingError, check_server_settings

from .sandbox_http import in_parallel, session

ANCHOR = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
SPEC = AccountSpec(contacts=2_000, seed=1, anchor=ANCHOR)


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(SPEC, rate_limit=None, daily_quota=None) as sandbox:
        yield sandbox


def timed_get(s: requests.Session, sandbox: Sandbox, path: str, **params: Any) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = s.get(sandbox.base_url + path, params=params, timeout=10)
    return response, time.monotonic() - started


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.001, 0.5, True, "0.01", None])
def test_a_bad_latency_per_contact_is_refused_before_anything_is_done(value: object) -> None:
    with pytest.raises(SettingError) as caught:
        Sandbox(SPEC, latency_per_contact=value)  # type: ignore[arg-type]
    assert caught.value.setting == "latency_per_contact" and "\n" not in str(caught.value)
    with pytest.raises(SettingError, match="latency_per_contact"):
        check_server_settings(0, None, None, 0.0, value)


def test_latency_per_contact_is_a_checked_setting_while_serving(sb: Sandbox) -> None:
    assert sb.latency_per_contact == 0.0
    for bad in (math.nan, -1, 1e9):
        with pytest.raises(SettingError):
            sb.latency_per_contact = bad
        assert sb.latency_per_contact == 0.0
    sb.latency_per_contact = 0.1  # the largest allowed: a page of 500 then waits 50 s more
    assert sb.answer_delay("/v3/contacts", 500) == pytest.approx(50.0)
    sb.latency_per_contact = 0


def test_a_page_waits_latency_plus_latency_per_contact_times_its_contacts(sb: Sandbox) -> None:
    s = session(sb)
    sb.latency, sb.latency_per_contact = 0.002, 0.0001
    assert len(s.get(sb.base_url + "/contacts", params={"limit": 500}, timeout=10).json()["contacts"]) == 500
    s.get(sb.base_url + "/contacts", params={"limit": 1}, timeout=10)
    s.get(sb.base_url + "/contacts", params={"status": "unsubscribed", "optout_after": "2099-01-01T00:00:00Z"})
    s.get(sb.base_url + "/contacts/counts", timeout=10)
    s.get(sb.base_url + "/contact_lists", timeout=10)
    s.get(sb.base_url + "/contacts", params={"limit": 501}, timeout=10)  # 400: no contacts
    delays = [(r.path, r.status, r.delay) for r in sb.requests]
    assert delays == [
        ("/v3/contacts", 200, pytest.approx(0.002 + 0.0001 * 500)),
        ("/v3/contacts", 200, pytest.approx(0.002 + 0.0001)),
        ("/v3/contacts", 200, pytest.approx(0.002)),  # an empty page
        ("/v3/contacts/counts", 200, pytest.approx(0.002)),
        ("/v3/contact_lists", 200, pytest.approx(0.002)),
        ("/v3/contacts", 400, pytest.approx(0.002)),
    ]
    assert sb.answer_delay("/v3/contacts", 250) == pytest.approx(0.027)
    assert sb.answer_delay("/v3/contact_lists", 250) == pytest.approx(0.002)


def test_a_page_of_500_takes_measurably_longer_than_a_page_of_1(sb: Sandbox) -> None:
    s = session(sb)
    sb.latency_per_contact = 0.0004  # 0.2 s for 500 contacts
    small, small_time = timed_get(s, sb, "/contacts", limit=1)
    large, large_time = timed_get(s, sb, "/contacts", limit=500)
    assert len(small.json()["contacts"]) == 1 and len(large.json()["contacts"]) == 500
    assert large_time >= 0.2 and large_time - small_time > 0.1


def test_slow_pages_are_not_serialized(sb: Sandbox) -> None:
    sb.latency, sb.latency_per_contact = 0.05, 0.0005  # 0.3 s per page of 500
    statuses, elapsed = in_parallel(sb, "/contacts", limit=500)
    assert statuses == [200] * 4
    assert 0.3 <= elapsed < 1.1  # four in a row would take 1.2 s
    assert [r.delay for r in sb.requests] == [pytest.approx(0.3)] * 4
