"""NotificationsController: a patient's own notifications, unread first."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from hub import db, errors
from web._http import POOL, json, own_user, paginated, path_id, principal, query

routes = web.RouteTableDef()


class Page(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    offset: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    unread: bool = False


@routes.get("/api/notifications")
async def list_notifications(request: web.Request) -> web.Response:
    me = await own_user(request)
    page = query(request, Page)
    async with db.as_caller(request.app[POOL], await principal(request)) as con:
        rows = await con.fetch(
            "SELECT id, kind, title, body, data, read_at, created_at, count(*) OVER () AS total "
            "FROM public.notifications WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL) "
            "ORDER BY (read_at IS NULL) DESC, created_at DESC, id LIMIT $3 OFFSET $4",
            me, page.unread, page.limit, page.offset)
    return json(paginated(rows, page.limit, page.offset))


@routes.post("/api/notifications/{id}/read")
async def mark_read(request: web.Request) -> web.Response:
    me = await own_user(request)
    notification_id = path_id(request)
    async with db.as_caller(request.app[POOL], await principal(request)) as con:
        row = await con.fetchrow(
            "UPDATE public.notifications SET read_at = coalesce(read_at, now()) WHERE id = $1 AND user_id = $2 "
            "RETURNING id, kind, title, body, data, read_at, created_at", notification_id, me)
    if row is None:
        raise errors.not_found("notification", notification_id)
    return json(dict(row))
