"""Compact JWTs signed with HMAC-SHA256 (RFC 7519, ``alg`` HS256), with the standard library only."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any

HEADER = {"alg": "HS256", "typ": "JWT", "kid": "sandbox"}


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of ``b64url``; ValueError on anything else."""
    try:
        raw = text.encode("ascii")
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("not base64url") from exc


class JwtSigner:
    """Signs claims into tokens and checks tokens it signed, with one secret key."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        self._header = b64url(json.dumps(HEADER, separators=(",", ":")).encode())

    def sign(self, claims: dict[str, Any]) -> str:
        """``header.payload.signature``."""
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{payload}"
        return f"{signing_input}.{self._mac(signing_input)}"

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this signer made (signature and header checked, nothing else), or None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header, payload, signature = parts
        try:
            mac = self._mac(f"{header}.{payload}")
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(mac.encode("ascii"), signature.encode("utf-8", "surrogateescape")):
            return None
        try:
            head = json.loads(b64url_decode(header))
            claims = json.loads(b64url_decode(payload))
        except ValueError:
            return None
        if not isinstance(head, dict) or head.get("alg") != "HS256" or not isinstance(claims, dict):
            return None
        return claims

    def _mac(self, signing_input: str) -> str:
        return b64url(hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest())
