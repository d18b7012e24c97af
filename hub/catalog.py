"""Appointment types, shared by every dentist and cached per process.

Reloaded when any process changes them (NOTIFY hub_catalog), so a booking
never needs a round trip to learn a duration.
"""

from __future__ import annotations

import dataclasses

import asyncpg

from hub import errors

DEFAULT_TYPE = "checkup"


@dataclasses.dataclass(frozen=True, slots=True)
class AppointmentType:
    name: str
    duration_minutes: int
    buffer_minutes: int = 0

    @property
    def blocked_minutes(self) -> int:
        """How long the chair is taken: the appointment plus the buffer after it."""
        return self.duration_minutes + self.buffer_minutes


class Catalog:
    def __init__(self, types: dict[str, AppointmentType] | None = None) -> None:
        self.types = types or {}

    async def load(self, con: asyncpg.Connection | asyncpg.Pool) -> None:
        rows = await con.fetch("SELECT name, duration_minutes, buffer_minutes FROM public.appointment_types")
        self.types = {r["name"]: AppointmentType(r["name"], r["duration_minutes"], r["buffer_minutes"]) for r in rows}

    def get(self, name: str | None, field: str = "appointment_type") -> AppointmentType:
        """Raises VALIDATION_ERROR naming the known types."""
        found = self.types.get(name or DEFAULT_TYPE)
        if found is None:
            known = sorted(self.types)
            raise errors.invalid(f"Unknown appointment type {name!r}; known types: {', '.join(known)}",
                                 field=field, known=known)
        return found
