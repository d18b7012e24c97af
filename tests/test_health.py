"""GET /health: 200 with each check, 503 when the database is gone."""

from __future__ import annotations

import dataclasses

from web import create_app


async def test_healthy(api) -> None:
    status, body = await api.get("/health")
    assert status == 200, body
    assert body["status"] == "healthy"
    db = body["checks"]["database"]
    assert db["status"] == "ok" and db["latency_ms"] >= 0 and db["pool_size"] >= 1


async def test_unhealthy_when_database_is_down(databases, scratch_dsn, settings, aiohttp_client) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(settings, database_url=scratch_dsn)))
    await databases.drop_async(scratch_dsn)  # WITH (FORCE): every connection of the pool is terminated
    resp = await client.get("/health")
    body = await resp.json()
    assert resp.status == 503, body
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"]["status"] == "error"
    assert body["checks"]["database"]["message"]
