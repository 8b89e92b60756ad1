"""What a user can do: the use cases that the command line, Excel and scripts all call.

Each use case opens what it needs (the API client, the local store, the sign-in), counts every API call it makes
against the account's daily quota, and *returns* its notices (the full-scan fallback, "answering from stored data
past the quota guard", an extra the API refused) with its result; ``on_notice`` also hears them as they happen, for
a front end that shows them live. Nothing here prints or writes a workbook cell: the front ends show the results.

Layers (``docs/architecture.md``): front ends (``cli``, ``excel``) -> this module -> store, query, report, sign-in
-> API client -> transport -> leaves (settings, text, dates, files, formats, table, optouts, exceptions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import campaigns as campaign_reports
from .auth import SignedInTokens, StaticToken, default_token_provider
from .campaigns import AttributedOptOuts, Campaign, CampaignCount, MemoryBook
from .client import Client
from .config import OAuthApp, config_file
from .credentials import SIGN_IN_AGAIN, Tokens, token_keeper
from .dates import zone_name
from .exceptions import ApiError, AuthError, CampaignsNotAllowed, CcOptOutError, QuotaGuard, SignInRequired, UsageError
from .history import Change
from .http_client import HTTPClient, RetryPolicy, TokenProvider
from .optouts import OptOut
from .query import MAX_LATEST, Notice, OptOutQuery, Progress, QueryResult, from_api
from .report import ReportInfo, ReportSummary, write_report
from .settings import API_URL_ENV, DEFAULT_API_URL, env, validate_base_url
from .store import MAX_AGE, OptOutStore, StoreState, SyncReport
from .workbook import ExcelSetup

__all__ = [
    "CAMPAIGNS_IF_ALLOWED",
    "CAMPAIGNS_OFF",
    "CAMPAIGNS_ON",
    "MAX_LATEST",
    "Answer",
    "Campaign",
    "CampaignCount",
    "CampaignCounts",
    "Change",
    "Changes",
    "Notices",
    "OptOut",
    "OptOutQuery",
    "ReportResult",
    "SignInStatus",
    "StorePolicy",
    "SyncReport",
    "WorkbookCopy",
    "cache_state",
    "clear_cache",
    "config_file",
    "connect",
    "get_campaign_counts",
    "get_changes",
    "get_optouts",
    "last_store",
    "make_report",
    "sign_in",
    "sign_in_status",
    "sign_out",
    "sync",
    "write_workbook",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
DEMO_CONTACTS = 20_000
DEMO_SEED = 1
# Whether a question joins each opt-out to its campaign: never, always (a sign-in without the campaign_data
# permission is then an error), or when the sign-in allows it (else a notice: Excel's Refresh).
CAMPAIGNS_OFF, CAMPAIGNS_ON, CAMPAIGNS_IF_ALLOWED = "off", "on", "if allowed"
CAMPAIGNS_REFUSED = (
    "The sign-in does not allow campaign reports (the campaign_data permission, which sign-ins made before "
    "ccoptout-xl read campaigns lack): sign in again with `ccoptout-xl login` to allow them."
)


@dataclass(frozen=True)
class StorePolicy:
    """How a question uses the local opt-out store."""

    use_store: bool = True  # False: ask the API directly and leave the store alone (--no-cache, the demo)
    refresh: bool = False  # sync first, however fresh the store is (--refresh, Excel's Refresh)
    max_age: dt.timedelta = MAX_AGE  # a store synced within this long is fresh enough (--max-age)
    force: bool = False  # sync even past the daily quota guard (--force)
    backstop: bool = True  # run a due backstop full sync (False: Excel's Refresh, which must answer quickly)
    full: bool = False  # sync in full (Excel's "Full sync")


class Notices(list[str]):
    """The notices of one use case, in order; each is also passed to ``on_notice`` as it happens."""

    def __init__(self, on_notice: Notice | None = None) -> None:
        super().__init__()
        self._forward = on_notice

    def __call__(self, message: str) -> None:
        self.append(message)
        (self._forward or log.warning)(message)  # logged when nobody listens, as before


@dataclass
class Answer:
    """The opt-outs a question asks for (newest first: iterate ``optouts``, then ``close()``), the list names when
    asked for, the API calls it took and its notices."""

    optouts: QueryResult
    calls: int
    notices: Notices
    list_names: dict[str, str] = field(default_factory=dict)
    synced: SyncReport | None = None  # what the sync before the answer did, if one ran
    campaigns: list[Campaign] | None = None  # the campaigns known, when asked for them (None: not joined)

    def __iter__(self) -> Iterator[OptOut]:
        return iter(self.optouts)

    def __len__(self) -> int:
        return len(self.optouts)

    def close(self) -> None:
        self.optouts.close()


@dataclass
class CampaignCounts:
    """A window's opt-outs per campaign, most first, then the row of those through none; calls and notices."""

    rows: list[CampaignCount]
    calls: int
    notices: Notices


@dataclass
class Changes:
    """What the local store learned since a date (opted out, re-subscribed, deleted), oldest first: iterate, then
    ``close()``. ``as_of``: when they were read (pass it as the next ``since`` to get only what is new)."""

    store: OptOutStore
    since: dt.datetime | None
    until: dt.datetime | None
    as_of: dt.datetime
    calls: int
    notices: Notices

    def __iter__(self) -> Iterator[Change]:
        return self.store.changes(self.since, self.until)

    def close(self) -> None:
        self.store.close()


@dataclass
class ReportResult:
    """What writing a report did: its summary, where it is, the API calls and the notices."""

    summary: ReportSummary
    path: Path
    calls: int
    notices: Notices


@dataclass
class SignInStatus:
    """What is known of the sign-in without renewing it (``ccoptout-xl status``)."""

    app: OAuthApp | None
    kept_in: str | None = None
    tokens: Tokens | None = None
    account_name: str | None = None


# -- the API ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def connect(*, demo: bool = False, tokens: TokenProvider | None = None, **http: Any) -> Iterator[Client]:
    """An API client: the API in ``CCOPTOUT_API_URL`` with the stored sign-in (or ``CCOPTOUT_ACCESS_TOKEN``), or
    with ``demo`` an in-process sandbox account of its own (gone when the block ends)."""
    if not demo:
        with Client.from_environment(tokens or default_token_provider(), **http) as client:
            yield client
        return
    from .sandbox import AccountSpec, Sandbox
    from .sandbox.oauth import SCOPES as EVERY_SCOPE  # the demo's sign-in allows campaign reports too

    # The account is this computer's own, in this process: no rate limit to keep to (reading every campaign's
    # report takes hundreds of calls, seconds here, minutes at the real API's 4 a second).
    spec = AccountSpec(contacts=DEMO_CONTACTS, seed=DEMO_SEED)
    with (
        Sandbox(spec, rate_limit=None, daily_quota=None, token_scopes=EVERY_SCOPE) as sandbox,
        Client(HTTPClient(sandbox.base_url, StaticToken(sandbox.token), **({"rate": None} | http))) as client,
    ):
        yield client


def account_name(client: Client, notice: Notice | None = None) -> str | None:
    """The account's organisation name; None (after a notice) if the API refuses it."""
    nothing: dict[str, Any] = {}
    summary = _optional(
        client.account_summary, nothing, "the account's name", notice if notice is not None else log.info
    )
    return str(summary.get("organization_name") or "") or None


# -- questions and syncs ---------------------------------------------------------------------------------------


def get_optouts(
    client: Client,
    query: OptOutQuery,
    policy: StorePolicy = StorePolicy(),
    *,
    list_names: bool = False,
    campaigns: str = CAMPAIGNS_OFF,
    on_progress: Progress | None = None,
    on_notice: Notice | None = None,
) -> Answer:
    """The opt-outs ``query`` asks for, newest first: from the local store (synced first when older than
    ``policy.max_age``, or when ``policy.refresh``; past the quota guard, from what is stored, after a notice), or
    with ``policy.use_store`` False from the API. With ``list_names`` the account's list names come too (an extra:
    ids are shown if the API refuses them). With ``campaigns`` (:data:`CAMPAIGNS_ON`, or
    :data:`CAMPAIGNS_IF_ALLOWED`) each opt-out carries the campaign it came through. Every call is counted against
    today's quota."""
    notices, before = Notices(on_notice), client.stats.calls
    try:  # the calls count, whatever happens
        result, synced, known = _optouts(client, query, policy, campaigns, on_progress, notices)
        try:
            nothing: dict[str, str] = {}
            names = _optional(client.list_names, nothing, "list names", notices) if list_names else nothing
        except BaseException:
            result.close()
            raise
    finally:
        _count_calls(client)
    return Answer(result, client.stats.calls - before, notices, names, synced, known)


def get_campaign_counts(
    client: Client,
    query: OptOutQuery,
    policy: StorePolicy = StorePolicy(),
    *,
    on_progress: Progress | None = None,
    on_notice: Notice | None = None,
) -> CampaignCounts:
    """The opt-outs ``query`` asks for, counted per campaign (``ccoptout-xl campaigns``): most first, with each
    campaign's name and last send time, then one row for the opt-outs through no campaign."""
    answer = get_optouts(client, query, policy, campaigns=CAMPAIGNS_ON, on_progress=on_progress, on_notice=on_notice)
    try:
        rows = campaign_reports.count_by_campaign(answer, answer.campaigns or [])
    finally:
        answer.close()
    return CampaignCounts(rows, answer.calls, answer.notices)


def get_changes(
    client: Client,
    since: dt.datetime | None,
    until: dt.datetime | None = None,
    policy: StorePolicy = StorePolicy(),
    *,
    on_progress: Progress | None = None,
    on_notice: Notice | None = None,
) -> Changes:
    """What the local store learned at or after ``since`` (and before ``until``): contacts first seen opted out,
    re-subscribed, deleted, oldest first; the store is synced first when older than ``policy.max_age``."""
    if not policy.use_store:
        raise UsageError("Changes are what the local store learned: they need it (leave out --no-cache).")
    notices, before = Notices(on_notice), client.stats.calls
    try:
        store, _ = _synced_store(client, policy, on_progress, notices)
    finally:
        _count_calls(client)
    try:
        began = store.history_since
        if began is not None and since is not None and since < began:
            notices(
                f"The local store began recording changes at {began:%Y-%m-%d %H:%M} UTC: earlier ones are not known, "
                "and every opt-out it then found is listed as opted out at that time."
            )
        as_of = store.settled_now()
    except BaseException:
        store.close()
        raise
    return Changes(store, since, until, as_of, client.stats.calls - before, notices)


def sync(
    client: Client,
    *,
    full: bool = False,
    force: bool = False,
    on_progress: Progress | None = None,
    on_notice: Notice | None = None,
) -> SyncReport:
    """Bring the local store of ``client``'s account up to date (see :meth:`OptOutStore.sync`), the backstop full
    sync included when it is due."""
    notices = Notices(on_notice)
    with OptOutStore.for_client(client, on_notice=notices) as store:
        report = store.sync(client, full=full, force=force, on_progress=on_progress)
    return dataclasses.replace(report, notices=tuple(notices))


def make_report(
    client: Client,
    query: OptOutQuery,
    path: str | os.PathLike[str],
    policy: StorePolicy = StorePolicy(),
    *,
    zone: dt.tzinfo = dt.timezone.utc,
    query_text: str = "",
    campaigns: bool = False,
    on_progress: Progress | None = None,
    on_notice: Notice | None = None,
) -> ReportResult:
    """Write the Excel report of the opt-outs ``query`` asks for to ``path`` (atomically), with list names and the
    account's name (extras: the report is written without them, after a notice, if the API refuses them)."""
    before = client.stats.calls
    joined = CAMPAIGNS_ON if campaigns else CAMPAIGNS_OFF
    answer = get_optouts(
        client, query, policy, list_names=True, campaigns=joined, on_progress=on_progress, on_notice=on_notice
    )
    try:
        name = account_name(client, answer.notices)
        _count_calls(client)
        info = ReportInfo(
            query=query_text or query.describe(zone),
            covers=query.describe(zone),
            time_zone=zone_name(zone),
            account_name=name or "",
            api_calls=client.stats.calls - before,
            since=query.since,
            until=query.until,
            latest=query.latest,
        )
        summary = write_report(
            answer.optouts, path, zone=zone, list_names=answer.list_names, info=info, campaigns=answer.campaigns
        )
    finally:
        answer.close()
    return ReportResult(summary, Path(path), client.stats.calls - before, answer.notices)


# -- the local store, without the network -----------------------------------------------------------------------


def cache_state(*, on_notice: Notice | None = None) -> StoreState:
    """Where the local store of the signed-in account is, what it holds, how fresh: no API call, no renewal."""
    with _account_store(on_notice) as store:
        return store.state()


def clear_cache(*, on_notice: Notice | None = None) -> int:
    """Forget the stored opt-outs (waiting for a sync in progress); return how many there were. No API call."""
    with _account_store(on_notice) as store:
        rows = store.state().rows
        store.clear()
        return rows


@contextlib.contextmanager
def last_store() -> Iterator[OptOutStore | None]:
    """The store most recently synced, found without any token or API call (for worksheet functions, which must
    never wait on the network); None before the first sync."""
    store = OptOutStore.last_used()
    if store is None:
        yield None
        return
    with store:
        yield store if store.last_sync_at is not None else None


# -- signing in ----------------------------------------------------------------------------------------------


def sign_in(
    *,
    browser: bool = False,
    opener: Callable[[str], Any] | None = None,
    show: Callable[[str], None] | None = None,
) -> tuple[str, str | None]:
    """Sign in (the device flow, or with ``browser`` the authorization code flow with PKCE) and keep the sign-in;
    return where it is kept and the account's name (None if it cannot be read)."""
    from .signin import browser_sign_in, device_sign_in

    app = OAuthApp.load()
    keeper = token_keeper(app.client_id)
    if browser:
        tokens = browser_sign_in(app, opener=opener or (lambda url: None))
    else:
        tokens = device_sign_in(app, opener=opener, show=show or print)
    keeper.save(tokens)
    SignedInTokens(app, keeper).note_token_call()  # a renewal right after waits its second, not a refusal
    return keeper.where, _name_with(tokens.access_token)


def sign_out() -> tuple[bool, str]:
    """Forget the kept sign-in; return whether there was one, and where it was kept."""
    keeper = token_keeper(OAuthApp.load().client_id)
    return keeper.clear(), keeper.where


def sign_in_status() -> SignInStatus:
    """The app, where the sign-in is kept, its tokens' expiry and the account's name: never a renewal (the account
    is asked for only while the access token is valid)."""
    app = OAuthApp.load_optional()
    if app is None:
        return SignInStatus(None)
    keeper = token_keeper(app.client_id)
    tokens = keeper.load()
    status = SignInStatus(app, keeper.where, tokens)
    now = dt.datetime.now(dt.timezone.utc)
    if tokens is not None and (tokens.expires_at is None or tokens.expires_at > now):
        status.account_name = _name_with(tokens.access_token)
    return status


# -- the workbook ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkbookCopy:
    """A copy of OptOuts.xlsm written by :func:`write_workbook`: where, the interpreter it names, and what this
    computer's Excel needs to start it (``setup.ready``; ``setup.lines`` to show)."""

    path: Path
    python: str
    setup: ExcelSetup


def write_workbook(dest: str | os.PathLike[str], python: str | None = None) -> WorkbookCopy:
    """Write a copy of OptOuts.xlsm set up for ``python`` (default: this Python, as Excel should start it) to
    ``dest``, then set up this computer's Excel to start it as far as a program can and say what is left
    (:func:`~ccoptout_xl.workbook.set_up_excel`: on macOS xlwings' RunPython install step, on Windows a check that
    the interpreter exists)."""
    from .workbook import interpreter, set_up_excel
    from .workbook import write_workbook as write_copy

    python = python or interpreter()
    path = write_copy(Path(dest), python)
    return WorkbookCopy(path, python, set_up_excel(python))


# -- inside ------------------------------------------------------------------------------------------------------


def _optouts(
    client: Client,
    query: OptOutQuery,
    policy: StorePolicy,
    campaigns: str,
    on_progress: Progress | None,
    notices: Notices,
) -> tuple[QueryResult, SyncReport | None, list[Campaign] | None]:
    """The opt-outs, what the sync did, and the campaigns known when the opt-outs carry theirs."""
    required = campaigns == CAMPAIGNS_ON
    if not policy.use_store:
        result = from_api(client, query, on_progress=on_progress, on_notice=notices)
        if campaigns == CAMPAIGNS_OFF:
            return result, None, None
        try:
            read, rows = campaign_reports.read_attribution(client, _oldest_asked(query, result), MemoryBook())
        except AuthError as exc:
            try:
                _campaigns_refused(exc, required, notices)
            except BaseException:
                result.close()
                raise
            return result, None, None
        except BaseException:
            result.close()
            raise
        attribution = campaign_reports.attribute(result, rows, read)
        joined = QueryResult(query, AttributedOptOuts(result.found, attribution), result.calls, result.full_scan)
        return joined, None, read
    store, synced = _synced_store(client, policy, on_progress, notices)
    try:
        known: list[Campaign] | None = None
        if campaigns != CAMPAIGNS_OFF:
            floor = _oldest_asked(query, store.query(query))
            try:
                if synced is not None or not store.campaigns_cover(floor):  # synced now, or never this far back
                    store.sync_campaigns(client, floor, force=policy.force)
                known = store.campaigns()
            except AuthError as exc:
                _campaigns_refused(exc, required, notices)
            except QuotaGuard as guard:
                notices(f"{guard} Answering with the campaign reports stored.")
                known = store.campaigns()
        result = store.query(query, close_store=True, campaigns=known is not None)
    except BaseException:
        store.close()
        raise
    result.calls = synced.calls if synced else 0
    return result, synced, known


def _oldest_asked(query: OptOutQuery, result: QueryResult) -> dt.datetime | None:
    """How far back the campaign reports must be read for ``query``: its since, or for the latest N the date of
    the N-th newest opt-out ``result`` holds (None: all the way)."""
    if query.latest is None or query.since is not None:
        return query.since
    oldest = None
    for optout in result:  # newest first, at most N
        oldest = optout.opt_out_date
    return oldest


def _campaigns_refused(exc: AuthError, required: bool, notices: Notices) -> None:
    """A campaign call the API refused: without the campaign_data permission, an error when campaigns are
    ``required``, else a notice (the opt-outs are then shown without them); any other refusal as it is."""
    if exc.status != 403:
        raise exc
    if required:
        raise CampaignsNotAllowed(CAMPAIGNS_REFUSED, status=403) from None
    notices(CAMPAIGNS_REFUSED + " The opt-outs are shown without their campaigns.")


def _synced_store(
    client: Client, policy: StorePolicy, on_progress: Progress | None, notices: Notices
) -> tuple[OptOutStore, SyncReport | None]:
    """The account's store, synced first as ``policy`` says, and what the sync did (None: none ran)."""
    store = OptOutStore.for_client(client, on_notice=notices)
    synced = None
    try:
        if policy.refresh or policy.full or not store.is_fresh(policy.max_age):
            try:
                synced = store.sync(
                    client, full=policy.full, force=policy.force, backstop=policy.backstop, on_progress=on_progress
                )
            except QuotaGuard as guard:
                stored_at = store.last_sync_at
                if stored_at is None:
                    raise
                notices(f"{guard} Answering from the opt-outs stored at {stored_at:%Y-%m-%d %H:%M} UTC.")
        return store, synced
    except BaseException:
        store.close()
        raise


def _count_calls(client: Client) -> None:
    """Count what ``client`` spent and has not counted yet (list names, the account, --no-cache) against today's
    quota, in the account's store if it has one (``--no-cache`` never creates a store)."""
    uncounted = client.stats.calls - client.calls_counted
    if uncounted <= 0:
        return
    try:
        if OptOutStore.path_for(client).is_file():
            with OptOutStore.for_client(client) as store:
                store.count_calls(client)
    except (CcOptOutError, OSError) as exc:  # the work is done (or failed already): only the guard's count is lost
        log.warning("note: %d API calls could not be counted against today's quota: %s", uncounted, exc)


@contextlib.contextmanager
def _account_store(on_notice: Notice | None) -> Iterator[OptOutStore]:
    """The store of the signed-in account, named from the kept token as it is (never renewed: no network)."""
    provider = default_token_provider()
    if isinstance(provider, SignedInTokens):
        kept = provider.keeper.load()
        if kept is None:
            raise SignInRequired(f"Not signed in ({provider.keeper.where} holds no sign-in); {SIGN_IN_AGAIN}.")
        token = kept.access_token
    else:
        token = provider.access_token()
    base_url = validate_base_url(env(API_URL_ENV) or DEFAULT_API_URL)
    with OptOutStore.at(base_url, token, on_notice=on_notice) as store:
        yield store


def _name_with(access_token: str) -> str | None:
    """The account's name, with this access token as it is (no renewal); None if it cannot be read."""
    try:
        with connect(tokens=StaticToken(access_token), retry=RetryPolicy(attempts=2)) as client:
            return account_name(client)
    except ApiError:
        return None


def _optional(fetch: Callable[[], T], fallback: T, what: str, notice: Notice) -> T:
    """``fetch()``, or ``fallback`` after a notice if the API refuses it (for extras such as list names)."""
    try:
        return fetch()
    except ApiError as exc:
        notice(f"Could not read {what} ({exc}); going on without it.")
        return fallback
