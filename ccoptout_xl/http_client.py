"""HTTP transport for the Constant Contact V3 API: one session, pacing, retries, error mapping.

Limits (``shared/cc-api/README.md``, "Limits and errors"): 4 requests per second and 10,000 per day per API key;
over them the API answers 429 with ``error_key`` ``throttled`` or ``quota_exceeded``. The client paces itself
under the per-second limit, backs off and retries on ``throttled``, stops at once on ``quota_exceeded`` (the quota
resets at 00:00 UTC), and retries 5xx answers and dropped connections a bounded number of times with
exponential backoff and jitter.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from .exceptions import ApiError, AuthError, BadRequest, ConfigError, MalformedResponse, QuotaExceeded
from .retry import RetryPolicy
from .settings import API_URL_ENV, DEFAULT_API_URL, RATE_ENV, env, number_setting, validate_base_url
from .text import duration, plural
from .version import __version__

log = logging.getLogger(__name__)

MAX_RENEWALS = 3  # of the access token within one request
POOL_SIZE = 16  # connections kept per host: more than the workers of a parallel read (query.MAX_WORKERS)
CROWDED_MARGIN = 0.03  # seconds added to the pacer's margin for a request sent while others are in flight
WIDER_MARGIN = 0.03  # seconds the pacer's margin grows by after each "too many requests"
MOST_MARGIN = 0.25  # seconds: the widest the margin grows


class Cancelled(Exception):
    """The caller stopped waiting for this request (another part of a parallel read failed); nothing was sent."""


class TokenProvider(Protocol):
    """Supplies bearer tokens to :class:`~ccoptout_xl.http_client.HTTPClient`."""

    def access_token(self) -> str:
        """Return a token to send now (refreshing first if the provider can and must)."""
        ...

    def token_rejected(self, token: str) -> bool:
        """The API answered 401 to ``token``. Return True if a new token is now available to retry with."""
        ...


@dataclass
class CallStats:
    """What a client has spent: HTTP calls (including retries), and what came back. Updated with :meth:`add`,
    which several threads may call at once."""

    calls: int = 0
    paced_seconds: float = 0.0  # time spent waiting to stay under the rate limit
    retries: int = 0
    throttled: int = 0
    pages: int = 0
    contacts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: float) -> None:
        """Add to the named counts, as one step: ``stats.add(pages=1, contacts=500)``."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class RequestPacer:
    """Keeps request starts under ``rate`` per second, sleeping only when the next start would break it.

    A sliding window of the last ``n`` start times: request ``i`` may start once request ``i - n`` started more
    than ``n / rate`` seconds (plus a small ``margin`` for clock and network jitter) ago. A request sent while
    others are in flight (``crowded``) keeps a wider margin: it leaves and arrives less evenly, its thread waiting
    its turn to send and the server its turn to take it. Each time the API still says "too many requests", the
    margin widens for good (up to :data:`MOST_MARGIN`). Thread-safe.
    """

    def __init__(
        self,
        rate: float | None,
        margin: float = 0.03,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ConfigError(f"The request rate must be positive, not {rate}.")
        self.rate = rate
        self._n = max(1, int(rate)) if rate else 0
        self._window = self._n / rate + margin if rate else 0.0
        self._starts: collections.deque[float] = collections.deque(maxlen=self._n or None)
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def wait(self, cancel: threading.Event | None = None, crowded: bool = False) -> float:
        """Block until a request may start; return how long it slept. Once ``cancel`` is set, return at once
        without taking a start (the caller then sends nothing)."""
        if not self.rate:
            return 0.0
        with self._lock:
            now = self._clock()
            slept = 0.0
            if len(self._starts) == self._n:
                ready_at = self._starts[0] + self._window + (CROWDED_MARGIN if crowded else 0.0)
                if ready_at > now:
                    slept = ready_at - now
                    if cancel is None:
                        self._sleep(slept)
                    elif cancel.wait(slept):
                        return slept
                    now = self._clock()
            if cancel is None or not cancel.is_set():
                self._starts.append(now)
            return slept

    def hold(self, seconds: float) -> None:
        """Push every future start back by at least ``seconds`` (after the API said we were too fast), and keep a
        wider margin from now on."""
        with self._lock:
            if self.rate:
                self._window = min(self._window + WIDER_MARGIN, self._n / self.rate + MOST_MARGIN)
            resume = self._clock() + seconds - self._window
            self._starts.extend([resume] * (self._n or 1))


def _pooled_session() -> requests.Session:
    """A session that keeps a connection for each worker of a parallel read (requests keeps 10 by default)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def next_quota_reset(now: dt.datetime | None = None) -> dt.datetime:
    """The next 00:00 UTC, when the daily request quota starts again."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)


class HTTPClient:
    """Sends GET requests to the V3 API and returns decoded JSON, within the API's limits.

    ``session`` is the seam for tests and proxies; ``tokens`` supplies the bearer token (see :mod:`.auth`).
    """

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        *,
        rate: float | None = 4.0,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = validate_base_url(base_url)
        self.tokens = tokens
        self.pacer = RequestPacer(rate)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.stats = CallStats()
        self._flying = 0  # requests sent and not yet answered (by all threads)
        self._flying_lock = threading.Lock()
        self.session = session or _pooled_session()
        if urlsplit(self.base_url).scheme == "http":
            # Loopback only (validated above), and it must stay so: a proxy from HTTP_PROXY would see the token.
            self.session.trust_env = False
        self.session.headers.update({"Accept": "application/json", "User-Agent": f"ccoptout-xl/{__version__}"})
        origin = urlsplit(self.base_url)
        self._origin = (origin.scheme, origin.netloc)

    @classmethod
    def from_environment(cls, tokens: TokenProvider, **kwargs: Any) -> HTTPClient:
        """A client for ``CCOPTOUT_API_URL`` (default the real API), paced at ``CCOPTOUT_RATE_LIMIT`` per second."""
        if "rate" not in kwargs:
            kwargs["rate"] = number_setting(RATE_ENV, float, 4.0, 0.1, 4.0, "a number of requests per second")
        return cls(env(API_URL_ENV) or DEFAULT_API_URL, tokens, **kwargs)

    def close(self) -> None:
        self.session.close()

    def url(self, path_or_href: str) -> str:
        """An absolute URL for an API path (``contacts``) or a ``_links`` href (``/v3/contacts?cursor=..``).

        Hrefs are followed verbatim, resolved against the API's origin; one pointing at another origin is
        refused so the token never leaves for a host we were not configured for.
        """
        if path_or_href.startswith(("/", "http://", "https://")):
            url = urljoin(self.base_url + "/", path_or_href)
        else:
            url = f"{self.base_url}/{path_or_href}"
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) != self._origin:
            raise MalformedResponse(f"The API sent a link to another host ({parts.netloc}); not following it.")
        return url

    def get(
        self, path_or_href: str, params: Mapping[str, Any] | None = None, *, cancel: threading.Event | None = None
    ) -> Any:
        """GET and decode JSON, retrying what is worth retrying. Raises an :class:`ApiError` subclass, or
        :class:`Cancelled` when ``cancel`` is set before a try is sent. Several threads may call it at once."""
        url = self.url(path_or_href)
        failures = throttles = 0
        rejected: set[str] = set()  # tokens the API refused on this request: each gets one renewal
        while True:
            self.stats.add(paced_seconds=self.pacer.wait(cancel, crowded=self._flying > 0))
            if cancel is not None and cancel.is_set():
                raise Cancelled
            token = self.tokens.access_token()
            self.stats.add(calls=1)
            try:
                with self._in_flight():
                    response = self.session.get(
                        url, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=self.timeout
                    )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                failures += 1
                reason = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
                self._retry_or_raise(failures, f"Could not reach the API at {self._origin[1]} ({reason})")
                continue
            except requests.RequestException as exc:
                # Never str(exc): the HTTP library's messages may quote the request's headers, token included.
                raise ApiError(
                    f"The request to the API at {self._origin[1]} could not be made ({type(exc).__name__}); "
                    "check CCOPTOUT_API_URL and try again."
                ) from None

            status = response.status_code
            if 200 <= status < 300:
                return self._decode(response)
            key, message = error_details(response)
            # The token now stored may be one another process renewed and the API has since refused too (tokens
            # invalidated twice): every token refused gets its one renewal, a bounded number of times.
            if status == 401 and token not in rejected and len(rejected) < MAX_RENEWALS:
                rejected.add(token)
                if self.tokens.token_rejected(token):
                    continue
            if status in (401, 403):
                raise AuthError(auth_message(status, message), status=status, error_key=key)
            if status == 429 and key == "quota_exceeded":
                raise self._quota_exceeded()
            if status == 429:
                throttles += 1
                self.stats.add(throttled=1)
                # The limit is per second: wait out the window, plus a growing, jittered backoff.
                delay = self.retry.after_throttle(throttles)
                if delay is None:
                    raise ApiError(
                        f"The API kept answering 'too many requests' after {throttles} tries; try again later.",
                        status=429,
                        error_key=key,
                    )
                log.info("throttled by the API; waiting %.1f s", delay)
                self.pacer.hold(delay)  # other threads sharing this client wait too
                self.stats.add(retries=1)
                self.retry.sleep(delay)
                continue
            if status >= 500:
                failures += 1
                self._retry_or_raise(failures, f"The API answered HTTP {status} ({message})")
                continue
            error = BadRequest if status == 400 else ApiError
            raise error(f"The API rejected the request (HTTP {status}): {message}", status=status, error_key=key)

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Count a request as in flight while it is sent and answered (the pacer spaces crowded ones wider)."""
        with self._flying_lock:
            self._flying += 1
        try:
            yield
        finally:
            with self._flying_lock:
                self._flying -= 1

    def _retry_or_raise(self, failures: int, problem: str) -> None:
        delay = self.retry.after_failure(failures)
        if delay is None:
            raise ApiError(f"{problem}; gave up after {failures} tries. Check the connection and try again.")
        log.info("%s; retrying in %.1f s", problem, delay)
        self.stats.add(retries=1)
        self.retry.sleep(delay)

    def _decode(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise MalformedResponse(
                f"The API sent a response that is not valid JSON (HTTP {response.status_code}, "
                f"{len(response.content)} bytes); try again, and report it if it persists."
            ) from None

    def _quota_exceeded(self) -> QuotaExceeded:
        reset = next_quota_reset()
        left = reset - dt.datetime.now(dt.timezone.utc)
        return QuotaExceeded(
            "Constant Contact's daily request quota is used up; it resets at 00:00 UTC "
            f"({reset:%Y-%m-%d %H:%M} UTC, in {duration(left)}). Fetched before stopping: "
            f"{plural(self.stats.contacts, 'contact')} in {plural(self.stats.pages, 'page')}.",
            reset_at=reset,
        )


def error_details(response: requests.Response) -> tuple[str | None, str]:
    """``(error_key, message)`` from any of the API's three error shapes, or the HTTP reason."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, list) and body and all(isinstance(item, dict) for item in body):
        keys = [str(item.get("error_key")) for item in body if item.get("error_key")]
        messages = [str(item.get("error_message", "")) for item in body]
        return (keys[0] if keys else None), "; ".join(m for m in messages if m) or response.reason
    if isinstance(body, dict):
        if "error_key" in body or "error_message" in body:
            return body.get("error_key"), str(body.get("error_message") or response.reason)
        if "error" in body:  # OAuth shape
            return str(body["error"]), str(body.get("error_description") or body["error"])
    return None, response.reason or f"HTTP {response.status_code}"


def auth_message(status: int, message: str) -> str:
    if status == 403:
        return (
            f"The API refused access (HTTP 403: {message}): the sign-in lacks the contact_data or account_read "
            "permission, or the app is deactivated."
        )
    return f"The API did not accept the access token (HTTP 401: {message}): sign in again or set a fresh token."
