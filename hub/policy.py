"""Who may do what: the one place that decides (caller, resource, action).

REST handlers, socket joins, every delivered event and the console ask here,
so a rule changes in one place. Pure logic, no I/O: the caller fetches what a
decision needs (a dentist's login, a row) and passes it in. PostgreSQL's
row-level security (sql/0008, sql/0012) stays underneath as the backstop.

The roles: an admin manages everything; a dentist manages their own schedule
and appointments; a patient sees and acts on their own rows only; the
service role (a trusted backend) acts on behalf of a patient it names; a
caller with no user (anon) sees nobody's rows.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from typing import Any, Literal

from hub import errors
from hub.auth import Principal, require_user
from hub.events import Event

TopicKind = tuple[str, str]  # ("appointments", "dentist_id") for the hub's channels


class View(enum.Enum):
    """What of an event a channel's caller receives."""
    FULL = "full"   # the row as stored
    SLOT = "slot"   # when time was taken or freed, nothing about whom
    NONE = "none"


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """A caller with what decides which rows they may see."""

    principal: Principal
    dentists: frozenset[uuid.UUID] = frozenset()  # dentist ids this caller's login is

    def sees_row(self, table: str, row: dict[str, Any] | None) -> bool:
        return sees_row(self, table, row)

    def sees(self, event: Event) -> bool:
        return sees_row(self, event.table_name, event.new) or sees_row(self, event.table_name, event.old)


# ---- resources ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Clinic:
    """The clinic's own tools: the console, the appointment book, patient records, the event log."""


@dataclasses.dataclass(frozen=True, slots=True)
class Dentist:
    """A dentist, by the login that is them (None: nobody's yet)."""
    user_id: uuid.UUID | None


@dataclasses.dataclass(frozen=True, slots=True)
class Owned:
    """A patient's record (appointment, hold, waitlist entry) at a dentist."""
    patient_id: uuid.UUID
    dentist_user_id: uuid.UUID | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """A changed row as an event carries it."""
    table: str
    row: dict[str, Any] | None


@dataclasses.dataclass(frozen=True, slots=True)
class Topic:
    kind: TopicKind | None  # None: a plain Supabase channel
    key: uuid.UUID | None = None


Resource = Clinic | Dentist | Owned | Row | Topic
Action = Literal["use", "manage", "read", "join"]


def allowed(caller: Caller | Principal, action: Action, resource: Resource) -> bool:
    """Whether `caller` may do `action` on `resource`; the table the tests check."""
    who = caller if isinstance(caller, Caller) else Caller(caller)
    p = who.principal
    match resource, action:
        case Clinic(), "use":
            return is_clinic_staff(p)
        case Dentist(user_id=user), "manage":
            return manages(p, user)
        case Owned(patient_id=patient, dentist_user_id=dentist), "read":
            return p.is_service or manages(p, dentist) or owns(p, patient)
        case Owned(patient_id=patient, dentist_user_id=dentist), "manage":
            return manages(p, dentist)
        case Row(table=table, row=row), "read":
            return sees_row(who, table, row)
        case Topic(kind=kind, key=key), "join":
            return join_denied(who, kind, key) is None
    return False


# ---- the rules ---------------------------------------------------------------------

def is_clinic_staff(p: Principal) -> bool:
    """Admins and dentists use the console, the appointment book and patient records."""
    return p.is_admin or p.has_role("dentist")


def manages(p: Principal, dentist_user: uuid.UUID | None) -> bool:
    """Admins, and the dentist themselves, manage a dentist's schedule and appointments."""
    return p.is_admin or (p.has_role("dentist") and p.user_id is not None and dentist_user == p.user_id)


def owns(p: Principal, patient: uuid.UUID | None) -> bool:
    """The patient themselves (a signed-in user, not the service role)."""
    return p.user_id is not None and not p.is_service and patient == p.user_id


def acts_for_anyone(p: Principal) -> bool:
    """The service role and admins act on behalf of a patient they name."""
    return p.is_service or p.is_admin


def acting_patient(p: Principal, patient_id: uuid.UUID | None) -> uuid.UUID:
    """Whose booking (hold, waitlist entry) this is: a patient acts for
    themselves; the service role and admins for the patient they name.
    Raises VALIDATION_ERROR, FORBIDDEN or UNAUTHORIZED."""
    if acts_for_anyone(p):
        if patient_id is None:
            if p.user_id is not None and not p.is_service:
                return p.user_id
            raise errors.invalid("patient_id is required when acting on behalf of a patient", field="patient_id")
        return patient_id
    user = require_user(p)
    if patient_id is not None and patient_id != user:
        raise errors.forbidden("Patients may only act for themselves")
    return user


@dataclasses.dataclass(frozen=True, slots=True)
class Scope:
    """Which patients' records a list may show: `patient` (None: everyone's),
    and with it, the records at the dentist whose login is `dentist_user`."""
    patient: uuid.UUID | None
    dentist_user: uuid.UUID | None = None


def list_scope(p: Principal, patient: uuid.UUID | None) -> Scope | None:
    """Whose records the caller may list, asked for `patient` (None: not named).
    None means the service role did not name the patient it acts for.
    Raises UNAUTHORIZED for a caller with no user (anon)."""
    if p.is_admin:
        return Scope(patient)
    if p.is_service:
        return None if patient is None else Scope(patient)
    me = require_user(p)
    return Scope(me, me if p.has_role("dentist") else None)


def sees_row(who: Caller, table: str, row: dict[str, Any] | None) -> bool:
    """Whether a changed row reaches this caller in full."""
    if row is None:
        return False
    p = who.principal
    if table == "dentists" or p.is_admin:
        return True
    if _uuid(row.get("dentist_id")) in who.dentists:
        return True
    if p.is_service:
        return p.user_id is not None and _uuid(row.get("created_by")) == p.user_id
    return p.user_id is not None and _uuid(row.get("patient_id")) == p.user_id


def fixed_view(kind: TopicKind | None) -> View | None:
    """What every event shows on a topic of `kind` whoever the caller is, or
    None when it depends on the caller and the row (then ask `view`). Asked
    once per channel, so fan-out makes no decision per frame where none is due."""
    return View.SLOT if kind == ("availability", "dentist_id") else None


def view(who: Caller, kind: TopicKind | None, event: Event) -> View:
    """What of `event` a caller receives on a topic of `kind` (None: their
    postgres_changes bindings). Availability shows everyone the time taken
    or freed; rows go in full only to those who may see them."""
    fixed = fixed_view(kind)
    if fixed is not None:
        return fixed
    if (kind is None or kind[0] == "appointments") and who.sees(event):
        return View.FULL
    return View.NONE


def receives_notification(who: Caller, user_id: uuid.UUID) -> bool:
    """A notification (and a waitlist offer) reaches only its own user's joins."""
    return who.principal.user_id == user_id


def join_denied(who: Caller, kind: TopicKind | None, key: uuid.UUID | None) -> str | None:
    """Why the caller may not join (or stay on) a topic, or None.

    As on Supabase's public channels, any valid token may join and the rows
    decide what arrives: `appointments:dentist_id=` shows a patient only their
    own appointments (`sees_row`), and a caller with no user yet (anon, e.g. a
    join sent before the app's `accessToken` resolved) is accepted everywhere
    and sees nothing private until a user's token arrives. A signed-in caller
    on a topic that names someone else is refused, or the channel is closed."""
    p = who.principal
    if p.user_id is None and not p.is_service:
        return None  # anon: sees no row of anyone's
    if kind == ("appointments", "patient_id"):
        if not (p.is_admin or p.is_service or p.user_id == key):
            return "you may only follow your own appointments"
    elif kind == ("notifications", "user_id"):
        if p.is_service or p.user_id != key:
            return "you may only follow your own notifications"
    return None


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(value) if value else None
    except (ValueError, TypeError, AttributeError):
        return None
