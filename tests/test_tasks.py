"""Owned background work (hub/tasks.py) and the maps keyed by what clients or
connections bring, which must shrink again (db.BACKENDS, the realtime topics)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hub import db
from hub.client import RealtimeClient
from hub.tasks import Tasks
from tests.conftest import User
from web.app import REALTIME


async def test_a_failure_is_logged_and_the_task_is_let_go(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Tasks("t", expected=(ConnectionError,))

    async def fail(exc: Exception) -> None:
        raise exc

    with caplog.at_level(logging.WARNING, logger="hub.tasks"):
        bug, lost = tasks.spawn(fail(ValueError("bug")), "bug"), tasks.spawn(fail(ConnectionError("gone")), "lost")
        await asyncio.wait([bug, lost])
        await asyncio.sleep(0)  # done callbacks run one loop turn after the task ends
    assert len(tasks) == 0
    by_name = {r.getMessage(): r for r in caplog.records}
    assert by_name["t:bug failed"].levelno == logging.ERROR and by_name["t:bug failed"].exc_info
    assert by_name["t:lost failed: gone"].levelno == logging.WARNING


async def test_aclose_cancels_what_runs_and_refuses_new_work() -> None:
    tasks = Tasks("t")
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    tasks.spawn(forever())
    await started.wait()
    await tasks.aclose()
    assert cancelled.is_set() and len(tasks) == 0
    late = forever()
    assert tasks.spawn(late) is None
    assert late.cr_frame is None  # closed unrun: no "never awaited" warning
    await tasks.aclose()  # twice is fine


async def test_a_closed_connection_leaves_backends(dsn: str) -> None:
    pool = await db.create_pool(dsn, min_size=1, max_size=1)
    pid = await pool.fetchval("SELECT pg_backend_pid()")
    assert pid in db.BACKENDS
    await pool.close()
    assert pid not in db.BACKENDS


async def test_a_topic_nobody_listens_to_is_forgotten(api, clinic) -> None:
    patient: User = clinic.patient
    realtime = api.client.app[REALTIME]
    url = str(api.client.make_url("")).rstrip("/")
    async with RealtimeClient(url, patient.token) as client:
        channels = [client.channel(f"realtime:room-{i}") for i in range(3)]
        for channel in channels:
            await channel.join()
        assert {f"room-{i}" for i in range(3)} <= set(realtime._by_topic)
        for channel in channels:
            await channel.leave()
    assert not {f"room-{i}" for i in range(3)} & set(realtime._by_topic)
