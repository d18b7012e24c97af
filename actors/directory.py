"""Virtual-actor lifetime: activate on first use, reap when idle, fence restarts.

Per-dentist actors run as their own tasks, outside any TaskGroup, so one
dentist's bug cannot cancel the others. A key whose actor cannot start
(on_start fails with a bug, again and again) is refused fast instead of being
restarted in a loop. Nothing a caller sends can fence a key: a message that
crashes a turn fails that message only (actors/_base.py), and a database that
is away is a temporary refusal (503), not a crash.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Callable, Generic, TypeVar

from actors._base import Actor, ActorDeadError, StopReason
from hub.errors import ErrorCode, HubError

log = logging.getLogger("hub.actors")

A = TypeVar("A", bound=Actor)


class ActorUnavailable(HubError):
    def __init__(self, key: str, retry_after: float) -> None:
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE,
                         "The dentist's schedule cannot be loaded and is paused, retry later",
                         {"actor": key, "reason": "actor_paused"}, retry_after=retry_after)


class Directory(Generic[A]):
    def __init__(self, factory: Callable[[str], A], *, idle_seconds: float = 900.0,
                 crash_limit: int = 3, crash_window: float = 60.0) -> None:
        self._factory = factory
        self.idle_seconds = idle_seconds
        self.crash_limit = crash_limit
        self.crash_window = crash_window
        self._live: dict[str, tuple[A, asyncio.Task[None]]] = {}
        # A stopped activation still draining: the next one waits for it, so one writer at a time.
        self._draining: dict[str, asyncio.Task[None]] = {}
        self._crashes: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._closing = False
        self.crash_count = 0

    def __len__(self) -> int:
        return len(self._live)

    def peek(self, key: str) -> A | None:
        """The live activation, without activating one."""
        entry = self._live.get(key)
        return entry[0] if entry is not None and entry[0].alive else None

    def actors(self) -> list[A]:
        return [actor for actor, _ in self._live.values()]

    def get(self, key: str) -> A:
        """The live actor for `key`, activated on demand.

        Raises ActorUnavailable while the key is crash-looping, and
        SERVICE_UNAVAILABLE during shutdown.
        """
        if self._closing:
            raise HubError(ErrorCode.SERVICE_UNAVAILABLE, "The hub is shutting down", temporary=True)
        entry = self._live.get(key)
        if entry is not None and entry[0].alive and entry[0].stop_reason is None:
            return entry[0]
        if self._crash_looping(key):
            crashes = self._crashes[key]
            raise ActorUnavailable(key, crashes[-self.crash_limit] + self.crash_window - time.monotonic())
        actor = self._factory(key)
        previous = self._draining.get(key) or (entry[1] if entry is not None else None)
        task = asyncio.create_task(self._run(actor, previous), name=f"actor:{key}")
        task.add_done_callback(lambda t, k=key, a=actor: self._on_exit(k, a, t))
        self._live[key] = (actor, task)
        return actor

    async def ask(self, key: str, msg: Any, *, timeout: float | None = None) -> Any:
        """`get(key).ask(msg)`, once more if the activation died in between."""
        try:
            return await self.get(key).ask(msg, timeout=timeout)
        except ActorDeadError:
            return await self.get(key).ask(msg, timeout=timeout)

    def tell_if_live(self, key: str, msg: Any) -> bool:
        """Tell a live actor, without activating one (events for passive actors are moot:
        they load fresh state when next activated)."""
        actor = self.peek(key)
        if actor is None:
            return False
        try:
            actor.tell(msg)
        except HubError:
            actor.stop(StopReason.FAILED)  # it cannot keep up; reload from the database
            return False
        return True

    async def _run(self, actor: A, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        await actor.run()

    def _on_exit(self, key: str, actor: A, task: asyncio.Task[None]) -> None:
        entry = self._live.get(key)
        if entry is not None and entry[0] is actor:
            del self._live[key]
        if self._draining.get(key) is task:
            del self._draining[key]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None or (isinstance(exc, HubError) and exc.temporary):
            return  # a clean stop, or a start refused for now (the database is away): not the actor's fault
        self.crash_count += 1
        if not actor.started:  # only an actor that cannot start is fenced
            self._crashes[key].append(time.monotonic())
        log.warning("actor %s stopped after a crash", key, extra={"actor": key})

    def _crash_looping(self, key: str) -> bool:
        crashes = self._crashes.get(key)
        if not crashes:
            return False
        horizon = time.monotonic() - self.crash_window
        while crashes and crashes[0] < horizon:
            crashes.popleft()
        return len(crashes) >= self.crash_limit

    def crash_looping(self) -> list[str]:
        return [key for key in list(self._crashes) if self._crash_looping(key)]

    def reap(self) -> int:
        """Passivate actors idle longer than idle_seconds; returns how many."""
        horizon = time.monotonic() - self.idle_seconds
        idle = [(k, a, t) for k, (a, t) in self._live.items() if a.last_used < horizon and a.depth == 0 and a.idle()]
        for key, actor, task in idle:
            actor.stop(StopReason.IDLE)
            del self._live[key]
            self._draining[key] = task
        return len(idle)

    async def reap_forever(self, every: float = 60.0) -> None:
        while True:
            await asyncio.sleep(every)
            if count := self.reap():
                log.info("passivated %d idle actors", count)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop every actor after its queued messages, within `timeout`, then cancel."""
        if self._closing:
            return
        self._closing = True
        tasks = [t for _, t in self._live.values()] + list(self._draining.values())
        for actor, _ in self._live.values():
            actor.stop(StopReason.SHUTDOWN)
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        log.info("actors stopped: %d drained, %d cancelled", len(done), len(pending))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
