"""GET /health: each subsystem reports itself; 200 when all are ok, else 503."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from aiohttp import web

from web._http import json

routes = web.RouteTableDef()

# A check returns extra facts for the report, or raises to say it is failing.
Check = Callable[[web.Application], Awaitable[dict[str, Any] | None]]
CHECKS = web.AppKey("health_checks", dict[str, Check])
TIMEOUT = 2.0


def register(app: web.Application, name: str, check: Check) -> None:
    app.setdefault(CHECKS, {})[name] = check


async def _run(app: web.Application, check: Check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        facts = await asyncio.wait_for(check(app), TIMEOUT)
        result: dict[str, Any] = {"status": "ok", **(facts or {})}
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the point of a health check: report, don't raise
        result = {"status": "error", "message": str(exc) or type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    checks = request.app.get(CHECKS, {})
    results = await asyncio.gather(*(_run(request.app, c) for c in checks.values()))
    report = dict(zip(checks, results))
    failing = [f"{name}: {r['message']}" for name, r in report.items() if r["status"] != "ok"]
    body: dict[str, Any] = {
        "status": "unhealthy" if failing else "healthy",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "checks": report,
    }
    if failing:
        body["reason"] = "; ".join(failing)  # what a pager shows first
    return json(body, status=503 if failing else 200)
