"""The sandbox's OAuth 2.0 authorization server: clients, grants, tokens and the checks on them.

It behaves like Constant Contact's closely enough to test a client against: authorization code with PKCE
(S256 only), device authorization (RFC 8628), refresh tokens that rotate (single use, the default) or live
long, access tokens that are signed JWTs with ``exp``, and a token endpoint that takes 1 request per second
per client. "Now" is the real clock plus ``clock_offset``, both when tokens are issued and when they are
checked. The HTTP side is in oauth_http.py; every setting here can be changed while serving.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .hooks import RecordList
from .limits import Limits
from .tokens import JwtSigner, b64url

SCOPES = ("contact_data", "offline_access", "account_read", "campaign_data")
"""Every scope a token can have; ``campaign_data`` reaches the email campaign operations."""
DEFAULT_SCOPES = "contact_data offline_access account_read"
"""What ``issue`` and ``access_token`` (and so ``Sandbox.token``) give unless told: a sign-in from before campaign
reports, without ``campaign_data``. Ask for it explicitly: ``access_token("contact_data campaign_data")``."""
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
API_AUDIENCE = "https://api.cc.email/v3"
DEFAULT_CLIENT_ID = "ccoptout-xl-sandbox"
USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 6.1: no vowels, no look-alikes
STALE_AFTER = 3600.0  # expired codes are forgotten this long after they expire
_LOOPBACK_CALLBACK = re.compile(r"http://(?:127\.0\.0\.1|localhost|\[::1\]):([0-9]{1,5})/callback")
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 4.1
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url(SHA-256), unpadded


class OAuthError(Exception):
    """An OAuth error answer: ``{"error": ..., "error_description": ...}`` with ``status``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    @property
    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class TokenRequest:
    """One request to the token endpoint: ``at`` is time.time() on arrival, ``error`` the OAuth error if any."""

    grant_type: str | None
    client_id: str | None
    status: int
    at: float
    error: str | None = None


@dataclass(frozen=True)
class OAuthClient:
    """A registered app. With a secret it is confidential (HTTP Basic at the token endpoint)."""

    client_id: str
    secret: str | None = None
    redirect_uris: tuple[str, ...] | None = None  # None: http://127.0.0.1|localhost|[::1]:<any port>/callback

    def allows(self, redirect_uri: str) -> bool:
        """Whether ``redirect_uri`` is registered (exactly; or the loopback pattern when none are given)."""
        if self.redirect_uris is not None:
            return redirect_uri in self.redirect_uris
        match = _LOOPBACK_CALLBACK.fullmatch(redirect_uri)
        return match is not None and 0 < int(match[1]) < 65536


@dataclass(frozen=True)
class AuthorizationRequest:
    """A checked request to the authorize endpoint, waiting for the user's decision."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    code_challenge: str | None


@dataclass(frozen=True)
class _Code:
    request: AuthorizationRequest
    expires_at: float


@dataclass
class _Device:
    client_id: str
    scopes: tuple[str, ...]
    user_code: str
    interval: float
    expires_at: float
    state: str = "pending"  # -> approved | denied
    last_poll: float | None = None  # time.monotonic()


@dataclass
class _Refresh:
    client_id: str
    scopes: tuple[str, ...]
    last_used: float


class OAuthServer:
    """State and rules of the authorization server. ``auth_url`` gives its base URL (once serving).

    Settings: ``auto_approve`` (device codes and authorization requests approved at once), ``rotating``
    (refresh tokens are single use), ``device_interval`` and ``device_expires_in`` (seconds),
    ``code_lifetime``, ``access_lifetime``, ``refresh_idle_lifetime`` (seconds), ``token_rate_limit``
    (token requests per second per client id, None: unlimited) and ``clock_offset`` (seconds added to now).
    """

    def __init__(self, auth_url: Callable[[], str], *, subject: str, account_id: str) -> None:
        self.auto_approve = False
        self.rotating = True
        self.device_interval: float = 5
        self.device_expires_in: float = 600
        self.code_lifetime: float = 600
        self.access_lifetime: float = 86_400
        self.refresh_idle_lifetime: float = 180 * 86_400
        self.clock_offset: float = 0.0
        self.issuer = f"https://identity.constantcontact.com/oauth2/sandbox{secrets.token_hex(8)}"
        self.audience = API_AUDIENCE
        self.token_requests: RecordList[TokenRequest] = RecordList()
        self._auth_url = auth_url
        self._signer = JwtSigner()
        self._user = {
            "uid": "00u" + secrets.token_hex(9),
            "sub": subject,
            "platform_user_id": str(uuid.uuid4()),
            "account_id": account_id,
            "auth_time": int(self.now()),
        }
        self._window = Limits(1.0, None)
        self._clients = {DEFAULT_CLIENT_ID: OAuthClient(DEFAULT_CLIENT_ID)}
        self._codes: dict[str, _Code] = {}
        self._devices: dict[str, _Device] = {}
        self._user_codes: dict[str, str] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._issued: list[str] = []  # jti of every access token issued since the last invalidation
        self._invalidated: set[str] = set()
        self._lock = threading.Lock()

    # --- the Python API ----------------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        """The default public client (PKCE and device flow; loopback ``/callback`` redirect URIs, any port)."""
        return DEFAULT_CLIENT_ID

    @property
    def rate_clock(self) -> Callable[[], float]:
        """The monotonic clock of the token endpoint's rate window (see ``Sandbox.rate_clock``)."""
        return self._window.monotonic

    @rate_clock.setter
    def rate_clock(self, clock: Callable[[], float]) -> None:
        self._window.monotonic = clock

    @property
    def token_rate_limit(self) -> float | None:
        """Token endpoint requests per second per client id before 429 (None: unlimited)."""
        return self._window.rate_limit

    @token_rate_limit.setter
    def token_rate_limit(self, value: float | None) -> None:
        self._window.rate_limit = value

    def now(self) -> float:
        """The sandbox's clock: time.time() + clock_offset."""
        return time.time() + self.clock_offset

    def register_client(
        self, client_id: str, secret: str | None = None, redirect_uris: Iterable[str] | None = None
    ) -> None:
        """Add (or replace) an app; ``secret`` makes it confidential. Default redirect URIs: as the default client."""
        uris = tuple(redirect_uris) if redirect_uris is not None else None
        with self._lock:
            self._clients[client_id] = OAuthClient(client_id, secret, uris)

    def issue(self, scope: str | Iterable[str] = DEFAULT_SCOPES, client_id: str | None = None) -> dict[str, Any]:
        """Tokens as the token endpoint would answer, without a flow (not rate limited, not recorded)."""
        client = self._client(client_id or DEFAULT_CLIENT_ID)
        return self._tokens(client.client_id, _scope_argument(scope))

    def access_token(self, scope: str | Iterable[str] = DEFAULT_SCOPES, client_id: str | None = None) -> str:
        """Only an access token (no refresh token is created), as ``issue`` would give."""
        client = self._client(client_id or DEFAULT_CLIENT_ID)
        return self._access_token(client.client_id, _scope_argument(scope))

    def validate(self, token: str) -> dict[str, Any] | None:
        """The claims of an access token this server issued and that has not expired by ``now()``; else None."""
        claims = self._signer.verify(token)
        if claims is None or claims.get("iss") != self.issuer or claims.get("aud") != self.audience:
            return None
        with self._lock:
            if claims.get("jti") in self._invalidated:
                return None
        exp, scopes = claims.get("exp"), claims.get("scp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool) or self.now() >= exp:
            return None
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            return None
        return claims

    def approve(self, user_code: str) -> None:
        """Approve a pending device authorization (LookupError if none has this code)."""
        self._decide(user_code, "approved")

    def deny(self, user_code: str) -> None:
        """Deny a pending device authorization (LookupError if none has this code)."""
        self._decide(user_code, "denied")

    def pending_user_codes(self) -> list[str]:
        """User codes of device authorizations waiting for approval, oldest first."""
        now = self.now()
        with self._lock:
            return [d.user_code for d in self._devices.values() if d.state == "pending" and now < d.expires_at]

    def invalidate_access_tokens(self) -> int:
        """Make every access token issued so far invalid before it expires (a server-side revocation or key
        rotation): the API answers 401 to them, refresh tokens still work. Returns how many there were."""
        with self._lock:
            count = len(self._issued)
            self._invalidated.update(self._issued)
            self._issued = []
            return count

    def revoke_refresh_tokens(self) -> int:
        """Make every refresh token issued so far invalid (``invalid_grant``); returns how many there were."""
        with self._lock:
            count = len(self._refresh)
            self._refresh.clear()
            return count

    # --- endpoints (called by oauth_http) ------------------------------------------------------------------

    def device_authorize(self, form: dict[str, str], authorization: str | None) -> dict[str, Any]:
        """``POST /device/authorize``: a new device code for the client (RFC 8628 3.2)."""
        client = self._authenticate(form, authorization)
        scopes = parse_scopes(form.get("scope"))
        now, interval, expires_in = self.now(), self.device_interval, self.device_expires_in
        device_code = secrets.token_urlsafe(32)
        with self._lock:
            self._purge(now)
            user_code = _user_code()
            while user_code in self._user_codes:
                user_code = _user_code()
            state = "approved" if self.auto_approve else "pending"
            self._devices[device_code] = _Device(client.client_id, scopes, user_code, interval, now + expires_in, state)
            self._user_codes[user_code] = device_code
        base = self._auth_url()
        return {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": f"{base}/device",
            "verification_uri_complete": f"{base}/device?user_code={user_code}",
            "expires_in": number(expires_in),
            "interval": number(interval),
        }

    def check_authorization(self, query: dict[str, str]) -> AuthorizationRequest:
        """Validate ``GET /authorize``: client, redirect URI, response type, scopes, PKCE (S256 only)."""
        client_id = query.get("client_id") or ""
        with self._lock:
            client = self._clients.get(client_id)
        if client is None:
            raise OAuthError("invalid_client", f"No app has the client_id {client_id!r}.")
        redirect_uri = query.get("redirect_uri") or ""
        if not client.allows(redirect_uri):
            raise OAuthError("invalid_request", f"The redirect_uri {redirect_uri!r} is not registered for this app.")
        if query.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "response_type must be code.")
        scopes = parse_scopes(query.get("scope"))
        challenge, method = query.get("code_challenge"), query.get("code_challenge_method")
        if method is not None and method != "S256":
            raise OAuthError("invalid_request", f"code_challenge_method must be S256, not {method!r}.")
        if challenge is None and (method is not None or client.secret is None):
            raise OAuthError("invalid_request", "PKCE is required: send code_challenge and code_challenge_method=S256.")
        if challenge is not None and method is None:
            raise OAuthError("invalid_request", "Send code_challenge_method=S256 (plain is not accepted).")
        if challenge is not None and not _CHALLENGE.fullmatch(challenge):
            raise OAuthError("invalid_request", "code_challenge must be base64url(SHA-256(code_verifier)), unpadded.")
        return AuthorizationRequest(client.client_id, redirect_uri, scopes, query.get("state"), challenge)

    def grant_code(self, request: AuthorizationRequest) -> str:
        """An authorization code for an approved request: single use, ``code_lifetime`` seconds."""
        code, now = secrets.token_urlsafe(32), self.now()
        with self._lock:
            self._purge(now)
            self._codes[code] = _Code(request, now + self.code_lifetime)
        return code

    def token_request(self, method: str, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        """``POST /token``: (status, JSON body). Rate limited per client id first; every call is recorded."""
        grant_type, claimed = form.get("grant_type"), _claimed_client_id(form, authorization)
        try:
            if not self._window.admit(claimed or ""):
                allowed = f"{number(self.token_rate_limit or 0)} request(s) per second per client"
                raise OAuthError("too_many_requests", f"The token endpoint allows {allowed}; retry later.", 429)
            if method != "POST":
                raise OAuthError("invalid_request", "The token endpoint only takes POST.", 405)
            client = self._authenticate(form, authorization)
            status, body = 200, self._grant(client, grant_type, form)
        except OAuthError as error:
            status, body = error.status, error.body
        self.token_requests.append(TokenRequest(grant_type, claimed, status, time.time(), body.get("error")))
        return status, body

    # --- internals -----------------------------------------------------------------------------------------

    def _client(self, client_id: str) -> OAuthClient:
        with self._lock:
            client = self._clients.get(client_id)
        if client is None:
            raise LookupError(f"no app has the client_id {client_id!r}")
        return client

    def _authenticate(self, form: dict[str, str], authorization: str | None) -> OAuthClient:
        """The calling client: HTTP Basic (confidential, or public with an empty secret) or client_id in the body."""
        basic = _basic_credentials(authorization)
        secret: str | None
        if basic is not None:
            client_id, secret = basic
            if form.get("client_id") not in (None, client_id):
                raise OAuthError("invalid_client", "client_id in the body differs from the Basic credentials.", 401)
        else:
            client_id, secret = (form.get("client_id") or ""), form.get("client_secret")
        if not client_id:
            raise OAuthError("invalid_client", "Send client_id, or HTTP Basic client_id:client_secret.", 401)
        with self._lock:
            client = self._clients.get(client_id)
        if client is None:
            raise OAuthError("invalid_client", "Client authentication failed: unknown client_id.", 401)
        if client.secret is None:
            if secret:
                raise OAuthError("invalid_client", "This app is a public client: it has no client secret.", 401)
        elif secret is None or not secrets.compare_digest(secret.encode(), client.secret.encode()):
            raise OAuthError("invalid_client", "Client authentication failed: wrong or missing client secret.", 401)
        return client

    def _grant(self, client: OAuthClient, grant_type: str | None, form: dict[str, str]) -> dict[str, Any]:
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required.")
        if grant_type == "authorization_code":
            return self._redeem_code(client, form)
        if grant_type == DEVICE_GRANT:
            return self._redeem_device(client, form)
        if grant_type == "refresh_token":
            return self._refresh_grant(client, form)
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported.")

    def _redeem_code(self, client: OAuthClient, form: dict[str, str]) -> dict[str, Any]:
        """Authorization code: spent by the first request that presents it, whether that succeeds or not."""
        with self._lock:
            code = self._codes.pop(_required(form, "code"), None)
        if code is None or code.request.client_id != client.client_id or self.now() >= code.expires_at:
            raise OAuthError("invalid_grant", "The authorization code is invalid, expired or already used.")
        request = code.request
        if form.get("redirect_uri") != request.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the one of the authorization request.")
        verifier = form.get("code_verifier")
        if request.code_challenge is None:
            if verifier is not None:
                raise OAuthError("invalid_grant", "code_verifier sent, but the authorization had no code_challenge.")
        elif verifier is None or not _VERIFIER.fullmatch(verifier) or s256(verifier) != request.code_challenge:
            raise OAuthError("invalid_grant", "PKCE verification failed: code_verifier does not match code_challenge.")
        return self._tokens(client.client_id, request.scopes)

    def _redeem_device(self, client: OAuthClient, form: dict[str, str]) -> dict[str, Any]:
        device_code, polled = _required(form, "device_code"), time.monotonic()
        with self._lock:
            device = self._devices.get(device_code)
            if device is None or device.client_id != client.client_id:
                raise OAuthError("invalid_grant", "The device code is invalid or was already used.")
            if self.now() >= device.expires_at:
                raise OAuthError("expired_token", "The device code has expired: start the sign-in again.")
            too_soon = device.last_poll is not None and polled - device.last_poll < device.interval
            device.last_poll = polled
            if device.state == "denied":
                raise OAuthError("access_denied", "The user denied the authorization request.")
            if device.state == "pending" and too_soon:
                raise OAuthError("slow_down", f"Poll at most every {number(device.interval)} seconds.")
            if device.state == "pending":
                raise OAuthError("authorization_pending", "The user has not approved the request yet.")
            del self._devices[device_code]
            self._user_codes.pop(device.user_code, None)
        return self._tokens(client.client_id, device.scopes)

    def _refresh_grant(self, client: OAuthClient, form: dict[str, str]) -> dict[str, Any]:
        token, now = _required(form, "refresh_token"), self.now()
        with self._lock:
            grant = self._refresh.get(token)
            if grant is not None and now - grant.last_used > self.refresh_idle_lifetime:
                del self._refresh[token]
                grant = None
            if grant is None or grant.client_id != client.client_id:
                raise OAuthError("invalid_grant", "The refresh token is invalid, expired, revoked or already used.")
            scopes = grant.scopes
            if form.get("scope"):
                scopes = parse_scopes(form["scope"])
                if not set(scopes) <= set(grant.scopes):
                    raise OAuthError("invalid_scope", "A refresh can only ask for scopes that were granted.")
            if self.rotating:
                del self._refresh[token]
                token = secrets.token_urlsafe(32)
                self._refresh[token] = _Refresh(client.client_id, grant.scopes, now)
            else:
                grant.last_used = now
        return self._answer(self._access_token(client.client_id, scopes), scopes, token)

    def _tokens(self, client_id: str, scopes: tuple[str, ...]) -> dict[str, Any]:
        refresh = None
        if "offline_access" in scopes:
            refresh = secrets.token_urlsafe(32)
            with self._lock:
                self._refresh[refresh] = _Refresh(client_id, scopes, self.now())
        return self._answer(self._access_token(client_id, scopes), scopes, refresh)

    def _answer(self, access: str, scopes: tuple[str, ...], refresh: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": number(self.access_lifetime),
            "access_token": access,
            "scope": " ".join(scopes),
        }
        if refresh is not None:
            body["refresh_token"] = refresh
        return body

    def _access_token(self, client_id: str, scopes: tuple[str, ...]) -> str:
        issued = int(self.now())
        user = self._user
        jti = f"AT.{secrets.token_urlsafe(32)}"
        with self._lock:
            self._issued.append(jti)
        return self._signer.sign(
            {
                "ver": 1,
                "jti": jti,
                "iss": self.issuer,
                "aud": self.audience,
                "iat": issued,
                "exp": number(issued + self.access_lifetime),
                "cid": client_id,
                "uid": user["uid"],
                "scp": list(scopes),
                "auth_time": user["auth_time"],
                "sub": user["sub"],
                "platform_user_id": user["platform_user_id"],
                # Not read by anyone: they make the token as long as a real one (about 1,100 characters).
                "account_id": user["account_id"],
                "login_name": user["sub"],
                "site_owner": True,
                "roles": ["account_owner", "campaign_creator", "contact_manager", "reports_viewer"],
                "amr": ["pwd"],
                "idp": "00o" + hashlib.sha256(self.issuer.encode()).hexdigest()[:17],
                "sandbox": "ccoptout-xl local sandbox: not a Constant Contact token",
            }
        )

    def _decide(self, user_code: str, state: str) -> None:
        wanted, now = normalize_user_code(user_code), self.now()
        with self._lock:
            device = self._devices.get(self._user_codes.get(wanted, ""))
            if device is None or device.state != "pending" or now >= device.expires_at:
                raise LookupError(f"no device authorization is waiting with the user code {user_code!r}")
            device.state = state

    def _purge(self, now: float) -> None:
        """Forget codes and device codes that expired long ago (call with the lock held)."""
        for code in [c for c, v in self._codes.items() if v.expires_at < now - STALE_AFTER]:
            del self._codes[code]
        for device_code in [c for c, d in self._devices.items() if d.expires_at < now - STALE_AFTER]:
            self._user_codes.pop(self._devices.pop(device_code).user_code, None)


def parse_scopes(scope: str | None) -> tuple[str, ...]:
    """Space-separated scopes, in order, without repeats; ``invalid_scope`` if empty or unknown."""
    scopes = tuple(dict.fromkeys((scope or "").split()))
    if not scopes:
        raise OAuthError("invalid_scope", f"scope is required: any of {', '.join(SCOPES)}.")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise OAuthError("invalid_scope", f"Unknown scope {unknown[0]!r}: the scopes are {', '.join(SCOPES)}.")
    return scopes


def _scope_argument(scope: str | Iterable[str]) -> tuple[str, ...]:
    try:
        return parse_scopes(scope if isinstance(scope, str) else " ".join(scope))
    except OAuthError as error:
        raise ValueError(error.description) from None


def s256(verifier: str) -> str:
    """The PKCE S256 code challenge of ``verifier``."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def number(value: float) -> int | float:
    """An int when whole (JSON ``5``, not ``5.0``)."""
    return int(value) if float(value).is_integer() else float(value)


def normalize_user_code(user_code: str) -> str:
    """``wdjb mjht`` and ``WDJBMJHT`` -> ``WDJB-MJHT``."""
    letters = "".join(ch for ch in user_code.upper() if ch.isalnum())
    return f"{letters[:4]}-{letters[4:]}" if len(letters) == 8 else user_code.strip().upper()


def _user_code() -> str:
    letters = "".join(secrets.choice(USER_CODE_LETTERS) for _ in range(8))
    return f"{letters[:4]}-{letters[4:]}"


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise OAuthError("invalid_request", f"{name} is required.")
    return value


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(client_id, secret) from ``Authorization: Basic``; None without one; ``invalid_client`` if malformed."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, colon, secret = b64decode_text(value.strip()).partition(":")
    except ValueError:
        client_id, colon, secret = "", "", ""
    if not colon or not client_id:
        raise OAuthError("invalid_client", "Malformed HTTP Basic credentials.", 401)
    return client_id, secret


def b64decode_text(value: str) -> str:
    """Standard base64 to UTF-8 text; ValueError if it is not."""
    try:
        return base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error) as exc:
        raise ValueError("not base64 text") from exc


def _claimed_client_id(form: dict[str, str], authorization: str | None) -> str | None:
    """Who the request says it is (before authentication): the Basic user name, else the body's client_id."""
    try:
        basic = _basic_credentials(authorization)
    except OAuthError:
        basic = None
    return basic[0] if basic is not None else form.get("client_id")
