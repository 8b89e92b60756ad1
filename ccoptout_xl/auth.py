"""Where access tokens come from.

The HTTP client asks a *token provider* for the current access token and tells it when the API answered 401.
For now the token comes from ``CCOPTOUT_ACCESS_TOKEN``; the OAuth sign-in plugs in here later without touching
the client.
"""

from __future__ import annotations

import os
from typing import Protocol

from .exceptions import AuthError

TOKEN_ENV = "CCOPTOUT_ACCESS_TOKEN"  # noqa: S105 - a variable name, not a secret


class TokenProvider(Protocol):
    """Supplies bearer tokens to :class:`~ccoptout_xl.http_client.HTTPClient`."""

    def access_token(self) -> str:
        """Return a token to send now (refreshing first if the provider can and must)."""
        ...

    def token_rejected(self, token: str) -> bool:
        """The API answered 401 to ``token``. Return True if a new token is now available to retry with."""
        ...


class StaticToken:
    """A fixed access token: it cannot be refreshed, so a 401 is final."""

    def __init__(self, token: str) -> None:
        if not token or not token.strip():
            raise AuthError("The access token is empty: set CCOPTOUT_ACCESS_TOKEN to a Constant Contact token.")
        self._token = token.strip()

    def access_token(self) -> str:
        return self._token

    def token_rejected(self, token: str) -> bool:
        return False

    def __repr__(self) -> str:  # never show the token itself
        return "StaticToken(<hidden>)"


def token_from_environment() -> StaticToken:
    """The token in ``CCOPTOUT_ACCESS_TOKEN``, or an :class:`AuthError` saying how to provide one."""
    token = os.environ.get(TOKEN_ENV, "")
    if not token.strip():
        raise AuthError(
            f"Not signed in: set {TOKEN_ENV} to a Constant Contact access token "
            "(or try the built-in sandbox with --demo)."
        )
    return StaticToken(token)
