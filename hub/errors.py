"""One error type for every expected failure, with the seed's codes.

Anything that is not a HubError is a bug: it is logged and answered as
INTERNAL_ERROR without internals.
"""

from __future__ import annotations

import enum
import math
import re
from datetime import datetime, timezone
from typing import Any

import msgspec


class ErrorCode(enum.StrEnum):
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    CONFLICT = "CONFLICT"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    SLOT_UNAVAILABLE = "SLOT_UNAVAILABLE"
    CANCELLATION_WINDOW_EXPIRED = "CANCELLATION_WINDOW_EXPIRED"
    # Beyond the seed's list: limits and overload, each a distinct action for the client.
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INSUFFICIENT_STORAGE = "INSUFFICIENT_STORAGE"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.CONFLICT: 409,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.SLOT_UNAVAILABLE: 409,
    ErrorCode.CANCELLATION_WINDOW_EXPIRED: 409,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.INSUFFICIENT_STORAGE: 507,
}


class HubError(Exception):
    """An expected failure the caller can act on.

    `temporary` marks failures worth retrying later (overload, an actor
    restarting), as centrifuge's `Error.Temporary` does; `retry_after` is
    when, in seconds (the `Retry-After` header).
    """

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None,
                 *, temporary: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.temporary = temporary or retry_after is not None
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    def body(self) -> dict[str, Any]:
        """The seed's ErrorResponse."""
        error: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        error["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"error": error}

    def headers(self) -> dict[str, str] | None:
        """`Retry-After` for a refusal the caller should retry (every 503 has one)."""
        after = self.retry_after
        if after is None and self.code is ErrorCode.SERVICE_UNAVAILABLE:
            after = 1
        return None if after is None else {"Retry-After": str(max(1, math.ceil(after)))}

    def __repr__(self) -> str:
        return f"HubError({self.code.value}, {self.message!r}, details={self.details!r})"


def unauthorized(message: str = "Authentication required") -> HubError:
    return HubError(ErrorCode.UNAUTHORIZED, message)


def forbidden(message: str = "Access denied") -> HubError:
    return HubError(ErrorCode.FORBIDDEN, message)


def not_found(what: str, ident: object | None = None) -> HubError:
    details = None if ident is None else {"id": str(ident)}
    return HubError(ErrorCode.NOT_FOUND, f"{what} not found", details)


def invalid(message: str, field: str | None = None, **extra: Any) -> HubError:
    details = {"field": field, **extra} if field is not None else (extra or None)
    return HubError(ErrorCode.VALIDATION_ERROR, message, details)


def conflict(message: str, **details: Any) -> HubError:
    return HubError(ErrorCode.CONFLICT, message, details or None)


def storage_error(exc: OSError) -> HubError:
    """The upload directory cannot take the file (full, read-only, gone): 507, nothing kept."""
    return HubError(ErrorCode.INSUFFICIENT_STORAGE, "The document store cannot take this file now; nothing was saved",
                    {"reason": exc.strerror or type(exc).__name__, "errno": exc.errno}, temporary=True)


def database_unavailable() -> HubError:
    """The database is away (restarting, unreachable): nothing was decided; retry shortly."""
    return HubError(ErrorCode.SERVICE_UNAVAILABLE, "The database is unavailable, retry shortly",
                    {"reason": "database_unavailable"}, retry_after=1)


_AT = re.compile(r" - at `\$(.*)`$")
_FIELD = re.compile(r"Object (?:missing required|contains unknown) field `([^`]+)`")


def from_validation(exc: msgspec.DecodeError, where: str = "body") -> HubError:
    """Turn msgspec's message ("Expected `int`, got `str` - at `$.slot_minutes`")
    into VALIDATION_ERROR whose details name the field ("slot_minutes")."""
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):  # not even JSON
        return invalid(f"Malformed JSON: {text}", location=where)
    path, reason = "", text
    if (at := _AT.search(text)) is not None:
        path, reason = at.group(1), text[: at.start()]
    if (named := _FIELD.match(reason)) is not None:  # msgspec names the parent; name the field
        path = f"{path}.{named.group(1)}"
    field = path.lstrip(".") or None
    return invalid(f"Invalid {field or where}: {reason}", field=field, location=where, reason=reason)
