"""The actor base and directory, without a database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors._base import Actor, ActorDeadError, StopReason
from actors.directory import ActorUnavailable, Directory
from hub.errors import ErrorCode, HubError, conflict
from tests.conftest import eventually, running_actor_tasks


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
            case ("wait", asyncio.Event() as started, asyncio.Event() as release):
                started.set()
                await release.wait()
                return "released"
        raise AssertionError(msg)


@pytest.fixture
async def directory():
    Counter.starts = 0
    d: Directory[Counter] = Directory(Counter, crash_limit=2, crash_window=60)
    yield d
    await d.aclose()  # a test that failed half-way leaks no actor


async def stopped(directory: Directory[Counter]) -> None:
    """Until the directory has seen its actors stop (their tasks' done callbacks ran)."""
    await eventually(lambda: len(directory) == 0, what="the actor's exit")


async def blocked(actor: Counter) -> tuple[asyncio.Task[Any], asyncio.Event]:
    """A turn that runs until the returned event is set."""
    started, release = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(actor.ask(("wait", started, release)))
    await started.wait()
    return task, release


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
    await stopped(directory)
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
        await stopped(directory)
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
        await stopped(directory)
    assert directory.crash_looping() == []
    assert await directory.ask("a", ("add", 1)) == 1
    await directory.aclose()


async def test_a_start_refused_for_now_is_not_a_crash(directory) -> None:
    """The database away at activation: every caller hears 503, and nothing is fenced."""
    for _ in range(5):
        with pytest.raises(HubError) as exc:
            await directory.ask("database-away", ("add", 1))
        assert exc.value.code == ErrorCode.SERVICE_UNAVAILABLE and exc.value.message == "database away"
        await stopped(directory)
    assert directory.crash_looping() == [] and directory.crash_count == 0
    await directory.aclose()


async def test_full_mailbox_is_a_fast_503(directory) -> None:
    actor = directory.get("a")
    running, release = await blocked(actor)  # that one is running; four more fill the mailbox
    queued = [asyncio.create_task(actor.ask(("add", 1))) for _ in range(4)]
    await eventually(lambda: actor.depth == 4, what="a full mailbox")
    with pytest.raises(HubError) as exc:
        await actor.ask(("add", 1))
    assert exc.value.code == ErrorCode.SERVICE_UNAVAILABLE and exc.value.temporary
    release.set()
    assert await running == "released"
    assert sorted(await asyncio.gather(*queued)) == [1, 2, 3, 4]  # the refused one never ran
    await directory.aclose()


async def test_timeout_answers_busy_and_skips_the_abandoned_message(directory) -> None:
    actor = directory.get("a")
    blocker, release = await blocked(actor)
    with pytest.raises(HubError) as exc:
        await actor.ask(("add", 1), timeout=0.05)
    assert exc.value.code == ErrorCode.SERVICE_UNAVAILABLE
    release.set()
    await blocker
    assert await actor.ask(("add", 10)) == 10  # the abandoned add never ran
    await directory.aclose()


async def test_idle_actors_are_passivated_and_come_back(directory) -> None:
    actor = directory.get("a")
    await actor.ask(("add", 1))
    directory.idle_seconds = 0
    assert directory.reap() == 1
    await eventually(lambda: actor.stopped is StopReason.IDLE, what="passivation")
    assert len(directory) == 0
    assert await directory.ask("a", ("add", 1)) == 1
    await directory.aclose()


async def test_shutdown_drains_queued_messages_then_refuses(directory) -> None:
    actor = directory.get("a")
    pending = [asyncio.create_task(actor.ask(("add", 1))) for _ in range(3)]
    await asyncio.sleep(0)  # one pass of the loop: each task posts its message (no waiting on time)
    await directory.aclose()
    assert sorted(await asyncio.gather(*pending)) == [1, 2, 3]
    assert actor.stopped is StopReason.SHUTDOWN
    with pytest.raises(ActorDeadError):
        await actor.ask(("add", 1))
    with pytest.raises(HubError):
        directory.get("a")


async def test_running_actor_tasks_are_found(directory) -> None:
    """What the autouse fixture (tests/conftest.py) fails a leaking test with."""
    await directory.ask("leaky", ("add", 1))
    assert running_actor_tasks() == ["actor:leaky"]
    await directory.aclose()
    assert running_actor_tasks() == []
