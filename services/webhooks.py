"""Outgoing webhooks: signed per Standard Webhooks, delivered from the outbox
in `webhook_deliveries` (filled by sql/0009 in the transaction that made the
change), in order per endpoint, retried with backoff and jitter.

Several hub processes share the work: an endpoint is leased to one process
at a time (claimed with FOR UPDATE SKIP LOCKED), which delivers its oldest
pending delivery, then the next. A delivery waiting for its retry holds back
the endpoint's later ones, so a receiver sees events in the order they were
committed. A lease that runs out (its process died) passes to another
process; the delivery may then arrive twice, with the same `webhook-id`, as
the specification allows. Bookings never wait for any of this.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import random
import secrets
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import aiohttp
import asyncpg
import msgspec

from hub import db, metrics
from hub.aio import wait_event
from hub.config import Settings
from hub.netguard import GuardedResolver, RefusedAddress, check_url, refusal

log = logging.getLogger("hub.webhooks")

# The event types an endpoint may subscribe to. A module that raises a new
# one adds it here and calls public.webhook_emit(type, data) in its transaction.
EVENT_TYPES = ("appointment.created", "appointment.updated", "appointment.cancelled", "hold.created",
               "hold.released", "hold.expired", "availability.updated", "waitlist.offered", "reminder.due")
DB_ERRORS = db.ERRORS
MAX_BACKOFF = 3600.0
_encode = msgspec.json.encode


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed with the secret's bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def message_id(message: uuid.UUID) -> str:
    return f"msg_{message.hex}"


def body(event_type: str, created_at: datetime, data: Any) -> bytes:
    stamp = created_at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return _encode({"type": event_type, "timestamp": stamp, "data": data})


def backoff(attempt: int, base: float) -> float:
    """Seconds before retry number `attempt` (1, 2, ...): doubling, capped, with ±20% jitter."""
    return min(base * 2 ** (attempt - 1), MAX_BACKOFF) * random.uniform(0.8, 1.2)


_CLAIM = """
UPDATE public.webhook_endpoints e SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
WHERE e.id IN (
  SELECT c.id FROM public.webhook_endpoints c
  WHERE c.enabled AND c.lease_until <= now() AND NOT (c.id = ANY($4::uuid[]))
    AND (SELECT d.next_attempt_at FROM public.webhook_deliveries d
         WHERE d.endpoint_id = c.id AND d.status = 'pending' ORDER BY d.id LIMIT 1) <= now()
  ORDER BY c.lease_until LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING e.id
"""
# Renew the lease and take the endpoint's oldest pending delivery, if it is due.
_HEAD = """
WITH ep AS (
  UPDATE public.webhook_endpoints SET lease_until = now() + make_interval(secs => $3)
  WHERE id = $1 AND lease_owner = $2 AND enabled RETURNING id, url, secret)
SELECT ep.url, ep.secret, d.id, d.created_at, d.attempts, m.id AS message_id, m.type, m.data,
       m.created_at AS message_at
FROM ep CROSS JOIN LATERAL (
  SELECT * FROM public.webhook_deliveries WHERE endpoint_id = ep.id AND status = 'pending' ORDER BY id LIMIT 1) d
JOIN public.webhook_messages m ON m.id = d.message_id
WHERE d.next_attempt_at <= now()
"""
_RELEASE = "UPDATE public.webhook_endpoints SET lease_owner = NULL, lease_until = now() WHERE id = $1 AND lease_owner = $2"
_SUCCEEDED = """
WITH d AS (
  UPDATE public.webhook_deliveries SET status = 'succeeded', attempts = attempts + 1, last_status_code = $2,
    last_latency_ms = $3, last_error = NULL, finished_at = now() WHERE id = $1 RETURNING endpoint_id)
UPDATE public.webhook_endpoints SET consecutive_failures = 0, failing_since = NULL WHERE id = (SELECT endpoint_id FROM d)
"""
_FAILED = """
UPDATE public.webhook_deliveries SET attempts = attempts + 1, last_status_code = $2, last_latency_ms = $3,
  last_error = $4, next_attempt_at = now() + make_interval(secs => $5),
  status = CASE WHEN now() + make_interval(secs => $5) > created_at + make_interval(secs => $6)
           THEN 'failed' ELSE 'pending' END,
  finished_at = CASE WHEN now() + make_interval(secs => $5) > created_at + make_interval(secs => $6)
                THEN now() END
WHERE id = $1 RETURNING status, endpoint_id
"""
_ENDPOINT_FAILED = """
UPDATE public.webhook_endpoints SET failing_since = coalesce(failing_since, now()),
  consecutive_failures = consecutive_failures + $2::int,
  enabled = enabled AND consecutive_failures + $2::int < $3,
  disabled_reason = CASE WHEN consecutive_failures + $2::int >= $3 THEN $4 ELSE disabled_reason END
WHERE id = $1 RETURNING enabled, url, consecutive_failures
"""
_TELL_ADMINS = """
INSERT INTO public.notifications (user_id, kind, title, body, data)
SELECT user_id, 'webhook_disabled', 'A webhook endpoint was disabled', $2, jsonb_build_object('endpoint_id', $1::uuid)
FROM public.user_roles WHERE role = 'admin'
"""


class Attempt(msgspec.Struct):
    status_code: int | None
    latency_ms: int
    error: str | None
    result: str  # success | http_error | network_error | refused

    @property
    def ok(self) -> bool:
        return self.result == "success"


class WebhookWorker:
    """Delivers pending webhooks from this process; one owned task (`run`)."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = settings.webhook_timeout_seconds * 2 + 10
        self._wake = asyncio.Event()
        self._busy: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._swept = 0.0

    def wake(self, *_: Any) -> None:
        """New deliveries are waiting (the `hub_webhooks` NOTIFY)."""
        self._wake.set()

    async def run(self) -> None:
        s = self._settings
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(s.webhook_allow_private),
                                         limit=s.webhook_concurrency)
        timeout = aiohttp.ClientTimeout(total=s.webhook_timeout_seconds)
        pause = 0.5
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            try:
                while True:
                    self._wake.clear()
                    try:
                        await self._claim(session)
                        await self._sweep()
                        wait, pause = s.webhook_poll_seconds, 0.5
                    except DB_ERRORS as exc:
                        log.warning("webhook worker cannot reach the database (%s); retrying in %.1fs", exc, pause)
                        wait, pause = pause, min(pause * 2, 30.0)
                    await wait_event(self._wake, wait)
            finally:
                await self._stop()

    async def _claim(self, session: aiohttp.ClientSession) -> None:
        free = self._settings.webhook_concurrency - len(self._busy)
        if free <= 0:
            return
        rows = await self._pool.fetch(_CLAIM, free, self.owner, self._lease, list(self._busy))
        for row in rows:
            task = asyncio.create_task(self._serve(session, row["id"]), name=f"webhook {row['id']}")
            self._busy[row["id"]] = task
            task.add_done_callback(lambda _, key=row["id"]: (self._busy.pop(key, None), self._wake.set()))

    async def _serve(self, session: aiohttp.ClientSession, endpoint: uuid.UUID) -> None:
        """Deliver this endpoint's due deliveries in order, while the lease holds."""
        try:
            while (head := await self._pool.fetchrow(_HEAD, endpoint, self.owner, self._lease)) is not None:
                payload = body(head["type"], head["message_at"], head["data"])
                attempt = await deliver(session, head["url"], head["secret"], message_id(head["message_id"]),
                                        payload, self._settings.webhook_allow_private)
                if not await self._record(endpoint, head, attempt):
                    break
        except DB_ERRORS as exc:
            log.warning("webhook delivery to %s stopped: %s (the lease runs out and it resumes)", endpoint, exc)
        finally:
            try:
                await self._pool.execute(_RELEASE, endpoint, self.owner, timeout=2)
            except DB_ERRORS:
                pass  # the lease runs out by itself

    async def _record(self, endpoint: uuid.UUID, head: asyncpg.Record, attempt: Attempt) -> bool:
        """Log the attempt, schedule the retry or finish; False once the endpoint is disabled or gone."""
        s = self._settings
        metrics.WEBHOOK_ATTEMPTS.labels(attempt.result).inc()
        metrics.WEBHOOK_ATTEMPT_SECONDS.labels(attempt.result).observe(attempt.latency_ms / 1000)
        async with self._pool.acquire() as con, con.transaction():
            # The endpoint's row first, then its deliveries: the order a DELETE's cascade locks them in.
            if await con.fetchval("SELECT id FROM public.webhook_endpoints WHERE id = $1 FOR UPDATE",
                                  endpoint) is None:
                return False
            await con.execute("INSERT INTO public.webhook_attempts (delivery_id, status_code, latency_ms, error) "
                              "VALUES ($1, $2, $3, $4)", head["id"], attempt.status_code, attempt.latency_ms,
                              attempt.error)
            if attempt.ok:
                await con.execute(_SUCCEEDED, head["id"], attempt.status_code, attempt.latency_ms)
                metrics.WEBHOOK_DELIVERIES.labels("succeeded").inc()
                return True
            row = await con.fetchrow(_FAILED, head["id"], attempt.status_code, attempt.latency_ms, attempt.error,
                                     backoff(head["attempts"] + 1, s.webhook_backoff_base_seconds),
                                     s.webhook_retry_seconds)
            final = row["status"] == "failed"
            reason = f"{s.webhook_disable_after} deliveries in a row failed for good (last: {attempt.error})"
            endpoint = await con.fetchrow(_ENDPOINT_FAILED, row["endpoint_id"], int(final), s.webhook_disable_after,
                                          reason)
            if final:
                metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            if not endpoint["enabled"]:
                metrics.WEBHOOK_DISABLED.inc()
                log.warning("webhook endpoint %s disabled: %s", row["endpoint_id"], reason)
                await con.execute(_TELL_ADMINS, row["endpoint_id"],
                                  f"Deliveries to {endpoint['url']} kept failing, so it was disabled: {reason}. "
                                  "Fix the receiver, then enable it again (PATCH /api/webhooks/{id}).")
                return False
            return True

    async def _sweep(self, every: float = 600.0, keep_days: int = 30) -> None:
        """Forget finished deliveries after `keep_days` (the delivery log's reach)."""
        if time.monotonic() - self._swept < every:
            return
        self._swept = time.monotonic()
        await self._pool.execute(
            "DELETE FROM public.webhook_deliveries WHERE status <> 'pending' "
            "AND finished_at < now() - make_interval(days => $1)", keep_days)
        await self._pool.execute(
            "DELETE FROM public.webhook_messages m WHERE created_at < now() - make_interval(days => $1) "
            "AND NOT EXISTS (SELECT 1 FROM public.webhook_deliveries d WHERE d.message_id = m.id)", keep_days)

    async def _stop(self) -> None:
        tasks = list(self._busy.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def deliver(session: aiohttp.ClientSession, url: str, secret: str, msg_id: str, payload: bytes,
                  allow_private: bool) -> Attempt:
    """One signed POST; never raises. Redirects are not followed (a 3xx is a failure)."""
    started = time.perf_counter()

    def done(result: str, status: int | None = None, error: str | None = None) -> Attempt:
        return Attempt(status, round((time.perf_counter() - started) * 1000), error and error[:500], result)

    try:
        _, literal = check_url(url)
        if literal is not None and (reason := refusal(literal, allow_private)) is not None:
            raise RefusedAddress(reason)
        stamp = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "dental-hub-webhooks/1",
                   "webhook-id": msg_id, "webhook-timestamp": str(stamp),
                   "webhook-signature": sign(secret, msg_id, stamp, payload)}
        async with session.post(url, data=payload, headers=headers, allow_redirects=False) as resp:
            await resp.content.read(1024)  # a little of the answer, never an unbounded body
            if 200 <= resp.status < 300:
                return done("success", resp.status)
            return done("http_error", resp.status, f"HTTP {resp.status}")
    except RefusedAddress as exc:
        return done("refused", error=f"refused: {exc}")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, RefusedAddress):
            return done("refused", error=f"refused: {exc.os_error}")
        return done("network_error", error=f"cannot connect: {exc.os_error or exc}")
    except TimeoutError:
        return done("network_error", error="timed out")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return done("network_error", error=f"{type(exc).__name__}: {exc}")
