"""Small text helpers for messages (a leaf module: it imports nothing from the package)."""

from __future__ import annotations


def quoted(text: str, limit: int = 60) -> str:
    """``text`` as it may appear in a one-line message: quoted, escaped, and cut when long."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def writes_utf8(stream: object) -> bool:
    """Whether a text stream encodes as UTF-8 (a Windows console redirect may be cp1252, a locale ASCII)."""
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("_", "-")
    return encoding in ("utf-8", "utf8", "utf-8-sig")
