"""Small asyncio helpers: the long-running loops' wait, and many timeouts on one timer."""

from __future__ import annotations

import asyncio
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; True if it was set.

    Not `asyncio.wait_for(event.wait(), seconds)`: on Python 3.11 that can
    swallow a cancellation arriving as the event is set (cpython gh-86296), and
    a loop around it then never stops: the app's shutdown waited forever.
    `asyncio.timeout` keeps the cancellation.
    """
    try:
        async with asyncio.timeout(max(seconds, 0)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


class Deadlines(Generic[K]):
    """Timeouts of one length for many keys (connections, sockets) on one
    timer. A key armed later is due later, so the dict's order is the order
    of the deadlines and a check looks only at the front. Arming is a dict
    operation, not a timer handle per key: a handle costs microseconds to
    make and cancel, and the few objects it is made of are scanned by every
    full garbage collection for as long as it lives (a socket's whole life)."""

    def __init__(self, timeout: float, expired: Callable[[K], object]) -> None:
        self.timeout = timeout  # set before the first arm: the order relies on one length
        self._expired = expired
        self._due: dict[K, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._due)

    def arm(self, key: K) -> None:
        """Due `timeout` seconds from now, unless it is armed already."""
        if key not in self._due:
            self._add(key)

    def rearm(self, key: K) -> None:
        """Due `timeout` seconds from now, armed or not."""
        self._due.pop(key, None)
        self._add(key)

    def disarm(self, key: K) -> None:
        self._due.pop(key, None)

    def _add(self, key: K) -> None:
        loop = asyncio.get_running_loop()
        self._due[key] = loop.time() + self.timeout
        if self._timer is None:
            self._timer = loop.call_at(self._due[key], self._check)

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        now = loop.time()
        try:
            while self._due:
                key, due = next(iter(self._due.items()))
                if due > now:
                    break
                del self._due[key]
                self._expired(key)
        finally:  # the next check, also if a callback raised
            if self._due and self._timer is None:
                self._timer = loop.call_at(next(iter(self._due.values())), self._check)
