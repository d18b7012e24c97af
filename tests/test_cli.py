"""The CLI is how newcomers and external clients get going."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import asyncpg

from hub.auth import verify_token
from tests.conftest import SECRET


def hub(*args: str, dsn: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "JWT_SECRET": SECRET, "HUB_ENV": "test", "LOG_LEVEL": "WARNING"}
    if dsn:
        env["DATABASE_URL"] = dsn
    return subprocess.run([sys.executable, "-m", "hub", *args], env=env, capture_output=True, text=True, timeout=120)


def test_token() -> None:
    sub = uuid.uuid4()
    out = hub("token", "--sub", str(sub), "--ttl", "60")
    assert out.returncode == 0, out.stderr
    claims = verify_token(SECRET, out.stdout.strip())
    assert claims.sub == sub and claims.role == "authenticated"
    out = hub("token", "--role", "service_role")
    assert verify_token(SECRET, out.stdout.strip()).role == "service_role"
    out = hub("token")
    assert out.returncode == 2 and "--sub" in out.stderr


def test_user_add_and_demo(dsn: str) -> None:
    out = hub("user", "add", "--email", "cli@test.example", "--name", "Cli User", "--role", "admin", dsn=dsn)
    assert out.returncode == 0, out.stderr
    uuid.UUID(out.stdout.strip())
    first = hub("demo", dsn=dsn)
    assert first.returncode == 0, first.stderr
    clinic = json.loads(first.stdout)
    assert len(clinic["dentists"]) >= 3 and len(clinic["patients"]) >= 12
    assert len({d["timezone"] for d in clinic["dentists"]}) >= 2  # the console shows a dentist's own zone
    async def booked() -> int:
        con = await asyncpg.connect(dsn)
        try:
            return await con.fetchval("SELECT count(*) FROM public.appointments a JOIN public.dentists d "
                                      "ON d.id = a.dentist_id WHERE d.user_id = ANY($1::uuid[])",
                                      [d["user_id"] for d in clinic["dentists"]])
        finally:
            await con.close()
    assert asyncio.run(booked()) >= 20  # a week of bookings: the day view looks like a real morning
    assert verify_token(SECRET, clinic["admin"]["token"]).sub == uuid.UUID(clinic["admin"]["id"])
    again = json.loads(hub("demo", dsn=dsn).stdout)  # idempotent: same people, fresh tokens
    assert [d["id"] for d in again["dentists"]] == [d["id"] for d in clinic["dentists"]]


def test_production_requires_a_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
    out = subprocess.run([sys.executable, "-m", "hub", "token", "--role", "service_role"],
                         env={**env, "HUB_ENV": "production"}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "JWT_SECRET must be set" in out.stderr


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (children of children too)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass  # exited meanwhile
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_workers_from_the_environment_are_workers_not_supervisors(dsn: str, tmp_path) -> None:
    """WORKERS=2 hub serve: one supervisor and two workers, and it stays so
    (each child used to read WORKERS too and fork two more, without bound)."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JWT_SECRET": SECRET, "HUB_ENV": "test", "LOG_LEVEL": "WARNING", "DATABASE_URL": dsn,
           "HUB_VAR_DIR": str(tmp_path), "WORKERS": "2"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:  # up: both workers answer
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert len(_descendants(proc.pid)) <= 2
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200 and len(_descendants(proc.pid)) == 2:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "hub serve with WORKERS=2 did not come up"
            time.sleep(0.1)
        until = time.monotonic() + 3  # and stays at 1 + 2 (the bug had 3, 7, 15 after 1, 2, 3 s)
        while time.monotonic() < until:
            assert len(_descendants(proc.pid)) == 2, _descendants(proc.pid)
            time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
