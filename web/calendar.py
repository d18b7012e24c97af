"""Calendar feeds: subscription URLs (RFC 5545) for a patient's own
appointments or a dentist's schedule. The token in the URL is the only
credential (calendar apps send no headers); only its SHA-256 is stored, and
deleting the feed revokes it."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime
from typing import Literal

import msgspec
from aiohttp import web

from hub import errors
from services import ical
from web._http import POOL, SETTINGS, json, own_user, path_id, principal, read

routes = web.RouteTableDef()
MAX_FEEDS_PER_USER = 20
PAST_DAYS, FUTURE_DAYS = 90, 730  # the window a feed covers


class CreateFeed(msgspec.Struct, forbid_unknown_fields=True):
    dentist_id: uuid.UUID | None = None


class Feed(msgspec.Struct):
    id: uuid.UUID
    kind: Literal["patient", "dentist"]
    dentist_id: uuid.UUID | None
    dentist_name: str | None
    created_at: datetime
    last_used_at: datetime | None


class FeedCreated(Feed):
    url: str  # the subscription address; its token is shown only here


# For /openapi.json: (method, path, summary, query, body, status, answer)
API = [
    ("post", "/api/calendar-feeds", "Create an iCalendar subscription URL (own, or a dentist's for staff)", None,
     CreateFeed, 201, FeedCreated),
    ("get", "/api/calendar-feeds", "The caller's calendar feeds", None, None, 200, list[Feed]),
    ("delete", "/api/calendar-feeds/{id}", "Revoke a calendar feed", None, None, 204, None),
]


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


_LIST = ("SELECT f.id, f.dentist_id, d.name AS dentist_name, f.created_at, f.last_used_at, "
         "CASE WHEN f.dentist_id IS NULL THEN 'patient' ELSE 'dentist' END AS kind "
         "FROM public.calendar_feeds f LEFT JOIN public.dentists d ON d.id = f.dentist_id ")


@routes.post("/api/calendar-feeds")
async def create_feed(request: web.Request) -> web.Response:
    me = await own_user(request)
    body = await read(request, CreateFeed)
    pool = request.app[POOL]
    if body.dentist_id is not None:
        who = await principal(request)
        row = await pool.fetchrow("SELECT user_id FROM public.dentists WHERE id = $1", body.dentist_id)
        if row is None:
            raise errors.not_found("dentist", body.dentist_id)
        if not (who.is_admin or (who.has_role("dentist") and row["user_id"] == me)):
            raise errors.forbidden("Only admins and the dentist themselves may subscribe to a dentist's calendar")
    token = secrets.token_urlsafe(32)
    async with pool.acquire() as con, con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock(hashtextextended(($1::uuid)::text, 9))", me)
        if await con.fetchval("SELECT count(*) FROM public.calendar_feeds WHERE owner_id = $1", me) \
                >= MAX_FEEDS_PER_USER:
            raise errors.conflict(f"You have {MAX_FEEDS_PER_USER} calendar feeds; delete one first",
                                  limit=MAX_FEEDS_PER_USER)
        feed_id = await con.fetchval("INSERT INTO public.calendar_feeds (owner_id, dentist_id, token_hash) "
                                     "VALUES ($1, $2, $3) RETURNING id", me, body.dentist_id, _hash(token))
        row = await con.fetchrow(_LIST + "WHERE f.id = $1", feed_id)
    base = request.app[SETTINGS].public_url or str(request.url.origin())
    return json({**dict(row), "url": f"{base}/ical/{token}.ics"}, status=201)


@routes.get("/api/calendar-feeds")
async def list_feeds(request: web.Request) -> web.Response:
    me = await own_user(request)
    rows = await request.app[POOL].fetch(_LIST + "WHERE f.owner_id = $1 ORDER BY f.created_at, f.id", me)
    return json([dict(r) for r in rows])


@routes.delete("/api/calendar-feeds/{id}")
async def delete_feed(request: web.Request) -> web.Response:
    me = await own_user(request)
    feed_id = path_id(request)
    done = await request.app[POOL].fetchval(
        "DELETE FROM public.calendar_feeds WHERE id = $1 AND owner_id = $2 RETURNING id", feed_id, me)
    if done is None:
        raise errors.not_found("calendar feed", feed_id)
    return web.Response(status=204)


# A dentist feed works only while its owner may still see that dentist.
_FEED = """
UPDATE public.calendar_feeds f SET last_used_at = now()
WHERE token_hash = $1 AND (f.dentist_id IS NULL OR public.has_role(f.owner_id, 'admin')
                           OR public.is_dentist_user(f.dentist_id, f.owner_id))
RETURNING f.owner_id, f.dentist_id, (SELECT name FROM public.dentists WHERE id = f.dentist_id) AS dentist_name
"""
_EVENTS = f"""
SELECT a.id, a.appointment_date, a.duration_minutes, a.appointment_type, a.status, a.updated_at,
       coalesce(r.sequence, 0) AS sequence,
       d.name AS dentist_name, CASE WHEN $3 THEN coalesce(p.full_name, p.email) END AS patient_name
FROM public.appointments a
JOIN public.dentists d ON d.id = a.dentist_id
LEFT JOIN public.appointment_revisions r ON r.appointment_id = a.id
LEFT JOIN public.profiles p ON p.id = a.patient_id AND $3
WHERE CASE WHEN $3 THEN a.dentist_id = $2 ELSE a.patient_id = $1 END
  AND a.appointment_date >= now() - interval '{PAST_DAYS} days'
  AND a.appointment_date < now() + interval '{FUTURE_DAYS} days'
ORDER BY a.appointment_date, a.id LIMIT 5000
"""


@routes.get(r"/ical/{token:[A-Za-z0-9_-]{20,100}}.ics")
async def feed(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    found = await pool.fetchrow(_FEED, _hash(request.match_info["token"]))
    if found is None:
        raise errors.not_found("calendar feed")
    dentist_feed = found["dentist_id"] is not None
    rows = await pool.fetch(_EVENTS, found["owner_id"], found["dentist_id"], dentist_feed)
    name = f"{found['dentist_name']}: appointments" if dentist_feed else "My dental appointments"
    return web.Response(body=ical.calendar(name, [dict(r) for r in rows], dentist_feed=dentist_feed), headers={
        "Content-Type": "text/calendar; charset=utf-8", "Cache-Control": "private, max-age=300",
        "Content-Disposition": 'inline; filename="appointments.ics"'})
