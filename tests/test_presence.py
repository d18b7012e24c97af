"""Presence across hub processes: real `hub serve` processes on one database,
clients on different processes seeing each other's track, untrack and leave."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Callable

import msgspec

from tests.test_realtime import base, connect

Presences = dict[str, list[dict[str, Any]]]  # key -> metas, as realtime-js keeps them


async def presence_until(channel: Any, state: Presences, done: Callable[[Presences], bool],
                         timeout: float = 5.0) -> Presences:
    """Fold `presence_state` and `presence_diff` into `state` (by phx_ref, as
    realtime-js does) until `done(state)`; fails after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not done(state):
        msg = await channel.next(deadline - asyncio.get_running_loop().time())
        if msg.event == "presence_state":
            state.clear()
            state.update({key: list(value["metas"]) for key, value in msg.payload.items()})
        elif msg.event == "presence_diff":
            for key, value in msg.payload["joins"].items():
                state.setdefault(key, []).extend(value["metas"])
            for key, value in msg.payload["leaves"].items():
                gone = {meta["phx_ref"] for meta in value["metas"]}
                state[key] = [meta for meta in state.get(key, []) if meta["phx_ref"] not in gone]
                if not state[key]:
                    del state[key]
    return state


def clients(state: Presences) -> set[str]:
    return {meta["client"] for metas in state.values() for meta in metas}


async def track(channel: Any, meta: dict[str, Any]) -> None:
    await channel.push("presence", {"type": "presence", "event": "track", "payload": meta})


async def test_presence_across_processes(api, clinic, hubs) -> None:
    first, second = await hubs.start(2)
    topic = f"realtime:lobby-{uuid.uuid4().hex[:8]}"
    one, two = await connect(first, clinic.patient), await connect(second, clinic.other_patient)
    three = None
    try:
        a, b = one.channel(topic, presence={"key": "one"}), two.channel(topic, presence={"key": "two"})
        p1, p2 = str(clinic.patient.id), str(clinic.other_patient.id)  # the hub keys presences by user
        await a.join()
        await b.join()
        seen_a: Presences = {}
        seen_b: Presences = {}
        await track(a, {"client": "one"})
        await track(b, {"client": "two"})
        for channel, seen in ((a, seen_a), (b, seen_b)):
            await presence_until(channel, seen, lambda s: clients(s) == {"one", "two"})
            assert set(seen) == {p1, p2} and all(len(metas) == 1 for metas in seen.values())

        # a process started later learns what the others hold (its sync request);
        # the same key on another process is one more meta under that key
        [third] = await hubs.start(1)
        three = await connect(third, clinic.patient)
        c = three.channel(topic, presence={"key": "whatever"})
        await c.join()
        seen_c = await presence_until(c, {}, lambda s: clients(s) == {"one", "two"})
        assert seen_c[p1][0]["phx_ref"] == seen_b[p1][0]["phx_ref"]  # the same meta everywhere
        await track(c, {"client": "one-on-the-phone"})
        for channel, seen in ((a, seen_a), (b, seen_b), (c, seen_c)):
            await presence_until(channel, seen, lambda s: clients(s) == {"one", "one-on-the-phone", "two"})
            assert len(seen[p1]) == 2

        await a.push("presence", {"type": "presence", "event": "untrack"})
        for channel, seen in ((a, seen_a), (b, seen_b), (c, seen_c)):
            await presence_until(channel, seen, lambda s: clients(s) == {"one-on-the-phone", "two"})

        await two.close()  # the socket goes: its presence leaves everywhere
        for channel, seen in ((a, seen_a), (c, seen_c)):
            await presence_until(channel, seen, lambda s: clients(s) == {"one-on-the-phone"})
    finally:
        for client in (one, two, three):
            if client is not None:
                await client.close()


async def test_presence_of_a_stopped_process_leaves_at_once(api, clinic, hubs) -> None:
    [other] = await hubs.start(1)
    topic = f"realtime:desk-{uuid.uuid4().hex[:8]}"
    here, there = await connect(base(api), clinic.patient), await connect(other, clinic.other_patient)
    try:
        a, b = here.channel(topic, presence={"key": "here"}), there.channel(topic, presence={"key": "there"})
        await a.join()
        await b.join()
        await track(b, {"client": "there"})
        seen = await presence_until(a, {}, lambda s: clients(s) == {"there"})
        await asyncio.to_thread(hubs.stop)  # SIGTERM: a clean stop, so no waiting for missed announcements
        await presence_until(a, seen, lambda s: not s)
    finally:
        await here.close()
        await there.close()


async def test_presence_of_a_silent_process_leaves(api, clinic) -> None:
    """A process that dies says nothing: its presences leave once it misses
    PRESENCE_MISSED announcements. The test plays such a process on the
    database (announcing a 0.2 s period, once) against the real hub."""
    client = await connect(base(api), clinic.patient)
    try:
        channel = client.channel("realtime:ghosts", presence={"key": "watcher"})
        await channel.join()
        ghost = {"op": "state", "origin": "ghost-process", "part": 0, "last": True, "every": 0.2,
                 "presences": [["ghosts", "g1", "ghost", {"client": "ghost", "phx_ref": "g1ref"}]]}
        await api.pool.execute("SELECT pg_notify('hub_presence', 'not json'), pg_notify('hub_presence', $1)",
                               msgspec.json.encode(ghost).decode())
        seen = await presence_until(channel, {}, lambda s: clients(s) == {"ghost"})
        started = asyncio.get_running_loop().time()
        await presence_until(channel, seen, lambda s: not s)
        assert 0.3 < asyncio.get_running_loop().time() - started < 3.0  # after three periods, not at once
    finally:
        await client.close()


async def test_presence_identity_is_the_hubs(api, clinic) -> None:
    """A patient cannot appear as the admin on the console's presence channel:
    the key and the metas' user_id and role come from the token."""
    admin, patient = await connect(base(api), clinic.admin), await connect(base(api), clinic.patient)
    try:
        console = admin.channel("realtime:presence:clinic", presence={"key": f"console-{clinic.admin.id}"})
        spoof = patient.channel("realtime:presence:clinic", presence={"key": f"console-{clinic.admin.id}"})
        await console.join()
        await spoof.join()
        await track(console, {"client": "admin-console"})
        await track(spoof, {"client": "admin-console", "user_id": str(clinic.admin.id), "role": "admin"})
        seen = await presence_until(console, {}, lambda s: len(s) == 2)
        assert set(seen) == {str(clinic.admin.id), str(clinic.patient.id)}
        [mine], [theirs] = seen[str(clinic.admin.id)], seen[str(clinic.patient.id)]
        assert (mine["user_id"], mine["role"]) == (str(clinic.admin.id), "admin")
        assert (theirs["user_id"], theirs["role"]) == (str(clinic.patient.id), "patient")
    finally:
        await admin.close()
        await patient.close()
