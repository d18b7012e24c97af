"""AvailabilityController: hours, free slots and holds."""

from __future__ import annotations

from aiohttp import web

from services.booking import AvailabilityDTO, ReserveDTO, SlotsQuery
from web._http import BOOKING, created, json, path_id, principal, query, read

routes = web.RouteTableDef()


@routes.get("/api/availability/{dentist_id}")
async def get_availability(request: web.Request) -> web.Response:
    who = await principal(request)
    return json(await request.app[BOOKING].get_availability(who, path_id(request, "dentist_id")))


@routes.put("/api/availability/{dentist_id}")
async def put_availability(request: web.Request) -> web.Response:
    who = await principal(request)
    dentist_id = path_id(request, "dentist_id")
    body = await read(request, AvailabilityDTO)
    force = request.query.get("force", "false").lower() in ("1", "true", "yes")
    return json(await request.app[BOOKING].put_availability(who, dentist_id, body, force))


@routes.get("/api/availability/{dentist_id}/slots")
async def get_slots(request: web.Request) -> web.Response:
    who = await principal(request)
    dentist_id = path_id(request, "dentist_id")
    return json(await request.app[BOOKING].slots(who, dentist_id, query(request, SlotsQuery)))


@routes.post("/api/availability/{dentist_id}/reservations")
async def reserve(request: web.Request) -> web.Response:
    who = await principal(request)
    dentist_id = path_id(request, "dentist_id")
    body = await read(request, ReserveDTO)
    booking = request.app[BOOKING]
    idem = booking.idempotency(who, request.headers.get("Idempotency-Key"), request.path.encode() + await request.read())
    return created(await booking.reserve(who, dentist_id, body, idem))


@routes.post("/api/reservations/{id}/extend")
async def extend(request: web.Request) -> web.Response:
    who = await principal(request)
    return json(await request.app[BOOKING].extend(who, path_id(request)))


@routes.delete("/api/reservations/{id}")
async def release(request: web.Request) -> web.Response:
    who = await principal(request)
    await request.app[BOOKING].release(who, path_id(request))
    return web.Response(status=204)
