"""Per-token limits: a sliding one-second rate window and a daily quota (UTC days)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone


class Limits:
    """Decides throttling. Settings are plain attributes, changeable while serving."""

    def __init__(
        self,
        rate_limit: float | None,
        daily_quota: int | None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_limit = rate_limit
        self.daily_quota = daily_quota
        self._clock = clock
        self.monotonic = monotonic  # what the per-second windows read (a test may set its own)
        self._windows: dict[str, deque[float]] = {}
        self._used: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def spend_quota(self, token: str) -> bool:
        """Count one authenticated request for today; False once the quota is exceeded."""
        day = datetime.fromtimestamp(self._clock(), timezone.utc).date().isoformat()
        with self._lock:
            used = self._used.get((token, day), 0) + 1
            self._used[(token, day)] = used
            return self.daily_quota is None or used <= self.daily_quota

    def quota_used(self, token: str) -> int:
        """Requests counted today for ``token``."""
        day = datetime.fromtimestamp(self._clock(), timezone.utc).date().isoformat()
        with self._lock:
            return self._used.get((token, day), 0)

    def admit(self, token: str) -> bool:
        """False if ``rate_limit`` requests were already admitted in the last second (throttled ones don't count)."""
        now = self.monotonic()
        with self._lock:
            window = self._windows.setdefault(token, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if self.rate_limit is not None and len(window) >= self.rate_limit:
                return False
            window.append(now)
            return True
