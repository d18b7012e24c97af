"""The newest official JavaScript clients, unmodified, against the hub: supabase-js
(with the `accessToken` option, and `createClient(url, anonKey)` followed by a
user's token), realtime-js, and phoenix, each pinned in tests/js/package-lock.json.
tests/js/check.mjs drives them as an app would; the clients are the judges."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from hub.auth import issue_token
from tests.conftest import SECRET, slot_at
from tests.test_realtime_js import JS, NODE, Node, status

pytestmark = NODE

# How each style is set up, as apps do (see check.mjs).
STYLES = ["realtime-js", "supabase-access-token", "phoenix"]
ANON = issue_token(SECRET, None, role="anon", ttl=86400)


async def start(style: str, base: str, token: str | None, heartbeat_ms: int = 5000, **extra: Any) -> Node:
    """One Node process with one client of `style` on the hub at `base` (http://host:port)."""
    ws = base.replace("http://", "ws://") + "/realtime/v1"
    config = {"style": style, "url": base if style.startswith("supabase") else ws, "apikey": ANON,
              "token": token, "heartbeatMs": heartbeat_ms, **extra}
    proc = await asyncio.create_subprocess_exec("node", str(JS / "check.mjs"), json.dumps(config), cwd=JS,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    return Node(proc)


def base_of(api) -> str:
    return str(api.client.make_url("")).rstrip("/")


async def book(api, who, dentist_id: str, kind: str = "checkup", hour: int = 10) -> str:
    code, appt = await api.post("/api/appointments", who, json={
        "dentist_id": dentist_id, "appointment_date": slot_at(days=4, hour=hour), "appointment_type": kind})
    assert code == 201, appt
    return appt["id"]


def done(cmd: str):
    return lambda i: i["type"] == "done" and i["cmd"] == cmd


def broadcast_of(topic: str, appt_id: str):
    return lambda i: (i["type"] == "broadcast" and i["topic"] == topic
                      and (i["message"]["payload"].get("new") or {}).get("id") == appt_id)


@pytest.mark.parametrize("style", STYLES)
async def test_live_channels(api, clinic, style) -> None:
    """Join, postgres_changes with a filter, broadcast with self/ack, presence,
    and a token refresh while joined, all on one socket of a patient's app."""
    node = await start(style, base_of(api), clinic.patient.token)
    mine = f"appointments:patient_id={clinic.patient.id}"
    room, quiet, lobby = (f"{kind}:{uuid.uuid4().hex[:8]}" for kind in ("chat", "chat", "lobby"))
    try:
        await node.send(cmd="join", spec={
            "topic": mine, "broadcasts": ["*"],
            "postgres": [{"event": "INSERT", "schema": "public", "table": "appointments",
                          "filter": "appointment_type=eq.cleaning"}]})
        await node.expect(status(mine, "SUBSCRIBED"))

        # The filter: a checkup (no match) then a cleaning (match) for one dentist, whose
        # events the hub sends in order: the checkup's broadcast comes first, its change never.
        checkup = await book(api, clinic.patient, clinic.dentist_id, "checkup", hour=9)
        cleaning = await book(api, clinic.patient, clinic.dentist_id, "cleaning", hour=11)
        await node.expect(broadcast_of(mine, checkup))
        change = (await node.expect(lambda i: i["type"] == "postgres_changes"))["change"]
        assert change["eventType"] == "INSERT" and change["table"] == "appointments"
        assert change["new"]["id"] == cleaning and change["new"]["appointment_type"] == "cleaning"
        await node.expect(broadcast_of(mine, cleaning))
        assert not [i for i in node.seen if i["type"] == "postgres_changes"], node.seen

        # Broadcast: `self` echoes to the sender, `ack` confirms; without `self`, nothing comes back.
        await node.send(cmd="join", spec={"topic": room, "broadcasts": ["*"], "self": True, "ack": True})
        await node.send(cmd="join", spec={"topic": quiet, "broadcasts": ["*"]})
        await node.expect(status(room, "SUBSCRIBED"))
        await node.expect(status(quiet, "SUBSCRIBED"))
        await node.send(cmd="send", topic=quiet, event="wave", payload={"n": 1})
        await node.expect(done("send"))
        await node.send(cmd="send", topic=room, event="wave", payload={"n": 2})
        assert (await node.expect(done("send")))["result"] == "ok"  # acknowledged
        got = await node.expect(lambda i: i["type"] == "broadcast" and i["topic"] == room)
        assert got["message"]["event"] == "wave" and got["message"]["payload"] == {"n": 2}
        assert not [i for i in node.seen if i["type"] == "broadcast" and i["topic"] == quiet], node.seen

        # Presence: track, then the join and the sync, keyed by the user (the hub's, not the app's, choice).
        await node.send(cmd="join", spec={"topic": lobby, "presence": True, "presenceKey": "front-desk"})
        await node.expect(status(lobby, "SUBSCRIBED"))
        await node.send(cmd="track", topic=lobby, meta={"client": style})
        assert (await node.expect(done("track")))["result"] == "ok"
        key = str(clinic.patient.id)
        await node.expect(lambda i: i["type"] == "presence_join" and i["key"] == key)
        synced = await node.expect(lambda i: i["type"] == "presence" and key in i["state"])
        assert synced["state"][key][0]["client"] == style

        # A fresh token for the same user while joined: the channel stays and keeps delivering.
        await node.send(cmd="refresh", token=issue_token(SECRET, clinic.patient.id, ttl=900))
        await node.expect(done("refresh"))
        again = await book(api, clinic.patient, clinic.dentist_id, "checkup", hour=13)
        await node.expect(broadcast_of(mine, again))
        ended = [i for i in node.seen if i["type"] == "status" and i["status"] in ("CLOSED", "CHANNEL_ERROR")]
        assert not ended, ended
    finally:
        await node.close()


@pytest.mark.parametrize("style", STYLES)
async def test_refusal_reason(api, clinic, style) -> None:
    """A join the caller may not make: CHANNEL_ERROR carrying the hub's reason, as plain text."""
    node = await start(style, base_of(api), clinic.patient.token)
    theirs = f"appointments:patient_id={clinic.other_patient.id}"
    try:
        await node.send(cmd="join", spec={"topic": theirs})
        refused = await node.expect(lambda i: i["type"] == "status" and i["topic"] == theirs)
        assert refused["status"] == "CHANNEL_ERROR"
        assert refused["error"] == "you may only follow your own appointments"
        await node.send(cmd="leave", topic=theirs)  # or the client retries the join by itself
        await node.expect(done("leave"))
    finally:
        await node.close()


async def test_supabase_js_anon_key_then_user_token(api, clinic) -> None:
    """`createClient(url, anonKey)` then `supabase.realtime.setAuth(userJwt)`: with no
    Supabase Auth session, supabase-js's token callback answers the anon key, which the
    client pushes as `access_token` at the next heartbeat and puts in later joins. The
    channels stay joined and keep working with what that token may see."""
    node = await start("supabase", base_of(api), clinic.patient.token, heartbeat_ms=500)
    room, later = (f"chat:{uuid.uuid4().hex[:8]}" for _ in range(2))
    try:
        await node.send(cmd="join", spec={"topic": room, "broadcasts": ["*"], "self": True, "ack": True,
                                          "presence": True, "presenceKey": "tab"})
        await node.expect(status(room, "SUBSCRIBED"))
        await node.send(cmd="refresh", token=clinic.patient.token)  # e.g. on the app's sign-in event
        await node.expect(done("refresh"))
        for _ in range(3):  # each heartbeat asks the callback again: the anon key goes out
            await node.expect(lambda i: i["type"] == "heartbeat" and i["status"] == "ok")
        await node.send(cmd="state", topic=room)
        state = (await node.expect(done("state")))["result"]
        assert state == {"state": "joined", "tokenIsApikey": True}, state

        await node.send(cmd="join", spec={"topic": later, "broadcasts": ["*"]})  # joins with the anon key
        await node.expect(status(later, "SUBSCRIBED"))
        await node.send(cmd="send", topic=room, event="hello", payload={"from": "supabase-js"})
        assert (await node.expect(done("send")))["result"] == "ok"
        await node.expect(lambda i: i["type"] == "broadcast" and i["message"]["payload"] == {"from": "supabase-js"})
        await node.send(cmd="track", topic=room, meta={"online": True})
        await node.expect(lambda i: i["type"] == "presence"
                          and [m["online"] for metas in i["state"].values() for m in metas] == [True])
        ended = [i for i in node.seen if i["type"] in ("status", "system")
                 and (i.get("status") in ("CLOSED", "CHANNEL_ERROR") or (i.get("payload") or {}).get("status") == "error")]
        assert not ended, ended
    finally:
        await node.close()


async def start_subscribed_at_once(api, clinic) -> tuple[Node, str]:
    """`createClient(url, key, {accessToken})` and a channel subscribed at once, as apps
    do: the join goes out before the callback's token is set, so it carries none."""
    mine = f"appointments:patient_id={clinic.patient.id}"
    node = await start("supabase-access-token", base_of(api), clinic.patient.token,
                       channels=[{"topic": mine, "broadcasts": ["*"]}])
    first = await node.expect(lambda i: i["type"] == "status" and i["topic"] == mine)
    assert first["status"] == "SUBSCRIBED", first  # accepted as the socket's caller (anon), no CHANNEL_ERROR
    return node, mine


async def test_supabase_js_access_token_option_upgraded_by_the_next_token(api, clinic) -> None:
    """The callback's next token (a refreshed session) is pushed and upgrades the channel."""
    node, mine = await start_subscribed_at_once(api, clinic)
    try:
        await node.send(cmd="refresh", token=issue_token(SECRET, clinic.patient.id, ttl=900))
        await node.expect(done("refresh"))
        booked = await book(api, clinic.patient, clinic.dentist_id)
        await node.expect(broadcast_of(mine, booked))
    finally:
        await node.close()


@pytest.mark.xfail(strict=True, reason=(
    "realtime-js 2.119.1 pushes the accessToken callback's token only when it differs from the last one it "
    "set; when the callback resolved before the join reply (a fast callback), the token is never sent, and "
    "the hub keeps the tokenless join as anon: the user's events never arrive until the token changes"))
async def test_supabase_js_access_token_option_delivers_without_app_action(api, clinic) -> None:
    node, mine = await start_subscribed_at_once(api, clinic)
    try:
        booked = await book(api, clinic.patient, clinic.dentist_id)
        await node.expect(broadcast_of(mine, booked), timeout=4)
    finally:
        await node.close()


async def test_phoenix_with_vsn_in_params(api, clinic) -> None:
    """phoenix appends its own `vsn` after the app's params: the last one counts."""
    room = f"chat:{uuid.uuid4().hex[:8]}"
    node = await start("phoenix", base_of(api), clinic.patient.token, vsnParam="1.0.0",
                       channels=[{"topic": room, "self": True, "ack": True}])
    try:
        await node.expect(status(room, "SUBSCRIBED"))
        await node.send(cmd="send", topic=room, event="ping", payload={"vsn": "2.0.0"})
        assert (await node.expect(done("send")))["result"] == "ok"
        await node.expect(lambda i: i["type"] == "broadcast" and i["message"]["payload"] == {"vsn": "2.0.0"})
    finally:
        await node.close()


@pytest.mark.parametrize("style", STYLES)
async def test_reconnect_after_hub_restart(api, clinic, hubs, style) -> None:
    """The hub process restarts (SIGTERM, then a new one on the same port) while a
    booking is committed: the client reconnects and rejoins by itself and receives it."""
    [hub] = await hubs.start(1)
    node = await start(style, hub, clinic.patient.token)
    mine = f"appointments:patient_id={clinic.patient.id}"
    try:
        await node.send(cmd="join", spec={"topic": mine, "broadcasts": ["*"]})
        await node.expect(status(mine, "SUBSCRIBED"))
        before = await book(api, clinic.patient, clinic.dentist_id, hour=9)
        await node.expect(broadcast_of(mine, before))

        hubs.stop_one(hub)
        missed = await book(api, clinic.patient, clinic.dentist_id, hour=15)  # via another process
        await hubs.start(1, port=int(hub.rsplit(":", 1)[1]))

        await node.expect(status(mine, "SUBSCRIBED"), timeout=20)
        await node.expect(broadcast_of(mine, missed), timeout=10)
    finally:
        await node.close()
