"""Which email made them leave: each opt-out joined to the campaign it came through.

The facts (``shared/cc-api/README.md``, "Which campaign an opt-out came from"): the summaries report lists the
last (at most) 500 campaigns with their unique opt-out counts; ``GET /emails/{campaign_id}`` gives a campaign's
name and activities; each sending activity (``primary_email``, ``resend``) has an opt-outs report, newest first.

**The rule.** An opt-out belongs to a campaign activity when that activity's report lists the same contact with a
``created_time`` equal to the contact's current ``opt_out_date``, to the second. Otherwise it has no campaign: it
was made by the account (``opt_out_source: Account``), through a form or an import, or it is a newer opt-out of
someone who once left through an email, opted back in and left again another way (the old report row stays).

**The reading.** Every campaign with opt-outs in the summaries is read, whatever its send date (people unsubscribe
from old emails weeks later); each report is read newest first and stops at the window's start. A campaign's name
and activities never change once sent: :class:`CampaignBook` keeps them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .client import Client
from .exceptions import MalformedResponse
from .optouts import OptOut, parse_api_datetime

SENDING_ROLES = ("primary_email", "resend")  # the activities that send an email (a permalink sends nothing)


@dataclass(frozen=True)
class Campaign:
    """An email campaign: its id, name, last send time and sending activities."""

    campaign_id: str
    name: str
    sent_at: dt.datetime | None
    activity_ids: tuple[str, ...]


@dataclass(frozen=True)
class Summary:
    """A campaign as the summaries report shows it: its last send and unique opt-outs."""

    campaign_id: str
    sent_at: dt.datetime | None
    optouts: int


@dataclass(frozen=True)
class ReportRow:
    """One row of an activity's opt-outs report: who left through it, when."""

    activity_id: str
    contact_id: str
    created_time: dt.datetime


class CampaignBook(Protocol):
    """Where campaigns already read are kept (their names and activities never change)."""

    def campaign(self, campaign_id: str) -> Campaign | None: ...

    def keep(self, campaign: Campaign) -> None: ...


class MemoryBook:
    """A :class:`CampaignBook` for one run."""

    def __init__(self) -> None:
        self._campaigns: dict[str, Campaign] = {}

    def campaign(self, campaign_id: str) -> Campaign | None:
        return self._campaigns.get(campaign_id)

    def keep(self, campaign: Campaign) -> None:
        self._campaigns[campaign.campaign_id] = campaign


def count(value: Any) -> int:
    """A count from the summaries: an integer in the contract, a string in the developer guide's examples."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().replace(",", "").isdigit():
        return int(value.strip().replace(",", ""))
    return 0


def summaries(client: Client) -> list[Summary]:
    """The campaigns of the summaries report (newest send first), with their unique opt-outs."""
    found = []
    for item in client.campaign_summaries():
        campaign_id = item.get("campaign_id")
        if not isinstance(campaign_id, str) or not campaign_id:
            continue
        counts = item.get("unique_counts")
        optouts = count(counts.get("optouts")) if isinstance(counts, Mapping) else 0
        found.append(Summary(campaign_id, parse_api_datetime(item.get("last_sent_date")), optouts))
    return found


def campaign(client: Client, summary: Summary, book: CampaignBook) -> Campaign | None:
    """The campaign of ``summary``, from ``book`` or the API (None when the API no longer has it)."""
    known = book.campaign(summary.campaign_id)
    if known is not None and (summary.sent_at is None or summary.sent_at == known.sent_at):
        return known  # a campaign sent again since (a resend: a new activity) is read again
    body = client.email_campaign(summary.campaign_id)
    if body is None:
        return None
    activities = body.get("campaign_activities")
    if not isinstance(activities, list):
        raise MalformedResponse("The API's campaign has no list of campaign_activities.")
    sending = tuple(
        str(a["campaign_activity_id"])
        for a in activities
        if isinstance(a, Mapping) and a.get("role") in SENDING_ROLES and a.get("campaign_activity_id")
    )
    found = Campaign(summary.campaign_id, str(body.get("name") or ""), summary.sent_at, sending)
    book.keep(found)
    return found


def report_rows(client: Client, activity_id: str, since: dt.datetime | None) -> Iterator[ReportRow]:
    """The rows of an activity's opt-outs report, newest first, down to ``since`` (to the second; None: all)."""
    floor = None if since is None else since.replace(microsecond=0)
    for page in client.activity_optouts(activity_id):
        for item in page.items:
            created = parse_api_datetime(item.get("created_time"))
            contact_id = item.get("contact_id")
            if created is None or not contact_id:
                continue
            if floor is not None and created < floor:
                return  # newest first: everything after this is older still
            yield ReportRow(activity_id, str(contact_id), created)


def attribute(
    optouts: Iterable[OptOut], rows: Iterable[ReportRow], campaigns: Iterable[Campaign]
) -> dict[str, Campaign]:
    """The campaign of each opt-out that came through one (by contact id); the others have none."""
    by_activity = {activity: c for c in campaigns for activity in c.activity_ids}
    listed: dict[str, list[ReportRow]] = {}
    for row in rows:
        listed.setdefault(row.contact_id, []).append(row)
    found = {}
    for optout in optouts:
        for row in listed.get(optout.contact_id, ()):
            if same_second(row.created_time, optout.opt_out_date) and row.activity_id in by_activity:
                found[optout.contact_id] = by_activity[row.activity_id]
                break
    return found


def same_second(one: dt.datetime, other: dt.datetime) -> bool:
    """Whether two instants fall in the same second (reports and contacts may differ below it)."""
    return int(one.timestamp()) == int(other.timestamp())


@dataclass(frozen=True)
class CampaignCount:
    """A window's opt-outs through one campaign (``campaign_id`` None: the row of those through none)."""

    campaign_id: str | None
    campaign_name: str | None
    sent_at: dt.datetime | None
    optouts: int


def count_by_campaign(optouts: Iterable[OptOut], campaigns: Iterable[Campaign]) -> list[CampaignCount]:
    """Opt-outs per campaign (from each opt-out's ``campaign_id``), most first, then the row without a campaign."""
    known = {c.campaign_id: c for c in campaigns}
    tally: dict[str | None, int] = {}
    for optout in optouts:
        tally[optout.campaign_id] = tally.get(optout.campaign_id, 0) + 1
    rows = []
    for campaign_id, n in tally.items():
        if campaign_id is not None:
            found = known.get(campaign_id)
            name, sent_at = (found.name, found.sent_at) if found else (None, None)
            rows.append(CampaignCount(campaign_id, name, sent_at, n))
    rows.sort(key=lambda row: (-row.optouts, row.campaign_name or "", row.campaign_id or ""))
    return [*rows, CampaignCount(None, None, None, tally.get(None, 0))]


def read_attribution(
    client: Client, since: dt.datetime | None, book: CampaignBook
) -> tuple[list[Campaign], list[ReportRow]]:
    """Every campaign with opt-outs in the summaries, and their reports' rows down to ``since`` (no store)."""
    campaigns: list[Campaign] = []
    rows: list[ReportRow] = []
    for summary in summaries(client):
        if summary.optouts <= 0:
            continue
        found = campaign(client, summary, book)
        if found is None:
            continue
        campaigns.append(found)
        for activity_id in found.activity_ids:
            rows.extend(report_rows(client, activity_id, since))
    return campaigns, rows


def with_campaigns(optouts: Iterable[OptOut], attribution: Mapping[str, Campaign]) -> Iterator[OptOut]:
    """The opt-outs, each with the campaign it came through (or none)."""
    for optout in optouts:
        found = attribution.get(optout.contact_id)
        if found is None:
            yield optout
        else:
            yield replace(optout, campaign_id=found.campaign_id, campaign_name=found.name)


class AttributedOptOuts:
    """A query's opt-outs, each with the campaign it came through (an :class:`~.query.OptOutSource`)."""

    def __init__(self, found: Any, attribution: Mapping[str, Campaign]) -> None:
        self._found = found
        self._attribution = attribution

    def newest(self, limit: int | None = None) -> Iterator[OptOut]:
        return with_campaigns(self._found.newest(limit), self._attribution)

    def __len__(self) -> int:
        return len(self._found)

    def close(self) -> None:
        self._found.close()
