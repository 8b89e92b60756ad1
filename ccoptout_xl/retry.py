"""Bounded retries and paced calls: the decision apart from the loops that act on it.

Every loop in the package that may try something again asks one question after each failure: wait how long and
try again, or stop? :func:`decide` answers it (a number of seconds, or ``None``: stop, that was the last try), and
:func:`spacing` answers the pacing question (how long to wait so that a call keeps its distance from the previous
one). The loops only act on the answers. Sleeping and the jitter's random numbers are parameters (``sleep``,
``uniform``), so a test decides time instead of waiting for it.

A leaf module: it imports nothing of the package (the standard library only).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)
Sleep = Callable[[float], None]
Clock = Callable[[], float]
Uniform = Callable[[float, float], float]  # random.uniform's signature: the jitter's source
Delay = float | Callable[[int], float]  # seconds before every retry, or before retry number n (1-based)


def decide(failures: int, tries: int, delay: Delay) -> float | None:
    """After ``failures`` failed tries out of at most ``tries``: the seconds to wait before the next try, or ``None``
    to stop (the last try has failed).

    ``delay`` is a fixed number of seconds, or a function of the retry's number (``failures``, 1-based); it is only
    called when there is a retry to wait for, so a random delay draws nothing when the answer is to stop.
    """
    if failures >= tries:
        return None
    return delay(failures) if callable(delay) else float(delay)


def backoff(retry: int, base: float, cap: float, uniform: Uniform = random.uniform) -> float:
    """The wait before retry number ``retry`` (1-based): ``base`` doubled each retry, at most ``cap``, with "equal
    jitter" (half of it fixed, half drawn from ``uniform``) so that clients that failed together do not return
    together."""
    ceiling = min(cap, base * 2 ** (retry - 1))
    return ceiling / 2 + uniform(0, ceiling / 2)


def spacing(last: float | None, now: float, interval: float) -> float:
    """The seconds to wait before a call that must start ``interval`` seconds after the ``last`` one (0: go now).

    ``last`` and ``now`` are read from the same clock. A ``last`` that lies further ahead than ``interval`` (a clock
    set back, another computer's clock) is not waited for: it says nothing about when the last call was.
    """
    if last is None:
        return 0.0
    wait = last + interval - now
    return wait if 0 < wait <= interval else 0.0


def retry_call(
    operation: Callable[[], T],
    *,
    on: type[E] | tuple[type[E], ...],
    tries: int,
    delay: Delay,
    when: Callable[[E], bool] | None = None,
    sleep: Sleep = time.sleep,
) -> T:
    """``operation()``, tried again after a failure of a type in ``on`` (for which ``when``, if given, holds), at most
    ``tries`` times in all, waiting as :func:`decide` says between tries. Any other failure, and the last one,
    propagate unchanged."""
    failures = 0
    while True:
        try:
            return operation()
        except on as exc:
            if when is not None and not when(exc):
                raise
            failures += 1
            wait = decide(failures, tries, delay)
            if wait is None:
                raise
        sleep(wait)


@dataclass
class RetryPolicy:
    """How hard the API client tries before giving up. Every loop in the client is bounded by these numbers.

    ``sleep`` is what waits between tries and ``uniform`` is the jitter's random source: tests pass their own.
    """

    attempts: int = 6  # tries per request on 5xx or a dropped connection
    throttled_attempts: int = 8  # tries per request while the API answers 429 throttled
    base_delay: float = 0.5  # first backoff, doubled each retry
    max_delay: float = 20.0  # cap of one backoff
    sleep: Sleep = field(default=time.sleep, repr=False, compare=False)
    uniform: Uniform = field(default=random.uniform, repr=False, compare=False)

    THROTTLE_WINDOW = 1.0  # the API's limit is per second: a throttled request first waits that second out

    def delay(self, retry: int) -> float:
        """Backoff before retry number ``retry`` (1-based): exponential, capped, with "equal jitter"."""
        return backoff(retry, self.base_delay, self.max_delay, self.uniform)

    def after_failure(self, failures: int) -> float | None:
        """After ``failures`` tries that failed (5xx, a dropped connection): the wait before the next, or ``None``."""
        return decide(failures, self.attempts, self.delay)

    def after_throttle(self, throttles: int) -> float | None:
        """After ``throttles`` tries answered 429 throttled: the rate window plus a growing, jittered backoff, or
        ``None``."""
        return decide(throttles, self.throttled_attempts, lambda retry: self.THROTTLE_WINDOW + self.delay(retry))
