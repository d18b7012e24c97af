"""Cross-process events: LISTEN for the triggers' NOTIFY and hand each
reference to the feed (which reads the events themselves from
`realtime_events`: NOTIFY carries a reference, never a row) and to the
dentist's live actor, which catches up its memory.

A lost connection is retried with backoff; on reconnect the feed and every
live actor are told each dentist's current version, so nothing committed
meanwhile is lost, and the `on_connect` callbacks run (realtime presence asks
the other processes to announce theirs again).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Callable

import asyncpg
import msgspec

from actors.dentist import DentistActor
from actors.directory import Directory
from actors.messages import CatchUp
from hub import db
from hub.aio import wait_event
from hub.catalog import Catalog
from hub.tasks import Tasks
from services.feed import Feed

log = logging.getLogger("hub.listener")

_decode = msgspec.json.Decoder(dict[str, Any]).decode
DB_ERRORS = db.ERRORS
OWN_GRACE = 0.05  # seconds an own write's actor has to publish before the feed reads the log


class Listener:
    def __init__(self, dsn: str, pool: asyncpg.Pool, directory: Directory[DentistActor], catalog: Catalog,
                 feed: Feed, *, keepalive: float = 5.0) -> None:
        self._dsn = dsn
        self._pool = pool
        self._feed = feed
        self.notify_handlers: dict[str, Any] = {}  # NOTIFY channel name -> asyncpg listener callback
        self.on_connect: list[Callable[[], None]] = []  # called once each LISTEN is in place
        self._directory = directory
        self._catalog = catalog
        self._keepalive = keepalive
        self.connected = False
        self.reconnects = 0
        self.ready = asyncio.Event()  # set once the first LISTEN is in place
        self._tasks = Tasks("listener", expected=DB_ERRORS)  # catalog reloads, ended with run()

    def _on_event(self, con: Any, pid: int, name: str, payload: str) -> None:
        try:
            ref = _decode(payload)
            dentist, version = uuid.UUID(ref["dentist_id"]), int(ref["version"])
            if pid in db.BACKENDS:
                # Our own write: its actor publishes it in a moment, with no
                # round trip; look again shortly only in case no actor did.
                asyncio.get_running_loop().call_later(OWN_GRACE, self._feed.committed, dentist, version)
            else:
                self._feed.committed(dentist, version)
            self._directory.tell_if_live(str(dentist), CatchUp(version=version))
        except (msgspec.DecodeError, KeyError, ValueError, TypeError):
            log.warning("ignored a malformed hub_events payload: %.200s", payload)

    def _on_catalog(self, con: Any, pid: int, name: str, payload: str) -> None:
        self._tasks.spawn(self._catalog.load(self._pool), "catalog")

    async def _resync(self) -> None:
        """After (re)connecting: tell each live actor where its dentist is now."""
        await self._catalog.load(self._pool)
        keys = list({a.dentist_id for a in self._directory.actors()} | set(self._feed.known()))
        if not keys:
            return
        rows = await self._pool.fetch("SELECT id, version FROM public.dentists WHERE id = ANY($1)", keys)
        for row in rows:
            self._feed.committed(row["id"], row["version"])
            self._directory.tell_if_live(str(row["id"]), CatchUp(version=row["version"]))

    async def run(self) -> None:
        """LISTEN until cancelled, reconnecting; work a notification started ends with it."""
        try:
            await self._listen()
        finally:
            await self._tasks.aclose()

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            con: asyncpg.Connection | None = None
            try:
                con = await db.connect(self._dsn, timeout=5)
                lost = asyncio.Event()
                con.add_termination_listener(lambda _: lost.set())
                await con.add_listener("hub_events", self._on_event)
                await con.add_listener("hub_catalog", self._on_catalog)
                for name, callback in self.notify_handlers.items():
                    await con.add_listener(name, callback)
                self.connected = True
                await self._resync()
                for callback in self.on_connect:
                    callback()
                self.ready.set()
                backoff = 0.2
                while not await wait_event(lost, self._keepalive):
                    await con.fetchval("SELECT 1", timeout=self._keepalive)
            except DB_ERRORS as exc:
                log.warning("event listener lost the database (%s); retrying in %.1fs", exc or type(exc).__name__,
                            backoff)
            finally:
                self.connected = False
                if con is not None:
                    con.terminate()
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)  # a local connect attempt is cheap; being back soon is not
