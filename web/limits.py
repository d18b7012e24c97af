"""Rate limits on REST writes, per client address and per signed-in user.

Token buckets in this process's memory: with WORKERS=N each process keeps its
own buckets, so a client spread over N processes gets up to N times the rate
(docs/LIMITS.md). A refusal is `429 RATE_LIMITED` with `Retry-After`. Each map
of buckets is bounded: past MAX_KEYS the least recently used key is dropped,
which can only forgive a client, never refuse one wrongly.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Awaitable, Callable

from aiohttp import web

from hub.auth import Principal
from hub.errors import ErrorCode, HubError

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_KEYS = 10_000
BURST_SECONDS = 10  # a bucket holds this many seconds' worth of its rate


class Buckets:
    """One token bucket per key, `per_minute` tokens a minute; 0 turns it off."""

    def __init__(self, per_minute: int, *, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BURST_SECONDS)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is free."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, then = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens >= 1:
            tokens -= 1
            wait = 0.0
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # most recently used last
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait


class RateLimits:
    def __init__(self, user_per_minute: int, ip_per_minute: int) -> None:
        self.users = Buckets(user_per_minute)
        self.ips = Buckets(ip_per_minute)

    def check_ip(self, request: web.Request) -> None:
        if request.method in WRITES:
            _refuse(self.ips.take(request.remote or "unknown"), "from your address")

    def check_user(self, request: web.Request, who: Principal) -> None:
        """The service role is a trusted backend acting for many patients: not limited per user."""
        if request.method in WRITES and not who.is_service and who.user_id is not None:
            _refuse(self.users.take(str(who.user_id)), "for your account")


def _refuse(wait: float, whose: str) -> None:
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise HubError(ErrorCode.RATE_LIMITED, f"Too many write requests {whose}; retry in {seconds} s",
                       {"retry_after_seconds": seconds}, retry_after=seconds)


LIMITS = web.AppKey("rate_limits", RateLimits)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def by_address(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Per-address limit on writes, before any work; the per-user one is in web._http.principal."""
    if request.path.startswith("/api/"):
        request.app[LIMITS].check_ip(request)
    return await handler(request)
