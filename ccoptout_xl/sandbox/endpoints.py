"""The V3 operations the sandbox implements, as plain functions of (method, path, query).

The contacts operations are here; the email campaign operations (``campaign_data`` scope) in campaign_api.py.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .accounts import Account
from .campaign_api import CampaignApi
from .contact_search import ContactSearch, parse_query
from .errors import ApiError
from .params import CursorCodec, boolean, csv, integer, one_of

LIST_STATUSES = ("all", "active", "deleted")
MAX_LISTS_LIMIT = 1000
EXTRA_FIELDS = ("physical_address", "company_logo")


class Api:
    """Answers API requests for one account: ``handle`` returns (status, JSON body) or raises ApiError."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.codec = CursorCodec(account.cursor_secret)
        self.search = ContactSearch(account.anchor_ms, account.list_ids, self.codec, account.created_in_seq_order)
        self._routes: dict[str, Callable[[dict[str, str], bool], Any]] = {
            "/v3/contacts": self.contacts,
            "/v3/contacts/counts": self.contact_counts,
            "/v3/contact_lists": self.contact_lists,
            "/v3/account/summary": self.account_summary,
        }
        self._scopes = {
            "/v3/contacts": "contact_data",
            "/v3/contacts/counts": "contact_data",
            "/v3/contact_lists": "contact_data",
            "/v3/account/summary": "account_read",
        }
        self._pool: list[tuple[sqlite3.Connection, int]] = []  # idle connections and their account generation
        self._lock = threading.Lock()
        self.campaigns = CampaignApi(account.campaign_book, self.codec, self._connection, account.list_ids)

    def handle(self, method: str, path: str, query: dict[str, str], optout_filters: bool = True) -> tuple[int, Any]:
        """Route one request."""
        route = self._routes.get(path)
        campaign_route = self.campaigns.route(path) if route is None else None
        if route is None and campaign_route is None:
            raise ApiError.array(404, "not_found", f"The requested resource was not found: {path}")
        if method != "GET":
            raise ApiError.array(405, "method_not_allowed", f"{method} is not supported on {path}; use GET")
        if campaign_route is not None:
            return 200, campaign_route(query)
        assert route is not None
        return 200, route(query, optout_filters)

    def required_scope(self, path: str) -> str | None:
        """The OAuth scope an access token needs for ``path`` (None for unknown paths, which are 404)."""
        if path in self._scopes:
            return self._scopes[path]
        return "campaign_data" if self.campaigns.route(path) is not None else None

    def close(self) -> None:
        """Close pooled database connections."""
        with self._lock:
            pool, self._pool = self._pool, []
        for conn, _ in pool:
            conn.close()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection to the account's current data, in a read transaction (one consistent snapshot).

        Connections of an older account generation (the account started or discarded its changes since) are
        closed rather than reused.
        """
        generation = self.account.generation
        conn = None
        stale = []
        with self._lock:
            while self._pool and conn is None:
                candidate, candidate_generation = self._pool.pop()
                if candidate_generation == generation:
                    conn = candidate
                else:
                    stale.append(candidate)
        for old in stale:
            old.close()
        if conn is None:
            conn, generation = self.account.open_reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            try:
                conn.rollback()
            except sqlite3.Error:
                conn.close()
            else:
                if generation == self.account.generation:
                    with self._lock:
                        self._pool.append((conn, generation))
                else:
                    conn.close()

    def contacts(self, query: dict[str, str], optout_filters: bool) -> dict[str, Any]:
        """``GET /v3/contacts`` (see contact_search)."""
        q = parse_query(query, self.codec, optout_filters)
        with self._connection() as conn:
            return self.search.page(conn, q, self.account.data_version(conn))

    def contact_counts(self, query: dict[str, str], _optout_filters: bool) -> dict[str, int]:
        """``GET /v3/contacts/counts``; ``include=new_subscriber`` adds new_subscriber."""
        new_subscriber = False
        if "include" in query:
            new_subscriber = one_of("include", query["include"], ("new_subscriber",)) == "new_subscriber"
        with self._connection() as conn:
            return self.account.counts(new_subscriber, conn)

    def contact_lists(self, query: dict[str, str], _optout_filters: bool) -> dict[str, Any]:
        """``GET /v3/contact_lists``: one page; ``_links.next`` only when more lists remain."""
        if "cursor" in query:
            state = self.codec.decode(query["cursor"])
            if set(state) != set(_LISTS_DEFAULTS):
                raise ApiError.invalid("cursor is not valid: follow the _links.next.href of a previous page verbatim")
        else:
            state = _lists_query(query)
        lists = self.account.lists(state["membership"])
        if state["sms"] or not {"all", "active"} & set(state["statuses"]):
            lists = []  # every sandbox list is an active email list
        if state["name"] is not None:
            lists = [item for item in lists if item["name"] == state["name"]]
        start, limit = state["lists_offset"], state["limit"]
        body: dict[str, Any] = {"lists": lists[start : start + limit]}
        if state["include_count"]:
            body["lists_count"] = len(lists)
        if start + limit < len(lists):
            cursor = self.codec.encode({**state, "lists_offset": start + limit})
            body["_links"] = {"next": {"href": f"/v3/contact_lists?cursor={cursor}"}}
        return body

    def account_summary(self, query: dict[str, str], _optout_filters: bool) -> dict[str, Any]:
        """``GET /v3/account/summary``; ``extra_fields`` may add physical_address and company_logo."""
        extra = csv("extra_fields", query["extra_fields"], EXTRA_FIELDS) if "extra_fields" in query else []
        return self.account.summary(tuple(extra))


_LISTS_DEFAULTS: dict[str, Any] = {
    "lists_offset": 0,
    "limit": 50,
    "include_count": False,
    "membership": None,
    "name": None,
    "statuses": ["active"],
    "sms": False,
}


def _lists_query(query: dict[str, str]) -> dict[str, Any]:
    """Validated parameters of ``GET /v3/contact_lists`` (the state its cursors carry)."""
    state = dict(_LISTS_DEFAULTS, name=query.get("name"))
    if "limit" in query:
        state["limit"] = integer("limit", query["limit"], 1, MAX_LISTS_LIMIT)
    if "include_count" in query:
        state["include_count"] = boolean("include_count", query["include_count"])
    if "include_membership_count" in query:
        state["membership"] = one_of("include_membership_count", query["include_membership_count"], ("all", "active"))
    if "status" in query:
        state["statuses"] = csv("status", query["status"], LIST_STATUSES)
    if "channel_type" in query:
        state["sms"] = one_of("channel_type", query["channel_type"], ("email", "sms")) == "sms"
    if "include_sms_membership_count" in query:
        boolean("include_sms_membership_count", query["include_sms_membership_count"])
    return state
