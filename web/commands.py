"""Chatbot commands on the socket: the REST DTOs, the same booking service.

On a joined channel a client pushes `slots`, `reserve`, `extend`, `release`,
`book`, `reschedule` or `cancel`; the reply is `ok` with the result or
`error` with the seed's error body (web/realtime.py sends it).
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from hub import errors
from services.booking import Booking, CreateAppointmentDTO, ReserveDTO, SlotsQuery, UpdateAppointmentDTO
from web.session import Channel


class _Target(msgspec.Struct, forbid_unknown_fields=True):
    reservation_id: uuid.UUID


def _convert(payload: dict[str, Any], type_: Any, drop: tuple[str, ...] = ()) -> Any:
    try:
        return msgspec.convert({k: v for k, v in payload.items() if k not in drop}, type_)
    except msgspec.ValidationError as exc:
        raise errors.from_validation(exc, where="payload") from None


def _dentist(channel: Channel, payload: dict[str, Any]) -> uuid.UUID:
    raw = payload.get("dentist_id")
    if raw is None and channel.topic.kind is not None and channel.topic.kind[1] == "dentist_id":
        return channel.topic.key  # type: ignore[return-value]
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise errors.invalid("dentist_id is required (or join a dentist's channel)", field="dentist_id") from None


def _idempotency(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    key = payload.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        raise errors.invalid("idempotency_key must be a string", field="idempotency_key")
    body = msgspec.json.encode({k: v for k, v in payload.items() if k != "idempotency_key"})
    return booking.idempotency(channel.viewer.principal, key, body)


async def _slots(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    query = _convert(payload, SlotsQuery, drop=("dentist_id",))
    return await booking.slots(channel.viewer.principal, _dentist(channel, payload), query)


async def _reserve(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    body = _convert(payload, ReserveDTO, drop=("dentist_id", "idempotency_key"))
    return await booking.reserve(channel.viewer.principal, _dentist(channel, payload), body,
                                 _idempotency(booking, channel, payload))


async def _extend(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    return await booking.extend(channel.viewer.principal, _convert(payload, _Target).reservation_id)


async def _release(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    await booking.release(channel.viewer.principal, _convert(payload, _Target).reservation_id)
    return {}


async def _book(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    full = {"dentist_id": str(_dentist(channel, payload)), **payload}
    body = _convert(full, CreateAppointmentDTO, drop=("idempotency_key",))
    result = await booking.book(channel.viewer.principal, body, _idempotency(booking, channel, payload))
    result.pop("_replayed", None)
    return result


class _Change(msgspec.Struct, forbid_unknown_fields=True):
    appointment_id: uuid.UUID


async def _reschedule(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    target = _convert({"appointment_id": payload.get("appointment_id")}, _Change)
    body = _convert(payload, UpdateAppointmentDTO, drop=("appointment_id",))
    if body.status is not None:
        raise errors.invalid("reschedule changes the time or type; use cancel to cancel", field="status")
    return await booking.update(channel.viewer.principal, target.appointment_id, body)


async def _cancel(booking: Booking, channel: Channel, payload: dict[str, Any]) -> Any:
    target = _convert({"appointment_id": payload.get("appointment_id")}, _Change)
    reason = payload.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise errors.invalid("reason must be a string", field="reason")
    return await booking.cancel(channel.viewer.principal, target.appointment_id, reason)


COMMANDS = {"slots": _slots, "reserve": _reserve, "extend": _extend, "release": _release, "book": _book,
            "reschedule": _reschedule, "cancel": _cancel}
