"""Supabase Realtime's token and join semantics, the HTTP broadcast API and the
seed's channel shapes, over real WebSockets and HTTP (issue 12, items 4 and 5)."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from hub import protocol
from hub.auth import issue_token
from hub.client import RealtimeClient, ReplyError
from tests.conftest import SECRET, slot_at
from tests.test_realtime import base, book, connect, drain_until

ANON = issue_token(SECRET, None, role="anon")


async def anon_client(api) -> RealtimeClient:
    client = RealtimeClient(base(api), ANON)
    await client.connect()
    return client


async def test_anon_join_is_upgraded_by_a_token_and_downgraded_without_closing(api, clinic) -> None:
    """supabase-js with `accessToken`: the first join carries no token; createClient(url, anonKey)
    re-sends the anon key after each join reply and heartbeat. Neither closes the channel."""
    client = await anon_client(api)
    try:
        mine = client.channel(f"appointments:patient_id={clinic.patient.id}")
        inbox = client.channel(f"notifications:user_id={clinic.patient.id}")
        await mine.join()  # anon on a patient's topics: accepted, sees nothing yet
        await inbox.join()
        await book(api, api.service(), clinic, slot_at(days=20, hour=9), patient_id=str(clinic.patient.id))
        for channel in (mine, inbox):
            with pytest.raises(asyncio.TimeoutError):
                await drain_until(channel, "INSERT", 0.5)

        await mine.push("access_token", {"access_token": clinic.patient.token})  # upgraded
        appt = await book(api, clinic.patient, clinic, slot_at(days=20, hour=10))
        got = await drain_until(mine, "INSERT")
        assert got.payload["payload"]["new"]["id"] == appt["id"]

        await mine.push("access_token", {"access_token": ANON})  # the anon key again: downgraded, still open
        await book(api, clinic.patient, clinic, slot_at(days=20, hour=11))
        with pytest.raises(asyncio.TimeoutError):
            await drain_until(mine, "INSERT", 0.5)
        assert mine.joined
        await mine.push("access_token", {"access_token": clinic.patient.token})
        appt = await book(api, clinic.patient, clinic, slot_at(days=20, hour=12))
        assert (await drain_until(mine, "INSERT")).payload["payload"]["new"]["id"] == appt["id"]
    finally:
        await client.close()


@pytest.mark.parametrize("token, reason", [
    ("not-a-jwt", "malformed"),
    (issue_token(SECRET, uuid.uuid4(), ttl=-10), "expired"),
    (issue_token("another-secret-" + "y" * 40, uuid.uuid4()), "signature"),
])
async def test_a_bad_token_closes_the_channel_with_the_reason(api, clinic, token, reason) -> None:
    client = await connect(base(api), clinic.patient)
    try:
        channel = client.channel(f"availability:dentist_id={clinic.dentist_id}")
        await channel.join()
        with pytest.raises(ReplyError) as exc:
            await channel.push("access_token", {"access_token": token})
        assert list(exc.value.response) == ["reason"]
        while (msg := await channel.next(2)).event != "system":
            pass
        assert msg.payload["status"] == "error" and reason in msg.payload["message"].lower()
        assert (await channel.next(2)).event == "phx_close"
    finally:
        await client.close()


async def test_vsn_given_twice_takes_the_last(api, clinic) -> None:
    url = base(api) + f"/realtime/v1/websocket?apikey={clinic.patient.token}&vsn=1.0.0&vsn=2.0.0"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str('[null, "1", "phoenix", "heartbeat", {}]')  # an array frame: only 2.0.0 reads it
        reply = await ws.receive_json(timeout=2)
        assert reply == [None, "1", "phoenix", "phx_reply", {"status": "ok", "response": {}}]


async def test_http_broadcast_reaches_sockets_with_the_sockets_rules(api, clinic) -> None:
    """realtime-js `send()` before joining and `httpSend()`: 202, delivered on every socket."""
    listener = await anon_client(api)
    try:
        room = listener.channel("realtime:lobby-http")
        await room.join()
        status, body = await api.post("/realtime/v1/api/broadcast", headers={"apikey": ANON}, json={
            "messages": [{"topic": "lobby-http", "event": "wave", "payload": {"n": 1}, "private": False}]})
        assert status == 202 and body == ""
        assert (await drain_until(room, "wave")).payload["payload"] == {"n": 1}
        status, _ = await api.post("/realtime/v1/api/broadcast/lobby-http/events/nudge", clinic.patient,
                                   json={"n": 2})
        assert status == 202
        assert (await drain_until(room, "nudge")).payload["payload"] == {"n": 2}

        hub_topic = f"availability:dentist_id={clinic.dentist_id}"
        for headers, messages, code, expected in (
                ({}, [{"topic": "lobby-http", "event": "x", "payload": {}}], 401, "UNAUTHORIZED"),
                ({"apikey": ANON}, [{"topic": hub_topic, "event": "slot_booked", "payload": {}}], 403, "FORBIDDEN"),
                ({"apikey": ANON}, [{"topic": "lobby-http", "event": "", "payload": {}}], 400, "VALIDATION_ERROR"),
                ({"apikey": ANON}, [{"topic": "lobby-http", "event": "big", "payload": "x" * 8000}], 413,
                 "PAYLOAD_TOO_LARGE")):
            status, body = await api.post("/realtime/v1/api/broadcast", headers=headers, json={"messages": messages})
            assert (status, body["error"]["code"]) == (code, expected), body
        with pytest.raises(asyncio.TimeoutError):  # nothing of the refused ones went out
            await drain_until(room, "slot_booked", 0.3)
    finally:
        await listener.close()


async def test_seed_channels(api, clinic) -> None:
    """A patient on appointments:dentist_id sees only their own appointments there;
    every broadcast carries schema and table; availability gets the seed's UPDATE."""
    patient, admin = await connect(base(api), clinic.patient), await connect(base(api), clinic.admin)
    try:
        mine = patient.channel(f"appointments:dentist_id={clinic.dentist_id}")
        slots = patient.channel(f"availability:dentist_id={clinic.dentist_id}")
        await mine.join()
        await slots.join()
        theirs = await book(api, clinic.other_patient, clinic, slot_at(days=21, hour=9))
        own = await book(api, clinic.patient, clinic, slot_at(days=21, hour=10))
        got = await drain_until(mine, "INSERT")
        body = got.payload["payload"]
        assert body["new"]["id"] == own["id"]  # the other patient's booking never arrived here
        assert (body["schema"], body["table"], body["event"]) == ("public", "appointments", "INSERT")
        booked = [(await drain_until(slots, "slot_booked")).payload["payload"] for _ in range(2)]
        assert {b["table"] for b in booked} == {"appointments"} and theirs["id"] not in str(booked)

        status, _ = await api.put(f"/api/availability/{clinic.dentist_id}", clinic.admin,
                                  json={"monday": "08:00-12:00", "slot_minutes": 20})
        assert status == 200
        update = (await drain_until(slots, "UPDATE")).payload["payload"]
        assert update["table"] == "dentists" and update["new"]["slot_minutes"] == 20
        assert update["new"]["available_times"]["monday"] == "08:00-12:00"
        assert update["old"]["slot_minutes"] == 30 and isinstance(update["version"], int)
        assert {"timezone", "date_overrides", "min_notice_minutes", "horizon_days"} <= set(update["new"])
    finally:
        await patient.close()
        await admin.close()


async def test_refusal_is_a_plain_reason_on_the_wire(api, clinic) -> None:
    url = base(api) + f"/realtime/v1/websocket?apikey={clinic.patient.token}&vsn=2.0.0"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        topic = f"realtime:appointments:patient_id={clinic.other_patient.id}"
        await ws.send_str(protocol.encode(protocol.V2, topic, "phx_join", {"config": {}}, "1", "1").decode())
        reply = await ws.receive_json(timeout=2)
        assert reply[3] == "phx_reply" and reply[4]["status"] == "error"
        assert list(reply[4]["response"]) == ["reason"] and isinstance(reply[4]["response"]["reason"], str)
