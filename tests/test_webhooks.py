"""Outgoing webhooks against real HTTP receivers on 127.0.0.1 that check every
signature with the Standard Webhooks reference library."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import msgspec
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from hub import netguard
from hub.config import Settings
from services import webhooks
from tests.conftest import Api, Databases, assert_error, eventually, slot_at
from web import create_app


@pytest.fixture(scope="module")
def dsn(databases: Databases) -> str:
    """Endpoints are clinic-wide: this module gets a database of its own."""
    return databases.create()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, webhook_allow_private=True, webhook_backoff_base_seconds=0.05,
                               webhook_poll_seconds=0.05, webhook_retry_seconds=60, webhook_timeout_seconds=5)


@pytest.fixture(autouse=True)
async def no_endpoints(api: Api) -> None:
    await api.pool.execute("DELETE FROM public.webhook_endpoints")


class Receiver:
    """An HTTP receiver that verifies each request; `fail_first` answers 500 first."""

    def __init__(self, fail_first: int = 0, status: int = 200) -> None:
        self.fail_first, self.status = fail_first, status
        self.secret = ""
        self.requests: list[str] = []            # webhook-id of every request, in arrival order
        self.accepted: list[dict[str, Any]] = []  # verified bodies answered 2xx
        self.hold: asyncio.Event | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.requests.append(request.headers["webhook-id"])
        if self.hold is not None:
            await self.hold.wait()
        if len(self.requests) <= self.fail_first or self.status >= 300:
            return web.Response(status=500 if self.status < 300 else self.status)
        payload = Webhook(self.secret).verify(raw, dict(request.headers))  # raises on a bad signature
        assert set(payload) == {"type", "timestamp", "data"}
        self.accepted.append({**payload, "id": request.headers["webhook-id"]})
        return web.Response(status=204)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.hold is not None:
            self.hold.set()
        assert self._runner is not None
        await self._runner.cleanup()


async def register(api: Api, admin: Any, receiver: Receiver, events: list[str]) -> dict[str, Any]:
    status, body = await api.post("/api/webhooks", admin, json={"url": receiver.url, "events": events,
                                                                 "description": "test receiver"})
    assert status == 201, body
    receiver.secret = body["secret"]
    return body


async def restart(api: Api, aiohttp_client: Any, settings: Settings) -> None:
    """The fixture's hub stopped (its worker with it), another started with `settings`."""
    await api.client.close()
    fresh = Api(await aiohttp_client(create_app(settings)))
    api.client, api.pool = fresh.client, fresh.pool


async def emit(api: Api, count: int, event_type: str = "reminder.due") -> None:
    for n in range(count):  # one transaction each, as separate changes commit
        await api.pool.execute("SELECT public.webhook_emit($1, $2)", event_type, {"n": n})


async def test_registration_validates_and_shows_the_secret_once(api: Api, clinic: Any) -> None:
    status, body = await api.post("/api/webhooks", clinic.patient, json={"url": "https://example.com/h",
                                                                          "events": ["appointment.created"]})
    assert_error(status, body, 403, "FORBIDDEN")
    for bad, field in (({"url": "ftp://example.com/x", "events": ["hold.created"]}, "url"),
                       ({"url": "https://example.com/x", "events": ["appointment.exploded"]}, "events"),
                       ({"url": "https://example.com/x", "events": []}, "events"),
                       ({"url": "http://169.254.169.254/latest/meta-data", "events": ["hold.created"]}, "url"),
                       ({"url": "http://metadata.google.internal/x", "events": ["hold.created"]}, "url"),
                       ({"url": "http://[fe80::1]/x", "events": ["hold.created"]}, "url"),
                       ({"url": "http://100.100.100.200/x", "events": ["hold.created"]}, "url")):
        status, body = await api.post("/api/webhooks", clinic.admin, json=bad)
        assert assert_error(status, body, 400, "VALIDATION_ERROR")["details"]["field"] == field, (bad, body)
    assert await api.pool.fetchval("SELECT count(*) FROM public.webhook_endpoints") == 0  # nothing half-made

    async with Receiver() as receiver:
        created = await register(api, clinic.admin, receiver, ["hold.created", "appointment.created"])
    assert created["secret"].startswith("whsec_") and len(webhooks.new_secret()) > 40
    assert created["events"] == ["appointment.created", "hold.created"] and created["enabled"] is True
    status, listed = await api.get("/api/webhooks", clinic.admin)
    assert status == 200 and [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0]
    status, _ = await api.delete(f"/api/webhooks/{created['id']}", clinic.admin)
    assert status == 204
    status, body = await api.get(f"/api/webhooks/{created['id']}", clinic.admin)
    assert_error(status, body, 404, "NOT_FOUND")


async def test_private_targets_need_the_setting() -> None:
    for url in ("http://127.0.0.1:9/x", "http://10.1.2.3/x", "http://[::1]/x", "http://localhost/x",
                "http://100.64.0.1/x"):
        with pytest.raises(netguard.RefusedAddress, match="WEBHOOK_ALLOW_PRIVATE"):
            await netguard.check_target(url, allow_private=False)
        await netguard.check_target(url, allow_private=True)
    with pytest.raises(netguard.RefusedAddress, match="metadata"):
        await netguard.check_target("http://[::ffff:169.254.169.254]/x", allow_private=True)


async def test_booking_events_arrive_signed_in_order_through_retries(api: Api, clinic: Any) -> None:
    """One receiver fails 3 times then succeeds; both see the same events in commit order."""
    events = ["hold.created", "hold.released", "appointment.created", "appointment.updated",
              "appointment.cancelled", "availability.updated"]
    async with Receiver(fail_first=3) as flaky, Receiver() as steady:
        flaky_ep = await register(api, clinic.admin, flaky, events)
        await register(api, clinic.admin, steady, events)
        slot = slot_at(days=4, hour=9)
        status, hold = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.patient,
                                      json={"slot_time": slot, "appointment_type": "checkup"})
        assert status == 201, hold
        status, booked = await api.post("/api/appointments", clinic.patient, json={
            "dentist_id": clinic.dentist_id, "appointment_date": slot, "appointment_type": "checkup",
            "reservation_id": hold["id"]})
        assert status == 201, booked
        status, moved = await api.put(f"/api/appointments/{booked['id']}", clinic.admin,
                                      json={"appointment_date": slot_at(days=4, hour=11)})
        assert status == 200, moved
        status, _ = await api.delete(f"/api/appointments/{booked['id']}", clinic.admin)
        assert status == 200
        expected = ["hold.created", "hold.released", "appointment.created", "appointment.updated",
                    "appointment.cancelled"]
        await eventually(lambda: len(flaky.accepted) >= 5 and len(steady.accepted) >= 5, timeout=10)
        assert [p["type"] for p in steady.accepted] == expected
        assert [p["type"] for p in flaky.accepted] == expected
        assert [p["id"] for p in flaky.accepted] == [p["id"] for p in steady.accepted]  # one webhook-id per event
        assert flaky.requests[:4] == [flaky.accepted[0]["id"]] * 4  # retried, same id, nothing overtook it
        created = steady.accepted[2]["data"]
        assert created["id"] == booked["id"] and created["patient_id"] == str(clinic.patient.id)
        updated = steady.accepted[3]["data"]
        assert updated["previous"]["appointment_date"] == created["appointment_date"] != updated["appointment_date"]

        status, log = await api.get(f"/api/webhooks/{flaky_ep['id']}/deliveries", clinic.admin)
        assert status == 200 and log["pagination"]["total"] == 5
        first = log["data"][-1]  # newest first
        assert first["type"] == "hold.created" and first["status"] == "succeeded" and first["attempts"] == 4
        assert [a["status_code"] for a in first["attempt_log"]] == [500, 500, 500, 204]
        assert all(isinstance(a["latency_ms"], int) for a in first["attempt_log"])
        status, page = await api.get(f"/api/webhooks/{flaky_ep['id']}/deliveries?status=failed", clinic.admin)
        assert status == 200 and page["data"] == []

        # Manual replay: the same message (same webhook-id) once more, after what is queued.
        status, replayed = await api.post(
            f"/api/webhooks/{flaky_ep['id']}/deliveries/{first['id']}/replay", clinic.admin)
        assert status == 202 and replayed["replay_of"] == first["id"], replayed
        await eventually(lambda: len(flaky.accepted) == 6, timeout=10)
        assert flaky.accepted[-1]["id"] == flaky.accepted[0]["id"]
        status, body = await api.post(f"/api/webhooks/{flaky_ep['id']}/deliveries/999999999/replay", clinic.admin)
        assert_error(status, body, 404, "NOT_FOUND")

        # A schedule change is an availability event.
        status, body = await api.put(f"/api/availability/{clinic.dentist_id}?force=true", clinic.admin,
                                     json={"slot_minutes": 15})
        assert status == 200, body
        await eventually(lambda: any(p["type"] == "availability.updated" for p in steady.accepted), timeout=10)


async def test_a_hung_receiver_never_slows_bookings(api: Api, clinic: Any) -> None:
    async with Receiver() as receiver:
        receiver.hold = asyncio.Event()
        await register(api, clinic.admin, receiver, ["appointment.created"])
        started = time.monotonic()
        booked = []
        for hour in (6, 7, 8):
            status, body = await api.post("/api/appointments", clinic.patient, json={
                "dentist_id": clinic.other_dentist_id, "appointment_date": slot_at(days=5, hour=hour),
                "appointment_type": "checkup"})
            assert status == 201, body
            booked.append(body["id"])
        await eventually(lambda: len(receiver.requests) == 1, timeout=10)  # the receiver holds the first delivery
        assert time.monotonic() - started < 5
        receiver.hold.set()
        await eventually(lambda: len(receiver.accepted) == 3, timeout=10)
        assert [p["data"]["id"] for p in receiver.accepted] == booked


async def test_two_processes_deliver_each_event_once_in_order(api: Api, clinic: Any, settings: Settings,
                                                              aiohttp_client: Any) -> None:
    await aiohttp_client(create_app(settings))  # a second hub on the same database, with its own worker
    async with Receiver() as receiver:
        await register(api, clinic.admin, receiver, ["reminder.due"])
        await emit(api, 20)
        await eventually(lambda: len(receiver.accepted) == 20, timeout=10)
        assert [p["data"]["n"] for p in receiver.accepted] == list(range(20))
        assert len(set(receiver.requests)) == len(receiver.requests) == 20


async def test_failing_endpoint_is_disabled_and_admins_told(api: Api, clinic: Any, settings: Settings,
                                                           aiohttp_client: Any) -> None:
    async with Receiver(status=503) as receiver:
        endpoint = await register(api, clinic.admin, receiver, ["reminder.due"])
        # This hub gives up on a delivery after 0.3 s and disables after 2 such.
        await restart(api, aiohttp_client, dataclasses.replace(settings, webhook_retry_seconds=0.3,
                                                               webhook_disable_after=2))
        await emit(api, 3)

        async def disabled() -> bool:
            return not await api.pool.fetchval("SELECT enabled FROM public.webhook_endpoints WHERE id = $1",
                                               endpoint["id"])

        await eventually(disabled, timeout=10)
        status, got = await api.get(f"/api/webhooks/{endpoint['id']}", clinic.admin)
        assert got["enabled"] is False and "in a row failed" in got["disabled_reason"]
        status, told = await api.get("/api/notifications", clinic.admin)
        assert any(n["kind"] == "webhook_disabled" and n["data"]["endpoint_id"] == endpoint["id"]
                   for n in told["data"])
        status, log = await api.get(f"/api/webhooks/{endpoint['id']}/deliveries", clinic.admin)
        assert [d["status"] for d in log["data"]] == ["pending", "failed", "failed"]
        assert all(a["status_code"] == 503 for d in log["data"] for a in d["attempt_log"])

        receiver.status = 200  # fixed: enabling again delivers what waited
        status, got = await api.request("PATCH", f"/api/webhooks/{endpoint['id']}", clinic.admin,
                                        json={"enabled": True})
        assert status == 200 and got["enabled"] is True and got["consecutive_failures"] == 0
        await eventually(lambda: len(receiver.accepted) == 1, timeout=10)
        assert receiver.accepted[0]["data"] == {"n": 2}


async def test_delivery_time_check_refuses_a_name_that_turned_private(api: Api, clinic: Any, settings: Settings,
                                                                     aiohttp_client: Any) -> None:
    """Registered while allowed; a hub that forbids private targets refuses at connect time."""
    async with Receiver() as receiver:
        endpoint = await register(api, clinic.admin, receiver, ["reminder.due"])
        await api.pool.execute("UPDATE public.webhook_endpoints SET url = replace(url, '127.0.0.1', 'localhost')")
        await restart(api, aiohttp_client, dataclasses.replace(settings, webhook_allow_private=False))
        await emit(api, 1)

        async def refused() -> bool:
            return bool(await api.pool.fetchval(
                "SELECT count(*) FROM public.webhook_attempts a JOIN public.webhook_deliveries d "
                "ON d.id = a.delivery_id WHERE d.endpoint_id = $1 AND a.error LIKE 'refused:%'", endpoint["id"]))

        await eventually(refused, timeout=10)
        assert receiver.requests == []


def test_signature_matches_the_reference_library() -> None:
    secret = webhooks.new_secret()
    payload = msgspec.json.encode({"type": "hold.created", "timestamp": "2026-01-01T00:00:00.000Z", "data": {}})
    stamp = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp),
               "webhook-signature": webhooks.sign(secret, "msg_1", stamp, payload)}
    assert Webhook(secret).verify(payload, headers)["type"] == "hold.created"
    assert [webhooks.backoff(n, 10) <= 10 * 2 ** (n - 1) * 1.2 for n in (1, 5, 30)] == [True] * 3
    assert webhooks.backoff(40, 10) <= webhooks.MAX_BACKOFF * 1.2
