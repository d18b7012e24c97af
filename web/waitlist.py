"""WaitlistController: join, list, leave, decline an offer (services/waitlist.py)."""

from __future__ import annotations

from aiohttp import web

from services.waitlist import WaitlistDTO, WaitlistFilters
from web._http import WAITLIST, created, json, path_id, principal, query, read

routes = web.RouteTableDef()


@routes.post("/api/waitlist")
async def join(request: web.Request) -> web.Response:
    who = await principal(request)
    return created(await request.app[WAITLIST].join(who, await read(request, WaitlistDTO)))


@routes.get("/api/waitlist")
async def entries(request: web.Request) -> web.Response:
    who = await principal(request)
    return json(await request.app[WAITLIST].entries(who, query(request, WaitlistFilters)))


@routes.delete("/api/waitlist/{id}")
async def leave(request: web.Request) -> web.Response:
    who = await principal(request)
    await request.app[WAITLIST].leave(who, path_id(request))
    return web.Response(status=204)


@routes.post("/api/waitlist/{id}/decline")
async def decline(request: web.Request) -> web.Response:
    who = await principal(request)
    return json(await request.app[WAITLIST].decline(who, path_id(request)))
