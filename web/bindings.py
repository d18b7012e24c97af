"""The index of postgres_changes subscribers, so an event costs per matching channel.

A binding with an `eq` filter (`dentist_id=eq.<id>`) is filed under
(table, column, value); an event looks up only the values its rows have, so
bindings that can never match it cost nothing. Bindings without a filter, or
with another operator (`lt`, `in`, ...), stay in a per-table set and are
tested one by one. The index only narrows the candidates: each
channel still decides exactly (Binding.matches), so it can never add a match.
"""

from __future__ import annotations

import collections
import re
from typing import TYPE_CHECKING, Any, Iterable

from hub import errors
from hub.events import Event
from web.channels import COLUMNS, Binding

if TYPE_CHECKING:
    from web.session import Channel

MAX_PER_SOCKET = 100  # postgres_changes bindings one socket may hold across its channels
_EQ = re.compile(r"^([a-z_]+)=eq\.(.*)$", re.S)
# `eq` on a boolean compares case-insensitively (channels._compare): those stay unindexed.
_UNINDEXED_TYPES = {"bool"}


def eq_key(binding: Binding) -> tuple[str, str] | None:
    """(column, value) of an indexable `eq` filter, else None."""
    match = _EQ.match(binding.filter) if binding.filter else None
    if match is None:
        return None
    column, value = match.groups()
    types = {c["name"]: c["type"] for c in COLUMNS.get(binding.table, [])}
    return None if types.get(column) in _UNINDEXED_TYPES else (column, value)


def check_cap(channels: Iterable[Channel], adding: int) -> None:
    """VALIDATION_ERROR when a join would take a socket past MAX_PER_SOCKET bindings."""
    held = sum(len(c.bindings) for c in channels)
    if held + adding > MAX_PER_SOCKET:
        raise errors.invalid(f"a socket may hold at most {MAX_PER_SOCKET} postgres_changes bindings "
                             f"({held} held, {adding} asked)", field="postgres_changes")


class BindingIndex:
    def __init__(self) -> None:
        self._eq: dict[tuple[str, str, str], set[Channel]] = collections.defaultdict(set)
        self._columns: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._scan: dict[str, collections.Counter[Channel]] = collections.defaultdict(collections.Counter)

    def add(self, channel: Channel) -> None:
        for binding in channel.bindings:
            key = eq_key(binding)
            if key is None:
                self._scan[binding.table][channel] += 1
            else:
                self._eq[(binding.table, *key)].add(channel)
                self._columns[binding.table][key[0]] += 1

    def remove(self, channel: Channel) -> None:
        for binding in channel.bindings:
            key = eq_key(binding)
            if key is None:
                _decrement(self._scan, binding.table, channel)
                continue
            subscribers = self._eq.get((binding.table, *key))
            if subscribers is not None:
                subscribers.discard(channel)
                if not subscribers:
                    del self._eq[(binding.table, *key)]
            _decrement(self._columns, binding.table, key[0])

    def candidates(self, event: Event) -> set[Channel]:
        """Channels that may have a binding matching `event` (a superset of those that do)."""
        table = event.table_name
        found: set[Channel] = set(self._scan.get(table, ()))
        columns = self._columns.get(table)
        if columns:
            for row in (event.new, event.old):
                if row is None:
                    continue
                for column in columns:
                    value = row.get(column)
                    if value is not None:
                        found |= self._eq.get((table, column, str(value)), set())
        return found

    def __len__(self) -> int:
        return sum(len(s) for s in self._eq.values()) + sum(len(c) for c in self._scan.values())


def _decrement(counters: dict[str, collections.Counter[Any]], table: str, key: Any) -> None:
    counter = counters.get(table)
    if counter is None:
        return
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
    if not counter:
        del counters[table]
