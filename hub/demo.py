"""A small demo clinic, so a newcomer has people and hours to try things with."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from hub import users
from hub.auth import issue_token

DEMO_TTL = 7 * 24 * 3600

DENTISTS = [
    ("Dr. Amelia Hart", "dentist.hart@demo.clinic", "General dentistry", "Europe/London",
     {d: "09:00-12:30,13:30-17:00" for d in ("monday", "tuesday", "wednesday", "thursday", "friday")}),
    ("Dr. Marcus Reed", "dentist.reed@demo.clinic", "Orthodontics", "America/New_York",
     {**{d: "08:00-16:00" for d in ("monday", "tuesday", "wednesday", "thursday")}, "saturday": "09:00-13:00"}),
    ("Dr. Yuki Tanaka", "dentist.tanaka@demo.clinic", "Endodontics", "Asia/Tokyo",
     {d: "10:00-18:00" for d in ("tuesday", "wednesday", "thursday", "friday", "saturday")}),
]
PATIENTS = [
    ("Ana Silva", "ana@demo.clinic"), ("Ben Okafor", "ben@demo.clinic"), ("Chloe Martin", "chloe@demo.clinic"),
    ("David Cohen", "david@demo.clinic"), ("Elif Yilmaz", "elif@demo.clinic"),
]
ADMIN = ("Clinic Admin", "admin@demo.clinic")


async def _user(con: asyncpg.Connection, name: str, email: str, roles: tuple[str, ...]) -> uuid.UUID:
    """The demo user with this email, created once."""
    existing = await con.fetchval("SELECT id FROM auth.users WHERE lower(email) = lower($1) ORDER BY created_at LIMIT 1",
                                  email)
    if existing is not None:
        return existing
    return await users.create_user(con, email=email, full_name=name, roles=roles)


async def exists(con: asyncpg.Connection) -> bool:
    return await con.fetchval("SELECT EXISTS (SELECT 1 FROM auth.users WHERE lower(email) = lower($1))", ADMIN[1])


async def create(con: asyncpg.Connection, secret: str) -> dict[str, Any]:
    """Create the demo clinic if missing (idempotent) and return ids and fresh tokens."""
    def token(uid: uuid.UUID, email: str) -> str:
        return issue_token(secret, uid, ttl=DEMO_TTL, email=email)

    admin_id = await _user(con, ADMIN[0], ADMIN[1], ("admin",))
    out: dict[str, Any] = {"admin": {"id": str(admin_id), "email": ADMIN[1], "token": token(admin_id, ADMIN[1])},
                           "dentists": [], "patients": []}
    for name, email, specialization, tz, hours in DENTISTS:
        uid = await _user(con, name, email, ("dentist",))
        dentist_id = await con.fetchval("SELECT id FROM public.dentists WHERE user_id = $1", uid)
        if dentist_id is None:
            dentist_id = await con.fetchval(
                "INSERT INTO public.dentists (user_id, name, specialization, timezone, available_times) "
                "VALUES ($1, $2, $3, $4, $5) RETURNING id", uid, name, specialization, tz, hours)
        out["dentists"].append({"id": str(dentist_id), "user_id": str(uid), "name": name, "timezone": tz,
                                "available_times": hours, "email": email, "token": token(uid, email)})
    for name, email in PATIENTS:
        uid = await _user(con, name, email, ("patient",))
        out["patients"].append({"id": str(uid), "name": name, "email": email, "token": token(uid, email)})
    out["chatbot"] = {"role": "service_role", "token": issue_token(secret, None, role="service_role", ttl=DEMO_TTL)}
    return out
