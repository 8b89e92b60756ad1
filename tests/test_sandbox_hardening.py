"""The sandbox under hostile input (issue 9): its settings, its query strings, its cache folder, its faults."""

from __future__ import annotations

import http.client
import logging
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ccoptout_xl.auth import SignedInTokens, StaticToken
from ccoptout_xl.cli import main
from ccoptout_xl.client import Client
from ccoptout_xl.config import OAuthApp
from ccoptout_xl.credentials import TokenFile, Tokens
from ccoptout_xl.http_client import HTTPClient
from ccoptout_xl.sandbox import MAX_CONTACTS, AccountSpec, Fault, Sandbox, SettingError, accounts
from ccoptout_xl.sandbox.accounts import CACHE_ENV, Account, default_cache_dir, usable_cache_dir

from .conftest import ANCHOR, FAST_RETRY
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


# -- 1. settings: one line, exit 2, before anything is generated or bound ----------------------------------

BAD_OPTIONS = [
    (["--rate-limit", "-1"], "--rate-limit"),
    (["--rate-limit", "nan"], "--rate-limit"),
    (["--rate-limit", "inf"], "--rate-limit"),
    (["--rate-limit", "1e400"], "--rate-limit"),
    (["--latency", "inf"], "--latency"),
    (["--latency", "nan"], "--latency"),
    (["--latency", "-1"], "--latency"),
    (["--latency", "61"], "--latency"),
    (["--contacts", str(10**12)], "--contacts"),
    (["--contacts", str(MAX_CONTACTS + 1)], "--contacts"),
    (["--daily-quota", "0"], "--daily-quota"),
    (["--port", "70000"], "--port"),
    (["--port", "-1"], "--port"),
    (["--seed", str(10**27)], "--seed"),
    (["--seed", "-1"], "--seed"),
]


@pytest.mark.usefixtures("nothing_generated_or_bound")
@pytest.mark.parametrize(("argv", "option"), BAD_OPTIONS)
def test_bad_sandbox_options_are_one_line_and_exit_2(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["sandbox", "--port", "0", "--contacts", "100", *argv])
    except SystemExit as refused:  # the parser's own checks (one line too)
        code = refused.code
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert option in err and "Traceback" not in err and "unexpected error" not in err


def test_rate_limit_0_still_means_no_limit(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    served: list[Sandbox] = []
    monkeypatch.setattr(Sandbox, "wait", lambda self: served.append(self))  # return at once instead of serving
    assert main(["sandbox", "--port", "0", "--contacts", "20", "--rate-limit", "0", "--latency", "0"]) == 0
    assert [s.rate_limit for s in served] == [None]
    assert "Sandbox API: http://127.0.0.1:" in capsys.readouterr().out


@pytest.mark.usefixtures("nothing_generated_or_bound")
@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"rate_limit": -1}, "rate_limit"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"rate_limit": math.nan}, "rate_limit"),
        ({"rate_limit": math.inf}, "rate_limit"),
        ({"rate_limit": True}, "rate_limit"),
        ({"latency": math.inf}, "latency"),
        ({"latency": math.nan}, "latency"),
        ({"latency": -0.5}, "latency"),
        ({"latency": "1"}, "latency"),
        ({"daily_quota": 0}, "daily_quota"),
        ({"daily_quota": 2.5}, "daily_quota"),
        ({"port": 70_000}, "port"),
        ({"port": -1}, "port"),
    ],
)
def test_sandbox_settings_are_checked_first(settings: dict[str, object], name: str) -> None:
    with pytest.raises(SettingError) as caught:
        Sandbox(SPEC, **settings)  # type: ignore[arg-type]
    assert caught.value.setting == name and isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert name in message and "\n" not in message


def test_account_spec_bounds() -> None:
    assert AccountSpec(contacts=MAX_CONTACTS, seed=2**63 - 1).contacts == MAX_CONTACTS  # nothing generated yet
    for bad in ({"contacts": MAX_CONTACTS + 1}, {"contacts": 10**12}, {"seed": 10**27}, {"seed": -1}):
        with pytest.raises(SettingError, match=next(iter(bad))):
            AccountSpec(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1e30 or more"):
        AccountSpec(seed=10**5000)  # too long for str(): still a one-line ValueError


def test_settings_changed_while_serving_are_checked(sandbox: Sandbox) -> None:
    for name, value in (("rate_limit", math.nan), ("rate_limit", -2), ("daily_quota", 0), ("latency", math.inf)):
        before = getattr(sandbox, name)
        with pytest.raises(SettingError):
            setattr(sandbox, name, value)
        assert getattr(sandbox, name) == before
    sandbox.rate_limit, sandbox.daily_quota, sandbox.latency = 2.5, 7, 0.0
    assert (sandbox.rate_limit, sandbox.daily_quota, sandbox.latency) == (2.5, 7, 0.0)
    sandbox.rate_limit = sandbox.daily_quota = None


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


# -- 3. the cache folder is this user's own ------------------------------------------------------------------


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temporary folder is ``tmp_path/tmp``; no cache folder configured; no fallback yet."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setattr(accounts, "_fallback", None)
    return root


def _user_folder(root: Path) -> Path:
    tag = str(os.getuid()) if hasattr(os, "getuid") else accounts._user_tag()
    return root / f"ccoptout-xl-{tag}"


def test_the_default_cache_is_per_user_and_private(temp_root: Path) -> None:
    expected = _user_folder(temp_root) / "ccoptout-xl-sandbox"
    assert default_cache_dir() == expected
    assert usable_cache_dir() == expected and expected.is_dir()
    account = Account.open(AccountSpec(contacts=10, seed=1, anchor=ANCHOR))
    assert account.path.parent == expected.resolve()
    if hasattr(os, "getuid"):
        for folder in (expected.parent, expected):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        expected.parent.chmod(0o755)  # made too open by someone: made private again
        usable_cache_dir()
        assert stat.S_IMODE(expected.parent.stat().st_mode) == 0o700


def _falls_back(caplog: pytest.LogCaptureFixture, wanted: Path, why: str) -> None:
    with caplog.at_level(logging.WARNING, logger="ccoptout_xl.sandbox.accounts"):
        folder = usable_cache_dir()
        account = Account.open(AccountSpec(contacts=10, seed=1, anchor=ANCHOR))
    assert folder != wanted and folder.is_dir() and account.path.parent == folder.resolve()
    assert len(list(account.contacts())) == 10
    notes = [r.getMessage() for r in caplog.records if r.name == "ccoptout_xl.sandbox.accounts"]
    assert len(notes) == 1 and str(wanted) in notes[0] and why in notes[0] and CACHE_ENV in notes[0]
    if hasattr(os, "getuid"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    caplog.clear()
    assert usable_cache_dir() == folder and not caplog.records  # one notice per process


def test_a_file_in_the_way_falls_back_with_a_notice(temp_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    _user_folder(temp_root).write_text("someone else's file")
    _falls_back(caplog, default_cache_dir(), "is not a folder")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_a_symbolic_link_in_the_way_falls_back(temp_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = temp_root / "planted"
    elsewhere.mkdir(mode=0o700)
    _user_folder(temp_root).symlink_to(elsewhere, target_is_directory=True)
    _falls_back(caplog, default_cache_dir(), "symbolic link")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners")
def test_a_folder_of_another_user_falls_back(
    temp_root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() == 0:
        squatted = _user_folder(temp_root)
        squatted.mkdir(mode=0o777)
        os.chown(squatted, 4242, -1)  # really another user's
    else:
        pretended = os.getuid() + 4242
        monkeypatch.setattr(os, "getuid", lambda: pretended)  # this process plays another user
        _user_folder(temp_root).mkdir(mode=0o777)
    _falls_back(caplog, default_cache_dir(), "belongs to another user")


def test_a_configured_folder_that_cannot_be_used_falls_back(
    temp_root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = temp_root / "mine"
    configured.write_text("a file, not a folder")
    monkeypatch.setenv(CACHE_ENV, str(configured))
    _falls_back(caplog, configured, "is not a folder")


def test_a_folder_that_is_not_writable_falls_back(
    temp_root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = temp_root / "read-only"
    configured.mkdir()
    monkeypatch.setenv(CACHE_ENV, str(configured))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != configured and real_access(path, mode))
    _falls_back(caplog, configured, "not writable")


def test_a_cache_that_fails_while_generating_falls_back(
    temp_root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = accounts.build

    def disk_full(spec: AccountSpec, path: Path) -> None:
        if path.parent == default_cache_dir().resolve():
            raise OSError(28, "No space left on device")
        real_build(spec, path)

    monkeypatch.setattr(accounts, "build", disk_full)
    with caplog.at_level(logging.WARNING, logger="ccoptout_xl.sandbox.accounts"):
        account = Account.open(AccountSpec(contacts=10, seed=1, anchor=ANCHOR))
    assert account.path.parent != default_cache_dir().resolve() and len(list(account.contacts())) == 10
    assert "No space left on device" in caplog.text


# -- faults the soak needs: 429 bursts, token invalidation, truncated bodies ---------------------------------


@pytest.fixture
def fresh() -> Iterator[Sandbox]:
    with Sandbox(SPEC, rate_limit=None, daily_quota=None) as sb:
        yield sb


def test_a_burst_of_429(fresh: Sandbox) -> None:
    fresh.faults.add(Fault(kind="429", at_request=2, burst=3))
    responses = [_get(fresh, "/contacts/counts") for _ in range(6)]
    assert [r.status_code for r in responses] == [200, 429, 429, 429, 200, 200]
    assert responses[1].json() == {"error_key": "throttled", "error_message": "Too Many Requests"}
    validate("AuthorizationErrorSchema", responses[1].json())
    assert [r.status for r in fresh.requests] == [200, 429, 429, 429, 200, 200]
    assert fresh.faults.fired() == {"429": 3}


def test_bursts_by_rate_are_seeded(fresh: Sandbox) -> None:
    def pattern() -> list[int]:
        fresh.reset_log()
        fresh.faults.clear()
        fresh.faults.add(Fault(kind="503", rate=0.2, seed=3, burst=2, path_prefix=None))
        return [_get(fresh, "/account/summary").status_code for _ in range(30)]

    first = pattern()
    assert first == pattern() and 503 in first
    runs = [len(run) for run in "".join("x" if s == 503 else "." for s in first[:-1]).split(".") if run]
    assert all(length % 2 == 0 for length in runs[:-1])  # whole bursts of 2 (the last may be cut off)


def test_truncated_fault_sends_half_a_body_and_closes(fresh: Sandbox) -> None:
    fresh.faults.add(Fault(kind="truncated", at_request=1))
    conn = http.client.HTTPConnection("127.0.0.1", fresh.port, timeout=10)
    try:
        conn.request("GET", "/v3/contacts?limit=5", headers={"Authorization": f"Bearer {fresh.token}"})
        response = conn.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()
    assert _get(fresh, "/contacts", limit="5").status_code == 200


def test_the_client_retries_a_truncated_body(fresh: Sandbox) -> None:
    fresh.faults.add(Fault(kind="truncated", at_request=2))
    client = Client(HTTPClient(fresh.base_url, StaticToken(fresh.token), rate=None, retry=FAST_RETRY))
    ids = [c["contact_id"] for c in client.contacts(status="all", limit=100)]
    assert len(ids) == len(set(ids)) == 300 and client.stats.retries == 1


def test_invalidate_fault_kills_live_tokens_and_a_signed_in_client_renews(fresh: Sandbox, tmp_path: Path) -> None:
    store = TokenFile(tmp_path / "tokens.json")
    store.save(Tokens.from_response(fresh.oauth.issue()))
    first = store.load()
    assert first is not None
    app = OAuthApp(client_id=fresh.oauth.client_id, auth_url=fresh.auth_url)
    provider = SignedInTokens(app, store, lock_path=tmp_path / "refresh.lock")
    fresh.faults.add(Fault(kind="invalidate", at_request=2))
    client = Client(HTTPClient(fresh.base_url, provider, rate=None, retry=FAST_RETRY))
    ids = [c["contact_id"] for c in client.contacts(status="all", limit=100)]
    assert len(ids) == len(set(ids)) == 300
    assert [r.status for r in fresh.requests if r.path.startswith("/v3/")] == [
        200,
        401,
        200,
        200,
        200,
    ]  # 3 pages + an empty one
    assert [r.grant_type for r in fresh.oauth.token_requests] == ["refresh_token"]
    renewed = store.load()
    assert renewed is not None and renewed.access_token != first.access_token
    assert fresh.oauth.validate(first.access_token) is None  # the old one stays dead
    assert _get(fresh, "/contacts/counts").status_code == 401  # the sandbox's own token was issued before too


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "slow", "delay": math.inf},
        {"kind": "slow", "delay": math.nan},
        {"kind": "500", "rate": math.nan},
        {"kind": "500", "burst": 0},
        {"kind": "500", "at_request": 0},
        {"kind": "teapot"},
    ],
)
def test_bad_faults_are_refused(fault: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Fault(**fault)  # type: ignore[arg-type]
