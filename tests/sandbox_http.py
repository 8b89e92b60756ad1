"""Helpers for tests that talk to a running sandbox over real HTTP: fixtures, sessions, GETs, every page and the
counts of ``GET /contacts`` (each page checked against the contract), and the account's contacts to compare with."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ccoptout_xl.sandbox import Account, AccountSpec, Sandbox

from .contract import validate

Contact = dict[str, Any]


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def sandbox_fixtures(spec: AccountSpec) -> tuple[Any, Any]:
    """The fixtures ``sb`` (a sandbox of an account of ``spec``, without rate limit or quota, new for each test) and
    ``api`` (a session with its token). A test module binds them as ``sb, api = sandbox_fixtures(SPEC)``."""

    @pytest.fixture(name="sb")
    def sb() -> Iterator[Sandbox]:
        with Sandbox(spec, rate_limit=None, daily_quota=None) as sandbox:
            yield sandbox

    @pytest.fixture(name="api")
    def api(sb: Sandbox) -> requests.Session:
        return session(sb)

    return sb, api


def session(sandbox: Sandbox) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {sandbox.token}"
    return s


def get(s: requests.Session, sandbox: Sandbox, path: str, **params: Any) -> dict[str, Any]:
    response = s.get(sandbox.base_url + path, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def pages(s: requests.Session, sandbox: Sandbox, **params: Any) -> Iterator[dict[str, Any]]:
    """Every page of GET /contacts, following next links verbatim; each body checked against the contract."""
    url: str | None = sandbox.base_url + "/contacts"
    query: dict[str, Any] | None = params
    while url is not None:
        response = s.get(url, params=query, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        validate("Contacts", body)
        yield body
        links = body.get("_links")
        url, query = (sandbox.base_url.removesuffix("/v3") + links["next"]["href"], None) if links else (None, None)


def found(s: requests.Session, sandbox: Sandbox, **params: Any) -> dict[str, Contact]:
    """contact_id -> contact, over every page."""
    return {c["contact_id"]: c for body in pages(s, sandbox, limit=500, **params) for c in body["contacts"]}


def count(s: requests.Session, sandbox: Sandbox, **params: Any) -> int:
    return get(s, sandbox, "/contacts", include_count="true", limit=1, **params)["contacts_count"]


def in_parallel(sandbox: Sandbox, path: str, times: int = 4, **params: Any) -> tuple[list[int], float]:
    """The statuses of ``times`` GETs of ``path`` sent at once, each from its own thread and session, and the seconds
    they took together."""
    statuses: list[int] = []

    def one() -> None:
        statuses.append(session(sandbox).get(sandbox.base_url + path, params=params, timeout=10).status_code)

    threads = [threading.Thread(target=one) for _ in range(times)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return statuses, time.monotonic() - started


def contacts(account: Account) -> dict[str, Contact]:
    """The account's contacts as the API renders them (deleted ones too), by id, in API order."""
    return {c["contact_id"]: c for c in account.contacts()}


def permission(c: Contact) -> str:
    return c["email_address"]["permission_to_send"]


def active(c: Contact) -> bool:
    return "deleted_at" not in c and permission(c) in ("explicit", "implicit")
