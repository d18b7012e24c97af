"""The official @supabase/realtime-js client (pinned in tests/js/package-lock.json)
against the hub: the client is the judge of protocol compatibility."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from hub.auth import issue_token
from tests.conftest import SECRET, needs, slot_at

JS = Path(__file__).parent / "js"
# The JS client tests need Node and tests/js/node_modules (skipped without, failed under CI=true).
NODE = needs(shutil.which("node") is None or not (JS / "node_modules" / "@supabase" / "supabase-js").exists(),
             "Node.js or tests/js/node_modules missing: run `make test` (it runs npm ci in tests/js)")
pytestmark = NODE


class Node:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[dict[str, Any]] = []

    async def expect(self, test: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        for item in self.seen:
            if test(item):
                self.seen.remove(item)
                return item
        async def read() -> dict[str, Any]:
            while True:
                line = await self.proc.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError(f"realtime-js exited; saw {self.seen}")
                item = json.loads(line)
                if test(item):
                    return item
                self.seen.append(item)
        try:
            return await asyncio.wait_for(read(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"nothing expected within {timeout} s; saw {self.seen}") from None

    async def send(self, **cmd: Any) -> None:
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")  # type: ignore[union-attr]
        await self.proc.stdin.drain()  # type: ignore[union-attr]

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def start(api, token: str, channels: list[dict[str, Any]], vsn: str | None = None,
                hub: str | None = None) -> Node:
    """realtime-js in Node, on the in-process hub or on the hub process at `hub`."""
    url = (hub + "/realtime/v1" if hub else str(api.client.make_url("/realtime/v1"))).replace("http://", "ws://")
    config = {"url": url, "apikey": issue_token(SECRET, None, role="anon"), "token": token, "channels": channels}
    if vsn:
        config["vsn"] = vsn
    proc = await asyncio.create_subprocess_exec("node", str(JS / "check.mjs"), json.dumps(config), cwd=JS,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    return Node(proc)


def status(topic: str, value: str) -> Callable[[dict[str, Any]], bool]:
    return lambda i: i["type"] == "status" and i["topic"] == topic and i["status"] == value


@pytest.mark.parametrize("vsn", [None, "1.0.0"])  # None: the client's default (2.0.0)
async def test_realtime_js_receives_the_hubs_events(api, clinic, vsn) -> None:
    appointments = f"appointments:dentist_id={clinic.dentist_id}"
    forbidden = f"appointments:patient_id={clinic.patient.id}"
    node = await start(api, clinic.admin.token, [
        {"topic": appointments, "broadcasts": ["INSERT"], "presence": True, "presenceKey": "admin-dashboard",
         "postgres": [{"event": "INSERT", "schema": "public", "table": "appointments",
                       "filter": f"dentist_id=eq.{clinic.dentist_id}"}]},
    ], vsn)
    patient = await start(api, clinic.other_patient.token, [{"topic": forbidden}], vsn)
    try:
        await node.expect(status(appointments, "SUBSCRIBED"))
        refused = await patient.expect(lambda i: i["type"] == "status" and i["topic"] == forbidden
                                       and i["status"] == "CHANNEL_ERROR")
        assert "your own appointments" in refused["error"]

        status_code, appt = await api.post("/api/appointments", clinic.patient, json={
            "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=3), "appointment_type": "checkup"})
        assert status_code == 201
        got = await node.expect(lambda i: i["type"] == "broadcast")
        assert got["message"]["event"] == "INSERT"
        assert got["message"]["payload"]["new"]["id"] == appt["id"]
        change = (await node.expect(lambda i: i["type"] == "postgres_changes"))["change"]
        assert change["eventType"] == "INSERT" and change["table"] == "appointments"
        assert change["new"]["id"] == appt["id"] and change["new"]["duration_minutes"] == 30  # int4 converted

        await node.send(cmd="track", topic=appointments, meta={"client": "admin-dashboard"})
        await node.expect(lambda i: i["type"] == "done" and i["cmd"] == "track")
        admin = str(clinic.admin.id)  # the hub keys presence by the token's user, whatever the client asks
        presence = await node.expect(lambda i: i["type"] == "presence" and admin in i["state"])
        assert presence["state"][admin][0]["client"] == "admin-dashboard"
        assert presence["state"][admin][0]["role"] == "admin"

        # A token refresh keeps the channel alive and delivering.
        await node.send(cmd="refresh", token=issue_token(SECRET, clinic.admin.id, ttl=600))
        await node.expect(lambda i: i["type"] == "done" and i["cmd"] == "refresh")
        status_code, again = await api.post("/api/appointments", clinic.patient, json={
            "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=3, hour=11),
            "appointment_type": "checkup"})
        got = await node.expect(lambda i: i["type"] == "broadcast")
        assert got["message"]["payload"]["new"]["id"] == again["id"]
    finally:
        await node.close()
        await patient.close()


@pytest.mark.parametrize("vsn", [None, "1.0.0"])
async def test_realtime_js_broadcast_between_clients(api, clinic, vsn) -> None:
    room = "chat:front-desk"
    one = await start(api, clinic.patient.token, [{"topic": room, "broadcasts": ["wave"], "ack": True}], vsn)
    two = await start(api, clinic.other_patient.token, [{"topic": room, "broadcasts": ["wave"]}], vsn)
    try:
        await one.expect(status(room, "SUBSCRIBED"))
        await two.expect(status(room, "SUBSCRIBED"))
        await one.send(cmd="send", topic=room, event="wave", payload={"from": "one"})
        done = await one.expect(lambda i: i["type"] == "done" and i["cmd"] == "send")
        assert done["result"] == "ok"  # acknowledged
        got = await two.expect(lambda i: i["type"] == "broadcast")
        assert got["message"]["event"] == "wave" and got["message"]["payload"] == {"from": "one"}
    finally:
        await one.close()
        await two.close()


async def test_realtime_js_presence_across_processes(api, clinic, hubs) -> None:
    """Two clients on two hub processes: realtime-js syncs both presences, then the leave."""
    [other] = await hubs.start(1)
    room = "lobby:js"
    one = await start(api, clinic.patient.token, [{"topic": room, "presence": True, "presenceKey": "one"}])
    two = await start(api, clinic.other_patient.token, [{"topic": room, "presence": True, "presenceKey": "two"}],
                      hub=other)
    try:
        for node, key in ((one, "one"), (two, "two")):
            await node.expect(status(room, "SUBSCRIBED"))
            await node.send(cmd="track", topic=room, meta={"client": key})
            await node.expect(lambda i: i["type"] == "done" and i["cmd"] == "track")
        p1, p2 = str(clinic.patient.id), str(clinic.other_patient.id)  # keys are the hub's: user ids
        for node in (one, two):
            both = await node.expect(lambda i: i["type"] == "presence" and set(i["state"]) == {p1, p2})
            assert both["state"][p1][0]["client"] == "one" and both["state"][p2][0]["client"] == "two"
        await two.close()  # the Node process dies, its socket closes: the other process hears the leave
        await one.expect(lambda i: i["type"] == "presence" and set(i["state"]) == {p1})
    finally:
        await one.close()
        await two.close()


async def test_realtime_js_expired_token_ends_the_channel(api, clinic) -> None:
    topic = f"availability:dentist_id={clinic.dentist_id}"
    node = await start(api, issue_token(SECRET, clinic.patient.id, ttl=3), [{"topic": topic}])
    try:
        await node.expect(status(topic, "SUBSCRIBED"))
        ended = await node.expect(lambda i: i["type"] == "status" and i["topic"] == topic
                                  and i["status"] in ("CLOSED", "CHANNEL_ERROR"), timeout=15)
        assert ended
    finally:
        await node.close()
