"""The postgres_changes index: an event reaches every channel with a matching
binding (never fewer than a scan of all bindings finds), and costs nothing for
bindings whose eq filter names another value."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest

from hub.errors import HubError
from hub.events import Event
from tests.conftest import slot_at
from tests.test_realtime import base, book, connect, drain_until
from web import channels
from web.bindings import MAX_PER_SOCKET, BindingIndex, check_cap
from web.channels import Binding, BindingSpec, parse_binding


class FakeChannel:
    """What the index reads of a channel: its bindings (and identity)."""

    def __init__(self, *specs: dict[str, Any]) -> None:
        self.bindings: list[Binding] = [parse_binding(msgspec.convert(s, BindingSpec)) for s in specs]


_ids = itertools.count(1)


def event(table: str = "appointments", kind: str = "INSERT", **row: Any) -> Event:
    return Event(id=next(_ids), dentist_id=uuid.uuid4(), version=1, event_type=kind, table_name=table,
                 record_id=uuid.uuid4(), payload={"new": row or None, "old": None},
                 created_at=datetime.now(timezone.utc))


def matching(channels: list[FakeChannel], ev: Event) -> set[FakeChannel]:
    return {c for c in channels if any(b.matches(ev) for b in c.bindings)}


def test_an_eq_binding_is_found_only_by_its_value() -> None:
    d1, d2 = str(uuid.uuid4()), str(uuid.uuid4())
    mine = FakeChannel({"event": "*", "table": "appointments", "filter": f"dentist_id=eq.{d1}"})
    other = FakeChannel({"event": "*", "table": "appointments", "filter": f"dentist_id=eq.{d2}"})
    every = FakeChannel({"event": "INSERT", "table": "appointments"})
    ranged = FakeChannel({"event": "*", "table": "appointments", "filter": "duration_minutes=gt.20"})
    index = BindingIndex()
    for c in (mine, other, every, ranged):
        index.add(c)
    found = index.candidates(event(dentist_id=d1, duration_minutes=30))
    assert found == {mine, every, ranged}  # `other` is never looked at
    assert index.candidates(event(table="dentists", id=d1)) == set()
    for c in (mine, other, every, ranged):
        index.remove(c)
    assert len(index) == 0 and index.candidates(event(dentist_id=d1)) == set()


def test_candidates_never_miss_a_match_that_a_scan_finds() -> None:
    """Random bindings and events: the index's candidates include every channel
    whose bindings match (it may only narrow, never drop)."""
    rng = random.Random(13)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    tables = ["appointments", "slot_reservations"]

    def spec() -> dict[str, Any]:
        table = rng.choice(tables)
        filt = rng.choice([None, f"dentist_id=eq.{rng.choice(ids)}", f"patient_id=eq.{rng.choice(ids)}",
                           f"patient_id=neq.{rng.choice(ids)}", f"dentist_id=in.({ids[0]},{ids[1]})",
                           "duration_minutes=eq.30"])
        return {"event": rng.choice(["*", "INSERT", "UPDATE"]), "table": table, **({"filter": filt} if filt else {})}

    channels = [FakeChannel(*(spec() for _ in range(rng.randint(1, 4)))) for _ in range(200)]
    index = BindingIndex()
    for c in channels:
        index.add(c)
    for c in channels[:50]:  # leaving works too
        index.remove(c)
    live = channels[50:]
    for _ in range(300):
        ev = event(table=rng.choice(tables), kind=rng.choice(["INSERT", "UPDATE"]),
                   dentist_id=rng.choice(ids), patient_id=rng.choice(ids), duration_minutes=rng.choice([30, 45]))
        found = index.candidates(ev)
        assert matching(live, ev) <= found
        assert not found & set(channels[:50])


def test_a_socket_holds_a_bounded_number_of_bindings() -> None:
    spec = {"event": "*", "table": "appointments"}
    full = [FakeChannel(*[spec] * 20) for _ in range(MAX_PER_SOCKET // 20)]
    check_cap(full[:-1], 20)
    with pytest.raises(HubError) as refused:
        check_cap(full, 1)
    assert refused.value.details and refused.value.details["field"] == "postgres_changes"


def test_the_bindings_known_by_spec_are_bounded() -> None:
    """Every distinct spec a client sends would otherwise stay in memory: past
    the bound the least recently parsed are forgotten, and ids stay unique."""
    specs = [BindingSpec(event="*", table="appointments", filter=f"patient_id=eq.{uuid.uuid4()}")
             for _ in range(channels.KNOWN_BINDINGS_SIZE // channels._BINDING_COST + 100)]
    first = parse_binding(specs[0])
    bindings = [first] + [parse_binding(s) for s in specs[1:]]
    assert channels.known_bindings.currsize <= channels.KNOWN_BINDINGS_SIZE
    assert len(channels.known_bindings) < len(specs)
    assert len({b.id for b in bindings}) == len(specs)
    assert parse_binding(specs[-1]) is bindings[-1]  # a known spec keeps its id
    again = parse_binding(specs[0])  # forgotten: a new id, never one in use
    assert again.id not in {b.id for b in bindings} and again.filter == first.filter
    patient = specs[0].filter.split(".", 1)[1]
    assert first.matches(event(patient_id=patient)) and again.matches(event(patient_id=patient))
    assert not first.matches(event(patient_id=str(uuid.uuid4())))

    long = [BindingSpec(event="*", table="appointments", filter=f"patient_notes=eq.{i}{'x' * 60_000}")
            for i in range(channels.KNOWN_BINDINGS_SIZE // 60_000 + 10)]
    for spec in long:
        parse_binding(spec)
    assert channels.known_bindings.currsize <= channels.KNOWN_BINDINGS_SIZE  # the filters' text counts


async def test_many_distinct_filters_from_one_client_stay_bounded_and_correct(api, clinic) -> None:
    """A client joining with new, long filters cannot grow what the hub
    remembers by spec past the bound, and a channel whose spec was forgotten still
    gets its events under the id its join reply gave."""
    spec = {"event": "INSERT", "schema": "public", "table": "appointments",
            "filter": f"dentist_id=eq.{clinic.dentist_id}"}
    client = await connect(base(api), clinic.patient)
    try:
        kept = client.channel("realtime:kept", postgres_changes=[spec])
        kept_id = (await kept.join())["postgres_changes"][0]["id"]
        filler = 60_000
        for i in range(channels.KNOWN_BINDINGS_SIZE // filler + 10):
            await client.channel(f"realtime:flood-{i}", postgres_changes=[
                {"event": "*", "table": "appointments", "filter": f"patient_notes=eq.{i}{'x' * filler}"}]).join()
        assert channels.known_bindings.currsize <= channels.KNOWN_BINDINGS_SIZE
        assert (spec["event"], spec["schema"], spec["table"], spec["filter"]) not in channels.known_bindings

        fresh = client.channel("realtime:fresh", postgres_changes=[spec])
        fresh_id = (await fresh.join())["postgres_changes"][0]["id"]
        assert fresh_id != kept_id
        mine = await book(api, clinic.patient, clinic, slot_at(days=12, hour=10))
        for channel, ident in ((kept, kept_id), (fresh, fresh_id)):
            got = await drain_until(channel, "postgres_changes")
            assert got.payload["ids"] == [ident] and got.payload["data"]["record"]["id"] == mine["id"]
    finally:
        await client.close()
