"""What REST answers, as msgspec structs: the response schemas of
/openapi.json (web/openapi.py lists which operation answers which). The
controllers encode rows and dicts of these shapes; schemathesis
(tests/test_openapi.py) checks every answer against them."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

import msgspec

from hub import rows
from hub.errors import ErrorCode
from services.booking import Status, WeeklyHours


class ErrorBody(msgspec.Struct):
    code: ErrorCode
    message: str
    timestamp: str
    details: dict[str, Any] | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class Profile(msgspec.Struct):
    id: uuid.UUID
    email: str | None
    full_name: str | None
    phone: str | None
    date_of_birth: date | None
    roles: list[str]
    created_at: datetime
    updated_at: datetime


class Roles(msgspec.Struct):
    user_id: uuid.UUID
    roles: list[str]


class Availability(WeeklyHours, kw_only=True):
    dentist_id: uuid.UUID
    timezone: str
    slot_minutes: int
    overrides: dict[str, str]
    min_notice_minutes: int
    horizon_days: int
    version: int
    conflicts: list[dict[str, Any]] | None = None


class TimeSlot(msgspec.Struct):
    start: datetime
    end: datetime
    available: bool
    status: Literal["free", "busy", "busy-tentative", "busy-unavailable"]
    dentist_id: uuid.UUID


class Document(msgspec.Struct):
    id: uuid.UUID
    appointment_id: uuid.UUID
    file_name: str
    file_url: str
    file_type: str
    file_size: int
    uploaded_by: uuid.UUID
    created_at: datetime


class Appointment(rows.Appointment):
    documents: list[Document] | None = None


class Pagination(msgspec.Struct):
    total: int
    limit: int
    offset: int
    hasMore: bool


class AppointmentPage(msgspec.Struct):
    data: list[Appointment]
    pagination: Pagination


class Notification(msgspec.Struct):
    id: uuid.UUID
    kind: str
    title: str
    body: str
    data: dict[str, Any]
    read_at: datetime | None
    created_at: datetime


class NotificationPage(msgspec.Struct):
    data: list[Notification]
    pagination: Pagination


class ClosureOut(msgspec.Struct):
    day: date
    reason: str


class AppointmentType(msgspec.Struct):
    name: str
    duration_minutes: int
    buffer_minutes: int


class WaitlistOffer(msgspec.Struct):
    """A slot held for the patient until expires_at; book it with reservation_id to accept."""
    reservation_id: uuid.UUID
    dentist_id: uuid.UUID
    slot_time: datetime
    expires_at: datetime
    appointment_type: str


class WaitlistEntry(msgspec.Struct):
    id: uuid.UUID
    patient_id: uuid.UUID
    patient_name: str | None
    dentist_id: uuid.UUID | None
    appointment_type: str
    earliest_date: date
    latest_date: date
    weekdays: list[str] | None
    time_ranges: list[str] | None
    status: Literal["waiting", "booked"]
    appointment_id: uuid.UUID | None
    created_at: datetime
    offer: WaitlistOffer | None


class BookEntry(msgspec.Struct):
    id: uuid.UUID
    dentist_id: uuid.UUID
    patient_id: uuid.UUID
    patient_name: str | None
    start: datetime
    end: datetime
    appointment_type: str | None


class BookAppointment(BookEntry):
    patient_phone: str | None
    buffer_minutes: int
    status: Status
    notes: str | None
    patient_notes: str | None


class BookHold(BookEntry):
    expires_at: datetime
    waitlist_offer: bool  # the hold is a waitlist offer waiting for the patient's answer


class Interval(msgspec.Struct):
    start: datetime
    end: datetime


class DayNote(msgspec.Struct):
    date: date
    kind: Literal["closure", "override"]
    text: str


class BookColumn(msgspec.Struct):
    dentist_id: uuid.UUID
    name: str
    timezone: str
    slot_minutes: int
    working: list[Interval]
    notes: list[DayNote]
    appointments: list[BookAppointment]
    holds: list[BookHold]
    free: list[datetime]


class BookDay(msgspec.Struct):
    date: date
    start: datetime
    end: datetime


class AppointmentBook(msgspec.Struct):
    timezone: str
    view: Literal["day", "week"]
    now: datetime
    days: list[BookDay]
    dentists: list[BookColumn]


class PatientSummary(msgspec.Struct):
    id: uuid.UUID
    full_name: str | None
    email: str | None
    phone: str | None
    date_of_birth: date | None


class PatientPage(msgspec.Struct):
    data: list[PatientSummary]
    pagination: Pagination


class Visit(msgspec.Struct):
    id: uuid.UUID
    dentist_id: uuid.UUID
    dentist_name: str
    appointment_date: datetime
    ends_at: datetime
    appointment_type: str
    status: Status
    notes: str | None
    patient_notes: str | None
    cancellation_reason: str | None
    documents: list[dict[str, Any]]


class PatientPanel(Profile):
    upcoming: list[Visit]
    past: list[Visit]
    documents: list[dict[str, Any]]


class Health(msgspec.Struct):
    status: Literal["healthy", "unhealthy"]
    timestamp: str
    checks: dict[str, dict[str, Any]]
