"""Regression tests for defects that leaked a token or lost a sign-in (issue 9, items 1, 2, 3 and 5)."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccoptout_xl.cli import main
from ccoptout_xl.credentials import Tokens, token_keeper
from ccoptout_xl.sandbox import AccountSpec, Sandbox

from .conftest import ANCHOR, FakeTime, counts_in_processes


@pytest.fixture
def signed_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A sandbox and its sign-in server, this process configured for them, and a stored sign-in."""
    spec = AccountSpec(contacts=1_000, seed=3, anchor=ANCHOR)
    with Sandbox(spec, rate_limit=None, daily_quota=None) as sb:
        monkeypatch.setenv("CCOPTOUT_CONFIG_DIR", str(tmp_path / "config"))
        monkeypatch.setenv("CCOPTOUT_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("CCOPTOUT_CLIENT_ID", sb.oauth.client_id)
        monkeypatch.setenv("CCOPTOUT_AUTH_URL", sb.auth_url)
        monkeypatch.setenv("CCOPTOUT_API_URL", sb.base_url)
        token_keeper(sb.oauth.client_id).save(Tokens.from_response(sb.oauth.issue()))
        yield sb


class Listener:
    """A TCP listener on another loopback address that records whether anyone connected and what they sent."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.2", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            with connection:
                connection.settimeout(1)
                try:
                    self.received += connection.recv(65536)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@pytest.fixture
def other_host() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


# -- 1. the loopback check reads the host the HTTP library connects to ------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "http://{other}\\@127.0.0.1:{port}/v3",
        "http://{other}:{other_port}\\@127.0.0.1:{port}/v3",
        "http://user:pass@127.0.0.1:{port}/v3",
        "http://127.0.0.1:{port}\\@{other}/v3",
    ],
)
def test_an_authority_that_parsers_read_differently_is_refused(
    signed_in: Sandbox, other_host: Listener, monkeypatch, capsys, template: str
) -> None:
    port = signed_in.base_url.split(":")[2].split("/")[0]
    other = f"127.0.0.2:{other_host.port}"
    url = template.format(other=other, other_port=other_host.port, port=port)
    monkeypatch.setenv("CCOPTOUT_API_URL", url)
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", signed_in.token)
    signed_in.reset_log()
    assert main(["fetch", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "host and port" in err
    assert signed_in.token not in err
    time.sleep(0.3)  # let the listener take any connection that was (wrongly) made
    assert other_host.received == b"" and signed_in.requests == []


def test_the_sign_in_server_address_gets_the_same_check(signed_in: Sandbox, other_host: Listener, monkeypatch, capsys):
    port = signed_in.auth_url.split(":")[2].split("/")[0]
    config = Path(os.environ["CCOPTOUT_CONFIG_DIR"]) / "config.ini"
    config.write_text(
        f"[oauth]\nclient_id = {signed_in.oauth.client_id}\n"
        f"auth_url = http://127.0.0.2:{other_host.port}\\@127.0.0.1:{port}/oauth2\n",
        encoding="utf-8",
    )
    monkeypatch.delenv("CCOPTOUT_AUTH_URL")
    signed_in.oauth.clock_offset = 25 * 3600  # the stored access token has expired: a renewal would be sent
    assert main(["fetch", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "auth_url" in err
    time.sleep(0.3)
    assert other_host.received == b""
    assert [r for r in signed_in.oauth.token_requests] == []


# -- 2. a token with a line break never reaches a header or a message --------------------------------------


@pytest.mark.parametrize("splice", ["\n", "\r\n", " ", "\t", '"', "\x00"[:0] + "\u00e9"])
def test_a_malformed_access_token_is_refused_without_showing_it(
    signed_in: Sandbox, monkeypatch, capsys, caplog, splice: str
) -> None:
    token = signed_in.token
    middle = len(token) // 2
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", token[:middle] + splice + token[middle:])
    caplog.set_level("DEBUG")
    signed_in.reset_log()
    assert main(["fetch", "--no-cache"]) == 2
    out, err = capsys.readouterr()
    assert "CCOPTOUT_ACCESS_TOKEN is not an access token" in err and err.count("\n") == 1
    for text in (out, err, caplog.text):
        assert token[:middle][-24:] not in text and token[middle:][:24] not in text
    assert signed_in.requests == []


# -- 3. a damaged tokens.json is moved aside, whatever the damage, and never printed ---------------------


def _damage(good: dict) -> list[bytes]:
    access, refresh = good["access_token"], good["refresh_token"]
    text = json.dumps(good)
    return [
        text.encode("utf-8").replace(b'"scope"', b'"sc\xffope"'),  # one byte that is not UTF-8
        text.encode("utf-16"),
        b"\x00\x01\x02" + access.encode() + b"\xfe",
        json.dumps(good | {"access_token": 12345}).encode(),
        json.dumps(good | {"access_token": None}).encode(),
        json.dumps(good | {"access_token": [access]}).encode(),
        json.dumps(good | {"refresh_token": {"value": refresh}}).encode(),
        json.dumps(good | {"access_token": access[:20] + "\n" + access[20:]}).encode(),
        json.dumps(good | {"expires_at": "2026-05-01T10:00:00"}).encode(),  # no offset
        json.dumps(good | {"expires_at": 1767225600}).encode(),
        json.dumps(good | {"expires_at": "tomorrow"}).encode(),
        json.dumps(good | {"scope": ["contact_data"]}).encode(),
        ("[" * 100_000 + "]" * 100_000).encode(),  # deeper than the JSON reader's recursion
        b'{"access_token": "' + access.encode() + b'", "access_token": ',
        b"null",
    ]


def test_every_kind_of_damaged_token_file_is_moved_aside_with_sign_in_again(signed_in: Sandbox, capsys) -> None:
    path = Path(os.environ["CCOPTOUT_CONFIG_DIR"]) / "tokens.json"
    good = json.loads(path.read_text(encoding="utf-8"))
    for damaged in _damage(good):
        path.write_bytes(damaged)
        assert main(["fetch", "--no-cache"]) == 7
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and "moved to tokens.json.damaged" in err and "sign in again" in err, err
        assert good["access_token"][-24:] not in out + err and good["refresh_token"][-12:] not in out + err
        assert not path.exists() and (path.parent / "tokens.json.damaged").read_bytes() == damaged
        assert main(["fetch", "--no-cache"]) == 7  # the next run starts clean: not signed in
        assert "Not signed in" in capsys.readouterr().err


# -- 5. after a server-side invalidation, every process retries with the token now stored --------------------


def test_eight_processes_hit_by_one_invalidation_refresh_once_and_all_succeed(signed_in: Sandbox) -> None:
    assert signed_in.oauth.rotating and signed_in.oauth.token_rate_limit == 1
    assert signed_in.oauth.invalidate_access_tokens() >= 1  # the stored access token is now refused with 401
    # Each process reads the stored (now invalid) token before the race.
    outputs = counts_in_processes(8, before_the_race="client.http.tokens.access_token()")
    assert outputs == [str(signed_in.account.counts()["total"])] * 8
    refreshes = [r for r in signed_in.oauth.token_requests if r.grant_type == "refresh_token"]
    assert [r.status for r in refreshes] == [200]  # exactly one renewal, no invalid_grant
    unauthorized = [r for r in signed_in.requests if r.status == 401]
    assert len(unauthorized) == 8  # each process was refused once, then succeeded with the renewed token
    assert token_keeper(signed_in.oauth.client_id).load().expires_at > dt.datetime.now(dt.timezone.utc)


def test_a_token_renewed_elsewhere_and_refused_too_is_renewed_again(
    signed_in: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ccoptout_xl.auth import SignedInTokens
    from ccoptout_xl.client import Client
    from ccoptout_xl.config import OAuthApp
    from ccoptout_xl.http_client import HTTPClient

    app = OAuthApp.load()
    store = token_keeper(app.client_id)
    clock = FakeTime().drive(signed_in, monkeypatch)  # the token endpoint's pace, not slept
    first, second = (
        Client(HTTPClient(signed_in.base_url, SignedInTokens(app, store, sleep=clock.sleep, clock=clock), rate=None))
        for _ in range(2)
    )
    with first, second:
        first.contact_counts()
        second.contact_counts()  # both hold the same access token
        signed_in.oauth.invalidate_access_tokens()
        first.contact_counts()  # refused, renewed and stored
        signed_in.oauth.invalidate_access_tokens()  # the renewed token is refused too
        assert second.contact_counts()["total"] == signed_in.account.counts()["total"]
    refreshes = [r for r in signed_in.oauth.token_requests if r.grant_type == "refresh_token"]
    assert [r.status for r in refreshes] == [200, 200]


@pytest.mark.parametrize("scheme", ["HTTP", "Http"])
def test_a_plain_http_address_in_any_case_never_goes_through_a_proxy(
    signed_in: Sandbox, other_host: Listener, monkeypatch, capsys, scheme: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.2:{other_host.port}")  # would see the bearer token
    monkeypatch.setenv("CCOPTOUT_API_URL", signed_in.base_url.replace("http", scheme, 1))
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", signed_in.token)
    assert main(["fetch", "--no-cache", "--latest", "2", "--format", "json"]) == 0, capsys.readouterr().err
    time.sleep(0.3)
    assert other_host.received == b"" and len(signed_in.requests) > 0
