"""ccoptout-xl: Constant Contact opt-outs, into Excel.

The library is what the command line and Excel call (see the README's "As a library")::

    import ccoptout_xl as cc

    zone = cc.resolve_timezone("America/New_York")
    with cc.connect() as client:                      # CCOPTOUT_API_URL and the stored sign-in
        answer = cc.get_optouts(client, cc.OptOutQuery(since=cc.parse_when("2026-05-01", zone), latest=500))
        for optout in answer:                         # newest first
            print(optout.opt_out_date, optout.email)
        answer.close()
"""

from .client import Client
from .dates import parse_when, resolve_timezone
from .exceptions import (
    ApiError,
    AuthError,
    CcOptOutError,
    OutputError,
    QuotaExceeded,
    QuotaGuard,
    SignInRequired,
    StoreError,
    UsageError,
)
from .formats import write_changes, write_optouts
from .optouts import OptOut
from .query import OptOutQuery, QueryResult, from_api
from .service import (
    Answer,
    Change,
    Changes,
    ReportResult,
    SignInStatus,
    StorePolicy,
    WorkbookCopy,
    cache_state,
    clear_cache,
    connect,
    get_changes,
    get_optouts,
    make_report,
    sign_in,
    sign_in_status,
    sign_out,
    sync,
    write_workbook,
)
from .store import StoreState, SyncReport
from .version import __version__

__all__ = [
    "Answer",
    "ApiError",
    "AuthError",
    "CcOptOutError",
    "Change",
    "Changes",
    "Client",
    "OptOut",
    "OptOutQuery",
    "OutputError",
    "QueryResult",
    "QuotaExceeded",
    "QuotaGuard",
    "ReportResult",
    "SignInRequired",
    "SignInStatus",
    "StoreError",
    "StorePolicy",
    "StoreState",
    "SyncReport",
    "UsageError",
    "WorkbookCopy",
    "__version__",
    "cache_state",
    "clear_cache",
    "connect",
    "from_api",
    "get_changes",
    "get_optouts",
    "make_report",
    "parse_when",
    "resolve_timezone",
    "sign_in",
    "sign_in_status",
    "sign_out",
    "sync",
    "write_changes",
    "write_optouts",
    "write_workbook",
]
