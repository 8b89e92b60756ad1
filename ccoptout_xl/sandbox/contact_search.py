"""``GET /v3/contacts``: parameters, cursors, and keyset pagination over SQLite.

Pages follow the order contacts were created in (``seq``) by default; ``ContactSearch.listing = "scrambled"``
lists them in an order unrelated to any of their dates instead (a listing by a hash of the id, say). The
contract says nothing of the order, so clients must not depend on either.

Paging rule, deliberately: a FULL page (exactly ``limit`` contacts) always carries ``_links.next``, without peeking
whether more contacts exist, so an exact multiple of ``limit`` ends with an empty page that has no ``_links``. A
page with fewer contacts than ``limit`` is the last one and has no ``_links``. (What the real service does here is
unverified; clients must handle both, and this is the harder case.)

The cursor carries every filter, ``limit``, ``include``, ``include_count`` and the listing key of the last contact
(keyset, not offset); a request with ``cursor`` ignores all its other parameters.

When the account changes while a client pages (``Account.opt_out``, ``resubscribe``, ``delete``), an open
cursor stays valid and each later page is evaluated against the data as it is then: contacts after the
cursor's position appear or vanish according to their new state, contacts before it are never revisited
(a change behind the cursor is missed; nothing is returned twice), and ``contacts_count`` reports the
new total. Counts are cached per data version (``Account.data_version``), so they never go stale.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from .errors import ApiError
from .params import CursorCodec, ascii_digits, boolean, csv, instant_us, integer
from .render import CONTACT_COLUMNS, DELETED_OFFSET, PERMISSIONS, UNSUBSCRIBED, contact_json

NON_DELETED = tuple(range(len(PERMISSIONS)))
DELETED_STATES = tuple(code + DELETED_OFFSET for code in NON_DELETED)
STATUSES: dict[str, tuple[int, ...]] = {
    "all": NON_DELETED + DELETED_STATES,
    "active": (0, 1),
    "deleted": DELETED_STATES,
    "not_set": (2,),
    "pending_confirmation": (3,),
    "temp_hold": (4,),
    "unsubscribed": (UNSUBSCRIBED,),
}
INCLUDES = ("custom_fields", "list_memberships", "phone_numbers", "street_addresses", "taggings", "notes")
SMS_STATUSES = ("all", "explicit", "unsubscribed", "pending_confirmation", "not_set")
MAX_LIMIT = 500
MAX_LISTS = 25
MAX_TAGS = 50
# Below this many rows in a date range, walking that range's index and sorting beats a scan in seq order.
SMALL_RANGE = 20_000
_CACHE_SIZE = 512
_INDEXES = {"opt_out": "idx_optout", "updated": "idx_updated", "created": "idx_created"}
_MASK64 = (1 << 64) - 1


def scrambled_key(seq: int) -> int:
    """The place of contact ``seq`` in the "scrambled" listing: a 40-bit hash of it (splitmix64's finaliser) above
    the seq itself (MAX_CONTACTS is under 2**23), so keys are distinct, fit SQLite's integers, and follow no date."""
    z = (seq + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 24) << 23 | seq


# Each listing order's key (SQL), one-to-one with seq: "scrambled" is a hash, unrelated to any of a contact's dates.
LISTINGS = {"created": "seq", "scrambled": "scrambled_key(seq)"}


@dataclass(frozen=True)
class ContactQuery:
    """A validated contacts search; instants are epoch microseconds, bounds are exclusive."""

    states: tuple[int, ...] = NON_DELETED
    optout_after: int | None = None
    optout_before: int | None = None
    created_after: int | None = None
    created_before: int | None = None
    updated_after: int | None = None
    updated_before: int | None = None
    email: str | None = None
    lists: tuple[str, ...] = ()
    matches_nothing: bool = False  # tags or an SMS status: no sandbox contact has tags or SMS consent
    include: tuple[str, ...] = ()
    include_count: bool = False
    limit: int = 50
    after_key: int = 0  # the listing key of the last contact returned (keyset pagination)

    @property
    def filters(self) -> tuple[Any, ...]:
        """Everything that decides which contacts match (the count cache key)."""
        return (
            self.states,
            self.optout_after,
            self.optout_before,
            self.created_after,
            self.created_before,
            self.updated_after,
            self.updated_before,
            self.email,
            self.lists,
            self.matches_nothing,
        )


def parse_query(query: dict[str, str], codec: CursorCodec, optout_filters: bool = True) -> ContactQuery:
    """Validate the query string of ``GET /v3/contacts`` (unknown parameters are ignored)."""
    if "cursor" in query:
        q = _from_cursor(codec.decode(query["cursor"]))
        if not optout_filters and (q.optout_after is not None or q.optout_before is not None):
            raise ApiError.invalid("cursor uses optout_after/optout_before, which this server does not support")
        return q
    if not optout_filters:
        for name in ("optout_after", "optout_before"):
            if name in query:
                raise ApiError.invalid(f"{name} is not a supported query parameter")
    if "segment_id" in query:
        segment = query["segment_id"]
        if not ascii_digits(segment):
            raise ApiError.invalid(f"segment_id must be a number, got {segment!r}")
        others = sorted(set(query) - {"segment_id", "limit"})
        if others:
            raise ApiError.invalid(f"segment_id can only be combined with limit, not with {', '.join(others)}")
        raise ApiError.array(404, "contacts.api.not.found", f"Segment {segment} not found")
    given: dict[str, Any] = {}
    if "status" in query:
        states: set[int] = set()
        for status in csv("status", query["status"], STATUSES):
            states.update(STATUSES[status])
        given["states"] = tuple(sorted(states))
    for name in ("optout_after", "optout_before", "created_after", "created_before", "updated_after", "updated_before"):
        if name in query:
            given[name] = instant_us(name, query[name])
    if "email" in query:
        email = query["email"].strip().lower()
        if "@" not in email:
            raise ApiError.invalid(f"email must be an email address, got {query['email']!r}")
        given["email"] = email
    if "lists" in query:
        given["lists"] = tuple(csv("lists", query["lists"], max_items=MAX_LISTS))
    if "tags" in query:
        csv("tags", query["tags"], max_items=MAX_TAGS)
        given["matches_nothing"] = True
    if "sms_status" in query and not {"all", "not_set"} & set(csv("sms_status", query["sms_status"], SMS_STATUSES)):
        given["matches_nothing"] = True
    if "include" in query:
        given["include"] = tuple(dict.fromkeys(csv("include", query["include"], INCLUDES)))
    if "include_count" in query:
        given["include_count"] = boolean("include_count", query["include_count"])
    if "limit" in query:
        given["limit"] = integer("limit", query["limit"], 1, MAX_LIMIT)
    return ContactQuery(**given)


def _cursor_state(q: ContactQuery) -> dict[str, Any]:
    """The query as JSON-able fields, defaults left out to keep the cursor short."""
    return {f.name: getattr(q, f.name) for f in dataclasses.fields(q) if getattr(q, f.name) != f.default}


def _from_cursor(state: dict[str, Any]) -> ContactQuery:
    try:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in state.items()}
        q = ContactQuery(**values)
        ints = (q.limit, q.after_key, *q.states)
        if not all(isinstance(v, int) for v in ints) or not 1 <= q.limit <= MAX_LIMIT:
            raise ValueError
    except (TypeError, ValueError):
        raise ApiError.invalid("cursor is not valid: follow the _links.next.href of a previous page verbatim") from None
    return q


def _ms_after(us: int) -> int:
    """col > t (t in µs) <=> col > floor(t in ms), for integer-ms columns."""
    return us // 1000


def _ms_before(us: int) -> int:
    """col < t (t in µs) <=> col < ceil(t in ms)."""
    return -(-us // 1000)


class ContactSearch:
    """Runs contact queries against one account; caches counts per data version."""

    def __init__(
        self, anchor_ms: int, list_ids: tuple[str, ...], codec: CursorCodec, created_in_seq_order: bool = False
    ) -> None:
        self.anchor_ms = anchor_ms
        self.list_ids = list_ids
        self.codec = codec
        self.created_in_seq_order = created_in_seq_order
        self._cache: OrderedDict[tuple[Any, ...], int] = OrderedDict()
        self._lock = threading.Lock()
        # True imitates a server whose contacts_count leaves out optout_after/optout_before (no public source
        # says the live API applies them to the count): clients must notice when counts contradict the rows.
        self.counts_ignore_optout_filters = False
        self.listing = "created"  # a key of LISTINGS: the order pages list contacts in

    def page(self, conn: sqlite3.Connection, q: ContactQuery, version: int = 0) -> dict[str, Any]:
        """One page of results as a ``Contacts`` body; ``version``: the data version ``conn`` reads (0: cached)."""
        where = self._where(conn, q, version)
        rows: list[tuple[Any, ...]] = []
        count = 0
        if where is not None:
            clauses, params, hint = where
            key = LISTINGS[self.listing]
            if self.listing == "scrambled":
                conn.create_function("scrambled_key", 1, scrambled_key, deterministic=True)
            sql = (
                f"SELECT {key}, {CONTACT_COLUMNS} FROM contacts {hint}"
                f" WHERE {' AND '.join([*clauses, f'{key} > ?'])} ORDER BY {key} LIMIT ?"
            )
            rows = conn.execute(sql, [*params, q.after_key, q.limit]).fetchall()
            if q.include_count and self.counts_ignore_optout_filters:
                unfiltered = replace(q, optout_after=None, optout_before=None)
                counted = self._where(conn, unfiltered, version)
                count = self._count(conn, unfiltered, counted[0], counted[1], version) if counted else 0
            elif q.include_count:
                count = self._count(conn, q, clauses, params, version)
        body: dict[str, Any] = {
            "contacts": [contact_json(row[1:], self.anchor_ms, self.list_ids, q.include) for row in rows]
        }
        if q.include_count:
            body["contacts_count"] = count
        if len(rows) == q.limit:
            cursor = self.codec.encode(_cursor_state(replace(q, after_key=rows[-1][0])))
            body["_links"] = {"next": {"href": f"/v3/contacts?cursor={cursor}"}}
        return body

    def _where(
        self, conn: sqlite3.Connection, q: ContactQuery, version: int
    ) -> tuple[list[str], list[Any], str] | None:
        """SQL conditions, their parameters and an index hint; None when nothing can match."""
        if q.matches_nothing:
            return None
        clauses: list[str] = []
        params: list[Any] = []
        if set(q.states) != set(STATUSES["all"]):
            clauses.append(f"state IN ({', '.join('?' * len(q.states))})" if len(q.states) > 1 else "state = ?")
            params.extend(q.states)
        ranges: dict[str, list[tuple[str, int]]] = {}
        for column, after, before in (
            ("opt_out", q.optout_after, q.optout_before),
            ("created", q.created_after, q.created_before),
            ("updated", q.updated_after, q.updated_before),
        ):
            if after is not None:
                ranges.setdefault(column, []).append((f"{column} > ?", _ms_after(after) - self.anchor_ms))
            if before is not None:
                ranges.setdefault(column, []).append((f"{column} < ?", _ms_before(before) - self.anchor_ms))
        if "created" in ranges and self.created_in_seq_order:
            # Contacts are created in seq order, so the created range is exactly a seq interval: counts and
            # pages then read ``seq`` from the indexes they walk instead of fetching each row for ``created``.
            seq_bounds = self._created_seq_bounds(conn, q)
            if seq_bounds is None:
                return None
            del ranges["created"]
            clauses.append("seq BETWEEN ? AND ?")
            params.extend(seq_bounds)
        for bounds in ranges.values():
            clauses.extend(c for c, _ in bounds)
            params.extend(p for _, p in bounds)
        if q.email is not None:
            clauses.append("email = ?")
            params.append(q.email)
        if q.lists:
            mask = sum(1 << bit for bit, list_id in enumerate(self.list_ids) if list_id in q.lists)
            if not mask:
                return None
            clauses.append("lists & ? != 0")
            params.append(mask)
        return clauses or ["1"], params, self._plan(conn, q, ranges, version)

    def _plan(
        self, conn: sqlite3.Connection, q: ContactQuery, ranges: dict[str, list[tuple[str, int]]], version: int
    ) -> str:
        """Pick the access path: a small date range's index, else a walk in seq order (a created range, when
        contacts are created in seq order, is a seq interval: ``ranges`` no longer holds it)."""
        if q.email is not None:
            return "INDEXED BY idx_email"
        for column in ("opt_out", "updated", "created"):
            if column in ranges and self._range_size(conn, column, ranges[column], version) <= SMALL_RANGE:
                return f"INDEXED BY {_INDEXES[column]}"
        if len(q.states) == 1:
            return "INDEXED BY idx_state"
        return "NOT INDEXED"

    @staticmethod
    def _count_plan(q: ContactQuery) -> str:
        """A count needs no order: prefer an index that covers the filters (they all hold ``state``)."""
        if q.email is not None:
            return "INDEXED BY idx_email"
        if q.optout_after is not None or q.optout_before is not None:
            return "INDEXED BY idx_optout"
        if q.updated_after is not None or q.updated_before is not None:
            return "INDEXED BY idx_updated"
        if q.lists:
            return "INDEXED BY idx_lists"
        return "INDEXED BY idx_state"

    def _created_seq_bounds(self, conn: sqlite3.Connection, q: ContactQuery) -> tuple[int, int] | None:
        """The seq interval holding the created range: contacts are created in seq order."""
        low, high = 0, 1 << 62
        if q.created_after is not None:
            row = conn.execute(
                "SELECT seq FROM contacts INDEXED BY idx_created WHERE created > ? ORDER BY created LIMIT 1",
                (_ms_after(q.created_after) - self.anchor_ms,),
            ).fetchone()
            if row is None:
                return None
            low = row[0]
        if q.created_before is not None:
            row = conn.execute(
                "SELECT seq FROM contacts INDEXED BY idx_created WHERE created < ? ORDER BY created DESC LIMIT 1",
                (_ms_before(q.created_before) - self.anchor_ms,),
            ).fetchone()
            if row is None:
                return None
            high = row[0]
        return low, high

    def _range_size(self, conn: sqlite3.Connection, column: str, bounds: list[tuple[str, int]], version: int) -> int:
        """Rows within a date range, counted up to SMALL_RANGE + 1 (cached)."""
        key = ("range", version, column, *bounds)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        sql = (
            f"SELECT COUNT(*) FROM (SELECT 1 FROM contacts INDEXED BY {_INDEXES[column]}"
            f" WHERE {' AND '.join(c for c, _ in bounds)} LIMIT {SMALL_RANGE + 1})"
        )
        (size,) = conn.execute(sql, [p for _, p in bounds]).fetchone()
        self._remember(key, size)
        return size

    def _count(
        self, conn: sqlite3.Connection, q: ContactQuery, clauses: list[str], params: list[Any], version: int
    ) -> int:
        key = ("count", version, *q.filters)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        hint = self._count_plan(q)
        (count,) = conn.execute(
            f"SELECT COUNT(*) FROM contacts {hint} WHERE {' AND '.join(clauses)}", params
        ).fetchone()
        self._remember(key, count)
        return count

    def _remember(self, key: tuple[Any, ...], value: int) -> None:
        with self._lock:
            self._cache[key] = value
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
