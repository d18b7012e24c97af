"""/metrics moves with the traffic, with bounded labels."""

from __future__ import annotations

import dataclasses
import re

from tests.conftest import Api, slot_at
from web import create_app


def value(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if wanted else "") + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


async def test_metrics_move_after_a_booking(api, clinic) -> None:
    status, before = await api.get("/metrics")
    assert status == 200
    status, _ = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=3), "appointment_type": "checkup"})
    assert status == 201
    status, after = await api.get("/metrics")
    assert value(after, "hub_booking_appointments_total", change="created") == \
        value(before, "hub_booking_appointments_total", change="created") + 1
    route = dict(method="POST", route="/api/appointments", status="201")
    assert value(after, "hub_http_request_duration_seconds_count", **route) >= 1
    assert value(after, "hub_db_query_duration_seconds_count") > value(before, "hub_db_query_duration_seconds_count")
    assert value(after, "hub_actor_turn_seconds_count", message="Book") >= 1
    assert "hub_db_pool_connections" in after and "hub_realtime_connections" in after
    assert clinic.dentist_id not in after and str(clinic.patient.id) not in after  # no ids as labels
    status, hold = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.patient,
                                  json={"slot_time": slot_at(days=4)})
    await api.delete(f"/api/reservations/{hold['id']}", clinic.patient)
    status, text = await api.get("/metrics")
    assert value(text, "hub_booking_holds_total", change="released") >= \
        value(after, "hub_booking_holds_total", change="released") + 1


async def test_metrics_token(aiohttp_client, settings) -> None:
    client = Api(await aiohttp_client(create_app(dataclasses.replace(settings, metrics_token="scrape-me"))))
    status, _ = await client.get("/metrics")
    assert status == 401
    status, text = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert status == 200 and "hub_http_request_duration_seconds" in text
