"""What every handler needs: typed app keys, the caller, validated input, JSON out."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import asyncpg
import msgspec
from aiohttp import web

from hub import errors
from hub.auth import Principal, bearer, verify_token
from hub.config import Settings
from hub.keys import Keys
from services import users
from services.booking import Booking
from services.waitlist import Waitlist
from web.limits import LIMITS as RATE_LIMITS

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
KEYS = web.AppKey("keys", Keys)  # what verify_token checks tokens against
BOOKING = web.AppKey("booking", Booking)
WAITLIST = web.AppKey("waitlist", Waitlist)
PRINCIPALS = web.AppKey("principals", users.Principals)
# Per-request facts the access log reports.
REQUEST_ID = web.RequestKey("request_id", str)
USER_ID = web.RequestKey("user_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)

T = TypeVar("T")
_encoder = msgspec.json.Encoder()


def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, headers=headers,
                        content_type="application/json")


def created(result: dict[str, Any]) -> web.Response:
    """201 with the result; a replayed idempotent request says so in a header."""
    replayed = result.pop("_replayed", False)
    return json(result, status=201, headers={"Idempotent-Replayed": "true"} if replayed else None)


def paginated(rows: list[Any], limit: int, offset: int) -> dict[str, Any]:
    """The seed's list page from rows that carry `total` (count(*) OVER ())."""
    total = rows[0]["total"] if rows else 0
    data = [{k: v for k, v in r.items() if k != "total"} for r in rows]
    return {"data": data, "pagination": {"total": total, "limit": limit, "offset": offset,
                                         "hasMore": offset + len(data) < total}}


async def principal(request: web.Request) -> Principal:
    """The authenticated caller (cached on the request).

    Raises UNAUTHORIZED for a missing or bad token, and for `anon` tokens:
    every API call needs a signed-in user or the service role.
    """
    cached = request.get(PRINCIPAL)
    if cached is not None:
        return cached
    token = bearer(request.headers.get("Authorization"))
    await request.app[KEYS].ready_for(token)  # a key rotated in a moment ago: fetch it first
    claims = verify_token(request.app[KEYS], token)
    if claims.role == "anon":
        raise errors.unauthorized("Sign in required: anon tokens cannot call the API")
    who = await request.app[PRINCIPALS].get(claims)
    request[PRINCIPAL] = who
    request[USER_ID] = str(who.user_id) if who.user_id else claims.role
    if RATE_LIMITS in request.app:
        request.app[RATE_LIMITS].check_user(request, who)
    return who


async def own_user(request: web.Request) -> uuid.UUID:
    """The signed-in user's id, for their own records (profile, notifications).
    The service role acts on behalf of patients; it has no records of its own."""
    who = await principal(request)
    if who.is_service:
        raise errors.forbidden("The service role has no records of its own; it acts on behalf of patients")
    if who.user_id is None:
        raise errors.unauthorized("A signed-in user is required")
    return who.user_id


async def read(request: web.Request, type_: type[T]) -> T:
    """The JSON body decoded straight into `type_`; VALIDATION_ERROR names the field."""
    if request.content_type not in ("application/json", "") and not request.content_type.endswith("+json"):
        raise errors.invalid("Request body must be JSON (Content-Type: application/json)", field=None)
    raw = await request.read()  # client_max_size turns an oversized body into 413 here
    try:
        return msgspec.json.decode(raw or b"null", type=type_)
    except msgspec.DecodeError as exc:
        raise errors.from_validation(exc) from None
    except (UnicodeDecodeError, RecursionError) as exc:  # not UTF-8; nested past the decoder's depth
        raise errors.invalid(f"Malformed JSON: {exc}", field=None, location="body") from None


def query(request: web.Request, type_: type[T], lists: tuple[str, ...] = ()) -> T:
    """Query parameters converted into `type_` ("10" becomes 10). Names in
    `lists` may repeat or be comma-separated (`status=a,b&status=c`)."""
    params: dict[str, Any] = {}
    for key in request.query.keys():
        if key in lists:
            params[key] = [v for raw in request.query.getall(key) for v in raw.split(",") if v]
        else:
            params[key] = request.query[key]
    try:
        return msgspec.convert(params, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise errors.from_validation(exc, where="query") from None


def path_id(request: web.Request, name: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise errors.invalid(f"{name} must be a UUID", field=name, location="path") from None
