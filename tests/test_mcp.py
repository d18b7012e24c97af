"""The MCP server at /mcp, driven by the official `mcp` Python client over real
HTTP as an agent would: list the tools, call each, hit a conflict and a bad
argument; plus the transport's refusals (no token, bad JSON-RPC, sessions)."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import Api, User, slot_at

TOOLS = {"find_slots", "hold_slot", "book", "reschedule", "cancel", "my_appointments", "join_waitlist"}


@contextlib.asynccontextmanager
async def agent(api: Api, who: User | None) -> AsyncIterator[ClientSession]:
    """An initialized MCP session for `who`, over the official client's Streamable HTTP transport."""
    headers = who.headers if who is not None else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(str(api.client.make_url("/mcp")), http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def data(result: Any) -> Any:
    """A successful call's answer, checked to agree with its text content."""
    assert result.is_error is False, result.content
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


def failure(result: Any, code: str) -> dict[str, Any]:
    assert result.is_error is True, result.structured_content
    assert result.content[0].text.startswith(f"{code}: ")
    error = result.structured_content["error"]
    assert error["code"] == code and error["message"]
    return error


async def test_an_agent_books_through_the_tools(api, clinic) -> None:
    start = slot_at(days=4, hour=9)
    async with agent(api, clinic.patient) as session:
        assert session.initialize_result.protocol_version == "2025-11-25"
        listing = await session.list_tools()
        assert {t.name for t in listing.tools} == TOOLS
        book_tool = next(t for t in listing.tools if t.name == "book")
        # Generated from CreateAppointmentDTO, the struct POST /api/appointments decodes.
        assert set(book_tool.input_schema["required"]) == {"dentist_id", "appointment_date", "appointment_type"}
        assert book_tool.input_schema["additionalProperties"] is False
        assert book_tool.input_schema["properties"]["reservation_id"]

        slots = data(await session.call_tool("find_slots", {"dentist_id": clinic.dentist_id, "date": start[:10],
                                                            "appointment_type": "checkup"}))["slots"]
        free = next(s for s in slots if datetime.fromisoformat(s["start"]) == datetime.fromisoformat(start))
        assert free["status"] == "free"
        hold = data(await session.call_tool("hold_slot", {"dentist_id": clinic.dentist_id, "slot_time": start,
                                                          "appointment_type": "checkup"}))
        assert hold["patient_id"] == str(clinic.patient.id)
        args = {"dentist_id": clinic.dentist_id, "appointment_date": start, "appointment_type": "checkup",
                "reservation_id": hold["id"], "idempotency_key": "agent-run-1"}
        appt = data(await session.call_tool("book", args))
        assert data(await session.call_tool("book", args))["id"] == appt["id"]  # a retry is answered once

        later = slot_at(days=5, hour=11)
        moved = data(await session.call_tool("reschedule", {"appointment_id": appt["id"], "appointment_date": later}))
        assert datetime.fromisoformat(moved["appointment_date"]) == datetime.fromisoformat(later)
        mine = data(await session.call_tool("my_appointments", {"status": ["pending"]}))
        assert [a["id"] for a in mine["data"]] == [appt["id"]]
        cancelled = data(await session.call_tool("cancel", {"appointment_id": appt["id"], "reason": "plans changed"}))
        assert cancelled["status"] == "cancelled"

        day = (datetime.now(timezone.utc) + timedelta(days=2)).date().isoformat()
        entry = data(await session.call_tool("join_waitlist", {"appointment_type": "filling", "earliest_date": day,
                                                               "latest_date": day, "time_ranges": ["09:00-12:00"]}))
        assert entry["status"] == "waiting" and entry["offer"] is None
    # REST sees what the agent did: one service, one set of rules.
    status, appointment = await api.get(f"/api/appointments/{appt['id']}", clinic.patient)
    assert status == 200 and appointment["status"] == "cancelled"
    status, waiting = await api.get("/api/waitlist", clinic.patient)
    assert status == 200 and [e["id"] for e in waiting] == [entry["id"]]


async def test_tool_errors_carry_the_hub_error(api, clinic) -> None:
    start = slot_at(days=6, hour=14)
    status, _ = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.other_patient,
                               json={"slot_time": start})
    assert status == 201
    async with agent(api, clinic.patient) as session:
        error = failure(await session.call_tool("book", {
            "dentist_id": clinic.dentist_id, "appointment_date": start, "appointment_type": "checkup"}),
            "SLOT_UNAVAILABLE")
        assert error["details"]["retry_after_seconds"] > 0
        error = failure(await session.call_tool("hold_slot", {"dentist_id": clinic.dentist_id,
                                                              "slot_time": "tomorrow at ten"}), "VALIDATION_ERROR")
        assert error["details"]["field"] == "slot_time"
        error = failure(await session.call_tool("find_slots", {"dentist_id": clinic.dentist_id, "date": "2026-01-01",
                                                               "colour": "blue"}), "VALIDATION_ERROR")
        assert error["details"]["field"] == "colour"
        failure(await session.call_tool("cancel", {"appointment_id": "00000000-0000-0000-0000-000000000000"}),
                "NOT_FOUND")
        with pytest.raises(MCPError) as unknown:  # a protocol fault, not a tool result
            await session.call_tool("teleport", {})
        assert unknown.value.error.code == -32602
    # The service role must name the patient; a patient may not act for another.
    async with agent(api, api.service()) as session:
        error = failure(await session.call_tool("hold_slot", {"dentist_id": clinic.dentist_id, "slot_time": start}),
                        "VALIDATION_ERROR")
        assert error["details"]["field"] == "patient_id"
        hold = data(await session.call_tool("hold_slot", {
            "dentist_id": clinic.dentist_id, "slot_time": slot_at(days=6, hour=16),
            "patient_id": str(clinic.patient.id)}))
        assert hold["patient_id"] == str(clinic.patient.id)
    async with agent(api, clinic.other_patient) as session:  # never another patient's data
        theirs = data(await session.call_tool("my_appointments", {"patient_id": str(clinic.patient.id)}))
        assert theirs["data"] == [] and theirs["pagination"]["total"] == 0


async def test_transport_refusals(api, clinic) -> None:
    url = "/mcp"
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    status, body = await api.post(url, json=init, headers=accept)
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"
    with pytest.raises(Exception):  # the official client cannot start without a token
        async with agent(api, None):
            pass

    status, body = await api.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "server/discover"},
                                  headers={**clinic.patient.headers, **accept})
    assert status == 400 and body["error"]["code"] == -32022  # discover names no revision: say which we serve
    assert body["error"]["data"]["supported"][0] == "2026-07-28"
    async with api.client.post(url, json=init, headers={**clinic.patient.headers, **accept}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        session = resp.headers["Mcp-Session-Id"]
        assert (await resp.json())["result"]["protocolVersion"] == "2025-06-18"  # the client's, when we speak it
    headers = {**clinic.patient.headers, **accept, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}
    status, body = await api.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=headers)
    assert (status, body["result"]) == (200, {})
    status, _ = await api.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert status == 202
    status, body = await api.post(url, json={"jsonrpc": "2.0", "id": 3, "method": "resources/list"}, headers=headers)
    assert body["error"]["code"] == -32601
    status, body = await api.post(url, data=b"{not json", headers=headers)
    assert status == 400 and body["error"]["code"] == -32700 and body["id"] is None
    status, body = await api.post(url, json={"jsonrpc": "2.0", "id": 4, "method": 7}, headers=headers)
    assert status == 400 and body["error"]["code"] == -32600
    status, body = await api.post(url, json={"jsonrpc": "2.0", "id": 5, "method": "ping"},
                                  headers={**headers, "MCP-Protocol-Version": "1999-01-01"})
    assert status == 400
    # A session belongs to the caller it was issued to; without one, only initialize is served.
    status, _ = await api.post(url, json={"jsonrpc": "2.0", "id": 6, "method": "ping"},
                               headers={**headers, **clinic.other_patient.headers})
    assert status == 404
    status, _ = await api.post(url, json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
                               headers={**clinic.patient.headers, **accept})
    assert status == 400
    status, _ = await api.post(url, json=init, headers={**clinic.patient.headers, **accept,
                                                        "Origin": "http://evil.example"})
    assert status == 403
    status, _ = await api.get(url, headers=headers)
    assert status == 405
    status, _ = await api.delete(url, headers=headers)
    assert status == 204


async def test_the_stateless_revision(api, clinic) -> None:
    """2026-07-28: the official client discovers the server and calls tools with no session."""
    start = slot_at(days=7, hour=8)
    async with httpx2.AsyncClient(headers=clinic.patient.headers, timeout=30) as http:
        async with streamable_http_client(str(api.client.make_url("/mcp")), http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                found = await session.discover()
                assert "2026-07-28" in found.supported_versions and found.capabilities.tools is not None
                assert {t.name for t in (await session.list_tools()).tools} == TOOLS
                hold = data(await session.call_tool("hold_slot", {"dentist_id": clinic.dentist_id,
                                                                  "slot_time": start}))
                failure(await session.call_tool("hold_slot", {"dentist_id": clinic.dentist_id, "slot_time": 3}),
                        "VALIDATION_ERROR")
    status, body = await api.get(f"/api/appointments?dentist_id={clinic.dentist_id}", clinic.patient)
    assert status == 200
    held = await api.pool.fetchval("SELECT patient_id FROM slot_reservations WHERE id = $1", hold["id"])
    assert str(held) == str(clinic.patient.id)
    # An unknown revision is refused naming the ones served.
    status, body = await api.post("/mcp", clinic.patient, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2099-01-01"}}})
    assert status == 400 and body["error"]["code"] == -32022
    assert "2026-07-28" in body["error"]["data"]["supported"]


async def test_the_agent_example_books(api: Api, clinic: Any) -> None:
    """examples/agent_mcp.py, as a newcomer runs it: list tools, find a slot, hold it, book it."""
    import asyncio
    import sys
    from pathlib import Path

    from hub.auth import issue_token
    from tests.conftest import SECRET

    script = Path(__file__).resolve().parent.parent / "examples" / "agent_mcp.py"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), "--url", str(api.client.make_url("")).rstrip("/"),
        "--token", issue_token(SECRET, None, role="service_role"), "--dentist", clinic.dentist_id,
        "--patient", str(clinic.patient.id), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert "booked appointment" in out.decode()
    status, page = await api.get("/api/appointments", clinic.patient)
    assert status == 200 and page["pagination"]["total"] == 1
