"""Small text helpers for messages (a leaf module: it imports nothing from the package)."""

from __future__ import annotations


def quoted(text: str, limit: int = 60) -> str:
    """``text`` as it may appear in a one-line message: quoted, escaped, and cut when long."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
