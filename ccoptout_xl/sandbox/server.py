"""The sandbox HTTP server: a local stand-in for Constant Contact's V3 API.

Each API request goes through: auth (401) -> scope (403) -> daily quota -> rate window -> faults ->
endpoint, then waits (in its own thread, so concurrent requests are not serialized) and is answered with
JSON and a Content-Length, over HTTP/1.1 keep-alive. The wait models a server whose work grows with the
page: ``latency + latency_per_contact * (contacts in the page)`` seconds for ``GET /v3/contacts``, and
``latency`` for every other request (plus a "slow" fault's delay). Requests under ``/oauth2/default/v1``
go to the authorization server instead (oauth.py, oauth_http.py), with the same ``latency``. Every request
lands in ``Sandbox.requests``, with the delay it was given (``RequestRecord.delay``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .accounts import Account, AccountSpec
from .contact_search import LISTINGS
from .endpoints import Api
from .errors import QUOTA_EXCEEDED, THROTTLED, UNAUTHORIZED, ApiError
from .hooks import DROPPED, PENDING, Fault, FaultSet, RequestLog, RequestRecord
from .limits import Limits
from .oauth import DEFAULT_SCOPES, SCOPES, OAuthServer
from .oauth_http import OAUTH_PATH, OAuthRoutes
from .reply import Reply
from .settings import (
    SettingError,
    check_daily_quota,
    check_latency,
    check_latency_per_contact,
    check_rate_limit,
    check_server_settings,
)

logger = logging.getLogger(__name__)

MAX_REQUEST_BODY = 1 << 20
CONTACTS_PATH = "/v3/contacts"
"""The one operation whose answers wait longer for more contacts (``latency_per_contact``)."""
FAULT_ERRORS = {
    "500": ("server.error", "There was a problem with our internal service."),
    "503": ("service.unavailable", "Our internal service is temporarily unavailable."),
}


class Sandbox:
    """A running (or ready to run) fake V3 API over one synthetic account, with its authorization server.

    ``rate_limit`` (requests per second per API key), ``daily_quota`` (per UTC day), ``latency`` (seconds added to
    every answer), ``latency_per_contact`` (seconds added per contact in a page of ``GET /v3/contacts``: a page of n
    contacts waits ``latency + latency_per_contact * n``) and ``optout_filters`` (False: behave like a server from
    before optout_after/optout_before existed) can all be changed while serving, and so can
    ``counts_ignore_optout_filters`` (True: ``contacts_count`` leaves those two filters out, a server whose counts
    contradict its rows), and ``listing`` (the order pages list contacts in: "created", the order they were created
    in, or "scrambled", an order unrelated to any of their dates; the contract leaves it open). None disables a
    limit. Settings are checked before anything else is done (no account generated, no port bound): ``port`` 0 to
    65535, ``rate_limit`` finite and above 0, ``daily_quota`` a whole number from 1, ``latency`` from 0 to 60
    seconds, ``latency_per_contact`` from 0 to 0.1 seconds; anything else (NaN, infinity, a negative number, a bool)
    is a ``SettingError``, a ValueError whose one-line message names the setting.

    The API key of a request is the client id of its access token (the real limits are per API key), or the
    ``token`` given to the constructor.

    The API accepts access tokens issued by ``oauth`` (signed, unexpired by its clock, with the scope
    the endpoint needs) and, if given, the constructor's ``token`` as is (with every scope). ``token`` defaults to
    an access token of the default client with the scopes ``token_scopes`` (default: contact_data, offline_access,
    account_read: a sign-in from before campaign reports; give ``oauth.SCOPES`` for every scope, campaign_data
    too), valid 24 hours from construction.

    ``account`` may be changed while serving (``account.opt_out``, ``resubscribe``, ``delete``: see Account),
    in a private copy of the shared cached database; the API answers from the changed data as soon as the
    call returns, and stopping the sandbox discards the copy.
    """

    def __init__(
        self,
        spec: AccountSpec | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float | None = 4.0,
        daily_quota: int | None = 10_000,
        latency: float = 0.0,
        latency_per_contact: float = 0.0,
        optout_filters: bool = True,
        db_path: str | os.PathLike[str] | None = None,
        token: str | None = None,
        token_scopes: str | Iterable[str] = DEFAULT_SCOPES,
    ) -> None:
        _require_loopback(host)
        check_server_settings(port, rate_limit, daily_quota, latency, latency_per_contact)
        self.spec = spec if spec is not None else AccountSpec()
        self.account = Account.open(self.spec, db_path)
        self.host = host
        self.port = port
        self._latency = latency
        self._latency_per_contact = latency_per_contact
        self.optout_filters = optout_filters
        summary = self.account.summary()
        self.oauth = OAuthServer(
            lambda: self.auth_url, subject=summary["contact_email"], account_id=summary["encoded_account_id"]
        )
        self._static_token = token
        self.token = token if token is not None else self.oauth.access_token(token_scopes)
        self.requests = RequestLog()
        self.faults = FaultSet()
        self._limits = Limits(rate_limit, daily_quota)
        self._api = Api(self.account)
        self._oauth_routes = OAuthRoutes(self.oauth)
        self._server: _HTTPServer | None = None
        self._serving: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lifecycle = threading.Lock()

    @property
    def counts_ignore_optout_filters(self) -> bool:
        """True: ``contacts_count`` leaves out optout_after/optout_before (counts that contradict the rows)."""
        return self._api.search.counts_ignore_optout_filters

    @counts_ignore_optout_filters.setter
    def counts_ignore_optout_filters(self, value: bool) -> None:
        self._api.search.counts_ignore_optout_filters = bool(value)

    @property
    def listing(self) -> str:
        """The order pages list contacts in: "created" (default) or "scrambled" (unrelated to any date)."""
        return self._api.search.listing

    @listing.setter
    def listing(self, value: str) -> None:
        if value not in LISTINGS:
            raise SettingError("listing", f"must be one of {', '.join(LISTINGS)}", value)
        self._api.search.listing = value

    @property
    def rate_limit(self) -> float | None:
        """Requests per second per token before 429 throttled (None: unlimited)."""
        return self._limits.rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        self._limits.rate_limit = check_rate_limit(value)

    @property
    def rate_clock(self) -> Callable[[], float]:
        """The monotonic clock that the rate windows (the API's and the token endpoint's) read: a test that decides
        time itself sets its own, so that the waits it skips are ones the sandbox sees pass."""
        return self._limits.monotonic

    @rate_clock.setter
    def rate_clock(self, clock: Callable[[], float]) -> None:
        self._limits.monotonic = clock
        self.oauth.rate_clock = clock

    @property
    def daily_quota(self) -> int | None:
        """Requests per UTC day per token before 429 quota_exceeded (None: unlimited)."""
        return self._limits.daily_quota

    @daily_quota.setter
    def daily_quota(self, value: int | None) -> None:
        self._limits.daily_quota = check_daily_quota(value)

    @property
    def latency(self) -> float:
        """Seconds added to every answer, API and authorization server alike (0 to 60)."""
        return self._latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._latency = check_latency(value)

    @property
    def latency_per_contact(self) -> float:
        """Seconds added per contact in a page of ``GET /v3/contacts``, on top of ``latency`` (0 to 0.1)."""
        return self._latency_per_contact

    @latency_per_contact.setter
    def latency_per_contact(self, value: float) -> None:
        self._latency_per_contact = check_latency_per_contact(value)

    def answer_delay(self, path: str, contacts: int = 0) -> float:
        """Seconds an answer to ``path`` carrying ``contacts`` contacts waits, by the current settings (no fault)."""
        delay = self._latency
        if path == CONTACTS_PATH:
            delay += self._latency_per_contact * contacts
        return delay

    @property
    def quota_used(self) -> int:
        """Authenticated requests counted today for the API key of ``token``."""
        key = self._static_token if self._static_token is not None else _client_key(self.oauth.client_id)
        return self._limits.quota_used(key)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v3`` (only once started)."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v3"

    @property
    def auth_url(self) -> str:
        """``http://127.0.0.1:<port>/oauth2/default/v1``: the authorization server (only once started)."""
        return self.base_url.removesuffix("/v3") + OAUTH_PATH

    def reset_log(self) -> None:
        """Clear the request log and ``oauth.token_requests``; request numbers (for faults) restart at 1."""
        self.requests.clear()
        self.oauth.token_requests.clear()

    def start(self) -> Sandbox:
        """Serve in a background daemon thread."""
        thread = threading.Thread(target=lambda: self._run(server, 0.05), name="ccoptout-sandbox", daemon=True)
        server = self._bind(thread)
        thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until stop() (from another thread) or KeyboardInterrupt, which propagates."""
        self._run(self._bind(threading.current_thread()), 0.2)

    def wait(self) -> None:
        """Block until a started sandbox stops (stop() from another thread); KeyboardInterrupt propagates."""
        while True:
            with self._lifecycle:
                serving = self._serving
            if serving is None or not serving.is_alive():
                return
            serving.join(0.5)  # a timeout, so that Ctrl+C is seen

    def stop(self) -> None:
        """Stop serving, close every open connection and discard the account's changes. Safe to call twice."""
        with self._lifecycle:
            server, serving = self._server, self._serving
        if server is None:
            return
        self._stopping.set()
        if serving is not None and serving is not threading.current_thread():
            server.shutdown()  # returns once serve_forever has returned
            serving.join()
        self._close(server)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _bind(self, serving: threading.Thread) -> _HTTPServer:
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the sandbox is already started")
            self._stopping.clear()
            server_class = _HTTPServer6 if ":" in self.host else _HTTPServer
            server = server_class((self.host, self.port), _Handler)
            server.sandbox = self
            self.port = server.server_address[1]
            self._server, self._serving = server, serving
            return server

    def _run(self, server: _HTTPServer, poll_interval: float) -> None:
        try:
            server.serve_forever(poll_interval=poll_interval)
        finally:
            self._close(server)

    def _close(self, server: _HTTPServer) -> None:
        with self._lifecycle:
            if self._server is server:
                self._server = self._serving = None
        self._stopping.set()
        server.close_connections()
        server.server_close()
        self._api.close()
        self.account.close()  # discards the account's changes, if any

    def _serve(self, handler: _Handler) -> None:
        """Answer one request (called in the connection's thread)."""
        method = handler.command
        parts = urlsplit(handler.path)
        query: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            query.setdefault(name, value)
        body = _read_body(handler)
        if body is None:
            handler.close_connection = True
        oauth = parts.path.startswith(OAUTH_PATH + "/")
        record = RequestRecord(method, parts.path, query, PENDING, time.time())
        log_handle = self.requests.open(record, numbered=not oauth)
        fault: Fault | None = None
        contacts = 0
        try:
            if oauth:
                authorization = handler.headers.get("Authorization")
                reply = self._oauth_routes.handle(method, parts.path, query, body or b"", authorization)
            else:
                reply, fault, contacts = self._decide(handler, method, parts.path, query, log_handle.number)
        except Exception:
            logger.exception("sandbox failed on %s %s", method, handler.path)
            reply = Reply.json(500, [{"error_key": "server.error", "error_message": "Sandbox bug"}])
        delay = self.answer_delay(parts.path, contacts)
        delay += fault.delay if fault is not None and fault.kind == "slow" else 0.0
        if delay > 0:
            self._stopping.wait(delay)  # this request's own thread: others are answered meanwhile
        if fault is not None and fault.kind == "drop":
            self.requests.close(log_handle, DROPPED, delay)
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault is not None and fault.kind == "malformed":
            text = reply.payload.decode("utf-8")  # a proper prefix of JSON is never valid JSON
            reply = replace(reply, status=200, payload=text[: len(text) // 2].encode("utf-8"))
        self.requests.close(log_handle, reply.status, delay)
        if fault is not None and fault.kind == "truncated":
            handler.close_connection = True
            _send(handler, reply, truncate=True)
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        _send(handler, reply)

    def _decide(
        self, handler: _Handler, method: str, path: str, query: dict[str, str], number: int
    ) -> tuple[Reply, Fault | None, int]:
        """The reply, the fault that shaped it, and the number of contacts it carries."""
        scheme, _, credentials = (handler.headers.get("Authorization") or "").strip().partition(" ")
        caller = self._authenticate(credentials.strip()) if scheme.lower() == "bearer" else None
        if caller is None:
            return Reply.json(401, UNAUTHORIZED), None, 0
        key, scopes = caller
        needed = self._api.required_scope(path)
        if needed is not None and needed not in scopes:
            message = f"The access token lacks the {needed} scope that {path} needs."
            return Reply.json(403, [{"error_key": "forbidden", "error_message": message}]), None, 0
        if not self._limits.spend_quota(key):
            return Reply.json(429, QUOTA_EXCEEDED), None, 0
        if not self._limits.admit(key):
            return Reply.json(429, THROTTLED), None, 0
        fault = self.faults.pick(number, path)
        if fault is not None and fault.kind in FAULT_ERRORS:
            error_key, message = FAULT_ERRORS[fault.kind]
            return Reply.json(int(fault.kind), [{"error_key": error_key, "error_message": message}]), fault, 0
        if fault is not None and fault.kind == "drop":
            return Reply(DROPPED), fault, 0
        if fault is not None and fault.kind == "429":
            return Reply.json(429, THROTTLED), fault, 0
        if fault is not None and fault.kind == "invalidate":
            self.oauth.invalidate_access_tokens()  # this request's token among them: it gets the 401 of a dead token
            return Reply.json(401, UNAUTHORIZED), fault, 0
        try:
            status, body = self._api.handle(method, path, query, self.optout_filters)
        except ApiError as error:
            status, body = error.status, error.body
        contacts = len(body["contacts"]) if path == CONTACTS_PATH and status == 200 else 0
        return Reply.json(status, body), fault, contacts

    def _authenticate(self, offered: str) -> tuple[str, tuple[str, ...]] | None:
        """(API key, scopes) of a bearer token the API accepts, or None."""
        if not offered:
            return None
        if self._static_token is not None:
            raw = offered.encode("utf-8", "surrogateescape")  # str compare_digest wants ASCII
            if secrets.compare_digest(raw, self._static_token.encode("utf-8")):
                return self._static_token, SCOPES
        claims = self.oauth.validate(offered)
        if claims is None:
            return None
        return _client_key(claims["cid"]), tuple(claims["scp"])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ccoptout-xl-sandbox"
    sys_version = ""
    timeout = 120  # idle keep-alive connections end after this
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per request
        pass

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self.server.sandbox._serve(self)

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: the default 5 drops bursts of connections (1 s SYN retry)
    sandbox: Sandbox

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, which can stall on reverse DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


def _send(handler: _Handler, reply: Reply, truncate: bool = False) -> None:
    """Send ``reply``; with ``truncate``, only the first half of its body (Content-Length says the whole)."""
    handler.send_response(reply.status)
    handler.send_header("Content-Type", reply.content_type)
    handler.send_header("Content-Length", str(len(reply.payload)))
    for name, value in reply.headers:
        handler.send_header(name, value)
    if handler.close_connection and not truncate:
        handler.send_header("Connection", "close")
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(reply.payload[: len(reply.payload) // 2] if truncate else reply.payload)


def _read_body(handler: _Handler) -> bytes | None:
    """The request body (b"" if none); None if it can't be read, and then the connection can't be reused."""
    if handler.headers.get("Transfer-Encoding"):
        return None
    declared = (handler.headers.get("Content-Length") or "0").strip()
    if not re.fullmatch(r"[0-9]{1,8}", declared):  # int() would also take "+5", "1_0" and non-ASCII digits
        return None
    length = int(declared)
    if length > MAX_REQUEST_BODY:
        return None
    return handler.rfile.read(length) if length > 0 else b""


def _client_key(client_id: str) -> str:
    """The rate and quota key of an app's access tokens."""
    return f"client:{client_id}"


def _require_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the sandbox only listens on a loopback address, not {host!r}")
