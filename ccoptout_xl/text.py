"""Small text helpers for messages (a leaf module: it imports nothing from the package)."""

from __future__ import annotations

import datetime as dt


def quoted(text: str, limit: int = 60) -> str:
    """``text`` as it may appear in a one-line message: quoted, escaped, and cut when long."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def writes_utf8(stream: object) -> bool:
    """Whether a text stream encodes as UTF-8 (a Windows console redirect may be cp1252, a locale ASCII)."""
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("_", "-")
    return encoding in ("utf-8", "utf8", "utf-8-sig")


def duration(delta: dt.timedelta) -> str:
    """``3 h 07 min``, or ``12 min`` under an hour (for messages)."""
    hours, minutes = divmod(int(delta.total_seconds() // 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def plural(count: int, noun: str) -> str:
    """``1 opt-out``, ``2,000 opt-outs``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
