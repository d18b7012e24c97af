"""The keys a token may be signed with: the project's HS256 secret and, when
JWT_JWKS_URL is set, the asymmetric keys (ES256, RS256) Supabase Auth
publishes as a JWKS.

The JWKS is fetched at startup, again every `refresh_every` seconds (so a
key the project revoked stops verifying), and early when a token names a
`kid` we do not know, at most once per `refetch_after` seconds: a flood of
tokens with made-up key ids costs one fetch, not one per request. Fetches are
async and never on a request's path except `ready_for`, which a handler may
await so the first token signed with a freshly rotated key is not refused.
Verification itself (hub.auth.verify_token) is synchronous and in memory.

A failed fetch keeps the keys we had: a Supabase outage does not log anyone
out, and only a fetched JWKS that no longer lists a key retires it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any, Callable

import aiohttp
import cachetools
import jwt

log = logging.getLogger("hub.keys")

ASYMMETRIC = ("ES256", "RS256")
_MAX_JWKS_BYTES = 256 * 1024


class Keys:
    def __init__(self, secret: str | None, *, jwks_url: str | None = None, issuers: tuple[str, ...] = (),
                 refetch_after: float = 30.0, refresh_every: float = 600.0, timeout: float = 5.0,
                 verified_max: int = 20_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.secret = secret or None
        self.jwks_url = jwks_url or None
        self.issuers = issuers
        self.refetch_after = refetch_after
        self.refresh_every = refresh_every
        self.timeout = timeout
        self.clock = clock
        self.fetches = 0          # attempts, for tests and /health
        # token -> Claims (hub.auth.verify_token) until the token's `exp`, at most `verified_max`
        # (the least recently used go first); cleared whenever the key set changes
        self.verified: cachetools.TLRUCache[str, Any] = cachetools.TLRUCache(
            verified_max, ttu=lambda _token, claims, _now: claims.exp, timer=time.time)
        self._jwks: dict[str, jwt.PyJWK] = {}
        self._last_refetch = -math.inf  # of refetches for unknown kids, the rate-limited kind
        self._inflight: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"Keys(hs256={self.secret is not None}, jwks_url={self.jwks_url!r}, kids={sorted(self._jwks)})"

    @property
    def kids(self) -> list[str]:
        return sorted(self._jwks)

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The published key `kid`, or None (and an early refetch, rate-limited)."""
        found = self._jwks.get(kid) if kid is not None else None
        if found is None and self.jwks_url:
            self._refetch_soon()
        return found

    # ---- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Fetch once (a failure is logged, not raised) and keep refreshing."""
        if not self.jwks_url:
            return
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        await self.refresh()
        self._loop_task = asyncio.create_task(self._refresh_forever(), name="jwks")

    async def aclose(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._loop_task, self._inflight) if t is not None),
                             return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _refresh_forever(self) -> None:
        while True:
            # Retry sooner while we have no keys at all (startup during an outage).
            await asyncio.sleep(self.refresh_every if self._jwks else self.refetch_after)
            await self.refresh()

    # ---- fetching ----------------------------------------------------------

    async def ready_for(self, token: str | None) -> None:
        """Before verifying `token`: if it names a key we do not know and a
        refetch is allowed now, wait for that refetch (shared by all callers)."""
        if not self.jwks_url or not token:
            return
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            return
        if not isinstance(kid, str) or kid in self._jwks:
            return
        task = self._refetch_soon()
        if task is not None:
            await asyncio.shield(task)

    def _refetch_soon(self) -> asyncio.Task[None] | None:
        if self._inflight is not None and not self._inflight.done():
            return self._inflight
        if self.clock() - self._last_refetch < self.refetch_after:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None  # verifying outside the server (CLI): no fetching
        self._last_refetch = self.clock()  # count it now, so a burst starts one fetch
        self._inflight = loop.create_task(self.refresh(), name="jwks-refetch")
        return self._inflight

    async def refresh(self) -> None:
        """Fetch the JWKS now; keep the current keys if that fails."""
        if not self.jwks_url:
            return
        self.fetches += 1
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            async with self._session.get(self.jwks_url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                body = await resp.content.read(_MAX_JWKS_BYTES + 1)
                if len(body) > _MAX_JWKS_BYTES:
                    raise ValueError("JWKS is larger than 256 KiB")
            keys = parse_jwks(json.loads(body))
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as exc:
            log.warning("could not fetch the JWKS from %s (%s); keeping %d known keys",
                        self.jwks_url, exc or type(exc).__name__, len(self._jwks))
            return
        if set(keys) != set(self._jwks):
            log.info("JWKS keys now %s", sorted(keys))
        self._jwks = keys
        self.verified.clear()  # a retired key's tokens must be checked again


def parse_jwks(data: Any) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWKS document by `kid`; keys without a kid, for
    encryption, or of algorithms we do not accept are skipped."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("JWKS has no 'keys' list")
    found: dict[str, jwt.PyJWK] = {}
    for item in data["keys"]:
        if not isinstance(item, dict) or not isinstance(item.get("kid"), str) or item.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(item)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            log.warning("skipped JWKS key %r: not a usable public key", item.get("kid"))
            continue
        if key.algorithm_name not in ASYMMETRIC:
            log.warning("skipped JWKS key %r: algorithm %s is not accepted", item.get("kid"), key.algorithm_name)
            continue
        found[item["kid"]] = key
    return found
