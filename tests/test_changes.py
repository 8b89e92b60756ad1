"""``ccoptout-xl changes``: what the local store learned since a date, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccoptout_xl.cli import main
from ccoptout_xl.sandbox import AccountSpec, Sandbox

from .conftest import ANCHOR, sandbox_as_api

SPEC = AccountSpec(contacts=1_500, seed=8, unsubscribed_share=0.3, anchor=ANCHOR)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with sandbox_as_api(SPEC, monkeypatch, tmp_path / "cache") as sb:
        yield sb


def changed_account(sandbox: Sandbox) -> dict[str, tuple[str, str]]:
    """Sync, then one change of each kind; the email and event of each changed contact, by contact id."""
    assert main(["sync"]) == 0
    account, rng = sandbox.account, random.Random(4)
    now = dt.datetime.now(dt.timezone.utc)
    gone, removed = account.pick("unsubscribed", 2, rng)
    account.resubscribe([gone])
    account.delete([removed])
    (new,) = account.pick("active", 1, rng)
    account.opt_out(contact_ids=[new], at=now)
    (old,) = account.pick("active", 1, rng, created_by=now - dt.timedelta(days=400))
    account.opt_out(contact_ids=[old], at=now - dt.timedelta(days=400), backdated=True)
    emails = {c["contact_id"]: c["email_address"]["address"] for c in account.contacts()}
    events = {gone: "resubscribed", removed: "deleted", new: "opted_out", old: "opted_out"}
    return {contact: (emails[contact], event) for contact, event in events.items()}


def test_json_lists_each_change_with_the_documented_keys(sandbox: Sandbox, capsys) -> None:
    expected = changed_account(sandbox)
    since = dt.datetime.now(dt.timezone.utc).isoformat()
    capsys.readouterr()
    assert main(["changes", "--since", since, "--format", "json", "--refresh", "--tz", "UTC"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert all(list(row) == ["contact_id", "email", "event", "opt_out_date", "detected_at"] for row in rows)
    assert {row["contact_id"]: (row["email"], row["event"]) for row in rows} == expected
    assert all(row["detected_at"] >= since[:19] for row in rows)
    backdated = next(row for row in rows if row["event"] == "opted_out" and row["opt_out_date"] < since[:4])
    assert backdated["opt_out_date"].endswith("+00:00")
    # The time to pass next, and passing it gives nothing new.
    hint = captured.err.strip().splitlines()[-1]
    assert "next time, use --since" in hint
    next_since = hint.rsplit("--since ", 1)[1].split(" ")[0]
    assert main(["changes", "--since", next_since, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_csv_and_table(sandbox: Sandbox, capsys, tmp_path: Path) -> None:
    expected = changed_account(sandbox)
    since = dt.datetime.now(dt.timezone.utc).isoformat()
    out = tmp_path / "changes.csv"
    assert main(["changes", "--since", since, "--format", "csv", "-o", str(out), "--refresh"]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert {row["contact_id"]: (row["email"], row["event"]) for row in rows} == expected
    assert "Wrote 4 changes" in capsys.readouterr().err
    assert main(["changes", "--since", since]) == 0
    table = capsys.readouterr().out
    assert "re-subscribed" in table and "deleted" in table and "opted out" in table and "4 changes" in table


def test_until_and_a_since_before_the_store_began(sandbox: Sandbox, capsys) -> None:
    changed_account(sandbox)
    capsys.readouterr()
    assert main(["changes", "--since", "2020-01-01", "--until", "2020-02-01", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert "began recording changes" in captured.err
