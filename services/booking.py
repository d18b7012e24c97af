"""The booking service: the seed's DTOs and the rules around the dentist actors.

REST controllers and socket commands both call these functions, so a command
has the same validation, authorization and idempotency wherever it arrives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any

import asyncpg
import msgspec
from msgspec import UNSET, UnsetType

from actors import messages as m
from actors.dentist import DentistActor
from actors.directory import Directory
from actors.schedule import WEEKDAYS
from hub import db, errors, policy, rows
from hub.auth import Principal, require_user
from hub.catalog import Catalog
from hub.config import Settings
from hub.policy import acting_patient
from hub.rows import Status

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Note = Annotated[str, msgspec.Meta(max_length=2000)]
LongText = Annotated[str, msgspec.Meta(max_length=20000)]
TypeName = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
MAX_SLOT_DAYS = 31
# Dates the hub reasons about lie within this many days of today: beyond any
# booking horizon (at most 730 days), and far from the calendar's ends, where
# date arithmetic (the next day, another time zone) would overflow.
MAX_REACH_DAYS = 3660
IDEMPOTENCY_KEY_MAX = 200
_APPOINTMENT = rows.columns(rows.Appointment, "a")  # an appointment's columns, as a.<column>


class CreateAppointmentDTO(msgspec.Struct, forbid_unknown_fields=True):
    dentist_id: uuid.UUID
    appointment_date: AwareDatetime
    appointment_type: TypeName
    notes: Note | None = None
    patient_notes: Note | None = None
    medical_history: LongText | None = None
    reservation_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None  # service role and admins book on a patient's behalf


class UpdateAppointmentDTO(msgspec.Struct, forbid_unknown_fields=True):
    appointment_date: AwareDatetime | None = None
    appointment_type: TypeName | None = None
    status: Status | None = None
    notes: Note | None | UnsetType = UNSET
    cancellation_reason: Note | None = None


class CancelDTO(msgspec.Struct, forbid_unknown_fields=True):
    reason: Note | None = None


class ReserveDTO(msgspec.Struct, forbid_unknown_fields=True):
    slot_time: AwareDatetime
    appointment_type: TypeName | None = None
    patient_id: uuid.UUID | None = None


class WeeklyHours(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The seed's AvailabilitySchedule: weekday keys, a missing day is closed."""
    monday: str | None = None
    tuesday: str | None = None
    wednesday: str | None = None
    thursday: str | None = None
    friday: str | None = None
    saturday: str | None = None
    sunday: str | None = None


class AvailabilityDTO(WeeklyHours, forbid_unknown_fields=True, kw_only=True):
    """Weekly hours plus optional timezone, slot length and date overrides."""
    timezone: str | None = None
    slot_minutes: Annotated[int, msgspec.Meta(ge=5, le=240)] | None = None
    overrides: Annotated[dict[str, str], msgspec.Meta(max_length=400)] | None = None


class SlotsQuery(msgspec.Struct, forbid_unknown_fields=True):
    date: date | None = None
    from_: date | None = msgspec.field(default=None, name="from")
    to: date | None = None
    appointment_type: TypeName | None = None


class AppointmentFilters(msgspec.Struct, forbid_unknown_fields=True):
    status: list[Status] | None = None
    date_from: str | None = None   # YYYY-MM-DD (from its start, UTC) or an ISO datetime with offset
    date_to: str | None = None     # YYYY-MM-DD (to its end, UTC) or an ISO datetime with offset
    dentist_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    offset: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Booking:
    pool: asyncpg.Pool
    directory: Directory[DentistActor]
    catalog: Catalog
    settings: Settings

    # ---- helpers -------------------------------------------------------

    async def dentist_user(self, dentist_id: uuid.UUID) -> uuid.UUID | None:
        """The dentist's login; NOT_FOUND for an unknown dentist."""
        row = await self.pool.fetchrow("SELECT user_id FROM public.dentists WHERE id = $1", dentist_id)
        if row is None:
            raise errors.not_found("dentist", dentist_id)
        return row["user_id"]

    async def sync_live(self) -> None:
        """After a write outside the actors that changed every dentist (a clinic
        closure): bring this process's live actors up to date before answering,
        so the caller's next read sees it. The NOTIFY that does the same may
        arrive a moment after the answer, and still tells the other processes;
        so an actor that cannot catch up now (stopping, crash-looping) does not
        turn the committed write into an error."""
        live = [actor.dentist_id for actor in self.directory.actors()]
        rows = await self.pool.fetch("SELECT id, version FROM public.dentists WHERE id = ANY($1)", live)
        await asyncio.gather(*(self.directory.ask(str(r["id"]), m.CatchUp(version=r["version"])) for r in rows),
                             return_exceptions=True)

    async def is_staff_for(self, who: Principal, dentist_id: uuid.UUID) -> bool:
        """Admins, and the dentist themselves, manage a dentist's schedule and appointments."""
        return policy.allowed(who, "manage", policy.Dentist(await self.dentist_user(dentist_id)))

    async def appointment(self, who: Principal, appointment_id: uuid.UUID) -> tuple[dict[str, Any], bool]:
        """The appointment with its documents, if the caller may see it; and
        whether the caller is staff for it. NOT_FOUND hides others' records.
        Read under the caller's claims: RLS hides them too."""
        async with db.as_caller(self.pool, who) as con:
            row = await con.fetchrow(
                f"SELECT {_APPOINTMENT}, d.user_id AS dentist_user_id, "
                "coalesce((SELECT jsonb_agg(to_jsonb(doc) ORDER BY doc.created_at) FROM public.appointment_documents doc "
                "WHERE doc.appointment_id = a.id), '[]') AS documents "
                "FROM public.appointments a JOIN public.dentists d ON d.id = a.dentist_id WHERE a.id = $1",
                appointment_id)
        if row is None:
            raise errors.not_found("appointment", appointment_id)
        appt = dict(row)
        dentist_user = appt.pop("dentist_user_id")
        record = policy.Owned(appt["patient_id"], dentist_user)
        if not policy.allowed(who, "read", record):
            raise errors.not_found("appointment", appointment_id)
        return appt, policy.allowed(who, "manage", record)

    def idempotency(self, who: Principal, key: str | None, payload: bytes) -> m.Idempotency | None:
        if key is None:
            return None
        if not (1 <= len(key) <= IDEMPOTENCY_KEY_MAX and key.isascii() and key.isprintable()):
            raise errors.invalid(f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters",
                                 field="Idempotency-Key", location="header")
        user_key = str(who.user_id) if who.user_id and not who.is_service else f"service:{who.user_id or ''}"
        return m.Idempotency(user_key=user_key, key=key, request_hash=hashlib.sha256(payload).hexdigest())

    # ---- availability ----------------------------------------------------

    async def get_availability(self, who: Principal, dentist_id: uuid.UUID) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT available_times, date_overrides, timezone, slot_minutes, min_notice_minutes, horizon_days, version "
            "FROM public.dentists WHERE id = $1", dentist_id)
        if row is None:
            raise errors.not_found("dentist", dentist_id)
        out: dict[str, Any] = dict(row["available_times"])
        out.update(timezone=row["timezone"], slot_minutes=row["slot_minutes"], overrides=row["date_overrides"],
                   min_notice_minutes=row["min_notice_minutes"], horizon_days=row["horizon_days"],
                   version=row["version"], dentist_id=dentist_id)
        return out

    async def put_availability(self, who: Principal, dentist_id: uuid.UUID, body: AvailabilityDTO,
                               force: bool) -> dict[str, Any]:
        if not await self.is_staff_for(who, dentist_id):
            raise errors.forbidden("Only an admin or the dentist may change these hours")
        current = await self.get_availability(who, dentist_id)
        hours = {day: value for day in WEEKDAYS if (value := getattr(body, day)) is not None and value.strip()}
        result = await self.directory.ask(str(dentist_id), m.SetSchedule(
            available_times=hours, overrides=body.overrides if body.overrides is not None else current["overrides"],
            timezone=body.timezone or current["timezone"], slot_minutes=body.slot_minutes or current["slot_minutes"],
            force=force, claims=db.caller_claims(who)))
        out = await self.get_availability(who, dentist_id)
        out["conflicts"] = result["conflicts"]
        return out

    async def slots(self, who: Principal, dentist_id: uuid.UUID, q: SlotsQuery) -> list[dict[str, Any]]:
        first = q.date or q.from_
        last = q.date or q.to or first
        if first is None:
            raise errors.invalid("Give date=YYYY-MM-DD, or from and to", field="date", location="query")
        if q.date is not None and (q.from_ or q.to):
            raise errors.invalid("Give either date, or from and to", field="date", location="query")
        within_reach(first, "date" if q.date else "from", "query")
        within_reach(last, "date" if q.date else "to", "query")
        if last < first or (last - first).days >= MAX_SLOT_DAYS:
            raise errors.invalid(f"from..to must be a range of 1 to {MAX_SLOT_DAYS} days", field="to",
                                 location="query")
        kind = self.catalog.get(q.appointment_type) if q.appointment_type else None
        return await self.directory.ask(str(dentist_id), m.GetSlots(
            day_from=first, day_to=last, duration=kind.duration_minutes if kind else None,
            buffer=kind.buffer_minutes if kind else 0, viewer=None if who.is_service else who.user_id))

    # ---- holds -------------------------------------------------------------

    async def reserve(self, who: Principal, dentist_id: uuid.UUID, body: ReserveDTO,
                      idem: m.Idempotency | None = None) -> dict[str, Any]:
        within_reach(body.slot_time, "slot_time")
        patient = acting_patient(who, body.patient_id)
        if body.patient_id is not None:
            await self._known_patient(patient)
        return await self.directory.ask(str(dentist_id), m.Hold(
            patient_id=patient, start=body.slot_time, appointment_type=body.appointment_type,
            created_by=who.user_id, idempotency=idem, claims=db.caller_claims(who)))

    async def _hold_target(self, who: Principal, hold_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID | None]:
        """The hold's dentist, and the patient the caller must be (None for staff).
        Read under the caller's claims: RLS hides others' holds too."""
        async with db.as_caller(self.pool, who) as con:
            row = await con.fetchrow("SELECT dentist_id, patient_id FROM public.slot_reservations WHERE id = $1",
                                     hold_id)
        if row is None:
            raise errors.not_found("reservation", hold_id)
        if who.is_service or await self.is_staff_for(who, row["dentist_id"]):  # acts as the clinic
            return row["dentist_id"], None
        require_user(who)
        if not policy.allowed(who, "read", policy.Owned(row["patient_id"])):
            raise errors.not_found("reservation", hold_id)
        return row["dentist_id"], row["patient_id"]

    async def extend(self, who: Principal, hold_id: uuid.UUID) -> dict[str, Any]:
        dentist_id, patient = await self._hold_target(who, hold_id)
        return await self.directory.ask(str(dentist_id), m.ExtendHold(hold_id=hold_id, patient_id=patient,
                                                                      claims=db.caller_claims(who)))

    async def release(self, who: Principal, hold_id: uuid.UUID) -> None:
        dentist_id, patient = await self._hold_target(who, hold_id)
        await self.directory.ask(str(dentist_id), m.ReleaseHold(hold_id=hold_id, patient_id=patient,
                                                                claims=db.caller_claims(who)))

    # ---- appointments --------------------------------------------------------

    async def _known_patient(self, patient: uuid.UUID) -> None:
        if not await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM auth.users WHERE id = $1)", patient):
            raise errors.not_found("patient", patient)

    async def book(self, who: Principal, body: CreateAppointmentDTO,
                   idem: m.Idempotency | None = None) -> dict[str, Any]:
        within_reach(body.appointment_date, "appointment_date")
        patient = acting_patient(who, body.patient_id)
        if body.patient_id is not None:
            await self._known_patient(patient)
        return await self.directory.ask(str(body.dentist_id), m.Book(
            patient_id=patient, start=body.appointment_date, appointment_type=body.appointment_type,
            notes=body.notes, patient_notes=body.patient_notes, medical_history=body.medical_history,
            reservation_id=body.reservation_id, created_by=who.user_id, idempotency=idem,
            claims=db.caller_claims(who), capped=not policy.acts_for_anyone(who)))

    async def update(self, who: Principal, appointment_id: uuid.UUID, body: UpdateAppointmentDTO) -> dict[str, Any]:
        if body.appointment_date is not None:
            within_reach(body.appointment_date, "appointment_date")
        appt, staff = await self.appointment(who, appointment_id)
        if not staff and body.notes is not UNSET:
            raise errors.forbidden("Only staff may change the clinic's notes")
        return await self.directory.ask(str(appt["dentist_id"]), m.ChangeAppointment(
            appointment_id=appointment_id, by=who.user_id, staff=staff, status=body.status,
            start=body.appointment_date, appointment_type=body.appointment_type,
            notes=None if body.notes is UNSET else body.notes, notes_set=body.notes is not UNSET,
            reason=body.cancellation_reason, claims=db.caller_claims(who)))

    async def cancel(self, who: Principal, appointment_id: uuid.UUID, reason: str | None) -> dict[str, Any]:
        return await self.update(who, appointment_id, UpdateAppointmentDTO(status="cancelled",
                                                                           cancellation_reason=reason))

    async def list_appointments(self, who: Principal, f: AppointmentFilters) -> dict[str, Any]:
        where, args = ["true"], []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        scope = policy.list_scope(who, f.patient_id)
        if scope is None:
            raise errors.invalid("The service role lists appointments of one patient: pass patient_id",
                                 field="patient_id", location="query")
        if scope.patient is not None:
            mine = f"a.patient_id = {arg(scope.patient)}"
            if scope.dentist_user is not None:
                mine = f"({mine} OR d.user_id = {arg(scope.dentist_user)})"
            where.append(mine)
        if f.patient_id and f.patient_id != scope.patient:
            where.append(f"a.patient_id = {arg(f.patient_id)}")
        if f.dentist_id:
            where.append(f"a.dentist_id = {arg(f.dentist_id)}")
        if f.status:
            where.append(f"a.status::text = ANY({arg(list(f.status))}::text[])")
        if f.date_from is not None:
            where.append(f"a.appointment_date >= {arg(_bound(f.date_from, 'date_from', end=False))}")
        if f.date_to is not None:
            where.append(f"a.appointment_date < {arg(_bound(f.date_to, 'date_to', end=True))}")
        clause = " AND ".join(where)
        async with db.as_caller(self.pool, who) as con:  # RLS bounds the list whatever `where` says
            rows = await con.fetch(
                f"SELECT {_APPOINTMENT}, count(*) OVER () AS total FROM public.appointments a "
                f"JOIN public.dentists d ON d.id = a.dentist_id WHERE {clause} "
                f"ORDER BY a.appointment_date, a.id LIMIT {arg(f.limit)} OFFSET {arg(f.offset)}", *args)
            total = rows[0]["total"] if rows else await con.fetchval(
                f"SELECT count(*) FROM public.appointments a JOIN public.dentists d ON d.id = a.dentist_id "
                f"WHERE {clause}", *args[:-2])
        data = [{k: v for k, v in r.items() if k != "total"} for r in rows]
        return {"data": data, "pagination": {"total": total, "limit": f.limit, "offset": f.offset,
                                             "hasMore": f.offset + len(data) < total}}


def within_reach(value: date | datetime, field: str, location: str = "body") -> None:
    """VALIDATION_ERROR for a date too far from today to mean anything (9999-12-31)."""
    day = value.date() if isinstance(value, datetime) else value  # its own calendar's date: a day either way is moot
    if abs((day - date.today()).days) > MAX_REACH_DAYS:
        raise errors.invalid(f"{field} must be within {MAX_REACH_DAYS} days of today", field=field, location=location)


def _bound(value: str, field: str, *, end: bool) -> datetime:
    """A date filter: a datetime with offset as given, or a whole UTC day
    (its start for date_from, the next day's start for date_to)."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1 if end else 0)
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if instant.tzinfo is not None:
            return instant.astimezone(timezone.utc) + timedelta(microseconds=1 if end else 0)
    except OverflowError:  # past the first or last representable instant: no bound at all
        return (datetime.max if end else datetime.min).replace(tzinfo=timezone.utc)
    except ValueError:
        pass
    raise errors.invalid(f"{field} must be YYYY-MM-DD or an ISO datetime with a time zone", field=field,
                         location="query")
