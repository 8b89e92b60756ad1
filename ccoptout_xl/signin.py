"""Signing in to Constant Contact: the device flow (the default) and the browser flow (authorization code + PKCE).

The OAuth protocol itself (PKCE challenge, token requests, client authentication) is Authlib's; this module
adds what a command-line sign-in needs around it: showing the code, opening the browser, polling at the server's
pace, and a one-shot listener on 127.0.0.1 for the browser's redirect.
See https://developer.constantcontact.com/api_guide/device_flow.html and .../pkce_flow.html.
"""

from __future__ import annotations

import contextlib
import html
import secrets
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from .config import SCOPES, OAuthApp
from .credentials import Tokens
from .exceptions import ApiError, SignInFailed
from .retry import Sleep, retry_call

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TOKEN_ENDPOINT_INTERVAL = 1.0  # seconds: the token endpoint takes 1 request per second per client
Show = Callable[[str], None]
Opener = Callable[[str], Any]


def oauth_session(
    app: OAuthApp, *, redirect_uri: str | None = None, timeout: float = 30.0, ask_scopes: bool = True
) -> OAuth2Session:
    """An Authlib session for ``app``: a public client (PKCE, no secret) or a confidential one (Basic auth).

    ``ask_scopes`` False for a renewal: it then keeps the scopes the sign-in was granted (RFC 6749 section 6), so a
    sign-in made before ccoptout-xl asked for more (campaign_data) keeps working as it was."""
    session = OAuth2Session(
        client_id=app.client_id,
        client_secret=app.client_secret,
        token_endpoint_auth_method="client_secret_basic" if app.confidential else "none",
        scope=" ".join(SCOPES) if ask_scopes else None,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        default_timeout=timeout,
    )
    if urlsplit(app.auth_url).scheme == "http":
        session.trust_env = False  # loopback only (checked in OAuthApp): no proxy may see the tokens
    return session


@contextlib.contextmanager
def reaching(app: OAuthApp) -> Iterator[None]:
    """Turn a sign-in server that cannot be reached, or answers with something other than JSON, into a clear
    :class:`ApiError` (OAuth error answers are left to the caller)."""
    host = urlsplit(app.auth_url).netloc
    try:
        yield
    except requests.RequestException as exc:
        reason = "timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            reason = f"HTTP {exc.response.status_code}"
        raise ApiError(
            f"Could not reach the sign-in server {host} ({reason}); check the connection and try again."
        ) from None
    except ValueError:
        raise ApiError(f"The sign-in server {host} sent an answer that is not JSON; try again later.") from None


def sign_in_error(exc: OAuthError) -> SignInFailed:
    """A one-line message for an OAuth error answer (never including any token)."""
    what = {
        "invalid_client": "the app's client id (or secret) was not accepted: check CCOPTOUT_CLIENT_ID",
        "unauthorized_client": "the app is not allowed this sign-in flow: enable it in the developer portal",
        "invalid_scope": "the app may not ask for " + ", ".join(SCOPES),
        "too_many_requests": "the sign-in server is busy; wait a few seconds",
    }.get(exc.error or "", f"{exc.error}: {exc.description or 'no details'}")
    return SignInFailed(f"Sign-in failed: {what}.")


def device_sign_in(
    app: OAuthApp,
    *,
    show: Show = print,
    opener: Opener | None = webbrowser.open,
    sleep: Sleep = time.sleep,
    timeout: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> Tokens:
    """Sign in with the device flow: show a code to enter in a browser, then poll until it is approved.

    ``sleep`` waits between polls and ``clock`` tells when the code has expired: tests pass their own."""
    session = oauth_session(app, timeout=timeout)
    with reaching(app):
        answer = session.post(
            app.device_url, data={"client_id": app.client_id, "scope": " ".join(SCOPES)}, withhold_token=True
        )
    try:
        grant = answer.json()
    except ValueError:
        grant = {}
    if answer.status_code != 200 or "device_code" not in grant:
        raise sign_in_error(
            OAuthError(grant.get("error", f"HTTP {answer.status_code}"), grant.get("error_description"))
        )
    where = grant.get("verification_uri_complete") or grant["verification_uri"]
    if opener is not None:  # first: showing the code may block (Excel's message box) until the person is done
        opener(where)
    show(f"To sign in, open {grant['verification_uri']} and enter the code {grant['user_code']}")
    interval = float(grant.get("interval") or 5)
    deadline = clock() + float(grant.get("expires_in") or 600)
    while clock() < deadline:
        sleep(interval)
        try:
            with reaching(app):
                body = session.fetch_token(app.token_url, grant_type=DEVICE_GRANT, device_code=grant["device_code"])
            return Tokens.from_response(body)
        except OAuthError as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":
                interval += 5  # RFC 8628: poll 5 seconds slower from now on
                continue
            if exc.error == "too_many_requests":  # the token endpoint's 1 request/second
                sleep(TOKEN_ENDPOINT_INTERVAL)
                continue
            if exc.error == "access_denied":
                raise SignInFailed("Sign-in was refused in the browser; nothing was stored.") from None
            if exc.error == "expired_token":
                break
            raise sign_in_error(exc) from None
    raise SignInFailed("The code expired before it was approved; run `ccoptout-xl login` again.")


def browser_sign_in(
    app: OAuthApp,
    *,
    show: Show = print,
    opener: Opener = webbrowser.open,
    wait: float = 300.0,
    timeout: float = 30.0,
    sleep: Sleep = time.sleep,
) -> Tokens:
    """Sign in with the authorization code flow and PKCE (S256), the browser coming back to 127.0.0.1.

    ``sleep`` waits out the token endpoint's rate limit if it answers "too many requests"."""
    with _RedirectListener(app.redirect_uri) as listener:
        session = oauth_session(app, redirect_uri=listener.redirect_uri, timeout=timeout)
        verifier = secrets.token_urlsafe(64)
        url, state = session.create_authorization_url(app.authorize_url, code_verifier=verifier)
        listener.state = state
        show(f"Opening your browser to sign in. If it does not open, visit:\n{url}")
        opener(url)
        params = listener.wait(wait)
    if params is None:
        raise SignInFailed(
            f"No answer from the browser within {wait:.0f} s (answers for another sign-in are ignored); "
            "run `ccoptout-xl login --browser` again."
        )
    if "error" in params:
        if params["error"] == "access_denied":
            raise SignInFailed("Sign-in was refused in the browser; nothing was stored.")
        raise sign_in_error(OAuthError(params["error"], params.get("error_description")))
    if not params.get("code"):
        raise SignInFailed("The browser came back without an authorization code; nothing was stored.")
    try:
        with reaching(app):
            body = within_rate_limit(
                lambda: session.fetch_token(app.token_url, code=params["code"], code_verifier=verifier), sleep=sleep
            )
    except OAuthError as exc:
        raise sign_in_error(exc) from None
    return Tokens.from_response(body)


def within_rate_limit(
    request: Callable[[], dict[str, Any]], tries: int = 3, sleep: Sleep = time.sleep
) -> dict[str, Any]:
    """A token-endpoint request, waiting out the endpoint's 1 request/second limit (a bounded number of times)."""
    return retry_call(
        request,
        on=OAuthError,
        when=lambda exc: exc.error == "too_many_requests",
        tries=tries,
        delay=TOKEN_ENDPOINT_INTERVAL,
        sleep=sleep,
    )


class _ExclusiveServer(HTTPServer):
    allow_reuse_address = False  # no other process may bind the same port alongside (Windows' SO_REUSEADDR)


class _RedirectListener:
    """A one-shot HTTP listener on 127.0.0.1 (never another interface) for the browser's redirect.

    Only an answer carrying this sign-in's ``state`` counts: anything else that reaches the port (another local
    program, a web page) gets a 404 and the listener keeps waiting for the browser.
    """

    def __init__(self, redirect_uri: str) -> None:
        parts = urlsplit(redirect_uri)
        self._path = parts.path or "/"
        self.state: str | None = None
        self._result: dict[str, str] | None = None
        self._done = threading.Event()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(target.query).items()}
                expected = listener.state
                ours = expected is not None and secrets.compare_digest(params.get("state", ""), expected)
                if target.path != listener._path or listener._done.is_set() or not ours:
                    self.send_error(404)
                    return
                listener._result = params
                failed = "error" in listener._result
                message = "Sign-in was refused." if failed else "Signed in. You can close this window."
                page = f"<!doctype html><title>ccoptout-xl</title><p>{html.escape(message)}</p>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                listener._done.set()

            def log_message(self, *args: object) -> None:  # the query holds the code: never log it
                pass

        try:
            self._server = _ExclusiveServer(("127.0.0.1", 80 if parts.port is None else parts.port), Handler)
        except OSError as exc:
            raise SignInFailed(
                f"Cannot listen on 127.0.0.1:{parts.port} for the browser ({exc.strerror or exc}); close what uses "
                "it or set another redirect URI (registered in the developer portal)."
            ) from None
        port = self._server.server_address[1]
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        self.redirect_uri = urlunsplit((parts.scheme, f"{host}:{port}", self._path, "", ""))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> _RedirectListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait(self, seconds: float) -> dict[str, str] | None:
        self._done.wait(seconds)
        return self._result
