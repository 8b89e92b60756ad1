"""Query-string parsing shared by the endpoints: strict values, 400 answers that say what is wrong."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from .errors import ApiError

# re.ASCII: \d would otherwise match any Unicode decimal digit (full-width, Arabic-Indic...), and int() takes them.
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?([Zz]|[+-]\d{2}:?\d{2}))?",
    re.ASCII,
)
_WHOLE = re.compile(r"[0-9]{1,9}")
_MAC_BYTES = 12


def ascii_digits(value: str) -> bool:
    """True for one or more ASCII digits 0-9 and nothing else.

    str.isdigit alone also takes superscripts, full-width and Arabic-Indic digits.
    """
    return value.isascii() and value.isdigit()


def csv(name: str, value: str, allowed: Iterable[str] | None = None, max_items: int | None = None) -> list[str]:
    """Split a comma-separated value; every item must be non-empty (and allowed, if given)."""
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise ApiError.invalid(f"{name} must be a comma-separated list without empty values, got {value!r}")
    if allowed is not None:
        allowed = tuple(allowed)
        for item in items:
            if item not in allowed:
                raise ApiError.invalid(f"{name} value {item!r} is not one of: {', '.join(allowed)}")
    if max_items is not None and len(items) > max_items:
        raise ApiError.invalid(f"{name} accepts at most {max_items} values, got {len(items)}")
    return items


def one_of(name: str, value: str, allowed: Iterable[str]) -> str:
    """A single value from an enum."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ApiError.invalid(f"{name} value {value!r} is not one of: {', '.join(allowed)}")
    return value


def integer(name: str, value: str, low: int, high: int) -> int:
    """A decimal integer of ASCII digits within [low, high] (no sign, spaces, underscores or other digits)."""
    if not _WHOLE.fullmatch(value) or not low <= int(value) <= high:
        raise ApiError.invalid(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return int(value)


def boolean(name: str, value: str) -> bool:
    """``true`` or ``false`` (any case)."""
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise ApiError.invalid(f"{name} must be true or false, got {value!r}")
    return lowered == "true"


def instant_us(name: str, value: str) -> int:
    """An ISO-8601 date-time with an offset (or a date, meaning its start in UTC), as epoch microseconds.

    A date-time without ``Z`` or an offset is refused: the server cannot guess the time zone. An
    unencoded ``+`` in the offset arrives as a space and is refused too.
    """
    match = _DATE_TIME.fullmatch(value)
    if not match:
        hint = " (a '+' in the offset must be sent as %2B)" if " " in value else ""
        raise ApiError.invalid(
            f"{name} must be an ISO-8601 date-time with an offset such as 2022-11-16T16:20:59.091Z, got {value!r}{hint}"
        )
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        if hour is None:
            moment = datetime.combine(date(int(year), int(month), int(day)), datetime.min.time(), timezone.utc)
        else:
            micros = int((fraction or "0")[:6].ljust(6, "0"))
            tz = timezone.utc
            if offset not in ("Z", "z"):
                sign = -1 if offset[0] == "-" else 1
                digits = offset[1:].replace(":", "")
                tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
            moment = datetime(
                int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micros, tzinfo=tz
            )
    except ValueError as exc:
        raise ApiError.invalid(f"{name} is not a valid date-time ({exc}), got {value!r}") from None
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class CursorCodec:
    """Opaque, tamper-evident cursors: urlsafe base64 of a MAC followed by compact JSON."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(self, state: dict[str, Any]) -> str:
        """Serialize a JSON-able state."""
        payload = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(mac + payload).rstrip(b"=").decode("ascii")

    def decode(self, cursor: str) -> dict[str, Any]:
        """Inverse of encode; any alteration gives a 400."""
        try:
            raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
            mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
            expected = hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
            if len(mac) == _MAC_BYTES and hmac.compare_digest(mac, expected):
                state = json.loads(payload)
                if isinstance(state, dict):
                    return state
        except (ValueError, UnicodeError, binascii.Error):
            pass
        raise ApiError.invalid("cursor is not valid: follow the _links.next.href of a previous page verbatim")
