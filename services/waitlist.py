"""The waitlist: join, list, leave, decline an offer (offers themselves are made
by the dentist actors through sql/0010's waitlist_offer).

REST (web/waitlist.py) and the MCP tool call these, so the rules live here.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal

import msgspec

from actors import messages as m
from hub import errors, metrics
from hub.auth import Principal, acting_patient, require_user
from services.booking import Booking, TypeName

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
TimeRange = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$",
                                        description="Local wall-clock time HH:MM-HH:MM, e.g. 09:00-12:00")]
MAX_ENTRIES_PER_PATIENT = 10
MAX_SPAN_DAYS = 366


class WaitlistDTO(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a patient waits for; dates and times are the dentist's local ones."""
    appointment_type: TypeName
    earliest_date: date
    latest_date: date
    dentist_id: uuid.UUID | None = None  # any dentist when absent
    weekdays: Annotated[list[Weekday], msgspec.Meta(min_length=1, max_length=7)] | None = None
    time_ranges: Annotated[list[TimeRange], msgspec.Meta(min_length=1, max_length=8)] | None = None
    patient_id: uuid.UUID | None = None  # the service role and admins act for a patient


class WaitlistFilters(msgspec.Struct, forbid_unknown_fields=True):
    patient_id: uuid.UUID | None = None


_COLUMNS = ("e.id, e.patient_id, p.full_name AS patient_name, e.dentist_id, e.appointment_type, e.earliest_date, "
            "e.latest_date, e.weekdays, e.time_ranges, e.status, e.appointment_id, e.created_at")
# Each entry with its live offer, if its hold is still there.
_LIST = f"""
SELECT {_COLUMNS}, CASE WHEN r.id IS NULL THEN NULL ELSE jsonb_build_object(
         'reservation_id', r.id, 'dentist_id', r.dentist_id, 'slot_time', r.slot_time, 'expires_at', r.expires_at,
         'appointment_type', o.appointment_type) END AS offer
FROM public.waitlist_entries e
LEFT JOIN public.profiles p ON p.id = e.patient_id
LEFT JOIN public.waitlist_offers o ON o.entry_id = e.id AND o.outcome IS NULL
LEFT JOIN public.slot_reservations r ON r.id = o.id AND r.expires_at > now()
"""
_RANGE = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")


@dataclasses.dataclass(frozen=True, slots=True)
class Waitlist:
    booking: Booking

    async def join(self, who: Principal, body: WaitlistDTO) -> dict[str, Any]:
        patient = acting_patient(who, body.patient_id)
        kind = self.booking.catalog.get(body.appointment_type)
        today = datetime.now(timezone.utc).date()
        if body.latest_date < body.earliest_date:
            raise errors.invalid("latest_date must not be before earliest_date", field="latest_date")
        if body.latest_date < today - timedelta(days=1):
            raise errors.invalid("latest_date is in the past", field="latest_date")
        if (body.latest_date - body.earliest_date).days >= MAX_SPAN_DAYS:
            raise errors.invalid(f"earliest_date..latest_date may span at most {MAX_SPAN_DAYS} days",
                                 field="latest_date")
        for i, text in enumerate(body.time_ranges or ()):
            h1, m1, h2, m2 = map(int, _RANGE.match(text).groups())  # type: ignore[union-attr]  # pattern-checked
            if h1 * 60 + m1 >= h2 * 60 + m2:
                raise errors.invalid(f"time range {text!r} must end after it starts", field=f"time_ranges[{i}]")
        if body.dentist_id is not None:
            await self.booking.dentist_user(body.dentist_id)  # NOT_FOUND for an unknown dentist
        pool = self.booking.pool
        async with pool.acquire() as con, con.transaction():
            if body.patient_id is not None and not await con.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM auth.users WHERE id = $1)", patient):
                raise errors.not_found("patient", patient)
            # Serialized per patient, so two joins at once cannot both pass the limit.
            await con.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 10))", str(patient))
            waiting = await con.fetchval("SELECT count(*) FROM public.waitlist_entries "
                                         "WHERE patient_id = $1 AND status = 'waiting'", patient)
            if waiting >= MAX_ENTRIES_PER_PATIENT:
                raise errors.conflict(f"A patient may wait for at most {MAX_ENTRIES_PER_PATIENT} things at once",
                                      limit=MAX_ENTRIES_PER_PATIENT)
            entry_id = await con.fetchval(
                "INSERT INTO public.waitlist_entries (patient_id, dentist_id, appointment_type, earliest_date, "
                "latest_date, weekdays, time_ranges, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                patient, body.dentist_id, kind.name, body.earliest_date, body.latest_date, body.weekdays,
                body.time_ranges, who.user_id)
        return await self._entry(entry_id)

    async def entries(self, who: Principal, f: WaitlistFilters) -> list[dict[str, Any]]:
        """The caller's entries (an admin's: everyone's, or one patient's), oldest first."""
        if who.is_admin:
            patient = f.patient_id
        elif who.is_service:
            if f.patient_id is None:
                raise errors.invalid("The service role lists one patient's waitlist: pass patient_id",
                                     field="patient_id", location="query")
            patient = f.patient_id
        else:
            patient = require_user(who)
            if f.patient_id is not None and f.patient_id != patient:
                raise errors.forbidden("Patients may only see their own waitlist")
        # Close the offers whose hold is gone (booked, say), so statuses are current.
        for row in await self.booking.pool.fetch("SELECT * FROM public.waitlist_settle(NULL, $1)", patient):
            metrics.WAITLIST_OFFERS.labels(row["outcome"]).inc()
        rows = await self.booking.pool.fetch(
            _LIST + "WHERE ($1::uuid IS NULL OR e.patient_id = $1) ORDER BY e.created_at, e.id LIMIT 500", patient)
        return [dict(r) for r in rows]

    async def leave(self, who: Principal, entry_id: uuid.UUID) -> None:
        """Leave the waitlist; a live offer is released, so it goes to the next in line."""
        entry = await self._own(who, entry_id)
        await self.booking.pool.execute("DELETE FROM public.waitlist_entries WHERE id = $1", entry_id)
        if entry["offer"] is not None:
            metrics.WAITLIST_OFFERS.labels("withdrawn").inc()
            await self._release(entry["offer"])

    async def decline(self, who: Principal, entry_id: uuid.UUID) -> dict[str, Any]:
        """Pass on the current offer (it goes to the next in line); stay on the waitlist."""
        entry = await self._own(who, entry_id)
        offer = entry["offer"]
        if offer is None:
            raise errors.conflict("This waitlist entry has no open offer to decline")
        declined = await self.booking.pool.fetchval(
            "UPDATE public.waitlist_offers SET outcome = 'declined', ended_at = now() "
            "WHERE id = $1 AND outcome IS NULL RETURNING id", uuid.UUID(offer["reservation_id"]))
        if declined is not None:
            metrics.WAITLIST_OFFERS.labels("declined").inc()
            await self._release(offer)
        return await self._entry(entry_id)

    async def _release(self, offer: dict[str, Any]) -> None:
        """Free the offer's hold through its dentist's actor (whose pass then offers it on)."""
        try:
            await self.booking.directory.ask(offer["dentist_id"], m.ReleaseHold(
                hold_id=uuid.UUID(offer["reservation_id"]), patient_id=None))
        except errors.HubError as exc:
            if exc.code != errors.ErrorCode.NOT_FOUND:  # already gone: expired or booked meanwhile
                raise

    async def _entry(self, entry_id: uuid.UUID) -> dict[str, Any]:
        row = await self.booking.pool.fetchrow(_LIST + "WHERE e.id = $1", entry_id)
        if row is None:
            raise errors.not_found("waitlist entry", entry_id)
        return dict(row)

    async def _own(self, who: Principal, entry_id: uuid.UUID) -> dict[str, Any]:
        """The entry, if the caller may change it (its patient, the service role, an admin)."""
        entry = await self._entry(entry_id)
        if not (who.is_admin or who.is_service or entry["patient_id"] == who.user_id):
            raise errors.not_found("waitlist entry", entry_id)
        return entry
