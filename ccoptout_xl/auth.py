"""Where access tokens come from, and how a stored sign-in stays valid.

The HTTP client asks a *token provider* for the current access token and tells it when the API answered 401.
Providers: :class:`StaticToken` (``CCOPTOUT_ACCESS_TOKEN``, or the sandbox's) and :class:`SignedInTokens` (the
tokens ``ccoptout-xl login`` stored, refreshed when needed).

Refresh tokens rotate (each is single use), and Excel, its worksheet functions and scheduled command-line runs
may all need a refresh at the same moment. So refreshing happens under a cross-process file lock: the first
process refreshes and stores the new refresh token durably before anyone uses the new access token; the others
wait, read the stored result and reuse it. The token endpoint is called at most once a second.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

from filelock import FileLock, Timeout

from .config import OAuthApp
from .credentials import SIGN_IN_AGAIN, TokenKeeper, Tokens, is_token, token_keeper
from .exceptions import AuthError, ConfigError, SignInRequired
from .retry import Clock, Sleep, spacing
from .settings import TOKEN_ENV, config_dir, env

log = logging.getLogger(__name__)
REFRESH_MARGIN = dt.timedelta(minutes=5)
LOCK_TIMEOUT = 120.0  # seconds to wait for another process's refresh


class StaticToken:
    """A fixed access token: it cannot be refreshed, so a 401 is final."""

    def __init__(self, token: str, source: str = TOKEN_ENV) -> None:
        token = token.strip()
        if not token:
            raise ConfigError(f"{source} is empty: set it to a Constant Contact access token.")
        if not is_token(token):
            raise ConfigError(
                f"{source} is not an access token: it has a line break, a space or other characters a token "
                "cannot have (a token pasted across two lines?). Set it again, on one line."
            )
        self._token = token

    def access_token(self) -> str:
        return self._token

    def token_rejected(self, token: str) -> bool:
        return False

    def __repr__(self) -> str:  # never show the token itself
        return "StaticToken(<hidden>)"


class SignedInTokens:
    """The stored sign-in of ``app``, refreshed ahead of expiry (from the JWT's ``exp``) and once on a 401."""

    def __init__(
        self,
        app: OAuthApp,
        keeper: TokenKeeper,
        *,
        lock_path: Path | None = None,
        margin: dt.timedelta = REFRESH_MARGIN,
        timeout: float = 30.0,
        sleep: Sleep = time.sleep,
        clock: Clock = time.time,
    ) -> None:
        self.app = app
        self.keeper = keeper
        self._sleep = sleep  # waits for the token endpoint's pace (tests pass their own, with ``clock``)
        self._clock = clock  # the wall clock: the last call's time is shared with other processes
        folder = config_dir()
        self.lock_path = lock_path or folder / "refresh.lock"
        self._last_call_path = self.lock_path.with_name("token-endpoint.last")
        self.margin = margin
        self.timeout = timeout
        self._current: Tokens | None = None  # what this process last read or renewed

    def __repr__(self) -> str:
        return f"SignedInTokens(client_id={self.app.client_id!r}, keeper={self.keeper.where!r})"

    def access_token(self) -> str:
        tokens = self._current if self._current and not self._current.expires_within(self.margin) else None
        tokens = tokens or self._stored()
        if not tokens.expires_within(self.margin):
            self._current = tokens
            return tokens.access_token
        return self.refresh(stale=tokens.access_token)

    def token_rejected(self, token: str) -> bool:
        return self.refresh(stale=token) != token

    def refresh(self, stale: str | None = None) -> str:
        """A fresh access token, refreshing only if the stored one is still ``stale`` (or about to expire)."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            with FileLock(self.lock_path, timeout=LOCK_TIMEOUT):
                tokens = self._stored()  # another process may have refreshed while we waited
                if tokens.access_token != stale and not tokens.expires_within(self.margin):
                    self._current = tokens  # retry with the renewed token, not the one the API rejected
                    return tokens.access_token
                if not tokens.refresh_token:
                    raise SignInRequired("The sign-in has expired and cannot be renewed; " + SIGN_IN_AGAIN + ".")
                fresh = self._call_token_endpoint(tokens.refresh_token)
                self._current = fresh
                try:
                    self.keeper.save(fresh)  # durably, before the new access token is used anywhere
                except Exception as exc:  # the old refresh token is already dead: keep working on this one
                    log.warning(
                        "The renewed sign-in could not be saved in %s (%s); it works for this run only. "
                        "Sign in again with `ccoptout-xl login` afterwards.",
                        self.keeper.where,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    )
                else:
                    log.info("access token refreshed; it expires at %s", fresh.expires_at)
                return fresh.access_token
        except Timeout:
            raise AuthError(
                f"Waited {LOCK_TIMEOUT:.0f} s for another ccoptout-xl process to renew the sign-in; try again."
            ) from None

    def note_token_call(self) -> None:
        """Note that the token endpoint was just called (a sign-in did), so that a renewal keeps its distance."""
        self._record_call()

    def _stored(self) -> Tokens:
        tokens = self.keeper.load()
        if tokens is None:
            raise SignInRequired(f"Not signed in ({self.keeper.where} holds no sign-in); " + SIGN_IN_AGAIN + ".")
        return tokens

    def _call_token_endpoint(self, refresh_token: str) -> Tokens:
        from authlib.integrations.base_client.errors import OAuthError

        from .signin import TOKEN_ENDPOINT_INTERVAL, oauth_session, reaching, sign_in_error, within_rate_limit

        self._keep_to_one_call_a_second(TOKEN_ENDPOINT_INTERVAL)
        session = oauth_session(self.app, timeout=self.timeout, ask_scopes=False)
        try:
            with reaching(self.app):
                body = within_rate_limit(
                    lambda: session.refresh_token(self.app.token_url, refresh_token=refresh_token), sleep=self._sleep
                )
        except OAuthError as exc:
            if exc.error == "invalid_grant":
                self.keeper.clear()  # it can never work again: don't let every later run fail the same way
                raise SignInRequired(
                    "Constant Contact no longer accepts the stored sign-in (it was revoked, expired after 180 "
                    f"days unused, or used elsewhere); the stored tokens were removed; {SIGN_IN_AGAIN}."
                ) from None
            raise sign_in_error(exc) from None
        finally:
            self._record_call()
        return Tokens.from_response(body, previous_refresh=refresh_token)

    def _keep_to_one_call_a_second(self, interval: float) -> None:
        """Wait until ``interval`` (a second) has passed since any process's last token-endpoint call (read under the
        lock)."""
        try:
            last = float(self._last_call_path.read_text(encoding="ascii"))
        except (OSError, ValueError):
            return
        wait = spacing(last, self._clock(), interval)
        if wait:
            self._sleep(wait)

    def _record_call(self) -> None:
        try:
            self._last_call_path.write_text(f"{self._clock():.3f}", encoding="ascii")
        except OSError as exc:
            log.debug("could not record the token endpoint call: %s", exc)


def default_token_provider() -> StaticToken | SignedInTokens:
    """``CCOPTOUT_ACCESS_TOKEN`` if set, else the stored sign-in; an :class:`AuthError` saying how otherwise."""
    token = env(TOKEN_ENV) or ""
    if token.strip():
        return StaticToken(token)
    app = OAuthApp.load_optional()
    if app is None:
        raise SignInRequired(
            f"Not signed in: run `ccoptout-xl login` (see the README, 'Signing in'), set {TOKEN_ENV}, "
            "or try the built-in sandbox with --demo."
        )
    return SignedInTokens(app, token_keeper(app.client_id))
