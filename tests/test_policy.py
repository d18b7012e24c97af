"""hub/policy.py as a table: (caller, action, resource) -> allowed. Pure logic, no database."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from hub import policy
from hub.auth import Claims, Principal
from hub.errors import ErrorCode, HubError
from hub.events import Event
from hub.policy import Caller, Clinic, Dentist, Owned, Row, Topic, View

PATIENT, OTHER, DOC_USER, ADMIN_USER, SERVICE_USER = (uuid.uuid4() for _ in range(5))
DENTIST_ID, OTHER_DENTIST_ID = uuid.uuid4(), uuid.uuid4()


def who(sub: uuid.UUID | None, *roles: str, role: str = "authenticated") -> Principal:
    return Principal(Claims(sub=sub, role=role, exp=2**31), frozenset(roles))


patient = Caller(who(PATIENT, "patient"))
other = Caller(who(OTHER, "patient"))
dentist = Caller(who(DOC_USER, "dentist"), frozenset({DENTIST_ID}))
admin = Caller(who(ADMIN_USER, "admin"))
service = Caller(who(SERVICE_USER, role="service_role"))
anon = Caller(who(None, role="anon"))
# a dentist role held without being anyone's login, and a login whose role was taken away
stray_dentist = Caller(who(OTHER, "dentist"))
former_dentist = Caller(who(DOC_USER, "patient"))

appointment = {"id": str(uuid.uuid4()), "dentist_id": str(DENTIST_ID), "patient_id": str(PATIENT),
               "created_by": str(SERVICE_USER)}
elsewhere = {**appointment, "dentist_id": str(OTHER_DENTIST_ID), "created_by": str(PATIENT)}

TABLE = [
    # the console, the appointment book, patient records
    (admin, "use", Clinic(), True),
    (dentist, "use", Clinic(), True),
    (stray_dentist, "use", Clinic(), True),
    (patient, "use", Clinic(), False),
    (service, "use", Clinic(), False),
    (anon, "use", Clinic(), False),
    # a dentist's schedule and appointments
    (admin, "manage", Dentist(DOC_USER), True),
    (admin, "manage", Dentist(None), True),
    (dentist, "manage", Dentist(DOC_USER), True),
    (dentist, "manage", Dentist(OTHER), False),
    (dentist, "manage", Dentist(None), False),
    (former_dentist, "manage", Dentist(DOC_USER), False),
    (patient, "manage", Dentist(PATIENT), False),
    (service, "manage", Dentist(SERVICE_USER), False),
    (anon, "manage", Dentist(None), False),
    # a patient's record at a dentist (appointment, hold, waitlist entry)
    (patient, "read", Owned(PATIENT, DOC_USER), True),
    (other, "read", Owned(PATIENT, DOC_USER), False),
    (dentist, "read", Owned(PATIENT, DOC_USER), True),
    (dentist, "read", Owned(PATIENT, OTHER), False),
    (admin, "read", Owned(PATIENT), True),
    (service, "read", Owned(PATIENT), True),
    (anon, "read", Owned(PATIENT), False),
    (patient, "manage", Owned(PATIENT, DOC_USER), False),  # their own, but not as the clinic
    (dentist, "manage", Owned(PATIENT, DOC_USER), True),
    (service, "manage", Owned(PATIENT, DOC_USER), False),
    (admin, "manage", Owned(PATIENT, DOC_USER), True),
    # changed rows as events carry them
    (patient, "read", Row("appointments", appointment), True),
    (other, "read", Row("appointments", appointment), False),
    (dentist, "read", Row("appointments", appointment), True),
    (dentist, "read", Row("appointments", elsewhere), False),
    (admin, "read", Row("appointments", elsewhere), True),
    (service, "read", Row("appointments", appointment), True),   # it booked it
    (service, "read", Row("appointments", elsewhere), False),
    (anon, "read", Row("appointments", appointment), False),
    (anon, "read", Row("dentists", {"id": str(DENTIST_ID)}), True),
    (patient, "read", Row("appointments", None), False),
    (patient, "read", Row("appointments", {**appointment, "patient_id": "not-a-uuid"}), False),
    # topics
    (patient, "join", Topic(("appointments", "dentist_id"), DENTIST_ID), True),
    (patient, "join", Topic(("availability", "dentist_id"), DENTIST_ID), True),
    (patient, "join", Topic(("appointments", "patient_id"), PATIENT), True),
    (patient, "join", Topic(("appointments", "patient_id"), OTHER), False),
    (dentist, "join", Topic(("appointments", "patient_id"), PATIENT), False),
    (admin, "join", Topic(("appointments", "patient_id"), PATIENT), True),
    (service, "join", Topic(("appointments", "patient_id"), PATIENT), True),
    (patient, "join", Topic(("notifications", "user_id"), PATIENT), True),
    (patient, "join", Topic(("notifications", "user_id"), OTHER), False),
    (admin, "join", Topic(("notifications", "user_id"), PATIENT), False),
    (service, "join", Topic(("notifications", "user_id"), SERVICE_USER), False),
    (anon, "join", Topic(("notifications", "user_id"), PATIENT), True),  # sees nothing until signed in
    (other, "join", Topic(None), True),
    # an action a resource does not have
    (admin, "join", Clinic(), False),
    (admin, "use", Dentist(DOC_USER), False),
]


@pytest.mark.parametrize(("caller", "action", "resource", "expected"), TABLE)
def test_allowed(caller: Caller, action: policy.Action, resource: policy.Resource, expected: bool) -> None:
    assert policy.allowed(caller, action, resource) is expected


def test_a_bare_principal_is_a_caller_who_is_no_dentist() -> None:
    assert policy.allowed(who(PATIENT, "patient"), "read", Owned(PATIENT))
    assert not policy.allowed(who(DOC_USER, "dentist"), "read", Row("appointments", elsewhere))


def _event(table: str, new: dict | None, old: dict | None = None) -> Event:
    return Event(id=1, dentist_id=DENTIST_ID, version=1, event_type="INSERT" if old is None else "UPDATE",
                 table_name=table, record_id=uuid.uuid4(), payload={"new": new, "old": old},
                 created_at=datetime(2030, 1, 1, tzinfo=timezone.utc))


VIEWS = [
    # availability: everyone sees the time, nobody the patient
    (other, ("availability", "dentist_id"), _event("appointments", appointment), View.SLOT),
    (anon, ("availability", "dentist_id"), _event("appointments", appointment), View.SLOT),
    # appointments topics and postgres_changes bindings (None): the row to those who may see it
    (patient, ("appointments", "dentist_id"), _event("appointments", appointment), View.FULL),
    (other, ("appointments", "dentist_id"), _event("appointments", appointment), View.NONE),
    (dentist, ("appointments", "patient_id"), _event("appointments", appointment), View.FULL),
    (other, None, _event("appointments", appointment), View.NONE),
    (patient, None, _event("appointments", appointment), View.FULL),
    # a row that moved away from the caller: its old version was theirs
    (patient, None, _event("appointments", {**appointment, "patient_id": str(OTHER)}, appointment), View.FULL),
    (anon, None, _event("dentists", {"id": str(DENTIST_ID)}), View.FULL),
    # hub events never go out on notification topics
    (patient, ("notifications", "user_id"), _event("appointments", appointment), View.NONE),
]


@pytest.mark.parametrize(("caller", "kind", "event", "expected"), VIEWS)
def test_view(caller: Caller, kind: policy.TopicKind | None, event: Event, expected: View) -> None:
    assert policy.view(caller, kind, event) is expected


@pytest.mark.parametrize(("principal", "asked", "expected"), [
    (admin.principal, None, policy.Scope(None)),
    (admin.principal, PATIENT, policy.Scope(PATIENT)),
    (service.principal, PATIENT, policy.Scope(PATIENT)),
    (service.principal, None, None),
    (patient.principal, OTHER, policy.Scope(PATIENT)),
    (dentist.principal, None, policy.Scope(DOC_USER, DOC_USER)),
])
def test_list_scope(principal: Principal, asked: uuid.UUID | None, expected: policy.Scope | None) -> None:
    assert policy.list_scope(principal, asked) == expected


def test_list_scope_refuses_anon() -> None:
    with pytest.raises(HubError) as caught:
        policy.list_scope(anon.principal, None)
    assert caught.value.code == ErrorCode.UNAUTHORIZED


def test_notifications_reach_their_user_only() -> None:
    assert policy.receives_notification(patient, PATIENT)
    assert not policy.receives_notification(other, PATIENT)
    assert not policy.receives_notification(anon, PATIENT)
