"""Which email made them leave: opt-outs joined to their campaign, end to end over HTTP against the sandbox.

The sandbox's ``Account.campaign_truth()`` says which activity each opt-out came through (or none), and
``campaign_cases()`` names the contacts of each hard case: people who unsubscribe from an old email, deleted
contacts in reports, a contact who left through an email, came back and was later removed by the account, ...
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccoptout_xl.cli import main
from ccoptout_xl.formats import write_campaign_counts, write_optouts
from ccoptout_xl.query import OptOutQuery
from ccoptout_xl.sandbox import AccountSpec, Sandbox
from ccoptout_xl.sandbox.oauth import SCOPES
from ccoptout_xl.service import CAMPAIGNS_ON, StorePolicy, get_campaign_counts, get_optouts

from .conftest import ANCHOR, make_client

SPEC = AccountSpec(contacts=6_000, seed=2, anchor=ANCHOR)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with Sandbox(SPEC, rate_limit=None, daily_quota=None, token_scopes=SCOPES) as sb:
        monkeypatch.setenv("CCOPTOUT_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("CCOPTOUT_API_URL", sb.base_url)
        monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", sb.token)
        yield sb


def fetched(sandbox: Sandbox, query: OptOutQuery | None = None, use_store: bool = True) -> list[dict]:
    """What ``fetch --campaigns --format json`` writes, through the library it calls (every campaign's report is
    read: hundreds of calls, which the command line paces at 4 a second; this client keeps no pace)."""
    client = make_client(sandbox)
    policy = StorePolicy(use_store=use_store, refresh=True)
    answer = get_optouts(client, query or OptOutQuery(), policy, campaigns=CAMPAIGNS_ON)
    out = io.StringIO()
    try:
        write_optouts(answer, out, "json", dt.timezone.utc, campaigns=True)
    finally:
        answer.close()
    return json.loads(out.getvalue())


def expected(sandbox: Sandbox) -> dict[str, str | None]:
    """contact id -> campaign id it came through (None: none), from the sandbox's ground truth."""
    campaign_of = {a.campaign_activity_id: c.campaign_id for c in sandbox.account.campaigns() for a in c.activities}
    return {
        contact: campaign_of[activity] if activity else None
        for contact, activity in sandbox.account.campaign_truth().items()
    }


@pytest.mark.parametrize("use_store", [True, False], ids=["store", "no-cache"])
def test_fetch_campaigns_joins_each_optout_to_its_campaign(sandbox: Sandbox, use_store: bool) -> None:
    rows = fetched(sandbox, OptOutQuery(include_deleted=True), use_store)
    assert rows and all(list(row)[-2:] == ["campaign_id", "campaign_name"] for row in rows)
    truth = expected(sandbox)
    assert {row["contact_id"]: row["campaign_id"] for row in rows} == truth
    names = {c.campaign_id: c.name for c in sandbox.account.campaigns()}
    assert all(row["campaign_name"] == (names[row["campaign_id"]] if row["campaign_id"] else None) for row in rows)
    # Every hard case is there, and right.
    cases = sandbox.account.campaign_cases()
    for case in ("burst", "old_email", "deleted", "reversed_then_removed", "twice"):
        assert cases[case], case
        assert all(
            c not in truth or dict((r["contact_id"], r["campaign_id"]) for r in rows)[c] == truth[c]
            for c in cases[case]
        )
    assert any(truth[c] is None for c in cases["reversed_then_removed"] if c in truth)


def test_campaigns_counts_the_window_per_campaign(sandbox: Sandbox) -> None:
    query = OptOutQuery(since=ANCHOR - dt.timedelta(days=120))
    counted_rows = get_campaign_counts(make_client(sandbox), query).rows
    out = io.StringIO()
    write_campaign_counts(counted_rows, out, "json", dt.timezone.utc)
    rows = json.loads(out.getvalue())
    assert rows and all(list(row) == ["campaign_id", "campaign_name", "sent_at", "optouts"] for row in rows)
    assert rows[-1]["campaign_id"] is None and rows[-1]["campaign_name"] is None
    counted = [row["optouts"] for row in rows[:-1]]
    assert counted == sorted(counted, reverse=True)
    optouts = fetched(sandbox, query)
    tally: dict[str | None, int] = {}
    for row in optouts:
        tally[row["campaign_id"]] = tally.get(row["campaign_id"], 0) + 1
    assert {row["campaign_id"]: row["optouts"] for row in rows} == tally | {None: tally.get(None, 0)}
    assert sum(row["optouts"] for row in rows) == len(optouts)


def test_a_repeat_costs_nothing_and_a_change_a_few_calls(sandbox: Sandbox) -> None:
    client = make_client(sandbox)
    get_optouts(client, OptOutQuery(), campaigns=CAMPAIGNS_ON).close()
    sandbox.reset_log()
    get_optouts(client, OptOutQuery(), campaigns=CAMPAIGNS_ON).close()
    assert len(sandbox.requests) == 0  # the store is fresh: nothing to ask
    contact = sandbox.account.pick("active", 1, 9)[0]
    sent = next(c for c in sandbox.account.campaigns() if c.last_sent and c.optouts)
    activity = next(a.campaign_activity_id for a in sent.activities if a.role == "primary_email")
    sandbox.account.opt_out(contact_ids=[contact], campaign_activity_id=activity)
    sandbox.reset_log()
    rows = fetched(sandbox)
    assert next(row for row in rows if row["contact_id"] == contact)["campaign_id"] == sent.campaign_id
    assert len(sandbox.requests) <= 2 + 4  # the sync (the newest page, one count), the summaries, one report


def test_the_cost_of_campaigns_against_the_issues_bound(sandbox: Sandbox) -> None:
    query = OptOutQuery(since=ANCHOR - dt.timedelta(days=60))
    sandbox.reset_log()
    get_optouts(make_client(sandbox), query, StorePolicy(use_store=False)).close()
    plain = len(sandbox.requests)
    sandbox.reset_log()
    fetched(sandbox, query, use_store=False)
    with_campaigns = len(sandbox.requests)
    report_pages = sum(r.path.endswith("/tracking/optouts") for r in sandbox.requests)
    with_optouts = sum(1 for c in sandbox.account.campaigns() if c.optouts)
    activities = sum(
        1
        for c in sandbox.account.campaigns()
        if c.optouts
        for a in c.activities
        if a.role in ("primary_email", "resend")
    )
    assert with_campaigns - plain <= 1 + with_optouts + max(report_pages, activities) + 2
    assert with_campaigns - plain <= 1 + 2 * with_optouts + math.ceil(report_pages) + 2


def test_without_campaign_data_campaign_features_end_with_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    with Sandbox(SPEC, rate_limit=None, daily_quota=None) as sb:  # the default sign-in: no campaign_data
        monkeypatch.setenv("CCOPTOUT_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("CCOPTOUT_API_URL", sb.base_url)
        monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", sb.token)
        assert main(["fetch", "--latest", "3"]) == 0  # everything else keeps working
        capsys.readouterr()
        for argv in (
            ["fetch", "--campaigns"],
            ["campaigns"],
            ["report", "--campaigns", "-o", str(tmp_path / "r.xlsx")],
        ):
            assert main(argv) == 4, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "ccoptout-xl login" in err and "campaign" in err, err


def test_the_command_line_shows_campaigns_from_the_store(sandbox: Sandbox, capsys, tmp_path: Path) -> None:
    """``fetch --campaigns`` as CSV (two more columns, neutralised) and as a table (a Campaign column), answered
    from a store synced just before (no call: the command line paces calls at 4 a second)."""
    fetched(sandbox)  # syncs the store and its campaign reports
    names = {c.campaign_id: c.name for c in sandbox.account.campaigns()}
    sandbox.reset_log()
    out = tmp_path / "optouts.csv"
    assert main(["fetch", "--campaigns", "--format", "csv", "-o", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert list(rows[0])[-2:] == ["campaign_id", "campaign_name"]
    truth = expected(sandbox)
    assert {row["contact_id"]: row["campaign_id"] or None for row in rows} == {
        contact: campaign for contact, campaign in truth.items() if contact in {row["contact_id"] for row in rows}
    }
    for row in rows:
        name = names.get(row["campaign_id"], "")
        assert row["campaign_name"] == ("'" + name if name.startswith(("=", "+", "-", "@")) else name)
    assert main(["fetch", "--campaigns", "--latest", "5"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].rstrip().endswith("Campaign") and "5 opt-outs" in table
    assert main(["campaigns", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "campaign_id,campaign_name,sent_at,optouts"
    assert len(sandbox.requests) == 0
