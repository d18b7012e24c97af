"""Clinic-wide settings an admin sets once for everyone: closures and appointment types."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

import msgspec
from aiohttp import web

from hub import db, errors
from hub.auth import require_role
from web._http import BOOKING, POOL, json, principal, read

routes = web.RouteTableDef()


class Closure(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


class AppointmentTypeDTO(msgspec.Struct, forbid_unknown_fields=True):
    duration_minutes: Annotated[int, msgspec.Meta(ge=5, le=480)]
    buffer_minutes: Annotated[int, msgspec.Meta(ge=0, le=120)] = 0


def _day(request: web.Request) -> date:
    try:
        return date.fromisoformat(request.match_info["day"])
    except ValueError:
        raise errors.invalid("day must be YYYY-MM-DD", field="day", location="path") from None


@routes.get("/api/clinic/closures")
async def list_closures(request: web.Request) -> web.Response:
    await principal(request)
    rows = await request.app[POOL].fetch("SELECT day, reason FROM public.clinic_closures WHERE day >= current_date - 1 "
                                         "ORDER BY day")
    return json([dict(r) for r in rows])


@routes.put("/api/clinic/closures/{day}")
async def put_closure(request: web.Request) -> web.Response:
    who = await principal(request)
    require_role(who, "admin")
    day = _day(request)
    body = await read(request, Closure)
    async with db.as_caller(request.app[POOL], who) as con:  # the admin's claims: RLS bounds the write too
        row = await con.fetchrow(
            "INSERT INTO public.clinic_closures (day, reason) VALUES ($1, $2) "
            "ON CONFLICT (day) DO UPDATE SET reason = EXCLUDED.reason RETURNING day, reason", day, body.reason)
    await request.app[BOOKING].sync_live()
    return json(dict(row))


@routes.delete("/api/clinic/closures/{day}")
async def delete_closure(request: web.Request) -> web.Response:
    who = await principal(request)
    require_role(who, "admin")
    day = _day(request)
    async with db.as_caller(request.app[POOL], who) as con:
        if await con.fetchval("DELETE FROM public.clinic_closures WHERE day = $1 RETURNING day", day) is None:
            if await con.fetchval("SELECT EXISTS (SELECT 1 FROM public.clinic_closures WHERE day = $1)", day):
                raise db.policy_refusal(f"DELETE of closure {day}")
            raise errors.not_found("closure", day)
    await request.app[BOOKING].sync_live()
    return web.Response(status=204)


@routes.get("/api/appointment-types")
async def list_types(request: web.Request) -> web.Response:
    await principal(request)
    types = request.app[BOOKING].catalog.types.values()
    return json(sorted(({"name": t.name, "duration_minutes": t.duration_minutes, "buffer_minutes": t.buffer_minutes}
                        for t in types), key=lambda t: t["name"]))


@routes.put("/api/appointment-types/{name}")
async def put_type(request: web.Request) -> web.Response:
    who = await principal(request)
    require_role(who, "admin")
    name = request.match_info["name"]
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
        raise errors.invalid("Type names are lower-case letters, digits and _ (up to 40)", field="name",
                             location="path")
    body = await read(request, AppointmentTypeDTO)
    pool = request.app[POOL]
    async with db.as_caller(pool, who) as con:
        row = await con.fetchrow(
            "INSERT INTO public.appointment_types (name, duration_minutes, buffer_minutes) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO UPDATE SET duration_minutes = EXCLUDED.duration_minutes, "
            "buffer_minutes = EXCLUDED.buffer_minutes, updated_at = now() "
            "RETURNING name, duration_minutes, buffer_minutes", name, body.duration_minutes, body.buffer_minutes)
    await request.app[BOOKING].catalog.load(pool)  # others reload on NOTIFY hub_catalog
    return json(dict(row))
