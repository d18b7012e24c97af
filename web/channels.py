"""Channels: what a topic means, who may join it, and what each event becomes on it.

The seed's channels are hub-owned (`appointments:dentist_id=`, `availability:dentist_id=`,
`appointments:patient_id=`, `notifications:user_id=`): the hub pushes each change as a
`broadcast` named after it. Any other topic is a plain Supabase channel for
client broadcast, presence and `postgres_changes`. Payloads are derived once per
event and encoded once per topic and serializer (the `cache` passed around).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import datetime
from typing import Any, Callable

from hub import errors
from hub.auth import Principal
from hub.events import Event

PREFIX = "realtime:"
_SEED = re.compile(r"^(appointments|availability|notifications):(dentist_id|patient_id|user_id)=(.+)$")
SEED_KINDS = {("appointments", "dentist_id"), ("availability", "dentist_id"), ("appointments", "patient_id"),
              ("notifications", "user_id")}

# Column types as Supabase reports them, so realtime-js converts values.
COLUMNS: dict[str, list[dict[str, str]]] = {
    "appointments": [{"name": n, "type": t} for n, t in (
        ("id", "uuid"), ("patient_id", "uuid"), ("dentist_id", "uuid"), ("appointment_date", "timestamptz"),
        ("duration_minutes", "int4"), ("buffer_minutes", "int4"), ("ends_at", "timestamptz"),
        ("appointment_type", "text"), ("status", "appointment_status"), ("notes", "text"),
        ("patient_notes", "text"), ("medical_history", "text"), ("created_by", "uuid"),
        ("cancelled_at", "timestamptz"), ("cancelled_by", "uuid"), ("cancellation_reason", "text"),
        ("created_at", "timestamptz"), ("updated_at", "timestamptz"))],
    "slot_reservations": [{"name": n, "type": t} for n, t in (
        ("id", "uuid"), ("dentist_id", "uuid"), ("patient_id", "uuid"), ("slot_time", "timestamptz"),
        ("duration_minutes", "int4"), ("appointment_type", "text"), ("expires_at", "timestamptz"),
        ("created_by", "uuid"), ("created_at", "timestamptz"))],
    "dentists": [{"name": n, "type": t} for n, t in (
        ("id", "uuid"), ("user_id", "uuid"), ("name", "text"), ("specialization", "text"),
        ("available_times", "jsonb"), ("date_overrides", "jsonb"), ("timezone", "text"),
        ("slot_minutes", "int4"), ("min_notice_minutes", "int4"), ("horizon_days", "int4"),
        ("created_at", "timestamptz"), ("updated_at", "timestamptz"))],
}
_OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "in")
_FILTER = re.compile(r"^([a-z_]+)=(eq|neq|lt|lte|gt|gte|in)\.(.*)$", re.S)


@dataclasses.dataclass(frozen=True, slots=True)
class Topic:
    name: str                     # as the client sent it (frames echo it exactly)
    kind: tuple[str, str] | None  # ("appointments", "dentist_id") for seed channels, None for plain ones
    key: uuid.UUID | None

    @property
    def canonical(self) -> str:
        return self.name[len(PREFIX):] if self.name.startswith(PREFIX) else self.name


def parse_topic(name: str) -> Topic:
    """Raises VALIDATION_ERROR for a malformed topic (a seed prefix with a bad id)."""
    if not name or len(name) > 200 or name == "phoenix":
        raise errors.invalid("topic must be 1 to 200 characters and not 'phoenix'", field="topic")
    bare = name[len(PREFIX):] if name.startswith(PREFIX) else name
    head = bare.split(":", 1)[0]
    if head not in ("appointments", "availability", "notifications"):
        if not bare:
            raise errors.invalid("topic is empty", field="topic")
        return Topic(name, None, None)
    match = _SEED.match(bare)
    if match is None or (match.group(1), match.group(2)) not in SEED_KINDS:
        raise errors.invalid(f"malformed topic {bare!r}; the hub's channels are appointments:dentist_id=<id>, "
                             "availability:dentist_id=<id>, appointments:patient_id=<id>, "
                             "notifications:user_id=<id>", field="topic")
    try:
        key = uuid.UUID(match.group(3))
    except ValueError:
        raise errors.invalid(f"malformed topic {bare!r}: {match.group(2)} must be a UUID", field="topic") from None
    return Topic(name, (match.group(1), match.group(2)), key)


@dataclasses.dataclass(frozen=True, slots=True)
class Viewer:
    """A channel's caller, with what decides which rows they may see."""

    principal: Principal
    dentists: frozenset[uuid.UUID]  # dentist ids this caller is the dentist of

    def sees_row(self, table: str, row: dict[str, Any] | None) -> bool:
        if row is None:
            return False
        p = self.principal
        if table == "dentists" or p.is_admin:
            return True
        if _uuid(row.get("dentist_id")) in self.dentists:
            return True
        if p.is_service:
            return p.user_id is not None and _uuid(row.get("created_by")) == p.user_id
        return p.user_id is not None and _uuid(row.get("patient_id")) == p.user_id

    def sees(self, event: Event) -> bool:
        return self.sees_row(event.table_name, event.new) or self.sees_row(event.table_name, event.old)


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(value) if value else None
    except (ValueError, TypeError, AttributeError):
        return None


def denied(topic: Topic, viewer: Viewer) -> str | None:
    """Why the caller may not join (or stay on) `topic`, or None.

    As on Supabase's public channels, any valid token may join and the rows
    decide what arrives: `appointments:dentist_id=` shows a patient only their
    own appointments (Viewer.sees), and a caller with no user yet (anon, e.g. a
    join sent before the app's `accessToken` resolved) is accepted everywhere
    and sees nothing private until a user's token arrives. A signed-in caller
    on a topic that names someone else is refused, or the channel is closed."""
    p = viewer.principal
    if p.user_id is None and not p.is_service:
        return None  # anon: sees no row of anyone's (Viewer.sees_row)
    if topic.kind == ("appointments", "patient_id"):
        if not (p.is_admin or p.is_service or p.user_id == topic.key):
            return "you may only follow your own appointments"
    elif topic.kind == ("notifications", "user_id"):
        if p.is_service or p.user_id != topic.key:
            return "you may only follow your own notifications"
    return None


# ---- postgres_changes bindings --------------------------------------------------

_binding_ids: dict[tuple[str, str, str, str], int] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class Binding:
    """One postgres_changes subscription. Ids are stable per spec across all
    sessions, so one encoded frame serves every subscriber with the same bindings."""

    id: int
    event: str
    schema: str
    table: str
    filter: str
    test: Callable[[dict[str, Any]], bool] | None

    def matches(self, event: Event) -> bool:
        if self.table != event.table_name or self.event not in ("*", event.event_type):
            return False
        if self.test is None:
            return True
        return any(row is not None and self.test(row) for row in (event.new, event.old))

    def reply(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "event": self.event, "schema": self.schema, "table": self.table}
        if self.filter:
            out["filter"] = self.filter
        return out


def _compare(op: str, actual: Any, wanted: str) -> bool:
    if actual is None:
        return False
    if op == "in":
        options = [v.strip().strip('"') for v in wanted.strip("()").split(",")]
        return str(actual) in options
    if op in ("eq", "neq"):
        same = str(actual).lower() == wanted.lower() if isinstance(actual, bool) else str(actual) == wanted
        return same if op == "eq" else not same
    left: Any
    right: Any
    if isinstance(actual, (int, float)) and not isinstance(actual, bool):
        try:
            left, right = actual, float(wanted)
        except ValueError:
            return False
    else:
        try:
            left, right = datetime.fromisoformat(str(actual)), datetime.fromisoformat(wanted)
        except ValueError:
            left, right = str(actual), wanted
        except TypeError:
            return False
    try:
        return {"lt": left < right, "lte": left <= right, "gt": left > right, "gte": left >= right}[op]
    except TypeError:  # naive vs aware datetimes
        return False


def parse_binding(spec: Any) -> Binding:
    """Raises VALIDATION_ERROR naming what is wrong with a postgres_changes binding."""
    if not isinstance(spec, dict):
        raise errors.invalid("postgres_changes bindings are objects {event, schema, table, filter?}",
                             field="postgres_changes")
    event = spec.get("event", "*")
    schema = spec.get("schema", "public")
    table = spec.get("table")
    filt = spec.get("filter") or ""
    if event not in ("*", "INSERT", "UPDATE", "DELETE"):
        raise errors.invalid(f"postgres_changes event must be *, INSERT, UPDATE or DELETE, not {event!r}",
                             field="postgres_changes.event")
    if schema != "public" or table not in COLUMNS:
        raise errors.invalid(f"postgres_changes is available on public.{', public.'.join(COLUMNS)}",
                             field="postgres_changes.table")
    test = None
    if filt:
        match = _FILTER.match(filt) if isinstance(filt, str) else None
        names = {c["name"] for c in COLUMNS[table]}
        if match is None or match.group(1) not in names:
            raise errors.invalid(f"filter must be column=op.value with op one of {', '.join(_OPS)} "
                                 f"on a column of {table}", field="postgres_changes.filter")
        column, op, wanted = match.groups()
        test = lambda row, c=column, o=op, w=wanted: _compare(o, row.get(c), w)  # noqa: E731
    key = (event, schema, table, filt)
    ident = _binding_ids.setdefault(key, len(_binding_ids) + 1)
    return Binding(ident, event, schema, table, filt, test)


# ---- what an event becomes ------------------------------------------------------

def _span(row: dict[str, Any] | None, start: str, minutes: str) -> dict[str, Any] | None:
    if row is None:
        return None
    begin = datetime.fromisoformat(row[start])
    from datetime import timedelta

    return {"start": begin, "end": begin + timedelta(minutes=row[minutes])}


def _active(row: dict[str, Any] | None) -> bool:
    return row is not None and row.get("status") != "cancelled"


def availability_changes(event: Event) -> list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]:
    """What an event means for free/busy slots, with no patient detail:
    (slot_held | slot_released | slot_booked | slot_freed | schedule_updated, new, old)."""
    new, old = event.new, event.old
    if event.table_name == "slot_reservations":
        held = None if new is None else {**_span(new, "slot_time", "duration_minutes"),  # type: ignore[dict-item]
                                         "expires_at": new["expires_at"]}
        if new is None:
            return [("slot_released", None, _span(old, "slot_time", "duration_minutes"))]
        return [("slot_held", held, _span(old, "slot_time", "duration_minutes"))]
    if event.table_name == "appointments":
        was, now = _active(old), _active(new)
        before = _span(old, "appointment_date", "duration_minutes") if was else None
        after = _span(new, "appointment_date", "duration_minutes") if now else None
        if before == after:
            return []  # a status or notes change that frees or takes nothing
        out = []
        if before is not None:
            out.append(("slot_freed", None, before))
        if after is not None:
            out.append(("slot_booked", after, None))
        return out
    if event.table_name == "dentists":
        # The seed's `{event: 'UPDATE', new: availability}`, beside the hub's own name for it.
        after, before = _schedule(new), _schedule(old)
        return [("schedule_updated", after, None), ("UPDATE", after, before)]
    if event.table_name == "clinic_closures":
        return [("schedule_updated", None if new is None else {}, None)]
    return []


_SCHEDULE = ("available_times", "date_overrides", "timezone", "slot_minutes", "min_notice_minutes", "horizon_days")


def _schedule(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A dentist's availability: hours, date overrides, time zone, slot length, notice and horizon."""
    if row is None:
        return None
    return {k: row.get(k) for k in _SCHEDULE if k in row}


def seed_payload(event: Event, name: str, new: Any, old: Any) -> dict[str, Any]:
    """The seed's `{event, new, old, schema, table}` plus dentist_id, version and
    commit_timestamp, wrapped as a Phoenix broadcast."""
    return {"type": "broadcast", "event": name, "payload": {
        "event": name, "schema": "public", "table": event.table_name, "new": new, "old": old,
        "dentist_id": event.dentist_id, "version": event.version, "commit_timestamp": event.created_at}}


def postgres_payload(event: Event, ids: list[int]) -> dict[str, Any]:
    """Supabase's postgres_changes shape."""
    return {"ids": ids, "data": {
        "schema": "public", "table": event.table_name, "commit_timestamp": event.created_at,
        "dentist_id": event.dentist_id, "version": event.version,
        "type": event.event_type, "record": event.new or {}, "old_record": event.old or {},
        "columns": COLUMNS.get(event.table_name, []), "errors": None}}
