"""The hub's booking tools for AI agents (served over MCP by web/mcp.py).

Each tool's arguments are a msgspec struct built on the DTO the REST API
decodes (a subclass adding what REST takes from the path), so its input
schema is generated from the same struct, and a call runs the same booking
service function as REST and the socket: the same actors, rules,
authorization and idempotency.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated, Any, Awaitable, Callable

import msgspec
from aiohttp import web

from hub import errors
from hub.auth import Principal
from services.booking import (AppointmentFilters, AwareDatetime, CancelDTO, CreateAppointmentDTO, ReserveDTO, SlotsQuery,
                         TypeName, UpdateAppointmentDTO)
from services.waitlist import WaitlistDTO
from web._http import BOOKING, WAITLIST

IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=200, description=(
    "Any unique string; a retried call with the same key and arguments returns the first answer"))]


class FindSlots(SlotsQuery, kw_only=True, forbid_unknown_fields=True):
    """Free and busy slots of a dentist on a date (or from..to, up to 31 days)."""
    dentist_id: uuid.UUID


class HoldSlot(ReserveDTO, kw_only=True, forbid_unknown_fields=True):
    """Hold a slot for a few minutes while the patient decides."""
    dentist_id: uuid.UUID
    idempotency_key: IdempotencyKey | None = None


class BookAppointment(CreateAppointmentDTO, kw_only=True, forbid_unknown_fields=True):
    """Book an appointment (with the hold's reservation_id, if the slot was held)."""
    idempotency_key: IdempotencyKey | None = None


class Reschedule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Move an appointment to another time, or change its type."""
    appointment_id: uuid.UUID
    appointment_date: AwareDatetime | None = None
    appointment_type: TypeName | None = None


class Cancel(CancelDTO, kw_only=True, forbid_unknown_fields=True):
    """Cancel an appointment."""
    appointment_id: uuid.UUID


Run = Callable[[web.Application, Principal, Any], Awaitable[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class Tool:
    name: str
    title: str
    description: str
    args: type[msgspec.Struct]
    run: Run
    read_only: bool = False
    destructive: bool = False

    def definition(self) -> dict[str, Any]:
        """The tool as `tools/list` describes it, its input schema from `args`."""
        (ref,), defs = msgspec.json.schema_components([self.args], ref_template="#/$defs/{name}")
        schema = defs.pop(ref["$ref"].rsplit("/", 1)[1])
        schema.pop("title", None)
        if defs:
            schema["$defs"] = defs
        return {"name": self.name, "title": self.title, "description": self.description, "inputSchema": schema,
                "annotations": {"title": self.title, "readOnlyHint": self.read_only,
                                "destructiveHint": self.destructive, "idempotentHint": self.read_only,
                                "openWorldHint": False}}

    def decode(self, arguments: Any) -> Any:
        """The arguments as `args`; VALIDATION_ERROR names the field."""
        try:
            return msgspec.convert(arguments if arguments is not None else {}, self.args)
        except msgspec.ValidationError as exc:
            raise errors.from_validation(exc, where="arguments") from None


def _idempotency(app: web.Application, who: Principal, tool: str, args: Any) -> Any:
    """The REST Idempotency-Key, from the `idempotency_key` argument; the hash
    covers the tool and every other argument."""
    body = {f: getattr(args, f) for f in args.__struct_fields__ if f != "idempotency_key"}
    return app[BOOKING].idempotency(who, args.idempotency_key, f"mcp:{tool}:".encode() + msgspec.json.encode(body))


def _answer(result: dict[str, Any]) -> dict[str, Any]:
    result.pop("_replayed", None)
    return result


async def _find_slots(app: web.Application, who: Principal, args: FindSlots) -> Any:
    return {"slots": await app[BOOKING].slots(who, args.dentist_id, args)}


async def _hold(app: web.Application, who: Principal, args: HoldSlot) -> Any:
    idem = _idempotency(app, who, "hold_slot", args)
    return _answer(await app[BOOKING].reserve(who, args.dentist_id, args, idem))


async def _book(app: web.Application, who: Principal, args: BookAppointment) -> Any:
    return _answer(await app[BOOKING].book(who, args, _idempotency(app, who, "book", args)))


async def _reschedule(app: web.Application, who: Principal, args: Reschedule) -> Any:
    if args.appointment_date is None and args.appointment_type is None:
        raise errors.invalid("Give appointment_date, appointment_type or both", field="appointment_date")
    return await app[BOOKING].update(who, args.appointment_id, UpdateAppointmentDTO(
        appointment_date=args.appointment_date, appointment_type=args.appointment_type))


async def _cancel(app: web.Application, who: Principal, args: Cancel) -> Any:
    return await app[BOOKING].cancel(who, args.appointment_id, args.reason)


async def _mine(app: web.Application, who: Principal, args: AppointmentFilters) -> Any:
    return await app[BOOKING].list_appointments(who, args)


async def _join(app: web.Application, who: Principal, args: WaitlistDTO) -> Any:
    return await app[WAITLIST].join(who, args)


TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("find_slots", "Find slots",
         "List a dentist's slots on a date (or from..to) with status free, busy, busy-tentative (held by "
         "someone) or busy-unavailable. Pass appointment_type to get slots long enough for it. Times are UTC "
         "ISO 8601; book only slots whose status is free.", FindSlots, _find_slots, read_only=True),
    Tool("hold_slot", "Hold a slot",
         "Hold a free slot for the patient for a few minutes (expires_at says until when) so nobody else can "
         "take it while they decide. Then call book with the hold's id as reservation_id.", HoldSlot, _hold),
    Tool("book", "Book an appointment",
         "Book an appointment at appointment_date (a slot start from find_slots). Pass the hold's id as "
         "reservation_id when the slot was held; a waitlist offer is accepted the same way. Fails with "
         "SLOT_UNAVAILABLE when someone else has the time.", BookAppointment, _book),
    Tool("reschedule", "Reschedule an appointment",
         "Move an appointment to another start time and/or change its appointment type.", Reschedule,
         _reschedule),
    Tool("cancel", "Cancel an appointment",
         "Cancel an appointment. Patients may cancel only more than the clinic's cancellation window ahead "
         "(CANCELLATION_WINDOW_EXPIRED otherwise).", Cancel, _cancel, destructive=True),
    Tool("my_appointments", "My appointments",
         "List the patient's appointments, soonest first, optionally filtered by status, dentist and dates.",
         AppointmentFilters, _mine, read_only=True),
    Tool("join_waitlist", "Join the waitlist",
         "Put the patient on the waitlist for an appointment type between two dates (optionally one dentist, "
         "some weekdays, local time ranges like 09:00-12:00). When a matching slot frees up it is held for "
         "them and offered; they accept by booking with the offer's reservation_id.", WaitlistDTO, _join),
)}
