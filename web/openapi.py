"""GET /openapi.json, generated from the msgspec structs the controllers decode
and the structs describing what they answer (web/answers.py). schemathesis
checks the hub against it (tests/test_openapi.py), so this cannot drift from
the code quietly."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiohttp import web

from hub.rows import Dentist, SlotReservation
from services.booking import (AppointmentFilters, AvailabilityDTO, CancelDTO, CreateAppointmentDTO, ReserveDTO, SlotsQuery,
                              UpdateAppointmentDTO)
from services.waitlist import WaitlistDTO, WaitlistFilters
from web import calendar, webhooks
from web.answers import (Appointment, AppointmentBook, AppointmentPage, AppointmentType, Availability, ClosureOut,
                         ErrorResponse, Health, Notification, NotificationPage, PatientPage, PatientPanel, Profile, Roles,
                         TimeSlot, WaitlistEntry)
from web.book import BookQuery
from web.clinic import AppointmentTypeDTO, Closure
from web.notifications import Page
from web.patients import NewPatient, PatientSearch
from web.profiles import CreateDentist, SetRoles, UpdateDentist, UpdateProfile

routes = web.RouteTableDef()


# (method, path, summary, query struct, body struct, success status, response type)
OPERATIONS: list[tuple[str, str, str, Any, Any, int, Any]] = [
    ("get", "/health", "Health of the database, realtime listener and actors", None, None, 200, Health),
    ("get", "/api/profiles/me", "The caller's profile (created on first use)", None, None, 200, Profile),
    ("put", "/api/profiles/me", "Update the caller's profile", None, UpdateProfile, 200, Profile),
    ("get", "/api/profiles/dentists", "The clinic's dentists", None, None, 200, list[Dentist]),
    ("post", "/api/dentists", "Create a dentist (admin)", None, CreateDentist, 201, Dentist),
    ("put", "/api/dentists/{id}", "Update a dentist (admin)", None, UpdateDentist, 200, Dentist),
    ("put", "/api/users/{id}/roles", "Replace a user's roles (admin)", None, SetRoles, 200, Roles),
    ("get", "/api/availability/{dentist_id}", "Weekly hours, time zone, slot length, overrides", None, None, 200,
     Availability),
    ("put", "/api/availability/{dentist_id}", "Change hours (admin or the dentist; ?force=true keeps conflicts)",
     None, AvailabilityDTO, 200, Availability),
    ("get", "/api/availability/{dentist_id}/slots", "Free and busy slots for a date or range", SlotsQuery, None, 200,
     list[TimeSlot]),
    ("post", "/api/availability/{dentist_id}/reservations", "Hold a slot (Idempotency-Key honoured)", None,
     ReserveDTO, 201, SlotReservation),
    ("post", "/api/reservations/{id}/extend", "Extend a hold", None, None, 200, SlotReservation),
    ("delete", "/api/reservations/{id}", "Release a hold", None, None, 204, None),
    ("get", "/api/appointments", "Appointments the caller may see", AppointmentFilters, None, 200, AppointmentPage),
    ("post", "/api/appointments", "Book (Idempotency-Key honoured)", None, CreateAppointmentDTO, 201, Appointment),
    ("get", "/api/appointments/{id}", "One appointment with its documents", None, None, 200, Appointment),
    ("put", "/api/appointments/{id}", "Reschedule, change type or notes, or change status", None,
     UpdateAppointmentDTO, 200, Appointment),
    ("delete", "/api/appointments/{id}", "Cancel", None, CancelDTO, 200, Appointment),
    ("get", "/api/notifications", "The caller's notifications, unread first", Page, None, 200, NotificationPage),
    ("post", "/api/notifications/{id}/read", "Mark a notification read", None, None, 200, Notification),
    ("get", "/api/clinic/closures", "Clinic-wide closed days", None, None, 200, list[ClosureOut]),
    ("put", "/api/clinic/closures/{day}", "Close the clinic on a day (admin)", None, Closure, 200, ClosureOut),
    ("delete", "/api/clinic/closures/{day}", "Reopen a day (admin)", None, None, 204, None),
    ("get", "/api/appointment-types", "Appointment types and durations", None, None, 200, list[AppointmentType]),
    ("put", "/api/appointment-types/{name}", "Create or change an appointment type (admin)", None,
     AppointmentTypeDTO, 200, AppointmentType),
    ("post", "/api/waitlist", "Join the waitlist (a patient, or the service role or an admin for one)", None,
     WaitlistDTO, 201, WaitlistEntry),
    ("get", "/api/waitlist", "The caller's waitlist entries with their open offers", WaitlistFilters, None, 200,
     list[WaitlistEntry]),
    ("delete", "/api/waitlist/{id}", "Leave the waitlist (an open offer goes to the next in line)", None, None, 204,
     None),
    ("post", "/api/waitlist/{id}/decline", "Decline the open offer; stay on the waitlist", None, None, 200,
     WaitlistEntry),
    ("get", "/api/admin/book", "The appointment book: a day of every dentist, or one dentist's week (staff)",
     BookQuery, None, 200, AppointmentBook),
    ("get", "/api/patients", "Find patients by name, email or phone (staff)", PatientSearch, None, 200, PatientPage),
    ("post", "/api/patients", "Register a patient at the desk (staff)", None, NewPatient, 201, Profile),
    ("get", "/api/patients/{id}", "A patient's profile, visits and documents (staff)", None, None, 200, PatientPanel),
]
# OpenAPI links: where an answer's ids lead, so stateful tests (schemathesis)
# chain create dentist -> slots -> hold -> book -> reschedule -> cancel.
# (source method, path) -> link name -> (target method, path, parameters, request body)
_RESERVE = "/api/availability/{dentist_id}/reservations"
_BOOK, _APPOINTMENT = "/api/appointments", "/api/appointments/{id}"
_NEW_ID, _SAME_ID = {"id": "$response.body#/id"}, {"id": "$request.path.id"}
_DENTIST = {"dentist_id": "$response.body#/id"}
LINKS: dict[tuple[str, str], dict[str, tuple[str, str, dict[str, str], dict[str, str] | None]]] = {
    ("post", "/api/dentists"): {
        "Hours": ("get", "/api/availability/{dentist_id}", _DENTIST, None),
        "ChangeHours": ("put", "/api/availability/{dentist_id}", _DENTIST, None),
        "Slots": ("get", "/api/availability/{dentist_id}/slots", _DENTIST, None),
        "Hold": ("post", _RESERVE, _DENTIST, None),
        "Book": ("post", _BOOK, {}, {"dentist_id": "$response.body#/id"}),
        "Change": ("put", "/api/dentists/{id}", _NEW_ID, None),
    },
    ("get", "/api/availability/{dentist_id}/slots"): {
        "HoldFirst": ("post", _RESERVE, {"dentist_id": "$request.path.dentist_id"},
                      {"slot_time": "$response.body#/0/start"}),
        "BookFirst": ("post", _BOOK, {}, {"dentist_id": "$request.path.dentist_id",
                                          "appointment_date": "$response.body#/0/start"}),
    },
    ("post", _RESERVE): {
        "Extend": ("post", "/api/reservations/{id}/extend", _NEW_ID, None),
        "Release": ("delete", "/api/reservations/{id}", _NEW_ID, None),
        "BookHeld": ("post", _BOOK, {}, {"dentist_id": "$response.body#/dentist_id",
                                         "appointment_date": "$response.body#/slot_time",
                                         "reservation_id": "$response.body#/id"}),
    },
    ("post", _BOOK): {
        "Get": ("get", _APPOINTMENT, _NEW_ID, None),
        "Reschedule": ("put", _APPOINTMENT, _NEW_ID, None),
        "Cancel": ("delete", _APPOINTMENT, _NEW_ID, None),
    },
    ("put", _APPOINTMENT): {
        "Get": ("get", _APPOINTMENT, _SAME_ID, None),
        "Cancel": ("delete", _APPOINTMENT, _SAME_ID, None),
    },
}


def operation_id(method: str, path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{method} {path}").strip("_")


def _links(method: str, path: str) -> dict[str, Any]:
    out = {}
    for name, (target_method, target_path, parameters, body) in LINKS.get((method, path), {}).items():
        link: dict[str, Any] = {"operationId": operation_id(target_method, target_path), "parameters": parameters}
        if body is not None:
            link["requestBody"] = body
        out[name] = link
    return out


OPERATIONS += webhooks.API + calendar.API


_ERRORS = {"400": "Invalid input (details.field names it)", "401": "Missing or bad token",
           "403": "Not allowed for this caller", "404": "Not found", "409": "Conflict with the current state",
           "413": "Body too large", "429": "Too many requests", "503": "Retry shortly"}
_PATH_PARAMS = {"id": {"type": "string", "format": "uuid"}, "dentist_id": {"type": "string", "format": "uuid"},
                "day": {"type": "string", "format": "date"},
                "delivery_id": {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999},
                "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,39}$"}}


def _parameters(path: str, query: Any, components: dict[str, Any]) -> list[dict[str, Any]]:
    params = [{"name": name, "in": "path", "required": True, "schema": schema}
              for name, schema in _PATH_PARAMS.items() if "{" + name + "}" in path]
    if query is not None:
        properties = components[query.__name__]["properties"]
        for field in msgspec.structs.fields(query):
            param = {"name": field.encode_name, "in": "query", "required": False,
                     "schema": properties[field.encode_name]}
            if field.name == "status":
                param.update(style="form", explode=False)  # status=pending,confirmed
            params.append(param)
    return params


def build() -> dict[str, Any]:
    """The OpenAPI 3.1 document; every schema comes from a msgspec struct."""
    answers = [op[6] for op in OPERATIONS if op[6] is not None]
    inputs = [t for op in OPERATIONS for t in (op[3], op[4]) if t is not None]
    schemas, components = msgspec.json.schema_components(answers + inputs + [ErrorResponse],
                                                         ref_template="#/components/schemas/{name}")
    answer_schema = dict(zip(map(id, answers), schemas))
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    paths: dict[str, Any] = {}
    for method, path, summary, query, body, status, answer in OPERATIONS:
        operation: dict[str, Any] = {"summary": summary, "parameters": _parameters(path, query, components),
                                     "responses": {code: {"description": text, **error}
                                                   for code, text in _ERRORS.items()}}
        operation["responses"][str(status)] = {"description": "Done"} if answer is None else {
            "description": "OK", "content": {"application/json": {"schema": answer_schema[id(answer)]}}}
        operation["operationId"] = operation_id(method, path)
        if links := _links(method, path):
            operation["responses"][str(status)]["links"] = links
        if body is not None:
            operation["requestBody"] = {"required": method != "delete", "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{body.__name__}"}}}}
        if path == "/health":
            operation["security"] = []
            operation["responses"]["503"] = {"description": "Unhealthy", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Health"}}}}
        if method == "put" and path == "/api/availability/{dentist_id}":
            operation["parameters"].append({"name": "force", "in": "query", "required": False,
                                            "schema": {"type": "boolean"}})
        if method == "post" and path in ("/api/appointments", "/api/availability/{dentist_id}/reservations"):
            operation["parameters"].append({"name": "Idempotency-Key", "in": "header", "required": False,
                                            "schema": {"type": "string", "minLength": 1, "maxLength": 200}})
        paths.setdefault(path, {})[method] = operation
    paths["/ical/{token}.ics"] = {"get": {
        "summary": "A calendar feed (RFC 5545); the token is the credential, no Authorization header",
        "security": [], "parameters": [{"name": "token", "in": "path", "required": True,
                                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{20,100}$"}}],
        "responses": {"200": {"description": "iCalendar", "content": {"text/calendar": {"schema": {"type": "string"}}}},
                      "404": {"description": "Unknown or revoked feed", **error}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Dental hub", "version": "0.1.0",
                 "description": "Realtime booking hub for dental clinics. Errors always use ErrorResponse. "
                                "The realtime socket is described in docs/REALTIME.md."},
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


_SPEC: bytes | None = None


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    global _SPEC
    if _SPEC is None:
        _SPEC = msgspec.json.encode(build())
    return web.Response(body=_SPEC, content_type="application/json")
