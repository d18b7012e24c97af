"""The shapes of the rows the hub reads, writes and sends: one struct per table.

Each struct is the one definition of its row; the rest is derived from it:
the SELECT and RETURNING column lists (`columns`), the column types
realtime-js converts values by (`realtime_columns`), the OpenAPI schemas
(web/openapi.py and web/answers.py use the structs) and the answers writes decode into.
Field order is the order of the columns in the table.
"""

from __future__ import annotations

import types
import typing
import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

import msgspec

Status = Literal["pending", "confirmed", "completed", "cancelled", "no_show"]
# PostgreSQL's type of a column, where the Python type alone does not say it.
AppointmentStatus = Annotated[Status, msgspec.Meta(extra={"pg": "appointment_status"})]
Jsonb = Annotated[dict[str, str], msgspec.Meta(extra={"pg": "jsonb"})]


class Appointment(msgspec.Struct):
    """An appointment row (public.appointments)."""
    id: uuid.UUID
    patient_id: uuid.UUID
    dentist_id: uuid.UUID
    appointment_date: datetime
    duration_minutes: int
    buffer_minutes: int
    ends_at: datetime
    appointment_type: str
    status: AppointmentStatus
    notes: str | None
    patient_notes: str | None
    medical_history: str | None
    created_by: uuid.UUID | None
    cancelled_at: datetime | None
    cancelled_by: uuid.UUID | None
    cancellation_reason: str | None
    created_at: datetime
    updated_at: datetime


class SlotReservationRow(msgspec.Struct):
    """A hold's row (public.slot_reservations)."""
    id: uuid.UUID
    dentist_id: uuid.UUID
    patient_id: uuid.UUID
    slot_time: datetime
    duration_minutes: int
    appointment_type: str | None
    expires_at: datetime
    created_by: uuid.UUID | None
    created_at: datetime


class Dentist(msgspec.Struct):
    """A dentist's row (public.dentists)."""
    id: uuid.UUID
    user_id: uuid.UUID | None
    name: str
    specialization: str | None
    timezone: str
    slot_minutes: int
    available_times: Jsonb
    date_overrides: Jsonb
    min_notice_minutes: int
    horizon_days: int
    version: int
    created_at: datetime
    updated_at: datetime


def subset(name: str, row: type[msgspec.Struct], omit: tuple[str, ...]) -> type[msgspec.Struct]:
    """A struct of `row`'s fields but `omit`, in the same order (an answer that leaves columns out)."""
    hints = typing.get_type_hints(row, include_extras=True)
    return msgspec.defstruct(name, [(f, hints[f]) for f in row.__struct_fields__ if f not in omit],
                             module=row.__module__)


# A hold as writes and REST answer it (the seed's SlotReservation): who made it stays inside.
SlotReservation = subset("SlotReservation", SlotReservationRow, ("created_by",))
SlotReservation.__doc__ = "A hold as writes answer it (the seed's SlotReservation)."


def columns(row: type[msgspec.Struct], alias: str | None = None, omit: tuple[str, ...] = ()) -> str:
    """The row's columns for a SELECT or RETURNING list, each `alias.`-prefixed if given."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + f for f in row.__struct_fields__ if f not in omit)


_PG = {uuid.UUID: "uuid", datetime: "timestamptz", date: "date", int: "int4", str: "text", bool: "bool",
       dict: "jsonb", list: "jsonb"}


def _pg_type(hint: Any) -> str:
    if typing.get_origin(hint) is Annotated:
        for meta in hint.__metadata__:
            if isinstance(meta, msgspec.Meta) and meta.extra and "pg" in meta.extra:
                return meta.extra["pg"]
        return _pg_type(hint.__origin__)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _pg_type(inner)
    return _PG[typing.get_origin(hint) or hint]


def realtime_columns(row: type[msgspec.Struct], omit: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """`[{name, type}]` as Supabase reports a table's columns, so realtime-js converts values."""
    hints = typing.get_type_hints(row, include_extras=True)
    return [{"name": f, "type": _pg_type(hints[f])} for f in row.__struct_fields__ if f not in omit]
