"""Background work that still has an owner.

Work started from a callback that cannot await it (a reload on NOTIFY, a
re-authorization, a socket's closing handshake) goes through a `Tasks`
registry instead of a bare `create_task`: the registry holds each task until
it ends (the loop keeps only weak references), logs the exception it ended
with, and `aclose()` cancels what is left and waits for it at shutdown. So no
task outlives its owner and no failure is silent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine

log = logging.getLogger("hub.tasks")


class Tasks:
    def __init__(self, owner: str, *, expected: tuple[type[BaseException], ...] = ()) -> None:
        """`expected`: exceptions logged as one warning line (a lost database,
        retried elsewhere); any other is logged with its traceback."""
        self.owner = owner
        self._expected = expected
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any] | None:
        """Run `work` in the background. Once closed, `work` is dropped unrun and None returned."""
        if self._closed:
            work.close()
            return None
        task = asyncio.get_running_loop().create_task(work, name=f"{self.owner}:{name or work.__qualname__}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if isinstance(exc, self._expected):
            log.warning("%s failed: %s", task.get_name(), exc or type(exc).__name__)
        else:
            log.error("%s failed", task.get_name(), exc_info=exc)

    async def aclose(self) -> None:
        """Cancel what still runs and wait for it; safe to call twice."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
