"""The realtime socket over real WebSockets: the seed's channels, who sees
what, chatbot commands, replay, other processes, psql, bad input, slow consumers."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone

import aiohttp
import pytest

from hub.client import RealtimeClient, ReplyError
from hub.events import Event
from tests.conftest import SECRET, User, eventually, slot_at
from web.app import REALTIME


def base(api) -> str:
    return str(api.client.make_url("")).rstrip("/")


async def connect(url: str, who: User, **kw) -> RealtimeClient:
    client = RealtimeClient(url, who.token, **kw)
    await client.connect()
    return client


async def drain_until(channel, name: str, timeout: float = 2.0):
    """The next broadcast named `name` (skipping presence and system messages)."""
    while True:
        msg = await channel.next(timeout)
        if msg.event == "broadcast" and msg.payload["event"] == name:
            return msg
        if msg.event == "postgres_changes" and name == "postgres_changes":
            return msg


async def book(api, who, clinic, when: str, **extra) -> dict:
    status, body = await api.post("/api/appointments", who, json={
        "dentist_id": clinic.dentist_id, "appointment_date": when, "appointment_type": "checkup", **extra})
    assert status == 201, body
    return body


async def test_seed_realtime_test(api, clinic) -> None:
    """Admin, patient and chatbot connected; a REST booking reaches all three
    within 1 s; a second patient sees only the slot becoming unavailable."""
    url = base(api)
    bot = api.service()
    admin, patient, chatbot, other = [await connect(url, w) for w in
                                      (clinic.admin, clinic.patient, bot, clinic.other_patient)]
    try:
        a = admin.channel(f"appointments:dentist_id={clinic.dentist_id}")
        p = patient.channel(f"appointments:patient_id={clinic.patient.id}")
        c = chatbot.channel(f"availability:dentist_id={clinic.dentist_id}")
        o = other.channel(f"availability:dentist_id={clinic.dentist_id}")
        for ch in (a, p, c, o):
            await ch.join()
        started = asyncio.get_running_loop().time()
        appt = await book(api, clinic.patient, clinic, slot_at(days=3), patient_notes="my secret note")
        got_admin = await drain_until(a, "INSERT", 1.0)
        got_patient = await drain_until(p, "INSERT", 1.0)
        got_bot = await drain_until(c, "slot_booked", 1.0)
        got_other = await drain_until(o, "slot_booked", 1.0)
        assert asyncio.get_running_loop().time() - started < 1.0
        for got in (got_admin, got_patient):
            body = got.payload["payload"]
            assert body["event"] == "INSERT" and body["old"] is None
            assert body["new"]["id"] == appt["id"] and body["new"]["patient_notes"] == "my secret note"
            assert body["dentist_id"] == clinic.dentist_id and body["version"] >= 1 and body["commit_timestamp"]
        slot = got_other.payload["payload"]
        assert datetime.fromisoformat(slot["new"]["start"]) == datetime.fromisoformat(slot_at(days=3))
        assert got_bot.payload == got_other.payload
        raw = json.dumps(got_other.payload)
        assert str(clinic.patient.id) not in raw and "my secret note" not in raw and appt["id"] not in raw
        with pytest.raises(asyncio.TimeoutError):  # nothing else about the booking reaches the other patient
            await drain_until(o, "INSERT", 0.3)
        recorded = await eventually(lambda: api.pool.fetchrow(  # recorded in batches, about every second
            "SELECT broadcast_latency_ms FROM realtime_events WHERE record_id = $1 "
            "AND broadcast_latency_ms IS NOT NULL", uuid.UUID(appt["id"])),
            timeout=4.0, interval=0.1, what="the broadcast latency's record")
        assert 0 <= recorded["broadcast_latency_ms"] < 1000
    finally:
        for client in (admin, patient, chatbot, other):
            await client.close()


@pytest.mark.parametrize("topic, who, reason", [
    ("appointments:patient_id={other}", "patient", "your own"),
    ("notifications:user_id={other}", "patient", "your own"),
    ("appointments:patient_id={other}", "other_dentist", "your own"),
    ("appointments:dentist_id=not-a-uuid", "admin", "malformed"),
    ("availability:dentist_id=00000000-0000-0000-0000-000000000000", "admin", "not found"),
    ("availability:hours", "admin", "malformed"),
])
async def test_refused_joins_name_the_reason(api, clinic, topic, who, reason) -> None:
    client = await connect(base(api), getattr(clinic, who))
    try:
        channel = client.channel("realtime:" + topic.format(dentist=clinic.dentist_id, other=clinic.other_patient.id))
        with pytest.raises(ReplyError) as exc:
            await channel.join()
        # only a plain reason: realtime-js joins every value of the response into its message
        assert list(exc.value.response) == ["reason"] and reason in exc.value.response["reason"]
    finally:
        await client.close()


async def test_socket_needs_a_valid_token(api) -> None:
    async with aiohttp.ClientSession() as session:
        for query in ("", "?apikey=nonsense", "?vsn=9.9.9&apikey=x"):
            async with session.get(base(api) + "/realtime/v1/websocket" + query) as resp:
                assert resp.status in (400, 401)
                assert (await resp.json())["error"]["code"] in ("UNAUTHORIZED", "VALIDATION_ERROR")


async def test_chatbot_books_over_the_socket(api, clinic) -> None:
    bot = await connect(base(api), api.service())
    try:
        ch = bot.channel(f"availability:dentist_id={clinic.dentist_id}")
        await ch.join()
        when = slot_at(days=4)
        slots = await ch.push("slots", {"date": when[:10]})
        assert any(s["available"] and datetime.fromisoformat(s["start"]) == datetime.fromisoformat(when) for s in slots)
        with pytest.raises(ReplyError) as exc:  # on whose behalf?
            await ch.push("reserve", {"slot_time": when})
        assert exc.value.code == "VALIDATION_ERROR"
        hold = await ch.push("reserve", {"slot_time": when, "patient_id": str(clinic.patient.id)})
        assert (await drain_until(ch, "slot_held")).payload["payload"]["new"]["expires_at"]
        extended = await ch.push("extend", {"reservation_id": hold["id"]})
        assert extended["expires_at"] >= hold["expires_at"]
        request = {"appointment_date": when, "appointment_type": "checkup", "patient_id": str(clinic.patient.id),
                   "reservation_id": hold["id"], "idempotency_key": "chat-7"}
        appt = await ch.push("book", request)
        again = await ch.push("book", request)  # a retry after a network error books nothing new
        assert appt["id"] == again["id"] and appt["status"] == "pending"
        moved = await ch.push("reschedule", {"appointment_id": appt["id"], "appointment_date": slot_at(days=4, hour=12)})
        assert datetime.fromisoformat(moved["appointment_date"]) == datetime.fromisoformat(slot_at(days=4, hour=12))
        cancelled = await ch.push("cancel", {"appointment_id": appt["id"], "reason": "changed plans"})
        assert cancelled["status"] == "cancelled"
        with pytest.raises(ReplyError) as exc:
            await ch.push("book", {"appointment_date": "tomorrow", "appointment_type": "checkup"})
        assert exc.value.code == "VALIDATION_ERROR" and exc.value.response["error"]["details"]["field"]
        with pytest.raises(ReplyError) as exc:
            await ch.push("release", {"reservation_id": str(uuid.uuid4())})
        assert exc.value.code == "NOT_FOUND"
    finally:
        await bot.close()


async def test_patients_cannot_book_for_others_over_the_socket(api, clinic) -> None:
    client = await connect(base(api), clinic.other_patient)
    try:
        ch = client.channel(f"availability:dentist_id={clinic.dentist_id}")
        await ch.join()
        with pytest.raises(ReplyError) as exc:
            await ch.push("book", {"appointment_date": slot_at(days=5), "appointment_type": "checkup",
                                   "patient_id": str(clinic.patient.id)})
        assert exc.value.code == "FORBIDDEN"
    finally:
        await client.close()


async def test_sql_typed_by_hand_reaches_subscribers(api, clinic) -> None:
    client = await connect(base(api), clinic.admin)
    try:
        ch = client.channel(f"appointments:dentist_id={clinic.dentist_id}")
        avail = client.channel(f"availability:dentist_id={clinic.dentist_id}")
        await ch.join()
        await avail.join()
        appt = await book(api, clinic.patient, clinic, slot_at(days=6))
        await drain_until(ch, "INSERT")
        await api.pool.execute("UPDATE appointments SET status = 'cancelled' WHERE id = $1", appt["id"])
        update = await drain_until(ch, "UPDATE")
        assert update.payload["payload"]["new"]["status"] == "cancelled"
        assert update.payload["payload"]["old"]["status"] == "pending"
        await drain_until(avail, "slot_booked")
        await drain_until(avail, "slot_freed")
        await api.pool.execute("""UPDATE dentists SET available_times = '{"monday": "09:00-12:00"}' WHERE id = $1""",
                               clinic.dentist_id)
        schedule = await drain_until(avail, "schedule_updated")
        assert schedule.payload["payload"]["new"]["available_times"] == {"monday": "09:00-12:00"}
    finally:
        await client.close()


async def test_another_process_exactly_once(api, clinic, hubs) -> None:
    [other] = await hubs.start(1)
    client = await connect(base(api), clinic.admin)
    try:
        ch = client.channel(f"appointments:dentist_id={clinic.dentist_id}")
        await ch.join()
        async with aiohttp.ClientSession() as session:
            for hour in (9, 10, 11):
                async with session.post(f"{other}/api/appointments", headers=clinic.patient.headers, json={
                        "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=7, hour=hour),
                        "appointment_type": "checkup"}) as resp:
                    assert resp.status == 201
        got = [await drain_until(ch, "INSERT") for _ in range(3)]
        versions = [m.payload["payload"]["version"] for m in got]
        assert versions == sorted(versions) and len(set(versions)) == 3
        with pytest.raises(asyncio.TimeoutError):
            await drain_until(ch, "INSERT", 0.5)  # exactly once: no duplicate follows
    finally:
        await client.close()


async def test_replay_after_reconnect(api, clinic) -> None:
    client = await connect(base(api), clinic.admin)
    ch = client.channel(f"appointments:dentist_id={clinic.dentist_id}")
    await ch.join()
    await book(api, clinic.patient, clinic, slot_at(days=8, hour=6))
    await drain_until(ch, "INSERT")
    last = dict(ch.versions)
    await client.close()
    made = [await book(api, clinic.patient, clinic, slot_at(days=8, hour=7 + i)) for i in range(10)]
    again = await connect(base(api), clinic.admin)
    try:
        ch2 = again.channel(f"appointments:dentist_id={clinic.dentist_id}", versions=last)
        await ch2.join()
        replayed = [await drain_until(ch2, "INSERT") for _ in range(10)]
        assert [m.payload["payload"]["new"]["id"] for m in replayed] == [a["id"] for a in made]
        live = await book(api, clinic.patient, clinic, slot_at(days=8, hour=20))
        assert (await drain_until(ch2, "INSERT")).payload["payload"]["new"]["id"] == live["id"]
        with pytest.raises(asyncio.TimeoutError):
            await drain_until(ch2, "INSERT", 0.3)
    finally:
        await again.close()


async def test_too_far_behind_is_told_to_reload(api, clinic) -> None:
    await book(api, clinic.patient, clinic, slot_at(days=9))
    await api.pool.execute("DELETE FROM realtime_events WHERE dentist_id = $1", clinic.dentist_id)  # pruned
    client = await connect(base(api), clinic.admin)
    try:
        ch = client.channel(f"availability:dentist_id={clinic.dentist_id}", versions={clinic.dentist_id: 0})
        await ch.join()
        while (msg := await ch.next()).event != "system":
            pass
        assert msg.payload["status"] == "error" and msg.payload["code"] == "RELOAD"
    finally:
        await client.close()


async def test_notifications_channel(api, clinic) -> None:
    client = await connect(base(api), clinic.patient)
    try:
        ch = client.channel(f"notifications:user_id={clinic.patient.id}")
        await ch.join()
        await book(api, api.service(), clinic, slot_at(days=10), patient_id=str(clinic.patient.id))
        got = await drain_until(ch, "INSERT")
        assert got.payload["payload"]["new"]["kind"] == "appointment_booked"
        assert (got.payload["payload"]["schema"], got.payload["payload"]["table"]) == ("public", "notifications")
    finally:
        await client.close()


async def test_postgres_changes_with_filters(api, clinic) -> None:
    client = await connect(base(api), clinic.patient)
    try:
        bindings = [{"event": "INSERT", "schema": "public", "table": "appointments",
                     "filter": f"dentist_id=eq.{clinic.dentist_id}"},
                    {"event": "*", "schema": "public", "table": "slot_reservations"}]
        ch = client.channel("realtime:dashboard", postgres_changes=bindings)
        reply = await ch.join()
        assert [(b["event"], b["table"]) for b in reply["postgres_changes"]] == [("INSERT", "appointments"),
                                                                                 ("*", "slot_reservations")]
        await book(api, clinic.other_patient, clinic, slot_at(days=11, hour=9))  # not theirs: never delivered
        mine = await book(api, clinic.patient, clinic, slot_at(days=11, hour=10))
        got = await drain_until(ch, "postgres_changes")
        data = got.payload["data"]
        assert got.payload["ids"] == [reply["postgres_changes"][0]["id"]]
        assert (data["type"], data["table"], data["record"]["id"]) == ("INSERT", "appointments", mine["id"])
        assert {"name": "appointment_date", "type": "timestamptz"} in data["columns"]
        with pytest.raises(ReplyError) as exc:
            await client.channel("realtime:bad", postgres_changes=[{"table": "profiles"}]).join()
        assert "postgres_changes is available on public.appointments" in exc.value.response["reason"]
        with pytest.raises(ReplyError):
            await client.channel("realtime:bad2", postgres_changes=[
                {"table": "appointments", "filter": "dentist_id=like.x"}]).join()
    finally:
        await client.close()


async def test_broadcast_and_presence_between_clients(api, clinic) -> None:
    one, two = await connect(base(api), clinic.patient), await connect(base(api), clinic.other_patient)
    try:
        a = one.channel("realtime:room", broadcast={"self": False, "ack": True}, presence={"key": "one"})
        b = two.channel("realtime:room", presence={"key": "two"})
        await a.join()
        await b.join()
        await a.push("presence", {"type": "presence", "event": "track", "payload": {"client": "dashboard"}})
        while (msg := await b.next()).event != "presence_diff":
            pass
        meta = msg.payload["joins"][str(clinic.patient.id)]["metas"][0]  # keyed by the hub, not the client
        assert (meta["client"], meta["user_id"], meta["role"]) == ("dashboard", str(clinic.patient.id), "patient")
        await a.push("broadcast", {"type": "broadcast", "event": "typing", "payload": {"who": "one"}})
        got = await drain_until(b, "typing")
        assert got.payload["payload"] == {"who": "one"}
        hub_channel = one.channel(f"availability:dentist_id={clinic.dentist_id}")
        await hub_channel.join()
        with pytest.raises(ReplyError) as exc:  # the hub's own channels carry only the hub's events
            await hub_channel.push("broadcast", {"type": "broadcast", "event": "slot_booked", "payload": {}})
        assert exc.value.code == "FORBIDDEN", exc.value.response
    finally:
        await one.close()
        await two.close()


async def test_bad_input_never_crashes(api, clinic) -> None:
    url = base(api) + f"/realtime/v1/websocket?apikey={clinic.patient.token}&vsn=2.0.0"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            for frame in ("not json", "[1,2,3]", '{"topic": "x"}', '[null, "1", "phoenix", "nope", {}]',
                          '[null, "2", "realtime:room", "broadcast", {}]', b"\x03\x00"):
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
                reply = json.loads((await ws.receive(timeout=2)).data)
                assert reply[3] in ("phx_error", "phx_reply")
                if reply[3] == "phx_reply":
                    assert reply[4]["status"] == "error"
            await ws.send_str('[null, "9", "phoenix", "heartbeat", {}]')
            assert json.loads((await ws.receive(timeout=2)).data)[4] == {"status": "ok", "response": {}}
            statuses = []
            for i in range(150):  # a flood: past the burst, pushes are refused
                await ws.send_str(f'[null, "f{i}", "phoenix", "heartbeat", {{}}]')
            for _ in range(150):
                statuses.append(json.loads((await ws.receive(timeout=2)).data)[4]["status"])
            assert "error" in statuses and statuses.count("ok") >= 90
            await ws.send_str("x" * (70 * 1024))  # over the frame limit: a documented close
            closing = await ws.receive(timeout=2)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            assert ws.close_code == 1009
    # The hub is fine: another socket works.
    client = await connect(base(api), clinic.patient)
    try:
        await client.channel(f"availability:dentist_id={clinic.dentist_id}").join()
    finally:
        await client.close()


async def _stalled_socket(api, token: str, topic: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that joins `topic` and then never reads (tiny receive buffer)."""
    import base64
    import os
    import socket

    url = api.client.make_url("")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((url.host, url.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /realtime/v1/websocket?apikey={token}&vsn=2.0.0 HTTP/1.1\r\nHost: {url.host}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    data = json.dumps([None, "1", topic, "phx_join", {"config": {}}]).encode()
    mask = os.urandom(4)
    writer.write(bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
    await writer.drain()
    return reader, writer


async def test_slow_consumer_is_disconnected_others_keep_up(api, clinic) -> None:
    realtime = api.client.app[REALTIME]
    topic = f"appointments:dentist_id={clinic.dentist_id}"
    _, stalled = await _stalled_socket(api, clinic.admin.token, topic)
    reader = await connect(base(api), clinic.admin)
    ch = reader.channel(topic)
    await ch.join()
    await eventually(lambda: sum(topic in s.channels for s in realtime.sessions) == 2,
                     what="the stalled socket's join")
    now = datetime.now(timezone.utc).isoformat()
    big = {"id": str(uuid.uuid4()), "patient_id": str(clinic.patient.id), "dentist_id": clinic.dentist_id,
           "appointment_date": now, "duration_minutes": 30, "status": "pending", "medical_history": "x" * 4000}
    received = 0
    for version in range(1, 5001):  # 20 MB for each subscriber
        realtime.on_event(Event(id=version, dentist_id=uuid.UUID(clinic.dentist_id), version=10_000 + version,
                                event_type="INSERT", table_name="appointments", record_id=uuid.uuid4(),
                                payload={"new": big, "old": None}, created_at=datetime.now(timezone.utc)))
        if version % 50 == 0:
            await asyncio.sleep(0.005)  # let sockets drain, as the event loop would between bursts
            while not ch._queue.empty():
                ch._queue.get_nowait()
                received += 1

    def drained() -> int:
        nonlocal received
        while not ch._queue.empty():
            ch._queue.get_nowait()
            received += 1
        return received

    await eventually(lambda: drained() >= 5000 and realtime.slow_disconnects and len(realtime.sessions) == 1,
                     timeout=10, what="every event at the reader and the stalled socket cut off")
    assert realtime.slow_disconnects == 1  # only the stalled socket
    assert received >= 5000 and reader.connected.is_set()  # the reader got everything, still connected
    assert len(realtime.sessions) == 1
    stalled.close()
    await reader.close()


async def test_token_refresh_and_expiry(api, clinic) -> None:
    from hub.auth import issue_token

    client = await connect(base(api), clinic.patient)
    try:
        short = issue_token(SECRET, clinic.patient.id, ttl=2)
        ch = client.channel(f"availability:dentist_id={clinic.dentist_id}", access_token=short)
        await ch.join()
        await ch.push("access_token", {"access_token": issue_token(SECRET, clinic.patient.id, ttl=600)})
        other = client.channel(f"appointments:patient_id={clinic.patient.id}", access_token=short)
        await other.join()
        events = []
        while True:
            msg = await other.next(timeout=10)
            events.append(msg.event)
            if msg.event == "phx_close":
                break
        assert "system" in events  # told why before the close
        assert ch.joined  # the refreshed channel lives on
        # another user's valid token changes what a channel sees; on a topic only the
        # first may see, it ends the channel with the true reason
        mine = client.channel(f"appointments:patient_id={clinic.patient.id}")
        await mine.join()
        with pytest.raises(ReplyError):
            await mine.push("access_token", {"access_token": clinic.other_patient.token})
        while (msg := await mine.next(timeout=2)).event != "system":
            pass
        assert msg.payload["status"] == "error" and "no longer have permission" in msg.payload["message"]
        assert (await mine.next(timeout=2)).event == "phx_close"
        await ch.push("access_token", {"access_token": clinic.other_patient.token})  # availability: anyone
        assert ch.joined
    finally:
        await client.close()


async def test_chatbot_example_books_and_hears_the_confirmation(api, clinic) -> None:
    import sys
    from pathlib import Path

    from hub.auth import issue_token

    script = Path(__file__).resolve().parent.parent / "examples" / "chatbot.py"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), "--url", base(api), "--token", issue_token(SECRET, None, role="service_role"),
        "--dentist", clinic.dentist_id, "--patient", str(clinic.patient.id),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "booked appointment" in text and "confirmation received: slot_booked" in text
    status, page = await api.get("/api/appointments", clinic.patient)
    assert page["data"][0]["patient_notes"] == "booked by the chatbot"


async def test_client_broadcast_reaches_other_processes(api, clinic, hubs) -> None:
    [other] = await hubs.start(1)
    here, there = await connect(base(api), clinic.patient), await connect(other, clinic.other_patient)
    try:
        a = here.channel("realtime:front-desk", broadcast={"ack": True})  # acked, so push() gets a reply
        b = there.channel("realtime:front-desk")
        await a.join()
        await b.join()
        await a.push("broadcast", {"type": "broadcast", "event": "ping", "payload": {"n": 1}})
        got = await drain_until(b, "ping")
        assert got.payload["payload"] == {"n": 1}
        with pytest.raises(asyncio.TimeoutError):  # once, and not back to the sender (self is off)
            await drain_until(a, "ping", 0.3)
        with pytest.raises(ReplyError) as exc:
            await a.push("broadcast", {"type": "broadcast", "event": "big", "payload": {"x": "y" * 8000}})
        assert exc.value.code == "PAYLOAD_TOO_LARGE"
    finally:
        await here.close()
        await there.close()
