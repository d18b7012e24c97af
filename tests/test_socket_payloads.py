"""Bad payloads on the socket, over a real WebSocket: each push gets the reply
its table row says (web/payloads.py decodes them; the texts are the protocol's),
the clients' own shapes are accepted, and a refused payload changes nothing."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.conftest import slot_at

U = "12345678-1234-5678-1234-567812345678"
OK = "ok"


def refused(message: str, field: str | None = None, code: str = "VALIDATION_ERROR", **details: Any) -> Any:
    """An error reply as the table writes it: (code, message, details)."""
    return code, message, ({"field": field, **details} if field else details or None)


def generic(field: str, reason: str) -> Any:
    """The REST bodies' refusal of a field (errors.from_validation)."""
    return refused(f"Invalid {field}: {reason}", field, location="payload", reason=reason)


IDEMPOTENCY_KEY = refused("idempotency_key must be a string", "idempotency_key")
NO_DENTIST = refused("dentist_id is required (or join a dentist's channel)", "dentist_id")
NO_EVENT = refused("broadcast needs an event name", "event")
TRACK_OR_UNTRACK = refused("presence event must be track or untrack", "event")
BAD_META = refused("presence payload must be an object under 4 KiB", "payload")
TABLES = "postgres_changes is available on public.appointments, public.slot_reservations, public.dentists"
FILTER = "filter must be column=op.value with op one of eq, neq, lt, lte, gt, gte, in on a column of appointments"
OBJECTS = "postgres_changes bindings are objects {event, schema, table, filter?}"
NOT_A_LIST = "postgres_changes must be a list of at most 20 bindings"


def binding(**fields: Any) -> dict[str, Any]:
    return {"config": {"postgres_changes": [{"table": "appointments", **fields}]}}


# phx_join payload -> OK, or the refusal's `reason` (a refused join answers only that)
JOINS: list[tuple[dict[str, Any], str]] = [
    ({"config": {"broadcast": {"ack": False, "self": False}, "presence": {"key": "", "enabled": False},
                 "postgres_changes": [{"event": "*", "schema": "public", "table": "appointments",
                                       "filter": "status=eq.pending"}], "private": False}}, OK),  # realtime-js
    ({"config": {"broadcast": None, "presence": {"key": "", "enabled": True}, "private": False,
                 "postgres_changes": [{"event": "INSERT", "schema": "public", "table": "appointments",
                                       "select": ["id"]}]}}, OK),  # realtime-py
    ({"x": 1, "config": {"y": 2, "postgres_changes_options": {}, "broadcast": {"self": True, "replay": {}}}}, OK),
    ({"config": {"presence": 5, "private": "yes"}}, OK),  # not read
    ({"config": None, "access_token": None, "versions": None}, OK),
    ({"config": {"postgres_changes": None}}, OK),
    (binding(filter=None), OK),
    (binding(filter=""), OK),
    ({"config": [1]}, "config must be an object"),
    ({"config": []}, "config must be an object"),
    ({"config": "x"}, "config must be an object"),
    ({"config": True}, "config must be an object"),
    ({"access_token": 5}, "access_token must be a string"),
    ({"access_token": {}}, "access_token must be a string"),
    ({"access_token": "bad"}, "Token is malformed"),
    ({"config": {"postgres_changes": {}}}, NOT_A_LIST),
    ({"config": {"postgres_changes": "x"}}, NOT_A_LIST),
    ({"config": {"postgres_changes": [{"table": "appointments"}] * 21}}, NOT_A_LIST),
    ({"config": {"postgres_changes": [5] * 21}}, NOT_A_LIST),
    ({"config": {"postgres_changes": [5]}}, OBJECTS),
    ({"config": {"postgres_changes": [[]]}}, OBJECTS),
    ({"config": {"postgres_changes": [None]}}, OBJECTS),
    (binding(event="upsert"), "postgres_changes event must be *, INSERT, UPDATE or DELETE, not 'upsert'"),
    (binding(event="insert"), "postgres_changes event must be *, INSERT, UPDATE or DELETE, not 'insert'"),
    (binding(event=5), "postgres_changes event must be *, INSERT, UPDATE or DELETE, not 5"),
    (binding(event=None), "postgres_changes event must be *, INSERT, UPDATE or DELETE, not None"),
    (binding(event=[]), "postgres_changes event must be *, INSERT, UPDATE or DELETE, not []"),
    (binding(schema="private"), TABLES),
    (binding(schema=5), TABLES),
    (binding(schema=None), TABLES),
    ({"config": {"postgres_changes": [{}]}}, TABLES),
    (binding(table="profiles"), TABLES),
    (binding(table=5), TABLES),
    (binding(table=None), TABLES),
    (binding(table=[]), TABLES),
    (binding(filter="x"), FILTER),
    (binding(filter="dentist_id=like.x"), FILTER),
    (binding(filter="nope=eq.1"), FILTER),
    (binding(filter=5), FILTER),
    (binding(filter=[1]), FILTER),
    (binding(filter=0), FILTER),
    ({"versions": {"x": "y"}}, "Invalid versions: Invalid UUID - at `key` in `$`"),
    ({"versions": {U: "y"}}, "Invalid [...]: Expected `int`, got `str`"),
    ({"versions": 5}, "Invalid versions: Expected `object`, got `int`"),
    ({"versions": []}, "Invalid versions: Expected `object`, got `array`"),
    ({"config": {"versions": {"x": 1}}}, "Invalid versions: Invalid UUID - at `key` in `$`"),
    ({"config": {"broadcast": "yes"}}, "config.broadcast must be an object"),
    ({"config": {"broadcast": [1]}}, "config.broadcast must be an object"),
    ({"config": {"broadcast": []}}, "config.broadcast must be an object"),
    ({"config": {"broadcast": {"self": "yes"}}}, "Invalid config.broadcast.self: Expected `bool`, got `str`"),
    ({"config": {"broadcast": {"ack": 1}}}, "Invalid config.broadcast.ack: Expected `bool`, got `int`"),
]

# (topic: "room" or "dentist", event, payload) -> OK, or the refusal (code, message, details)
PUSHES: list[tuple[str, str, dict[str, Any], Any]] = [
    ("room", "broadcast", {"type": "broadcast", "event": "x", "payload": {"a": 1}}, OK),
    ("room", "broadcast", {"type": 5, "event": "x", "extra": 1}, OK),
    *[("room", "broadcast", payload, NO_EVENT) for payload in ({}, {"event": 5}, {"event": None}, {"event": ""})],
    ("room", "broadcast", {"event": "x", "payload": "y" * 7100},
     refused("a broadcast payload must stay under 7000 bytes", code="PAYLOAD_TOO_LARGE")),
    ("dentist", "broadcast", {"event": 5}, refused("clients cannot broadcast on the hub's own channels",
                                                   code="FORBIDDEN")),
    ("room", "presence", {"type": "presence", "event": "track", "payload": {"online": True}}, OK),
    ("room", "presence", {"type": "presence", "event": "track"}, OK),
    ("room", "presence", {"event": "track", "payload": None}, OK),
    ("room", "presence", {"type": "presence", "event": "untrack"}, OK),
    ("room", "presence", {"event": "untrack", "payload": 5}, OK),
    *[("room", "presence", payload, TRACK_OR_UNTRACK) for payload in ({}, {"event": 5}, {"event": "join"})],
    *[("room", "presence", {"event": "track", "payload": meta}, BAD_META) for meta in (5, [1], [], {"a": "x" * 5000})],
    ("dentist", "slots", {}, refused("Give date=YYYY-MM-DD, or from and to", "date", location="query")),
    ("dentist", "slots", {"date": 5}, generic("date", "Expected `date | null`, got `int`")),
    ("dentist", "slots", {"date": slot_at(3)[:10], "dentist_id": "bad"}, NO_DENTIST),
    ("dentist", "slots", {"date": slot_at(3)[:10], "dentist_id": 5}, NO_DENTIST),
    ("room", "slots", {"date": slot_at(3)[:10]}, NO_DENTIST),
    ("room", "slots", {"date": slot_at(3)[:10], "dentist_id": None}, NO_DENTIST),
    ("dentist", "slots", {"date": slot_at(3)[:10], "idempotency_key": "k"},
     generic("idempotency_key", "Object contains unknown field `idempotency_key`")),
    ("dentist", "slots", {"date": slot_at(3)[:10], "x": 1}, generic("x", "Object contains unknown field `x`")),
    ("dentist", "reserve", {}, generic("slot_time", "Object missing required field `slot_time`")),
    ("dentist", "reserve", {"slot_time": "bad"}, generic("slot_time", "Invalid RFC3339 encoded datetime")),
    ("dentist", "reserve", {"slot_time": slot_at(3), "idempotency_key": 5}, IDEMPOTENCY_KEY),
    ("dentist", "reserve", {"slot_time": slot_at(3), "idempotency_key": ""},
     refused("Idempotency-Key must be 1 to 200 printable ASCII characters", "Idempotency-Key", location="header")),
    ("dentist", "reserve", {"slot_time": slot_at(3), "dentist_id": 5}, NO_DENTIST),
    ("room", "reserve", {"slot_time": slot_at(3), "patient_id": U}, NO_DENTIST),
    ("dentist", "extend", {"reservation_id": "x"}, generic("reservation_id", "Invalid UUID")),
    ("dentist", "release", {"reservation_id": U, "dentist_id": U},
     generic("dentist_id", "Object contains unknown field `dentist_id`")),
    ("dentist", "book", {}, generic("appointment_date", "Object missing required field `appointment_date`")),
    ("dentist", "book", {"dentist_id": "bad"}, NO_DENTIST),
    ("room", "book", {"appointment_date": slot_at(3), "appointment_type": "checkup"}, NO_DENTIST),
    ("dentist", "book", {"appointment_date": slot_at(3), "appointment_type": "checkup", "patient_id": U,
                         "idempotency_key": 5}, IDEMPOTENCY_KEY),
    ("dentist", "book", {"appointment_date": slot_at(3), "appointment_type": "checkup", "x": 1},
     generic("x", "Object contains unknown field `x`")),
    ("dentist", "reschedule", {}, generic("appointment_id", "Expected `uuid`, got `null`")),
    ("dentist", "reschedule", {"appointment_id": 5}, generic("appointment_id", "Expected `uuid`, got `int`")),
    ("dentist", "reschedule", {"appointment_id": U, "status": "cancelled"},
     refused("reschedule changes the time or type; use cancel to cancel", "status")),
    ("dentist", "reschedule", {"appointment_id": U, "appointment_date": "x"},
     generic("appointment_date", "Invalid RFC3339 encoded datetime")),
    ("dentist", "cancel", {"appointment_id": "x"}, generic("appointment_id", "Invalid UUID")),
    ("dentist", "cancel", {"appointment_id": U, "reason": 5}, refused("reason must be a string", "reason")),
    ("dentist", "cancel", {"appointment_id": U, "x": 1}, refused("appointment not found", code="NOT_FOUND", id=U)),
    ("dentist", "nope", {}, refused("unknown event 'nope'; commands are slots, reserve, extend, release, book, "
                                    "reschedule, cancel", "event")),
]


class Socket:
    """One raw Phoenix socket (vsn 2.0.0) and the frames it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, topic: str, event: str, payload: Any, ref: str, join_ref: str | None = None) -> None:
        await self.ws.send_str(json.dumps([join_ref, ref, topic, event, payload]))

    async def frame(self) -> list[Any]:
        """The next frame but presence's."""
        while True:
            frame = json.loads((await self.ws.receive(timeout=5)).data)
            if frame[3] not in ("presence_state", "presence_diff"):
                return frame

    async def reply(self, ref: str) -> dict[str, Any]:
        """The phx_reply to `ref` (other frames are skipped)."""
        while True:
            frame = await self.frame()
            if frame[1] == ref and frame[3] == "phx_reply":
                return frame[4]

    async def join(self, topic: str, payload: Any, ref: str = "j") -> dict[str, Any]:
        await self.send(topic, "phx_join", payload, ref, ref)
        return await self.reply(ref)


async def socket(session: aiohttp.ClientSession, api: Any, token: str) -> Socket:
    url = str(api.client.make_url("/realtime/v1/websocket")) + f"?apikey={token}&vsn=2.0.0"
    return Socket(await session.ws_connect(url))


def error_of(reply: dict[str, Any]) -> Any:
    """OK, or (code, message, details) of an error reply, whose reason is its message."""
    if reply["status"] == "ok":
        return OK
    response = reply["response"]
    error = response["error"]
    assert response["reason"] == error["message"] and error["timestamp"].endswith("Z"), response
    return error["code"], error["message"], error.get("details")


async def test_bad_joins_get_their_reason(api, clinic) -> None:
    wrong = []
    async with aiohttp.ClientSession() as session:
        for i, (payload, expected) in enumerate(JOINS):
            ws = await socket(session, api, clinic.patient.token)
            reply = await ws.join(f"realtime:join-{i}", payload)
            got = OK if reply["status"] == "ok" else reply["response"]
            if got != (OK if expected == OK else {"reason": expected}):
                wrong.append((payload, expected, got))
            await ws.ws.close()
    assert not wrong, "\n".join(f"{str(p)[:120]}: expected {e!r}, got {g!r}" for p, e, g in wrong)


async def test_bad_pushes_get_their_refusal(api, clinic) -> None:
    topics = {"room": "realtime:room", "dentist": f"realtime:availability:dentist_id={clinic.dentist_id}"}
    wrong = []
    async with aiohttp.ClientSession() as session:
        for topic, event, payload, expected in PUSHES:
            ws = await socket(session, api, api.service().token)
            assert (await ws.join(topics[topic], {"config": {"broadcast": {"ack": True}}}))["status"] == "ok"
            await ws.send(topics[topic], event, payload, "p", "j")
            got = error_of(await ws.reply("p"))
            if got != expected:
                wrong.append((event, payload, expected, got))
            await ws.ws.close()
    assert not wrong, "\n".join(f"{e} {str(p)[:100]}: expected {x!r}, got {g!r}" for e, p, x, g in wrong)


async def test_a_bad_token_refresh_is_refused_and_ends_the_channel(api, clinic) -> None:
    async with aiohttp.ClientSession() as session:
        for token, reason in ((5, "access_token must be a string"), ("bad", "Token is malformed")):
            ws = await socket(session, api, clinic.patient.token)
            await ws.join("realtime:room", {})
            await ws.send("realtime:room", "access_token", {"access_token": token}, "t", "j")
            frames = [await ws.frame() for _ in range(3)]
            assert [(f[3], f[4]) for f in frames] == [
                ("phx_reply", {"status": "error", "response": {"reason": reason}}),
                ("system", {"status": "error", "extension": "system", "channel": "room", "message": reason}),
                ("phx_close", {})]
            await ws.send("realtime:room", "access_token", {}, "u", "j")  # the channel is gone
            assert error_of(await ws.reply("u"))[0] == "VALIDATION_ERROR"
            await ws.ws.close()
        ws = await socket(session, api, clinic.patient.token)  # no token, or null: nothing changes
        await ws.join("realtime:room", {})
        for i, payload in enumerate(({}, {"access_token": None})):
            await ws.send("realtime:room", "access_token", payload, f"n{i}", "j")
            assert await ws.reply(f"n{i}") == {"status": "ok", "response": {}}
        await ws.ws.close()


async def test_a_refused_rejoin_keeps_the_channel(api, clinic) -> None:
    """A rejoin is decoded before anything happens: a bad one leaves the joined
    channel as it was (here: still broadcasting, with its ack)."""
    async with aiohttp.ClientSession() as session:
        ws = await socket(session, api, clinic.patient.token)
        assert (await ws.join("realtime:room", {"config": {"broadcast": {"ack": True}}}))["status"] == "ok"
        for i, bad in enumerate(({"config": [1]}, {"config": {"postgres_changes": [5]}}, {"access_token": 5},
                                 {"versions": 5})):
            assert (await ws.join("realtime:room", bad, ref=f"r{i}"))["status"] == "error"
            await ws.send("realtime:room", "broadcast", {"event": "still", "payload": {}}, f"b{i}", "j")
            assert await ws.reply(f"b{i}") == {"status": "ok", "response": {}}
        await ws.ws.close()

