"""PostgreSQL access: one pool per process, JSON codecs, SQLSTATE translation."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, AsyncIterator

import asyncpg
import msgspec

from hub import errors, metrics
from hub.auth import Principal

log = logging.getLogger("hub.db")

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def _jsonb_encode(value: Any) -> bytes:
    # jsonb's binary format is a version byte followed by the JSON text.
    return b"\x01" + _encode(value)


def _jsonb_decode(data: bytes) -> Any:
    return _decode(data[1:])


def _timed(name: str) -> Any:
    method = getattr(asyncpg.Connection, name)

    async def timed(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await method(self, *args, **kwargs)
        finally:
            metrics.observe_query(time.perf_counter() - started)

    timed.__name__ = timed.__qualname__ = name
    return timed


class TimedConnection(asyncpg.Connection):
    """Times every query for hub_db_query_duration_seconds. (asyncpg's own
    query logger could, but it builds a record per query: too dear on the
    booking path, docs/BENCHMARKS.md.)"""


for _name in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):
    setattr(TimedConnection, _name, _timed(_name))


# Server process ids of this process's open connections: a NOTIFY sent by one
# of them is (almost always) a write this process's actor publishes itself. A
# connection's id leaves when it closes, so pools that recycle connections
# do not grow the set (and a reused id is not mistaken for ours).
BACKENDS: set[int] = set()


async def init_connection(con: asyncpg.Connection) -> None:
    """Decode json/jsonb with msgspec: faster than the stdlib, and one encoder for the whole hub."""
    pid = con.get_server_pid()
    BACKENDS.add(pid)
    con.add_termination_listener(lambda _: BACKENDS.discard(pid))
    await con.set_type_codec("jsonb", schema="pg_catalog", encoder=_jsonb_encode,
                             decoder=_jsonb_decode, format="binary")
    await con.set_type_codec("json", schema="pg_catalog", encoder=lambda v: _encode(v).decode(),
                             decoder=_decode, format="text")


# Values PostgreSQL refuses (NUL in text, numbers out of range, text that is
# not valid Unicode): the caller's input, not our bug, and nothing was written.
DATA_ERRORS = (asyncpg.DataError, UnicodeEncodeError)


# Every error a database call raises that comes from the database or the link
# to it rather than from our code's logic: background loops log these and retry.
ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def unavailable(exc: BaseException) -> bool:
    """The database is away or cannot take us now (restart, crash recovery, a
    lost connection, too many connections, a timeout): nothing to do with the
    request, and worth retrying, unlike a bug or a refused value.

    One asyncpg error says so only by its text: when a server process ends an
    idle session (a FATAL such as "terminating connection due to unexpected
    postmaster exit"), asyncpg takes the unsolicited error as a protocol fault
    and waits for a ReadyForQuery that never comes, so a query issued before
    the socket's close is read fails with InternalClientError "cannot switch
    to state N; another operation (2) is in progress" (MagicStack/asyncpg#784,
    #1069)."""
    return isinstance(exc, (OSError, TimeoutError, asyncpg.PostgresConnectionError,
                            asyncpg.exceptions.OperatorInterventionError,
                            asyncpg.exceptions.InsufficientResourcesError)) \
        or (isinstance(exc, asyncpg.InterfaceError) and ("closed" in str(exc) or "closing" in str(exc))) \
        or (isinstance(exc, asyncpg.InternalClientError) and str(exc).startswith("cannot switch to state"))


def as_hub_error(exc: BaseException) -> errors.HubError | None:
    """The caller's answer for a database failure that is not a bug: 503 while
    the database is away, 400 for a value it refuses; None for anything else."""
    if unavailable(exc):
        return errors.database_unavailable()
    if isinstance(exc, DATA_ERRORS):
        return data_error(exc)
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return policy_refusal(exc)
    return None


def data_error(exc: Exception) -> errors.HubError:
    reason = "text must be valid Unicode without NUL characters" if isinstance(exc, UnicodeEncodeError) \
        else getattr(exc, "message", None) or str(exc)
    return errors.invalid(f"The database cannot store this value: {reason}", field=None)


def policy_refusal(exc: asyncpg.InsufficientPrivilegeError | str) -> errors.HubError:
    """A write the database's policies refused under the caller's claims (an
    error, or a row they hid from an UPDATE or DELETE): the application let
    through what it should not have, so say so in the log."""
    log.warning("row-level security refused a write the application allowed: %s", exc)
    return errors.forbidden("The database's access policies do not allow this change")


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    con = await asyncpg.connect(dsn, connection_class=TimedConnection, **kwargs)
    await init_connection(con)
    return con


async def _keep_session(con: asyncpg.Connection) -> None:
    """Pool connections carry no session state (no SET, LISTEN or session
    advisory locks; the listener, migrations and the CLI use their own
    connection to DATABASE_DIRECT_URL), so the default reset query, a round
    trip on every release, buys nothing, and the pool works behind a
    transaction pooler (pgBouncer, Supavisor). asyncpg still rolls back a
    transaction left open."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10,
                      command_timeout: float = 5.0, statement_cache_size: int = 100) -> asyncpg.Pool:
    """`statement_cache_size=0` behind a transaction pooler: asyncpg then uses
    only unnamed prepared statements, which live within one round trip, so a
    query never meets a server connection that lacks its statement."""
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, command_timeout=command_timeout,
        init=init_connection, reset=_keep_session, connection_class=TimedConnection,
        statement_cache_size=statement_cache_size, server_settings={"application_name": "dental-hub"})


# PostgREST's way in: the caller's role and claims, local to the transaction.
_AS_CALLER = "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)"
_AS_OWNER = "SELECT set_config('role', 'none', true), set_config('request.jwt.claims', '', true)"


def claims_json(principal: Principal) -> str:
    """What `auth.jwt()` returns inside `as_caller`: the verified token's claims."""
    claims = principal.claims
    raw = claims.raw or {"role": claims.role, **({"sub": str(claims.sub)} if claims.sub else {})}
    return _encode(raw).decode()


def caller_claims(principal: Principal) -> str | None:
    """The claims a write for this caller runs under; None for the service
    role, which keeps its bypass (the actors' writes take this)."""
    return None if principal.is_service else claims_json(principal)


@contextlib.asynccontextmanager
async def claims_scope(con: asyncpg.Connection, claims: str | None) -> AsyncIterator[None]:
    """Inside a transaction: the statements in the block run as the caller
    (`hub_as_caller`, migration 0013), then as the hub again, so the hub's own
    bookkeeping after them (notifications, the event log) is not bounded by
    the caller's policies. No claims: the block runs as the hub. On an error
    the transaction is rolled back, and the switch with it."""
    if claims is None:
        yield
        return
    await con.execute("SELECT public.hub_as_caller($1)", claims)
    yield
    await con.execute(_AS_OWNER)


@contextlib.asynccontextmanager
async def as_caller(pool: asyncpg.Pool, principal: Principal) -> AsyncIterator[asyncpg.Connection]:
    """A pool connection inside a transaction that runs as the caller, as
    PostgREST does: role `authenticated` (or `anon`) with the token's claims
    in `request.jwt.claims`, so the database's row-level security policies
    (the hub's and the clinic's own) bound what any query here returns or
    changes, even if the code that built the query has a bug. The service role
    keeps its bypass: it runs as the hub's own login. The hub's login must be
    allowed to switch to these roles (a superuser, Supabase's `postgres`, or
    the grant of migration 0008)."""
    async with pool.acquire() as con, con.transaction():
        if not principal.is_service:
            await con.execute(_AS_CALLER, principal.claims.role, claims_json(principal))
        yield con
