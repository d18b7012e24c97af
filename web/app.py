"""The application factory: resources as cleanup contexts, one error/log middleware."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import msgspec
from aiohttp import web

from actors.batch import GroupCommit
from actors.dentist import DentistActor
from actors.rules import Rules
from actors.directory import Directory
from hub import db, metrics, migrate
from hub.auth import verify_token
from hub.catalog import Catalog
from hub.config import Settings
from hub.errors import HTTP_STATUS, ErrorCode, HubError
from hub.keys import Keys
from hub.tasks import Tasks
from services import reminders, users
from services.booking import Booking
from services.feed import Feed
from services.listener import Listener
from services.pubsub import PubSub
from services.sweeper import sweep_forever
from services.waitlist import Waitlist
from services.webhooks import WebhookWorker
from web.realtime import Realtime
from web import (admin, appointments, availability, book, calendar, clinic, health, limits, mcp, notifications,
                 openapi, patients, profiles, relay, waitlist, webhooks)
from web._http import BOOKING, KEYS, POOL, PRINCIPALS, REQUEST_ID, SETTINGS, USER_ID, WAITLIST, json

log = logging.getLogger("hub.http")

_HTTP_CODES = {
    404: (ErrorCode.NOT_FOUND, "Route not found"),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed on this route"),
    413: (ErrorCode.PAYLOAD_TOO_LARGE, "Request body is too large"),
}
_CODE_OF = {s: c.value for c, s in reversed(HTTP_STATUS.items())}  # a bounded label per status
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_and_access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure in the seed's error format and log one line per request."""
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex[:16]
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    try:
        response = await handler(request)
    except HubError as exc:
        response = json(exc.body(), exc.status, exc.headers())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects are answers, not errors
        code, message = _HTTP_CODES.get(exc.status, (ErrorCode.VALIDATION_ERROR, exc.reason))
        if exc.status == 413:
            message = f"Request body is larger than {request.app[SETTINGS].max_body_bytes} bytes"
        response = json(HubError(code, message).body(), exc.status)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:
        error = db.as_hub_error(exc)  # the database away (503) or refusing a value (400): not a bug
        if error is None:
            log.exception("unhandled error", extra={"request_id": request_id, "path": request.path})
            error = HubError(ErrorCode.INTERNAL_ERROR, "An unexpected error occurred", {"request_id": request_id})
        response = json(error.body(), error.status, error.headers())
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    elapsed = time.perf_counter() - started
    metrics.HTTP_DURATION.labels(request.method, route, str(response.status)).observe(elapsed)
    if response.status >= 400:
        metrics.HTTP_ERRORS.labels(route, _CODE_OF.get(response.status, str(response.status))).inc()
    log.info("request", extra={
        "method": request.method, "path": request.path, "status": response.status,
        "duration_ms": round(elapsed * 1000, 2),
        "request_id": request_id, "user_id": request.get(USER_ID)})
    return response


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.database_url:
        raise RuntimeError("create_app needs settings.database_url (the CLI starts the embedded server)")
    pool = await db.create_pool(settings.database_url, min_size=settings.db_pool_min,
                                max_size=settings.db_pool_max, command_timeout=settings.db_timeout,
                                statement_cache_size=settings.db_statement_cache)
    try:
        async with pool.acquire() as con:
            await migrate.check(con, migrate.load(settings.sql_dir))
    except BaseException:
        await pool.close()
        raise
    app[POOL] = pool
    app[PRINCIPALS] = users.Principals(pool)
    yield
    await asyncio.wait_for(pool.close(), 10)


async def _keys(app: web.Application) -> AsyncIterator[None]:
    """The token keys: the secret, and Supabase Auth's JWKS fetched now and kept fresh."""
    settings = app[SETTINGS]
    keys = app[KEYS] = Keys(settings.jwt_secret, jwks_url=settings.jwt_jwks_url, issuers=settings.jwt_issuers)
    await keys.start()
    yield
    await keys.aclose()


PUBSUB = web.AppKey("pubsub", PubSub)
DIRECTORY = web.AppKey("directory", Directory)
LISTENER = web.AppKey("listener", Listener)
REALTIME = web.AppKey("realtime", Realtime)
_decode_ref = msgspec.json.Decoder(dict[str, str]).decode


async def _actors(app: web.Application) -> AsyncIterator[None]:
    """Actors, the event listener and housekeeping; stopped before the pool closes."""
    settings, pool = app[SETTINGS], app[POOL]
    catalog = Catalog()
    await catalog.load(pool)
    pubsub = PubSub()
    feed = Feed(pool, pubsub)
    feed.started = await pool.fetchval("SELECT now()")
    rules = Rules.of(settings)
    writes = GroupCommit(pool)
    directory: Directory[DentistActor] = Directory(
        lambda key: DentistActor(key, pool=pool, writes=writes, catalog=catalog, rules=rules, publish=feed.publish))
    listener = Listener(settings.direct_url or "", pool, directory, catalog, feed)
    app[PUBSUB], app[DIRECTORY], app[LISTENER] = pubsub, directory, listener
    booking = app[BOOKING] = Booking(pool, directory, catalog, settings)
    app[WAITLIST] = Waitlist(booking)
    realtime = app[REALTIME] = Realtime(pool, app[PRINCIPALS], booking, app[KEYS],
                                        retention_hours=settings.event_retention_hours)
    realtime.silence.timeout = settings.heartbeat_timeout_seconds
    pubsub.subscribe(realtime.on_event)

    def notified(con: Any, pid: int, channel: str, payload: str) -> None:
        try:
            ref = _decode_ref(payload)
            realtime.tasks.spawn(realtime.on_notification(uuid.UUID(ref["id"]), uuid.UUID(ref["user_id"])),
                                 "notification")
        except (msgspec.DecodeError, KeyError, ValueError):
            log.warning("ignored a malformed hub_notifications payload")

    listener.notify_handlers["hub_notifications"] = notified
    realtime.listen(listener)
    webhook_worker = WebhookWorker(pool, settings)
    listener.notify_handlers["hub_webhooks"] = webhook_worker.wake
    metrics.track(lambda: (pool.get_size(), pool.get_idle_size()), lambda: len(directory),
                  lambda: len(realtime.sessions))
    loops = Tasks("hub")  # the process's singletons: each logged if it dies, all cancelled at shutdown
    for name, loop in [("listener", listener.run()), ("reaper", directory.reap_forever()),
                       ("sweeper", sweep_forever(pool, retention_hours=settings.event_retention_hours)),
                       ("tokens", _expire_tokens(realtime)), *realtime.background(),
                       ("cut-off", _shed_when_cut_off(listener, realtime)), ("webhooks", webhook_worker.run()),
                       ("reminders", reminders.run(pool, settings))]:
        loops.spawn(loop, name)
    try:  # serve only once events from other processes can reach us
        await asyncio.wait_for(listener.ready.wait(), 10)
    except TimeoutError:
        log.warning("event listener not connected after 10s; serving anyway, /health says so")
    yield
    await directory.aclose(timeout=8)
    await loops.aclose()
    await realtime.tasks.aclose()
    await feed.aclose()


CUT_OFF_AFTER = 3.0  # seconds without the event listener before sockets are sent elsewhere


async def _shed_when_cut_off(listener: Listener, realtime: Realtime, every: float = 0.5) -> None:
    """A process that cannot hear the database cannot tell its sockets what
    others commit: after CUT_OFF_AFTER it closes them with 1012 (reconnect
    elsewhere and resume by version), and refuses new ones until it hears
    again (`_websocket`)."""
    lost_at: float | None = None
    shed = False
    while True:
        await asyncio.sleep(every)
        if listener.connected:
            lost_at, shed = None, False
            continue
        lost_at = lost_at or time.monotonic()
        if not shed and listener.ready.is_set() and time.monotonic() - lost_at >= CUT_OFF_AFTER:
            log.warning("cut off from the database for %.0fs: sending %d sockets elsewhere",
                        time.monotonic() - lost_at, len(realtime.sessions))
            shed = True
            await realtime.close_all()


async def _expire_tokens(realtime: Realtime, every: float = 5.0) -> None:
    """Channels whose token ran out are ended, as Supabase Realtime does."""
    while True:
        await asyncio.sleep(every)
        realtime.joins.expire_tokens()


async def _close_sockets(app: web.Application) -> None:
    if REALTIME in app:
        await app[REALTIME].close_all()


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; METRICS_TOKEN, when set, is required as a bearer token."""
    token = request.app[SETTINGS].metrics_token
    if token and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
        raise HubError(ErrorCode.UNAUTHORIZED, "metrics need the METRICS_TOKEN bearer token")
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _websocket(request: web.Request) -> web.StreamResponse:
    listener = request.app[LISTENER]
    if not listener.connected and listener.ready.is_set():
        raise HubError(ErrorCode.SERVICE_UNAVAILABLE, "This process cannot hear the database; connect to another",
                       {"reason": "database_unavailable"}, retry_after=1)
    return await request.app[REALTIME].websocket(request)


async def _realtime_health(app: web.Application) -> dict[str, int]:
    listener = app[LISTENER]
    if not listener.connected:
        raise ConnectionError("event listener is not connected to the database")
    realtime = app[REALTIME]
    return {"reconnects": listener.reconnects, "sockets": len(realtime.sessions),
            "slow_disconnects": realtime.slow_disconnects}


async def _actors_health(app: web.Application) -> dict[str, Any]:
    directory = app[DIRECTORY]
    paused = directory.crash_looping()
    if paused:  # those dentists cannot be booked here: not healthy, whatever else is
        raise RuntimeError(f"{len(paused)} dentist(s) paused after failing to load: {', '.join(paused)}")
    return {"active": len(directory), "crashes": directory.crash_count, "paused": paused}


async def _database_health(app: web.Application) -> dict[str, int]:
    pool = app[POOL]
    await pool.fetchval("SELECT 1", timeout=health.TIMEOUT)
    return {"pool_size": pool.get_size(), "pool_idle": pool.get_idle_size()}


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors_and_access_log, limits.by_address],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[limits.LIMITS] = limits.RateLimits(settings.rate_limit_user_per_minute, settings.rate_limit_ip_per_minute)
    app.cleanup_ctx.extend([_keys, _postgres, _actors])
    health.register(app, "database", _database_health)
    health.register(app, "realtime", _realtime_health)
    health.register(app, "actors", _actors_health)
    for module in (health, profiles, availability, appointments, notifications, clinic, openapi, webhooks, calendar,
                   waitlist, mcp, book, patients):
        app.add_routes(module.routes)
    app.router.add_get("/realtime/v1/websocket", _websocket)
    app.add_routes(relay.routes(lambda request: request.app[REALTIME].relay,
                                lambda token: verify_token(app[KEYS], token)))
    app.router.add_get("/metrics", _metrics)
    admin.setup(app)
    app.on_shutdown.append(_close_sockets)
    return app
