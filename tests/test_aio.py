"""hub/aio.py: the long-running loops' wait keeps every cancellation; many
timeouts on one timer expire in order, each once, and never when disarmed."""

from __future__ import annotations

import asyncio

import pytest

from hub.aio import Deadlines, wait_event


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


async def test_deadlines_expire_in_order_and_only_when_still_armed() -> None:
    expired: list[str] = []
    done = asyncio.Event()

    def expire(key: str) -> None:
        expired.append(key)
        if key == "last":
            done.set()

    deadlines: Deadlines[str] = Deadlines(0.05, expire)
    deadlines.arm("a")
    deadlines.arm("gone")
    deadlines.arm("quiet")
    await asyncio.sleep(0.02)
    deadlines.arm("a")  # armed already: keeps its first deadline (a trickle of bytes cannot extend it)
    deadlines.disarm("gone")
    deadlines.rearm("quiet")  # heard from again: due a whole timeout from now
    deadlines.arm("last")
    await asyncio.wait_for(done.wait(), 2)
    assert expired == ["a", "quiet", "last"]
    assert len(deadlines) == 0


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    expired: list[str] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    errors: list[BaseException] = []
    loop.set_exception_handler(lambda _, context: errors.append(context["exception"]))

    def expire(key: str) -> None:
        expired.append(key)
        if key == "bad":
            raise RuntimeError("boom")
        done.set()

    deadlines: Deadlines[str] = Deadlines(0.01, expire)
    deadlines.arm("bad")
    await asyncio.sleep(0.005)
    deadlines.arm("good")
    await asyncio.wait_for(done.wait(), 2)
    assert expired == ["bad", "good"]
    assert [str(e) for e in errors] == ["boom"]
