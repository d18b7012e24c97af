"""The admin console: server-rendered pages (aiohttp-jinja2) plus one small
JavaScript module that speaks our socket protocol for live updates.

Sign-in takes a JWT (or the `?token=` link `make run` prints) and keeps it
in an HttpOnly cookie for page loads; the page hands the same token to its
script for API calls and the socket. Admins see every dentist; a dentist
sees only their own schedule; anyone else is refused.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import aiohttp_jinja2
import jinja2
from aiohttp import web

from hub import errors
from hub.auth import Principal, verify_token
from hub.errors import HubError
from services.webhooks import EVENT_TYPES
from web._http import KEYS, POOL, PRINCIPALS, SETTINGS, json, principal
from web.book import clinic_zone

routes = web.RouteTableDef()
COOKIE = "hub_console_token"
HERE = Path(__file__).parent


def setup(app: web.Application) -> None:
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    app.router.add_static("/admin/static", HERE / "static", name="static")
    app.add_routes(routes)


async def _console_user(request: web.Request) -> tuple[Principal, str] | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        claims = verify_token(request.app[KEYS], token)
    except HubError:
        return None
    return await request.app[PRINCIPALS].get(claims), token


def _signed_in(request: web.Request, token: str) -> web.HTTPFound:
    """A redirect to the console that remembers the token in an HttpOnly cookie."""
    redirect = web.HTTPFound("/admin")
    redirect.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/admin",
                        secure=request.secure, max_age=7 * 24 * 3600)
    return redirect


@routes.get("/admin")
async def console(request: web.Request) -> web.StreamResponse:
    if "token" in request.query:  # the development link: keep the token out of the address bar
        token = request.query["token"]
        try:
            verify_token(request.app[KEYS], token)
        except HubError as exc:
            return aiohttp_jinja2.render_template("login.html", request, {"error": exc.message}, status=401)
        raise _signed_in(request, token)
    found = await _console_user(request)
    if found is None:
        return aiohttp_jinja2.render_template("login.html", request, {"error": None})
    who, token = found
    if not (who.is_admin or who.has_role("dentist")):
        return aiohttp_jinja2.render_template("login.html", request, {
            "error": "The console is for the clinic's admins and dentists."}, status=403)
    rows = await request.app[POOL].fetch(
        "SELECT id, name, timezone FROM public.dentists WHERE $1 OR user_id = $2 ORDER BY name, id",
        who.is_admin, who.user_id)
    dentists = [dict(r) for r in rows]
    chosen = request.query.get("dentist") or (str(dentists[0]["id"]) if dentists else "")
    if chosen and chosen not in {str(d["id"]) for d in dentists}:
        return aiohttp_jinja2.render_template("login.html", request, {
            "error": "That dentist's schedule is not yours to see."}, status=403)
    zone = ZoneInfo(clinic_zone(request.app[SETTINGS].clinic_timezone, dentists))
    today = datetime.now(zone).date()
    try:
        day = date.fromisoformat(request.query["date"]) if request.query.get("date") else today
    except ValueError:
        day = today
    view = "week" if request.query.get("view") == "week" else "day"
    step = timedelta(days=7 if view == "week" else 1)
    extra = {"view": "week", "dentist": chosen} if view == "week" else {}
    nav = {name: urlencode({**extra, "date": when.isoformat()})
           for name, when in (("prev", day - step), ("next", day + step), ("today", today))}
    names = {str(d["id"]): d["name"] for d in dentists}
    title = f"Week of {names.get(chosen, '')}" if view == "week" else f"{day:%A %-d %B %Y}"
    return aiohttp_jinja2.render_template("console.html", request, {
        "dentists": dentists, "dentist": chosen, "day": day.isoformat(), "view": view, "token": token,
        "is_admin": who.is_admin, "user_id": str(who.user_id), "nav": nav, "title": title,
        "webhook_events": EVENT_TYPES})


@routes.post("/admin/login")
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = str(form.get("token", "")).strip()
    try:
        verify_token(request.app[KEYS], token)
    except HubError as exc:
        return aiohttp_jinja2.render_template("login.html", request, {"error": exc.message}, status=401)
    raise _signed_in(request, token)


@routes.post("/admin/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    redirect = web.HTTPFound("/admin")
    redirect.del_cookie(COOKIE, path="/admin")
    raise redirect


@routes.get("/api/admin/events")
async def recent_events(request: web.Request) -> web.Response:
    """Recent realtime events with their broadcast latency (admins; dentists see their own)."""
    who = await principal(request)
    if not (who.is_admin or who.has_role("dentist")):
        raise errors.forbidden("Requires role: admin or dentist")
    rows = await request.app[POOL].fetch(
        "SELECT e.id, e.dentist_id, e.version, e.event_type, e.table_name, e.record_id, e.broadcast_latency_ms, "
        "e.created_at FROM public.realtime_events e JOIN public.dentists d ON d.id = e.dentist_id "
        "WHERE $1 OR d.user_id = $2 ORDER BY e.id DESC LIMIT 50", who.is_admin, who.user_id)
    return json([dict(r) for r in rows])
