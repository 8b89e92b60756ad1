"""The transport and client against the sandbox over HTTP: pagination, limits, retries, errors."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ccoptout_xl.auth import StaticToken
from ccoptout_xl.client import Client
from ccoptout_xl.exceptions import ApiError, AuthError, BadRequest, ConfigError, MalformedResponse, QuotaExceeded
from ccoptout_xl.http_client import HTTPClient, RequestPacer, RetryPolicy
from ccoptout_xl.sandbox import Fault, Sandbox
from ccoptout_xl.settings import validate_base_url

from .conftest import FAST_RETRY, FakeTime, make_client


def unsubscribed_ids(sandbox: Sandbox) -> set[str]:
    return {
        c["contact_id"]
        for c in sandbox.account.contacts()
        if c["email_address"].get("permission_to_send") == "unsubscribed" and "deleted_at" not in c
    }


def test_pagination_over_many_pages_returns_each_contact_once(shared_sandbox: Sandbox) -> None:
    client = make_client(shared_sandbox)
    pages = list(client.contact_pages(status="unsubscribed", limit=37))
    ids = [c["contact_id"] for page in pages for c in page.items]
    expected = unsubscribed_ids(shared_sandbox)
    assert len(pages) >= 20
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected
    # Each request after the first followed the previous page's next link as it was.
    log = [r for r in shared_sandbox.requests if r.path == "/v3/contacts"][-len(pages) :]
    assert all(set(r.query) == {"cursor"} for r in log[1:])
    assert client.stats.pages == len(pages)


def test_an_empty_last_page_ends_iteration(shared_sandbox: Sandbox) -> None:
    contact = next(iter(shared_sandbox.account.contacts()))
    client = make_client(shared_sandbox)
    # One match with limit=1 is a full page, so the API sends a next link to an empty page.
    pages = list(client.contact_pages(email=contact["email_address"]["address"], status="all", limit=1))
    assert [len(p.items) for p in pages] == [1, 0]
    assert pages[0].next_href and pages[1].next_href is None
    assert pages[0].items[0]["contact_id"] == contact["contact_id"]


def test_counts_lists_and_account(shared_sandbox: Sandbox) -> None:
    client = make_client(shared_sandbox)
    counts = client.contact_counts()
    assert counts["unsubscribed"] == len(unsubscribed_ids(shared_sandbox))
    names = client.list_names()
    assert names == {item["list_id"]: item["name"] for item in shared_sandbox.account.lists()}
    assert client.account_summary()["organization_name"]


def test_a_burst_over_the_rate_limit_is_throttled_and_still_succeeds(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.rate_limit = 4
    clock = FakeTime().drive(sandbox, monkeypatch)  # the backoffs pass for the sandbox without being slept
    client = make_client(sandbox, rate=None, retry=replace(FAST_RETRY, sleep=clock.sleep))  # no pacing: a burst
    ids = [c["contact_id"] for c in client.contacts(status="unsubscribed", limit=40)]
    assert set(ids) == unsubscribed_ids(sandbox)
    statuses = [r.status for r in sandbox.requests]
    assert 429 in statuses and statuses[-1] == 200
    assert client.stats.throttled == statuses.count(429) > 0
    assert len(clock.slept) == client.stats.retries == client.stats.throttled
    assert all(1.0 < seconds <= 1.05 for seconds in clock.slept)  # the rate window, and a (short) backoff


def test_paced_client_stays_under_the_limit_without_needless_sleeps(sandbox: Sandbox) -> None:
    sandbox.rate_limit = 4
    client = make_client(sandbox, rate=4)
    for _ in range(4):  # four requests fit in the first second: no waiting
        client.contact_counts()
    assert client.stats.paced_seconds == 0
    for _ in range(6):
        client.contact_counts()
    assert [r.status for r in sandbox.requests] == [200] * 10
    # Requests 5-8 wait for the first second's window, 9-10 for the second's: about 2 s in all, not more.
    assert 1.5 < client.stats.paced_seconds < 2.3
    arrivals = [r.at for r in sandbox.requests]
    assert all(later - earlier >= 1.0 for earlier, later in zip(arrivals, arrivals[4:], strict=False))


def test_pacer_sleeps_only_when_the_window_is_full() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    pacer = RequestPacer(4, margin=0.0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(4):
        pacer.wait()
    assert slept == []
    clock[0] = 0.25
    pacer.wait()
    assert slept == [pytest.approx(0.75)]


def test_quota_exceeded_stops_with_reset_time_and_what_was_fetched(sandbox: Sandbox) -> None:
    sandbox.daily_quota = 3
    client = make_client(sandbox)
    with pytest.raises(QuotaExceeded) as caught:
        list(client.contacts(status="unsubscribed", limit=20))
    message = str(caught.value)
    assert "00:00 UTC" in message and "in " in message
    assert "Fetched before stopping: 60 contacts in 3 pages" in message
    assert caught.value.reset_at.hour == 0 and caught.value.exit_code == 5
    assert len(sandbox.requests) == 4  # no retry after quota_exceeded


@pytest.mark.parametrize("kind", ["500", "503", "drop"])
def test_server_errors_and_dropped_connections_are_retried(sandbox: Sandbox, kind: str) -> None:
    sandbox.faults.add(Fault(kind=kind, at_request=2))
    client = make_client(sandbox)
    ids = [c["contact_id"] for c in client.contacts(status="unsubscribed", limit=50)]
    assert set(ids) == unsubscribed_ids(sandbox) and len(ids) == len(set(ids))
    assert client.stats.retries == 1


def test_a_slow_response_times_out_and_is_retried(sandbox: Sandbox) -> None:
    sandbox.faults.add(Fault(kind="slow", at_request=1, delay=2.0))
    client = make_client(sandbox, timeout=(1.0, 0.5))
    assert client.contact_counts()["total"] > 0
    assert client.stats.retries == 1


def test_retries_are_bounded(sandbox: Sandbox) -> None:
    sandbox.faults.add(Fault(kind="500", rate=1.0, path_prefix="/v3/contacts"))
    client = make_client(
        sandbox, retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, sleep=FAST_RETRY.sleep)
    )
    with pytest.raises(ApiError, match=r"HTTP 500 .*gave up after 3 tries"):
        list(client.contacts(status="unsubscribed"))
    assert len(sandbox.requests) == 3


def test_malformed_json_is_a_clear_error(sandbox: Sandbox) -> None:
    sandbox.faults.add(Fault(kind="malformed", at_request=1))
    client = make_client(sandbox)
    with pytest.raises(MalformedResponse, match="not valid JSON"):
        client.contact_counts()


def test_wrong_token_is_an_auth_error_without_the_token(sandbox: Sandbox) -> None:
    client = Client(HTTPClient(sandbox.base_url, StaticToken("not-the-token-123"), rate=None))
    with pytest.raises(AuthError) as caught:
        client.contact_counts()
    assert "not-the-token-123" not in str(caught.value)
    assert caught.value.status == 401 and caught.value.exit_code == 4


def test_bad_parameter_is_a_bad_request(sandbox: Sandbox) -> None:
    with pytest.raises(BadRequest, match="HTTP 400"):
        list(make_client(sandbox).contacts(status="nonsense"))


@pytest.mark.parametrize(
    "url",
    ["http://api.cc.email/v3", "http://192.168.1.10:8800/v3", "ftp://127.0.0.1/v3", "not a url"],
)
def test_plain_http_is_refused_unless_loopback(url: str) -> None:
    with pytest.raises(ConfigError):
        validate_base_url(url)


@pytest.mark.parametrize(
    "url", ["https://api.cc.email/v3", "http://127.0.0.1:8800/v3", "http://localhost:1/v3", "http://[::1]:9/v3"]
)
def test_https_and_loopback_are_accepted(url: str) -> None:
    assert validate_base_url(url + "/") == url


def test_links_to_another_host_are_not_followed(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    with pytest.raises(MalformedResponse, match="another host"):
        client.http.url("https://elsewhere.example/v3/contacts?cursor=abc")
    assert client.http.url("/v3/contacts?cursor=a+b=") == sandbox.base_url + "/contacts?cursor=a+b="
