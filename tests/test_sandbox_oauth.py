"""The sandbox's authorization server over real HTTP on 127.0.0.1: device flow, authorization code with PKCE,
refresh (rotating and long-lived), revocation, the token endpoint's rate limit, and the API's token checks."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from ccoptout_xl.sandbox import AccountSpec, Fault, Sandbox

from .contract import validate

SPEC = AccountSpec(contacts=60, seed=3, anchor=dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc))
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ALL = "contact_data offline_access account_read"
REDIRECT = "http://127.0.0.1:8765/callback"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    """A sandbox whose token endpoint is not rate limited (one test turns the limit back on)."""
    with Sandbox(SPEC, rate_limit=None, daily_quota=None) as sandbox:
        sandbox.oauth.token_rate_limit = None
        sandbox.oauth.device_interval = 0.05
        yield sandbox


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def post(sb: Sandbox, endpoint: str, auth: tuple[str, str] | None = None, **form: str) -> requests.Response:
    return requests.post(f"{sb.auth_url}{endpoint}", data=form, auth=auth, timeout=10)


def token(sb: Sandbox, auth: tuple[str, str] | None = None, **form: str) -> requests.Response:
    return post(sb, "/token", auth, **form)


def oauth_error(response: requests.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error_description"]
    return body["error"]


def api(sb: Sandbox, access_token: str, path: str = "/contacts/counts") -> requests.Response:
    return requests.get(sb.base_url + path, headers={"Authorization": f"Bearer {access_token}"}, timeout=10)


def authorize(sb: Sandbox, decision: str | None = "approve", **params: str) -> requests.Response:
    query = {"response_type": "code", "client_id": sb.oauth.client_id, "redirect_uri": REDIRECT, "scope": ALL}
    query.update(params)
    if decision is not None:
        query["sandbox_decision"] = decision
    return requests.get(f"{sb.auth_url}/authorize", params=query, allow_redirects=False, timeout=10)


def redirected(response: requests.Response, redirect_uri: str = REDIRECT) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(redirect_uri) and location[len(redirect_uri)] in "?&"
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def code_for(sb: Sandbox, challenge: str | None, **params: str) -> str:
    if challenge is not None:
        params = {"code_challenge": challenge, "code_challenge_method": "S256", **params}
    return redirected(authorize(sb, **params), params.get("redirect_uri", REDIRECT))["code"]


def claims_of(access_token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = access_token.split(".")
    return json.loads(unb64url(header)), json.loads(unb64url(payload))


# --- device flow -------------------------------------------------------------------------------------------


def test_device_flow_pending_slow_down_approved_then_single_use(sb: Sandbox) -> None:
    start = post(sb, "/device/authorize", client_id=sb.oauth.client_id, scope=ALL)
    assert start.status_code == 200 and start.headers["Cache-Control"] == "no-store"
    grant = start.json()
    assert set(grant) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    assert re.fullmatch(r"[B-DF-HJ-NP-TV-XZ]{4}-[B-DF-HJ-NP-TV-XZ]{4}", grant["user_code"])
    assert grant["verification_uri"] == f"{sb.auth_url}/device"
    assert grant["verification_uri_complete"] == f"{sb.auth_url}/device?user_code={grant['user_code']}"
    assert grant["expires_in"] == 600 and grant["interval"] == 0.05
    poll = {"grant_type": DEVICE_GRANT, "device_code": grant["device_code"], "client_id": sb.oauth.client_id}

    assert oauth_error(token(sb, **poll)) == "authorization_pending"
    assert oauth_error(token(sb, **poll)) == "slow_down"  # sooner than the interval
    time.sleep(0.06)
    assert oauth_error(token(sb, **poll)) == "authorization_pending"
    assert sb.oauth.pending_user_codes() == [grant["user_code"]]

    page = requests.get(grant["verification_uri_complete"], timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "sandbox" in page.text and "/device/approve" in page.text and grant["user_code"] in page.text
    assert requests.get(grant["verification_uri"], timeout=10).status_code == 200  # the form to type the code in
    approved = post(sb, "/device/approve", user_code=grant["user_code"].lower().replace("-", ""))
    assert approved.json() == {"user_code": grant["user_code"], "status": "approved"}
    time.sleep(0.06)
    tokens = token(sb, **poll)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 86_400 and body["scope"] == ALL
    assert body["refresh_token"] and api(sb, body["access_token"]).status_code == 200
    assert oauth_error(token(sb, **poll)) == "invalid_grant"  # a device code gives tokens once

    assert [(r.grant_type, r.client_id, r.status, r.error) for r in sb.oauth.token_requests] == [
        (DEVICE_GRANT, sb.oauth.client_id, 400, "authorization_pending"),
        (DEVICE_GRANT, sb.oauth.client_id, 400, "slow_down"),
        (DEVICE_GRANT, sb.oauth.client_id, 400, "authorization_pending"),
        (DEVICE_GRANT, sb.oauth.client_id, 200, None),
        (DEVICE_GRANT, sb.oauth.client_id, 400, "invalid_grant"),
    ]


def test_device_flow_denied_expired_and_auto_approved(sb: Sandbox) -> None:
    def start(scope: str = ALL) -> dict[str, Any]:
        return post(sb, "/device/authorize", client_id=sb.oauth.client_id, scope=scope).json()

    def poll(grant: dict[str, Any]) -> requests.Response:
        return token(sb, grant_type=DEVICE_GRANT, device_code=grant["device_code"], client_id=sb.oauth.client_id)

    denied = start()
    sb.oauth.deny(denied["user_code"])
    assert oauth_error(poll(denied)) == "access_denied"
    with pytest.raises(LookupError):
        sb.oauth.approve(denied["user_code"])  # decided already
    by_form = start()
    assert post(sb, "/device/deny", user_code=by_form["user_code"]).json()["status"] == "denied"
    assert oauth_error(poll(by_form)) == "access_denied"

    sb.oauth.device_expires_in = 0.2
    late = start()
    assert late["expires_in"] == 0.2
    time.sleep(0.25)
    with pytest.raises(LookupError):
        sb.oauth.approve(late["user_code"])
    assert oauth_error(post(sb, "/device/approve", user_code=late["user_code"])) == "invalid_request"
    assert oauth_error(poll(late)) == "expired_token"
    assert oauth_error(requests.get(late["verification_uri_complete"], timeout=10)) == "invalid_request"

    sb.oauth.device_expires_in, sb.oauth.device_interval, sb.oauth.auto_approve = 600, 5, True
    at_once = start("contact_data")
    assert at_once["interval"] == 5 and isinstance(at_once["interval"], int)
    body = poll(at_once).json()
    assert body["scope"] == "contact_data" and "refresh_token" not in body  # no offline_access, no refresh token


def test_device_authorization_errors(sb: Sandbox) -> None:
    assert oauth_error(post(sb, "/device/authorize", client_id="nobody", scope=ALL), 401) == "invalid_client"
    assert oauth_error(post(sb, "/device/authorize", scope=ALL), 401) == "invalid_client"
    assert oauth_error(post(sb, "/device/authorize", client_id=sb.oauth.client_id)) == "invalid_scope"
    bad_scope = post(sb, "/device/authorize", client_id=sb.oauth.client_id, scope="contact_data admin")
    assert oauth_error(bad_scope) == "invalid_scope"
    wrong_method = requests.get(f"{sb.auth_url}/device/authorize", timeout=10)
    assert oauth_error(wrong_method, 405) == "invalid_request"
    assert oauth_error(requests.get(f"{sb.auth_url}/nothing", timeout=10), 404) == "not_found"
    with pytest.raises(LookupError):
        sb.oauth.approve("BCDF-GHJK")


# --- authorization code with PKCE --------------------------------------------------------------------------


def test_authorization_code_with_pkce_through_the_sign_in_page(sb: Sandbox) -> None:
    verifier, challenge = pkce()
    page = authorize(sb, None, state="xyz", code_challenge=challenge, code_challenge_method="S256")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "sandbox" in page.text.lower()
    links = [html.unescape(href) for href in re.findall(r'href="([^"]+)"', page.text)]
    approve = next(link for link in links if "sandbox_decision=approve" in link)
    assert any("sandbox_decision=deny" in link for link in links)
    origin = sb.auth_url.split("/oauth2/")[0]
    answer = redirected(requests.get(origin + approve, allow_redirects=False, timeout=10))
    assert answer["state"] == "xyz"

    form = {"grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT}
    tokens = token(sb, **form, code_verifier=verifier, client_id=sb.oauth.client_id)
    assert tokens.status_code == 200, tokens.text
    assert tokens.headers["Cache-Control"] == "no-store"
    body = tokens.json()
    assert set(body) == {"token_type", "expires_in", "access_token", "scope", "refresh_token"}
    assert api(sb, body["access_token"]).status_code == 200
    again = token(sb, **form, code_verifier=verifier, client_id=sb.oauth.client_id)
    assert oauth_error(again) == "invalid_grant"  # single use


def test_pkce_and_redirect_checks(sb: Sandbox) -> None:
    verifier, challenge = pkce()
    client = {"client_id": sb.oauth.client_id}

    def exchange(code: str, **form: str) -> requests.Response:
        return token(sb, grant_type="authorization_code", code=code, **{"redirect_uri": REDIRECT, **client, **form})

    spent = code_for(sb, challenge)
    assert oauth_error(exchange(spent, code_verifier=pkce()[0])) == "invalid_grant"
    assert oauth_error(exchange(spent, code_verifier=verifier)) == "invalid_grant"  # spent by the failed try
    assert oauth_error(exchange(code_for(sb, challenge))) == "invalid_grant"  # no verifier
    wrong_uri = exchange(code_for(sb, challenge), code_verifier=verifier, redirect_uri="http://127.0.0.1:9999/callback")
    assert oauth_error(wrong_uri) == "invalid_grant"
    assert oauth_error(exchange("made-up", code_verifier=verifier)) == "invalid_grant"
    other_port = "http://localhost:50123/callback"  # any loopback port
    code = code_for(sb, challenge, redirect_uri=other_port)
    assert exchange(code, code_verifier=verifier, redirect_uri=other_port).status_code == 200
    with_query = "http://127.0.0.1:7000/cb?app=1"
    sb.oauth.register_client("query-app", redirect_uris=[with_query])
    answer = redirected(
        authorize(
            sb, client_id="query-app", redirect_uri=with_query, code_challenge=challenge, code_challenge_method="S256"
        ),
        with_query,
    )
    assert answer["app"] == "1" and answer["code"]
    assert oauth_error(authorize(sb, client_id="query-app", redirect_uri=REDIRECT, code_challenge=challenge)) == (
        "invalid_request"  # explicit redirect URIs replace the loopback rule
    )

    sb.oauth.code_lifetime = 0.1
    late = code_for(sb, challenge)
    time.sleep(0.15)
    assert oauth_error(exchange(late, code_verifier=verifier)) == "invalid_grant"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"redirect_uri": "http://127.0.0.1:8765/elsewhere"}, "invalid_request"),
        ({"redirect_uri": "https://evil.example/callback"}, "invalid_request"),
        ({"client_id": "nobody"}, "invalid_client"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "everything"}, "invalid_scope"),
        ({"sandbox_decision": "maybe"}, "invalid_request"),
    ],
)
def test_bad_authorization_requests_are_400_without_a_redirect(
    sb: Sandbox, params: dict[str, str | None], error: str
) -> None:
    query = {"code_challenge": pkce()[1], "code_challenge_method": "S256", **params}
    response = authorize(sb, None, **{k: v for k, v in query.items() if v is not None})
    assert "Location" not in response.headers
    assert oauth_error(response) == error


def test_denied_authorization_redirects_with_access_denied(sb: Sandbox) -> None:
    response = authorize(sb, "deny", state="s1", code_challenge=pkce()[1], code_challenge_method="S256")
    assert redirected(response) == {
        "error": "access_denied",
        "error_description": "The user denied the authorization request.",
        "state": "s1",
    }
    sb.oauth.auto_approve = True
    assert "code" in redirected(authorize(sb, None, code_challenge=pkce()[1], code_challenge_method="S256"))


def test_confidential_client_needs_basic_auth(sb: Sandbox) -> None:
    uri = "https://app.example/oauth/cb"
    sb.oauth.register_client("confidential-app", secret="s3cret", redirect_uris=[uri])
    form = {"grant_type": "authorization_code", "redirect_uri": uri}
    code = code_for(sb, None, client_id="confidential-app", redirect_uri=uri)  # PKCE optional when confidential

    unauthenticated = token(sb, **form, code=code, client_id="confidential-app")
    assert oauth_error(unauthenticated, 401) == "invalid_client"
    assert unauthenticated.headers["WWW-Authenticate"].startswith("Basic")
    assert oauth_error(token(sb, ("confidential-app", "wrong"), **form, code=code), 401) == "invalid_client"
    assert oauth_error(token(sb, **form, code=code, client_id="confidential-app", client_secret="wrong"), 401) == (
        "invalid_client"
    )
    ok = token(sb, ("confidential-app", "s3cret"), **form, code=code)  # the code survived failed client auth
    assert ok.status_code == 200, ok.text
    assert claims_of(ok.json()["access_token"])[1]["cid"] == "confidential-app"

    verifier, challenge = pkce()
    code = code_for(sb, challenge, client_id="confidential-app", redirect_uri=uri)
    assert token(sb, ("confidential-app", "s3cret"), **form, code=code, code_verifier=verifier).status_code == 200
    assert oauth_error(authorize(sb, client_id="confidential-app")) == "invalid_request"  # the default redirect URI
    # A public client has no secret; Basic with an empty secret identifies it.
    refresh = sb.oauth.issue()["refresh_token"]
    assert oauth_error(token(sb, (sb.oauth.client_id, "x"), grant_type="refresh_token", refresh_token=refresh), 401)
    assert token(sb, (sb.oauth.client_id, ""), grant_type="refresh_token", refresh_token=refresh).status_code == 200


def test_other_token_endpoint_errors(sb: Sandbox) -> None:
    client = sb.oauth.client_id
    assert oauth_error(token(sb, grant_type="password", client_id=client)) == "unsupported_grant_type"
    assert oauth_error(token(sb, grant_type="client_credentials", client_id=client)) == "unsupported_grant_type"
    assert oauth_error(token(sb, client_id=client)) == "invalid_request"
    assert oauth_error(token(sb, grant_type="refresh_token", client_id=client)) == "invalid_request"
    assert oauth_error(token(sb, grant_type="refresh_token", refresh_token="x"), 401) == "invalid_client"
    assert oauth_error(token(sb, grant_type="refresh_token", refresh_token="x", client_id="nobody"), 401) == (
        "invalid_client"
    )
    basic = requests.post(sb.auth_url + "/token", headers={"Authorization": "Basic !!!"}, timeout=10)
    assert oauth_error(basic, 401) == "invalid_client"
    assert oauth_error(requests.get(sb.auth_url + "/token", timeout=10), 405) == "invalid_request"


# --- refresh, revocation, rate limit -----------------------------------------------------------------------


def test_rotating_refresh_tokens_are_single_use(sb: Sandbox) -> None:
    first = sb.oauth.issue()
    form = {"grant_type": "refresh_token", "client_id": sb.oauth.client_id}
    second = token(sb, **form, refresh_token=first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    assert second["scope"] == ALL and api(sb, second["access_token"]).status_code == 200
    assert oauth_error(token(sb, **form, refresh_token=first["refresh_token"])) == "invalid_grant"
    third = token(sb, **form, refresh_token=second["refresh_token"], scope="contact_data")
    assert third.status_code == 200 and third.json()["scope"] == "contact_data"
    assert claims_of(third.json()["access_token"])[1]["scp"] == ["contact_data"]
    newest = third.json()["refresh_token"]
    assert oauth_error(token(sb, **form, refresh_token=newest, scope="contact_data admin")) == "invalid_scope"
    sb.oauth.register_client("another-app")
    assert oauth_error(token(sb, grant_type="refresh_token", client_id="another-app", refresh_token=newest)) == (
        "invalid_grant"
    )

    # Eight refreshes of one rotating token at the same moment: exactly one wins.
    shared = sb.oauth.issue()["refresh_token"]
    barrier, statuses = threading.Barrier(8), []

    def race() -> None:
        barrier.wait(5)
        statuses.append(token(sb, **form, refresh_token=shared).status_code)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(statuses) == [200] + [400] * 7


def test_long_lived_refresh_tokens_and_idle_expiry(sb: Sandbox) -> None:
    sb.oauth.rotating = False
    refresh = sb.oauth.issue()["refresh_token"]
    form = {"grant_type": "refresh_token", "client_id": sb.oauth.client_id, "refresh_token": refresh}
    for _ in range(3):
        body = token(sb, **form).json()
        assert body["refresh_token"] == refresh and api(sb, body["access_token"]).status_code == 200
    sb.oauth.clock_offset = 181 * 86_400  # unused for more than 180 days
    assert oauth_error(token(sb, **form)) == "invalid_grant"


def test_revoked_refresh_tokens_are_invalid_grant(sb: Sandbox) -> None:
    issued = [sb.oauth.issue() for _ in range(3)]
    assert sb.oauth.revoke_refresh_tokens() == 3
    for tokens in issued:
        response = token(
            sb, grant_type="refresh_token", client_id=sb.oauth.client_id, refresh_token=tokens["refresh_token"]
        )
        assert oauth_error(response) == "invalid_grant"
        assert api(sb, tokens["access_token"]).status_code == 200  # access tokens live on until they expire
    assert sb.oauth.revoke_refresh_tokens() == 0


def test_token_endpoint_allows_one_request_per_second_per_client(sb: Sandbox) -> None:
    sb.oauth.token_rate_limit = 1
    sb.oauth.register_client("another-app")
    refresh = sb.oauth.issue()["refresh_token"]
    started = time.monotonic()
    first = token(sb, grant_type="refresh_token", client_id=sb.oauth.client_id, refresh_token=refresh)
    second = token(
        sb, grant_type="refresh_token", client_id=sb.oauth.client_id, refresh_token=first.json()["refresh_token"]
    )
    other = token(sb, grant_type="password", client_id="another-app")
    if time.monotonic() - started > 0.9:
        pytest.skip("the requests took too long on this machine to fall in one second")
    assert first.status_code == 200
    assert oauth_error(second, 429) == "too_many_requests" and second.headers["Retry-After"] == "1"
    assert oauth_error(other) == "unsupported_grant_type"  # another client has its own window
    time.sleep(max(0.0, started + 1.05 - time.monotonic()))
    # The throttled request changed nothing: the rotated refresh token is still good.
    third = token(
        sb, grant_type="refresh_token", client_id=sb.oauth.client_id, refresh_token=first.json()["refresh_token"]
    )
    assert third.status_code == 200, third.text
    assert [(r.client_id, r.status) for r in sb.oauth.token_requests] == [
        (sb.oauth.client_id, 200),
        (sb.oauth.client_id, 429),
        ("another-app", 400),
        (sb.oauth.client_id, 200),
    ]
    assert all(r.at >= time.time() - 60 and r.grant_type for r in sb.oauth.token_requests)


def test_oauth_requests_are_logged_without_secrets_and_do_not_shift_fault_numbers(sb: Sandbox) -> None:
    sb.faults.add(Fault(kind="500", at_request=2, path_prefix=None))
    issued = sb.oauth.issue()
    assert api(sb, sb.token).status_code == 200
    refreshed = token(
        sb, grant_type="refresh_token", client_id=sb.oauth.client_id, refresh_token=issued["refresh_token"]
    )
    assert refreshed.status_code == 200
    assert api(sb, sb.token).status_code == 500  # the second API request, whatever came between
    assert [(r.method, r.path, r.status) for r in sb.requests] == [
        ("GET", "/v3/contacts/counts", 200),
        ("POST", "/oauth2/default/v1/token", 200),
        ("GET", "/v3/contacts/counts", 500),
    ]
    logged = repr(list(sb.requests)) + repr(list(sb.oauth.token_requests))
    assert issued["refresh_token"] not in logged and refreshed.json()["refresh_token"] not in logged
    sb.reset_log()
    assert len(sb.requests) == 0 and len(sb.oauth.token_requests) == 0


# --- access tokens and the API -----------------------------------------------------------------------------


def test_access_tokens_are_signed_jwts_and_exp_follows_the_sandbox_clock(sb: Sandbox) -> None:
    access = sb.oauth.issue()["access_token"]
    assert 1_000 <= len(access) <= 1_200 and 1_000 <= len(sb.token) <= 1_200
    header, claims = claims_of(access)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": "sandbox"}
    assert {"ver", "jti", "iss", "aud", "iat", "exp", "cid", "uid", "scp", "sub", "platform_user_id"} <= set(claims)
    assert claims["aud"] == "https://api.cc.email/v3" and claims["iss"] == sb.oauth.issuer
    assert claims["cid"] == sb.oauth.client_id and claims["scp"] == ALL.split()
    assert claims["exp"] - claims["iat"] == 86_400 and abs(claims["iat"] - time.time()) < 5
    assert claims_of(sb.token)[1]["scp"] == ALL.split()

    sb.oauth.clock_offset = 25 * 3600
    shifted = claims_of(sb.oauth.issue()["access_token"])[1]
    assert abs(shifted["iat"] - (time.time() + 25 * 3600)) < 5
    sb.oauth.access_lifetime = 3600
    body = sb.oauth.issue()
    assert body["expires_in"] == 3600
    assert claims_of(body["access_token"])[1]["exp"] - claims_of(body["access_token"])[1]["iat"] == 3600


def test_the_api_refuses_expired_forged_and_foreign_tokens(sb: Sandbox) -> None:
    fresh = sb.oauth.issue()["access_token"]
    assert api(sb, fresh).status_code == 200 and api(sb, sb.token).status_code == 200

    header, payload, signature = fresh.split(".")
    claims = claims_of(fresh)[1]
    forged_payload = b64url(json.dumps({**claims, "exp": claims["exp"] + 10**6}).encode())
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    flipped = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    with Sandbox(SPEC, rate_limit=None, daily_quota=None) as other:
        foreign = other.oauth.issue()["access_token"]
    for bad in (
        f"{header}.{forged_payload}.{signature}",
        f"{none_header}.{payload}.",
        f"{header}.{payload}.{flipped}",
        foreign,
    ):
        refused = api(sb, bad)
        assert refused.status_code == 401
        assert refused.json() == {"error_key": "unauthorized", "error_message": "Unauthorized"}
        validate("AuthorizationErrorSchema", refused.json())

    sb.oauth.clock_offset = 25 * 3600  # every outstanding token has expired
    assert api(sb, fresh).status_code == 401 and api(sb, sb.token).status_code == 401
    assert api(sb, sb.oauth.issue()["access_token"]).status_code == 200  # issued by the same clock
    sb.oauth.clock_offset = 0
    assert api(sb, fresh).status_code == 200
    sb.oauth.access_lifetime = 60
    short = sb.oauth.issue()["access_token"]
    sb.oauth.clock_offset = 61
    assert api(sb, short).status_code == 401 and api(sb, fresh).status_code == 200


def test_scopes_decide_which_endpoints_a_token_reaches(sb: Sandbox) -> None:
    contacts_only = sb.oauth.access_token("contact_data")
    account_only = sb.oauth.access_token(["account_read"])
    for path in ("/contacts", "/contacts/counts", "/contact_lists"):
        assert api(sb, contacts_only, path).status_code == 200
        forbidden = api(sb, account_only, path)
        assert forbidden.status_code == 403
        validate("APIErrorSchema", forbidden.json())
        assert "contact_data" in forbidden.json()[0]["error_message"]
    assert api(sb, account_only, "/account/summary").status_code == 200
    forbidden = api(sb, contacts_only, "/account/summary")
    assert forbidden.status_code == 403 and "account_read" in forbidden.json()[0]["error_message"]
    assert api(sb, contacts_only, "/nothing").status_code == 404
    with pytest.raises(ValueError):
        sb.oauth.issue("contact_data admin")
    with pytest.raises(LookupError):
        sb.oauth.issue(client_id="nobody")


def test_rate_and_quota_are_per_app_not_per_token(sb: Sandbox) -> None:
    sb.daily_quota = 3
    tokens = [sb.token, sb.oauth.access_token(), sb.oauth.issue()["access_token"]]
    assert [api(sb, t).status_code for t in tokens] == [200, 200, 200]
    assert api(sb, sb.oauth.access_token()).json()["error_key"] == "quota_exceeded"
    assert sb.quota_used == 4
    sb.oauth.register_client("another-app")
    assert api(sb, sb.oauth.access_token(client_id="another-app")).status_code == 200


def test_an_explicit_token_is_accepted_as_is() -> None:
    with Sandbox(SPEC, rate_limit=None, daily_quota=None, token="static-token") as sb:
        assert sb.token == "static-token"
        sb.oauth.clock_offset = 10 * 86_400
        for path in ("/contacts/counts", "/account/summary"):
            assert api(sb, "static-token", path).status_code == 200
        assert api(sb, sb.oauth.access_token()).status_code == 200  # issued tokens work too
        assert api(sb, "static-tokenx").status_code == 401
        assert sb.quota_used == 2  # the explicit token is its own API key
