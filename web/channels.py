"""Channels: what a topic means, who may join it, and what each event becomes on it.

The seed's channels are hub-owned (`appointments:dentist_id=`, `availability:dentist_id=`,
`appointments:patient_id=`, `notifications:user_id=`): the hub pushes each change as a
`broadcast` named after it. Any other topic is a plain Supabase channel for
client broadcast, presence and `postgres_changes`. Payloads are derived once per
event and encoded once per topic and serializer (the `cache` passed around).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import uuid
from datetime import datetime
from typing import Any, Callable

import cachetools
import msgspec

from hub import errors, rows
from hub.events import Event

PREFIX = "realtime:"
_SEED = re.compile(r"^(appointments|availability|notifications):(dentist_id|patient_id|user_id)=(.+)$")
SEED_KINDS = {("appointments", "dentist_id"), ("availability", "dentist_id"), ("appointments", "patient_id"),
              ("notifications", "user_id")}

# Column types as Supabase reports them, so realtime-js converts values.
# (A dentist's version is the hub's own bookkeeping: not a column clients are told of.)
COLUMNS: dict[str, list[dict[str, str]]] = {
    "appointments": rows.realtime_columns(rows.Appointment),
    "slot_reservations": rows.realtime_columns(rows.SlotReservationRow),
    "dentists": rows.realtime_columns(rows.Dentist, omit=("version",)),
}
_COLUMN_NAMES = {table: frozenset(c["name"] for c in columns) for table, columns in COLUMNS.items()}
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


# ---- postgres_changes bindings --------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Binding:
    """One postgres_changes subscription. A spec known to this process has
    one Binding, so one id, in every session: one encoded frame serves every
    subscriber with the same bindings (`known_bindings`)."""

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


# Specs are the clients' choice, so the Bindings known by spec are bounded: past
# KNOWN_BINDINGS_SIZE (each counted as its filter's length plus _BINDING_COST)
# the least recently parsed are forgotten. A forgotten spec parsed again gets a
# new id; channels holding the old Binding keep it, so only frame sharing is lost.
KNOWN_BINDINGS_SIZE = 4 << 20
_BINDING_COST = 256
known_bindings: cachetools.LRUCache[tuple[str, str, str, str], Binding] = cachetools.LRUCache(
    KNOWN_BINDINGS_SIZE, getsizeof=lambda binding: _BINDING_COST + len(binding.filter))
_binding_ids = itertools.count(1)


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


class BindingSpec(msgspec.Struct, frozen=True, gc=False):
    """A postgres_changes binding as clients send it (other keys, such as
    realtime-py's `select`, are ignored); parse_binding checks its values."""
    event: str = "*"
    schema: str = "public"
    table: str = ""
    filter: str | None = None


def binding_refused(field: str | None, value: Any = None, table: Any = None) -> errors.HubError:
    """VALIDATION_ERROR for a binding whose `field` is wrong, in value or in type
    (`table`: the binding's, for a filter); None: the binding is not an object."""
    if field == "event":
        return errors.invalid(f"postgres_changes event must be *, INSERT, UPDATE or DELETE, not {value!r}",
                              field="postgres_changes.event")
    if field in ("schema", "table"):
        return errors.invalid(f"postgres_changes is available on public.{', public.'.join(COLUMNS)}",
                              field="postgres_changes.table")
    if field == "filter":
        return errors.invalid(f"filter must be column=op.value with op one of {', '.join(_OPS)} "
                              f"on a column of {table}", field="postgres_changes.filter")
    return errors.invalid("postgres_changes bindings are objects {event, schema, table, filter?}",
                          field="postgres_changes")


def parse_binding(spec: BindingSpec) -> Binding:
    """Raises VALIDATION_ERROR (binding_refused) naming what is wrong with a postgres_changes binding."""
    event, schema, table, filt = spec.event, spec.schema, spec.table, spec.filter or ""
    if event not in ("*", "INSERT", "UPDATE", "DELETE"):
        raise binding_refused("event", event)
    if schema != "public" or table not in COLUMNS:
        raise binding_refused("table")
    test = None
    if filt:
        match = _FILTER.match(filt)
        if match is None or match.group(1) not in _COLUMN_NAMES[table]:
            raise binding_refused("filter", table=table)
        column, op, wanted = match.groups()
        test = lambda row, c=column, o=op, w=wanted: _compare(o, row.get(c), w)  # noqa: E731
    key = (event, schema, table, filt)
    binding = known_bindings.get(key)
    if binding is None:
        binding = known_bindings[key] = Binding(next(_binding_ids), event, schema, table, filt, test)
    return binding


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
