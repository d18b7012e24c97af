"""hub/aio.py: the long-running loops' wait keeps every cancellation."""

from __future__ import annotations

import asyncio

import pytest

from hub.aio import wait_event


async def test_a_cancellation_arriving_as_the_event_is_set_is_kept() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_event(event, 10))
    await asyncio.sleep(0)  # the waiter is parked on the event
    event.set()
    waiter.cancel()  # in the same loop turn: asyncio.wait_for on 3.11 would return normally here
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_set_or_timed_out() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 10) is True
    assert await wait_event(event, -1) is True  # a deadline already past still reports a set event
