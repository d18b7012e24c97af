"""Users, profiles and application roles in PostgreSQL."""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
import cachetools

from hub import db, errors
from hub.auth import APP_ROLES, Claims, Principal

_ROLES = """
SELECT EXISTS (SELECT 1 FROM public.profiles WHERE id = $1) AS known,
       coalesce((SELECT array_agg(role::text) FROM public.user_roles WHERE user_id = $1), '{}') AS roles
"""
# Sign-up, idempotent so that it coexists with a sign-up trigger on auth.users
# (the hub's own, or an adopted clinic's, which may insert the profile and role
# first or not at all) and with a user Supabase Auth already created. ON
# CONFLICT without a target: two first requests of one new user may race, and
# Supabase's auth.users also has a unique email (then the user gets no email).
_SIGN_UP_USER = """
INSERT INTO auth.users (id, email)
SELECT $1, CASE WHEN EXISTS (SELECT 1 FROM auth.users WHERE email = $2) THEN NULL ELSE $2 END
ON CONFLICT DO NOTHING
"""
_SIGN_UP_PROFILE = "INSERT INTO public.profiles (id, email) VALUES ($1, $2) ON CONFLICT DO NOTHING"
_SIGN_UP_ROLE = """
INSERT INTO public.user_roles (user_id, role)
SELECT $1, 'patient' WHERE NOT EXISTS (SELECT 1 FROM public.user_roles WHERE user_id = $1)
ON CONFLICT DO NOTHING
"""


async def sign_up(con: asyncpg.Connection, user_id: uuid.UUID, email: str | None) -> None:
    """Make sure the user, their profile and (if they have no role) the patient role exist."""
    async with con.transaction():
        await con.execute(_SIGN_UP_USER, user_id, email)
        await con.execute(_SIGN_UP_PROFILE, user_id, email)
        await con.execute(_SIGN_UP_ROLE, user_id)

_ANONYMOUS = frozenset({"patient"})

PROFILE = """
SELECT p.id, p.email, p.full_name, p.phone, p.date_of_birth, p.created_at, p.updated_at,
       coalesce((SELECT array_agg(r.role::text ORDER BY r.role) FROM public.user_roles r WHERE r.user_id = p.id), '{}') AS roles
FROM public.profiles p WHERE p.id = $1
"""


class Principals:
    """Callers with their roles, cached briefly per process.

    A role lookup per request would be one database round trip on every call;
    roles change rarely, so each is trusted for `ttl` seconds (a change made
    through this process applies at once, elsewhere within `ttl`). At most
    `size` users are remembered, the least recently seen forgotten first.
    """

    def __init__(self, pool: asyncpg.Pool, *, ttl: float = 5.0, size: int = 50_000) -> None:
        self._pool = pool
        self._roles: cachetools.TTLCache[uuid.UUID, frozenset[str]] = cachetools.TTLCache(size, ttl,
                                                                                          timer=time.monotonic)

    def forget(self, user_id: uuid.UUID) -> None:
        self._roles.pop(user_id, None)

    def clear(self) -> None:
        self._roles.clear()

    async def get(self, claims: Claims) -> Principal:
        """A user seen for the first time is signed up as a patient, as
        Supabase's sign-up trigger would. An anonymous sign-in (Supabase's
        `is_anonymous`) is a patient and nothing more, whatever `user_roles`
        says: staff access needs a real account."""
        if claims.is_anonymous and claims.sub is not None:
            await self._roles_of(claims)  # signs them up on first sight
            return Principal(claims, _ANONYMOUS)
        return Principal(claims, await self._roles_of(claims))

    async def _roles_of(self, claims: Claims) -> frozenset[str]:
        if claims.role != "authenticated" or claims.sub is None:
            return frozenset()
        try:
            return self._roles[claims.sub]
        except KeyError:
            pass
        async with self._pool.acquire() as con:
            row = await con.fetchrow(_ROLES, claims.sub)
            if not row["known"]:
                await sign_up(con, claims.sub, claims.email)
                row = await con.fetchrow(_ROLES, claims.sub)
        roles = self._roles[claims.sub] = frozenset(row["roles"])
        return roles


async def create_user(con: asyncpg.Connection, *, email: str | None, full_name: str | None,
                      roles: tuple[str, ...] = ("patient",), user_id: uuid.UUID | None = None) -> uuid.UUID:
    """A new user with a profile and exactly `roles`."""
    async with con.transaction():
        uid = await con.fetchval("INSERT INTO auth.users (id, email) VALUES (coalesce($1, gen_random_uuid()), $2) RETURNING id",
                                 user_id, email)
        await sign_up(con, uid, email)
        await con.execute("UPDATE public.profiles SET full_name = $2 WHERE id = $1", uid, full_name)
        await set_roles(con, uid, roles)
    return uid


_DROPPED = "FROM public.user_roles WHERE user_id = $1 AND NOT (role::text = ANY($2::text[]))"


async def require_user_exists(con: asyncpg.Connection, user_id: uuid.UUID) -> None:
    if not await con.fetchval("SELECT EXISTS (SELECT 1 FROM auth.users WHERE id = $1)", user_id):
        raise errors.not_found("user", user_id)


async def set_roles(con: asyncpg.Connection, user_id: uuid.UUID, roles: tuple[str, ...] | list[str], *,
                    claims: str | None = None) -> list[str]:
    """Replace the user's roles; raises NOT_FOUND for an unknown user. With
    `claims` (an admin's), the change runs under them: RLS bounds it too.
    Whether the user exists is the hub's to read (auth.users is not the API roles')."""
    unknown = sorted(set(roles) - set(APP_ROLES))
    if unknown:
        raise errors.invalid(f"unknown roles: {', '.join(unknown)}", field="roles", allowed=list(APP_ROLES))
    async with con.transaction():
        await require_user_exists(con, user_id)
        dropping = await con.fetchval(f"SELECT count(*) {_DROPPED}", user_id, list(roles))
        async with db.claims_scope(con, claims):
            if len(await con.fetch(f"DELETE {_DROPPED} RETURNING 1", user_id, list(roles))) != dropping:
                raise db.policy_refusal(f"DELETE of user {user_id}'s roles")  # their policies hid some
            await con.execute("INSERT INTO public.user_roles (user_id, role) "
                              "SELECT $1, unnest($2::text[])::public.app_role ON CONFLICT DO NOTHING", user_id, list(roles))
    return sorted(set(roles))


async def profile(con: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID) -> dict[str, Any]:
    row = await con.fetchrow(PROFILE, user_id)
    if row is None:
        raise errors.not_found("profile", user_id)
    return dict(row)
