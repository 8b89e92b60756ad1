"""``include_count=true`` counts the client relies on: equal to the rows the same query's pages return, true to the
contract's meaning of each filter, and current right after every kind of change."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from typing import Any

import requests

from ccoptout_xl.sandbox import AccountSpec, Sandbox

from .contract import validate
from .sandbox_http import Contact, get, iso, now, parse, sandbox_fixtures

ANCHOR = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
SPEC = AccountSpec(contacts=3_000, seed=3, anchor=ANCHOR)
DAY = dt.timedelta(days=1)
STATUSES = ("unsubscribed", "deleted", "unsubscribed,deleted")
OPTOUT_WINDOWS = (
    {},
    {"optout_after": ANCHOR - 900 * DAY},
    {"optout_before": ANCHOR - 20 * DAY},
    {"optout_after": ANCHOR - 900 * DAY, "optout_before": ANCHOR - 20 * DAY},
    {"optout_after": ANCHOR - 3 * DAY, "optout_before": ANCHOR + 30 * DAY},
)
CREATED_WINDOWS = (
    {},
    {"created_after": ANCHOR - 2000 * DAY},
    {"created_after": ANCHOR - 2000 * DAY, "created_before": ANCHOR - 10 * DAY},
)
sb, api = sandbox_fixtures(SPEC)


def query(status: str | None = None, **bounds: dt.datetime) -> dict[str, str]:
    params = {name: iso(moment) for name, moment in bounds.items()}
    if status is not None:
        params["status"] = status
    return params


def count(s: requests.Session, sandbox: Sandbox, params: dict[str, str]) -> int:
    body = get(s, sandbox, "/contacts", **params, include_count="true", limit=1)
    validate("Contacts", body)
    return body["contacts_count"]


def rows(s: requests.Session, sandbox: Sandbox, params: dict[str, str]) -> list[str]:
    """The contact ids of every page of the query (limit 500, next links followed verbatim)."""
    url: str | None = sandbox.base_url + "/contacts"
    request: dict[str, Any] | None = {**params, "limit": 500, "include_count": "true"}
    ids: list[str] = []
    while url is not None:
        body = s.get(url, params=request, timeout=10).json()
        ids += [c["contact_id"] for c in body["contacts"]]
        links = body.get("_links")
        url, request = (sandbox.base_url.removesuffix("/v3") + links["next"]["href"], None) if links else (None, None)
    return ids


def matches(contact: Contact, params: dict[str, str]) -> bool:
    """The contract's meaning of the filters, read from the contact as the API renders it."""
    address = contact["email_address"]
    deleted = "deleted_at" in contact
    wanted = params["status"].split(",")  # all, or some of unsubscribed and deleted
    status_ok = (
        "all" in wanted
        or (deleted and "deleted" in wanted)
        or (not deleted and "unsubscribed" in wanted and address["permission_to_send"] == "unsubscribed")
    )
    optout = parse(address["opt_out_date"]) if "opt_out_date" in address else None
    created = parse(contact["created_at"])
    if "optout_after" in params and (optout is None or not optout > parse(params["optout_after"])):
        return False
    if "optout_before" in params and (optout is None or not optout < parse(params["optout_before"])):
        return False
    if "created_after" in params and not created > parse(params["created_after"]):
        return False
    if "created_before" in params and not created < parse(params["created_before"]):
        return False
    return status_ok


def check_every_combination(s: requests.Session, sandbox: Sandbox) -> None:
    everyone = list(sandbox.account.contacts())
    for status, optout, created in itertools.product(STATUSES, OPTOUT_WINDOWS, CREATED_WINDOWS):
        params = query(status, **optout, **created)
        read = rows(s, sandbox, params)
        expected = [c["contact_id"] for c in everyone if matches(c, params)]
        assert count(s, sandbox, params) == len(read) == len(set(read)), params
        assert read == expected, params  # the same contacts, in API order


def test_counts_equal_the_rows_of_every_filter_combination(sb: Sandbox, api: requests.Session) -> None:
    check_every_combination(api, sb)


def test_counts_stay_equal_to_the_rows_after_every_kind_of_change(sb: Sandbox, api: requests.Session) -> None:
    rng = random.Random(9)
    account = sb.account
    account.opt_out(contact_ids=account.pick("active", 20, rng))
    for days in (950, 15):
        at = ANCHOR - days * DAY
        account.opt_out(contact_ids=account.pick("active", 20, rng, created_by=at), at=at, backdated=True)
    account.resubscribe(account.pick("unsubscribed", 20, rng))
    account.delete(account.pick("unsubscribed", 20, rng) + account.pick("active", 10, rng))
    check_every_combination(api, sb)


def test_status_deleted_with_an_optout_filter_counts_only_deleted_contacts_with_an_optout_date(
    sb: Sandbox, api: requests.Session
) -> None:
    deleted = [c for c in sb.account.contacts() if "deleted_at" in c]
    with_optout = [c for c in deleted if "opt_out_date" in c["email_address"]]
    assert 0 < len(with_optout) < len(deleted)
    assert count(api, sb, query("deleted")) == len(deleted)
    assert count(api, sb, query("deleted", optout_after=ANCHOR - 5000 * DAY)) == len(with_optout)
    assert count(api, sb, query("deleted", optout_before=ANCHOR + DAY)) == len(with_optout)
    truth = [f for f in sb.account.optouts_truth() if f.deleted]
    assert len(truth) == len(with_optout)


def test_counts_reflect_each_change_at_once(sb: Sandbox, api: requests.Session) -> None:
    """Each count is read (and cached) before the change and read again right after it."""
    rng = random.Random(4)
    account = sb.account
    old_date = ANCHOR - 400 * DAY
    old_window = query(optout_after=old_date - DAY, optout_before=old_date + DAY)
    old_window_deleted = query("deleted", optout_after=old_date - DAY, optout_before=old_date + DAY)
    unsubscribed = query("unsubscribed")
    deleted = query("deleted")
    both = query("unsubscribed,deleted", optout_after=ANCHOR - 3000 * DAY, created_after=ANCHOR - 3650 * DAY)
    started = now()
    fresh = query("unsubscribed", optout_after=started - dt.timedelta(seconds=2))
    watched = (old_window, old_window_deleted, unsubscribed, deleted, both, fresh)

    def counts() -> list[int]:
        return [count(api, sb, params) for params in watched]

    c0 = counts()
    assert c0[-1] == 0

    account.opt_out(contact_ids=account.pick("active", 7, rng, created_by=started - dt.timedelta(hours=2)))
    assert counts() == [c0[0], c0[1], c0[2] + 7, c0[3], c0[4] + 7, 7]

    backdated = account.pick("active", 5, rng, created_by=old_date)
    account.opt_out(contact_ids=backdated, at=old_date, backdated=True)
    assert counts() == [c0[0] + 5, c0[1], c0[2] + 12, c0[3], c0[4] + 12, 7]

    account.resubscribe(backdated[:2])
    assert counts() == [c0[0] + 3, c0[1], c0[2] + 10, c0[3], c0[4] + 10, 7]

    account.delete(backdated[2:])  # deleted opt-outs: out of the default and unsubscribed, into deleted
    assert counts() == [c0[0], c0[1] + 3, c0[2] + 7, c0[3] + 3, c0[4] + 10, 7]
    for params in watched:
        assert count(api, sb, params) == len(rows(api, sb, params))


def test_created_bounds_are_exclusive_at_each_contacts_precision(sb: Sandbox, api: requests.Session) -> None:
    """A created range is served as a seq interval (contacts are created in seq order): exact at its ends."""
    everyone = list(sb.account.contacts())
    eastern = [c for c in everyone if c["created_at"].endswith("-05:00")]
    z_style = [c for c in everyone if c["created_at"].endswith("Z")]
    for low, high in ((eastern[100], z_style[900]), (z_style[50], eastern[1000]), (eastern[7], eastern[8])):
        for status in (*STATUSES, "all"):
            for optout in ({}, {"optout_after": iso(ANCHOR - 3000 * DAY)}):
                params = {"status": status, "created_after": low["created_at"], "created_before": high["created_at"]}
                params.update(optout)
                read = rows(api, sb, params)
                expected = [c["contact_id"] for c in everyone if matches(c, params)]
                assert low["contact_id"] not in read and high["contact_id"] not in read
                assert count(api, sb, params) == len(read) and read == expected, params
