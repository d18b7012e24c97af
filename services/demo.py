"""A small demo clinic, so a newcomer has people and hours to try things with."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

from actors.schedule import Schedule
from hub.auth import issue_token
from services import users

DEMO_TTL = 7 * 24 * 3600

DENTISTS = [
    ("Dr. Amelia Hart", "dentist.hart@demo.clinic", "General dentistry", "Europe/London",
     {d: "08:30-12:30,13:30-17:00" for d in ("monday", "tuesday", "wednesday", "thursday", "friday")}),
    ("Dr. Marcus Reed", "dentist.reed@demo.clinic", "Orthodontics", "Europe/London",
     {**{d: "08:00-16:00" for d in ("monday", "tuesday", "wednesday", "thursday")}, "saturday": "09:00-13:00"}),
    ("Dr. Yuki Tanaka", "dentist.tanaka@demo.clinic", "Endodontics", "Europe/London",
     {d: "10:00-18:00" for d in ("tuesday", "wednesday", "thursday", "friday", "saturday")}),
    # Video consultations from New York: the console shows her zone beside the clinic's.
    ("Dr. Sofia Alvarez", "dentist.alvarez@demo.clinic", "Tele-dentistry", "America/New_York",
     {d: "08:00-12:00" for d in ("monday", "tuesday", "wednesday", "thursday", "friday")}),
]
PATIENTS = [
    ("Ana Silva", "ana@demo.clinic", "+44 7700 900101"), ("Ben Okafor", "ben@demo.clinic", "+44 7700 900102"),
    ("Chloe Martin", "chloe@demo.clinic", "+44 7700 900103"), ("David Cohen", "david@demo.clinic", "+44 7700 900104"),
    ("Elif Yilmaz", "elif@demo.clinic", "+44 7700 900105"), ("Farah Haddad", "farah@demo.clinic", "+44 7700 900106"),
    ("George Papadopoulos", "george@demo.clinic", "+44 7700 900107"), ("Hannah Schmidt", "hannah@demo.clinic", "+44 7700 900108"),
    ("Ibrahim Diallo", "ibrahim@demo.clinic", "+44 7700 900109"), ("Julia Kowalska", "julia@demo.clinic", "+44 7700 900110"),
    ("Kenji Watanabe", "kenji@demo.clinic", "+44 7700 900111"), ("Laura Rossi", "laura@demo.clinic", "+44 7700 900112"),
    ("Mateo Fernández", "mateo@demo.clinic", "+44 7700 900113"), ("Nadia Petrova", "nadia@demo.clinic", "+44 7700 900114"),
    ("Oliver Brown", "oliver@demo.clinic", "+44 7700 900115"), ("Priya Sharma", "priya@demo.clinic", "+44 7700 900116"),
    ("Quentin Dubois", "quentin@demo.clinic", "+44 7700 900117"), ("Rosa Jiménez", "rosa@demo.clinic", "+44 7700 900118"),
]
BUSY = 0.6  # share of a day's slots the demo books: a real morning, with gaps to book into
ADMIN = ("Clinic Admin", "admin@demo.clinic")


async def _user(con: asyncpg.Connection, name: str, email: str, roles: tuple[str, ...],
                phone: str | None = None) -> uuid.UUID:
    """The demo user with this email, created once."""
    existing = await con.fetchval("SELECT id FROM auth.users WHERE lower(email) = lower($1) ORDER BY created_at LIMIT 1",
                                  email)
    if existing is not None:
        return existing
    uid = await users.create_user(con, email=email, full_name=name, roles=roles)
    await con.execute("UPDATE public.profiles SET phone = $2 WHERE id = $1", uid, phone)
    return uid


async def _fill(con: asyncpg.Connection, dentist_id: uuid.UUID, tz: str, hours: dict[str, str],
                patients: list[uuid.UUID]) -> None:
    """Book about BUSY of the dentist's slots from yesterday to a week ahead: done ones
    completed, today's and later confirmed or pending. Random, but the same for a day."""
    kinds = [(r["name"], r["duration_minutes"], r["buffer_minutes"])
             for r in await con.fetch("SELECT name, duration_minutes, buffer_minutes FROM public.appointment_types "
                                      "ORDER BY name")]
    schedule = Schedule.from_json(hours, timezone=tz)
    now = datetime.now(timezone.utc)
    today = now.astimezone(schedule.zone).date()
    rows = []
    for offset in range(-1, 8):
        day = today + timedelta(days=offset)
        rng = random.Random(f"{dentist_id}:{day}")
        free_from = None
        for begin, end in schedule.working_intervals(day):
            at = begin
            while at < end:
                kind, minutes, buffer = rng.choice(kinds)
                blocked = timedelta(minutes=minutes + buffer)
                if (free_from is None or at >= free_from) and at + blocked <= end and rng.random() < BUSY:
                    status = "completed" if at + blocked <= now else rng.choice(("confirmed", "confirmed", "pending"))
                    rows.append((rng.choice(patients), dentist_id, at, minutes, buffer, kind, status))
                    free_from = at + blocked
                at += timedelta(minutes=schedule.slot_minutes)
    await con.executemany(
        "INSERT INTO public.appointments (patient_id, dentist_id, appointment_date, duration_minutes, buffer_minutes, "
        "appointment_type, status) VALUES ($1, $2, $3, $4, $5, $6, $7::public.appointment_status)", rows)


async def exists(con: asyncpg.Connection) -> bool:
    return await con.fetchval("SELECT EXISTS (SELECT 1 FROM auth.users WHERE lower(email) = lower($1))", ADMIN[1])


async def create(con: asyncpg.Connection, secret: str) -> dict[str, Any]:
    """Create the demo clinic if missing (idempotent) and return ids and fresh tokens."""
    def token(uid: uuid.UUID, email: str) -> str:
        return issue_token(secret, uid, ttl=DEMO_TTL, email=email)

    admin_id = await _user(con, ADMIN[0], ADMIN[1], ("admin",))
    out: dict[str, Any] = {"admin": {"id": str(admin_id), "email": ADMIN[1], "token": token(admin_id, ADMIN[1])},
                           "dentists": [], "patients": []}
    for name, email, phone in PATIENTS:
        uid = await _user(con, name, email, ("patient",), phone)
        out["patients"].append({"id": str(uid), "name": name, "email": email, "token": token(uid, email)})
    patients = [uuid.UUID(p["id"]) for p in out["patients"]]
    for name, email, specialization, tz, hours in DENTISTS:
        uid = await _user(con, name, email, ("dentist",))
        dentist_id = await con.fetchval("SELECT id FROM public.dentists WHERE user_id = $1", uid)
        if dentist_id is None:
            dentist_id = await con.fetchval(
                "INSERT INTO public.dentists (user_id, name, specialization, timezone, available_times) "
                "VALUES ($1, $2, $3, $4, $5) RETURNING id", uid, name, specialization, tz, hours)
            await _fill(con, dentist_id, tz, hours, patients)
        out["dentists"].append({"id": str(dentist_id), "user_id": str(uid), "name": name, "timezone": tz,
                                "available_times": hours, "email": email, "token": token(uid, email)})
    out["chatbot"] = {"role": "service_role", "token": issue_token(secret, None, role="service_role", ttl=DEMO_TTL)}
    return out
