"""Where ccoptout-xl keeps its settings and sign-in, and which Constant Contact app it signs in with.

The app (created once in Constant Contact's developer portal, see the README's "Signing in") is read from the
environment first, then from ``config.ini`` in the user's config folder:

    [oauth]
    client_id = 1a2b3c...
    # client_secret = ...   (only for a confidential app)
    # redirect_uri = http://localhost:8765/callback
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

from .exceptions import ConfigError
from .files import NotARegularFile, read_regular_file
from .settings import (
    AUTH_URL_ENV,
    CLIENT_ID_ENV,
    CLIENT_SECRET_ENV,
    REDIRECT_URI_ENV,
    checked_url,
    config_dir,
    env,
    is_loopback,
    validate_base_url,
)
from .text import quoted

DEFAULT_AUTH_URL = "https://authz.constantcontact.com/oauth2/default/v1"
DEFAULT_REDIRECT_URI = "http://localhost:8765/callback"
SCOPES = ("contact_data", "offline_access", "account_read", "campaign_data")  # campaign_data: campaign reports


def config_file() -> Path:
    return config_dir() / "config.ini"


@dataclass(frozen=True)
class OAuthApp:
    """The Constant Contact app ccoptout-xl signs in as, and the authorization server's addresses."""

    client_id: str
    client_secret: str | None = None
    auth_url: str = DEFAULT_AUTH_URL
    redirect_uri: str = DEFAULT_REDIRECT_URI

    def __post_init__(self) -> None:
        if not _plain_value(self.client_id, 200):
            raise ConfigError(
                "The app's client id (CCOPTOUT_CLIENT_ID or client_id in config.ini) must be one line of at most "
                "200 visible characters: copy the API key from Constant Contact's developer portal again."
            )
        if self.client_secret is not None and not _plain_value(self.client_secret, 500):
            raise ConfigError(
                "The app's client secret (CCOPTOUT_CLIENT_SECRET or client_secret in config.ini) must be one line "
                "of visible characters: copy it from Constant Contact's developer portal again."
            )
        auth_url = validate_base_url(self.auth_url, "the sign-in server address (auth_url)", DEFAULT_AUTH_URL)
        object.__setattr__(self, "auth_url", auth_url)
        redirect = checked_url(self.redirect_uri, "the redirect URI (redirect_uri)", DEFAULT_REDIRECT_URI)
        if redirect.scheme != "http" or not redirect.hostname or not is_loopback(redirect.hostname):
            raise ConfigError(
                f"The redirect URI {quoted(self.redirect_uri)} must be http://localhost:PORT/PATH (or 127.0.0.1): "
                "the browser sign-in listens on this computer only."
            )

    @property
    def confidential(self) -> bool:
        return bool(self.client_secret)

    @property
    def token_url(self) -> str:
        return f"{self.auth_url}/token"

    @property
    def authorize_url(self) -> str:
        return f"{self.auth_url}/authorize"

    @property
    def device_url(self) -> str:
        return f"{self.auth_url}/device/authorize"

    @classmethod
    def load(cls) -> OAuthApp:
        """The app from the environment or ``config.ini``; a :class:`ConfigError` saying how if there is none."""
        app = cls.load_optional()
        if app is None:
            raise ConfigError(
                f"No Constant Contact app is set up: set CCOPTOUT_CLIENT_ID, or put client_id under [oauth] in "
                f"{config_file()} (see the README, 'Signing in')."
            )
        return app

    @classmethod
    def load_optional(cls) -> OAuthApp | None:
        settings = _file_settings()
        client_id = env(CLIENT_ID_ENV) or settings.get("client_id")
        if not client_id:
            return None
        return cls(
            client_id=client_id.strip(),
            client_secret=(env(CLIENT_SECRET_ENV) or settings.get("client_secret") or "").strip() or None,
            auth_url=env(AUTH_URL_ENV) or settings.get("auth_url") or DEFAULT_AUTH_URL,
            redirect_uri=(env(REDIRECT_URI_ENV) or settings.get("redirect_uri") or DEFAULT_REDIRECT_URI),
        )


def _file_settings() -> dict[str, str]:
    path = config_file()
    parser = configparser.ConfigParser(interpolation=None)  # a '%' in a secret is just a character
    try:
        parser.read_string(read_regular_file(path).decode("utf-8"), source=str(path))
    except FileNotFoundError:
        return {}
    except NotARegularFile as exc:
        raise ConfigError(f"Cannot read {path}: it is {exc.kind}, not a file. Remove it, or write the file.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror or exc}. Fix or delete the file.") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        problem = str(exc).splitlines()[0] if isinstance(exc, configparser.Error) else "it is not UTF-8 text"
        raise ConfigError(f"Cannot read {path}: {problem[:200]}. Fix or delete the file.") from None
    return {key: value.strip() for key, value in parser["oauth"].items()} if parser.has_section("oauth") else {}


def _plain_value(text: str, limit: int) -> bool:
    """One line of visible characters, not too long: what an id or secret pasted correctly looks like."""
    return 0 < len(text) <= limit and text.isprintable() and not any(ch.isspace() for ch in text)
