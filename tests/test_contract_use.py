"""What ccoptout-xl sends and reads is what the official contract declares."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ccoptout_xl.query import OptOutQuery, from_api
from ccoptout_xl.sandbox import Sandbox

from . import contract
from .conftest import ANCHOR, make_client


def test_every_parameter_the_client_sends_is_declared(sandbox: Sandbox) -> None:
    declared = contract.parameters("/contacts")
    client = make_client(sandbox)
    for query in (
        OptOutQuery(),
        OptOutQuery(since=ANCHOR - dt.timedelta(days=90), until=ANCHOR, include_deleted=True),
        OptOutQuery(latest=40),
    ):
        from_api(client, query, now=ANCHOR).close()
    first_pages = [r for r in sandbox.requests if r.path == "/v3/contacts" and "cursor" not in r.query]
    assert len(first_pages) >= 3
    for record in first_pages:
        for name, value in record.query.items():
            assert name in declared, f"{name} is not a parameter of GET /contacts"
            if declared[name]:
                assert set(value.split(",")) <= set(declared[name]), (name, value)
        if "limit" in record.query:
            assert 1 <= int(record.query["limit"]) <= 500
        for name in ("optout_after", "optout_before"):
            if name in record.query:
                assert dt.datetime.fromisoformat(record.query[name].replace("Z", "+00:00")).tzinfo is not None
    # Every request after a first page followed the API's link exactly: only the cursor, nothing rebuilt.
    for record in sandbox.requests:
        if "cursor" in record.query:
            assert set(record.query) == {"cursor"}


def test_vendored_contract_is_the_shared_one() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "cc-api" / contract.CONTRACT_NAME
    if not shared.is_file():
        pytest.skip("shared/cc-api is not beside this checkout")
    vendored = Path(__file__).resolve().parent / "data" / contract.CONTRACT_NAME
    assert vendored.read_bytes() == shared.read_bytes()
