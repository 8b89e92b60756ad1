"""Errors raised by ccoptout-xl.

Every expected failure is a :class:`CcOptOutError` whose ``str()`` is one line a person can act on, and whose
``exit_code`` is what the command line ends with. Messages never include an access token.
"""

from __future__ import annotations

import datetime as dt


class CcOptOutError(Exception):
    """Base class: an expected failure with a one-line, user-facing message."""

    exit_code = 1


class UsageError(CcOptOutError, ValueError):
    """Bad input from the user: a date, a time zone, an option value."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration is unusable (for example a plain-HTTP API address that is not loopback)."""


class ApiError(CcOptOutError):
    """The API answered with an error, or could not be reached after retries."""

    exit_code = 3

    def __init__(self, message: str, status: int | None = None, error_key: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_key = error_key


class BadRequest(ApiError):
    """HTTP 400: the API rejected a parameter."""


class MalformedResponse(ApiError):
    """The API answered 2xx with a body that is not the JSON we expect."""


class AuthError(ApiError):
    """HTTP 401/403: the access token is missing, invalid, expired or lacks a scope."""

    exit_code = 4


class CampaignsNotAllowed(AuthError):
    """The sign-in lacks the campaign_data permission that campaign reports need (a sign-in from before them)."""


class SignInFailed(AuthError):
    """Signing in did not complete: refused in the browser, the code expired, the app is misconfigured."""


class SignInRequired(AuthError):
    """The stored sign-in is gone, revoked, expired or damaged: the user must run ``ccoptout-xl login`` again."""

    exit_code = 7


class QuotaExceeded(ApiError):
    """HTTP 429 ``quota_exceeded``: the daily request quota is used up until 00:00 UTC."""

    exit_code = 5

    def __init__(self, message: str, reset_at: dt.datetime) -> None:
        super().__init__(message, status=429, error_key="quota_exceeded")
        self.reset_at = reset_at


class QuotaGuard(ApiError):
    """Syncing would eat into the last part of the daily quota that every integration of the account shares."""

    exit_code = 5


class OutputError(CcOptOutError):
    """The output file could not be written or replaced; any previous file is left as it was."""

    exit_code = 6


class StoreError(OutputError):
    """The local opt-out store (or its folder) cannot be read or written: a full disk, a read-only or unusable
    folder. The previous snapshot is left as it was."""
