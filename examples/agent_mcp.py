"""An AI agent's booking loop over MCP: list the hub's tools, find a free slot,
hold it, book it. The "model" here is a script choosing the next tool call
from the last result; a real agent hands the tool list to its LLM and runs the
calls it asks for, in the same loop. Needs the official client: pip install mcp

    .venv/bin/python examples/agent_mcp.py                   # uses var/demo.json from `make run`
    .venv/bin/python examples/agent_mcp.py --url http://localhost:8080 --token <service_role JWT> \
        --dentist <dentist id> --patient <patient id>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://localhost:8080")
    parser.add_argument("--token", help="a service_role JWT (default: the demo chatbot's)")
    parser.add_argument("--dentist", help="dentist id (default: the first demo dentist)")
    parser.add_argument("--patient", help="patient id (default: the first demo patient)")
    parser.add_argument("--days", type=int, default=14, help="how many days ahead to look")
    args = parser.parse_args()
    demo_file = Path(__file__).resolve().parent.parent / "var" / "demo.json"
    if not (args.token and args.dentist and args.patient):
        if not demo_file.exists():
            parser.error("give --token, --dentist and --patient, or run `make run` first to create var/demo.json")
        demo = json.loads(demo_file.read_text())
        args.token = args.token or demo["chatbot"]["token"]
        args.dentist = args.dentist or demo["dentists"][0]["id"]
        args.patient = args.patient or demo["patients"][0]["id"]
    return asyncio.run(run(args.url.rstrip("/"), args.token, args.dentist, args.patient, args.days))


if __name__ == "__main__":
    raise SystemExit(main())
