"""/openapi.json describes every REST endpoint, and schemathesis finds no 500
and no answer that contradicts it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest

from hub import db
from hub.auth import issue_token
from services import users
from tests.conftest import ALL_DAY, SECRET, HubProcesses
from web.openapi import OPERATIONS

ST = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")


async def test_openapi_lists_every_route(api) -> None:
    status, spec = await api.get("/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    served = {(r.method, r.resource.canonical) for r in api.client.app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/api/") and r.method != "HEAD"
              and not r.resource.canonical.startswith("/api/admin")}
    served_paths = {(m, p.replace("{doc_id}", "{id}")) for m, p in served}
    missing = {s for s in served_paths if s not in documented and "documents" not in s[1]}
    assert not missing, f"undocumented routes: {missing}"


def _fuzz_config(dentists: list[str], appointments: list[str], holds: list[str], patients: list[str],
                 notices: list[str]) -> str:
    """schemathesis.toml: real ids and bookable times, so generated requests
    reach the booking logic instead of 404 and 400 (random ids and times never
    name a dentist or a free slot). Probabilities below 1 keep fuzzing them."""
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    slots = [(start + timedelta(days=d, minutes=30 * i)).isoformat() for d in range(4) for i in range(12)]
    days = sorted({s[:10] for s in slots})

    def values(name: str, items: list[str]) -> str:
        return f"[dictionaries.{name}]\nvalues = {json.dumps(items)}\n"

    def bind(key: str, dictionary: str, probability: float = 0.9) -> str:
        return f'"{key}" = {{ dictionary = "{dictionary}", probability = {probability} }}\n'

    def per_operation(name: str, key: str, dictionary: str) -> str:
        return f'[[operations]]\ninclude-name = "{name}"\nparameters = {{ {bind(key, dictionary).strip()} }}\n'

    return "".join([
        values("dentists", dentists), values("slots", slots), values("days", days),
        values("types", ["checkup", "cleaning", "consultation"]), values("appointments", appointments),
        values("holds", holds), values("patients", patients), values("notices", notices),
        "[parameters]\n", bind("path.dentist_id", "dentists"), bind("body.dentist_id", "dentists"),
        bind("body.appointment_date", "slots", 0.8), bind("body.slot_time", "slots", 0.8),
        bind("body.appointment_type", "types", 0.8), bind("query.date", "days", 0.8),
        *(per_operation(f"{m} /api/appointments/{{id}}", "path.id", "appointments") for m in ("GET", "PUT", "DELETE")),
        per_operation("POST /api/reservations/{id}/extend", "path.id", "holds"),
        per_operation("DELETE /api/reservations/{id}", "path.id", "holds"),
        per_operation("PUT /api/dentists/{id}", "path.id", "dentists"),
        per_operation("PUT /api/users/{id}/roles", "path.id", "patients"),
        per_operation("POST /api/notifications/{id}/read", "path.id", "notices"),
    ])


async def _seed(url: str, admin: str, patients: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Dentists open around the clock, appointments and holds for the patients, over REST."""
    headers = {"Authorization": f"Bearer {admin}"}
    dentists, appointments, holds = [], [], []
    when = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=8)
    async with aiohttp.ClientSession(headers=headers) as s:
        for n in range(3):
            async with s.post(f"{url}/api/dentists", json={"name": f"Dr Fuzz {n}", "timezone": "UTC",
                                                           "available_times": ALL_DAY}) as r:
                assert r.status == 201, await r.text()
                dentists.append((await r.json())["id"])
        for n, patient in enumerate(patients * 2):
            body = {"dentist_id": dentists[n % 3], "appointment_date": (when + timedelta(hours=n)).isoformat(),
                    "appointment_type": "checkup", "patient_id": patient}
            async with s.post(f"{url}/api/appointments", json=body) as r:
                assert r.status == 201, await r.text()
                appointments.append((await r.json())["id"])
            async with s.post(f"{url}/api/availability/{dentists[n % 3]}/reservations", json={
                    "slot_time": (when + timedelta(days=1, hours=n)).isoformat(), "patient_id": patient}) as r:
                assert r.status == 201, await r.text()
                holds.append((await r.json())["id"])
    return dentists, appointments, holds


async def _notify(url: str, dentist: str, user: str) -> list[str]:
    """Notifications for `user` (the service role books for them), for POST /api/notifications/{id}/read."""
    when = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=12)
    service = {"Authorization": f"Bearer {issue_token(SECRET, None, role='service_role')}"}
    async with aiohttp.ClientSession() as s:
        for hour in range(2):
            async with s.post(f"{url}/api/appointments", headers=service, json={
                    "dentist_id": dentist, "appointment_date": (when + timedelta(hours=hour)).isoformat(),
                    "appointment_type": "checkup", "patient_id": user}) as r:
                assert r.status == 201, await r.text()
        async with s.get(f"{url}/api/notifications", headers={
                "Authorization": f"Bearer {issue_token(SECRET, uuid.UUID(user))}"}) as r:
            return [n["id"] for n in (await r.json())["data"]]


async def _answered(url: str) -> dict[tuple[str, str], float]:
    """2xx answers so far per (method, route), from the hub's own metrics."""
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}/metrics") as resp:
            text = await resp.text()
    out: dict[tuple[str, str], float] = {}
    for method, route, status, n in _COUNT.findall(text):
        if status.startswith("2"):
            out[(method, route)] = out.get((method, route), 0) + float(n)
    return out


_COUNT = re.compile(r'^hub_http_request_duration_seconds_count\{method="(\w+)",route="([^"]+)",status="(\d+)"\} (\S+)',
                    re.M)


@pytest.mark.skipif(ST is None, reason="schemathesis is not installed (it is in the test extras)")
@pytest.mark.timeout(300)  # a thousand generated requests, a minute on a loaded machine
async def test_schemathesis_finds_no_server_error(scratch_dsn: str, tmp_path: Path) -> None:
    con = await db.connect(scratch_dsn)
    admin = await users.create_user(con, email="st@test.example", full_name="Fuzz Admin", roles=("admin",))
    patients = [str(await users.create_user(con, email=f"p{n}@test.example", full_name="Fuzz Patient"))
                for n in range(3)]
    await con.close()
    hubs = HubProcesses(scratch_dsn, tmp_path)
    [url] = await hubs.start(1)
    try:
        token = issue_token(SECRET, admin, ttl=3600)
        dentists, appointments, holds = await _seed(url, token, patients)
        notices = await _notify(url, dentists[0], str(admin))
        (tmp_path / "schemathesis.toml").write_text(_fuzz_config(dentists, appointments, holds, patients, notices))
        seeded = await _answered(url)
        proc = await asyncio.create_subprocess_exec(
            ST, "run", f"{url}/openapi.json", "-H", f"Authorization: Bearer {token}",
            "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance",
            "--max-examples", os.environ.get("SCHEMATHESIS_EXAMPLES", "25"),
            # One worker: hypothesis describes lambdas by parsing their source with `ast`, and
            # CPython 3.11.7 keeps the AST constructor's recursion depth in per-interpreter
            # state that two threads corrupt (cpython gh-106905: "SystemError: AST constructor
            # recursion depth mismatch"). Parallel workers are threads, so CI failed by chance.
            "--workers", "1",
            "--suppress-health-check", "all", "--max-time", os.environ.get("SCHEMATHESIS_SECONDS", "60"),
            # A fixed seed keeps CI reproducible; set SCHEMATHESIS_SEED to explore further.
            "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261124"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"},
            cwd=tmp_path)  # reads schemathesis.toml there; its cache of examples stays out of the repository
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
        text = out.decode()
        Path(os.environ.get("SCHEMATHESIS_LOG", "/dev/null")).write_text(text)
        assert proc.returncode == 0, text[-6000:]
        async with aiohttp.ClientSession() as session:  # the hub is still healthy afterwards
            async with session.get(f"{url}/health") as resp:
                assert resp.status == 200
        fuzzed = await _answered(url)
    finally:
        hubs.stop()
    documented = {(m.upper(), p) for m, p, *_ in OPERATIONS}
    reached = {op for op in documented if fuzzed.get(op, 0) > seeded.get(op, 0)}  # by schemathesis, not _seed
    print(f"\nschemathesis: {len(reached)} of {len(documented)} operations answered 2xx; never: "
          f"{sorted(f'{m} {p}' for m, p in documented - reached)}")
    core = {("POST", "/api/availability/{dentist_id}/reservations"), ("POST", "/api/appointments"),
            ("PUT", "/api/appointments/{id}"), ("DELETE", "/api/appointments/{id}"), ("POST", "/api/dentists")}
    assert core <= reached, f"the fuzzer never reached {core - reached}"
