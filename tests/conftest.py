"""Shared fixtures: sandboxes on 127.0.0.1 and clients pointed at them."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccoptout_xl.auth import StaticToken
from ccoptout_xl.client import Client
from ccoptout_xl.http_client import HTTPClient, RetryPolicy
from ccoptout_xl.optouts import OptOut
from ccoptout_xl.sandbox import AccountSpec, Sandbox
from ccoptout_xl.sandbox.accounts import CACHE_ENV
from ccoptout_xl.settings import VARIABLES

# A fixed "now" for the synthetic accounts, so tests see the same data every day.
ANCHOR = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
# Retries wait for nothing: each backoff is decided as usual and never slept (tests/test_retry.py checks them).
FAST_RETRY = RetryPolicy(attempts=4, throttled_attempts=8, base_delay=0.01, max_delay=0.05, sleep=lambda seconds: None)


def make_client(sandbox: Sandbox, *, rate: float | None = None, retry: RetryPolicy = FAST_RETRY, **kwargs) -> Client:
    """A client for ``sandbox``; unpaced and with backoffs that are not slept unless a test asks otherwise."""
    return Client(HTTPClient(sandbox.base_url, StaticToken(sandbox.token), rate=rate, retry=retry, **kwargs))


class FakeTime:
    """A clock that moves only when slept on, for retry and pacing tests that must not wait.

    Its ``sleep`` goes to the code under test, the instance itself is that code's clock, and :meth:`drive` puts the
    sandbox's rate windows (the API's and the token endpoint's) on it too: a wait slept here is one the sandbox saw
    pass, and one not slept is one it did not."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)

    def drive(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> FakeTime:
        monkeypatch.setattr(sandbox, "rate_clock", self)
        return self


def counts_in_processes(count: int, before_the_race: str = "pass") -> list[str]:
    """Start ``count`` processes that read the account's contact count with the environment's sign-in at the same
    moment (each runs ``before_the_race`` with its ``client`` first); return what each printed, once all succeeded."""
    start_at = time.time() + 3.0
    script = textwrap.dedent(
        f"""
        import time
        from ccoptout_xl import connect
        with connect(rate=None) as client:
            {before_the_race}
            time.sleep(max(0.0, {start_at} - time.time()))
            print(client.contact_counts()["total"])
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * count, [err for _, err in outputs]
    return [out.strip() for out, _ in outputs]


def truth(sandbox: Sandbox, *, include_deleted: bool = False) -> list[OptOut]:
    """Every opt-out of the sandbox's account, newest first, read from its ground truth (not over HTTP)."""
    found = [OptOut.from_contact(c) for c in sandbox.account.contacts()]
    optouts = [o for o in found if o is not None and (include_deleted or not o.deleted)]
    return sorted(optouts, key=lambda o: (-o.opt_out_date.timestamp(), o.contact_id))


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing of the user's: generated accounts, config and sign-in go to this run's temporary folders, and the
    system keyring is never touched (a test double stands in for it where a test needs one)."""
    settings = {
        CACHE_ENV: str(tmp_path_factory.mktemp("sandbox-cache")),
        "CCOPTOUT_CONFIG_DIR": str(tmp_path_factory.mktemp("config")),
        "CCOPTOUT_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        # Never the real API: a test that forgets to point at a sandbox finds nothing listening on loopback.
        "CCOPTOUT_API_URL": "http://127.0.0.1:9/v3",
    }
    cleared = [name for name in VARIABLES if name not in settings]  # every CCOPTOUT_* setting, from one list
    previous = {name: os.environ.get(name) for name in [*settings, *cleared]}
    for name in cleared:
        os.environ.pop(name, None)
    os.environ.update(settings)
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def sandbox_as_api(spec: AccountSpec, monkeypatch: pytest.MonkeyPatch, cache: Path) -> Iterator[Sandbox]:
    """A sandbox that the command line and ``ccoptout_xl.connect()`` talk to, with its own cache folder."""
    with Sandbox(spec, rate_limit=None, daily_quota=None) as sb:
        monkeypatch.setenv("CCOPTOUT_CACHE_DIR", str(cache))
        monkeypatch.setenv("CCOPTOUT_API_URL", sb.base_url)
        monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", sb.token)
        yield sb


@pytest.fixture(scope="session")
def shared_sandbox() -> Iterator[Sandbox]:
    """A read-only 5,000-contact account without rate limits, shared by tests that only read."""
    with Sandbox(AccountSpec(contacts=5_000, seed=1, anchor=ANCHOR), rate_limit=None, daily_quota=1_000_000) as sb:
        yield sb


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh 2,000-contact account a test may configure (limits, faults, latency)."""
    with Sandbox(AccountSpec(contacts=2_000, seed=2, anchor=ANCHOR), rate_limit=None, daily_quota=1_000_000) as sb:
        yield sb
