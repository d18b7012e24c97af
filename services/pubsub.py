"""Local fan-out of committed events to this process's subscribers.

Actors publish each event once, in version order, after commit (their own
writes) or after catching up (others' writes, via the listener). Subscribers
must not block: they queue and return.
"""

from __future__ import annotations

import logging
from typing import Callable

from hub.events import Event

log = logging.getLogger("hub.pubsub")

Subscriber = Callable[[Event], None]


class PubSub:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Returns the function that unsubscribes."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def publish(self, events: list[Event]) -> None:
        for event in events:
            for subscriber in tuple(self._subscribers):
                try:
                    subscriber(event)
                except Exception:  # one broken subscriber must not starve the others
                    log.exception("subscriber failed on event %s/%s", event.dentist_id, event.version)
