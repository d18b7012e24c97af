"""ProfilesController, plus the admin endpoints that set a clinic up over the API."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from actors.schedule import Schedule, ScheduleError
from hub import db, errors
from hub.auth import require_role
from services import users
from web._http import POOL, PRINCIPALS, json, own_user, path_id, principal, read

routes = web.RouteTableDef()

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=200)]
SlotMinutes = Annotated[int, msgspec.Meta(ge=5, le=240)]


class UpdateProfile(msgspec.Struct, forbid_unknown_fields=True):
    full_name: Text | None | UnsetType = UNSET
    phone: Annotated[str, msgspec.Meta(max_length=40)] | None | UnsetType = UNSET
    date_of_birth: date | None | UnsetType = UNSET
    email: Annotated[str, msgspec.Meta(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None | UnsetType = UNSET


NoticeMinutes = Annotated[int, msgspec.Meta(ge=0, le=43200)]
HorizonDays = Annotated[int, msgspec.Meta(ge=1, le=730)]


class CreateDentist(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    timezone: str
    specialization: Text | None = None
    available_times: dict[str, str] = {}
    slot_minutes: SlotMinutes = 30
    min_notice_minutes: NoticeMinutes = 120
    horizon_days: HorizonDays = 90
    user_id: uuid.UUID | None = None


class UpdateDentist(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    specialization: Text | None | UnsetType = UNSET
    timezone: str | UnsetType = UNSET
    slot_minutes: SlotMinutes | UnsetType = UNSET
    min_notice_minutes: NoticeMinutes | UnsetType = UNSET
    horizon_days: HorizonDays | UnsetType = UNSET
    user_id: uuid.UUID | None | UnsetType = UNSET


class SetRoles(msgspec.Struct, forbid_unknown_fields=True):
    roles: Annotated[list[Literal["patient", "dentist", "admin"]], msgspec.Meta(max_length=3)]


DENTIST_COLUMNS = ("id, user_id, name, specialization, timezone, slot_minutes, available_times, "
                   "date_overrides, min_notice_minutes, horizon_days, version, created_at, updated_at")


def _changes(struct: msgspec.Struct) -> dict[str, Any]:
    """The fields a PUT body actually set (UNSET ones stay as they are)."""
    return {f: v for f in struct.__struct_fields__ if (v := getattr(struct, f)) is not UNSET}


def _check_schedule(timezone: str, available_times: dict[str, str], slot_minutes: int) -> None:
    try:
        Schedule.from_json(available_times, timezone=timezone, slot_minutes=slot_minutes)
    except ScheduleError as exc:
        raise errors.invalid(str(exc), field=exc.field) from None


async def _update(con: asyncpg.Connection, table: str, key: uuid.UUID, changes: dict[str, Any],
                  returning: str) -> asyncpg.Record | None:
    """UPDATE only the given columns (names come from our structs, never the client)."""
    if not changes:
        return await con.fetchrow(f"SELECT {returning} FROM {table} WHERE id = $1", key)
    sets = ", ".join(f"{col} = ${i}" for i, col in enumerate(changes, start=2))
    return await con.fetchrow(f"UPDATE {table} SET {sets} WHERE id = $1 RETURNING {returning}",
                              key, *changes.values())


async def _make_dentist_user(con: asyncpg.Connection, user_id: uuid.UUID, claims: str | None) -> None:
    """Give an existing user the dentist role (NOT_FOUND if there is no such
    user): whether they exist is the hub's to read (auth.users is not the API
    roles'), the role is granted under the admin's claims."""
    await users.require_user_exists(con, user_id)
    async with db.claims_scope(con, claims):
        await con.execute("INSERT INTO public.user_roles (user_id, role) VALUES ($1, 'dentist') ON CONFLICT DO NOTHING",
                          user_id)


@routes.get("/api/profiles/me")
async def get_me(request: web.Request) -> web.Response:
    me = await own_user(request)
    async with db.as_caller(request.app[POOL], await principal(request)) as con:
        return json(await users.profile(con, me))


@routes.put("/api/profiles/me")
async def put_me(request: web.Request) -> web.Response:
    uid = await own_user(request)
    body = await read(request, UpdateProfile)
    async with db.as_caller(request.app[POOL], await principal(request)) as con:
        if await _update(con, "public.profiles", uid, _changes(body), "id") is None:
            raise db.policy_refusal(f"UPDATE of profile {uid}")
        return json(await users.profile(con, uid))


@routes.get("/api/profiles/dentists")
async def list_dentists(request: web.Request) -> web.Response:
    await principal(request)
    rows = await request.app[POOL].fetch(f"SELECT {DENTIST_COLUMNS} FROM public.dentists ORDER BY name, id")
    return json([dict(r) for r in rows])


@routes.post("/api/dentists")
async def create_dentist(request: web.Request) -> web.Response:
    who = await principal(request)
    require_role(who, "admin")
    body = await read(request, CreateDentist)
    _check_schedule(body.timezone, body.available_times, body.slot_minutes)
    claims = db.caller_claims(who)  # the admin's: RLS bounds these writes too
    async with request.app[POOL].acquire() as con, con.transaction():
        if body.user_id is not None:
            await _make_dentist_user(con, body.user_id, claims)
        try:
            async with db.claims_scope(con, claims):
                row = await con.fetchrow(
                    f"INSERT INTO public.dentists (name, specialization, timezone, available_times, slot_minutes, "
                    f"min_notice_minutes, horizon_days, user_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                    f"RETURNING {DENTIST_COLUMNS}",
                    body.name, body.specialization, body.timezone, body.available_times, body.slot_minutes,
                    body.min_notice_minutes, body.horizon_days, body.user_id)
        except asyncpg.UniqueViolationError:
            raise errors.conflict("That user is already a dentist", user_id=str(body.user_id)) from None
    if body.user_id is not None:
        request.app[PRINCIPALS].forget(body.user_id)  # after commit: the new role applies at once
    return json(dict(row), status=201)


@routes.put("/api/dentists/{id}")
async def update_dentist(request: web.Request) -> web.Response:
    who = await principal(request)
    require_role(who, "admin")
    dentist_id = path_id(request)
    body = await read(request, UpdateDentist)
    changes = _changes(body)
    claims = db.caller_claims(who)
    async with request.app[POOL].acquire() as con, con.transaction():
        current = await con.fetchrow("SELECT timezone, available_times, slot_minutes FROM public.dentists "
                                     "WHERE id = $1 FOR UPDATE", dentist_id)
        if current is None:
            raise errors.not_found("dentist", dentist_id)
        _check_schedule(changes.get("timezone", current["timezone"]), current["available_times"],
                        changes.get("slot_minutes", current["slot_minutes"]))
        if changes.get("user_id") is not None:
            await _make_dentist_user(con, changes["user_id"], claims)
        try:
            async with db.claims_scope(con, claims):
                row = await _update(con, "public.dentists", dentist_id, changes, DENTIST_COLUMNS)
                if row is None:  # their policies hid the row from the UPDATE
                    raise db.policy_refusal(f"UPDATE of dentist {dentist_id}")
        except asyncpg.UniqueViolationError:
            raise errors.conflict("That user is already a dentist", user_id=str(changes["user_id"])) from None
    if changes.get("user_id") is not None:
        request.app[PRINCIPALS].forget(changes["user_id"])
    return json(dict(row))


@routes.put("/api/users/{id}/roles")
async def put_roles(request: web.Request) -> web.Response:
    who = await principal(request)
    require_role(who, "admin")
    user_id = path_id(request)
    body = await read(request, SetRoles)
    if user_id == who.user_id and "admin" not in body.roles:
        raise errors.conflict("Admins cannot remove their own admin role (ask another admin)")
    async with request.app[POOL].acquire() as con:
        roles = await users.set_roles(con, user_id, body.roles, claims=db.caller_claims(who))
    request.app[PRINCIPALS].forget(user_id)
    return json({"user_id": str(user_id), "roles": roles})
