"""Signing in and staying signed in, end to end against the sandbox's authorization server over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import keyring
import pytest
import requests
from keyring.backend import KeyringBackend

from ccoptout_xl import connect
from ccoptout_xl.auth import SignedInTokens, default_token_provider
from ccoptout_xl.cli import main
from ccoptout_xl.client import Client
from ccoptout_xl.config import OAuthApp
from ccoptout_xl.credentials import TokenFile, TokenKeyring, Tokens, token_keeper
from ccoptout_xl.exceptions import SignInFailed, SignInRequired
from ccoptout_xl.query import OptOutQuery, from_api
from ccoptout_xl.sandbox import AccountSpec, Sandbox
from ccoptout_xl.signin import browser_sign_in, device_sign_in

from .conftest import ANCHOR, FakeTime, counts_in_processes, truth

DAY = 24 * 3600


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A sandbox with its sign-in server, and this process configured to sign in to it, in its own folder."""
    spec = AccountSpec(contacts=2_000, seed=3, unsubscribed_share=0.6, anchor=ANCHOR)  # 1,200 opt-outs: 3 pages
    with Sandbox(spec, rate_limit=None, daily_quota=None) as sb:
        sb.oauth.device_interval = 0.05
        monkeypatch.setenv("CCOPTOUT_CONFIG_DIR", str(tmp_path / "config"))
        monkeypatch.setenv("CCOPTOUT_CLIENT_ID", sb.oauth.client_id)
        monkeypatch.setenv("CCOPTOUT_AUTH_URL", sb.auth_url)
        monkeypatch.setenv("CCOPTOUT_API_URL", sb.base_url)
        monkeypatch.setenv("CCOPTOUT_REDIRECT_URI", "http://127.0.0.1:0/callback")
        yield sb


def app() -> OAuthApp:
    return OAuthApp.load()


def stored() -> Tokens | None:
    return token_keeper(app().client_id).load()


def seed_sign_in(sandbox: Sandbox, *, expired: bool = False) -> Tokens:
    """Store a sign-in as `login` would; ``expired``: its access token expired an hour ago."""
    if expired:
        sandbox.oauth.clock_offset = -25 * 3600
    tokens = Tokens.from_response(sandbox.oauth.issue())
    sandbox.oauth.clock_offset = 0
    token_keeper(app().client_id).save(tokens)
    return tokens


def refreshes(sandbox: Sandbox) -> list:
    return [r for r in sandbox.oauth.token_requests if r.grant_type == "refresh_token"]


# -- the two sign-in flows --------------------------------------------------------------------------------


def test_device_flow_end_to_end(sandbox: Sandbox) -> None:
    shown: list[str] = []

    def show(text: str) -> None:  # the person reads the code and approves it in their browser
        shown.append(text)
        sandbox.oauth.approve(text.rsplit(" ", 1)[1])

    tokens = device_sign_in(app(), show=show, opener=None)
    assert shown and shown[0].startswith(f"To sign in, open {sandbox.auth_url}/device")
    assert tokens.refresh_token and tokens.expires_at > dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=23)
    assert Client(_http(sandbox, tokens.access_token)).contact_counts() == sandbox.account.counts()
    # The sign-in asks for campaign reports too (campaign_data): the summaries answer.
    assert next(Client(_http(sandbox, tokens.access_token)).campaign_summaries(), None) is not None


def test_a_renewal_keeps_the_scopes_of_a_sign_in_from_before_campaign_reports(sandbox: Sandbox) -> None:
    seed_sign_in(sandbox, expired=True)  # granted contact_data, offline_access, account_read: not campaign_data
    assert main(["fetch", "--latest", "1"]) == 0  # renewed without asking for more than was granted
    assert main(["fetch", "--latest", "1", "--campaigns"]) == 4  # and campaign reports still need a new sign-in


def test_device_flow_refused_or_expired(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime().drive(sandbox, monkeypatch)  # polls and the token endpoint's pace, none of it slept
    with pytest.raises(SignInFailed, match="refused"):
        device_sign_in(
            app(),
            show=lambda text: sandbox.oauth.deny(text.rsplit(" ", 1)[1]),
            opener=None,
            sleep=clock.sleep,
            clock=clock,
        )
    sandbox.oauth.device_expires_in = 0.3
    with pytest.raises(SignInFailed, match="expired before it was approved"):
        device_sign_in(app(), show=lambda text: None, opener=None, sleep=clock.sleep, clock=clock)


def browser(approve: str = "approve", tamper_state: bool = False):
    """A stand-in for the person's browser: it follows the sign-in page's redirect back to our listener."""

    def open_url(url: str) -> None:
        answer = requests.get(url + "&" + urlencode({"sandbox_decision": approve}), allow_redirects=False, timeout=10)
        assert answer.status_code == 302
        location = answer.headers["Location"]
        if tamper_state:
            parts = urlsplit(location)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()} | {"state": "forged"}
            location = urlunsplit(parts._replace(query=urlencode(query)))
        assert urlsplit(location).hostname == "127.0.0.1"
        requests.get(location, timeout=10)

    return open_url


def test_browser_flow_with_pkce_end_to_end(sandbox: Sandbox) -> None:
    tokens = browser_sign_in(app(), show=lambda text: None, opener=browser(), wait=20)
    assert tokens.refresh_token
    assert Client(_http(sandbox, tokens.access_token)).account_summary()["organization_name"]
    grants = [r.grant_type for r in sandbox.oauth.token_requests]
    assert grants == ["authorization_code"]


def test_browser_flow_refused(sandbox: Sandbox) -> None:
    with pytest.raises(SignInFailed, match="refused"):
        browser_sign_in(app(), show=lambda text: None, opener=browser("deny"), wait=20)
    assert sandbox.oauth.token_requests == []  # nothing was exchanged


def test_answers_that_are_not_this_sign_ins_are_ignored(sandbox: Sandbox) -> None:
    # Another local program (or a web page) reaches the listener first with a forged answer: it is turned away,
    # and the real browser's answer that follows still completes the sign-in.
    def forged_then_real(url: str) -> None:
        browser(tamper_state=True)(url)
        browser()(url)

    assert browser_sign_in(app(), show=lambda text: None, opener=forged_then_real, wait=20).refresh_token
    with pytest.raises(SignInFailed, match="No answer from the browser within 1 s"):
        browser_sign_in(app(), show=lambda text: None, opener=browser(tamper_state=True), wait=1)


def test_an_unreachable_sign_in_server_is_a_clear_error(sandbox: Sandbox, capsys, monkeypatch) -> None:
    seed_sign_in(sandbox, expired=True)
    monkeypatch.setenv("CCOPTOUT_AUTH_URL", "http://127.0.0.1:9/oauth2/default/v1")  # nothing listens there
    assert main(["fetch"]) == 3
    err = capsys.readouterr().err
    assert "Could not reach the sign-in server 127.0.0.1:9" in err and err.count("\n") == 1
    assert main(["login", "--no-open"]) == 3
    assert "Could not reach the sign-in server" in capsys.readouterr().err
    assert stored() is not None  # nothing stored was touched


def test_a_renewed_sign_in_that_cannot_be_saved_still_serves_this_run(
    sandbox: Sandbox, capsys, monkeypatch, caplog
) -> None:
    seed_sign_in(sandbox, expired=True)

    def disk_full(self, tokens):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TokenFile, "save", disk_full)
    assert main(["fetch", "--latest", "2", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert "could not be saved" in caplog.text and "No space left" in caplog.text


def test_confidential_app_signs_in_with_its_secret(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime().drive(sandbox, monkeypatch)
    sandbox.oauth.register_client("confidential-app", secret="s3cret-value")
    monkeypatch.setenv("CCOPTOUT_CLIENT_ID", "confidential-app")
    monkeypatch.setenv("CCOPTOUT_CLIENT_SECRET", "s3cret-value")
    assert browser_sign_in(app(), show=lambda text: None, opener=browser(), wait=20, sleep=clock.sleep).refresh_token
    monkeypatch.setenv("CCOPTOUT_CLIENT_SECRET", "wrong")
    with pytest.raises(SignInFailed, match="client id"):
        browser_sign_in(app(), show=lambda text: None, opener=browser(), wait=20, sleep=clock.sleep)
    assert clock.slept == [1.0]  # the second code exchange came too soon after the first, and waited its second


def test_login_status_logout_commands(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    sandbox.oauth.auto_approve = True
    assert main(["login", "--no-open"]) == 0
    out = capsys.readouterr().out
    assert "enter the code" in out and "Signed in." in out and sandbox.account.name in out
    assert stored() is not None
    requests_before = len(sandbox.oauth.token_requests)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "Signed in: yes" in out and "Access token expires:" in out and sandbox.account.name in out
    assert "tokens.json" in out  # where it is kept (no keyring here)
    assert len(sandbox.oauth.token_requests) == requests_before  # status never renews
    assert main(["fetch", "--latest", "3", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["logout"]) == 0
    assert "Signed out" in capsys.readouterr().out and stored() is None
    assert main(["fetch"]) == 7
    assert "ccoptout-xl login" in capsys.readouterr().err


def test_status_with_an_expired_access_token_does_not_renew_it(sandbox: Sandbox, capsys) -> None:
    seed_sign_in(sandbox, expired=True)
    assert main(["status"]) == 0
    assert "expired at" in capsys.readouterr().out
    assert sandbox.oauth.token_requests == []


# -- staying signed in ------------------------------------------------------------------------------------


def test_expired_access_token_mid_scan_is_renewed_and_the_scan_goes_on(sandbox: Sandbox) -> None:
    seed_sign_in(sandbox)
    client = Client.from_environment(default_token_provider(), rate=None)
    pages = 0

    def after_each_page(fetched: int, total: int | None) -> None:
        nonlocal pages
        pages += 1
        if pages == 1:  # a day passes between two pages: every token issued so far is now expired
            sandbox.oauth.clock_offset = 25 * 3600

    result = from_api(client, OptOutQuery(include_deleted=True), on_progress=after_each_page, now=ANCHOR)
    assert [o.contact_id for o in result] == [o.contact_id for o in truth(sandbox, include_deleted=True)]
    assert pages > 1 and len(refreshes(sandbox)) == 1
    assert 401 in [r.status for r in sandbox.requests]


def test_rotation_keeps_working_across_refreshes(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    first = seed_sign_in(sandbox, expired=True)
    clock = FakeTime().drive(sandbox, monkeypatch)
    provider = SignedInTokens(app(), token_keeper(app().client_id), sleep=clock.sleep, clock=clock)
    second_access = provider.access_token()
    second = stored()
    assert second.refresh_token != first.refresh_token  # rotated, and the new one was stored
    provider.refresh(stale=second_access)  # force another renewal: the stored (new) refresh token is used
    assert [r.status for r in refreshes(sandbox)] == [200, 200]
    assert clock.slept == [1.0]  # the token endpoint is called at most once a second: the second call waited


def test_revoked_sign_in_says_sign_in_again(sandbox: Sandbox, capsys) -> None:
    seed_sign_in(sandbox, expired=True)
    sandbox.oauth.revoke_refresh_tokens()
    assert main(["fetch"]) == 7
    err = capsys.readouterr().err
    assert "sign in again with `ccoptout-xl login`" in err and err.count("\n") == 1
    assert stored() is None  # removed, as documented, so later runs do not try it again
    assert main(["fetch"]) == 7
    assert [r.status for r in refreshes(sandbox)] == [400]  # no retry loop against the token endpoint


@pytest.mark.parametrize("damage", ["{not json", '{"access_token": "abc", "refresh', "", '["a list"]'])
def test_a_damaged_token_file_is_a_clear_message_once(sandbox: Sandbox, capsys, damage: str) -> None:
    path = Path(os.environ["CCOPTOUT_CONFIG_DIR"]) / "tokens.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(damage, encoding="utf-8")
    assert main(["fetch"]) == 7
    err = capsys.readouterr().err
    assert "damaged" in err and "tokens.json.damaged" in err and err.count("\n") == 1
    assert (path.parent / "tokens.json.damaged").read_text(encoding="utf-8") == damage  # kept for inspection
    assert main(["fetch"]) == 7
    assert "Not signed in" in capsys.readouterr().err  # not the same failure over and over


def test_token_file_is_owner_only(sandbox: Sandbox) -> None:
    seed_sign_in(sandbox)
    path = Path(os.environ["CCOPTOUT_CONFIG_DIR"]) / "tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o644)  # restored from a backup, say
    assert stored() is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_eight_processes_needing_a_refresh_at_once_refresh_once(sandbox: Sandbox, tmp_path: Path) -> None:
    assert sandbox.oauth.rotating and sandbox.oauth.token_rate_limit == 1
    seed_sign_in(sandbox, expired=True)
    assert counts_in_processes(8) == [str(sandbox.account.counts()["total"])] * 8
    assert [r.status for r in refreshes(sandbox)] == [200]  # exactly one call, no invalid_grant
    assert stored().expires_at > dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=23)


# -- where tokens are kept, and where they never appear ---------------------------------------------------


class MemoryKeyring(KeyringBackend):
    """A stand-in for the OS keyring (none runs here): records what is written, in order."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}
        self.writes: list[str] = []

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password
        self.writes.append(username)

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.entries:
            raise keyring.errors.PasswordDeleteError(username)
        del self.entries[(service, username)]


def test_keyring_keeps_three_small_entries_refresh_token_first(sandbox: Sandbox, monkeypatch) -> None:
    memory = MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(memory)
    try:
        monkeypatch.delenv("CCOPTOUT_TOKEN_STORE", raising=False)
        store = token_keeper(sandbox.oauth.client_id)
        assert isinstance(store, TokenKeyring)
        tokens = Tokens.from_response(sandbox.oauth.issue())
        store.save(tokens)
        client_id = sandbox.oauth.client_id
        assert memory.writes == [f"{client_id}:refresh", f"{client_id}:access", f"{client_id}:details"]
        # Windows keeps each entry as UTF-16 and caps it at 2,560 bytes.
        assert all(len(value.encode("utf-16-le")) <= 2_560 for value in memory.entries.values())
        assert store.load() == tokens
        assert store.clear() and memory.entries == {}
    finally:
        keyring.set_keyring(previous)


def test_a_renewal_right_after_signing_in_waits_its_turn_instead_of_being_refused(sandbox: Sandbox) -> None:
    sandbox.oauth.auto_approve = True
    assert main(["login", "--no-open"]) == 0
    sandbox.oauth.clock_offset = 25 * 3600  # the next call gets a 401 and renews, within the second
    assert main(["fetch", "--latest", "1", "--no-cache"]) == 0
    assert [r.status for r in refreshes(sandbox)] == [200]  # not a 429 from the token endpoint first


def test_no_token_text_in_any_output(sandbox: Sandbox, capsys, caplog, tmp_path: Path) -> None:
    caplog.set_level("DEBUG")
    sandbox.oauth.auto_approve = True
    assert main(["--debug", "login", "--no-open"]) == 0
    first = stored()
    sandbox.oauth.clock_offset = 25 * 3600  # the next call gets a 401 and renews
    assert main(["--debug", "fetch", "--latest", "2", "-o", str(tmp_path / "out.json"), "--format", "json"]) == 0
    assert main(["--debug", "report", "--latest", "2", "-o", str(tmp_path / "out.xlsx")]) == 0
    assert main(["--debug", "status"]) == 0
    second = stored()
    out, err = capsys.readouterr()
    with zipfile.ZipFile(tmp_path / "out.xlsx") as workbook:
        parts = "".join(workbook.read(name).decode("utf-8", "replace") for name in workbook.namelist())
    written = (tmp_path / "out.json").read_text() + parts
    secrets = [first.access_token, first.refresh_token, second.access_token, second.refresh_token]
    assert first.access_token != second.access_token
    for secret in secrets:
        for text in (out, err, caplog.text, written, repr(first), repr(second)):
            assert secret not in text
            assert secret[-40:] not in text


def _http(sandbox: Sandbox, token: str):
    from ccoptout_xl.auth import StaticToken
    from ccoptout_xl.http_client import HTTPClient

    return HTTPClient(sandbox.base_url, StaticToken(token), rate=None)


def test_file_store_round_trip(tmp_path: Path) -> None:
    store = TokenFile(tmp_path / "t.json")
    tokens = Tokens("a.b.c", "refresh", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "contact_data")
    store.save(tokens)
    assert store.load() == tokens
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temporary file left
    assert store.clear() and not store.clear() and store.load() is None


def test_not_set_up_says_how(monkeypatch, capsys) -> None:
    monkeypatch.delenv("CCOPTOUT_CLIENT_ID", raising=False)
    assert main(["login"]) == 2
    assert "CCOPTOUT_CLIENT_ID" in capsys.readouterr().err
    with pytest.raises(SignInRequired), connect():
        pass
