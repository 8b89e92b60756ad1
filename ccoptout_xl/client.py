"""The Constant Contact V3 operations ccoptout-xl uses, with pagination that just iterates.

Reference: https://developer.constantcontact.com/api_guide/contacts_get_all.html and the contract in
``shared/cc-api/v3-contacts-subset.swagger.yaml`` (operations ``getContacts``, ``countContact``, ``getLists``,
``getAccountById``).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .exceptions import ApiError, MalformedResponse
from .http_client import CallStats, HTTPClient, TokenProvider

_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
MAX_PAGE_SIZE = 500  # the contract's maximum `limit` for GET /contacts


@dataclass
class Page:
    """One page of a collection: its items, the total when the API was asked for it, and the next link."""

    items: list[dict[str, Any]]
    total: int | None = None
    next_href: str | None = None


def api_datetime(value: dt.datetime) -> str:
    """An aware datetime as the API's ISO-8601 form, in UTC with milliseconds: ``2026-05-01T04:00:00.000Z``."""
    if value.tzinfo is None:
        raise ValueError("API date-times must be timezone-aware")
    utc = value.astimezone(dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class Client:
    """A small client for the contact endpoints of the V3 API.

    >>> client = Client.from_environment(StaticToken(token))   # CCOPTOUT_API_URL
    >>> for contact in client.contacts(status="unsubscribed", limit=500):
    ...     print(contact["email_address"]["address"])
    """

    def __init__(self, http: HTTPClient) -> None:
        self.http = http
        self.calls_counted = 0  # calls already added to the day's count of the quota guard (the store's)

    @classmethod
    def from_environment(cls, tokens: TokenProvider, **kwargs: Any) -> Client:
        """A client of the API in ``CCOPTOUT_API_URL`` with ``tokens`` (see the README's "Environment variables";
        :func:`ccoptout_xl.connect` also finds the tokens)."""
        return cls(HTTPClient.from_environment(tokens, **kwargs))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> CallStats:
        """Calls made so far (including retries), pages and contacts read."""
        return self.http.stats

    # -- contacts ------------------------------------------------------------------------------------------

    def contact_pages(self, *, cancel: threading.Event | None = None, **params: Any) -> Iterator[Page]:
        """Pages of ``GET /contacts`` for the given query parameters, following ``_links.next`` verbatim.

        Parameters are the contract's (``status``, ``optout_after``, ``include_count``, ``limit``...); date-time
        values may be aware datetimes and booleans Python booleans. Stop iterating to stop fetching; setting
        ``cancel`` (from another thread) stops it too, with :class:`~ccoptout_xl.http_client.Cancelled`.
        """
        return self._pages("contacts", "contacts", "contacts_count", encode_params(params), cancel)

    def contacts(self, **params: Any) -> Iterator[dict[str, Any]]:
        """Every contact matching the query parameters (see :meth:`contact_pages`)."""
        for page in self.contact_pages(**params):
            yield from page.items

    def contact_counts(self) -> dict[str, int]:
        """``GET /contacts/counts``: totals by consent state (``unsubscribed`` among them)."""
        return self._object(self.http.get("contacts/counts"), "contact counts")

    # -- lists and account ---------------------------------------------------------------------------------

    def contact_lists(self) -> list[dict[str, Any]]:
        """Every contact list of the account (``GET /contact_lists``)."""
        lists: list[dict[str, Any]] = []
        for page in self._pages("contact_lists", "lists", "lists_count", {"limit": 1000, "status": "all"}):
            lists.extend(page.items)
        return lists

    def list_names(self) -> dict[str, str]:
        """Map of list id to list name."""
        return {item["list_id"]: item.get("name", "") for item in self.contact_lists() if "list_id" in item}

    def account_summary(self) -> dict[str, Any]:
        """``GET /account/summary``: the account's organisation name, time zone and owner."""
        return self._object(self.http.get("account/summary"), "account summary")

    # -- campaigns (the campaign_data scope) --------------------------------------------------------------

    def campaign_summaries(self) -> Iterator[dict[str, Any]]:
        """The summaries report of the last (at most) 500 campaigns, newest send first (``GET
        /reports/summary_reports/email_campaign_summaries``; https://developer.constantcontact.com/api_guide/
        email_bulk_campaign_summary_report.html)."""
        path = "reports/summary_reports/email_campaign_summaries"
        for page in self._pages(path, "bulk_email_campaign_summaries", "", {"limit": "500"}):
            yield from (item for item in page.items if isinstance(item, dict))

    def email_campaign(self, campaign_id: str) -> dict[str, Any] | None:
        """``GET /emails/{campaign_id}``: a campaign's name, status and activities; None if the API has no such
        campaign (https://developer.constantcontact.com/api_guide/email_campaign_get.html)."""
        try:
            body = self.http.get(f"emails/{_path_id(campaign_id)}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return self._object(body, "campaign")

    def activity_optouts(self, campaign_activity_id: str) -> Iterator[Page]:
        """Pages of an email activity's opt-outs report, newest first (``GET /reports/email_reports/
        {campaign_activity_id}/tracking/optouts``; https://developer.constantcontact.com/api_guide/
        email_summary_optouts_report.html)."""
        path = f"reports/email_reports/{_path_id(campaign_activity_id)}/tracking/optouts"
        return self._pages(path, "tracking_activities", "", {"limit": "500"})

    # -- paging --------------------------------------------------------------------------------------------

    def _pages(
        self,
        path: str,
        items_key: str,
        count_key: str,
        params: Mapping[str, Any],
        cancel: threading.Event | None = None,
    ) -> Iterator[Page]:
        href: str | None = path
        query: Mapping[str, Any] | None = params
        followed: set[str] = set()
        while href:
            body = self._object(self.http.get(href, query, cancel=cancel), path)
            items = body.get(items_key, [])
            if not isinstance(items, list):
                raise MalformedResponse(f"The API's {path} page has no list of {items_key}.")
            next_href = _next_href(body)
            total = body.get(count_key)
            self.http.stats.add(pages=1, contacts=len(items) if items_key == "contacts" else 0)
            yield Page(items, total if isinstance(total, int) else None, next_href)
            if next_href in followed:
                raise MalformedResponse("The API sent a next link to a page already read; stopping to avoid a loop.")
            if next_href:
                followed.add(next_href)
            href, query = next_href, None  # the link already carries the query: follow it as it is

    @staticmethod
    def _object(body: Any, what: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise MalformedResponse(f"The API's {what} response is not a JSON object.")
        return body


def _path_id(value: str) -> str:
    """An id from the API, to go into a path: letters, digits, '-' and '_' only (never '..' or '/')."""
    if not _ID.fullmatch(value):
        raise MalformedResponse("The API sent an id that is not one (letters, digits, '-' or '_' expected).")
    return value


def _next_href(body: Mapping[str, Any]) -> str | None:
    """``_links.next.href``, or None when absent; anything else there is a malformed page."""
    links = body.get("_links") or {}
    following = links.get("next") if isinstance(links, dict) else None
    if following is None:
        return None
    href = following.get("href") if isinstance(following, dict) else None
    if href is None:
        return None
    if not isinstance(href, str):
        raise MalformedResponse("The API sent a next link that is not text.")
    return href or None


def encode_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Query parameters as the API expects them: datetimes in ISO-8601 UTC, booleans lower case, lists as csv."""
    encoded: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            encoded[name] = "true" if value else "false"
        elif isinstance(value, dt.datetime):
            encoded[name] = api_datetime(value)
        elif isinstance(value, (list, tuple, set, frozenset)):
            encoded[name] = ",".join(str(v) for v in value)
        else:
            encoded[name] = str(value)
    return encoded
