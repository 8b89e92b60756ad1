"""The sandbox HTTP server: a local stand-in for Constant Contact's V3 API.

Each request goes through: auth -> daily quota -> rate window -> faults -> endpoint, then waits
``latency`` seconds (in its own thread, so concurrent requests are not serialized) and is answered
with JSON and a Content-Length, over HTTP/1.1 keep-alive. Every request lands in ``Sandbox.requests``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import secrets
import socket
import socketserver
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .accounts import Account, AccountSpec
from .endpoints import Api
from .errors import QUOTA_EXCEEDED, THROTTLED, UNAUTHORIZED, ApiError
from .hooks import DROPPED, PENDING, Fault, FaultSet, RequestLog, RequestRecord
from .limits import Limits

logger = logging.getLogger(__name__)

MAX_REQUEST_BODY = 1 << 20
FAULT_ERRORS = {
    "500": ("server.error", "There was a problem with our internal service."),
    "503": ("service.unavailable", "Our internal service is temporarily unavailable."),
}


class Sandbox:
    """A running (or ready to run) fake V3 API over one synthetic account.

    ``rate_limit`` (requests per second per token), ``daily_quota`` (per UTC day), ``latency`` (seconds)
    and ``optout_filters`` (False: behave like a server from before optout_after/optout_before existed)
    can all be changed while serving. None disables a limit.
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
        optout_filters: bool = True,
        db_path: str | os.PathLike[str] | None = None,
        token: str | None = None,
    ) -> None:
        _require_loopback(host)
        self.spec = spec if spec is not None else AccountSpec()
        self.account = Account.open(self.spec, db_path)
        self.host = host
        self.port = port
        self.latency = latency
        self.optout_filters = optout_filters
        self.token = token if token is not None else _fake_access_token()
        self.requests = RequestLog()
        self.faults = FaultSet()
        self._limits = Limits(rate_limit, daily_quota)
        self._api = Api(self.account)
        self._server: _HTTPServer | None = None
        self._serving: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lifecycle = threading.Lock()

    @property
    def rate_limit(self) -> float | None:
        """Requests per second per token before 429 throttled (None: unlimited)."""
        return self._limits.rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        self._limits.rate_limit = value

    @property
    def daily_quota(self) -> int | None:
        """Requests per UTC day per token before 429 quota_exceeded (None: unlimited)."""
        return self._limits.daily_quota

    @daily_quota.setter
    def daily_quota(self, value: int | None) -> None:
        self._limits.daily_quota = value

    @property
    def quota_used(self) -> int:
        """Authenticated requests counted today for ``token``."""
        return self._limits.quota_used(self.token)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v3`` (only once started)."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v3"

    def reset_log(self) -> None:
        """Clear the request log; request numbers (for faults) restart at 1."""
        self.requests.clear()

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
        """Stop serving and close every open connection. Safe to call twice."""
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

    def _serve(self, handler: _Handler) -> None:
        """Answer one request (called in the connection's thread)."""
        method = handler.command
        parts = urlsplit(handler.path)
        query: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            query.setdefault(name, value)
        if not _discard_body(handler):
            handler.close_connection = True
        log_handle = self.requests.open(RequestRecord(method, parts.path, query, PENDING, time.time()))
        try:
            status, body, fault = self._decide(handler, method, parts.path, query, log_handle[1])
        except Exception:
            logger.exception("sandbox failed on %s %s", method, handler.path)
            status, body, fault = 500, [{"error_key": "server.error", "error_message": "Sandbox bug"}], None
        delay = self.latency + (fault.delay if fault is not None and fault.kind == "slow" else 0.0)
        if delay > 0:
            self._stopping.wait(delay)
        if fault is not None and fault.kind == "drop":
            self.requests.close(log_handle, DROPPED)
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        if fault is not None and fault.kind == "malformed":
            status, text = 200, text[: len(text) // 2]  # a proper prefix of JSON is never valid JSON
        self.requests.close(log_handle, status)
        _send(handler, status, text.encode("utf-8"))

    def _decide(
        self, handler: _Handler, method: str, path: str, query: dict[str, str], number: int
    ) -> tuple[int, Any, Fault | None]:
        scheme, _, credentials = (handler.headers.get("Authorization") or "").strip().partition(" ")
        offered = credentials.strip().encode("utf-8", "surrogateescape")  # str compare_digest wants ASCII
        if scheme.lower() != "bearer" or not secrets.compare_digest(offered, self.token.encode("utf-8")):
            return 401, UNAUTHORIZED, None
        if not self._limits.spend_quota(self.token):
            return 429, QUOTA_EXCEEDED, None
        if not self._limits.admit(self.token):
            return 429, THROTTLED, None
        fault = self.faults.pick(number, path)
        if fault is not None and fault.kind in FAULT_ERRORS:
            key, message = FAULT_ERRORS[fault.kind]
            return int(fault.kind), [{"error_key": key, "error_message": message}], fault
        if fault is not None and fault.kind == "drop":
            return DROPPED, None, fault
        try:
            status, body = self._api.handle(method, path, query, self.optout_filters)
        except ApiError as error:
            status, body = error.status, error.body
        return status, body, fault


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


def _send(handler: _Handler, status: int, payload: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    if handler.close_connection:
        handler.send_header("Connection", "close")
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(payload)


def _discard_body(handler: _Handler) -> bool:
    """Read and drop a request body; False if the connection can't be reused afterwards."""
    if handler.headers.get("Transfer-Encoding"):
        return False
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        return False
    if length > MAX_REQUEST_BODY:
        return False
    if length > 0:
        handler.rfile.read(length)
    return True


def _require_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the sandbox only listens on a loopback address, not {host!r}")


def _fake_access_token() -> str:
    """A JWT-shaped bearer token (about 800 characters, ``exp`` 24 hours ahead); only its text matters."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    now = int(time.time())
    claims = {
        "ver": 1,
        "jti": f"AT.{secrets.token_urlsafe(32)}",
        "iss": "https://identity.constantcontact.com/oauth2/sandbox",
        "aud": "https://api.cc.email/v3",
        "iat": now,
        "exp": now + 86_400,
        "cid": "ccoptout-xl-sandbox",
        "uid": secrets.token_hex(10),
        "scp": ["contact_data", "account_read", "offline_access"],
        "auth_time": now,
        "sub": "owner@sandbox-outfitters.example",
        "platform_user_id": str(uuid.uuid4()),
    }
    header = json.dumps({"kid": "sandbox", "alg": "RS256"}).encode()
    return ".".join((part(header), part(json.dumps(claims).encode()), part(secrets.token_bytes(256))))
