"""An AI agent's booking loop over MCP: list the hub's tools, find a free slot,
hold it, book it. The "model" here is a script choosing the next tool call
from the last result; a real agent hands the tool list to its LLM and runs the
calls it asks for, in the same loop. Needs the official client: pip install mcp

    .venv/bin/python examples/agent_mcp.py                   # uses var/demo.json from `make run`
    .venv/bin/python examples/agent_mcp.py --url http://localhost:8080 --token <service_role JWT> \
        --dentist <dentist id> --patient <patient id>
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date, timedelta
from typing import Any

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from _demo import arguments  # examples/_demo.py, beside this script


def decide(step: str, last: dict[str, Any], goal: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """The scripted model: (next step, tool, arguments) after `step` answered `last`, or None when done."""
    if step == "start" or (step == "find" and not any(s["status"] == "free" for s in last["slots"])):
        goal["day"] = goal.get("day", date.today()) + timedelta(days=0 if step == "start" else 1)
        if goal["day"] > date.today() + timedelta(days=goal["days"]):
            return None
        return "find", "find_slots", {"dentist_id": goal["dentist"], "date": goal["day"].isoformat(),
                                      "appointment_type": "checkup"}
    if step == "find":
        goal["slot"] = next(s["start"] for s in last["slots"] if s["status"] == "free")
        return "hold", "hold_slot", {"dentist_id": goal["dentist"], "slot_time": goal["slot"],
                                     "appointment_type": "checkup", "patient_id": goal["patient"]}
    if step == "hold":
        return "book", "book", {"dentist_id": goal["dentist"], "appointment_date": goal["slot"],
                                "appointment_type": "checkup", "patient_id": goal["patient"],
                                "reservation_id": last["id"], "patient_notes": "booked by an AI agent over MCP",
                                "idempotency_key": uuid.uuid4().hex}  # safe to retry after a network error
    return None


async def run(url: str, token: str, dentist: str, patient: str, days: int) -> int:
    goal: dict[str, Any] = {"dentist": dentist, "patient": patient, "days": days}
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                info = await session.initialize()
                tools = (await session.list_tools()).tools
                print(f"connected to {info.server_info.name} (MCP {info.protocol_version}); "
                      f"tools: {', '.join(t.name for t in tools)}")
                step, last = "start", {}
                while (nxt := decide(step, last, goal)) is not None:
                    step, tool, arguments = nxt
                    print(f"-> {tool} {json.dumps(arguments)}")
                    result = await session.call_tool(tool, arguments)
                    if result.is_error:  # a real model would read the error and try something else
                        print(f"<- error: {result.content[0].text}")
                        return 1
                    last = result.structured_content or {}
                    print(f"<- {json.dumps(last)[:200]}")
                if step != "book":
                    print(f"no free slot in the next {days} days")
                    return 1
                print(f"booked appointment {last['id']} at {last['appointment_date']} ({last['status']})")
                return 0


def main() -> int:
    args = arguments(__doc__)
    return asyncio.run(run(args.url, args.token, args.dentist, args.patient, args.days))


if __name__ == "__main__":
    raise SystemExit(main())
