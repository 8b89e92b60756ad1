"""Checks of the sandbox's settings: a bad one is a :class:`SettingError` (a ValueError) saying what is allowed.

The command line turns these into one-line usage errors (exit 2) naming the option, before any account is
generated or any port is bound.
"""

from __future__ import annotations

import math
from typing import Any

MAX_CONTACTS = 5_000_000
"""Largest account the sandbox generates (about 5 GB of cache and an hour to build: far beyond any test)."""
MAX_SEED = 2**63 - 1
MAX_LATENCY = 60.0
"""Seconds: longer than any real answer, shorter than a client's patience."""
MAX_LATENCY_PER_CONTACT = 0.1
"""Seconds per contact in a page: a full page (500) then waits at most 50 s more, within a client's patience."""
MAX_DAILY_QUOTA = 10**12
MAX_PORT = 65_535


class SettingError(ValueError):
    """A sandbox setting out of range. ``setting`` is its Python name (``rate_limit``), ``requirement`` what it
    must be (``"must be ..."``), ``value`` what was given; ``none_means`` says what None means, if allowed."""

    def __init__(self, setting: str, requirement: str, value: Any, none_means: str | None = None) -> None:
        self.setting = setting
        self.requirement = requirement
        self.value = value
        self.none_means = none_means
        allowed_none = f" (or None: {none_means})" if none_means else ""
        super().__init__(f"{setting} {requirement}{allowed_none}, not {self.shown}")

    @property
    def shown(self) -> str:
        """The value given, short: ``-1``, ``nan``, ``inf``, ``'abc'``; "a number of 1e30 or more" if huge."""
        value = self.value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value) if abs(value) < 10**30 else "a number of 1e30 or more"  # str() fails past 4300 digits
        if isinstance(value, float):
            return f"{value:g}"
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."


def whole(setting: str, value: Any, low: int, high: int, none_means: str | None = None) -> int | None:
    """An int (not a bool) in [low, high]; None only when ``none_means`` says what it means."""
    if value is None and none_means is not None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingError(setting, f"must be a whole number from {_big(low)} to {_big(high)}", value, none_means)
    return value


def _big(value: int) -> str:
    """Thousands separated from 100,000 up (a port stays 65535)."""
    return f"{value:,}" if abs(value) >= 100_000 else str(value)


def number(
    setting: str,
    value: Any,
    low: float,
    high: float | None,
    *,
    above_low: bool = False,
    unit: str = "",
    none_means: str | None = None,
) -> float | None:
    """A finite int or float in [low, high] (or (low, high] with ``above_low``; no upper bound when high is None)."""
    if value is None and none_means is not None:
        return None
    lower = f"above {low:g}" if above_low else f"from {low:g}"
    upper = f" to {high:g}" if high is not None else ""
    requirement = f"must be a number of {unit} {lower}{upper}" if unit else f"must be a number {lower}{upper}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(setting, requirement, value, none_means)
    try:
        ok = math.isfinite(value) and (value > low if above_low else value >= low) and (high is None or value <= high)
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok:
        raise SettingError(setting, requirement, value, none_means)
    return value


def check_server_settings(
    port: Any, rate_limit: Any, daily_quota: Any, latency: Any, latency_per_contact: Any = 0.0
) -> None:
    """Raise :class:`SettingError` for the first unusable server setting (see ``Sandbox``)."""
    whole("port", port, 0, MAX_PORT)
    check_rate_limit(rate_limit)
    check_daily_quota(daily_quota)
    check_latency(latency)
    check_latency_per_contact(latency_per_contact)


def check_rate_limit(value: Any) -> float | None:
    return number("rate_limit", value, 0, None, above_low=True, unit="requests per second", none_means="no limit")


def check_daily_quota(value: Any) -> int | None:
    return whole("daily_quota", value, 1, MAX_DAILY_QUOTA, none_means="no limit")


def check_latency(value: Any) -> float:
    result = number("latency", value, 0, MAX_LATENCY, unit="seconds")
    assert result is not None
    return result


def check_latency_per_contact(value: Any) -> float:
    result = number("latency_per_contact", value, 0, MAX_LATENCY_PER_CONTACT, unit="seconds")
    assert result is not None
    return result
