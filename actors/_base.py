"""The actor: a bounded mailbox, one message at a time, and lifecycle hooks.

A turn is a whole `receive()`: its awaits (database calls) let no other
message of this actor in, so an actor's state needs no locks. Callers hold
the actor only through `tell`/`ask`.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import enum
import logging
import time
from typing import Any, ClassVar

from hub import errors, metrics
from hub.errors import ErrorCode, HubError

log = logging.getLogger("hub.actors")


class StopReason(enum.Enum):
    SHUTDOWN = "shutdown"
    IDLE = "idle"
    FAILED = "failed"


class ActorDeadError(HubError):
    """The actor stopped before it could answer; asking again re-activates it."""

    def __init__(self, key: str) -> None:
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE, "The dentist's schedule is restarting, retry shortly",
                         {"actor": key}, temporary=True)


def busy(key: str, why: str) -> HubError:
    return HubError(ErrorCode.SERVICE_UNAVAILABLE, f"The dentist's schedule is busy ({why}), retry shortly",
                    {"actor": key}, temporary=True)


_STOP = object()


@dataclasses.dataclass(slots=True)
class _Envelope:
    msg: Any
    reply: asyncio.Future[Any] | None  # None: a tell


def _reply(env: _Envelope, *, result: Any = None, exc: BaseException | None = None) -> None:
    # A caller that timed out has cancelled its future: nobody is waiting.
    if env.reply is None or env.reply.done():
        return
    if exc is not None:
        env.reply.set_exception(exc)
    else:
        env.reply.set_result(result)


class Actor(abc.ABC):
    """Subclasses implement `receive`, and `on_start` to load their state.

    An unexpected exception in a turn fails that caller only: `recover` then
    makes memory trustworthy again (by default the actor stops, so the next
    activation loads afresh). A HubError is an expected answer; the actor
    lives on. Only an exception from `recover` (or `on_start`) stops the
    actor as failed.
    """

    mailbox_size: ClassVar[int] = 256
    ask_timeout: ClassVar[float] = 5.0

    def __init__(self, key: str) -> None:
        self.key = key
        self.last_used = time.monotonic()
        self.stop_reason: StopReason | None = None
        self._inbox: asyncio.Queue[_Envelope | object] = asyncio.Queue(self.mailbox_size)
        self._alive = True
        self.started = False  # on_start completed: a failure after this is not a failure to start

    async def on_start(self) -> None:
        """Load state; an exception here fails every queued ask."""

    async def recover(self) -> None:
        """After a turn failed unexpectedly: its changes to memory may be half
        done. The default stops after the queued messages (the next activation
        loads afresh); an actor that can reload in place overrides this."""
        self.stop(StopReason.FAILED)

    async def on_stop(self, reason: StopReason) -> None:
        """Release resources; called once, whatever the reason."""

    @abc.abstractmethod
    async def receive(self, msg: Any) -> Any:
        """Handle one message; its return value answers an `ask`."""

    def idle(self) -> bool:
        """May be passivated when unused (an actor with timers says no)."""
        return True

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def depth(self) -> int:
        return self._inbox.qsize()

    def tell(self, msg: Any) -> None:
        """Queue a message nobody waits for. Raises when dead or full."""
        self._post(_Envelope(msg, None))

    async def ask(self, msg: Any, *, timeout: float | None = None) -> Any:
        """Send `msg` and return the answer.

        Raises the handler's HubError, ActorDeadError if the actor stops first,
        or SERVICE_UNAVAILABLE when the mailbox is full or the answer is late.
        """
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._post(_Envelope(msg, reply))
        try:
            async with asyncio.timeout(timeout or self.ask_timeout):
                return await reply
        except TimeoutError:
            raise busy(self.key, "no answer in time") from None

    def stop(self, reason: StopReason = StopReason.SHUTDOWN) -> None:
        """Stop after the messages already queued (a queued stop, as pykka's)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        try:
            self._inbox.put_nowait(_STOP)
        except asyncio.QueueFull:
            pass  # the loop sees stop_reason once it has drained the backlog

    def _post(self, env: _Envelope) -> None:
        if not self._alive or self.stop_reason is not None:
            raise ActorDeadError(self.key)
        self.last_used = time.monotonic()
        metrics.ACTOR_MAILBOX.observe(self._inbox.qsize())
        try:
            self._inbox.put_nowait(env)
        except asyncio.QueueFull:
            raise busy(self.key, "mailbox full") from None

    async def run(self) -> None:
        """The turn loop; the directory runs it as the actor's task."""
        reason = StopReason.FAILED
        failure: BaseException | None = None
        try:
            try:
                await self.on_start()
            except HubError as exc:  # e.g. the database is away: queued callers hear why
                failure = exc
                raise
            self.started = True
            while True:
                if self.stop_reason is not None and self._inbox.empty():
                    break
                env = await self._inbox.get()
                if env is _STOP:
                    break
                assert isinstance(env, _Envelope)
                if env.reply is not None and env.reply.done():
                    continue  # the caller gave up before this turn began
                started = time.perf_counter()
                try:
                    result = await self.receive(env.msg)
                except HubError as exc:
                    _reply(env, exc=exc)
                except Exception:
                    metrics.ACTOR_CRASHES.inc()
                    log.exception("actor %s crashed handling %s", self.key, type(env.msg).__name__,
                                  extra={"actor": self.key})
                    _reply(env, exc=errors.HubError(ErrorCode.INTERNAL_ERROR, "An unexpected error occurred"))
                    await self.recover()  # this message failed; the next ones are served from sound state
                else:
                    _reply(env, result=result)
                finally:
                    metrics.ACTOR_TURN.labels(type(env.msg).__name__).observe(time.perf_counter() - started)
            reason = self.stop_reason or StopReason.SHUTDOWN
        finally:
            self._alive = False
            if reason is StopReason.FAILED:
                self.stop_reason = reason
            while not self._inbox.empty():  # never leave an ask hanging
                env = self._inbox.get_nowait()
                if isinstance(env, _Envelope):
                    _reply(env, exc=failure or ActorDeadError(self.key))
            await self.on_stop(reason)
