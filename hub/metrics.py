"""Prometheus metrics, named hub_<subsystem>_<name>_<unit>.

Labels are bounded sets (route templates, message types, close codes,
statuses): never a dentist, user or session id.
"""

from __future__ import annotations

import gc
import time
from datetime import datetime
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from hub.events import Event

FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

HTTP_DURATION = Histogram("hub_http_request_duration_seconds", "HTTP request duration by route template and status",
                          ["method", "route", "status"], buckets=FAST)
HTTP_ERRORS = Counter("hub_http_errors_total", "HTTP responses with an error body, by route template and code",
                      ["route", "code"])
DB_QUERY = Histogram("hub_db_query_duration_seconds", "Duration of each database query", buckets=FAST)
DB_SLOW = Counter("hub_db_slow_queries_total", "Queries slower than 100 ms")
DB_WRITE_BATCH = Histogram("hub_db_write_batch_size", "Actor writes committed together (actors/batch.py)",
                           buckets=(1, 2, 4, 8, 16, 32))
DB_POOL = Gauge("hub_db_pool_connections", "Connections of the pool by state", ["state"])
ACTORS = Gauge("hub_actor_active", "Dentist actors active in this process")
ACTOR_TURN = Histogram("hub_actor_turn_seconds", "Time an actor spends on one message, by message type",
                       ["message"], buckets=FAST)
ACTOR_MAILBOX = Histogram("hub_actor_mailbox_depth", "Messages already queued when one more arrives",
                          buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256))
ACTOR_CRASHES = Counter("hub_actor_crashes_total", "Actor turns that raised an unexpected error")
CONNECTIONS = Gauge("hub_realtime_connections", "Open realtime WebSocket connections")
MESSAGES = Counter("hub_realtime_messages_sent_total", "Frames queued to realtime sockets")
BROADCAST_LATENCY = Histogram("hub_realtime_broadcast_latency_seconds",
                              "From the change (commit) to its hand-off to the last local socket", buckets=FAST)
DISCONNECTS = Counter("hub_session_disconnects_total", "Realtime sockets closed by the hub, by close code",
                      ["code"])
OUTBOX_DROPS = Counter("hub_session_outbox_dropped_total", "Sockets whose outbox overflowed (slow consumers cut off)")
APPOINTMENTS = Counter("hub_booking_appointments_total", "Appointment changes made by this process",
                       ["change"])  # created | cancelled | no_show | completed | confirmed | rescheduled
HOLDS = Counter("hub_booking_holds_total", "Holds made or ended by this process",
                ["change"])  # created | released (incl. booked) | expired
MCP_CALLS = Counter("hub_mcp_tool_calls_total", "MCP tool calls by tool and outcome (ok or the error code)",
                    ["tool", "outcome"])
WAITLIST_OFFERS = Counter("hub_waitlist_offers_total", "Waitlist offers by what happened to them",
                          ["outcome"])  # made | accepted | declined | expired | withdrawn


def count_offers(result: dict) -> None:
    """Offers a waitlist pass made, and the earlier offers it found ended (sql/0010)."""
    WAITLIST_OFFERS.labels("made").inc(len(result.get("offers", ())))
    for settled in result.get("settled", ()):
        WAITLIST_OFFERS.labels(settled["outcome"]).inc()


def count_changes(produced: list[Event]) -> None:
    """Business counters from the events a write produced (counted once, by the process that wrote)."""
    for event in produced:
        new, old = event.new, event.old
        if event.table_name == "appointments":
            if old is None:
                APPOINTMENTS.labels("created").inc()
            elif new is not None and new["status"] != old["status"]:
                APPOINTMENTS.labels(new["status"]).inc()
            elif new is not None and new["appointment_date"] != old["appointment_date"]:
                APPOINTMENTS.labels("rescheduled").inc()
        elif event.table_name == "slot_reservations":
            if old is None:
                HOLDS.labels("created").inc()
            elif new is None:  # gone after its expiry: it timed out; before: released or booked
                expired = datetime.fromisoformat(old["expires_at"]) <= event.created_at
                HOLDS.labels("expired" if expired else "released").inc()


GC_PAUSE = Histogram("hub_gc_pause_seconds", "Python garbage collector pauses (they stall every request)",
                     ["generation"], buckets=FAST)


def watch_gc() -> None:
    """Time each collection: a full one over a large heap is a latency spike."""
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - started[0])

    gc.callbacks.append(timed)


def observe_query(seconds: float) -> None:
    DB_QUERY.observe(seconds)
    if seconds > 0.1:
        DB_SLOW.inc()


def track(pool_sizes: Callable[[], tuple[int, int]], actors: Callable[[], int], sockets: Callable[[], int]) -> None:
    """Gauges read at scrape time from the live objects of this process."""
    DB_POOL.labels("in_use").set_function(lambda: (lambda s: s[0] - s[1])(pool_sizes()))
    DB_POOL.labels("idle").set_function(lambda: pool_sizes()[1])
    ACTORS.set_function(actors)
    CONNECTIONS.set_function(sockets)


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


WEBHOOK_ATTEMPTS = Counter("hub_webhook_attempts_total", "Webhook delivery attempts by result",
                           ["result"])  # success | http_error | network_error | refused
WEBHOOK_ATTEMPT_SECONDS = Histogram("hub_webhook_attempt_seconds", "Time a receiver took to answer one attempt",
                                    ["result"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
WEBHOOK_DELIVERIES = Counter("hub_webhook_deliveries_total", "Webhook deliveries finished, by outcome",
                             ["outcome"])  # succeeded | failed (retries exhausted)
WEBHOOK_DISABLED = Counter("hub_webhook_endpoints_disabled_total", "Endpoints disabled after repeated failure")
REMINDERS = Counter("hub_reminders_total", "Appointment reminders by outcome", ["outcome"])  # sent | missed
REMINDER_LATENESS = Histogram("hub_reminder_lateness_seconds", "How long after its due time a reminder went out",
                              buckets=(0.1, 1, 5, 15, 60, 300, 900, 1800, 3600))
