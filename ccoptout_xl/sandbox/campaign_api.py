"""The email campaign operations of the sandbox (``campaign_data`` scope), in the shapes of the campaign contract.

- ``GET /v3/reports/summary_reports/email_campaign_summaries?limit=`` (1-500, default 50, a string in the contract):
  the sent campaigns, newest ``last_sent_date`` first, at most 500 in all; ``unique_counts`` are integers, or
  strings on the campaigns that give them so (``Account.campaigns()``: ``string_counts``); ``aggregate_percents``
  is the contract's object, for the campaigns of the page.
- ``GET /v3/emails?limit=&after_date=&before_date=``: every campaign (drafts and removed ones too), newest
  ``updated_at`` first; the dates filter ``updated_at`` (exclusive bounds); limit 1-500, default 50.
- ``GET /v3/emails/{campaign_id}``: name, current_status, type and the activities (``campaign_activity_id``,
  ``role``). A campaign deleted after sending answers 200 with ``current_status: Removed`` (the contract's meaning
  of Removed); an unknown id is a 404.
- ``GET /v3/emails/activities/{campaign_activity_id}/send_history``: one COMPLETED send per sent ``primary_email``
  or ``resend`` activity (its ``run_date``); ``[]`` for one never sent; 400 for a ``permalink``.
- ``GET /v3/reports/email_reports/{campaign_activity_id}/tracking/optouts?limit=`` (1-500, default 500): the
  contacts who opted out through that activity, newest ``created_time`` first (ties by the contact's creation
  order); ``created_time`` is the opt-out instant to the second, ``deleted_at`` the contact's deletion date if it
  was deleted since; optional fields are omitted, never null. A never-sent or ``permalink`` activity gives an
  empty list; an id that is not a UUID is a 400, an unknown one a 404.

Pages end with ``_links.next.href`` (a cursor that carries every parameter; a request with ``cursor`` ignores
the others) while more remain, and only then: the opt-outs report, whose contract requires ``_links``, has
``"_links": {}`` on its last page. Report cursors are keyset positions: rows added since (live opt-outs, newest
first) are not revisited and nothing is returned twice.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

from .campaigns import TRACKED_ROLES, Campaign, CampaignBook, Row
from .errors import ApiError
from .params import CursorCodec, instant_us, integer
from .render import format_date, format_instant

MAX_LIMIT = 500
MAX_SUMMARIES = 500
SUMMARIES_PATH = "/v3/reports/summary_reports/email_campaign_summaries"
EMAILS_PATH = "/v3/emails"
EMAIL_PATH = re.compile(r"/v3/emails/([^/]+)")
SEND_HISTORY_PATH = re.compile(r"/v3/emails/activities/([^/]+)/send_history")
OPTOUTS_PATH = re.compile(r"/v3/reports/email_reports/([^/]+)/tracking/optouts")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
COUNT_NAMES = ("sends", "opens", "clicks", "forwards", "optouts", "abuse", "bounces", "not_opened")
_CONTACT_SQL = "SELECT seq, email, first_name, last_name, deleted FROM contacts WHERE seq IN ({})"

Query = dict[str, str]


class CampaignApi:
    """Answers the campaign operations for one account; ``connection`` gives a read transaction on its contacts."""

    def __init__(
        self,
        book: Callable[[], CampaignBook],
        codec: CursorCodec,
        connection: Callable[[], AbstractContextManager[sqlite3.Connection]],
        list_ids: tuple[str, ...],
    ) -> None:
        self._book = book
        self.codec = codec
        self._connection = connection
        self._list_ids = list_ids

    def route(self, path: str) -> Callable[[Query], Any] | None:
        """The operation that answers ``path`` (with its id bound), or None."""
        if path == SUMMARIES_PATH:
            return self.summaries
        if path == EMAILS_PATH:
            return self.emails
        for pattern, operation in (
            (SEND_HISTORY_PATH, self.send_history),
            (OPTOUTS_PATH, self.optouts),
            (EMAIL_PATH, self.email),
        ):
            match = pattern.fullmatch(path)
            if match:
                return partial(operation, match[1])
        return None

    # --- the summaries report --------------------------------------------------------------------------

    def summaries(self, query: Query) -> dict[str, Any]:
        """``GET /v3/reports/summary_reports/email_campaign_summaries``."""
        state = self._state(query, "summaries", {"offset": 0, "limit": _limit(query, 50)})
        book = self._book()
        order = book.sent_order[:MAX_SUMMARIES]
        start, limit = state["offset"], state["limit"]
        chosen = [book.campaigns[i] for i in order[start : start + limit]]
        body: dict[str, Any] = {"bulk_email_campaign_summaries": [_summary(book, c) for c in chosen]}
        if chosen:
            body["aggregate_percents"] = _percents(book, chosen)
        if start + limit < len(order):
            cursor = self.codec.encode({**state, "offset": start + limit})
            body["_links"] = {"next": {"href": f"{SUMMARIES_PATH}?cursor={cursor}"}}
        return body

    # --- campaigns -------------------------------------------------------------------------------------

    def emails(self, query: Query) -> dict[str, Any]:
        """``GET /v3/emails``."""
        defaults: dict[str, Any] = {"offset": 0, "limit": None, "after": None, "before": None}
        if "cursor" not in query:
            defaults["limit"] = integer("limit", query["limit"], 1, MAX_LIMIT) if "limit" in query else 50
            for name, key in (("after_date", "after"), ("before_date", "before")):
                if name in query:
                    defaults[key] = instant_us(name, query[name]) // 1000
        state = self._state(query, "emails", defaults)
        book = self._book()
        after, before = state["after"], state["before"]
        order = [
            c
            for c in (book.campaigns[i] for i in book.updated_order)
            if (after is None or book.anchor_ms + c.updated > after)
            and (before is None or book.anchor_ms + c.updated < before)
        ]
        start, limit = state["offset"], state["limit"]
        body: dict[str, Any] = {"campaigns": [_campaign(book, c) for c in order[start : start + limit]]}
        if start + limit < len(order):
            cursor = self.codec.encode({**state, "offset": start + limit})
            body["_links"] = {"next": {"href": f"{EMAILS_PATH}?cursor={cursor}"}}
        return body

    def email(self, campaign_id: str, _query: Query) -> dict[str, Any]:
        """``GET /v3/emails/{campaign_id}``."""
        book = self._book()
        campaign = book.by_campaign_id.get(campaign_id)
        if campaign is None:
            raise ApiError.array(404, "not_found", f"No email campaign has the id {campaign_id!r}.")
        body = _campaign(book, campaign)
        body["campaign_activities"] = [
            {"campaign_activity_id": book.activities[i].activity_id, "role": book.activities[i].role}
            for i in campaign.activities
        ]
        return body

    def send_history(self, activity_id: str, _query: Query) -> list[dict[str, Any]]:
        """``GET /v3/emails/activities/{campaign_activity_id}/send_history``."""
        book = self._book()
        activity = book.by_activity_id.get(activity_id)
        if activity is None:
            raise ApiError.array(404, "not_found", f"No campaign activity has the id {activity_id!r}.")
        if activity.role not in TRACKED_ROLES:
            raise ApiError.invalid(f"send history exists for primary_email and resend activities, not {activity.role}")
        if activity.sent is None:
            return []
        stats = book.campaigns[activity.campaign].stats
        count = stats["sends"] if activity.role == "primary_email" else stats["not_opened"] // 2
        return [
            {
                "send_id": 1,
                "contact_list_ids": list(self._list_ids[:1]),
                "count": count,
                "run_date": book.render_time(activity.sent),
                "send_status": "COMPLETED",
                "reason_code": 0,
            }
        ]

    # --- the opt-outs report ---------------------------------------------------------------------------

    def optouts(self, activity_id: str, query: Query) -> dict[str, Any]:
        """``GET /v3/reports/email_reports/{campaign_activity_id}/tracking/optouts``."""
        if not _UUID.fullmatch(activity_id):
            raise ApiError.invalid(f"campaign_activity_id must be a UUID, got {activity_id!r}")
        book = self._book()
        activity = book.by_activity_id.get(activity_id)
        if activity is None:
            raise ApiError.array(404, "not_found", f"No campaign activity has the id {activity_id!r}.")
        defaults = {"activity": activity_id, "after": None, "limit": _limit(query, MAX_LIMIT)}
        state = self._state(query, "optouts", defaults)
        if state["activity"] != activity_id:
            raise ApiError.invalid("cursor belongs to another activity's report: follow _links.next.href verbatim")
        after = None if state["after"] is None else (int(state["after"][0]), int(state["after"][1]))
        rows, more = book.page(activity.number, after, state["limit"])
        body: dict[str, Any] = {"tracking_activities": self._rendered(book, activity_id, rows), "_links": {}}
        if more:
            cursor = self.codec.encode({**state, "after": list(rows[-1].key)})
            path = f"/v3/reports/email_reports/{activity_id}/tracking/optouts"
            body["_links"] = {"next": {"href": f"{path}?cursor={cursor}"}}
        return body

    def _rendered(self, book: CampaignBook, activity_id: str, rows: list[Row]) -> list[dict[str, Any]]:
        if not rows:
            return []
        seqs = [row.seq for row in rows]
        with self._connection() as conn:
            found = {r[0]: r[1:] for r in conn.execute(_CONTACT_SQL.format(", ".join("?" * len(seqs))), seqs)}
        result = []
        for row in rows:
            email, first_name, last_name, deleted = found[row.seq]
            item: dict[str, Any] = {
                "contact_id": row.contact_id,
                "campaign_activity_id": activity_id,
                "tracking_activity_type": "em_optouts",
                "email_address": email,
            }
            if first_name is not None:
                item["first_name"] = first_name
            if last_name is not None:
                item["last_name"] = last_name
            if row.reason is not None:
                item["opt_out_reason"] = row.reason
            item["created_time"] = format_instant((book.anchor_ms + row.created) // 1000 * 1000)
            if deleted is not None:
                item["deleted_at"] = format_date(book.anchor_ms + deleted)
            result.append(item)
        return result

    def _state(self, query: Query, operation: str, defaults: dict[str, Any]) -> dict[str, Any]:
        """The paging state: from the cursor if there is one (checked to be this operation's), else ``defaults``."""
        if "cursor" not in query:
            return {**defaults, "op": operation}
        state = self.codec.decode(query["cursor"])
        if state.get("op") != operation or set(state) != {*defaults, "op"}:
            raise ApiError.invalid("cursor is not valid: follow the _links.next.href of a previous page verbatim")
        return state


def _limit(query: Query, default: int) -> int:
    if "cursor" in query or "limit" not in query:
        return default
    return integer("limit", query["limit"], 1, MAX_LIMIT)


def _summary(book: CampaignBook, campaign: Campaign) -> dict[str, Any]:
    counts: dict[str, Any] = {name: campaign.stats[name] for name in COUNT_NAMES if name != "optouts"}
    counts["optouts"] = book.optouts(campaign.index)
    unique = {name: str(counts[name]) if campaign.string_counts else counts[name] for name in COUNT_NAMES}
    last = campaign.last_sent(book.activities)
    assert last is not None
    return {
        "campaign_id": campaign.campaign_id,
        "campaign_type": campaign.kind[0],
        "last_sent_date": book.render_time(last),
        "unique_counts": unique,
    }


def _percents(book: CampaignBook, campaigns: list[Campaign]) -> dict[str, float]:
    sends = sum(c.stats["sends"] for c in campaigns) or 1
    opens = sum(c.stats["opens"] for c in campaigns)
    optouts = sum(book.optouts(c.index) for c in campaigns)
    return {
        "click": round(100 * sum(c.stats["clicks"] for c in campaigns) / (opens or 1), 1),
        "open": round(100 * opens / sends, 1),
        "did_not_open": round(100 * (sends - opens) / sends, 1),
        "bounce": round(100 * sum(c.stats["bounces"] for c in campaigns) / sends, 1),
        "unsubscribe": round(100 * optouts / sends, 1),
    }


def _campaign(book: CampaignBook, campaign: Campaign) -> dict[str, Any]:
    """``EmailCampaigns`` (an item of ``GET /v3/emails``); ``GET /v3/emails/{id}`` adds the activities."""
    return {
        "campaign_id": campaign.campaign_id,
        "name": campaign.name,
        "current_status": campaign.status,
        "type": campaign.kind[1],
        "type_code": campaign.kind[2],
        "created_at": book.render_time(campaign.created),
        "updated_at": book.render_time(campaign.updated),
    }
