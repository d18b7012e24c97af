"""/metrics moves with the traffic, with bounded labels."""

from __future__ import annotations

import dataclasses

from tests.conftest import Api, slot_at
from tests.conftest import metric as value
from web import create_app


async def test_metrics_move_after_a_booking(api, clinic) -> None:
    """Counters are process-wide (earlier tests moved them too): each is read
    before and after, and must move by exactly what this test did."""
    status, before = await api.get("/metrics")
    assert status == 200
    status, _ = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=3), "appointment_type": "checkup"})
    assert status == 201
    status, after = await api.get("/metrics")
    for name, labels in [("hub_booking_appointments_total", {"change": "created"}),
                         ("hub_http_request_duration_seconds_count",
                          {"method": "POST", "route": "/api/appointments", "status": "201"}),
                         ("hub_actor_turn_seconds_count", {"message": "Book"})]:
        assert value(after, name, **labels) == value(before, name, **labels) + 1, (name, labels)
    # How many queries a booking takes is the implementation's business; that it counts them is ours.
    assert value(after, "hub_db_query_duration_seconds_count") > value(before, "hub_db_query_duration_seconds_count")
    assert "hub_db_pool_connections" in after and "hub_realtime_connections" in after
    assert clinic.dentist_id not in after and str(clinic.patient.id) not in after  # no ids as labels
    status, hold = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.patient,
                                  json={"slot_time": slot_at(days=4)})
    assert status == 201, hold
    status, held = await api.get("/metrics")
    assert value(held, "hub_booking_holds_total", change="created") == \
        value(after, "hub_booking_holds_total", change="created") + 1
    status, _ = await api.delete(f"/api/reservations/{hold['id']}", clinic.patient)
    assert status in (200, 204)
    status, released = await api.get("/metrics")
    assert value(released, "hub_booking_holds_total", change="released") == \
        value(held, "hub_booking_holds_total", change="released") + 1
    assert value(released, "hub_booking_holds_total", change="expired") == \
        value(held, "hub_booking_holds_total", change="expired")


async def test_metrics_token(aiohttp_client, settings) -> None:
    client = Api(await aiohttp_client(create_app(dataclasses.replace(settings, metrics_token="scrape-me"))))
    status, _ = await client.get("/metrics")
    assert status == 401
    status, text = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert status == 200 and "hub_http_request_duration_seconds" in text
