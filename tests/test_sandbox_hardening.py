"""The sandbox under hostile input (issue 9): its settings, its query strings, its cache folder, its faults."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest
import requests

from ccoptout_xl.sandbox import AccountSpec, Sandbox, accounts
from ccoptout_xl.sandbox.accounts import Account

from .conftest import ANCHOR
from .contract import validate

SPEC = AccountSpec(contacts=300, seed=5, anchor=ANCHOR)


class Reached(Exception):
    """A sandbox went further than it should have: it generated an account or bound a port."""


@pytest.fixture
def nothing_generated_or_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise Reached

    monkeypatch.setattr(accounts, "build", refuse)
    monkeypatch.setattr(Account, "open", refuse)
    monkeypatch.setattr(Sandbox, "_bind", refuse)


# -- 2. query strings: only ASCII digits are numbers ---------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[Sandbox]:
    with Sandbox(SPEC, rate_limit=None, daily_quota=None) as sb:
        yield sb


def _get(sb: Sandbox, path: str, **params: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {sb.token}"}
    return requests.get(sb.base_url + path, params=params, headers=headers, timeout=10)


NOT_ASCII_NUMBERS = [
    "\uff15\uff10\uff10",  # full-width 500
    "\u0665\u0660\u0660",  # Arabic-Indic 500
    "\u06f5\u06f0",  # extended Arabic-Indic 50
    "\u0967\u0966",  # Devanagari 10
    "5\u0660",  # mixed
    "+5",
    " 5",
    "5_0",
]


@pytest.mark.parametrize("value", NOT_ASCII_NUMBERS)
@pytest.mark.parametrize("path", ["/contacts", "/contact_lists"])
def test_limit_takes_ascii_digits_only(served: Sandbox, path: str, value: str) -> None:
    response = _get(served, path, limit=value)
    assert response.status_code == 400, response.text
    body = response.json()
    validate("APIErrorSchema", body)
    assert body[0]["error_key"] == "contacts.api.validation.error" and "limit" in body[0]["error_message"]


@pytest.mark.parametrize(
    "value",
    [
        "\uff12\uff10\uff12\uff16-01-01T00:00:00Z",  # full-width year
        "2026-\u0660\u0661-01T00:00:00Z",  # Arabic-Indic month
        "2026-01-01T00:00:00+\u0660\u0665:00",  # Arabic-Indic offset
        "2026-01-01",
    ],
)
def test_date_times_take_ascii_digits_only(served: Sandbox, value: str) -> None:
    response = _get(served, "/contacts", status="unsubscribed", optout_after=value)
    if value.isascii():
        assert response.status_code == 200
        return
    assert response.status_code == 400, response.text
    validate("APIErrorSchema", response.json())
    assert "optout_after" in response.json()[0]["error_message"]


def test_segment_id_takes_ascii_digits_only(served: Sandbox) -> None:
    assert _get(served, "/contacts", segment_id="12").status_code == 404  # a number: no such segment
    for value in ("\u00b2", "\uff11\uff12", "\u0661"):  # superscript two, full-width 12, Arabic-Indic 1
        response = _get(served, "/contacts", segment_id=value)
        assert response.status_code == 400 and "segment_id" in response.json()[0]["error_message"]


def test_a_redirect_port_of_other_digits_is_not_loopback(served: Sandbox) -> None:
    client = served.oauth._client(served.oauth.client_id)
    assert client.allows("http://127.0.0.1:8765/callback")
    assert not client.allows("http://127.0.0.1:\uff18\uff17\uff16\uff15/callback")


def test_a_content_length_that_is_not_ascii_digits_closes_the_connection(served: Sandbox) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        conn.putrequest("POST", "/v3/contacts/counts")
        conn.putheader("Authorization", f"Bearer {served.token}")
        conn.putheader("Content-Length", "+0")
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        assert response.getheader("Connection") == "close"  # the body could not be delimited
    finally:
        conn.close()
