"""Live changes to a running sandbox's account (opt-outs, re-subscriptions, deletions), over real HTTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections import Counter

import pytest
import requests

from ccoptout_xl.sandbox import Account, AccountSpec, Sandbox

from .contract import validate
from .sandbox_http import (
    Contact,
    active,
    contacts,
    found,
    get,
    iso,
    now,
    pages,
    parse,
    permission,
    sandbox_fixtures,
    session,
)

ANCHOR = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
SPEC = AccountSpec(contacts=2_000, seed=1, anchor=ANCHOR)
OPT_OUT_FIELDS = {"opt_out_source", "opt_out_date", "opt_out_reason"}
sb, api = sandbox_fixtures(SPEC)


def around_now() -> tuple[dt.datetime, dt.datetime]:
    """A window that surely holds a change made now: -05:00-style contacts get whole seconds (floored)."""
    moment = now()
    return moment - dt.timedelta(seconds=2), moment + dt.timedelta(seconds=60)


def memberships(contacts: list[Contact]) -> Counter[str]:
    return Counter(list_id for c in contacts for list_id in c["list_memberships"])


def list_counts(s: requests.Session, sandbox: Sandbox, which: str) -> dict[str, int]:
    body = get(s, sandbox, "/contact_lists", include_membership_count=which)
    return {item["list_id"]: item["membership_count"] for item in body["lists"]}


def file_state(account: Account) -> tuple[str, int]:
    return hashlib.sha256(account.path.read_bytes()).hexdigest(), account.path.stat().st_mtime_ns


# --- opt-outs --------------------------------------------------------------------------------------------


def test_new_optouts_show_in_unsubscribed_results_and_optout_windows_only(sb: Sandbox, api: requests.Session) -> None:
    old = contacts(sb.account)
    counts = get(api, sb, "/contacts/counts")
    active_members = list_counts(api, sb, "active")
    after, until = around_now()

    ids = sb.account.opt_out(count=25)

    assert len(set(ids)) == 25 and sb.account.changed
    assert all(active(old[i]) for i in ids)
    # Deterministic: the first active contacts in API (seq) order.
    assert ids == [i for i, c in old.items() if active(c)][:25]
    new = contacts(sb.account)
    for i in ids:
        contact, address = new[i], new[i]["email_address"]
        assert permission(contact) == "unsubscribed"
        assert address["opt_out_source"] == "Contact" and address["opt_out_reason"] == "Too many emails"
        assert after < parse(address["opt_out_date"]) < until
        assert address["updated_at"] == address["opt_out_date"]
        assert contact["updated_at"] == old[i]["updated_at"]  # opting out does not move the contact's updated_at
        style = "Z" if old[i]["created_at"].endswith("Z") else "-05:00"
        assert address["opt_out_date"].endswith(style)

    unsubscribed = found(api, sb, status="unsubscribed")
    assert set(ids) <= set(unsubscribed)
    assert unsubscribed[ids[0]] == {k: v for k, v in new[ids[0]].items() if k != "list_memberships"}
    in_window = {
        i
        for i, c in new.items()
        if "deleted_at" not in c and "opt_out_date" in c["email_address"]
        if parse(c["email_address"]["opt_out_date"]) > after
    }
    assert set(found(api, sb, optout_after=iso(after))) == in_window == set(ids)
    assert set(found(api, sb, optout_after=iso(after), optout_before=iso(until))) == set(ids)
    assert not set(found(api, sb, optout_before=iso(after))) & set(ids)
    assert not set(found(api, sb, updated_after=iso(after))) & set(ids)

    moved = Counter(permission(old[i]) for i in ids)
    expected = dict(counts)
    expected["unsubscribed"] += 25
    expected["explicit"] -= moved["explicit"]
    expected["implicit"] -= moved["implicit"]
    assert get(api, sb, "/contacts/counts") == expected == sb.account.counts()
    body = get(api, sb, "/contacts", status="unsubscribed", include_count="true", limit=1)
    assert body["contacts_count"] == expected["unsubscribed"]
    body = get(api, sb, "/contacts", optout_after=iso(after), include_count="true", limit=1)
    assert body["contacts_count"] == 25
    lost = memberships([new[i] for i in ids])
    assert list_counts(api, sb, "active") == {k: v - lost[k] for k, v in active_members.items()}


def test_opt_out_given_contacts_at_an_instant(sb: Sandbox, api: requests.Session) -> None:
    old = contacts(sb.account)
    z_style = next(i for i, c in old.items() if permission(c) == "pending_confirmation" and c["created_at"][-1] == "Z")
    eastern = next(i for i, c in old.items() if active(c) and c["created_at"].endswith("-05:00"))
    at = dt.datetime(2026, 11, 21, 9, 30, 15, 123_987, tzinfo=dt.timezone(dt.timedelta(hours=-5)))

    assert sb.account.opt_out(contact_ids=[z_style, eastern], at=at, source="Account", reason=None) == [
        z_style,
        eastern,
    ]

    new = found(api, sb, status="unsubscribed")
    assert new[z_style]["email_address"]["opt_out_date"] == "2026-11-21T14:30:15.123Z"
    assert new[eastern]["email_address"]["opt_out_date"] == "2026-11-21T09:30:15-05:00"  # whole seconds
    for i in (z_style, eastern):
        assert new[i]["email_address"]["opt_out_source"] == "Account"
        assert "opt_out_reason" not in new[i]["email_address"]
    # Bounds are exclusive, at each contact's precision.
    assert set(found(api, sb, optout_after="2026-11-21T14:30:15.122Z")) == {z_style}
    assert set(found(api, sb, optout_after="2026-11-21T14:30:14.999Z")) == {z_style, eastern}
    assert set(found(api, sb, optout_after="2026-11-21T14:30:15Z", optout_before="2026-11-21T14:30:15.124Z")) == {
        z_style
    }
    lifecycles = dict(sb.account.lifecycles())
    assert lifecycles[z_style] == lifecycles[eastern] == "unsubscribed_recently"


# --- re-subscriptions and deletions ----------------------------------------------------------------------


def test_resubscribed_contacts_leave_unsubscribed_results_and_lose_the_optout_fields(
    sb: Sandbox, api: requests.Session
) -> None:
    old = contacts(sb.account)
    after, until = around_now()
    fresh = sb.account.opt_out(count=6)
    generated = [i for i, c in old.items() if permission(c) == "unsubscribed" and "deleted_at" not in c][:3]
    counts = get(api, sb, "/contacts/counts")
    back = fresh[:3] + generated

    assert sb.account.resubscribe(back) == back

    everyone = found(api, sb)  # every page validated against the contract
    for i in back:
        address = everyone[i]["email_address"]
        assert address["permission_to_send"] == "explicit" and address["confirm_status"] == "confirmed"
        assert not OPT_OUT_FIELDS & set(address)
        assert address["opt_in_source"] == "Contact"
        assert after < parse(address["opt_in_date"]) < until and address["updated_at"] == address["opt_in_date"]
        assert everyone[i]["updated_at"] == old[i]["updated_at"]
        validate("ContactResource", everyone[i])
    assert not set(found(api, sb, status="unsubscribed")) & set(back)
    assert set(found(api, sb, optout_after=iso(after))) == set(fresh[3:])
    assert not set(found(api, sb, optout_before=iso(until))) & set(back)
    assert set(back) <= set(found(api, sb, status="active"))
    expected = dict(counts, unsubscribed=counts["unsubscribed"] - 6, explicit=counts["explicit"] + 6)
    assert get(api, sb, "/contacts/counts") == expected
    body = get(api, sb, "/contacts", status="unsubscribed", include_count="true")
    assert body["contacts_count"] == expected["unsubscribed"]
    lifecycles = dict(sb.account.lifecycles())
    assert {lifecycles[i] for i in back} == {"resubscribed"}


def test_deleted_contacts_show_only_under_status_deleted_and_keep_their_optout(
    sb: Sandbox, api: requests.Session
) -> None:
    old = contacts(sb.account)
    after, _ = around_now()
    opted_out = sb.account.opt_out(count=4)
    plain = [i for i, c in old.items() if active(c) and i not in opted_out][:3]
    counts = get(api, sb, "/contacts/counts")
    all_members = list_counts(api, sb, "all")
    gone = opted_out[:2] + plain

    assert sb.account.delete(gone) == gone

    deleted = found(api, sb, status="deleted")
    assert set(gone) <= set(deleted)
    for i in gone:
        assert deleted[i]["deleted_at"] in (after.date().isoformat(), now().date().isoformat())  # today (UTC)
    for i in opted_out[:2]:
        assert permission(deleted[i]) == "unsubscribed" and {"opt_out_date", "opt_out_source"} <= set(
            deleted[i]["email_address"]
        )
    for i in plain:
        assert permission(deleted[i]) == permission(old[i]) and not OPT_OUT_FIELDS & set(deleted[i]["email_address"])
    assert not set(found(api, sb)) & set(gone)
    assert not set(found(api, sb, status="unsubscribed")) & set(gone)
    assert set(found(api, sb, optout_after=iso(after))) == set(opted_out[2:])
    assert set(found(api, sb, optout_after=iso(after), status="all")) == set(opted_out)
    assert get(api, sb, "/contacts/counts")["total"] == counts["total"] - 5
    assert get(api, sb, "/contacts", status="deleted", include_count="true", limit=1)["contacts_count"] == len(deleted)
    lost = memberships([old[i] for i in gone])
    assert list_counts(api, sb, "all") == {k: v - lost[k] for k, v in all_members.items()}
    with pytest.raises(ValueError, match="already deleted"):
        sb.account.delete(gone[:1])
    with pytest.raises(ValueError, match="not an opted-out contact"):
        sb.account.resubscribe(opted_out[:1])  # deleted: it cannot opt back in


def test_bad_changes_are_refused_and_change_nothing(sb: Sandbox, api: requests.Session) -> None:
    old = contacts(sb.account)
    first_active = next(i for i, c in old.items() if active(c))
    unsubscribed = next(i for i, c in old.items() if permission(c) == "unsubscribed" and "deleted_at" not in c)
    with pytest.raises(ValueError, match="either count or contact_ids"):
        sb.account.opt_out(3, contact_ids=[first_active])
    with pytest.raises(ValueError, match="either count or contact_ids"):
        sb.account.opt_out()
    with pytest.raises(ValueError, match="aware"):
        sb.account.opt_out(1, at=dt.datetime(2026, 11, 21))
    with pytest.raises(ValueError, match="source"):
        sb.account.opt_out(1, source="Someone")
    with pytest.raises(ValueError, match="reason"):
        sb.account.opt_out(1, reason="x" * 256)
    with pytest.raises(TypeError):
        sb.account.delete(first_active)  # one string, not a list
    with pytest.raises(ValueError, match=r"only \d+ active contacts"):
        sb.account.opt_out(len(old))
    with pytest.raises(ValueError, match="before its last change"):
        sb.account.opt_out(contact_ids=[first_active], at=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
    # A batch with one bad contact is refused as a whole.
    with pytest.raises(ValueError, match="no such contact"):
        sb.account.opt_out(contact_ids=[first_active, "00000000-0000-4000-8000-000000000000"])
    with pytest.raises(ValueError, match="already unsubscribed"):
        sb.account.opt_out(contact_ids=[first_active, unsubscribed])
    with pytest.raises(ValueError, match="not an opted-out contact"):
        sb.account.resubscribe([unsubscribed, first_active])
    assert contacts(sb.account) == old
    assert sb.account.opt_out(0) == [] and sb.account.delete([]) == []


# --- isolation, consistency, paging ------------------------------------------------------------------


def test_changes_stay_private_and_the_shared_cache_file_is_untouched(api: requests.Session, sb: Sandbox) -> None:
    other = Sandbox(SPEC, rate_limit=None, daily_quota=None).start()
    try:
        assert other.account.path == sb.account.path  # one shared cache file
        before = file_state(sb.account)
        original = contacts(other.account)
        counts = other.account.counts()
        other_api = session(other)
        other_unsubscribed = found(other_api, other, status="unsubscribed")

        ids = sb.account.opt_out(count=10)
        sb.account.resubscribe(ids[:2])
        sb.account.delete(ids[2:4])

        assert file_state(sb.account) == before
        assert contacts(other.account) == original and not other.account.changed
        assert other.account.counts() == counts == get(other_api, other, "/contacts/counts")
        assert found(other_api, other, status="unsubscribed") == other_unsubscribed
        assert get(api, sb, "/contacts/counts") != counts
    finally:
        other.stop()
    private = sb.account._live.path  # the private copy (an implementation detail, checked once here)
    assert private.exists() and private.parent != sb.account.path.parent
    sb.stop()
    assert not private.exists() and not private.parent.exists()
    assert not sb.account.changed and contacts(sb.account) == original  # stopping discards the changes
    assert file_state(sb.account) == before


def test_a_standalone_account_changes_and_closes() -> None:
    with Account.open(SPEC) as account:
        before = file_state(account)
        original = list(account.contacts())
        ids = account.opt_out(count=3)
        assert account.counts()["unsubscribed"] == 403
        changed = list(account.contacts())
        assert [c["contact_id"] for c in changed] == [c["contact_id"] for c in original]
        assert {c["contact_id"] for c in changed if permission(c) == "unsubscribed"} >= set(ids)
        account.close()
        assert list(account.contacts()) == original and account.counts()["unsubscribed"] == 400
        assert account.opt_out(count=1) == ids[:1]  # usable again: a new private copy
        assert account.counts()["unsubscribed"] == 401
    assert not account.changed and file_state(account) == before


def test_an_open_cursor_continues_over_the_new_data_from_its_position(sb: Sandbox, api: requests.Session) -> None:
    """Keyset paging: after a change, later pages reflect it; contacts before the cursor are not revisited."""
    old = contacts(sb.account)
    order = list(old)
    walk = pages(api, sb, status="unsubscribed", limit=50, include_count="true")
    first = next(walk)
    assert first["contacts_count"] == 400
    position = order.index(first["contacts"][-1]["contact_id"])
    behind = next(i for i in order[:position] if active(old[i]))
    ahead = next(i for i in order[position + 1 :] if active(old[i]))
    ahead_unsubscribed = [
        i for i in order[position + 1 :] if permission(old[i]) == "unsubscribed" and "deleted_at" not in old[i]
    ][:2]

    sb.account.opt_out(contact_ids=[behind, ahead])
    sb.account.resubscribe(ahead_unsubscribed[:1])
    sb.account.delete(ahead_unsubscribed[1:])

    rest = list(walk)
    seen = [c["contact_id"] for body in [first, *rest] for c in body["contacts"]]
    assert len(seen) == len(set(seen))  # nothing twice
    assert ahead in seen and behind not in seen
    assert not set(ahead_unsubscribed) & set(seen)
    assert {body["contacts_count"] for body in rest} == {400 + 2 - 2}
    # A new walk sees everything.
    assert set(found(api, sb, status="unsubscribed")) == set(seen) | {behind}


def test_concurrent_reads_see_whole_changes(sb: Sandbox) -> None:
    """Each response is one snapshot: a page's count always matches its rows, across changes and files."""
    stop = threading.Event()
    problems: list[str] = []
    seen_counts: list[int] = []

    def reader() -> None:
        s = session(sb)
        while not stop.is_set():
            body = get(s, sb, "/contacts", status="unsubscribed", include_count="true", limit=500)
            if body["contacts_count"] != len(body["contacts"]):
                problems.append(f"count {body['contacts_count']} with {len(body['contacts'])} contacts")
            seen_counts.append(body["contacts_count"])
            counts = get(s, sb, "/contacts/counts")
            if not 400 <= counts["unsubscribed"] <= 460:
                problems.append(f"counts {counts}")

    def observed(count: int) -> None:
        deadline = time.monotonic() + 10
        while count not in seen_counts[-8:]:
            assert time.monotonic() < deadline and not problems, (count, seen_counts[-8:], problems)
            time.sleep(0.002)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        observed(400)
        for round_ in range(5):
            ids = sb.account.opt_out(count=20)
            observed(400 + 10 * round_ + 20)
            sb.account.resubscribe(ids[:10])
            observed(400 + 10 * round_ + 10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not problems
    assert set(seen_counts) <= set(range(400, 461))
    assert sb.account.counts()["unsubscribed"] == 450
