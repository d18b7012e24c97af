"""Small asyncio helpers the long-running loops share."""

from __future__ import annotations

import asyncio


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
