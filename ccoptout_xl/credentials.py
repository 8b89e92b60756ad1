"""Keeping the sign-in: access and refresh tokens in the OS keyring, or in an owner-only file.

The keyring (Windows Credential Manager, macOS Keychain, Secret Service) is used when this computer has one;
Windows caps one credential at 2,560 bytes, so the access token, the refresh token and their details are three
entries. Where there is no keyring (a Linux server, CI) the tokens go to ``tokens.json`` in the config folder,
readable by its owner only, written atomically. ``CCOPTOUT_TOKEN_STORE=file`` or ``keyring`` overrides the
choice. Tokens never appear in messages: only where they are kept.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeGuard, TypeVar

from .exceptions import ConfigError, SignInRequired
from .files import NotARegularFile, atomic_path, read_regular_file, retry_while_busy
from .settings import TOKEN_STORE_ENV, config_dir, env

T = TypeVar("T")
KEYRING_SERVICE = "ccoptout-xl"
SIGN_IN_AGAIN = "sign in again with `ccoptout-xl login`"


@dataclass(frozen=True)
class Tokens:
    """One sign-in: the access token, the refresh token that renews it, and when the access token expires."""

    access_token: str
    refresh_token: str | None = None
    expires_at: dt.datetime | None = None
    scope: str = ""

    def __repr__(self) -> str:  # never print the tokens themselves
        return f"Tokens(expires_at={self.expires_at}, scope={self.scope!r}, refresh={self.refresh_token is not None})"

    def expires_within(self, margin: dt.timedelta, now: dt.datetime | None = None) -> bool:
        """Whether the access token is expired, or will be within ``margin``."""
        if self.expires_at is None:
            return False  # unknown: use it until the API says otherwise (a 401 triggers a refresh)
        return (now or dt.datetime.now(dt.timezone.utc)) + margin >= self.expires_at

    @classmethod
    def from_response(cls, body: Mapping[str, Any], previous_refresh: str | None = None) -> Tokens:
        """Tokens from a token-endpoint answer; expiry from the JWT's ``exp`` (``expires_in`` is not reliable)."""
        access, refresh = body.get("access_token"), body.get("refresh_token")
        if not is_token(access) or not (refresh in (None, "") or is_token(refresh)):
            raise SignInRequired("The sign-in server's answer had no usable access token; " + SIGN_IN_AGAIN + ".")
        expires_at = jwt_expiry(access)
        lifetime = body.get("expires_in")
        if expires_at is None and isinstance(lifetime, (int, float)) and 0 < lifetime < 10 * 365 * 86_400:
            expires_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=float(lifetime))
        refresh = refresh or previous_refresh  # a long-lived refresh token may not be resent
        return cls(access, refresh, expires_at, str(body.get("scope") or ""))


# RFC 6750's b64token: what a bearer token may contain. Anything else (a line break from a token pasted across
# two lines, a space, a quote) would break the Authorization header, and the HTTP library would then print the
# whole header, token included, in its error.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MAX_TOKEN_LENGTH = 8192


def is_token(text: object) -> TypeGuard[str]:
    """Whether ``text`` has the shape of a bearer token (RFC 6750 ``b64token``, at most 8 KiB)."""
    return isinstance(text, str) and len(text) <= MAX_TOKEN_LENGTH and _TOKEN.fullmatch(text) is not None


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT access token (read, not verified: the API verifies it); {} if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def jwt_expiry(token: str) -> dt.datetime | None:
    """The ``exp`` claim of a JWT access token, or None."""
    try:
        return dt.datetime.fromtimestamp(float(jwt_claims(token)["exp"]), dt.timezone.utc)
    except (ValueError, KeyError, TypeError, OverflowError, OSError):
        return None


def tokens_from_json(raw: bytes | str) -> Tokens | None:
    """The tokens saved as ``{"access_token": ..., "refresh_token": ..., "expires_at": ..., "scope": ...}``;
    None for anything else (bad encoding, wrong types, a naive or unreadable expiry, nesting), never an error
    that could carry the file's text."""
    try:
        data = json.loads(raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(data, dict):
        return None
    access, refresh = data.get("access_token"), data.get("refresh_token")
    expires, scope = data.get("expires_at"), data.get("scope")
    if not is_token(access) or not (refresh is None or is_token(refresh)) or not isinstance(scope, (str, type(None))):
        return None
    expires_at = None
    if expires is not None:
        try:
            expires_at = dt.datetime.fromisoformat(expires) if isinstance(expires, str) else None
        except ValueError:
            return None
        if expires_at is None or expires_at.tzinfo is None:
            return None
    return Tokens(access, refresh, expires_at, scope or "")


class TokenKeeper(Protocol):
    """Where the tokens of one app are kept."""

    where: str

    def load(self) -> Tokens | None: ...

    def save(self, tokens: Tokens) -> None: ...

    def clear(self) -> bool: ...


class TokenFile:
    """``tokens.json``, owner-only (0600), replaced atomically so a crash never leaves half a sign-in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = f"the file {path}"

    def load(self) -> Tokens | None:
        try:
            raw = retry_while_busy(lambda: read_regular_file(self.path))
        except FileNotFoundError:
            return None
        except (NotARegularFile, IsADirectoryError) as exc:  # IsADirectoryError: Windows cannot open a folder
            kind = exc.kind if isinstance(exc, NotARegularFile) else "a folder"
            raise SignInRequired(
                f"The stored sign-in {self.path} is {kind}, not a file: remove it, then {SIGN_IN_AGAIN}."
            ) from None
        except OSError as exc:
            raise SignInRequired(f"Cannot read the stored sign-in {self.path}: {exc.strerror or exc}.") from None
        self._keep_private()
        tokens = tokens_from_json(raw)
        if tokens is None:
            aside = self.path.with_name(self.path.name + ".damaged")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)  # once: the next run starts clean instead of failing again
                os.chmod(aside, 0o600)
            raise SignInRequired(
                f"The stored sign-in {self.path} was damaged and has been moved to {aside.name}; {SIGN_IN_AGAIN}."
            )
        return tokens

    def save(self, tokens: Tokens) -> None:
        data = asdict(tokens) | {"expires_at": tokens.expires_at.isoformat() if tokens.expires_at else None}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_path(self.path, mode=0o600) as temporary:
            temporary.write_text(json.dumps(data), encoding="utf-8")
        _fsync_folder(self.path.parent)

    def clear(self) -> bool:
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False

    def _keep_private(self) -> None:
        """Tokens readable by others (copied, restored from a backup) are made owner-only again."""
        with contextlib.suppress(OSError):
            if stat.S_IMODE(self.path.stat().st_mode) & 0o077:
                os.chmod(self.path, 0o600)


class TokenKeyring:
    """Three keyring entries per app: the access token, the refresh token, and their details (JSON)."""

    def __init__(self, client_id: str) -> None:
        import keyring

        self._keyring = keyring
        self._names = {kind: f"{client_id}:{kind}" for kind in ("access", "refresh", "details")}
        self.where = f"the system keyring ({type(keyring.get_keyring()).__name__}, service {KEYRING_SERVICE!r})"

    def load(self) -> Tokens | None:
        access = self._get("access")
        if access is None:
            return None
        try:
            details = json.loads(self._get("details") or "{}")
        except (ValueError, RecursionError):
            details = None
        tokens = None
        if isinstance(details, dict):
            fields = {"expires_at": details.get("expires_at"), "scope": details.get("scope")}
            tokens = tokens_from_json(
                json.dumps({"access_token": access, "refresh_token": self._get("refresh")} | fields)
            )
        if tokens is None:
            raise SignInRequired(f"The sign-in stored in {self.where} is damaged; {SIGN_IN_AGAIN}.")
        return tokens if tokens.expires_at else replace(tokens, expires_at=jwt_expiry(access))

    def save(self, tokens: Tokens) -> None:
        # The refresh token first: once it is stored, a crash can no longer lose the sign-in.
        if tokens.refresh_token:
            self._set("refresh", tokens.refresh_token)
        self._set("access", tokens.access_token)
        expires = tokens.expires_at.isoformat() if tokens.expires_at else None
        self._set("details", json.dumps({"expires_at": expires, "scope": tokens.scope}))

    def clear(self) -> bool:
        found = False
        for kind in self._names:
            with contextlib.suppress(self._keyring.errors.PasswordDeleteError):
                self._call(self._keyring.delete_password, kind)
                found = True
        return found

    def _get(self, kind: str) -> str | None:
        return self._call(self._keyring.get_password, kind)

    def _set(self, kind: str, value: str) -> None:
        self._call(self._keyring.set_password, kind, value)

    def _call(self, operation: Any, kind: str, *value: str) -> Any:
        try:
            return operation(KEYRING_SERVICE, self._names[kind], *value)
        except self._keyring.errors.PasswordDeleteError:
            raise
        except Exception as exc:  # KeyringError, and the platform's own (pywintypes.error, dbus errors)
            raise SignInRequired(
                f"The system keyring refused access ({type(exc).__name__}); unlock it, or set "
                f"{TOKEN_STORE_ENV}=file to keep the sign-in in an owner-only file instead."
            ) from None


def keyring_available() -> bool:
    """Whether this computer has a usable keyring backend (not the 'fail' or 'null' stand-ins)."""
    try:
        import keyring
        from keyring.backends import chainer, fail, null
    except ImportError:
        return False
    backend = keyring.get_keyring()
    if isinstance(backend, chainer.ChainerBackend):
        return bool(backend.backends)
    return not isinstance(backend, (fail.Keyring, null.Keyring))


def token_keeper(client_id: str) -> TokenKeeper:
    """The store for this app's tokens: the keyring when there is one, else the owner-only file."""
    choice = (env(TOKEN_STORE_ENV) or "").strip().lower()
    if choice not in ("", "file", "keyring"):
        raise ConfigError(f"{TOKEN_STORE_ENV} must be 'file' or 'keyring', not {choice!r}.")
    if choice == "keyring" or (not choice and keyring_available()):
        return TokenKeyring(client_id)
    return TokenFile(config_dir() / "tokens.json")


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
