"""WebhooksController (admins): endpoints, their delivery log, replay.

Webhooks carry full records (patients' names and notes included): only
admins register them, and only for receivers the clinic trusts.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from hub import errors
from hub.auth import require_role
from hub.netguard import RefusedAddress, check_target
from services import webhooks
from web._http import POOL, SETTINGS, json, paginated, path_id, principal, query, read

routes = web.RouteTableDef()
MAX_ENDPOINTS = 50

Url = Annotated[str, msgspec.Meta(min_length=8, max_length=2000, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://\S+$")]
Events = Annotated[list[str], msgspec.Meta(min_length=1, max_length=len(webhooks.EVENT_TYPES))]
Description = Annotated[str, msgspec.Meta(max_length=500)]


class CreateWebhook(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    events: Events
    description: Description = ""


class UpdateWebhook(msgspec.Struct, forbid_unknown_fields=True):
    url: Url | None = None
    events: Events | None = None
    description: Description | None = None
    enabled: bool | None = None


class DeliveryFilters(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    offset: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    status: Literal["pending", "succeeded", "failed"] | None = None


class Endpoint(msgspec.Struct):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointCreated(Endpoint):
    secret: str  # whsec_<base64>: shown once


class AttemptOut(msgspec.Struct):
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None


class Delivery(msgspec.Struct):
    id: int
    message_id: uuid.UUID
    type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_latency_ms: int | None
    last_error: str | None
    replay_of: int | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[AttemptOut]


class DeliveryPage(msgspec.Struct):
    data: list[Delivery]
    pagination: dict[str, int | bool]


class Replayed(msgspec.Struct):
    id: int
    message_id: uuid.UUID
    status: str
    replay_of: int
    created_at: datetime


# For /openapi.json: (method, path, summary, query, body, status, answer)
API = [
    ("post", "/api/webhooks", "Register a webhook endpoint (admin); the secret is shown once", None, CreateWebhook,
     201, EndpointCreated),
    ("get", "/api/webhooks", "Webhook endpoints (admin)", None, None, 200, list[Endpoint]),
    ("get", "/api/webhooks/{id}", "One webhook endpoint (admin)", None, None, 200, Endpoint),
    ("patch", "/api/webhooks/{id}", "Change an endpoint; enabled=true re-enables it (admin)", None, UpdateWebhook,
     200, Endpoint),
    ("delete", "/api/webhooks/{id}", "Delete an endpoint and its log (admin)", None, None, 204, None),
    ("get", "/api/webhooks/{id}/deliveries", "Delivery log, newest first, with attempts (admin)", DeliveryFilters,
     None, 200, DeliveryPage),
    ("post", "/api/webhooks/{id}/deliveries/{delivery_id}/replay", "Send a delivery's message again (admin)", None,
     None, 202, Replayed),
]

_COLUMNS = ("id, url, events, description, enabled, disabled_reason, consecutive_failures, failing_since, "
            "created_at, updated_at")


def _events(names: list[str]) -> list[str]:
    unknown = sorted(set(names) - set(webhooks.EVENT_TYPES))
    if unknown:
        raise errors.invalid(f"Unknown event types: {', '.join(unknown)}", field="events",
                             allowed=list(webhooks.EVENT_TYPES))
    return sorted(set(names))


async def _url(request: web.Request, url: str) -> str:
    try:
        await check_target(url, request.app[SETTINGS].webhook_allow_private)
    except RefusedAddress as exc:
        raise errors.invalid(f"This URL may not receive webhooks: {exc}", field="url") from None
    return url


async def _admin(request: web.Request) -> None:
    require_role(await principal(request), "admin")


def _found(row: Any, endpoint_id: uuid.UUID) -> web.Response:
    if row is None:
        raise errors.not_found("webhook endpoint", endpoint_id)
    return json(dict(row))


async def _endpoint(request: web.Request) -> uuid.UUID:
    endpoint_id = path_id(request)
    if not await request.app[POOL].fetchval("SELECT true FROM public.webhook_endpoints WHERE id = $1", endpoint_id):
        raise errors.not_found("webhook endpoint", endpoint_id)
    return endpoint_id


@routes.post("/api/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    await _admin(request)
    body = await read(request, CreateWebhook)
    events, url = _events(body.events), await _url(request, body.url)
    secret = webhooks.new_secret()
    async with request.app[POOL].acquire() as con, con.transaction():
        await con.execute("LOCK TABLE public.webhook_endpoints IN SHARE ROW EXCLUSIVE MODE")
        if await con.fetchval("SELECT count(*) FROM public.webhook_endpoints") >= MAX_ENDPOINTS:
            raise errors.conflict(f"The clinic has {MAX_ENDPOINTS} webhook endpoints; delete one first")
        row = await con.fetchrow(
            f"INSERT INTO public.webhook_endpoints (url, events, description, secret, created_by) "
            f"VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}",
            url, events, body.description, secret, (await principal(request)).user_id)
    return json({**dict(row), "secret": secret}, status=201)  # the only time the secret is shown


@routes.get("/api/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    await _admin(request)
    rows = await request.app[POOL].fetch(f"SELECT {_COLUMNS} FROM public.webhook_endpoints ORDER BY created_at, id")
    return json([dict(r) for r in rows])


@routes.get("/api/webhooks/{id}")
async def get_webhook(request: web.Request) -> web.Response:
    await _admin(request)
    endpoint_id = path_id(request)
    return _found(await request.app[POOL].fetchrow(
        f"SELECT {_COLUMNS} FROM public.webhook_endpoints WHERE id = $1", endpoint_id), endpoint_id)


@routes.patch("/api/webhooks/{id}")
async def update_webhook(request: web.Request) -> web.Response:
    """Change the URL, events or description; `enabled: true` re-enables a disabled endpoint."""
    await _admin(request)
    endpoint_id = path_id(request)
    body = await read(request, UpdateWebhook)
    events = None if body.events is None else _events(body.events)
    url = None if body.url is None else await _url(request, body.url)
    row = await request.app[POOL].fetchrow(
        f"UPDATE public.webhook_endpoints SET url = coalesce($2, url), events = coalesce($3, events), "
        f"description = coalesce($4, description), enabled = coalesce($5, enabled), updated_at = now(), "
        f"disabled_reason = CASE WHEN $5 THEN NULL ELSE disabled_reason END, "
        f"consecutive_failures = CASE WHEN $5 THEN 0 ELSE consecutive_failures END, "
        f"failing_since = CASE WHEN $5 THEN NULL ELSE failing_since END "
        f"WHERE id = $1 RETURNING {_COLUMNS}", endpoint_id, url, events, body.description, body.enabled)
    return _found(row, endpoint_id)


@routes.delete("/api/webhooks/{id}")
async def delete_webhook(request: web.Request) -> web.Response:
    await _admin(request)
    endpoint_id = path_id(request)
    if await request.app[POOL].fetchval("DELETE FROM public.webhook_endpoints WHERE id = $1 RETURNING id",
                                        endpoint_id) is None:
        raise errors.not_found("webhook endpoint", endpoint_id)
    return web.Response(status=204)


_DELIVERIES = """
SELECT d.id, d.message_id, m.type, d.status, d.attempts, d.next_attempt_at, d.last_status_code, d.last_latency_ms,
       d.last_error, d.replay_of, d.created_at, d.finished_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object('attempted_at', a.attempted_at, 'status_code', a.status_code,
                                                     'latency_ms', a.latency_ms, 'error', a.error) ORDER BY a.id)
                 FROM public.webhook_attempts a WHERE a.delivery_id = d.id), '[]') AS attempt_log,
       count(*) OVER () AS total
FROM public.webhook_deliveries d JOIN public.webhook_messages m ON m.id = d.message_id
WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2)
ORDER BY d.id DESC LIMIT $3 OFFSET $4
"""


@routes.get("/api/webhooks/{id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    """The delivery log, newest first: each delivery with its attempts, status codes and latencies."""
    await _admin(request)
    endpoint_id = await _endpoint(request)
    page = query(request, DeliveryFilters)
    rows = await request.app[POOL].fetch(_DELIVERIES, endpoint_id, page.status, page.limit, page.offset)
    return json(paginated(rows, page.limit, page.offset))


@routes.post("/api/webhooks/{id}/deliveries/{delivery_id:[0-9]{1,18}}/replay")
async def replay(request: web.Request) -> web.Response:
    """Send a delivery's message again (same webhook-id), after the endpoint's queued ones."""
    await _admin(request)
    endpoint_id = await _endpoint(request)
    delivery_id = int(request.match_info["delivery_id"])
    row = await request.app[POOL].fetchrow(
        "INSERT INTO public.webhook_deliveries (endpoint_id, message_id, replay_of) "
        "SELECT endpoint_id, message_id, id FROM public.webhook_deliveries WHERE id = $1 AND endpoint_id = $2 "
        "RETURNING id, message_id, status, replay_of, created_at", delivery_id, endpoint_id)
    if row is None:
        raise errors.not_found("webhook delivery", delivery_id)
    await request.app[POOL].execute("SELECT pg_notify('hub_webhooks', '')")
    return json(dict(row), status=202)
