"""An HTTP answer as the sandbox sends it: status, body bytes, content type and extra headers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Reply:
    """One answer; the server adds Content-Length (and Connection: close when it closes)."""

    status: int
    payload: bytes = b""
    content_type: str = "application/json"
    headers: Headers = ()

    @classmethod
    def json(cls, status: int, body: Any, headers: Headers = ()) -> Reply:
        """Compact JSON, UTF-8."""
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        return cls(status, text.encode("utf-8"), "application/json", headers)

    @classmethod
    def html(cls, status: int, text: str) -> Reply:
        """An HTML page, UTF-8."""
        return cls(status, text.encode("utf-8"), "text/html; charset=utf-8")
