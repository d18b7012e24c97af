"""Chatbot commands on the socket: the REST DTOs, the same booking service.

On a joined channel a client pushes `slots`, `reserve`, `extend`, `release`,
`book`, `reschedule` or `cancel`; the reply is `ok` with the result or
`error` with the seed's error body (web/realtime.py sends it).
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import msgspec

from hub import errors
from services.booking import Booking, CreateAppointmentDTO, ReserveDTO, SlotsQuery, UpdateAppointmentDTO
from web import payloads
from web.session import Channel

T = TypeVar("T")

# Each command's payload: the DTO REST decodes, with what REST takes from the
# path or a header (`dentist_id`: the channel's dentist by default).


class _Slots(SlotsQuery, kw_only=True, forbid_unknown_fields=True):
    dentist_id: uuid.UUID | None = None


class _Reserve(ReserveDTO, kw_only=True, forbid_unknown_fields=True):
    dentist_id: uuid.UUID | None = None
    idempotency_key: str | None = None


class _Target(msgspec.Struct, forbid_unknown_fields=True):
    reservation_id: uuid.UUID


class _Book(CreateAppointmentDTO, kw_only=True, forbid_unknown_fields=True):
    dentist_id: uuid.UUID | None = None  # type: ignore[assignment]
    idempotency_key: str | None = None


class _Change(msgspec.Struct, forbid_unknown_fields=True):
    """appointment_id alone: a missing or bad one is refused as decoded so (`Expected uuid, got null`)."""
    appointment_id: uuid.UUID


class _Reschedule(UpdateAppointmentDTO, kw_only=True, forbid_unknown_fields=True):
    appointment_id: uuid.UUID


class _Cancel(msgspec.Struct, kw_only=True):  # other keys are not read
    appointment_id: uuid.UUID
    reason: str | None = None


def _no_dentist() -> errors.HubError:
    return errors.invalid("dentist_id is required (or join a dentist's channel)", field="dentist_id")


_REFUSALS: dict[str, payloads.Refusal] = {
    "dentist_id": lambda *_: _no_dentist(),
    "idempotency_key": lambda *_: errors.invalid("idempotency_key must be a string", field="idempotency_key"),
    "appointment_id": lambda value, holder: payloads.refusal_alone(_Change, {"appointment_id": value}, "payload"),
    "reason": lambda *_: errors.invalid("reason must be a string", field="reason"),
}


def _decode(payload: dict[str, Any], type_: type[T]) -> T:
    return payloads.decode(payload, type_, _REFUSALS)


def _dentist(channel: Channel, given: uuid.UUID | None) -> uuid.UUID:
    if given is not None:
        return given
    if channel.topic.kind is not None and channel.topic.kind[1] == "dentist_id":
        return channel.topic.key  # type: ignore[return-value]
    raise _no_dentist()


def _idempotency(booking: Booking, channel: Channel, payload: dict[str, Any], key: str | None) -> Any:
    body = msgspec.json.encode({k: v for k, v in payload.items() if k != "idempotency_key"})
    return booking.idempotency(channel.viewer.principal, key, body)


async def _slots(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    query = _decode(payload, _Slots)
    return await booking.slots(channel.viewer.principal, _dentist(channel, query.dentist_id), query)


async def _reserve(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    body = _decode(payload, _Reserve)
    return await booking.reserve(channel.viewer.principal, _dentist(channel, body.dentist_id), body,
                                 _idempotency(booking, channel, payload, body.idempotency_key))


async def _extend(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    return await booking.extend(channel.viewer.principal, _decode(payload, _Target).reservation_id)


async def _release(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    await booking.release(channel.viewer.principal, _decode(payload, _Target).reservation_id)
    return {}


async def _book(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    body = _decode(payload, _Book)
    body = msgspec.structs.replace(body, dentist_id=_dentist(channel, body.dentist_id))
    result = await booking.book(channel.viewer.principal, body,
                                _idempotency(booking, channel, payload, body.idempotency_key))
    result.pop("_replayed", None)
    return result


async def _reschedule(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    body = _decode(payload, _Reschedule)
    if body.status is not None:
        raise errors.invalid("reschedule changes the time or type; use cancel to cancel", field="status")
    return await booking.update(channel.viewer.principal, body.appointment_id, body)


async def _cancel(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    body = _decode(payload, _Cancel)
    return await booking.cancel(channel.viewer.principal, body.appointment_id, body.reason)


COMMANDS = {"slots": _slots, "reserve": _reserve, "extend": _extend, "release": _release, "book": _book,
            "reschedule": _reschedule, "cancel": _cancel}
