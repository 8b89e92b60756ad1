"""The sandbox's email campaigns over real HTTP on 127.0.0.1: the summaries report, campaigns and their activities,
the opt-outs report per activity (contract shapes, paging, newest first, errors, the campaign_data scope), and the
attribution ground truth with its hard cases, live opt-outs through an email, and determinism."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ccoptout_xl.sandbox import Account, AccountSpec, Sandbox
from ccoptout_xl.sandbox.campaigns import CampaignFact
from ccoptout_xl.sandbox.oauth import SCOPES

from . import contract
from .contract import ContractError, validate
from .sandbox_http import found, parse

ANCHOR = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
SPEC = AccountSpec(contacts=3_000, seed=4, anchor=ANCHOR)
SUMMARIES = "/reports/summary_reports/email_campaign_summaries"
STRING_COUNTS = ("UniqueEmailCounts",)
Body = dict[str, Any]


def open_sandbox(spec: AccountSpec = SPEC) -> Sandbox:
    return Sandbox(spec, rate_limit=None, daily_quota=None, token_scopes=SCOPES)


@pytest.fixture(scope="module")
def shared() -> Iterator[Sandbox]:
    """A sandbox that tests only read from (its token has every scope)."""
    with open_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    """A sandbox of its own, for a test that changes the account."""
    with open_sandbox() as sandbox:
        yield sandbox


def session(sandbox: Sandbox, token: str | None = None) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token or sandbox.token}"
    return s


def get(sandbox: Sandbox, path: str, token: str | None = None, **params: Any) -> requests.Response:
    return session(sandbox, token).get(sandbox.base_url + path, params=params, timeout=10)


def ok(sandbox: Sandbox, path: str, **params: Any) -> Any:
    response = get(sandbox, path, **params)
    assert response.status_code == 200, response.text
    return response.json()


def pages(sandbox: Sandbox, path: str, definition: str, **params: Any) -> Iterator[Body]:
    """Every page of a paged operation, following ``_links.next.href`` verbatim; each page validated."""
    s = session(sandbox)
    url: str | None = sandbox.base_url + path
    query: dict[str, Any] | None = params
    seen = 0
    while url is not None:
        response = s.get(url, params=query, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        validate(definition, body, strings_for_integers=STRING_COUNTS)
        yield body
        seen += 1
        assert seen < 1_000, "the pages never end"
        following = body.get("_links", {}).get("next")
        if following is None:
            return
        assert following["href"].startswith("/v3/") and "cursor=" in following["href"]
        url, query = sandbox.base_url.removesuffix("/v3") + following["href"], None


def summaries(sandbox: Sandbox, limit: int = 500) -> list[Body]:
    return [s for page in pages(sandbox, SUMMARIES, "BulkEmailCampaignSummariesPage", limit=str(limit))
            for s in page["bulk_email_campaign_summaries"]]  # fmt: skip


def report(sandbox: Sandbox, activity_id: str, limit: int = 500) -> list[Body]:
    path = f"/reports/email_reports/{activity_id}/tracking/optouts"
    return [row for page in pages(sandbox, path, "OptoutsTrackingActivitiesPage", limit=str(limit))
            for row in page["tracking_activities"]]  # fmt: skip


def second(value: str) -> int:
    """An instant to the second (the attribution rule compares to the second)."""
    return int(parse(value).timestamp() // 1)


def count(value: int | str) -> int:
    return value if isinstance(value, int) else int(value)


# --- the contract --------------------------------------------------------------------------------------


def test_vendored_campaign_contract_is_the_shared_one() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "cc-api" / contract.CAMPAIGN_CONTRACT_NAME
    if not shared.is_file():
        pytest.skip("shared/cc-api is not beside this checkout")
    vendored = Path(__file__).resolve().parent / "data" / contract.CAMPAIGN_CONTRACT_NAME
    assert vendored.read_bytes() == shared.read_bytes()


def test_contract_helper_reads_both_contracts() -> None:
    validate("Contacts", {"contacts": []})  # as before: the contacts contract
    page = {"tracking_activities": [], "_links": {}}
    validate("OptoutsTrackingActivitiesPage", page)  # found in the campaigns contract (and in both: identical)
    validate("OptoutsTrackingActivitiesPage", page, contract="campaigns")
    with pytest.raises(ContractError):
        validate("OptoutsTrackingActivitiesPage", {"tracking_activities": []})  # _links is required
    with pytest.raises(KeyError):
        validate("Contacts", {"contacts": []}, contract="campaigns")
    with pytest.raises(KeyError):
        validate("Contacts", {}, contract="nothing")
    summary = {"campaign_id": "x", "unique_counts": {"optouts": "12", "sends": 40}}
    with pytest.raises(ContractError, match="optouts"):
        validate("BulkEmailCampaignSummary", summary)  # the contract says integers
    validate("BulkEmailCampaignSummary", summary, strings_for_integers=STRING_COUNTS)  # the guide's strings
    for bad in ("-1", "1.5", "", "12\n", " 12", 1.5):
        with pytest.raises(ContractError):
            validate(
                "BulkEmailCampaignSummary",
                {"campaign_id": "x", "unique_counts": {"optouts": bad}},
                strings_for_integers=STRING_COUNTS,
            )
    with pytest.raises(ContractError):  # campaign_id is the one required field
        validate("BulkEmailCampaignSummary", {"campaign_type": "Newsletter"})
    assert contract.parameters(SUMMARIES) == {"limit": ()}
    assert contract.parameters("/v3/reports/email_reports/{campaign_activity_id}/tracking/optouts") == {"limit": ()}
    assert set(contract.parameters("/emails")) == {"limit", "before_date", "after_date"}
    assert "optout_after" in contract.parameters("/contacts")


# --- the summaries report ------------------------------------------------------------------------------


def test_summaries_are_the_sent_campaigns_newest_send_first(shared: Sandbox) -> None:
    facts = shared.account.campaigns()
    sent = sorted((f for f in facts if f.last_sent is not None), key=lambda f: f.last_sent, reverse=True)
    assert 100 < len(sent) <= 500
    everything = ok(shared, SUMMARIES, limit="500")  # one call: at most 500 campaigns
    assert "_links" not in everything
    paged = summaries(shared, limit=7)  # the same, 7 at a time, following next links
    assert paged == everything["bulk_email_campaign_summaries"]
    assert [s["campaign_id"] for s in paged] == [f.campaign_id for f in sent]
    dates = [parse(s["last_sent_date"]) for s in paged]
    assert dates == sorted(dates, reverse=True) and dates == [f.last_sent for f in sent]
    by_id = {f.campaign_id: f for f in facts}
    kinds = set()
    for summary in paged:
        fact = by_id[summary["campaign_id"]]
        counts = summary["unique_counts"]
        assert set(counts) == {"sends", "opens", "clicks", "forwards", "optouts", "abuse", "bounces", "not_opened"}
        assert {type(v) for v in counts.values()} == {str if fact.string_counts else int}  # one form per campaign
        assert count(counts["optouts"]) == fact.optouts <= count(counts["sends"])
        assert count(counts["opens"]) + count(counts["not_opened"]) == count(counts["sends"])
        kinds.add((fact.string_counts, fact.optouts > 0))
        strict = {**summary, "unique_counts": {k: count(v) for k, v in counts.items()}}
        validate("BulkEmailCampaignSummary", strict)  # the contract's integers, once read
        if fact.string_counts:
            with pytest.raises(ContractError):
                validate("BulkEmailCampaignSummary", summary)
    assert {(True, True), (False, True)} <= kinds  # strings and integers, both on campaigns with opt-outs
    assert "Removed" in {by_id[s["campaign_id"]].current_status for s in paged}  # deleted after sending: still here
    percents = everything["aggregate_percents"]
    assert set(percents) == {"click", "open", "did_not_open", "bounce", "unsubscribe"}
    assert abs(percents["open"] + percents["did_not_open"] - 100) < 0.2


def test_summaries_default_to_pages_of_50(shared: Sandbox) -> None:
    first = ok(shared, SUMMARIES)
    assert len(first["bulk_email_campaign_summaries"]) == 50 and "next" in first["_links"]
    validate("BulkEmailCampaignSummariesPage", first, strings_for_integers=STRING_COUNTS)


# --- campaigns and activities --------------------------------------------------------------------------


def test_every_campaign_and_its_activities(shared: Sandbox) -> None:
    facts = shared.account.campaigns()
    listed = [c for page in pages(shared, "/emails", "PagedEmailCampaignResponse", limit=40) for c in page["campaigns"]]
    assert [c["campaign_id"] for c in listed] == [f.campaign_id for f in facts]  # drafts and removed ones too
    updated = [parse(c["updated_at"]) for c in listed]
    assert updated == sorted(updated, reverse=True)  # newest update first
    assert len({c["name"] for c in listed}) == len(listed) and all(len(c["name"]) <= 80 for c in listed)
    statuses = {c["current_status"] for c in listed}
    assert statuses == {"Done", "Removed", "Draft", "Scheduled"}
    roles = set()
    for fact in facts:
        body = ok(shared, f"/emails/{fact.campaign_id}")
        validate("EmailCampaign", body)
        assert body["name"] == fact.name and body["current_status"] == fact.current_status
        activities = [(a["campaign_activity_id"], a["role"]) for a in body["campaign_activities"]]
        assert activities == [(a.campaign_activity_id, a.role) for a in fact.activities]
        assert [r for _, r in activities][:2] == ["primary_email", "permalink"]
        roles.update(r for _, r in activities)
        for activity in fact.activities:
            history = get(shared, f"/emails/activities/{activity.campaign_activity_id}/send_history")
            if activity.role == "permalink":
                assert history.status_code == 400
                continue
            validate("EmailSendHistory", history.json())
            assert [parse(h["run_date"]) for h in history.json()] == ([activity.sent_at] if activity.sent_at else [])
    assert roles == {"primary_email", "permalink", "resend"}
    # after_date / before_date filter updated_at, exclusively.
    middle = listed[len(listed) // 2]
    after = [c for page in pages(shared, "/emails", "PagedEmailCampaignResponse", after_date=middle["updated_at"])
             for c in page["campaigns"]]  # fmt: skip
    assert after == listed[: len(listed) // 2]
    before = ok(shared, "/emails", before_date=middle["updated_at"], limit=500)["campaigns"]
    assert before == listed[len(listed) // 2 + 1 :]


def test_a_campaign_deleted_after_sending_still_answers(shared: Sandbox) -> None:
    removed = [f for f in shared.account.campaigns() if f.current_status == "Removed" and f.optouts > 0]
    assert removed
    body = ok(shared, f"/emails/{removed[0].campaign_id}")
    assert body["current_status"] == "Removed" and body["campaign_activities"]
    primary = body["campaign_activities"][0]["campaign_activity_id"]
    assert report(shared, primary)  # its reports still list who opted out through it


# --- the opt-outs report -------------------------------------------------------------------------------


def test_reports_page_newest_first_and_end(shared: Sandbox) -> None:
    facts = shared.account.campaigns()
    busiest = max(facts, key=lambda f: f.optouts)
    activity = busiest.activities[0].campaign_activity_id
    whole = report(shared, activity)
    assert len(whole) > 6
    assert report(shared, activity, limit=4) == whole  # the same rows, 4 at a time, following next links
    assert report(shared, activity, limit=1) == whole
    times = [parse(row["created_time"]) for row in whole]
    assert times == sorted(times, reverse=True)
    assert all(row["created_time"].endswith(".000Z") for row in whole)  # to the second
    assert all(parse(row["created_time"]) >= busiest.activities[0].sent_at.replace(microsecond=0) for row in whole)
    assert len({row["contact_id"] for row in whole}) == len(whole)
    last = ok(shared, f"/reports/email_reports/{activity}/tracking/optouts", limit=str(len(whole)))
    assert last["_links"] == {}  # required by the contract, and empty on the last page


def test_reports_of_activities_nobody_could_opt_out_through_are_empty(shared: Sandbox) -> None:
    facts = shared.account.campaigns()
    unsent = [a for f in facts if f.current_status in ("Draft", "Scheduled") for a in f.activities]
    permalinks = [a for f in facts for a in f.activities if a.role == "permalink"]
    assert unsent and permalinks
    for activity in [*unsent, *permalinks[:5]]:
        body = ok(shared, f"/reports/email_reports/{activity.campaign_activity_id}/tracking/optouts")
        assert body == {"tracking_activities": [], "_links": {}}
        validate("OptoutsTrackingActivitiesPage", body)


def test_errors_like_the_other_endpoints(shared: Sandbox) -> None:
    facts = shared.account.campaigns()
    activity = max(facts, key=lambda f: f.optouts).activities[0].campaign_activity_id
    other = min((f for f in facts if f.optouts > 3), key=lambda f: f.optouts).activities[0].campaign_activity_id
    unknown = "00000000-0000-4000-8000-000000000000"

    def error(status: int, path: str, **params: Any) -> None:
        response = get(shared, path, **params)
        assert response.status_code == status, (path, params, response.text)
        validate("APIErrorSchema", response.json())

    error(404, f"/reports/email_reports/{unknown}/tracking/optouts")
    error(400, "/reports/email_reports/not-a-uuid/tracking/optouts")
    error(400, f"/reports/email_reports/{activity.upper()}/tracking/optouts")
    error(404, f"/emails/{unknown}")
    error(404, f"/emails/activities/{unknown}/send_history")
    for limit in ("0", "501", "abc", "-1", "", "1.5"):
        error(400, f"/reports/email_reports/{activity}/tracking/optouts", limit=limit)
        error(400, SUMMARIES, limit=limit)
        error(400, "/emails", limit=limit)
    error(400, "/emails", after_date="yesterday")
    error(400, SUMMARIES, cursor="bm90IGEgY3Vyc29y")
    # A cursor is only good for the report (and operation) it came from.
    first = ok(shared, f"/reports/email_reports/{activity}/tracking/optouts", limit="1")
    cursor = first["_links"]["next"]["href"].split("cursor=")[1]
    error(400, f"/reports/email_reports/{other}/tracking/optouts", cursor=cursor)
    error(400, SUMMARIES, cursor=cursor)
    error(400, f"/reports/email_reports/{activity}/tracking/optouts", cursor=cursor[:-2] + "AA")
    assert get(shared, f"/emails/{facts[0].campaign_id}/nothing").status_code == 404


def test_campaign_operations_need_the_campaign_data_scope(shared: Sandbox) -> None:
    fact = next(f for f in shared.account.campaigns() if f.optouts)
    activity = fact.activities[0].campaign_activity_id
    paths = [
        SUMMARIES,
        "/emails",
        f"/emails/{fact.campaign_id}",
        f"/emails/activities/{activity}/send_history",
        f"/reports/email_reports/{activity}/tracking/optouts",
        "/emails/00000000-0000-4000-8000-000000000000",  # the scope is checked before the id
    ]
    contacts_only = shared.oauth.access_token("contact_data")
    campaigns_only = shared.oauth.access_token(["campaign_data"])
    before_campaigns = shared.oauth.access_token()  # the default: a sign-in from before campaign reports
    assert "campaign_data" not in shared.oauth.issue()["scope"].split()
    assert shared.oauth.issue("contact_data campaign_data offline_access")["scope"].split()[1] == "campaign_data"
    for path in paths:
        for token in (contacts_only, before_campaigns):
            forbidden = get(shared, path, token)
            assert forbidden.status_code == 403, path
            validate("APIErrorSchema", forbidden.json())
            assert "campaign_data" in forbidden.json()[0]["error_message"]
        assert get(shared, path, campaigns_only).status_code in (200, 404)
    assert get(shared, "/contacts", contacts_only).status_code == 200
    assert get(shared, "/contacts", campaigns_only).status_code == 403
    with Sandbox(SPEC, rate_limit=None, daily_quota=None) as default:  # the default token: no campaign_data
        assert get(default, SUMMARIES).status_code == 403 and get(default, "/contacts").status_code == 200
    with Sandbox(SPEC, rate_limit=None, daily_quota=None, token="static") as static:  # a given token: every scope
        assert get(static, SUMMARIES).status_code == 200


# --- attribution: the ground truth and its hard cases --------------------------------------------------


def attribution_over_http(sandbox: Sandbox) -> tuple[dict[str, str | None], dict[str, list[tuple[str, Body]]]]:
    """The issue's rule applied to what the API serves: an opt-out belongs to the activity whose report lists the
    contact with a created_time equal to its current opt_out_date, to the second. Also every report row, by contact:
    (activity id, row)."""
    rows: dict[str, list[tuple[str, Body]]] = {}
    optouts = {s["campaign_id"]: count(s["unique_counts"]["optouts"]) for s in summaries(sandbox)}
    for campaign_id, unique in optouts.items():
        campaign = ok(sandbox, f"/emails/{campaign_id}")
        listed = set()
        for activity in campaign["campaign_activities"]:
            for row in report(sandbox, activity["campaign_activity_id"]):
                rows.setdefault(row["contact_id"], []).append((activity["campaign_activity_id"], row))
                listed.add(row["contact_id"])
        assert len(listed) == unique  # the summaries count the contacts the reports list
    everyone = found(session(sandbox), sandbox, status="all")
    attribution: dict[str, str | None] = {}
    for contact_id, contact in everyone.items():
        date = contact["email_address"].get("opt_out_date")
        if date is None:
            continue
        matches = [a for a, row in rows.get(contact_id, []) if second(row["created_time"]) == second(date)]
        assert len(matches) <= 1
        attribution[contact_id] = matches[0] if matches else None
    return attribution, rows


def test_truth_matches_the_reports_and_holds_every_hard_case(shared: Sandbox) -> None:
    account = shared.account
    truth = account.campaign_truth()
    attribution, rows = attribution_over_http(shared)
    assert attribution == truth
    assert {f.contact_id for f in account.optouts_truth()} == set(truth)
    everyone = {c["contact_id"]: c for c in account.contacts()}
    sends = {a.campaign_activity_id: a.sent_at for f in account.campaigns() for a in f.activities}
    campaign_of = {a.campaign_activity_id: f.campaign_id for f in account.campaigns() for a in f.activities}

    def address(contact_id: str) -> dict[str, Any]:
        return everyone[contact_id]["email_address"]

    through = {c: a for c, a in truth.items() if a is not None}
    contact_source = [c for c in truth if address(c)["opt_out_source"] == "Contact"]
    assert 0.3 * len(contact_source) < len(through) < len(contact_source)  # a share of the Contact opt-outs
    for contact_id, activity in through.items():
        assert address(contact_id)["opt_out_source"] == "Contact"
        assert parse(address(contact_id)["opt_out_date"]) >= sends[activity]
    for contact_id, listed in rows.items():
        contact = everyone[contact_id]
        for _, row in listed:  # a report row describes the contact as it is now
            assert row["email_address"] == contact["email_address"]["address"]
            assert row.get("first_name") == contact.get("first_name") and row.get("deleted_at") == contact.get(
                "deleted_at"
            )

    cases = account.campaign_cases()
    assert all(cases[name] for name in cases), {name: len(ids) for name, ids in cases.items()}
    for contact_id in cases["old_email"]:  # from an email sent a week or more before
        sent = sends[through[contact_id]]
        assert parse(address(contact_id)["opt_out_date"]) - sent >= dt.timedelta(days=7)
    for contact_id in cases["deleted"]:  # deleted since: listed with deleted_at, and still attributed
        assert "deleted_at" in everyone[contact_id] and truth[contact_id] is not None
        assert [row["deleted_at"] for _, row in rows[contact_id]] == [everyone[contact_id]["deleted_at"]]
    for contact_id in cases["reversed_then_removed"]:  # the old row stays; the account's removal came later
        assert address(contact_id)["opt_out_source"] == "Account" and truth[contact_id] is None
        [(_, row)] = rows[contact_id]
        assert parse(row["created_time"]) < parse(address(contact_id)["opt_out_date"]) - dt.timedelta(days=1)
        assert "opt_in_date" not in address(contact_id)
    for contact_id in cases["resubscribed"]:  # listed, but no longer opted out
        assert address(contact_id)["permission_to_send"] == "explicit" and contact_id not in truth
        [(_, row)] = rows[contact_id]
        assert parse(row["created_time"]) < parse(address(contact_id)["opt_in_date"])
    for contact_id in cases["twice"]:  # an older row in another campaign, then the current one
        listed = sorted(rows[contact_id], key=lambda pair: parse(pair[1]["created_time"]))
        assert len(listed) == 2 and campaign_of[listed[0][0]] != campaign_of[listed[1][0]]
        assert truth[contact_id] == listed[1][0]
    account_source = [c for c in truth if address(c)["opt_out_source"] == "Account"]
    assert account_source and all(truth[c] is None for c in account_source)


# --- live changes --------------------------------------------------------------------------------------


def test_a_live_optout_through_an_email_leads_its_report(sb: Sandbox) -> None:
    account = sb.account
    campaign = next(f for f in account.campaigns() if f.current_status == "Done" and f.optouts > 2)
    activity = campaign.activities[0].campaign_activity_id
    before = report(sb, activity)
    optouts_before = campaign.optouts
    first_page = ok(sb, f"/reports/email_reports/{activity}/tracking/optouts", limit="1")

    at = dt.datetime.now(dt.timezone.utc)
    ids = account.opt_out(count=2, at=at, reason=None, campaign_activity_id=activity)
    after = report(sb, activity)
    assert {row["contact_id"] for row in after[:2]} == set(ids) and after[2:] == before  # newest first
    assert all("opt_out_reason" not in row for row in after[:2])
    truth = account.campaign_truth()
    assert [truth[i] for i in ids] == [activity, activity]
    summary = next(s for s in summaries(sb) if s["campaign_id"] == campaign.campaign_id)
    assert count(summary["unique_counts"]["optouts"]) == optouts_before + 2
    contacts = found(session(sb), sb, status="all")
    for row in after[:2]:
        assert second(row["created_time"]) == second(contacts[row["contact_id"]]["email_address"]["opt_out_date"])

    # An open cursor goes on from its position: the new rows, newer, are not revisited; nothing comes twice.
    rest = [r for page in pages(sb, first_page["_links"]["next"]["href"].removeprefix("/v3"),
            "OptoutsTrackingActivitiesPage") for r in page["tracking_activities"]]  # fmt: skip
    assert [first_page["tracking_activities"][0], *rest] == before

    # Opting back in keeps the row; a deletion shows on it; neither attributes anything any more to the first.
    account.resubscribe(ids[:1], at=at + dt.timedelta(minutes=1))
    account.delete(ids[1:], at=at + dt.timedelta(minutes=1))
    again = {row["contact_id"]: row for row in report(sb, activity)[:2]}
    assert set(again) == set(ids)
    assert (
        "deleted_at" not in again[ids[0]]
        and again[ids[1]]["deleted_at"] == (at + dt.timedelta(minutes=1)).date().isoformat()
    )
    truth = account.campaign_truth()
    assert ids[0] not in truth and truth[ids[1]] == activity
    # The first opts out again, now without an email: the old row no longer matches its opt-out.
    account.opt_out(contact_ids=ids[:1], at=at + dt.timedelta(minutes=2))
    assert account.campaign_truth()[ids[0]] is None

    account.close()  # discarding the changes discards the rows too
    assert report(sb, activity) == before


def test_live_optouts_through_an_email_are_checked(sb: Sandbox) -> None:
    account = sb.account
    facts = account.campaigns()
    done = next(f for f in facts if f.current_status == "Done")
    primary = done.activities[0]
    permalink = done.activities[1].campaign_activity_id
    draft = next(f for f in facts if f.current_status == "Draft").activities[0].campaign_activity_id
    assert primary.sent_at is not None
    active = account.pick("active", 1, 7, created_by=primary.sent_at - dt.timedelta(days=30))
    unsubscribed = account.counts()["unsubscribed"]
    before = report(sb, primary.campaign_activity_id)
    early = primary.sent_at - dt.timedelta(hours=1)
    for kwargs in (
        {"campaign_activity_id": permalink},
        {"campaign_activity_id": draft},
        {"campaign_activity_id": "00000000-0000-4000-8000-000000000000"},
        {"campaign_activity_id": primary.campaign_activity_id, "source": "Account"},
    ):
        with pytest.raises(ValueError):
            account.opt_out(contact_ids=active, **kwargs)
    with pytest.raises(ValueError, match="before its send"):
        account.opt_out(contact_ids=active, at=early, backdated=True, campaign_activity_id=primary.campaign_activity_id)
    newcomer = next(
        c["contact_id"]
        for c in account.contacts()
        if c["email_address"]["permission_to_send"] in ("explicit", "implicit")
        and "deleted_at" not in c
        and parse(c["created_at"]) > primary.sent_at
    )
    with pytest.raises(ValueError, match="created after"):  # the email never reached them
        account.opt_out(contact_ids=[newcomer], campaign_activity_id=primary.campaign_activity_id)
    assert account.counts()["unsubscribed"] == unsubscribed
    assert report(sb, primary.campaign_activity_id) == before


# --- determinism ---------------------------------------------------------------------------------------


def test_the_same_spec_gives_the_same_campaigns(shared: Sandbox) -> None:
    again = Account.open(SPEC)
    assert again.campaigns() == shared.account.campaigns()
    assert again.campaign_truth() == shared.account.campaign_truth()
    assert again.campaign_cases() == shared.account.campaign_cases()
    other_anchor = Account.open(AccountSpec(contacts=3_000, seed=4, anchor=ANCHOR + dt.timedelta(days=3)))

    def shape(facts: list[CampaignFact]) -> list[Any]:
        return [
            (f.campaign_id, f.current_status, [(a.campaign_activity_id, a.role) for a in f.activities]) for f in facts
        ]

    assert shape(other_anchor.campaigns()) == shape(shared.account.campaigns())  # the anchor moves only the dates
    other_seed = Account.open(AccountSpec(contacts=3_000, seed=5, anchor=ANCHOR))
    assert {f.campaign_id for f in other_seed.campaigns()}.isdisjoint(f.campaign_id for f in shared.account.campaigns())
