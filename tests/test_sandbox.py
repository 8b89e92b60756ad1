"""The sandbox over real HTTP on 127.0.0.1: contract shapes, filters, paging, errors, limits, faults."""

from __future__ import annotations

import datetime as dt
import http.client
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from ccoptout_xl.sandbox import AccountSpec, Fault, Sandbox, SettingError

from .contract import validate
from .sandbox_http import Contact, in_parallel, iso, parse, permission, session

ANCHOR = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
SPEC = AccountSpec(contacts=2_000, seed=1, anchor=ANCHOR)


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(SPEC, rate_limit=None, daily_quota=None) as sandbox:
        yield sandbox


@pytest.fixture
def fresh() -> Iterator[Sandbox]:
    """A sandbox a test may reconfigure (limits, faults, latency)."""
    with Sandbox(SPEC, rate_limit=None, daily_quota=None) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def truth(sb: Sandbox) -> list[Contact]:
    return list(sb.account.contacts())


@pytest.fixture(scope="module")
def api(sb: Sandbox) -> requests.Session:
    return session(sb)


def get(s: requests.Session, sandbox: Sandbox, path: str, **params: Any) -> requests.Response:
    return s.get(sandbox.base_url + path, params=params, timeout=10)


def walk(s: requests.Session, sandbox: Sandbox, **params: Any) -> list[dict[str, Any]]:
    """Every page of GET /contacts, following next links verbatim; each body checked against the contract."""
    pages = []
    url: str | None = sandbox.base_url + "/contacts"
    query: dict[str, Any] | None = params
    for _ in range(1_000):
        response = s.get(url, params=query, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        validate("Contacts", body)
        pages.append(body)
        if "_links" not in body:
            return pages
        href = body["_links"]["next"]["href"]
        assert href.startswith("/v3/contacts?cursor=")
        url, query = sandbox.base_url.removesuffix("/v3") + href, None
    raise AssertionError("too many pages")


def found(s: requests.Session, sandbox: Sandbox, **params: Any) -> list[str]:
    return [c["contact_id"] for page in walk(s, sandbox, limit=500, **params) for c in page["contacts"]]


def expected(truth: list[Contact], keep: Callable[[Contact], bool]) -> list[str]:
    return [c["contact_id"] for c in truth if keep(c)]


def opt_out(c: Contact) -> dt.datetime | None:
    value = c["email_address"].get("opt_out_date")
    return parse(value) if value else None


STATUS_TRUTH: dict[str, Callable[[Contact], bool]] = {
    "all": lambda c: True,
    "active": lambda c: "deleted_at" not in c and permission(c) in ("explicit", "implicit"),
    "deleted": lambda c: "deleted_at" in c,
    "not_set": lambda c: "deleted_at" not in c and permission(c) == "not_set",
    "pending_confirmation": lambda c: "deleted_at" not in c and permission(c) == "pending_confirmation",
    "temp_hold": lambda c: "deleted_at" not in c and permission(c) == "temp_hold",
    "unsubscribed": lambda c: "deleted_at" not in c and permission(c) == "unsubscribed",
}


# --- shapes ------------------------------------------------------------------------------------------


def test_every_contact_of_the_account_matches_the_contract_and_the_truth(
    sb: Sandbox, api: requests.Session, truth: list[Contact]
) -> None:
    pages = walk(api, sb, status="all", include="list_memberships", include_count="true", limit=500)
    served = [c for page in pages for c in page["contacts"]]
    assert served == truth
    assert {page["contacts_count"] for page in pages} == {2_000}
    statuses = {permission(c) for c in served} | {"deleted" for c in served if "deleted_at" in c}
    assert statuses == {
        "explicit",
        "implicit",
        "not_set",
        "pending_confirmation",
        "temp_hold",
        "unsubscribed",
        "deleted",
    }


def test_contact_fields_appear_only_where_they_apply(sb: Sandbox, api: requests.Session) -> None:
    body = get(api, sb, "/contacts", status="all", limit=500).json()
    validate("Contacts", body)
    for c in body["contacts"]:
        address = c["email_address"]
        assert "list_memberships" not in c
        opted_out = {"opt_out_source", "opt_out_date", "opt_out_reason"} & set(address)
        if opted_out:
            assert permission(c) == "unsubscribed" and {"opt_out_source", "opt_out_date"} <= opted_out
        else:
            assert permission(c) != "unsubscribed"
    every = "custom_fields,list_memberships,phone_numbers,street_addresses,taggings,notes"
    body = get(api, sb, "/contacts", include=every, limit=5).json()
    validate("Contacts", body)
    assert all(c["custom_fields"] == c["notes"] == [] for c in body["contacts"])
    assert "contacts_count" not in body


def test_counts_match_contract_and_truth(sb: Sandbox, api: requests.Session, truth: list[Contact]) -> None:
    body = get(api, sb, "/contacts/counts").json()
    validate("ContactsCounts", body)
    live = [c for c in truth if "deleted_at" not in c]
    assert body == {
        "total": len(live),
        "explicit": sum(permission(c) == "explicit" for c in live),
        "implicit": sum(permission(c) == "implicit" for c in live),
        "pending": sum(permission(c) == "pending_confirmation" for c in live),
        "unsubscribed": sum(permission(c) == "unsubscribed" for c in live),
    }
    with_new = get(api, sb, "/contacts/counts", include="new_subscriber").json()
    validate("ContactsCounts", with_new)
    month_ago = ANCHOR - dt.timedelta(days=30)
    assert with_new["new_subscriber"] == sum(parse(c["created_at"]) > month_ago for c in live) > 0


def test_contact_lists_match_contract_and_truth(sb: Sandbox, api: requests.Session, truth: list[Contact]) -> None:
    body = get(api, sb, "/contact_lists", include_count="true", include_membership_count="all").json()
    validate("ContactListArray", body)
    assert body["lists_count"] == len(body["lists"]) == 6 and "_links" not in body
    for item in body["lists"]:
        members = [c for c in truth if item["list_id"] in c["list_memberships"] and "deleted_at" not in c]
        assert item["membership_count"] == len(members)
    plain = get(api, sb, "/contact_lists").json()
    validate("ContactListArray", plain)
    assert "lists_count" not in plain and all("membership_count" not in i for i in plain["lists"])
    first = get(api, sb, "/contact_lists", limit=4, include_membership_count="active").json()
    validate("ContactListArray", first)
    assert len(first["lists"]) == 4 and first["_links"]["next"]["href"].startswith("/v3/contact_lists?cursor=")
    second = api.get(sb.base_url.removesuffix("/v3") + first["_links"]["next"]["href"], timeout=10).json()
    validate("ContactListArray", second)
    assert [i["list_id"] for i in first["lists"] + second["lists"]] == [i["list_id"] for i in body["lists"]]
    assert "_links" not in second and "membership_count" in second["lists"][0]
    named = get(api, sb, "/contact_lists", name="Customers — EU").json()
    assert [i["name"] for i in named["lists"]] == ["Customers — EU"]


def test_account_summary_matches_contract(sb: Sandbox, api: requests.Session) -> None:
    body = get(api, sb, "/account/summary").json()
    validate("Customer", body)
    assert body["organization_name"] == sb.account.name and "physical_address" not in body
    assert (body["country_code"], body["state_code"], body["time_zone_id"]) == ("US", "MA", "US/Eastern")
    full = get(api, sb, "/account/summary", extra_fields="physical_address,company_logo").json()
    validate("Customer", full)
    assert full["physical_address"]["country_code"] == "US" and full["company_logo"]["url"]


def test_unknown_paths_and_methods(sb: Sandbox, api: requests.Session) -> None:
    missing = get(api, sb, "/contacts/123/nothing")
    assert missing.status_code == 404
    validate("APIErrorSchema", missing.json())
    wrong_method = api.post(sb.base_url + "/contacts", json={"email_address": {"address": "a@b.example"}}, timeout=10)
    assert wrong_method.status_code == 405
    validate("APIErrorSchema", wrong_method.json())
    assert get(api, sb, "/contacts", limit=1, some_future_parameter="x").status_code == 200


# --- filters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status", [*STATUS_TRUTH, "unsubscribed,deleted", "temp_hold,not_set,pending_confirmation", "active,all"]
)
def test_status_filter(sb: Sandbox, api: requests.Session, truth: list[Contact], status: str) -> None:
    rules = [STATUS_TRUTH[s] for s in status.split(",")]
    assert found(api, sb, status=status) == expected(truth, lambda c: any(rule(c) for rule in rules))


def test_no_status_means_every_contact_not_deleted(sb: Sandbox, api: requests.Session, truth: list[Contact]) -> None:
    assert found(api, sb) == expected(truth, lambda c: "deleted_at" not in c)


def test_optout_windows(sb: Sandbox, api: requests.Session, truth: list[Contact]) -> None:
    month_ago = ANCHOR - dt.timedelta(days=30)
    recent = found(api, sb, status="unsubscribed", optout_after=iso(month_ago))
    assert recent == expected(truth, lambda c: STATUS_TRUTH["unsubscribed"](c) and opt_out(c) > month_ago)
    assert len(recent) == 6
    # Without status: not-deleted contacts only; with deleted: deleted opt-outs too. No opt-out date never matches.
    assert found(api, sb, optout_after=iso(month_ago)) == recent
    start, end = ANCHOR - dt.timedelta(days=900), ANCHOR - dt.timedelta(days=400)
    window = found(api, sb, status="all", optout_after=iso(start), optout_before=iso(end))
    assert window == expected(truth, lambda c: opt_out(c) is not None and start < opt_out(c) < end)
    assert any("deleted_at" in c for c in truth if c["contact_id"] in set(window))
    before = found(api, sb, status="unsubscribed", optout_before=iso(end))
    assert before == expected(truth, lambda c: STATUS_TRUTH["unsubscribed"](c) and opt_out(c) < end)


def test_optout_bounds_are_exclusive(sb: Sandbox, api: requests.Session, truth: list[Contact]) -> None:
    for contact in [c for c in truth if STATUS_TRUTH["unsubscribed"](c)][:3]:
        moment = opt_out(contact)
        assert moment is not None
        ms = dt.timedelta(milliseconds=1)
        cid = contact["contact_id"]
        assert cid not in found(
            api, sb, status="unsubscribed", optout_after=iso(moment), optout_before=iso(moment + ms)
        )
        assert cid not in found(
            api, sb, status="unsubscribed", optout_after=iso(moment - ms), optout_before=iso(moment)
        )
        between = found(api, sb, status="unsubscribed", optout_after=iso(moment - ms), optout_before=iso(moment + ms))
        assert cid in between
        # The same instant written with another offset selects the same contacts.
        eastern = (moment - ms).astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat(timespec="milliseconds")
        assert found(api, sb, status="unsubscribed", optout_after=eastern, optout_before=iso(moment + ms)) == between


def test_opting_out_does_not_move_updated_at(sb: Sandbox, api: requests.Session, truth: list[Contact]) -> None:
    month_ago = ANCHOR - dt.timedelta(days=30)
    by_optout = set(found(api, sb, status="unsubscribed", optout_after=iso(month_ago)))
    by_update = set(found(api, sb, status="unsubscribed", updated_after=iso(month_ago)))
    stale = [c["contact_id"] for c in truth if c["contact_id"] in by_optout and parse(c["updated_at"]) < month_ago]
    assert stale, "a recent opt-out whose contact was last updated long ago"
    assert all(cid in by_optout and cid not in by_update for cid in stale)


@pytest.mark.parametrize("field", ["updated", "created"])
def test_created_and_updated_windows(sb: Sandbox, api: requests.Session, truth: list[Contact], field: str) -> None:
    start, end = ANCHOR - dt.timedelta(days=2_000), ANCHOR - dt.timedelta(days=1_000)
    served = found(api, sb, status="all", **{f"{field}_after": iso(start), f"{field}_before": iso(end)})
    assert served == expected(truth, lambda c: start < parse(c[f"{field}_at"]) < end)
    assert served
    recent = found(api, sb, **{f"{field}_after": iso(ANCHOR - dt.timedelta(days=60))})
    assert recent == expected(
        truth, lambda c: "deleted_at" not in c and parse(c[f"{field}_at"]) > ANCHOR - dt.timedelta(days=60)
    )


def test_email_filter(sb: Sandbox, api: requests.Session, truth: list[Contact]) -> None:
    deleted = next(c for c in truth if "deleted_at" in c)
    address = deleted["email_address"]["address"]
    assert found(api, sb, email=address.upper(), status="all") == [deleted["contact_id"]]
    assert found(api, sb, email=address) == []  # deleted: not in the default status
    assert found(api, sb, email="nobody@nowhere.example", status="all") == []


def test_lists_filter_and_include_count(sb: Sandbox, api: requests.Session, truth: list[Contact]) -> None:
    lists = [item["list_id"] for item in sb.account.lists()]
    chosen = {lists[1], lists[4]}
    served = found(api, sb, status="unsubscribed", lists=",".join(chosen))
    keep = STATUS_TRUTH["unsubscribed"]
    assert served == expected(truth, lambda c: keep(c) and bool(chosen & set(c["list_memberships"])))
    body = get(
        api, sb, "/contacts", status="unsubscribed", lists=",".join(chosen), include_count="true", limit=1
    ).json()
    assert body["contacts_count"] == len(served) and len(body["contacts"]) == 1
    assert found(api, sb, lists="3fa85f64-5717-4562-b3fc-2c963f66afa6", status="all") == []
    assert found(api, sb, tags="3fa85f64-5717-4562-b3fc-2c963f66afa6", status="all") == []  # no contact has tags


# --- paging ------------------------------------------------------------------------------------------


def test_pagination_returns_each_contact_once(sb: Sandbox, api: requests.Session, truth: list[Contact]) -> None:
    pages = walk(api, sb, status="unsubscribed", limit=7, include_count="true")
    ids = [c["contact_id"] for page in pages for c in page["contacts"]]
    assert ids == expected(truth, STATUS_TRUTH["unsubscribed"]) and len(set(ids)) == len(ids) == 400
    assert [len(p["contacts"]) for p in pages[:-1]] == [7] * (len(pages) - 1) and len(pages[-1]["contacts"]) < 7
    assert all(p["contacts_count"] == 400 for p in pages)


def test_an_exact_multiple_of_limit_ends_with_an_empty_page(sb: Sandbox, api: requests.Session) -> None:
    pages = walk(api, sb, status="unsubscribed", limit=100)  # 400 unsubscribed
    assert [len(p["contacts"]) for p in pages] == [100, 100, 100, 100, 0]
    assert all("_links" in p for p in pages[:4]) and pages[-1] == {"contacts": []}


def test_a_scrambled_listing_pages_every_contact_once_in_no_date_order(fresh: Sandbox, truth: list[Contact]) -> None:
    s = session(fresh)
    created = walk(s, fresh, status="unsubscribed", limit=7, include_count="true")
    fresh.listing = "scrambled"
    scrambled = walk(s, fresh, status="unsubscribed", limit=7, include_count="true")
    listed = [c["contact_id"] for page in scrambled for c in page["contacts"]]
    # The same contacts and counts, each once, pages as full as before; only the order differs.
    assert sorted(listed) == sorted(expected(truth, STATUS_TRUTH["unsubscribed"])) and len(set(listed)) == 400
    assert [len(p["contacts"]) for p in scrambled] == [len(p["contacts"]) for p in created]
    assert all(p["contacts_count"] == 400 for p in scrambled)
    # Unrelated to any date: about as many steps up as down from one contact to the next, for each date.
    contacts = [c for page in scrambled for c in page["contacts"]]
    for date in (lambda c: parse(c["created_at"]), lambda c: parse(c["updated_at"]), opt_out):
        values = [date(c) for c in contacts]
        rising = sum(a < b for a, b in itertools.pairwise(values)) / (len(values) - 1)
        assert 0.4 < rising < 0.6, rising
    # A narrower query lists its contacts in the same relative order, so windows are samples of a range too.
    since = ANCHOR - dt.timedelta(days=365)
    window = found(s, fresh, status="unsubscribed", optout_after=since.isoformat())
    assert window == [i for i in listed if opt_out(next(c for c in contacts if c["contact_id"] == i)) > since]


def test_the_listing_is_checked(fresh: Sandbox) -> None:
    with pytest.raises(SettingError, match="listing must be one of created, scrambled, not 'random'"):
        fresh.listing = "random"
    assert fresh.listing == "created"


def test_cursor_carries_the_query_and_ignores_other_parameters(sb: Sandbox, api: requests.Session) -> None:
    first = get(api, sb, "/contacts", status="unsubscribed", limit=3, include="list_memberships").json()
    href = first["_links"]["next"]["href"]
    cursor = href.split("cursor=", 1)[1]
    assert all(ch.isalnum() or ch in "-_" for ch in cursor)
    plain = api.get(sb.base_url.removesuffix("/v3") + href, timeout=10).json()
    mixed = get(api, sb, "/contacts", cursor=cursor, status="deleted", limit=500).json()
    assert plain == mixed and len(plain["contacts"]) == 3
    assert all(permission(c) == "unsubscribed" and "list_memberships" in c for c in plain["contacts"])


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty", "lists"])
def test_tampered_cursor_is_400(sb: Sandbox, api: requests.Session, damage: str) -> None:
    cursor = get(api, sb, "/contacts", limit=2).json()["_links"]["next"]["href"].split("cursor=", 1)[1]
    bad = {
        "flip": cursor[:20] + ("A" if cursor[20] != "A" else "B") + cursor[21:],
        "truncate": cursor[:-5],
        "garbage": "not a cursor!",
        "empty": "",
        "lists": get(api, sb, "/contact_lists", limit=1).json()["_links"]["next"]["href"].split("cursor=", 1)[1],
    }[damage]
    response = get(api, sb, "/contacts", cursor=bad)
    assert response.status_code == 400
    validate("APIErrorSchema", response.json())
    assert "cursor" in response.json()[0]["error_message"]


# --- validation errors -------------------------------------------------------------------------------

BAD_REQUESTS = [
    ("/contacts", {"status": "bogus"}, "status"),
    ("/contacts", {"status": "unsubscribed,"}, "status"),
    ("/contacts", {"status": "explicit"}, "status"),
    ("/contacts", {"limit": "0"}, "limit"),
    ("/contacts", {"limit": "501"}, "limit"),
    ("/contacts", {"limit": "abc"}, "limit"),
    ("/contacts", {"limit": "1.5"}, "limit"),
    ("/contacts", {"limit": ""}, "limit"),
    ("/contacts", {"optout_after": "yesterday"}, "optout_after"),
    ("/contacts", {"optout_before": "2022-13-01T00:00:00Z"}, "optout_before"),
    ("/contacts", {"optout_after": "2022-01-01T00:00:00"}, "optout_after"),
    ("/contacts", {"optout_after": "2022-01-01T00:00:00 05:00"}, "optout_after"),
    ("/contacts", {"updated_after": "2022-02-30T00:00:00Z"}, "updated_after"),
    ("/contacts", {"created_before": "2022/01/01"}, "created_before"),
    ("/contacts", {"include_count": "yes"}, "include_count"),
    ("/contacts", {"include": "list_memberships,bogus"}, "include"),
    ("/contacts", {"lists": ",".join(f"3fa85f64-5717-4562-b3fc-2c963f66a{i:03d}" for i in range(26))}, "lists"),
    ("/contacts", {"email": "not-an-address"}, "email"),
    ("/contacts", {"tags": ",".join(["t"] * 51)}, "tags"),
    ("/contacts", {"sms_status": "bogus"}, "sms_status"),
    ("/contacts", {"segment_id": "x"}, "segment_id"),
    ("/contacts/counts", {"include": "new_subscribers"}, "include"),
    ("/contact_lists", {"limit": "1001"}, "limit"),
    ("/contact_lists", {"include_membership_count": "some"}, "include_membership_count"),
    ("/contact_lists", {"include_count": "1"}, "include_count"),
    ("/account/summary", {"extra_fields": "physical_address,logo"}, "extra_fields"),
]


@pytest.mark.parametrize(("path", "params", "parameter"), BAD_REQUESTS)
def test_bad_parameters_are_400_with_an_array_body(
    sb: Sandbox, api: requests.Session, path: str, params: dict[str, str], parameter: str
) -> None:
    response = get(api, sb, path, **params)
    assert response.status_code == 400
    body = response.json()
    validate("APIErrorSchema", body)
    assert body[0]["error_key"] == "contacts.api.validation.error" and parameter in body[0]["error_message"]


def test_limits_at_the_edges_are_accepted(sb: Sandbox, api: requests.Session) -> None:
    assert len(get(api, sb, "/contacts", limit=500).json()["contacts"]) == 500
    assert len(get(api, sb, "/contacts", limit=1).json()["contacts"]) == 1
    assert len(get(api, sb, "/contacts").json()["contacts"]) == 50
    assert get(api, sb, "/contacts", include_count="TRUE", optout_after="2020-01-01").status_code == 200


def test_a_server_without_optout_filters(fresh: Sandbox) -> None:
    s = session(fresh)
    fresh.optout_filters = False
    for name in ("optout_after", "optout_before"):
        response = get(s, fresh, "/contacts", status="unsubscribed", **{name: iso(ANCHOR)})
        assert response.status_code == 400
        validate("APIErrorSchema", response.json())
        assert name in response.json()[0]["error_message"]
    assert get(s, fresh, "/contacts", status="unsubscribed", updated_after=iso(ANCHOR)).status_code == 200
    fresh.optout_filters = True
    assert get(s, fresh, "/contacts", status="unsubscribed", optout_after=iso(ANCHOR)).status_code == 200


# --- auth, limits, faults, latency -------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc", "Bearer", "bearer {token}x", "Bearer jéton"])
def test_missing_or_wrong_token_is_401_with_an_object_body(fresh: Sandbox, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header.format(token=fresh.token).encode("latin-1")}
    response = requests.get(fresh.base_url + "/contacts", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json() == {"error_key": "unauthorized", "error_message": "Unauthorized"}
    validate("AuthorizationErrorSchema", response.json())
    assert [r.status for r in fresh.requests] == [401]
    ok = requests.get(fresh.base_url + "/contacts", headers={"Authorization": f"bearer {fresh.token}"}, timeout=10)
    assert ok.status_code == 200


def test_a_burst_over_the_rate_limit_is_throttled(fresh: Sandbox) -> None:
    fresh.rate_limit = 3
    s = session(fresh)
    started = time.monotonic()
    statuses = [get(s, fresh, "/contacts/counts").status_code for _ in range(8)]
    if time.monotonic() - started > 0.9:
        pytest.skip("the burst took too long on this machine to be a burst")
    assert statuses == [200, 200, 200] + [429] * 5
    throttled = get(s, fresh, "/contacts/counts")
    assert throttled.json() == {"error_key": "throttled", "error_message": "Too Many Requests"}
    validate("AuthorizationErrorSchema", throttled.json())
    time.sleep(max(0.0, started + 1.05 - time.monotonic()))
    # Throttled requests did not count: a full window is available again.
    assert [get(s, fresh, "/contacts/counts").status_code for _ in range(3)] == [200, 200, 200]
    fresh.rate_limit = None
    assert all(get(s, fresh, "/contacts/counts").status_code == 200 for _ in range(10))


def test_daily_quota(fresh: Sandbox) -> None:
    fresh.daily_quota = 3
    s = session(fresh)
    assert [get(s, fresh, "/contacts/counts").status_code for _ in range(3)] == [200] * 3
    over = get(s, fresh, "/contacts/counts")
    assert over.status_code == 429
    assert over.json() == {"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}
    validate("AuthorizationErrorSchema", over.json())
    assert requests.get(fresh.base_url + "/contacts/counts", timeout=10).status_code == 401  # auth comes first
    assert fresh.quota_used >= 4
    fresh.daily_quota = 100
    assert get(s, fresh, "/contacts/counts").status_code == 200


def test_quota_is_checked_before_the_rate(fresh: Sandbox) -> None:
    fresh.daily_quota, fresh.rate_limit = 2, 1
    s = session(fresh)
    assert [get(s, fresh, "/contacts/counts").status_code for _ in range(2)] == [200, 429]
    assert get(s, fresh, "/contacts/counts").json()["error_key"] == "quota_exceeded"


@pytest.mark.parametrize("kind", ["500", "503"])
def test_error_faults(fresh: Sandbox, kind: str) -> None:
    fresh.faults.add(Fault(kind=kind, at_request=2))
    s = session(fresh)
    responses = [get(s, fresh, "/contacts", limit=1) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, int(kind), 200]
    validate("APIErrorSchema", responses[1].json())
    assert [r.status for r in fresh.requests] == [200, int(kind), 200]


def test_drop_fault_closes_the_connection_without_an_answer(fresh: Sandbox) -> None:
    fresh.faults.add(Fault(kind="drop", at_request=1))
    s = session(fresh)
    with pytest.raises(requests.ConnectionError):
        get(s, fresh, "/contacts", limit=1)
    assert get(s, fresh, "/contacts", limit=1).status_code == 200
    assert [r.status for r in fresh.requests] == [0, 200]


def test_slow_fault_and_latency(fresh: Sandbox) -> None:
    s = session(fresh)
    fresh.faults.add(Fault(kind="slow", at_request=1, delay=0.3))
    started = time.monotonic()
    assert get(s, fresh, "/contacts", limit=1).status_code == 200
    assert time.monotonic() - started >= 0.3
    fresh.latency = 0.25
    started = time.monotonic()
    assert get(s, fresh, "/contact_lists").status_code == 200
    assert time.monotonic() - started >= 0.25
    # Latency is slept per request: parallel requests overlap.
    statuses, elapsed = in_parallel(fresh, "/contacts/counts")
    assert statuses == [200] * 4 and elapsed < 0.9


def test_malformed_fault_sends_truncated_json_with_a_correct_length(fresh: Sandbox) -> None:
    fresh.faults.add(Fault(kind="malformed", at_request=1))
    response = get(session(fresh), fresh, "/contacts", limit=3)
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content) > 0
    with pytest.raises(ValueError):
        json.loads(response.content)


def test_faults_by_rate_are_seeded_and_filtered_by_path(fresh: Sandbox) -> None:
    def pattern() -> list[int]:
        fresh.reset_log()
        fresh.faults.clear()
        fresh.faults.add(Fault(kind="503", rate=0.5, seed=7, path_prefix="/v3/contacts"))
        s = session(fresh)
        return [get(s, fresh, "/contacts/counts").status_code for _ in range(12)]

    first = pattern()
    assert first == pattern() and set(first) == {200, 503}
    assert all(get(session(fresh), fresh, "/contact_lists").status_code == 200 for _ in range(5))


def test_request_log(fresh: Sandbox) -> None:
    s = session(fresh)
    get(s, fresh, "/contacts", status="unsubscribed", limit="5")
    requests.get(fresh.base_url + "/contacts/counts", timeout=10)
    log = list(fresh.requests)
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", "/v3/contacts", 200),
        ("GET", "/v3/contacts/counts", 401),
    ]
    assert log[0].query == {"status": "unsubscribed", "limit": "5"} and log[0].at <= log[1].at
    assert fresh.requests == log and fresh.requests[-1] == log[-1] and log[0] in fresh.requests
    fresh.reset_log()
    assert fresh.requests == [] and len(fresh.requests) == 0
    fresh.faults.add(Fault(kind="500", at_request=1, path_prefix=None))
    assert get(s, fresh, "/account/summary").status_code == 500  # numbering restarted


# --- HTTP plumbing -----------------------------------------------------------------------------------


def test_keep_alive_and_connection_close(sb: Sandbox) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {sb.token}"}
        for _ in range(3):  # several requests on one connection
            conn.request("GET", "/v3/contacts?limit=2", headers=headers)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200 and int(response.getheader("Content-Length")) == len(body)
            assert response.getheader("Content-Type").startswith("application/json")
        conn.request("GET", "/v3/nothing", headers={**headers, "Connection": "close"})
        response = conn.getresponse()
        response.read()
        assert response.status == 404 and response.getheader("Connection") == "close"
    finally:
        conn.close()


def test_lifecycle_and_loopback_only() -> None:
    sandbox = Sandbox(SPEC)
    with pytest.raises(RuntimeError):
        _ = sandbox.base_url
    sandbox.start()
    url = sandbox.base_url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v3") and sandbox.token.isprintable()
    sandbox.stop()
    sandbox.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/contacts", timeout=5)
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError):
            Sandbox(SPEC, host=host)


def test_serve_forever_blocks_until_stopped_from_another_thread() -> None:
    sandbox = Sandbox(SPEC)
    runner = threading.Thread(target=sandbox.serve_forever, daemon=True)
    runner.start()
    for _ in range(200):  # bounded wait until it listens
        try:
            _ = sandbox.base_url
            break
        except RuntimeError:
            time.sleep(0.01)
    assert get(session(sandbox), sandbox, "/contacts/counts").status_code == 200
    sandbox.stop()
    runner.join(5)
    assert not runner.is_alive()
    sandbox.start()  # a stopped sandbox can serve again
    try:
        assert get(session(sandbox), sandbox, "/contacts/counts").status_code == 200
    finally:
        sandbox.stop()
