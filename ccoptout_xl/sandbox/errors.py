"""Error answers in the contract's two shapes: an array (400, 404, 405, 500, 503) or one object (401, 429)."""

from __future__ import annotations

from typing import Any

VALIDATION = "contacts.api.validation.error"


class ApiError(Exception):
    """An HTTP error answer: raise it from an endpoint, the server renders it."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body

    @classmethod
    def array(cls, status: int, key: str, message: str) -> ApiError:
        """``APIErrorSchema``: ``[{"error_key": ..., "error_message": ...}]``."""
        return cls(status, [{"error_key": key, "error_message": message}])

    @classmethod
    def invalid(cls, message: str) -> ApiError:
        """400 validation error; the message names the parameter and says why."""
        return cls.array(400, VALIDATION, message)


UNAUTHORIZED = {"error_key": "unauthorized", "error_message": "Unauthorized"}
THROTTLED = {"error_key": "throttled", "error_message": "Too Many Requests"}
QUOTA_EXCEEDED = {"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}
