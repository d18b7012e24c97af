"""Which database errors mean "the database is away" (503 with Retry-After)
and which are bugs (500): every type seen while PostgreSQL was SIGKILLed,
stopped with `-m immediate` and restarted under pool load."""

from __future__ import annotations

import struct

import asyncpg
import pytest
from asyncpg import exceptions as pg

from hub import db
from hub.errors import ErrorCode

AWAY = [
    ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
    ConnectionResetError(104, "Connection reset by peer"),
    TimeoutError(),  # command_timeout, or a connect that got no answer
    pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    pg.ConnectionDoesNotExistError("connection was closed in the middle of operation: "
                                   "terminating connection due to unexpected postmaster exit"),
    pg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed"),
    pg.InterfaceError("cannot perform operation: connection is closed"),
    pg.InterfaceError("pool is closing"),
    pg.CannotConnectNowError("the database system is starting up"),
    pg.CannotConnectNowError("the database system is not yet accepting connections"),
    pg.CannotConnectNowError("the database system is in recovery mode"),
    pg.CannotConnectNowError("the database system is shutting down"),
    pg.AdminShutdownError("terminating connection due to administrator command"),
    pg.CrashShutdownError("terminating connection because of crash of another server process"),
    pg.TooManyConnectionsError("sorry, too many clients already"),
    pg.ConnectionFailureError("connection failure"),
    # The one that was a 500: a FATAL on an idle pool connection, then a query before its close was read.
    pg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    pg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
]

BUGS = [
    RuntimeError("a bug"),
    pg.InternalClientError("unexpected data type of composite type attribute"),
    pg.InterfaceError("cannot perform operation: another operation is in progress"),  # one connection, two tasks
    pg.UndefinedColumnError('column "nope" does not exist'),
]


@pytest.mark.parametrize("exc", AWAY, ids=lambda e: f"{type(e).__name__}:{e}"[:60])
def test_the_database_away_is_a_503_with_retry_after(exc: BaseException) -> None:
    assert db.unavailable(exc)
    error = db.as_hub_error(exc)
    assert error is not None and error.code is ErrorCode.SERVICE_UNAVAILABLE
    assert error.details == {"reason": "database_unavailable"} and error.headers() == {"Retry-After": "1"}


@pytest.mark.parametrize("exc", BUGS, ids=lambda e: f"{type(e).__name__}:{e}"[:60])
def test_bugs_are_not_mistaken_for_an_outage(exc: BaseException) -> None:
    assert not db.unavailable(exc) and db.as_hub_error(exc) is None


def _fatal(code: str, message: str) -> bytes:
    """An ErrorResponse as a server process sends it to an idle client before closing the socket."""
    fields = b"".join(tag + value.encode() + b"\0" for tag, value in
                      ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))) + b"\0"
    return b"E" + struct.pack("!i", 4 + len(fields)) + fields


async def test_a_query_between_a_fatal_and_the_close_is_the_database_away(dsn: str) -> None:
    """What PostgreSQL's death looks like to an idle pooled connection: the
    backend's FATAL arrives, the socket's close is read a moment later. A query
    in between fails inside asyncpg itself; it must be answered 503, not 500."""
    con = await db.connect(dsn)
    try:
        con._protocol.data_received(_fatal("57P01", "terminating connection due to unexpected postmaster exit"))
        with pytest.raises(asyncpg.InternalClientError) as caught:
            await con.fetchval("SELECT 1")
        error = db.as_hub_error(caught.value)
        assert error is not None and error.code is ErrorCode.SERVICE_UNAVAILABLE, caught.value
    finally:
        con.terminate()


@pytest.mark.parametrize("exc", AWAY, ids=lambda e: f"{type(e).__name__}:{e}"[:60])
def test_background_loops_retry_on_the_database_away(exc: BaseException) -> None:
    """The listener, sweeper, feed, webhooks and reminders catch db.ERRORS and
    retry; anything else ends their loop."""
    assert isinstance(exc, db.ERRORS)
