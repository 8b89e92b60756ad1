"""The use-case layer: what the command line, Excel and scripts share, and the drift defects it removed (each test
here failed when every front end chained the core calls itself)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import ccoptout_xl as cc
from ccoptout_xl import excel
from ccoptout_xl.cli import main
from ccoptout_xl.credentials import Tokens, token_keeper
from ccoptout_xl.sandbox import AccountSpec, Sandbox

from .conftest import ANCHOR, sandbox_as_api
from .test_excel import FakeBook


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    spec = AccountSpec(contacts=2_000, seed=8, unsubscribed_share=0.3, anchor=ANCHOR)
    with sandbox_as_api(spec, monkeypatch, tmp_path / "cache") as sb:
        yield sb


def calls_today() -> int:
    return cc.cache_state().calls_today


def api_calls(sandbox: Sandbox) -> int:
    return sum(r.path.startswith("/v3/") for r in sandbox.requests)


@pytest.mark.parametrize("command", ["fetch", "report"])
def test_no_cache_calls_count_toward_the_quota_guard_in_every_command(
    sandbox: Sandbox, tmp_path: Path, capsys, command: str
) -> None:
    assert main(["sync"]) == 0
    before = calls_today()
    sandbox.reset_log()
    assert main([command, "--no-cache", "-o", str(tmp_path / f"out.{'xlsx' if command == 'report' else 'csv'}")]) == 0
    assert api_calls(sandbox) > 0 and calls_today() == before + api_calls(sandbox)


def test_excel_refresh_shows_the_runs_notices_in_the_status_cell(sandbox: Sandbox, monkeypatch) -> None:
    book = FakeBook(Since="2026-01-01")
    excel.refresh(book)  # a full sync, and the list names
    monkeypatch.setenv("CCOPTOUT_DAILY_QUOTA", "2")  # the guard now stops syncs: the next Refresh answers from data
    excel.refresh(book)
    status = book.value(excel.STATUS)
    assert status.startswith("OK:") and "Note:" in status and "Answering from the opt-outs stored" in status


def test_every_notice_is_returned_as_well_as_heard(sandbox: Sandbox, monkeypatch) -> None:
    heard: list[str] = []
    with cc.connect() as client:
        cc.get_optouts(client, cc.OptOutQuery()).close()
        monkeypatch.setenv("CCOPTOUT_DAILY_QUOTA", "2")
        answer = cc.get_optouts(client, cc.OptOutQuery(), cc.StorePolicy(refresh=True), on_notice=heard.append)
        answer.close()
    assert answer.notices == heard and len(heard) == 1 and "quota" in heard[0]


def test_cache_status_and_clear_never_renew_the_sign_in(sandbox: Sandbox, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("CCOPTOUT_ACCESS_TOKEN")
    monkeypatch.setenv("CCOPTOUT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CCOPTOUT_CLIENT_ID", sandbox.oauth.client_id)
    monkeypatch.setenv("CCOPTOUT_AUTH_URL", sandbox.auth_url)
    monkeypatch.setenv("CCOPTOUT_TOKEN_STORE", "file")
    token_keeper(sandbox.oauth.client_id).save(Tokens.from_response(sandbox.oauth.issue()))
    assert main(["sync"]) == 0
    rows = cc.cache_state().rows
    sandbox.oauth.clock_offset = 25 * 3600  # the stored access token has expired
    sandbox.reset_log()
    assert main(["cache", "status"]) == 0 and f"Opt-outs stored: {rows:,}" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0 and f"({rows:,} opt-outs)" in capsys.readouterr().out
    assert list(sandbox.oauth.token_requests) == [] and list(sandbox.requests) == []  # no renewal, no call


def test_the_library_answers_what_the_command_line_prints(sandbox: Sandbox, capsys) -> None:
    with cc.connect() as client:
        answer = cc.get_optouts(client, cc.OptOutQuery(latest=7))
        emails = [o.email for o in answer]
        answer.close()
    assert main(["fetch", "--latest", "7", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split(",")[1] for line in lines] == emails and len(emails) == 7


def test_calls_of_a_question_that_fails_midway_are_counted_too(sandbox: Sandbox, tmp_path: Path) -> None:
    from ccoptout_xl.sandbox import Fault

    assert main(["sync"]) == 0
    before = calls_today()
    sandbox.reset_log()
    sandbox.faults.add(Fault(kind="malformed", at_request=2))  # the second page is not JSON: not retried
    assert main(["fetch", "--no-cache", "-o", str(tmp_path / "out.csv")]) == 3
    assert api_calls(sandbox) == 2 and calls_today() == before + 2


def test_a_sync_returns_its_notices(sandbox: Sandbox) -> None:
    from ccoptout_xl.store import OptOutStore

    with cc.connect() as client:
        path = OptOutStore.path_for(client)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a database" * 100)
        report = cc.sync(client)
    assert report.kind == "full" and len(report.notices) == 1 and "moved to" in report.notices[0]
