"""Answers the sandbox never gives but a server might: odd links, loops, wrong shapes. Served on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ccoptout_xl.auth import StaticToken
from ccoptout_xl.cli import main
from ccoptout_xl.client import Client
from ccoptout_xl.exceptions import MalformedResponse
from ccoptout_xl.http_client import HTTPClient

CONTACT = {
    "contact_id": "6d3b1d3e-0d4a-4a8e-9d43-2f7a1c1f0b11",
    "email_address": {
        "address": "someone@example.com",
        "permission_to_send": "unsubscribed",
        "opt_out_source": "Contact",
        "opt_out_date": "2026-05-01T10:00:00.000Z",
    },
}


class CannedApi:
    """GET path (with its query) -> JSON body; anything else is 404."""

    def __init__(self) -> None:
        self.pages: dict[str, object] = {}
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = canned.pages.get(self.path)
                data = json.dumps(body).encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v3"

    def client(self) -> Client:
        return Client(HTTPClient(self.base_url, StaticToken("canned"), rate=None))


@pytest.fixture
def canned() -> Iterator[CannedApi]:
    api = CannedApi()
    thread = threading.Thread(target=api.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield api
    api.server.shutdown()
    api.server.server_close()


FIRST = "/v3/contacts?status=unsubscribed&limit=500"
ELSEWHERE = "https://elsewhere.example/v3/contacts?cursor=x"


def test_a_null_next_link_ends_the_pages(canned: CannedApi) -> None:
    canned.pages[FIRST] = {"contacts": [CONTACT], "_links": {"next": None}}
    assert [c["contact_id"] for c in canned.client().contacts(status="unsubscribed", limit=500)] == [
        CONTACT["contact_id"]
    ]


@pytest.mark.parametrize(
    ("page", "message"),
    [
        ({"contacts": [CONTACT], "_links": {"next": {"href": 5}}}, "next link that is not text"),
        ({"contacts": "none"}, "no list of contacts"),
        ([CONTACT], "not a JSON object"),
        (
            {"contacts": [], "_links": {"next": {"href": "https://elsewhere.example/v3/contacts?cursor=x"}}},
            "another host",
        ),
    ],
)
def test_malformed_pages_are_clear_errors(canned: CannedApi, page: object, message: str) -> None:
    canned.pages[FIRST] = page
    with pytest.raises(MalformedResponse, match=message):
        list(canned.client().contacts(status="unsubscribed", limit=500))


def test_a_loop_of_next_links_is_stopped(canned: CannedApi) -> None:
    canned.pages[FIRST] = {"contacts": [CONTACT], "_links": {"next": {"href": "/v3/contacts?cursor=A"}}}
    canned.pages["/v3/contacts?cursor=A"] = {"contacts": [], "_links": {"next": {"href": "/v3/contacts?cursor=B"}}}
    canned.pages["/v3/contacts?cursor=B"] = {"contacts": [], "_links": {"next": {"href": "/v3/contacts?cursor=A"}}}
    with pytest.raises(MalformedResponse, match="already read"):
        list(canned.client().contacts(status="unsubscribed", limit=500))


def test_the_command_line_says_so_in_one_line(
    canned: CannedApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCOPTOUT_API_URL", canned.base_url)
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", "canned")
    canned.pages["/v3/contacts?status=unsubscribed&include=list_memberships&include_count=true&limit=500"] = {
        "contacts": "none"
    }
    assert main(["fetch", "--no-cache"]) == 3
    err = capsys.readouterr().err
    assert "no list of contacts" in err and err.count("\n") == 1
