"""The newest official Python client, `realtime` (pinned in pyproject.toml's test
extra), unmodified, against the hub, as supabase-py uses it: the anon key as
`apikey`, the user's token through `set_auth`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Callable

from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from realtime.types import RealtimeAcknowledgementStatus

from hub.auth import issue_token
from tests.conftest import SECRET
from tests.test_clients_js import ANON, base_of, book

Item = tuple[Any, ...]


class Inbox:
    """What the client's callbacks saw, in order; `expect` takes the first match."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.changed = asyncio.Event()

    def put(self, *item: Any) -> None:
        self.items.append(item)
        self.changed.set()

    async def expect(self, test: Callable[[Item], bool], timeout: float = 5.0) -> Item:
        deadline = time.monotonic() + timeout
        while True:
            for item in self.items:
                if test(item):
                    self.items.remove(item)
                    return item
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                raise AssertionError(f"nothing expected within {timeout} s; saw {self.items}") from None


async def connect(base: str, token: str) -> AsyncRealtimeClient:
    client = AsyncRealtimeClient(base + "/realtime/v1", token=ANON)
    await client.set_auth(token)
    await client.connect()
    return client


def channel_options(self_: bool = False, ack: bool = False, key: str = "") -> Any:
    return {"config": {"broadcast": {"self": self_, "ack": ack}, "presence": {"key": key, "enabled": bool(key)},
                       "private": False}}


async def subscribe(client: AsyncRealtimeClient, inbox: Inbox, topic: str, options: Any = None,
                    setup: Callable[[Any], Any] = lambda ch: ch) -> Any:
    channel = setup(client.channel(topic, options)
                    .on_broadcast("*", lambda m: inbox.put("broadcast", topic, m)))
    await channel.subscribe(lambda state, err: inbox.put("status", topic, state, err))
    return channel


def subscribed(topic: str) -> Callable[[Item], bool]:
    return lambda i: i[:3] == ("status", topic, RealtimeSubscribeStates.SUBSCRIBED)


def broadcast_of(topic: str, appt_id: str) -> Callable[[Item], bool]:
    return lambda i: i[:2] == ("broadcast", topic) and (i[2]["payload"].get("new") or {}).get("id") == appt_id


async def test_live_channels(api, clinic) -> None:
    """Join, postgres_changes with a filter, broadcast with self/ack, presence,
    and a token refresh while joined, on one socket of a patient's app."""
    client = await connect(base_of(api), clinic.patient.token)
    inbox = Inbox()
    mine = f"appointments:patient_id={clinic.patient.id}"
    room, quiet, lobby = (f"{kind}:{uuid.uuid4().hex[:8]}" for kind in ("chat", "chat", "lobby"))
    try:
        await subscribe(client, inbox, mine, setup=lambda ch: ch.on_postgres_changes(
            "INSERT", lambda change: inbox.put("change", change), table="appointments", schema="public",
            filter="appointment_type=eq.cleaning"))
        await inbox.expect(subscribed(mine))

        checkup = await book(api, clinic.patient, clinic.dentist_id, "checkup", hour=9)
        cleaning = await book(api, clinic.patient, clinic.dentist_id, "cleaning", hour=11)
        await inbox.expect(broadcast_of(mine, checkup))
        change = (await inbox.expect(lambda i: i[0] == "change"))[1]["data"]
        assert change["type"] == "INSERT" and change["table"] == "appointments"
        assert change["record"]["id"] == cleaning
        await inbox.expect(broadcast_of(mine, cleaning))
        assert not [i for i in inbox.items if i[0] == "change"], inbox.items

        # Broadcast: `self` echoes, `ack` confirms; without `self`, nothing comes back.
        loud = await subscribe(client, inbox, room, channel_options(self_=True, ack=True))
        silent = await subscribe(client, inbox, quiet)
        await silent.send_broadcast("wave", {"n": 1})
        acked: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        push = await loud.push("broadcast", {"type": "broadcast", "event": "wave", "payload": {"n": 2}})
        push.receive(RealtimeAcknowledgementStatus.Ok, lambda _: acked.set_result("ok"))
        assert await asyncio.wait_for(acked, 5) == "ok"
        got = (await inbox.expect(lambda i: i[:2] == ("broadcast", room)))[2]
        assert got["event"] == "wave" and got["payload"] == {"n": 2}
        assert not [i for i in inbox.items if i[:2] == ("broadcast", quiet)], inbox.items

        # Presence: track, then the join and the sync.
        presence = await subscribe(client, inbox, lobby, channel_options(key="front-desk"), setup=lambda ch: ch
                                   .on_presence_join(lambda key, *_: inbox.put("presence_join", key))
                                   .on_presence_sync(lambda: inbox.put("sync", dict(ch.presence_state()))))
        await presence.track({"client": "realtime-py"})
        key = str(clinic.patient.id)  # the hub keys presence by the user, whatever the app asks
        await inbox.expect(lambda i: i == ("presence_join", key))
        synced = (await inbox.expect(lambda i: i[0] == "sync" and key in i[1]))[1]
        assert synced[key][0]["client"] == "realtime-py"

        # A fresh token for the same user while joined: the channel stays and keeps delivering.
        await client.set_auth(issue_token(SECRET, clinic.patient.id, ttl=900))
        again = await book(api, clinic.patient, clinic.dentist_id, "checkup", hour=13)
        await inbox.expect(broadcast_of(mine, again))
        ended = [i for i in inbox.items if i[0] == "status" and i[2] != RealtimeSubscribeStates.SUBSCRIBED]
        assert not ended, ended
    finally:
        await client.close()


async def test_refusal_reason(api, clinic) -> None:
    client = await connect(base_of(api), clinic.patient.token)
    inbox = Inbox()
    theirs = f"appointments:patient_id={clinic.other_patient.id}"
    try:
        channel = await subscribe(client, inbox, theirs)
        _, _, state, err = await inbox.expect(lambda i: i[:2] == ("status", theirs))
        assert state == RealtimeSubscribeStates.CHANNEL_ERROR
        assert json.loads(str(err))["reason"] == "you may only follow your own appointments"
        await channel.unsubscribe()  # or the client retries the join by itself
    finally:
        await client.close()


async def test_reconnect_after_hub_restart(api, clinic, hubs) -> None:
    """The hub process restarts while a booking is committed: the client reconnects
    (within its 5 tries, backing off 1, 2, 4, 8 s) and rejoins by itself, and receives it."""
    [hub] = await hubs.start(1)
    client = await connect(hub, clinic.patient.token)
    inbox = Inbox()
    mine = f"appointments:patient_id={clinic.patient.id}"
    try:
        await subscribe(client, inbox, mine)
        await inbox.expect(subscribed(mine))
        before = await book(api, clinic.patient, clinic.dentist_id, hour=9)
        await inbox.expect(broadcast_of(mine, before))

        hubs.stop_one(hub)
        missed = await book(api, clinic.patient, clinic.dentist_id, hour=15)  # via another process
        await hubs.start(1, port=int(hub.rsplit(":", 1)[1]))

        await inbox.expect(subscribed(mine), timeout=20)
        await inbox.expect(broadcast_of(mine, missed), timeout=10)
    finally:
        await client.close()
