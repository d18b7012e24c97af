"""The actor base and directory, without a database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors._base import Actor, ActorDeadError, StopReason
from actors.directory import ActorUnavailable, Directory
from hub.errors import ErrorCode, HubError, conflict


class Counter(Actor):
    mailbox_size = 4
    starts = 0

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.value = 0
        self.stopped: StopReason | None = None

    async def on_start(self) -> None:
        Counter.starts += 1
        if self.key == "broken":
            raise RuntimeError("cannot load")
        if self.key == "database-away":
            raise HubError(ErrorCode.SERVICE_UNAVAILABLE, "database away", temporary=True)

    async def on_stop(self, reason: StopReason) -> None:
        self.stopped = reason

    async def receive(self, msg: Any) -> Any:
        match msg:
            case ("add", n):
                before = self.value
                await asyncio.sleep(0)  # an await inside a turn lets no other message in
                self.value = before + n
                return self.value
            case "refuse":
                raise conflict("no")
            case "crash":
                raise RuntimeError("bug")
            case ("sleep", seconds):
                await asyncio.sleep(seconds)
                return "slept"
        raise AssertionError(msg)


@pytest.fixture
def directory():
    Counter.starts = 0
    d: Directory[Counter] = Directory(Counter, crash_limit=2, crash_window=60)
    yield d


async def test_turns_are_serialized(directory) -> None:
    results = await asyncio.gather(*(directory.ask("a", ("add", 1)) for _ in range(4)))
    assert sorted(results) == [1, 2, 3, 4]
    await directory.aclose()


async def test_expected_error_keeps_the_actor(directory) -> None:
    actor = directory.get("a")
    with pytest.raises(HubError) as exc:
        await actor.ask("refuse")
    assert exc.value.code == ErrorCode.CONFLICT
    assert await actor.ask(("add", 2)) == 2
    assert directory.get("a") is actor
    await directory.aclose()


async def test_crash_fails_caller_and_next_use_reactivates(directory) -> None:
    first = directory.get("a")
    await first.ask(("add", 5))
    with pytest.raises(HubError) as exc:
        await first.ask("crash")
    assert exc.value.code == ErrorCode.INTERNAL_ERROR
    await asyncio.sleep(0)
    assert not first.alive and first.stopped is StopReason.FAILED
    second = directory.get("a")
    assert second is not first
    assert await second.ask(("add", 1)) == 1  # fresh state (a real actor reloads from PostgreSQL)
    assert Counter.starts == 2
    await directory.aclose()


async def test_an_actor_that_cannot_start_is_refused_fast(directory) -> None:
    for _ in range(2):
        with pytest.raises(HubError):  # ActorDeadError, or the fence already
            await directory.ask("broken", ("add", 1))
        await asyncio.sleep(0)
    with pytest.raises(ActorUnavailable) as exc:
        directory.get("broken")
    assert exc.value.headers() == {"Retry-After": "60"}
    assert directory.crash_looping() == ["broken"]
    assert await directory.ask("b", ("add", 1)) == 1  # other keys are unaffected
    await directory.aclose()


async def test_no_message_can_fence_an_actor(directory) -> None:
    """Crashing turns fail their own callers only, however many there are."""
    for _ in range(5):
        with pytest.raises(HubError) as exc:
            await directory.ask("a", "crash")
        assert exc.value.code == ErrorCode.INTERNAL_ERROR
        await asyncio.sleep(0)
    assert directory.crash_looping() == []
    assert await directory.ask("a", ("add", 1)) == 1
    await directory.aclose()


async def test_a_start_refused_for_now_is_not_a_crash(directory) -> None:
    """The database away at activation: every caller hears 503, and nothing is fenced."""
    for _ in range(5):
        with pytest.raises(HubError) as exc:
            await directory.ask("database-away", ("add", 1))
        assert exc.value.code == ErrorCode.SERVICE_UNAVAILABLE and exc.value.message == "database away"
        await asyncio.sleep(0)
    assert directory.crash_looping() == [] and directory.crash_count == 0
    await directory.aclose()


async def test_full_mailbox_is_a_fast_503(directory) -> None:
    actor = directory.get("a")
    slow = [asyncio.create_task(actor.ask(("sleep", 0.2)))]
    await asyncio.sleep(0.01)  # that one is running; four more fill the mailbox
    slow += [asyncio.create_task(actor.ask(("sleep", 0.01))) for _ in range(4)]
    await asyncio.sleep(0)
    with pytest.raises(HubError) as exc:
        await actor.ask(("add", 1))
    assert exc.value.code == ErrorCode.SERVICE_UNAVAILABLE and exc.value.temporary
    assert await asyncio.gather(*slow) == ["slept"] * 5
    await directory.aclose()


async def test_timeout_answers_busy_and_skips_the_abandoned_message(directory) -> None:
    actor = directory.get("a")
    blocker = asyncio.create_task(actor.ask(("sleep", 0.2)))
    await asyncio.sleep(0.01)
    with pytest.raises(HubError) as exc:
        await actor.ask(("add", 1), timeout=0.05)
    assert exc.value.code == ErrorCode.SERVICE_UNAVAILABLE
    await blocker
    assert await actor.ask(("add", 10)) == 10  # the abandoned add never ran
    await directory.aclose()


async def test_idle_actors_are_passivated_and_come_back(directory) -> None:
    actor = directory.get("a")
    await actor.ask(("add", 1))
    directory.idle_seconds = 0
    assert directory.reap() == 1
    await asyncio.sleep(0.01)
    assert actor.stopped is StopReason.IDLE and len(directory) == 0
    assert await directory.ask("a", ("add", 1)) == 1
    await directory.aclose()


async def test_shutdown_drains_queued_messages_then_refuses(directory) -> None:
    actor = directory.get("a")
    pending = [asyncio.create_task(actor.ask(("add", 1))) for _ in range(3)]
    await asyncio.sleep(0)
    await directory.aclose()
    assert sorted(await asyncio.gather(*pending)) == [1, 2, 3]
    assert actor.stopped is StopReason.SHUTDOWN
    with pytest.raises(ActorDeadError):
        await actor.ask(("add", 1))
    with pytest.raises(HubError):
        directory.get("a")
