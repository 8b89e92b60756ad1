"""Generate a synthetic Constant Contact account into SQLite, deterministically.

Every contact gets a *lifecycle* (explicit, unsubscribed long ago, unsubscribed recently, re-subscribed,
deleted...). Counts per lifecycle are exact (``round(contacts * share)``) and positions are shuffled with
a seeded RNG. Instants are milliseconds relative to the anchor (all negative: in the past). Contacts are
created in ``seq`` order, so ``created`` never decreases along ``seq``.
"""

from __future__ import annotations

import random
import sqlite3
from bisect import bisect_right
from typing import Any

from .render import DELETED_OFFSET, EASTERN_STYLE, UNSUBSCRIBED, Z_STYLE

SECOND = 1000
HOUR = 3600 * SECOND
DAY = 24 * HOUR
YEAR = 365 * DAY + 6 * HOUR
CREATION_SPAN = 10 * YEAR
OPTOUT_SPAN = 8 * YEAR
RECENT_WINDOW = 30 * DAY

DELETED_SHARE = 0.03
DELETED_WITH_OPTOUT_SHARE = 0.4  # of the deleted ones
RESUBSCRIBED_SHARE = 0.02
CAMPAIGNS = 320  # "campaign days" over OPTOUT_SPAN that cause bursts of opt-outs
CAMPAIGN_OPTOUT_SHARE = 0.7
RECENT_BURST_SHARE = 0.4

# Lifecycles. The first five equal the permission codes of render.PERMISSIONS.
EXPLICIT, IMPLICIT, NOT_SET, PENDING, TEMP_HOLD = range(5)
UNSUBSCRIBED_LONG_AGO, UNSUBSCRIBED_RECENTLY, RESUBSCRIBED, DELETED_UNSUBSCRIBED, DELETED = range(5, 10)
LIFECYCLES = (
    "explicit",
    "implicit",
    "not_set",
    "pending_confirmation",
    "temp_hold",
    "unsubscribed_long_ago",
    "unsubscribed_recently",
    "resubscribed",
    "deleted_unsubscribed",
    "deleted",
)
# Permission mix of the remaining contacts (also the former permission of deleted ones).
REGULAR_MIX = ((EXPLICIT, 0.50), (IMPLICIT, 0.30), (PENDING, 0.08), (TEMP_HOLD, 0.04), (NOT_SET, 0.08))

LONG_REASON = ("I signed up for one coupon and got daily mail ever since. " * 5)[:254] + "."
REASONS: dict[str, tuple[str | None, ...]] = {
    "plain": (
        "I am no longer interested in this service.",
        "Too many emails",
        "The content is not what I expected",
        "I never signed up for this list",
        'Too many "special offers", honestly',
        "Please stop.\nThanks",
        "Moved to a different provider",
    ),
    "unicode": (
        "Trop d'e-mails — merci",
        "太多邮件了",
        "Zu viele E-Mails 📬",
        "Слишком много писем",
        "🙅‍♀️ no more, gracias ✉️",
        "メールが多すぎます",
    ),
    "long": (LONG_REASON,),
    "formula_equals": ('=HYPERLINK("http://x","y")', "=1+1"),
    "formula_plus": ("+1 555 0100",),
    "formula_minus": ("-- too many emails", "-1"),
    "formula_at": ("@everyone",),
    "empty": ("",),
    "absent": (None,),
}
# The first opt-outs of each group (long ago, recently, deleted) get one reason of each kind in this
# order, so even a small account has them all (and its few recent opt-outs get the trickiest first).
FORCED_REASON_KINDS = (
    "absent",
    "formula_equals",
    "unicode",
    "empty",
    "formula_plus",
    "long",
    "formula_minus",
    "formula_at",
    "plain",
)
REASON_WEIGHTS = (  # percent
    ("absent", 40),
    ("empty", 5),
    ("plain", 33),
    ("unicode", 10),
    ("long", 2),
    ("formula_equals", 2.5),
    ("formula_plus", 2.5),
    ("formula_minus", 2.5),
    ("formula_at", 2.5),
)

FIRST_NAMES = (
    ("James", "james"), ("Mary", "mary"), ("Robert", "robert"), ("Patricia", "patricia"),
    ("Michael", "michael"), ("Linda", "linda"), ("David", "david"), ("Susan", "susan"),
    ("Daniel", "daniel"), ("Karen", "karen"), ("Kevin", "kevin"), ("Emily", "emily"),
    ("José", "jose"), ("Zoë", "zoe"), ("Łukasz", "lukasz"), ("Siobhán", "siobhan"),
    ("Søren", "soren"), ("François", "francois"), ("美玲", "meiling"), ("Ngozi", "ngozi"),
)  # fmt: skip
LAST_NAMES = (
    ("Smith", "smith"), ("Johnson", "johnson"), ("Williams", "williams"), ("Brown", "brown"),
    ("Jones", "jones"), ("Miller", "miller"), ("Davis", "davis"), ("Wilson", "wilson"),
    ("Taylor", "taylor"), ("Clark", "clark"), ("Lewis", "lewis"), ("Walker", "walker"),
    ("Müller", "muller"), ("O'Brien", "obrien"), ("Nguyễn", "nguyen"), ("García", "garcia"),
    ("王", "wang"), ("Kowalski", "kowalski"), ("Ødegård", "odegard"), ("Dubois", "dubois"),
)  # fmt: skip
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "shop.example")

# (name, description or None, favorite, membership probability)
LISTS = (
    ("Newsletter", "Monthly newsletter", True, 0.55),
    ("Customers — EU", "Customers in the European Union", False, 0.12),
    ("Customers — US", None, False, 0.30),
    ("Product updates", "Release notes and product news", False, 0.25),
    ("VIP", None, True, 0.04),
    ("Webinar attendees", "People who attended a webinar", False, 0.10),
)
MAX_LISTS_PER_CONTACT = 3

SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE lists (
    bit INTEGER PRIMARY KEY, list_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT,
    favorite INTEGER NOT NULL, created INTEGER NOT NULL, updated INTEGER NOT NULL,
    members_all INTEGER NOT NULL DEFAULT 0, members_active INTEGER NOT NULL DEFAULT 0);
CREATE TABLE contacts (
    seq INTEGER PRIMARY KEY, contact_id TEXT NOT NULL, email TEXT NOT NULL, first_name TEXT,
    last_name TEXT, create_source TEXT NOT NULL, update_source TEXT NOT NULL, created INTEGER NOT NULL,
    updated INTEGER NOT NULL, email_updated INTEGER NOT NULL, permission INTEGER NOT NULL,
    state INTEGER NOT NULL, opt_in_source TEXT, opt_in INTEGER, confirm_status TEXT NOT NULL,
    opt_out INTEGER, opt_out_source TEXT, opt_out_reason TEXT, deleted INTEGER, style INTEGER NOT NULL,
    lists INTEGER NOT NULL, lifecycle INTEGER NOT NULL);
"""
INDEXES = """
CREATE INDEX idx_state ON contacts(state);
CREATE INDEX idx_optout ON contacts(opt_out, state) WHERE opt_out IS NOT NULL;
CREATE INDEX idx_updated ON contacts(updated, state);
CREATE INDEX idx_created ON contacts(created);
CREATE UNIQUE INDEX idx_email ON contacts(email);
CREATE INDEX idx_lists ON contacts(lists, state);
"""
_BATCH = 20_000
_INSERT = f"INSERT INTO contacts VALUES ({', '.join('?' * 22)})"


def lifecycle_counts(contacts: int, unsubscribed_share: float, recent_share: float) -> dict[int, int]:
    """Exact number of contacts per lifecycle."""
    n = contacts
    unsubscribed = round(n * unsubscribed_share)
    recent = round(unsubscribed * recent_share)
    room_long_ago = _cutoff(n)  # only contacts created before the recent window can opt out long ago
    long_ago = min(unsubscribed - recent, room_long_ago)
    recent = unsubscribed - long_ago
    rest = n - unsubscribed
    deleted = min(rest, round(n * DELETED_SHARE))
    deleted_unsub = round(deleted * DELETED_WITH_OPTOUT_SHARE)
    if deleted >= 2:
        deleted_unsub = min(max(deleted_unsub, 1), deleted - 1)
    resubscribed = min(rest - deleted, round(n * RESUBSCRIBED_SHARE))
    regular = rest - deleted - resubscribed
    counts = {
        UNSUBSCRIBED_LONG_AGO: long_ago,
        UNSUBSCRIBED_RECENTLY: recent,
        DELETED_UNSUBSCRIBED: deleted_unsub,
        DELETED: deleted - deleted_unsub,
        RESUBSCRIBED: resubscribed,
    }
    left = regular
    for lifecycle, share in REGULAR_MIX[:-1]:
        counts[lifecycle] = min(left, round(regular * share))
        left -= counts[lifecycle]
    counts[REGULAR_MIX[-1][0]] = left
    return counts


def _cutoff(n: int) -> int:
    """Number of leading contacts created more than a day before the recent window opens."""
    if n == 0:
        return 0
    return max(0, int(n * (CREATION_SPAN - RECENT_WINDOW - DAY) / CREATION_SPAN))


def _created(i: int, n: int, u: float) -> int:
    """Creation instant of contact ``i``: spread over ten years, the last one an hour before anchor."""
    return int(-CREATION_SPAN + (i + u) * (CREATION_SPAN - HOUR) / n)


def _lifecycles(rnd: random.Random, n: int, counts: dict[int, int]) -> bytearray:
    """Place the lifecycles: shuffled, but 'unsubscribed long ago' only before the cutoff."""
    cutoff = _cutoff(n)
    pool = [lc for lc, k in counts.items() if lc != UNSUBSCRIBED_LONG_AGO for _ in range(k)]
    rnd.shuffle(pool)
    late = pool[: n - cutoff]
    early = pool[n - cutoff :] + [UNSUBSCRIBED_LONG_AGO] * counts[UNSUBSCRIBED_LONG_AGO]
    rnd.shuffle(early)
    return bytearray(early + late)


def _list_masks() -> tuple[list[int], list[float]]:
    """All membership masks (0-3 lists) with cumulative probabilities, for one-draw sampling."""
    weights: dict[int, float] = {}
    for mask in range(1 << len(LISTS)):
        p = 1.0
        for bit, (*_, share) in enumerate(LISTS):
            p *= share if mask >> bit & 1 else 1 - share
        kept, bits = 0, 0
        for bit in range(len(LISTS)):
            if mask >> bit & 1 and bits < MAX_LISTS_PER_CONTACT:
                kept |= 1 << bit
                bits += 1
        weights[kept] = weights.get(kept, 0.0) + p
    masks = sorted(weights)
    cum, total = [], 0.0
    for mask in masks:
        total += weights[mask]
        cum.append(total)
    cum[-1] = 1.0
    return masks, cum


def _uuid(rnd: random.Random) -> str:
    h = f"{rnd.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


new_uuid = _uuid
"""A random version-4 UUID drawn from ``rnd`` (canonical lowercase)."""


def _cumulative(weights: list[float]) -> list[float]:
    """Cumulative sums normalized to end at exactly 1.0 (for ``bisect_right(cum, random())``)."""
    cum, total = [], 0.0
    for weight in weights:
        total += weight
        cum.append(total)
    cum = [c / total for c in cum]
    cum[-1] = 1.0
    return cum


def _floor_second(ms: int | None) -> int | None:
    return None if ms is None else ms // SECOND * SECOND


class _ContactFactory:
    """Draws one contact row at a time, from one seeded random stream, in seq order."""

    def __init__(self, rnd: random.Random, n: int) -> None:
        self.rnd = rnd
        self.n = n
        times = sorted(
            int(-OPTOUT_SPAN + rnd.random() * (OPTOUT_SPAN - RECENT_WINDOW - 7 * DAY)) for _ in range(CAMPAIGNS)
        )
        self.campaigns = times
        self.campaign_cum = _cumulative([rnd.paretovariate(1.5) for _ in times])  # a few campaigns cause most
        self.bursts = sorted(-d * DAY + int(rnd.random() * DAY) for d in (26, 13, 4))
        self.masks, self.mask_cum = _list_masks()
        self.kinds = [kind for kind, _ in REASON_WEIGHTS]
        self.kind_cum = _cumulative([w for _, w in REASON_WEIGHTS])
        self.regular = [lc for lc, _ in REGULAR_MIX]
        self.regular_cum = _cumulative([w for _, w in REGULAR_MIX])
        self.forced = {UNSUBSCRIBED_LONG_AGO: 0, UNSUBSCRIBED_RECENTLY: 0, DELETED_UNSUBSCRIBED: 0}

    def row(self, i: int, lc: int) -> tuple[Any, ...]:
        """The contacts table row of contact ``i`` (0-based), whose lifecycle is ``lc``."""
        rand = self.rnd.random
        created = _created(i, self.n, rand())
        style = (EASTERN_STYLE if rand() < 0.5 else Z_STYLE) if i > 1 else i  # both styles even in tiny accounts
        r = rand()
        if r < 0.03:
            first = last = None
            email = f"contact{i + 1}@{DOMAINS[i % len(DOMAINS)]}"
        else:
            first, first_slug = FIRST_NAMES[int(rand() * len(FIRST_NAMES))]
            last, last_slug = LAST_NAMES[int(rand() * len(LAST_NAMES))]
            email = f"{first_slug}.{last_slug}{i + 1}@{DOMAINS[int(rand() * len(DOMAINS))]}"
            if r < 0.05:
                last = None
        create_source = "Account" if rand() < 0.6 else "Contact"
        if rand() < 0.45:
            updated, update_source = created, create_source
        else:  # independent of any opt-out: opting out does not move updated_at
            updated = created + int(rand() * (-SECOND - created))
            update_source = "Account" if rand() < 0.7 else "Contact"
        permission = lc
        opt_in_source = opt_in = opt_out = opt_out_source = reason = deleted = None
        confirm = "off"
        if lc == DELETED:
            permission = self.regular[bisect_right(self.regular_cum, rand())]
            deleted = created + int(rand() * (-SECOND - created))
        if permission == EXPLICIT:
            if rand() < 0.7:
                opt_in_source, opt_in, confirm = "Contact", created + int(rand() * 600 * SECOND), "confirmed"
            else:
                opt_in_source, opt_in = "Account", created
        elif permission in (IMPLICIT, TEMP_HOLD):
            opt_in_source = "Account"
        elif permission == PENDING:
            opt_in_source, confirm = "Contact", "pending"
        elif lc == RESUBSCRIBED:  # opted out once, opted back in since: the opt-out fields are gone
            permission = EXPLICIT
            former_opt_out = created + int(rand() * (-SECOND - created))
            opt_in = former_opt_out + int(rand() * (-SECOND - former_opt_out))
            opt_in_source, confirm = "Contact", "confirmed"
        elif lc in self.forced:
            permission = UNSUBSCRIBED
            if lc == UNSUBSCRIBED_LONG_AGO:
                opt_out = self._opt_out_long_ago(created)
            elif lc == UNSUBSCRIBED_RECENTLY:
                opt_out = self._opt_out_recently(created)
            else:
                lo = max(created, -OPTOUT_SPAN)
                opt_out = lo + int(rand() * (-SECOND - lo))
                deleted = opt_out + int(rand() * (-SECOND - opt_out))
            if rand() < 0.6:
                opt_in_source = "Contact"
                if rand() < 0.8:
                    opt_in, confirm = min(created + int(rand() * 600 * SECOND), opt_out), "confirmed"
            else:
                opt_in_source = "Account"
            reason, opt_out_source = self._reason(lc)
        email_updated = opt_out if opt_out is not None else opt_in if opt_in is not None else created
        if style == EASTERN_STYLE:  # whole seconds: the -05:00 rendering has no milliseconds
            created, updated, email_updated = (t // SECOND * SECOND for t in (created, updated, email_updated))
            opt_in, opt_out, deleted = _floor_second(opt_in), _floor_second(opt_out), _floor_second(deleted)
        state = permission + DELETED_OFFSET if deleted is not None else permission
        mask = self.masks[bisect_right(self.mask_cum, rand())]
        return (
            i + 1, _uuid(self.rnd), email, first, last, create_source, update_source, created, updated,
            email_updated, permission, state, opt_in_source, opt_in, confirm, opt_out, opt_out_source, reason,
            deleted, style, mask, lc,
        )  # fmt: skip

    def _opt_out_long_ago(self, created: int) -> int:
        """Mostly shortly after a campaign sent after the contact's creation; before the recent window."""
        rand = self.rnd.random
        if rand() < CAMPAIGN_OPTOUT_SHARE:
            k = bisect_right(self.campaigns, created)
            if k < len(self.campaigns):
                base = self.campaign_cum[k - 1] if k else 0.0
                c = bisect_right(self.campaign_cum, base + rand() * (1.0 - base))
                sent = self.campaigns[min(max(c, k), len(self.campaigns) - 1)]
                return min(sent + int(self.rnd.expovariate(1 / (8 * HOUR))), -RECENT_WINDOW)
        lo = max(created, -OPTOUT_SPAN)
        return lo + int(rand() * (-RECENT_WINDOW - lo))

    def _opt_out_recently(self, created: int) -> int:
        """Within the 30 days before the anchor (strictly), some in bursts after recent campaigns."""
        rand = self.rnd.random
        lo, hi = max(created, -RECENT_WINDOW) + SECOND, -SECOND
        if rand() < RECENT_BURST_SHARE:
            t = self.bursts[int(rand() * len(self.bursts))] + int(self.rnd.expovariate(1 / (6 * HOUR)))
            if lo < t < hi:
                return t
        return lo + int(rand() * (hi - lo))

    def _reason(self, lc: int) -> tuple[str | None, str]:
        """(opt_out_reason or None, opt_out_source); the first opt-outs of each group cover every kind."""
        rand = self.rnd.random
        nth = self.forced[lc]
        if nth < len(FORCED_REASON_KINDS):
            self.forced[lc] = nth + 1
            kind = FORCED_REASON_KINDS[nth]
        else:
            kind = self.kinds[bisect_right(self.kind_cum, rand())]
        choices = REASONS[kind]
        reason = choices[int(rand() * len(choices))]
        # The account owner removing someone leaves no reason; about 15% of opt-outs overall.
        if reason is None and nth >= len(FORCED_REASON_KINDS) and rand() < 0.375:
            return None, "Account"
        return reason, "Contact"


def _start(
    contacts: int, seed: int, unsubscribed_share: float, recent_share: float
) -> tuple[bytearray, list[tuple[Any, ...]], _ContactFactory]:
    """The first draws of the account's random stream: lifecycles, the lists' rows, and the contact factory (which
    has drawn the campaign days). ``populate`` goes on from here; ``campaign_days`` replays just this much."""
    rnd = random.Random(f"ccoptout-xl-sandbox:{seed}")
    lifecycles = _lifecycles(rnd, contacts, lifecycle_counts(contacts, unsubscribed_share, recent_share))
    lists = []
    for bit, (name, description, favorite, _) in enumerate(LISTS):
        created = -CREATION_SPAN + bit * 40 * DAY + int(rnd.random() * DAY)
        updated = created + int(rnd.random() * (-created - DAY))
        lists.append((bit, _uuid(rnd), name, description, int(favorite), created, updated))
    return lifecycles, lists, _ContactFactory(rnd, contacts)


def campaign_days(
    contacts: int, seed: int, unsubscribed_share: float, recent_share: float
) -> tuple[list[int], list[int]]:
    """The send instants (ms relative to the anchor, ascending) of the campaigns behind the account's bursts of
    opt-outs: ``CAMPAIGNS`` days over the opt-out span before the recent window, and the three recent bursts.

    Replayed from the account's random stream exactly as ``populate`` drew them (about a second for 1,000,000
    contacts: the lifecycles are shuffled first), so an account generated before campaigns existed has them too.
    """
    _, _, factory = _start(contacts, seed, unsubscribed_share, recent_share)
    return list(factory.campaigns), list(factory.bursts)


def populate(
    conn: sqlite3.Connection,
    contacts: int,
    seed: int,
    unsubscribed_share: float,
    recent_share: float,
    bulk_removal: int = 0,
) -> None:
    """Create the schema and fill it. The caller commits."""
    conn.executescript(SCHEMA)
    lifecycles, lists, factory = _start(contacts, seed, unsubscribed_share, recent_share)
    conn.executemany(
        "INSERT INTO lists (bit, list_id, name, description, favorite, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
        lists,
    )
    rows: list[tuple[Any, ...]] = []
    previous_created = -CREATION_SPAN
    created_in_seq_order = True
    for i in range(contacts):
        row = factory.row(i, lifecycles[i])
        created_in_seq_order = created_in_seq_order and row[7] >= previous_created
        previous_created = row[7]
        rows.append(row)
        if len(rows) >= _BATCH:
            conn.executemany(_INSERT, rows)
            rows.clear()
    if rows:
        conn.executemany(_INSERT, rows)
    if bulk_removal:
        _remove_in_bulk(conn, bulk_removal)
    conn.executescript(INDEXES)
    conn.execute("INSERT INTO meta VALUES ('created_in_seq_order', ?)", (str(int(created_in_seq_order)),))
    _count_members(conn)
    conn.execute("ANALYZE")


BULK_REMOVAL_AT = -200 * DAY  # whole seconds before the anchor


def _remove_in_bulk(conn: sqlite3.Connection, count: int) -> None:
    """The account owner removed ``count`` long-ago opt-outs at one and the same second (an imported list).

    Thousands of opt-outs sharing one instant is what a window search cannot split: tests use it.
    """
    conn.execute(
        "UPDATE contacts SET opt_out = ?, email_updated = ?, opt_out_source = 'Account', opt_out_reason = NULL "
        "WHERE seq IN (SELECT seq FROM contacts WHERE lifecycle = ? AND created < ? ORDER BY seq LIMIT ?)",
        (BULK_REMOVAL_AT, BULK_REMOVAL_AT, UNSUBSCRIBED_LONG_AGO, BULK_REMOVAL_AT, count),
    )


def _count_members(conn: sqlite3.Connection) -> None:
    members_all = [0] * len(LISTS)
    members_active = [0] * len(LISTS)
    query = "SELECT lists, state IN (0, 1), COUNT(*) FROM contacts WHERE state < ? GROUP BY 1, 2"
    for mask, active, count in conn.execute(query, (DELETED_OFFSET,)):
        for bit in range(len(LISTS)):
            if mask >> bit & 1:
                members_all[bit] += count
                if active:
                    members_active[bit] += count
    conn.executemany(
        "UPDATE lists SET members_all = ?, members_active = ? WHERE bit = ?",
        [(members_all[b], members_active[b], b) for b in range(len(LISTS))],
    )
