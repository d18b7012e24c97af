"""A chatbot's booking flow over the hub's socket: find a free slot, hold it,
book it, and print the confirmation the hub broadcasts.

    .venv/bin/python examples/chatbot.py                     # uses var/demo.json from `make run`
    .venv/bin/python examples/chatbot.py --url http://localhost:8080 --token <service_role JWT> \
        --dentist <dentist id> --patient <patient id>
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.client import RealtimeClient, ReplyError  # noqa: E402

from _demo import arguments  # noqa: E402 (examples/_demo.py, beside this script)


async def run(url: str, token: str, dentist: str, patient: str, days: int) -> int:
    async with RealtimeClient(url, token) as client:
        channel = client.channel(f"availability:dentist_id={dentist}")
        await channel.join()
        slot = None
        for offset in range(days):
            day = (date.today() + timedelta(days=offset)).isoformat()
            free = [s for s in await channel.push("slots", {"date": day}) if s["available"]]
            if free:
                slot = free[0]["start"]
                break
        if slot is None:
            print(f"no free slot in the next {days} days")
            return 1
        print(f"free slot found: {slot}")
        hold = await channel.push("reserve", {"slot_time": slot, "appointment_type": "checkup", "patient_id": patient})
        print(f"held until {hold['expires_at']} (reservation {hold['id']})")
        try:
            appointment = await channel.push("book", {
                "appointment_date": slot, "appointment_type": "checkup", "patient_id": patient,
                "reservation_id": hold["id"], "patient_notes": "booked by the chatbot",
                "idempotency_key": uuid.uuid4().hex})  # safe to retry after a network error
        except ReplyError as exc:
            print(f"booking refused: {exc.response.get('error', exc.response)}")
            return 1
        print(f"booked appointment {appointment['id']} at {appointment['appointment_date']} ({appointment['status']})")
        while True:  # every screen hears of it; so do we
            message = await channel.next(timeout=5)
            if message.event == "broadcast" and message.payload["event"] == "slot_booked":
                confirmed = message.payload["payload"]
                print(f"confirmation received: slot_booked {confirmed['new']['start']} "
                      f"(dentist {confirmed['dentist_id']}, version {confirmed['version']})")
                if datetime.fromisoformat(confirmed["new"]["start"]) == datetime.fromisoformat(slot):
                    return 0


def main() -> int:
    args = arguments(__doc__)
    return asyncio.run(run(args.url, args.token, args.dentist, args.patient, args.days))


if __name__ == "__main__":
    raise SystemExit(main())
