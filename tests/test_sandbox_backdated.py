"""Back-dated opt-outs, random picks and the opt-out ground truth of a sandbox account, over real HTTP."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import pytest
import requests

from ccoptout_xl.optouts import OptOut
from ccoptout_xl.sandbox import AccountSpec, Sandbox
from ccoptout_xl.sandbox.accounts import OptOutFact

from .sandbox_http import (
    Contact,
    active,
    contacts,
    count,
    found,
    get,
    iso,
    now,
    pages,
    parse,
    permission,
    sandbox_fixtures,
)

ANCHOR = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
SPEC = AccountSpec(contacts=2_000, seed=1, anchor=ANCHOR)
EASTERN = dt.timezone(dt.timedelta(hours=-5))
sb, api = sandbox_fixtures(SPEC)


def eastern(c: Contact) -> bool:
    return c["created_at"].endswith("-05:00")


# --- back-dated opt-outs -----------------------------------------------------------------------------------


def test_a_backdated_optout_shows_at_its_old_date_while_its_email_was_updated_now(
    sb: Sandbox, api: requests.Session
) -> None:
    at = ANCHOR - dt.timedelta(days=400, hours=3, milliseconds=-123)  # ...T09:00:00.123Z
    old = contacts(sb.account)
    z_style = [i for i, c in old.items() if active(c) and not eastern(c) and parse(c["created_at"]) < at][:3]
    east = [i for i, c in old.items() if active(c) and eastern(c) and parse(c["created_at"]) < at][:3]
    ids = z_style + east
    window = {"optout_after": iso(at - dt.timedelta(seconds=1)), "optout_before": iso(at + dt.timedelta(seconds=1))}
    before_window = set(found(api, sb, **window))
    unsubscribed = count(api, sb, status="unsubscribed")
    counts = get(api, sb, "/contacts/counts")
    version = sb.account.data_version(sb.account.connect())
    started = now()

    assert sb.account.opt_out(contact_ids=ids, at=at, backdated=True, source="Account", reason=None) == ids

    finished = now()
    new = found(api, sb, status="unsubscribed")
    for i in ids:
        address = new[i]["email_address"]
        if i in z_style:
            assert address["opt_out_date"] == iso(at)  # to the millisecond
        else:
            assert address["opt_out_date"] == at.astimezone(EASTERN).replace(microsecond=0).isoformat()  # seconds
        assert address["opt_out_source"] == "Account" and "opt_out_reason" not in address
        updated = parse(address["updated_at"])  # the real time of the change, not the opt-out date
        assert started - dt.timedelta(seconds=1) < updated <= finished
        assert new[i]["updated_at"] == old[i]["updated_at"]  # the contact's own updated_at does not move
        assert new[i]["created_at"] == old[i]["created_at"]
    # Seen in windows and counts at its old date ...
    in_window = found(api, sb, **window)
    assert set(in_window) == before_window | set(ids)
    assert count(api, sb, **window) == len(in_window)
    assert count(api, sb, status="unsubscribed", **window) == len(in_window)
    # Bounds are exclusive, at each contact's precision: the -05:00 ones carry 09:00:00, the others 09:00:00.123.
    assert count(api, sb, optout_after=iso(at - dt.timedelta(milliseconds=124)), optout_before=iso(at)) == len(east)
    assert count(api, sb, optout_after=iso(at - dt.timedelta(milliseconds=1)), optout_before=iso(at)) == 0
    assert count(api, sb, status="unsubscribed") == unsubscribed + len(ids)
    # ... and not at the time of the change, which moved only the email address's updated_at.
    recent = {"optout_after": iso(started - dt.timedelta(seconds=2))}
    assert not set(found(api, sb, **recent)) & set(ids) and count(api, sb, **recent) == 0
    assert not set(found(api, sb, updated_after=iso(started - dt.timedelta(seconds=2)))) & set(ids)
    moved = Counter(permission(old[i]) for i in ids)
    expected = dict(counts, unsubscribed=counts["unsubscribed"] + 6)
    expected["explicit"] -= moved["explicit"]
    expected["implicit"] -= moved["implicit"]
    assert get(api, sb, "/contacts/counts") == expected
    assert sb.account.data_version(sb.account.connect()) == version + 1
    lifecycles = dict(sb.account.lifecycles())
    assert {lifecycles[i] for i in ids} == {"unsubscribed_long_ago"}
    truth = {fact.contact_id: fact for fact in sb.account.optouts_truth()}
    for i in ids:
        assert truth[i].opt_out_date == parse(new[i]["email_address"]["opt_out_date"]) and not truth[i].deleted


def test_a_backdated_optout_may_predate_the_emails_last_update_but_not_the_contact(
    sb: Sandbox, api: requests.Session
) -> None:
    old = contacts(sb.account)
    # Opted in (the email's last update) well after creation: a date in between is refused as a plain opt-out.
    late = next(
        i
        for i, c in old.items()
        if active(c) and "opt_in_date" in c["email_address"] and not eastern(c)
        if parse(c["email_address"]["opt_in_date"]) - parse(c["created_at"]) > dt.timedelta(seconds=10)
    )
    created = parse(old[late]["created_at"])
    between = created + dt.timedelta(seconds=5)
    with pytest.raises(ValueError, match="before its last change"):
        sb.account.opt_out(contact_ids=[late], at=between)
    with pytest.raises(ValueError, match="before its creation"):
        sb.account.opt_out(contact_ids=[late], at=created - dt.timedelta(milliseconds=1), backdated=True)
    assert sb.account.opt_out(contact_ids=[late], at=between, backdated=True) == [late]
    address = found(api, sb, email=old[late]["email_address"]["address"])[late]["email_address"]
    assert address["opt_out_date"] == iso(between)
    assert parse(address["updated_at"]) > parse(address["opt_in_date"]) > parse(address["opt_out_date"])

    # At its very creation is allowed; for a -05:00 contact, in whole seconds.
    first_east = next(i for i, c in old.items() if active(c) and eastern(c))
    made = parse(old[first_east]["created_at"])
    sb.account.opt_out(contact_ids=[first_east], at=made + dt.timedelta(milliseconds=999), backdated=True)
    assert (
        found(api, sb, status="unsubscribed")[first_east]["email_address"]["opt_out_date"]
        == (old[first_east]["created_at"])
    )


def test_backdated_optouts_by_count_take_the_first_active_contacts_created_by_then(
    sb: Sandbox, api: requests.Session
) -> None:
    old = contacts(sb.account)
    at = ANCHOR - dt.timedelta(days=5)
    ids = sb.account.opt_out(count=8, at=at, backdated=True)
    assert ids == [i for i, c in old.items() if active(c) and parse(c["created_at"]) <= at][:8]
    lifecycles = dict(sb.account.lifecycles())
    assert {lifecycles[i] for i in ids} == {"unsubscribed_recently"}
    window = found(api, sb, optout_after=iso(at - dt.timedelta(seconds=1)), optout_before=iso(at + dt.timedelta(1)))
    assert set(ids) <= set(window)
    # The latest contacts were created after ``at``: asking for all of them is refused as a whole.
    active_count = sum(1 for c in old.values() if active(c)) - 8
    with pytest.raises(ValueError, match="active contacts can opt out"):
        sb.account.opt_out(count=active_count, at=at, backdated=True)


def test_bad_backdated_optouts_are_refused_and_change_nothing(sb: Sandbox) -> None:
    old = contacts(sb.account)
    first_active = next(i for i, c in old.items() if active(c))
    unsubscribed = next(i for i, c in old.items() if permission(c) == "unsubscribed" and "deleted_at" not in c)
    deleted = next(i for i, c in old.items() if "deleted_at" in c)
    with pytest.raises(ValueError, match="future"):
        sb.account.opt_out(contact_ids=[first_active], at=now() + dt.timedelta(minutes=1), backdated=True)
    with pytest.raises(ValueError, match="future"):
        sb.account.opt_out(count=1, at=now() + dt.timedelta(days=3), backdated=True)
    with pytest.raises(ValueError, match="needs at"):
        sb.account.opt_out(contact_ids=[first_active], backdated=True)
    with pytest.raises(ValueError, match="before its creation"):
        sb.account.opt_out(contact_ids=[first_active], at=ANCHOR - dt.timedelta(days=3700), backdated=True)
    with pytest.raises(ValueError, match="aware"):
        sb.account.opt_out(contact_ids=[first_active], at=dt.datetime(2025, 1, 1), backdated=True)
    at = ANCHOR - dt.timedelta(days=1)
    with pytest.raises(ValueError, match="already unsubscribed"):
        sb.account.opt_out(contact_ids=[first_active, unsubscribed], at=at, backdated=True)
    with pytest.raises(ValueError, match="deleted"):
        sb.account.opt_out(contact_ids=[deleted], at=at, backdated=True)
    assert contacts(sb.account) == old


def test_a_backdated_optout_ahead_of_an_open_cursor_is_read_and_counted(sb: Sandbox, api: requests.Session) -> None:
    at = ANCHOR - dt.timedelta(days=90)
    window = {"optout_after": iso(at - dt.timedelta(days=60)), "optout_before": iso(at + dt.timedelta(days=1))}
    old = contacts(sb.account)
    walk = pages(api, sb, limit=5, include_count="true", **window)
    first = next(walk)
    assert first["contacts_count"] > 10 and "_links" in first
    order = list(old)
    position = order.index(first["contacts"][-1]["contact_id"])
    behind = next(i for i in order[:position] if active(old[i]) and parse(old[i]["created_at"]) < at)
    ahead = next(i for i in order[position + 1 :] if active(old[i]) and parse(old[i]["created_at"]) < at)

    sb.account.opt_out(contact_ids=[behind, ahead], at=at, backdated=True)

    rest = list(walk)
    seen = [c["contact_id"] for body in [first, *rest] for c in body["contacts"]]
    assert ahead in seen and behind not in seen and len(seen) == len(set(seen))
    assert {body["contacts_count"] for body in rest} == {first["contacts_count"] + 2}


# --- random picks ------------------------------------------------------------------------------------------


def test_picks_are_deterministic_distinct_and_of_their_kind(sb: Sandbox) -> None:
    everyone = contacts(sb.account)
    kinds = {
        "active": active,
        "unsubscribed": lambda c: permission(c) == "unsubscribed" and "deleted_at" not in c,
        "any_not_deleted": lambda c: "deleted_at" not in c,
    }
    for kind, holds in kinds.items():
        picked = sb.account.pick(kind, 40, 7)
        assert len(set(picked)) == 40 and all(holds(everyone[i]) for i in picked), kind
        assert sb.account.pick(kind, 40, random.Random(7)) == picked  # a seed or a Random seeded alike
        assert sb.account.pick(kind, 40, 8) != picked
        rng = random.Random(3)
        assert sb.account.pick(kind, 5, rng) != sb.account.pick(kind, 5, rng)  # the Random is drawn from
        # Asking for every contact of the kind gives every one of them, in a random order.
        every = [i for i, c in everyone.items() if holds(c)]
        picked_all = sb.account.pick(kind, len(every), 1)
        assert sorted(picked_all) == sorted(every) and picked_all != every
    assert sb.account.pick("active", 0, 1) == []


def test_picks_follow_changes_and_can_be_limited_to_contacts_created_by_a_date(sb: Sandbox) -> None:
    picked = sb.account.pick("active", 30, 11)
    sb.account.opt_out(contact_ids=picked)
    everyone = contacts(sb.account)
    assert not set(sb.account.pick("active", 300, 12)) & set(picked)
    unsubscribed = sb.account.pick("unsubscribed", 200, 13)
    assert all(permission(everyone[i]) == "unsubscribed" for i in unsubscribed)
    by = ANCHOR - dt.timedelta(days=2000)
    early = sb.account.pick("active", 50, 14, created_by=by)
    assert len(set(early)) == 50 and all(parse(everyone[i]["created_at"]) <= by for i in early)
    assert sb.account.pick("active", 50, 14, created_by=by) == early
    # Every one of them can take a back-dated opt-out dated then.
    assert sb.account.opt_out(contact_ids=early, at=by, backdated=True) == early
    eligible = [i for i, c in contacts(sb.account).items() if active(c) and parse(c["created_at"]) <= by]
    assert sorted(sb.account.pick("active", len(eligible), 15, created_by=by)) == sorted(eligible)
    with pytest.raises(ValueError, match="only"):
        sb.account.pick("active", len(eligible) + 1, 15, created_by=by)


def test_bad_picks_are_refused(sb: Sandbox) -> None:
    total = sb.account.counts()["unsubscribed"]
    with pytest.raises(ValueError, match="only"):
        sb.account.pick("unsubscribed", total + 1, 1)
    with pytest.raises(ValueError, match="kind"):
        sb.account.pick("deleted", 1, 1)
    for n in (-1, 1.5, True):
        with pytest.raises(ValueError, match="n must be"):
            sb.account.pick("active", n, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rng"):
        sb.account.pick("active", 1, "seed")  # type: ignore[arg-type]


# --- ground truth ------------------------------------------------------------------------------------------


def optouts_read_over_http(s: requests.Session, sandbox: Sandbox) -> list[OptOutFact]:
    """What the API's pages say: every contact carrying an opt-out, newest first."""
    facts = []
    for c in found(s, sandbox, status="all").values():
        optout = OptOut.from_contact(c)
        if optout is not None:
            assert optout.created_at is not None
            facts.append(OptOutFact(c["contact_id"], optout.opt_out_date, optout.deleted, optout.created_at))
    return sorted(facts, key=lambda f: (-f.opt_out_date.timestamp(), f.contact_id))


def test_the_optouts_truth_matches_the_api_before_and_after_changes(sb: Sandbox, api: requests.Session) -> None:
    truth = sb.account.optouts_truth()
    assert truth == optouts_read_over_http(api, sb)
    assert {f.deleted for f in truth} == {True, False}
    assert all(f.opt_out_date.tzinfo is dt.timezone.utc for f in truth)
    assert sb.account.optouts_truth(include_deleted=False) == [f for f in truth if not f.deleted]

    rng = random.Random(21)
    sb.account.opt_out(contact_ids=sb.account.pick("active", 10, rng))
    by = ANCHOR - dt.timedelta(days=700)
    sb.account.opt_out(contact_ids=sb.account.pick("active", 10, rng, created_by=by), at=by, backdated=True)
    sb.account.resubscribe(sb.account.pick("unsubscribed", 10, rng))
    sb.account.delete(sb.account.pick("unsubscribed", 10, rng) + sb.account.pick("active", 5, rng))

    changed = sb.account.optouts_truth()
    assert changed == optouts_read_over_http(api, sb)
    assert len(changed) == len(truth) + 10 + 10 - 10
    assert sum(f.deleted for f in changed) == sum(f.deleted for f in truth) + 10
