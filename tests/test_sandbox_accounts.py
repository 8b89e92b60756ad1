"""Synthetic accounts (no HTTP): determinism, data invariants, cache, and the contract helper itself."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccoptout_xl.sandbox import Account, AccountSpec
from ccoptout_xl.sandbox.errors import ApiError
from ccoptout_xl.sandbox.generator import RECENT_WINDOW, lifecycle_counts
from ccoptout_xl.sandbox.params import instant_us

from .contract import ContractError, parameters, validate

ANCHOR = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
SPEC = AccountSpec(contacts=2_000, seed=1, anchor=ANCHOR)


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def account() -> Account:
    return Account.open(SPEC)


@pytest.fixture(scope="module")
def contacts(account: Account) -> list[dict]:
    return list(account.contacts())


def test_every_ground_truth_contact_matches_the_contract(contacts: list[dict]) -> None:
    assert len(contacts) == 2_000
    for contact in contacts:
        validate("ContactResource", contact)


def test_exact_shares(account: Account, contacts: list[dict]) -> None:
    live = [c for c in contacts if "deleted_at" not in c]
    unsubscribed = [c for c in live if c["email_address"]["permission_to_send"] == "unsubscribed"]
    assert len(unsubscribed) == 400
    window_start = ANCHOR - dt.timedelta(milliseconds=RECENT_WINDOW)
    recent = [c for c in unsubscribed if parse(c["email_address"]["opt_out_date"]) > window_start]
    assert len(recent) == round(400 * 0.015) == 6
    assert all(parse(c["email_address"]["opt_out_date"]) < ANCHOR for c in unsubscribed)
    assert account.counts()["unsubscribed"] == 400
    # The benchmark's account, without generating it.
    counts = lifecycle_counts(1_000_000, 0.2, 0.015)
    assert counts[5] + counts[6] == 200_000 and counts[6] == 3_000


def test_reason_kinds_are_all_present(contacts: list[dict]) -> None:
    addresses = [c["email_address"] for c in contacts if "opt_out_date" in c["email_address"]]
    reasons = [a.get("opt_out_reason") for a in addresses]
    assert None in reasons and "" in reasons
    present = [r for r in reasons if r]
    assert any(r.isascii() and r[0].isalpha() for r in present)
    assert any(not r.isascii() for r in present)
    assert any(len(r) == 255 for r in present)
    assert max(len(r) for r in present) == 255
    for first in "=+-@":
        assert any(r.startswith(first) for r in present), first
    sources = Counter(a["opt_out_source"] for a in addresses)
    assert set(sources) == {"Contact", "Account"} and sources["Contact"] > 3 * sources["Account"]
    # Even the six recent opt-outs of this small account have the trickiest reasons.
    recent = [a.get("opt_out_reason") for a in addresses if parse(a["opt_out_date"]) > ANCHOR - dt.timedelta(days=30)]
    assert None in recent and "" in recent
    assert any(r and r.startswith("=") for r in recent) and any(r and not r.isascii() for r in recent)


def test_timestamps_mix_both_styles_consistently(contacts: list[dict]) -> None:
    z_style = [c for c in contacts if c["created_at"].endswith("Z")]
    eastern = [c for c in contacts if c["created_at"].endswith("-05:00")]
    assert z_style and eastern and len(z_style) + len(eastern) == len(contacts)
    assert all(len(c["created_at"]) == len("2016-01-23T13:48:44.108Z") for c in z_style)
    assert all(len(c["created_at"]) == len("2016-03-03T10:56:29-05:00") for c in eastern)
    for c in contacts:
        created, updated = parse(c["created_at"]), parse(c["updated_at"])
        assert created <= updated < ANCHOR
        address = c["email_address"]
        if "opt_out_date" in address:
            assert created <= parse(address["opt_out_date"]) < ANCHOR
            if "opt_in_date" in address:
                assert parse(address["opt_in_date"]) <= parse(address["opt_out_date"])
    created = [parse(c["created_at"]) for c in contacts]
    assert created == sorted(created), "contacts come in creation order"


def test_opting_out_does_not_move_updated_at(contacts: list[dict]) -> None:
    optouts = [c for c in contacts if "opt_out_date" in c["email_address"]]
    before = [c for c in optouts if parse(c["updated_at"]) < parse(c["email_address"]["opt_out_date"])]
    after = [c for c in optouts if parse(c["updated_at"]) > parse(c["email_address"]["opt_out_date"])]
    assert before and after


def test_deleted_and_resubscribed_contacts(account: Account, contacts: list[dict]) -> None:
    deleted = [c for c in contacts if "deleted_at" in c]
    assert 0.02 < len(deleted) / len(contacts) < 0.04
    with_optout = [c for c in deleted if "opt_out_date" in c["email_address"]]
    without = [c for c in deleted if "opt_out_date" not in c["email_address"]]
    assert with_optout and without
    assert all(c["email_address"]["permission_to_send"] == "unsubscribed" for c in with_optout)
    assert all(c["email_address"]["permission_to_send"] != "unsubscribed" for c in without)
    for c in with_optout:
        assert parse(c["email_address"]["opt_out_date"]).date() <= dt.date.fromisoformat(c["deleted_at"])
    lifecycles = dict(account.lifecycles())
    resubscribed = [c for c in contacts if lifecycles[c["contact_id"]] == "resubscribed"]
    assert len(resubscribed) == 40
    for c in resubscribed:
        address = c["email_address"]
        assert address["permission_to_send"] == "explicit"
        assert not {"opt_out_source", "opt_out_date", "opt_out_reason"} & set(address)
        assert parse(address["opt_in_date"]) > parse(c["created_at"])


def test_other_contact_data(account: Account, contacts: list[dict]) -> None:
    emails = [c["email_address"]["address"] for c in contacts]
    assert len(set(emails)) == len(emails) and all(e == e.lower() and "@" in e for e in emails)
    assert any(not c.get("first_name", "a").isascii() for c in contacts)
    assert any("first_name" not in c for c in contacts)
    permissions = Counter(c["email_address"]["permission_to_send"] for c in contacts)
    assert set(permissions) == {"explicit", "implicit", "pending_confirmation", "temp_hold", "not_set", "unsubscribed"}
    list_ids = {item["list_id"] for item in account.lists()}
    assert len(list_ids) == 6
    sizes = Counter(len(c["list_memberships"]) for c in contacts)
    assert set(sizes) == {0, 1, 2, 3}
    assert all(set(c["list_memberships"]) <= list_ids for c in contacts)
    assert "seed 1" in account.name


def test_same_spec_same_account_and_seed_matters(tmp_path: Path, contacts: list[dict]) -> None:
    rebuilt = Account.open(SPEC, db_path=tmp_path / "again.sqlite3")
    assert list(rebuilt.contacts()) == contacts
    other = Account.open(AccountSpec(contacts=50, seed=2, anchor=ANCHOR), db_path=tmp_path / "other.sqlite3")
    assert [c["contact_id"] for c in other.contacts()] != [c["contact_id"] for c in contacts[:50]]


def test_the_anchor_moves_timestamps_not_data(tmp_path: Path) -> None:
    later = ANCHOR + dt.timedelta(days=1)
    a = list(Account.open(AccountSpec(contacts=30, anchor=ANCHOR), db_path=tmp_path / "a.sqlite3").contacts())
    b = list(Account.open(AccountSpec(contacts=30, anchor=later)).contacts())
    assert [c["contact_id"] for c in a] == [c["contact_id"] for c in b]
    assert [parse(c["created_at"]) + dt.timedelta(days=1) for c in a] == [parse(c["created_at"]) for c in b]


def test_cache_is_written_atomically_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCOPTOUT_SANDBOX_CACHE", str(tmp_path / "cache"))
    spec = AccountSpec(contacts=100, seed=9, anchor=ANCHOR)
    first = Account.open(spec)
    assert first.path.parent == tmp_path / "cache"
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]  # no temp file left
    stamp = first.path.stat().st_mtime_ns
    assert Account.open(spec).path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    first.path.write_bytes(b"not a database")
    assert len(list(Account.open(spec).contacts())) == 100  # a damaged cache file is rebuilt


def test_edge_sizes_work(tmp_path: Path) -> None:
    for n, share in ((0, 0.2), (1, 1.0), (7, 0.5), (40, 0.0)):
        account = Account.open(AccountSpec(contacts=n, unsubscribed_share=share, anchor=ANCHOR), tmp_path / f"{n}.db")
        contacts = list(account.contacts())
        assert len(contacts) == n
        unsubscribed = [c for c in contacts if c["email_address"]["permission_to_send"] == "unsubscribed"]
        assert len([c for c in unsubscribed if "deleted_at" not in c]) == round(n * share)


def test_bulk_removal_puts_that_many_optouts_in_one_second(tmp_path: Path) -> None:
    plain = Account.open(AccountSpec(contacts=3_000, seed=4, anchor=ANCHOR), tmp_path / "plain.db")
    bulk = Account.open(AccountSpec(contacts=3_000, seed=4, anchor=ANCHOR, bulk_removal=250), tmp_path / "bulk.db")
    instants = Counter(
        parse(c["email_address"]["opt_out_date"]) for c in bulk.contacts() if "opt_out_date" in c["email_address"]
    )
    moment, count = instants.most_common(1)[0]
    assert count == 250 and moment == ANCHOR - dt.timedelta(days=200)
    dated = [c for c in bulk.contacts() if "opt_out_date" in c["email_address"]]
    removed = [c for c in dated if parse(c["email_address"]["opt_out_date"]) == moment]
    assert all(c["email_address"]["opt_out_source"] == "Account" for c in removed)
    assert all("opt_out_reason" not in c["email_address"] for c in removed)
    # Only the opt-out dates moved: the same people, the same number of opt-outs.
    assert [c["contact_id"] for c in bulk.contacts()] == [c["contact_id"] for c in plain.contacts()]
    assert sum(instants.values()) == sum("opt_out_date" in c["email_address"] for c in plain.contacts())


def test_spec_validation() -> None:
    with pytest.raises(ValueError):
        AccountSpec(contacts=-1)
    with pytest.raises(ValueError):
        AccountSpec(unsubscribed_share=1.5)
    with pytest.raises(ValueError):
        AccountSpec(anchor=dt.datetime(2026, 1, 1))  # naive
    with pytest.raises(ValueError):
        AccountSpec(bulk_removal=-1)
    default = AccountSpec().resolved_anchor()
    assert default.second == 0 and default.microsecond == 0 and default.tzinfo is dt.timezone.utc


def test_contract_helper_is_strict() -> None:
    validate("Contacts", {"contacts": [], "contacts_count": 0})
    validate("Customer", {"company_logo": {"url": "https://x.example/logo.png"}})  # $ref beside description
    bad = [
        {"contacts": [], "extra": 1},
        {"contacts": [{"contact_id": "04fe9a-a579-43c5-bb1a-58ed29bf0a6a"}]},
        {"contacts": [{"contact_id": "1618AE62-4752-11E9-9C8A-FA163E6B01C1"}]},
        {"contacts": [{"created_at": "2016-01-23T13:48:44"}]},
        {"contacts": [{"created_at": "2016-01-23 13:48:44Z"}]},
        {"contacts": [{"created_at": "2016-02-30T13:48:44Z"}]},
        {"contacts": [{"deleted_at": "2016-07-08T00:00:00Z"}]},
        {"contacts": [{"email_address": {"address": "a@b.example", "sms": True}}]},
        {"contacts": [{"email_address": {"permission_to_send": "explicit"}}]},  # address is required
        {"contacts": [{"email_address": {"address": "a@b.example", "opt_out_reason": "x" * 256}}]},
    ]
    for body in bad:
        with pytest.raises(ContractError, match="body"):
            validate("Contacts", body)
    with pytest.raises(ContractError):
        validate("AuthorizationErrorSchema", [{"error_key": "unauthorized", "error_message": "Unauthorized"}])
    contacts_params = parameters("/v3/contacts")
    assert {"optout_after", "optout_before", "updated_after", "limit", "include_count"} <= set(contacts_params)
    assert "unsubscribed" in contacts_params["status"] and "cursor" not in contacts_params
    assert parameters("/contacts/counts") == {"include": ("new_subscriber",)}
    with pytest.raises(KeyError):
        parameters("/v3/nothing")


@given(st.datetimes(timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=-5))])))
def test_date_time_parameters_parse_like_python(moment: dt.datetime) -> None:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    expected = (moment - epoch) // dt.timedelta(microseconds=1)
    assert instant_us("x", moment.isoformat()) == expected
    assert instant_us("x", moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")) == expected


def test_date_time_parameters_refuse_ambiguous_values() -> None:
    assert instant_us("x", "1970-01-02") == 86_400_000_000
    for value in ("2022-01-01T00:00:00", "2022-01-01T00:00:00 05:00", "yesterday", "2022-13-01T00:00:00Z", ""):
        with pytest.raises(ApiError) as caught:
            instant_us("optout_after", value)
        assert caught.value.status == 400 and "optout_after" in caught.value.body[0]["error_message"]


def test_cache_location_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from ccoptout_xl.sandbox.accounts import default_cache_dir

    monkeypatch.delenv("CCOPTOUT_SANDBOX_CACHE", raising=False)
    assert default_cache_dir().name == "ccoptout-xl-sandbox"
    monkeypatch.setenv("CCOPTOUT_SANDBOX_CACHE", os.fspath(Path("/some/where")))
    assert default_cache_dir() == Path("/some/where")
