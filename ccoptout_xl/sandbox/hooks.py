"""Test hooks: the request log and injected faults."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple, TypeVar, overload

from .settings import number, whole

FAULT_KINDS = ("500", "503", "drop", "slow", "malformed", "truncated", "429", "invalidate")
MAX_FAULT_DELAY = 3600.0
MAX_BURST = 1_000_000
DROPPED = 0
"""``RequestRecord.status`` of a request whose connection was closed without an answer."""
PENDING = -1
"""``RequestRecord.status`` while the request is being answered."""

T = TypeVar("T")


@dataclass(frozen=True)
class RequestRecord:
    """One request as the sandbox saw it. ``at`` is time.time() on arrival; query keeps the first value.

    ``delay``: the seconds the answer was held back (``latency``, ``latency_per_contact`` times the contacts in a
    page of ``GET /v3/contacts``, a "slow" fault's delay), set once answered.
    """

    method: str
    path: str
    query: dict[str, str]
    status: int
    at: float
    delay: float = 0.0


class RecordList(Sequence[T]):
    """Thread-safe, list-like, append-only list of records; equal to a list of the same records."""

    def __init__(self) -> None:
        self._records: list[T] = []
        self._lock = threading.Lock()

    def append(self, record: T) -> None:
        """Add a record at the end."""
        with self._lock:
            self._records.append(record)

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records = []

    def snapshot(self) -> list[T]:
        """A copy of the records, oldest first."""
        with self._lock:
            return list(self._records)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __iter__(self) -> Iterator[T]:
        return iter(self.snapshot())

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...
    def __getitem__(self, index: int | slice) -> T | list[T]:
        with self._lock:
            return self._records[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordList):
            other = other.snapshot()
        if isinstance(other, list):
            return self.snapshot() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.snapshot()!r})"


class RequestHandle(NamedTuple):
    """Where ``RequestLog.open`` put a request: log generation, position in the log, request number (0: none)."""

    generation: int
    position: int
    number: int


class RequestLog(RecordList[RequestRecord]):
    """Every request since start or the last ``clear()``, API and OAuth alike, oldest first.

    API requests are also numbered 1, 2, ... (the numbers ``Fault.at_request`` counts); requests to the
    authorization server (``/oauth2/...``) are logged but not numbered, so signing in or refreshing a token
    does not shift which API request a fault hits.
    """

    def __init__(self) -> None:
        super().__init__()
        self._generation = 0
        self._numbered = 0

    def open(self, record: RequestRecord, numbered: bool = True) -> RequestHandle:
        """Log an arriving request; its handle carries its request number (0 when not ``numbered``)."""
        with self._lock:
            self._records.append(record)
            if numbered:
                self._numbered += 1
            return RequestHandle(self._generation, len(self._records), self._numbered if numbered else 0)

    def close(self, handle: RequestHandle, status: int, delay: float = 0.0) -> None:
        """Set the final status (and delay) of a logged request (ignored if the log was cleared meanwhile)."""
        with self._lock:
            if handle.generation == self._generation:
                index = handle.position - 1
                self._records[index] = replace(self._records[index], status=status, delay=delay)

    def clear(self) -> None:
        """Forget all requests; numbering restarts at 1."""
        with self._lock:
            self._records = []
            self._numbered = 0
            self._generation += 1


@dataclass(frozen=True)
class Fault:
    """A failure to inject into matching API requests (never into the authorization server's).

    A fault matches an API request whose path starts with ``path_prefix`` (None: any path). It fires on
    request number ``at_request`` (1-based, counting API requests since start or reset_log) if given,
    and with probability ``rate`` (seeded RNG) if given; with neither, on every matching request. Once it
    fires it also takes the next ``burst - 1`` matching requests (a burst of 429s, an outage of 503s).

    Kinds (they act after authentication, the quota and the rate window, so the request is counted):

    - "500"/"503": that status, with the API's array error body;
    - "429": 429 ``throttled`` (the object body of the per-second limit), as if over the rate limit;
    - "drop": the connection is closed without an answer;
    - "truncated": the headers and half the body, then the connection is closed (Content-Length says the
      whole: the client sees an incomplete read);
    - "slow": waits ``delay`` seconds, then answers normally;
    - "malformed": 200 with a complete, well-framed but truncated JSON body;
    - "invalidate": every access token issued so far is invalidated (``OAuthServer.invalidate_access_tokens``,
      a server-side revocation; the ``token`` of the sandbox too, unless given to the constructor) and the
      request gets the API's 401: a client with a refresh token must renew it and go on.
    """

    kind: str
    at_request: int | None = None
    rate: float | None = None
    seed: int = 0
    path_prefix: str | None = "/v3/contacts"
    delay: float = 5.0
    burst: int = 1

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {self.kind!r}")
        if self.at_request is not None:
            whole("at_request", self.at_request, 1, 2**63 - 1)  # counts from 1
        if self.rate is not None:
            number("rate", self.rate, 0.0, 1.0)
        number("delay", self.delay, 0.0, MAX_FAULT_DELAY, unit="seconds")
        whole("burst", self.burst, 1, MAX_BURST)


@dataclass
class _Armed:
    fault: Fault
    rng: random.Random = field(init=False)
    left: int = 0  # matching requests this fault still takes in its current burst

    def __post_init__(self) -> None:
        self.rng = random.Random(self.fault.seed)


class FaultSet:
    """The faults in force; the first one (in order added) that fires on a request wins.

    ``fired()`` counts the requests each kind of fault was applied to, since start (``clear`` keeps the counts).
    """

    def __init__(self) -> None:
        self._armed: list[_Armed] = []
        self._fired: Counter[str] = Counter()
        self._lock = threading.Lock()

    def fired(self) -> dict[str, int]:
        """Requests each kind of fault was applied to so far, by kind (kinds never applied are left out)."""
        with self._lock:
            return dict(self._fired)

    def add(self, fault: Fault) -> None:
        """Arm a fault."""
        with self._lock:
            self._armed.append(_Armed(fault))

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._armed = []

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter([a.fault for a in self._armed])

    def __len__(self) -> int:
        with self._lock:
            return len(self._armed)

    def pick(self, number: int, path: str) -> Fault | None:
        """The fault to apply to request ``number`` on ``path``, if any."""
        with self._lock:
            for armed in self._armed:
                fault = armed.fault
                if fault.path_prefix is not None and not path.startswith(fault.path_prefix):
                    continue
                if armed.left > 0:
                    armed.left -= 1
                    self._fired[fault.kind] += 1
                    return fault
                if fault.at_request is not None and fault.at_request != number:
                    continue
                if fault.rate is not None and armed.rng.random() >= fault.rate:
                    continue
                armed.left = fault.burst - 1
                self._fired[fault.kind] += 1
                return fault
        return None
