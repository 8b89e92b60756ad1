"""Every setting ccoptout-xl reads from the environment, the folders it keeps things in, and the checks of the
addresses it is given.

A leaf module: it imports nothing of the package but the errors and text helpers. Every ``CCOPTOUT_*`` variable is
named here (:data:`VARIABLES`) and read through :func:`env`, where an empty value counts as unset, so that a test can
reset them all in one place.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import platformdirs
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from .exceptions import ConfigError
from .text import quoted

APP_NAME = "ccoptout-xl"
DEFAULT_API_URL = "https://api.cc.email/v3"

API_URL_ENV = "CCOPTOUT_API_URL"
TOKEN_ENV = "CCOPTOUT_ACCESS_TOKEN"  # noqa: S105 - a variable's name, not a secret
CLIENT_ID_ENV = "CCOPTOUT_CLIENT_ID"
CLIENT_SECRET_ENV = "CCOPTOUT_CLIENT_SECRET"  # noqa: S105
AUTH_URL_ENV = "CCOPTOUT_AUTH_URL"
REDIRECT_URI_ENV = "CCOPTOUT_REDIRECT_URI"
CONFIG_DIR_ENV = "CCOPTOUT_CONFIG_DIR"
TOKEN_STORE_ENV = "CCOPTOUT_TOKEN_STORE"  # noqa: S105
CACHE_DIR_ENV = "CCOPTOUT_CACHE_DIR"
QUOTA_ENV = "CCOPTOUT_DAILY_QUOTA"
SHARE_ENV = "CCOPTOUT_QUOTA_SHARE"
RATE_ENV = "CCOPTOUT_RATE_LIMIT"
FULL_SYNC_ENV = "CCOPTOUT_FULL_SYNC_DAYS"
SANDBOX_CACHE_ENV = "CCOPTOUT_SANDBOX_CACHE"  # read by the sandbox itself, which stands alone

VARIABLES = (
    API_URL_ENV,
    TOKEN_ENV,
    CLIENT_ID_ENV,
    CLIENT_SECRET_ENV,
    AUTH_URL_ENV,
    REDIRECT_URI_ENV,
    CONFIG_DIR_ENV,
    TOKEN_STORE_ENV,
    CACHE_DIR_ENV,
    QUOTA_ENV,
    SHARE_ENV,
    RATE_ENV,
    FULL_SYNC_ENV,
    SANDBOX_CACHE_ENV,
)


def env(name: str) -> str | None:
    """The value of environment variable ``name`` (one of :data:`VARIABLES`); None when unset or empty."""
    return os.environ.get(name) or None


def number_setting(name: str, kind: type, default: float, low: float, high: float, what: str = "a number") -> Any:
    """The number in environment variable ``name`` (``default`` when unset), checked to lie in ``low..high``."""
    text = env(name)
    if not text:
        return default
    try:
        value = kind(text) if text.strip().isascii() else None  # int() would take other scripts' digits too
    except ValueError:
        value = None
    if value is None or not low <= value <= high:  # NaN fails the range check too
        raise ConfigError(f"{name} must be {what} from {low:g} to {high:g}, not {quoted(text)}.")
    return value


def temporary_folder() -> str:
    """Where temporary files go: ``$TMPDIR`` as given (Python's ``tempfile`` quietly falls back to another folder
    when that one cannot be written, but SQLite and the user both mean this one), else the system's."""
    return os.environ.get("TMPDIR") or tempfile.gettempdir()


def config_dir() -> Path:
    """``$CCOPTOUT_CONFIG_DIR``, else the user's config folder (e.g. ``~/.config/ccoptout-xl``)."""
    return Path(env(CONFIG_DIR_ENV) or platformdirs.user_config_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """``$CCOPTOUT_CACHE_DIR``, else the user's cache folder (e.g. ``~/.cache/ccoptout-xl``)."""
    return Path(env(CACHE_DIR_ENV) or platformdirs.user_cache_dir(APP_NAME, appauthor=False))


# A host name, an IPv4 address or a bracketed IPv6 address, and an optional port: nothing else may stand in the
# authority of an address we are given (no userinfo, backslashes, spaces, percent-escapes or other characters
# that two URL parsers may read differently).
_AUTHORITY = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
MAX_URL_LENGTH = 2000


def validate_base_url(url: str, what: str = "the API address", example: str = DEFAULT_API_URL) -> str:
    """Return ``url`` without a trailing slash, or raise :class:`ConfigError` (one line, exit 2) if it is unusable.

    Plain HTTP would send the bearer token in clear, so it is allowed only to this computer (loopback).
    """
    parts = checked_url(url, what, example)
    if parts.port == 0:
        raise ConfigError(f"{_sentence(what)} {quoted(url)} has port 0: use a port from 1 to 65535.")
    if parts.query or parts.fragment or "#" in url:
        raise ConfigError(
            f"{_sentence(what)} {quoted(url)} has a query or fragment; give only the address, e.g. {example}."
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise ConfigError(
            f"Refusing plain-HTTP {what} {quoted(url)}: use https:// (plain HTTP is allowed only to this "
            "computer, e.g. http://127.0.0.1:8800/v3)."
        )
    # The scheme in lower case: what decides plain HTTP elsewhere (no proxy, loopback only) reads it so.
    return parts._replace(scheme=parts.scheme.lower()).geturl().rstrip("/")


def checked_url(url: str, what: str, example: str) -> SplitResult:
    """``url`` split, once it is a plain http(s) URL whose host is the one the HTTP library will connect to.

    An authority that two parsers could read differently (userinfo, a backslash, spaces, percent-escapes or
    other unusual characters) is refused outright, as is an invalid port: :class:`ConfigError`, one line.
    """
    text = url.strip()
    name = f"{_sentence(what)} {quoted(text)}"
    if not text or len(text) > MAX_URL_LENGTH or any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ConfigError(f"{name} is not a usable URL: use e.g. {example}.")
    try:
        parts = urlsplit(text)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ConfigError(f"{name} is not an http(s) URL: use e.g. {example}.")
        if "@" in parts.netloc or "\\" in text or not _AUTHORITY.fullmatch(parts.netloc):
            raise ConfigError(
                f"{name} has characters that do not belong in a host and port (a user name, a backslash...); "
                f"give only scheme, host, port and path, e.g. {example}."
            )
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
        connects_to = parse_url(text).host
    except ConfigError:
        raise
    except (ValueError, LocationParseError):
        raise ConfigError(f"{name} has an invalid host or port: use e.g. {example}.") from None
    if (connects_to or "").strip("[]").lower() != (parts.hostname or "").lower():
        raise ConfigError(f"{name} is ambiguous: its host reads differently to different parsers.")
    return parts


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
