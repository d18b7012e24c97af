"""Catch-up for clients that rejoin without versions (issue 12.6), and role
changes reaching open sockets on every process within 1 s (issue 13.4), on
real hub processes sharing one database."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from hub import policy, protocol
from hub.auth import Claims, Principal, issue_token
from hub.client import RealtimeClient, ReplyError
from tests.conftest import SECRET, eventually, slot_at
from tests.test_realtime import base, book, connect, drain_until
from web import catchup, channels
from web.app import REALTIME
from web.session import Channel


class SupabaseLike:
    """A socket that joins as realtime-js does after a reconnect: the config
    rebuilt from known keys, no versions, and nothing kept from before."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + f"/realtime/v1/websocket?apikey={token}&vsn=2.0.0"
        self.session = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def join(self, topic: str) -> None:
        self.ws = await self.session.ws_connect(self.url)
        config = {"broadcast": {"self": False, "ack": False}, "presence": {"key": "", "enabled": False},
                  "postgres_changes": [], "private": False}
        await self.ws.send_str(protocol.encode(protocol.V2, topic, "phx_join", {"config": config}, "1", "1").decode())
        reply = await self.ws.receive_json(timeout=5)
        assert reply[3] == "phx_reply" and reply[4]["status"] == "ok", reply

    async def broadcasts(self, name: str, count: int, timeout: float = 5.0) -> list[dict]:
        got: list[dict] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < count:
            assert self.ws is not None
            msg = await self.ws.receive_json(timeout=max(deadline - asyncio.get_running_loop().time(), 0.01))
            if msg[3] == "broadcast" and msg[4]["event"] == name:
                got.append(msg[4]["payload"])
        return got

    async def drop(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def close(self) -> None:
        await self.drop()
        await self.session.close()


async def test_a_rejoin_without_versions_gets_what_it_missed(api, clinic, hubs) -> None:
    """Connected to one process, gone while two bookings commit, back on another
    process: the missed events arrive in order, each with its version."""
    [other] = await hubs.start(1)
    topic = f"realtime:appointments:patient_id={clinic.patient.id}"
    client = SupabaseLike(base(api), clinic.patient.token)
    try:
        await client.join(topic)
        first = await book(api, clinic.patient, clinic, slot_at(days=30, hour=9))
        [seen] = await client.broadcasts("INSERT", 1)
        assert seen["new"]["id"] == first["id"]
        await client.drop()
        # the cursor is saved when the channel ends, off the delivery path
        await eventually(lambda: api.pool.fetchval(
            "SELECT away FROM realtime_cursors WHERE user_id = $1 AND topic = $2", clinic.patient.id, topic[9:]))
        missed = [await book(api, clinic.patient, clinic, slot_at(days=30, hour=h)) for h in (10, 11)]

        client.url = other.rstrip("/") + client.url[len(base(api)):]
        await client.join(topic)
        got = await client.broadcasts("INSERT", 2)
        assert [g["new"]["id"] for g in got] == [m["id"] for m in missed]
        assert got[0]["version"] > seen["version"] and got[1]["version"] > got[0]["version"]
        live = await book(api, clinic.patient, clinic, slot_at(days=30, hour=12))  # then live, no gap
        assert (await client.broadcasts("INSERT", 1))[0]["new"]["id"] == live["id"]
    finally:
        await client.close()


async def test_a_first_visit_replays_nothing_and_anon_has_no_cursor(api, clinic) -> None:
    topic = f"realtime:availability:dentist_id={clinic.dentist_id}"
    client = SupabaseLike(base(api), clinic.patient.token)
    anon = SupabaseLike(base(api), issue_token(SECRET, None, role="anon"))
    try:
        await anon.join(topic)
        await book(api, clinic.patient, clinic, slot_at(days=31, hour=9))
        await anon.broadcasts("slot_booked", 1)  # delivered: from here on it is the past
        await client.join(topic)
        with pytest.raises(asyncio.TimeoutError):
            await client.broadcasts("slot_booked", 1, timeout=0.5)
        await anon.drop()
        await client.drop()
        await eventually(lambda: api.pool.fetchval("SELECT count(*) FROM realtime_cursors WHERE topic = $1",
                                              f"availability:dentist_id={clinic.dentist_id}"))
        assert await api.pool.fetchval("SELECT count(DISTINCT user_id) FROM realtime_cursors WHERE topic = $1",
                                       f"availability:dentist_id={clinic.dentist_id}") == 1
    finally:
        await client.close()
        await anon.close()


async def _later(api, query: str, user, topic: str, since):
    row = await api.pool.fetchrow(query, user, topic)
    return row if row is not None and row["updated_at"] > since else None


async def test_two_tabs_share_a_cursor_without_losing_the_absent_ones_events(api, clinic) -> None:
    """One tab stays connected while the other is away: the absent tab still
    gets everything it missed when it rejoins (the earliest position wins)."""
    api.client.app[REALTIME].cursors.every = 0.2  # the open tab's periodic saves, often
    topic = f"realtime:availability:dentist_id={clinic.dentist_id}"
    stay, away = SupabaseLike(base(api), clinic.patient.token), SupabaseLike(base(api), clinic.patient.token)
    try:
        await stay.join(topic)
        await away.join(topic)
        await away.drop()
        cursor = "SELECT version, away, updated_at FROM realtime_cursors WHERE user_id = $1 AND topic = $2"
        before = await eventually(lambda: api.pool.fetchrow(cursor, clinic.patient.id, topic[9:]))
        assert before["away"] == 1
        missed = [await book(api, clinic.other_patient, clinic, slot_at(days=32, hour=h)) for h in (9, 10)]
        await stay.broadcasts("slot_booked", 2)
        # the open tab's periodic save lands, and must not carry the cursor past the absent tab
        after = await eventually(lambda: _later(api, cursor, clinic.patient.id, topic[9:], before["updated_at"]))
        assert (after["version"], after["away"]) == (before["version"], 1)
        await away.join(topic)
        got = await away.broadcasts("slot_booked", 2)
        assert [g["new"]["start"][:13] for g in got] == [m["appointment_date"][:13] for m in missed]
    finally:
        await stay.close()
        await away.close()


async def test_a_demoted_admin_stops_receiving_within_a_second_on_every_process(api, clinic, hubs) -> None:
    """The admin follows another patient on a second hub process; their role is
    removed straight in user_roles (psql-like). Within 1 s that channel is closed
    with the reason, and the next booking reaches only the patient."""
    [other] = await hubs.start(1)
    demoted = await api.user("admin")
    admin = RealtimeClient(other, demoted.token)
    await admin.connect()
    try:
        watch = admin.channel(f"appointments:patient_id={clinic.patient.id}")
        dashboard = admin.channel("realtime:dashboard", postgres_changes=[
            {"event": "*", "schema": "public", "table": "appointments"}])
        await watch.join()
        await dashboard.join()
        await book(api, clinic.patient, clinic, slot_at(days=33, hour=9))
        await drain_until(watch, "INSERT")
        await drain_until(dashboard, "postgres_changes")

        started = asyncio.get_running_loop().time()
        await api.pool.execute("UPDATE user_roles SET role = 'patient' WHERE user_id = $1 AND role = 'admin'",
                               demoted.id)
        while (msg := await watch.next(1.0)).event != "system":
            pass
        assert asyncio.get_running_loop().time() - started < 1.0
        assert msg.payload["status"] == "error" and "no longer have permission" in msg.payload["message"]
        assert (await watch.next(1.0)).event == "phx_close"

        mine = await book(api, clinic.patient, clinic, slot_at(days=33, hour=10), patient_notes="private")
        with pytest.raises(asyncio.TimeoutError):  # postgres_changes now filtered to the caller's own rows
            await drain_until(dashboard, "postgres_changes", 0.5)
        status, body = await api.get(f"/api/appointments/{mine['id']}", demoted)
        assert status in (403, 404), body  # REST agrees at once, on this process too
    finally:
        await admin.close()


async def test_role_changes_through_the_api_reach_other_processes(api, clinic, hubs) -> None:
    [other] = await hubs.start(1)
    user = await api.user("patient")
    client = RealtimeClient(other, user.token)
    await client.connect()
    try:
        channel = client.channel(f"appointments:patient_id={clinic.patient.id}")
        with pytest.raises(ReplyError):
            await channel.join()
        status, _ = await api.put(f"/api/users/{user.id}/roles", clinic.admin, json={"roles": ["admin"]})
        assert status == 200
        # promoted: the other process's cached roles were dropped, so a join now succeeds
        async def joined() -> bool:
            try:
                await client.channel(f"appointments:patient_id={clinic.patient.id}").join(timeout=1)
                return True
            except ReplyError:
                return False
        await eventually(joined, timeout=1.0)
    finally:
        await client.close()


async def test_joins_that_arrive_together_are_looked_up_together(api, clinic, monkeypatch) -> None:
    """A reconnect storm: lookups that queue while one is in flight share one
    statement. Two tabs of one user come back in the same statement: both
    replay, and both count as back (`away` drops by two, not one)."""
    from types import SimpleNamespace

    from web.channels import parse_topic

    cursors = api.client.app[REALTIME].cursors
    dentist = uuid.UUID(clinic.dentist_id)
    topic = parse_topic(f"realtime:availability:dentist_id={dentist}")
    current = await api.pool.fetchval("SELECT version FROM dentists WHERE id = $1", dentist)
    for user, away in ((clinic.patient.id, 2), (clinic.other_patient.id, 1)):
        await api.pool.execute("INSERT INTO realtime_cursors (user_id, topic, dentist_id, version, away) "
                               "VALUES ($1, $2, $3, $4, $5)", user, topic.canonical, dentist, current - 1, away)
    await api.pool.execute("UPDATE realtime_cursors SET version = $2 WHERE user_id = $1", clinic.other_patient.id,
                           current)  # up to date: nothing to replay

    def channel(user):
        return SimpleNamespace(topic=topic, start={}, viewer=SimpleNamespace(principal=SimpleNamespace(user_id=user)))

    tabs = [channel(clinic.patient.id), channel(clinic.patient.id), channel(clinic.other_patient.id),
            channel(clinic.admin.id)]
    batches: list[int] = []
    find = cursors._find
    monkeypatch.setattr(cursors, "_find", lambda batch: batches.append(len(batch)) or find(batch))
    replays = await asyncio.gather(*(cursors.resume(tab) for tab in tabs))
    assert batches == [4]
    assert replays == [{dentist: current - 1}, {dentist: current - 1}, {}, {}]
    assert [tab.start for tab in tabs] == [{dentist: current - 1}] * 2 + [{dentist: current}] * 2
    assert await api.pool.fetchval("SELECT sum(away) FROM realtime_cursors WHERE topic = $1", topic.canonical) == 0


def test_ended_cursors_waiting_for_a_save_are_bounded(monkeypatch) -> None:
    """Cursors of ended channels wait for the next save, keyed by the clients'
    topics; while saves fail they pile up, so past MAX_ENDED more are dropped."""
    monkeypatch.setattr(catchup, "MAX_ENDED", 50)
    cursors = catchup.Cursors(None, 24, (), spawn=lambda work: work.close())  # the database is away
    who = policy.Caller(Principal(Claims("authenticated", uuid.uuid4(), exp=0)))
    dentist = uuid.uuid4()

    def end(topic: str, version: int) -> None:
        channel = Channel(None, channels.parse_topic(topic), None, who, 0, [])  # type: ignore[arg-type]
        channel.start = {dentist: version}
        cursors.ended(channel)

    for i in range(200):
        end(f"realtime:room-{i}", 10 + i)
    end("realtime:room-0", 5)  # already kept: still counted, and the earliest version wins
    batch = cursors._take_ended()
    assert len(batch) == 50
    assert batch[(who.principal.user_id, "room-0", dentist)] == (5, 2)
