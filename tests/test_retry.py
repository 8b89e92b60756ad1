"""The retry decision (wait and try again, or stop), and the package's loops that act on it, tested without sleeping."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from authlib.integrations.base_client.errors import OAuthError

from ccoptout_xl.exceptions import ApiError, StoreError
from ccoptout_xl.files import retry_while_busy
from ccoptout_xl.http_client import RetryPolicy
from ccoptout_xl.retry import backoff, decide, retry_call, spacing
from ccoptout_xl.sandbox import Fault, Sandbox
from ccoptout_xl.signin import within_rate_limit
from ccoptout_xl.store import OptOutStore

from .conftest import make_client


def lowest(a: float, b: float) -> float:
    return a


def highest(a: float, b: float) -> float:
    return b


# -- the decision -------------------------------------------------------------------------------------------------


def test_decide_waits_until_the_last_try_then_stops() -> None:
    assert [decide(failures, 4, 0.1) for failures in range(1, 6)] == [0.1, 0.1, 0.1, None, None]
    assert decide(1, 1, 0.1) is None  # one try in all: no retry
    assert decide(1, 0, 0.1) is None  # no tries asked for: the one made is the last


def test_decide_asks_a_delay_function_for_the_retry_number_only_when_there_is_a_retry() -> None:
    asked: list[int] = []

    def delay(retry: int) -> float:
        asked.append(retry)
        return retry * 10.0

    assert [decide(failures, 3, delay) for failures in (1, 2, 3)] == [10.0, 20.0, None]
    assert asked == [1, 2]  # nothing drawn for the answer "stop"


def test_backoff_doubles_up_to_its_cap_with_equal_jitter() -> None:
    assert [backoff(n, 0.5, 20.0, lowest) for n in range(1, 9)] == [0.25, 0.5, 1, 2, 4, 8, 10, 10]
    assert [backoff(n, 0.5, 20.0, highest) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 20, 20]
    drawn: list[tuple[float, float]] = []
    backoff(3, 0.5, 20.0, lambda a, b: drawn.append((a, b)) or a)
    assert drawn == [(0, 1.0)]  # half of the ceiling is fixed, the other half is jitter


def test_spacing_waits_out_the_interval_since_the_last_call() -> None:
    assert spacing(None, 100.0, 1.0) == 0.0  # no call yet
    assert spacing(100.0, 100.0, 1.0) == 1.0
    assert spacing(100.0, 100.25, 1.0) == 0.75
    assert spacing(100.0, 101.0, 1.0) == 0.0
    assert spacing(100.0, 250.0, 1.0) == 0.0
    assert spacing(105.0, 100.0, 1.0) == 0.0  # a last call "in the future" (a clock set back) is not waited for
    assert spacing(float("nan"), 100.0, 1.0) == 0.0


def test_the_clients_policy_keeps_its_bounds_and_delays() -> None:
    policy = RetryPolicy(uniform=highest)
    assert (policy.attempts, policy.throttled_attempts, policy.base_delay, policy.max_delay) == (6, 8, 0.5, 20.0)
    assert [policy.after_failure(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, None]
    assert [policy.after_throttle(n) for n in range(1, 9)] == [1.5, 2, 3, 5, 9, 17, 21, None]
    low = RetryPolicy(uniform=lowest)
    assert [low.after_failure(n) for n in range(1, 6)] == [0.25, 0.5, 1, 2, 4]
    assert low.after_throttle(1) == 1.25  # the second of the rate window, then the backoff


def test_the_policy_shows_and_compares_its_numbers_only() -> None:
    assert repr(RetryPolicy()) == "RetryPolicy(attempts=6, throttled_attempts=8, base_delay=0.5, max_delay=20.0)"
    assert RetryPolicy(sleep=lambda seconds: None) == RetryPolicy()


# -- the loop -----------------------------------------------------------------------------------------------------


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then answers "done"."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_retry_call_waits_between_tries_and_returns_the_answer() -> None:
    slept: list[float] = []
    operation = Flaky(2, PermissionError("busy"))
    assert retry_call(operation, on=PermissionError, tries=3, delay=0.05, sleep=slept.append) == "done"
    assert operation.calls == 3 and slept == [0.05, 0.05]


def test_retry_call_lets_the_last_failure_through_unchanged() -> None:
    slept: list[float] = []
    error = PermissionError("still busy")
    operation = Flaky(10, error)
    with pytest.raises(PermissionError) as caught:
        retry_call(operation, on=PermissionError, tries=3, delay=lambda n: n / 10, sleep=slept.append)
    assert caught.value is error
    assert operation.calls == 3 and slept == [0.1, 0.2]


def test_retry_call_does_not_retry_other_failures() -> None:
    slept: list[float] = []
    operation = Flaky(1, FileNotFoundError("gone"))
    with pytest.raises(FileNotFoundError):
        retry_call(operation, on=(PermissionError, TimeoutError), tries=5, delay=1.0, sleep=slept.append)
    operation = Flaky(1, OAuthError("invalid_grant"))
    with pytest.raises(OAuthError):
        retry_call(
            operation,
            on=OAuthError,
            when=lambda e: e.error == "too_many_requests",
            tries=5,
            delay=1.0,
            sleep=slept.append,
        )
    assert operation.calls == 1 and slept == []


# -- the package's loops, each with its own bound ------------------------------------------------------------------


def test_a_busy_file_is_tried_twenty_times_fifty_milliseconds_apart() -> None:
    slept: list[float] = []
    operation = Flaky(100, PermissionError(13, "Permission denied"))
    with pytest.raises(PermissionError):
        retry_while_busy(operation, sleep=slept.append)
    assert operation.calls == 20 and slept == [0.05] * 19
    assert retry_while_busy(Flaky(19, PermissionError()), sleep=slept.append) == "done"


def test_the_token_endpoint_is_asked_three_times_a_second_apart_while_it_is_too_busy() -> None:
    slept: list[float] = []
    operation = Flaky(100, OAuthError("too_many_requests"))
    with pytest.raises(OAuthError, match="too_many_requests"):
        within_rate_limit(operation, sleep=slept.append)
    assert operation.calls == 3 and slept == [1.0, 1.0]
    assert within_rate_limit(Flaky(2, OAuthError("too_many_requests")), sleep=slept.append) == "done"


def test_a_store_another_process_keeps_busy_is_tried_51_times_then_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_connect = OptOutStore._connect
    calls = 0

    def busy(self: OptOutStore, busy_for: int) -> sqlite3.Connection:
        nonlocal calls
        calls += 1
        if calls <= busy_for:
            raise sqlite3.OperationalError("database is locked")
        return real_connect(self)

    slept: list[float] = []
    monkeypatch.setattr(OptOutStore, "_connect", lambda self: busy(self, 10))
    store = OptOutStore(tmp_path / "store.sqlite3", sleep=slept.append)
    assert calls == 11 and slept == [0.1] * 10
    store.close()

    calls, slept[:] = 0, []
    monkeypatch.setattr(OptOutStore, "_connect", lambda self: busy(self, 1_000))
    with pytest.raises(StoreError, match="is busy"):
        OptOutStore(tmp_path / "other.sqlite3", sleep=slept.append)
    assert calls == 51 and slept == [0.1] * 50


# -- the API client over HTTP, against the sandbox, sleeping through the policy only ------------------------------


def test_server_errors_are_retried_with_the_policys_delays_then_given_up(sandbox: Sandbox) -> None:
    sandbox.faults.add(Fault(kind="500", rate=1.0))
    slept: list[float] = []
    client = make_client(sandbox, retry=RetryPolicy(attempts=4, sleep=slept.append, uniform=highest))
    with pytest.raises(ApiError, match=r"HTTP 500 .*gave up after 4 tries") as caught:
        client.contact_counts()
    assert caught.value.exit_code == 3
    assert slept == [0.5, 1.0, 2.0] and client.stats.retries == 3
    assert [r.status for r in sandbox.requests] == [500] * 4


def test_throttled_requests_wait_the_rate_window_and_a_backoff_eight_times_at_most(sandbox: Sandbox) -> None:
    sandbox.faults.add(Fault(kind="429", rate=1.0))
    slept: list[float] = []
    client = make_client(sandbox, retry=RetryPolicy(sleep=slept.append, uniform=lowest))
    with pytest.raises(ApiError, match="kept answering 'too many requests' after 8 tries") as caught:
        client.contact_counts()
    assert caught.value.status == 429 and caught.value.exit_code == 3
    assert slept == [1.25, 1.5, 2.0, 3.0, 5.0, 9.0, 11.0]
    assert client.stats.throttled == 8 and client.stats.retries == 7
    assert len(sandbox.requests) == 8


def test_a_dropped_connection_is_retried_and_the_answer_still_arrives(sandbox: Sandbox) -> None:
    sandbox.faults.add(Fault(kind="drop", at_request=1))
    slept: list[float] = []
    client = make_client(sandbox, retry=RetryPolicy(sleep=slept.append, uniform=lowest))
    assert client.contact_counts() == sandbox.account.counts()
    assert slept == [0.25] and client.stats.retries == 1
