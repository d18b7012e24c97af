"""Uploads the disk cannot take (full, read-only, over the process's file size
limit): a clear 507 with the error body, and nothing half-written (no row
without its file, no partial file)."""

from __future__ import annotations

import os
import resource
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.faults.conftest import make_clinic

# A cluster and hub processes of its own to start, and load around the fault: more than the default.
pytestmark = pytest.mark.timeout(300)

PDF = b"%PDF-1.4\n" + b"x" * (1024 * 1024)


async def upload(url: str, appointment: str, token: str) -> tuple[int, dict]:
    form = aiohttp.FormData()
    form.add_field("file", PDF, filename="x-ray.pdf", content_type="application/pdf")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/api/appointments/{appointment}/documents", data=form,
                                headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json(content_type=None)


async def nothing_kept(dsn: str, folder: Path) -> None:
    con = await asyncpg.connect(dsn)
    try:
        assert await con.fetchval("SELECT count(*) FROM appointment_documents") == 0
    finally:
        await con.close()
    assert [p for p in folder.rglob("*") if p.is_file()] == []


def mount(folder: Path, options: str) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


@pytest.fixture
async def setup(cluster, hubs, tmp_path: Path):
    clinic = await make_clinic(cluster.dsn, dentists=1, patients=1)
    patient, token = clinic.patients[0]
    con = await asyncpg.connect(cluster.dsn)
    try:
        appointment = await con.fetchval(
            "INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
            "VALUES ($1, $2, $3, 'checkup') RETURNING id::text", patient, clinic.dentists[0],
            datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=3))
    finally:
        await con.close()
    folder = tmp_path / "uploads"
    folder.mkdir()
    hubs.dsn = cluster.dsn
    [url] = await hubs.start(1, UPLOAD_DIR=str(folder))
    yield url, appointment, token, folder
    subprocess.run(["umount", str(folder)], capture_output=True)


async def test_over_the_file_size_limit(setup, cluster, hubs) -> None:
    """The process may not write more than 64 KiB a file (RLIMIT_FSIZE: EFBIG, as a quota would)."""
    url, appointment, token, folder = setup
    pid = hubs.procs[0].pid
    before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (64 * 1024, before[1]))  # the soft limit: it may be undone
    status, body = await upload(url, appointment, token)
    assert status == 507 and body["error"]["code"] == "INSUFFICIENT_STORAGE", body
    print(f"\n[faults] upload over the size limit: {status} {body['error']['details']}")
    await nothing_kept(cluster.dsn, folder)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, before)
    status, body = await upload(url, appointment, token)  # and it works again once the disk can take it
    assert status == 201, body


@pytest.mark.parametrize("options", ["size=256k", "ro,size=1m"], ids=["full", "read-only"])
async def test_disk_full_or_read_only(setup, cluster, options: str) -> None:
    url, appointment, token, folder = setup
    if not mount(folder, options):
        if os.environ.get("CI") == "true":
            pytest.fail("mounting a tmpfs is needed for this test (root with CAP_SYS_ADMIN)")
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    status, body = await upload(url, appointment, token)
    assert status == 507 and body["error"]["code"] == "INSUFFICIENT_STORAGE", body
    print(f"\n[faults] upload to a {options} disk: {status} {body['error']['details']}")
    await nothing_kept(cluster.dsn, folder)
