"""HTTP routes of the sandbox's authorization server, under ``/oauth2/default/v1`` (rules in oauth.py).

POST bodies are form-encoded; answers are JSON (errors ``{"error", "error_description"}``), except the
sign-in pages a person would see in a browser and the redirects of the authorize endpoint.
"""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .oauth import OAuthError, OAuthServer, normalize_user_code
from .reply import Headers, Reply

OAUTH_PATH = "/oauth2/default/v1"
NO_STORE: Headers = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox sign-in</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Sandbox sign-in</h1>
<p>This is the local ccoptout-xl sandbox standing in for Constant Contact: no password, no real account.</p>
{content}
</body></html>
"""


class OAuthRoutes:
    """Answers every request whose path starts with ``OAUTH_PATH``."""

    def __init__(self, oauth: OAuthServer) -> None:
        self.oauth = oauth

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes, authorization: str | None) -> Reply:
        """One request: ``query`` holds the first value of each URL parameter, ``body`` the raw request body."""
        route = path[len(OAUTH_PATH) :]
        form = _form(body) if method == "POST" else {}
        try:
            if route == "/token":
                status, data = self.oauth.token_request(method, form, authorization)
                return Reply.json(status, data, NO_STORE + _error_headers(status))
            if route == "/device/authorize":
                _expect(method, "POST")
                return Reply.json(200, self.oauth.device_authorize(form, authorization), NO_STORE)
            if route == "/authorize":
                _expect(method, "GET")
                return self._authorize(query)
            if route == "/device":
                _expect(method, "GET")
                return self._device_page(query.get("user_code"))
            if route in ("/device/approve", "/device/deny"):
                _expect(method, "POST")
                return self._decide(route.rpartition("/")[2], form.get("user_code") or query.get("user_code") or "")
            raise OAuthError("not_found", f"The authorization server has no endpoint {path}.", 404)
        except OAuthError as error:
            return Reply.json(error.status, error.body, NO_STORE + _error_headers(error.status))

    def _authorize(self, query: dict[str, str]) -> Reply:
        request = self.oauth.check_authorization(query)
        decision = query.get("sandbox_decision") or ("approve" if self.oauth.auto_approve else None)
        if decision == "approve":
            code = self.oauth.grant_code(request)
            return _redirect(request.redirect_uri, code=code, state=request.state)
        if decision == "deny":
            denied = {"error": "access_denied", "error_description": "The user denied the authorization request."}
            return _redirect(request.redirect_uri, **denied, state=request.state)
        if decision is not None:
            raise OAuthError("invalid_request", "sandbox_decision must be approve or deny.")
        others = [(k, v) for k, v in query.items() if k != "sandbox_decision"]
        approve = f"{OAUTH_PATH}/authorize?{urlencode([*others, ('sandbox_decision', 'approve')])}"
        deny = f"{OAUTH_PATH}/authorize?{urlencode([*others, ('sandbox_decision', 'deny')])}"
        content = (
            f"<p>The app <b>{escape(request.client_id)}</b> asks to use your sandbox account with the scopes "
            f"<b>{escape(' '.join(request.scopes))}</b>.</p>\n"
            f'<p><a href="{escape(approve)}">Approve</a> &nbsp; <a href="{escape(deny)}">Deny</a></p>'
        )
        return Reply.html(200, PAGE.format(content=content))

    def _device_page(self, user_code: str | None) -> Reply:
        if not user_code:
            content = (
                f'<form method="get" action="{OAUTH_PATH}/device"><label>Code shown by the app: '
                '<input name="user_code" autofocus></label> <button>Next</button></form>'
            )
            return Reply.html(200, PAGE.format(content=content))
        code = normalize_user_code(user_code)
        if code not in self.oauth.pending_user_codes():
            raise OAuthError("invalid_request", "No device sign-in is waiting with this code (expired or done?).")
        forms = "".join(
            f'<form method="post" action="{OAUTH_PATH}/device/{action}" style="display: inline">'
            f'<input type="hidden" name="user_code" value="{escape(code)}"><button>{label}</button></form> '
            for action, label in (("approve", "Approve"), ("deny", "Deny"))
        )
        content = f"<p>Sign in the device showing the code <b>{escape(code)}</b>?</p>\n<p>{forms}</p>"
        return Reply.html(200, PAGE.format(content=content))

    def _decide(self, action: str, user_code: str) -> Reply:
        try:
            (self.oauth.approve if action == "approve" else self.oauth.deny)(user_code)
        except LookupError:
            raise OAuthError("invalid_request", "No device sign-in is waiting with this user_code.") from None
        status = "approved" if action == "approve" else "denied"
        return Reply.json(200, {"user_code": normalize_user_code(user_code), "status": status})


def _form(body: bytes) -> dict[str, str]:
    """A form-encoded body; the first value of each name wins."""
    form: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(name, value)
    return form


def _expect(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise OAuthError("invalid_request", f"Use {allowed} on this endpoint.", 405)


def _error_headers(status: int) -> Headers:
    if status == 401:
        return (("WWW-Authenticate", 'Basic realm="ccoptout-xl-sandbox"'),)
    if status == 429:
        return (("Retry-After", "1"),)
    return ()


def _redirect(uri: str, **params: str | None) -> Reply:
    """302 to ``uri`` with ``params`` added to its query (None values left out)."""
    parts = urlsplit(uri)
    extra = urlencode([(name, value) for name, value in params.items() if value is not None])
    query = f"{parts.query}&{extra}" if parts.query else extra
    location = urlunsplit(parts._replace(query=query))
    return Reply(302, b"", "text/plain; charset=utf-8", (("Location", location), *NO_STORE))
