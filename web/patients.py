"""Patients for the front desk: search by name, email or phone, create one at
the desk, and one patient's appointments and documents. Staff only: admins see
every patient; a dentist finds any patient to book, but sees only the
appointments that patient has with them."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

import msgspec
from aiohttp import web

from hub import errors, policy
from hub.auth import Principal
from services import users
from web._http import POOL, created, json, paginated, path_id, principal, query, read
from web.book import managed_dentists

routes = web.RouteTableDef()

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Email = Annotated[str, msgspec.Meta(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Phone = Annotated[str, msgspec.Meta(max_length=40, pattern=r"^[0-9+()./ -]*$")]


class PatientSearch(msgspec.Struct, forbid_unknown_fields=True):
    q: Annotated[str, msgspec.Meta(max_length=100)] = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 20
    offset: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0


class NewPatient(msgspec.Struct, forbid_unknown_fields=True):
    full_name: Name
    email: Email | None = None
    phone: Phone | None = None
    date_of_birth: date | None = None


def require_staff(who: Principal) -> None:
    if not policy.allowed(who, "use", policy.Clinic()):
        raise errors.forbidden("Patient records are for the clinic's admins and dentists")


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_SEARCH = """
SELECT p.id, p.full_name, p.email, p.phone, p.date_of_birth, count(*) OVER () AS total
FROM public.profiles p
WHERE EXISTS (SELECT 1 FROM public.user_roles r WHERE r.user_id = p.id AND r.role = 'patient')
  AND ($1 = '' OR p.full_name ILIKE $2 OR p.email ILIKE $2
       OR ($3 <> '' AND regexp_replace(coalesce(p.phone, ''), '[^0-9]', '', 'g') LIKE '%' || $3 || '%'))
ORDER BY lower(p.full_name) NULLS LAST, p.id
LIMIT $4 OFFSET $5
"""


@routes.get("/api/patients")
async def search(request: web.Request) -> web.Response:
    require_staff(await principal(request))
    q = query(request, PatientSearch)
    text = q.q.strip()
    digits = "".join(c for c in text if c.isdigit()) if len(text) >= 3 else ""
    rows = await request.app[POOL].fetch(_SEARCH, text, _like(text), digits, q.limit, q.offset)
    return json(paginated(rows, q.limit, q.offset))


@routes.post("/api/patients")
async def create(request: web.Request) -> web.Response:
    require_staff(await principal(request))
    body = await read(request, NewPatient)
    pool = request.app[POOL]
    async with pool.acquire() as con, con.transaction():
        if body.email and await con.fetchval("SELECT EXISTS (SELECT 1 FROM auth.users WHERE lower(email) = lower($1))",
                                             body.email):
            raise errors.conflict("A patient with this email exists already: search for them instead", field="email")
        uid = await users.create_user(con, email=body.email, full_name=body.full_name.strip(), roles=("patient",))
        await con.execute("UPDATE public.profiles SET phone = $2, date_of_birth = $3 WHERE id = $1",
                          uid, body.phone, body.date_of_birth)
        profile = await users.profile(con, uid)
    return created(profile)


_APPOINTMENTS = """
SELECT a.id, a.dentist_id, d.name AS dentist_name, a.appointment_date, a.ends_at, a.appointment_type, a.status,
       a.notes, a.patient_notes, a.cancellation_reason,
       coalesce((SELECT jsonb_agg(jsonb_build_object('id', doc.id, 'file_name', doc.file_name, 'file_url', doc.file_url,
                                                     'file_type', doc.file_type, 'file_size', doc.file_size)
                                  ORDER BY doc.created_at)
                 FROM public.appointment_documents doc WHERE doc.appointment_id = a.id), '[]') AS documents
FROM public.appointments a JOIN public.dentists d ON d.id = a.dentist_id
WHERE a.patient_id = $1 AND a.dentist_id = ANY($2)
ORDER BY a.appointment_date DESC
LIMIT 200
"""


@routes.get("/api/patients/{id}")
async def panel(request: web.Request) -> web.Response:
    """The patient panel: profile, upcoming and past appointments, documents."""
    who = await principal(request)
    require_staff(who)
    patient_id: uuid.UUID = path_id(request)
    pool = request.app[POOL]
    try:
        profile = await users.profile(pool, patient_id)
    except errors.HubError:
        raise errors.not_found("patient", patient_id) from None
    managed = [d["id"] for d in await managed_dentists(pool, who)]
    rows = [dict(r) for r in await pool.fetch(_APPOINTMENTS, patient_id, managed)]
    now = await pool.fetchval("SELECT now()")
    upcoming = sorted((r for r in rows if r["ends_at"] >= now and r["status"] != "cancelled"),
                      key=lambda r: r["appointment_date"])
    past = [r for r in rows if r not in upcoming]
    out: dict[str, Any] = {**profile, "upcoming": upcoming, "past": past,
                           "documents": [d for r in rows for d in r["documents"]]}
    return json(out)
