"""What both examples take from the command line, defaulting to the demo clinic `make run` creates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "var" / "demo.json"


def arguments(description: str | None) -> argparse.Namespace:
    """--url, --token (service role), --dentist, --patient, --days; ids and token from var/demo.json when not given."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://localhost:8080")
    parser.add_argument("--token", help="a service_role JWT (default: the demo chatbot's)")
    parser.add_argument("--dentist", help="dentist id (default: the first demo dentist)")
    parser.add_argument("--patient", help="patient id (default: the first demo patient)")
    parser.add_argument("--days", type=int, default=14, help="how many days ahead to look")
    args = parser.parse_args()
    if not (args.token and args.dentist and args.patient):
        if not DEMO.exists():
            parser.error("give --token, --dentist and --patient, or run `make run` first to create var/demo.json")
        demo = json.loads(DEMO.read_text())
        args.token = args.token or demo["chatbot"]["token"]
        args.dentist = args.dentist or demo["dentists"][0]["id"]
        args.patient = args.patient or demo["patients"][0]["id"]
    args.url = args.url.rstrip("/")
    return args
