"""An asyncio client for the hub's realtime socket (the chatbot's, and the tests').

    async with RealtimeClient("http://localhost:8080", token) as client:
        channel = client.channel("availability:dentist_id=...")
        await channel.join()
        slots = await channel.push("slots", {"date": "2026-12-01"})
        async for message in channel:           # or channel.on("slot_booked", callback)
            print(message.event, message.payload)

It sends heartbeats, and when the connection drops it reconnects with
backoff and rejoins every channel with the last version it saw per dentist,
so the hub replays what was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any, AsyncIterator, Callable

import aiohttp

from hub import protocol
from hub.protocol import Message
from hub.tasks import Tasks

log = logging.getLogger("hub.client")


class ReplyError(Exception):
    """The hub answered a push with an error; `response` is its body."""

    def __init__(self, status: str, response: Any) -> None:
        reason = response.get("reason") if isinstance(response, dict) else response
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.response = response

    @property
    def code(self) -> str | None:
        error = self.response.get("error") if isinstance(self.response, dict) else None
        return error.get("code") if isinstance(error, dict) else None


class Channel:
    def __init__(self, client: RealtimeClient, topic: str, config: dict[str, Any], token: str | None) -> None:
        self.client = client
        self.topic = topic
        self.versions: dict[str, int] = {str(k): int(v) for k, v in (config.pop("versions", None) or {}).items()}
        self.config = config  # dentist id -> last version seen, sent on every (re)join to resume
        self.token = token
        self.joined = False
        self.join_ref: str | None = None
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._callbacks: dict[str, list[Callable[[Message], Any]]] = {}

    def on(self, event: str, callback: Callable[[Message], Any]) -> Channel:
        """Call `callback(message)` for each message of `event` (`*` for all)."""
        self._callbacks.setdefault(event, []).append(callback)
        return self

    async def join(self, timeout: float = 5.0) -> Any:
        """Raises ReplyError when the hub refuses the join."""
        payload: dict[str, Any] = {"config": {**self.config, "versions": self.versions or None}}
        if payload["config"]["versions"] is None:
            del payload["config"]["versions"]
        if self.token:
            payload["access_token"] = self.token
        self.join_ref = self.client._next_ref()
        response = await self.client._request(self.topic, "phx_join", payload, timeout, join_ref=self.join_ref)
        self.joined = True
        return response

    async def push(self, event: str, payload: dict[str, Any], timeout: float = 5.0) -> Any:
        """Send a command and return the hub's `ok` response; raises ReplyError."""
        return await self.client._request(self.topic, event, payload, timeout, join_ref=self.join_ref)

    async def leave(self) -> None:
        self.joined = False
        with contextlib.suppress(ReplyError, TimeoutError, ConnectionError):
            await self.client._request(self.topic, "phx_leave", {}, 2.0, join_ref=self.join_ref)
        self.client._channels.pop(self.topic, None)

    async def next(self, timeout: float = 5.0) -> Message:
        return await asyncio.wait_for(self._queue.get(), timeout)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        return await self._queue.get()

    def _dispatch(self, msg: Message) -> None:
        inner = msg.payload.get("payload") if msg.event == "broadcast" else None
        if isinstance(inner, dict) and "version" in inner and "dentist_id" in inner:
            dentist = str(inner["dentist_id"])
            self.versions[dentist] = max(self.versions.get(dentist, 0), int(inner["version"]))
        if msg.event in ("phx_close", "phx_error") and msg.join_ref in (None, self.join_ref):
            self.joined = False
        self._queue.put_nowait(msg)
        name = msg.payload.get("event") if msg.event == "broadcast" else msg.event
        for callback in self._callbacks.get(name, []) + self._callbacks.get("*", []):
            callback(msg)


class RealtimeClient:
    def __init__(self, url: str | list[str], apikey: str, *, vsn: str = protocol.V2, heartbeat: float = 25.0,
                 reconnect: bool = True) -> None:
        """`url` may list several hub processes: a reconnect tries the next one."""
        self.urls = [self._socket_url(u, apikey, vsn) for u in ([url] if isinstance(url, str) else url)]
        self.url = self.urls[0]
        self.vsn = vsn
        self.heartbeat = heartbeat
        self.reconnect = reconnect
        self.connected = asyncio.Event()
        self.close_code: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._refs = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._channels: dict[str, Channel] = {}
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @staticmethod
    def _socket_url(url: str, apikey: str, vsn: str) -> str:
        base = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://")
        if not base.endswith("/websocket"):
            base += "/realtime/v1/websocket"
        return f"{base}?apikey={apikey}&vsn={vsn}"

    def channel(self, topic: str, *, access_token: str | None = None, **config: Any) -> Channel:
        """A channel; `config` is the join's config (postgres_changes, broadcast, presence, versions)."""
        channel = self._channels[topic] = Channel(self, topic, config, access_token)
        return channel

    async def connect(self, timeout: float = 10.0) -> None:
        self._session = self._session or aiohttp.ClientSession()
        self._runner = asyncio.create_task(self._run(), name="realtime-client")
        await asyncio.wait_for(self.connected.wait(), timeout)

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _next_ref(self) -> str:
        return str(next(self._refs))

    async def _request(self, topic: str, event: str, payload: Any, timeout: float, join_ref: str | None) -> Any:
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionError("not connected")
        ref = self._next_ref()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            await ws.send_str(protocol.encode(self.vsn, topic, event, payload, ref, join_ref).decode())
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(ref, None)

    async def _run(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                assert self._session is not None
                async with self._session.ws_connect(self.url, autoping=True, max_msg_size=0) as ws:
                    self._ws = ws
                    delay = 0.1
                    connection = Tasks("realtime-client")  # what this connection started ends with it
                    try:
                        connection.spawn(self._heartbeat(), "heartbeat")
                        for channel in list(self._channels.values()):
                            if channel.joined or channel.join_ref is not None:
                                connection.spawn(self._rejoin(channel), f"rejoin {channel.topic}")
                        self.connected.set()
                        await self._read(ws)
                    finally:
                        await connection.aclose()
                    self.close_code = ws.close_code
            except (aiohttp.ClientError, OSError) as exc:
                log.info("realtime connection failed: %s", exc)
            finally:
                self.connected.clear()
                self._ws = None
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(ConnectionError("connection lost"))
            if not self.reconnect or self._closed:
                return
            self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _rejoin(self, channel: Channel) -> None:
        with contextlib.suppress(ReplyError, TimeoutError, ConnectionError):
            await channel.join()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            with contextlib.suppress(ReplyError, TimeoutError, ConnectionError):
                await self._request("phoenix", "heartbeat", {}, 10.0, None)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for raw in ws:
            if raw.type != aiohttp.WSMsgType.TEXT:
                continue
            msg = protocol.decode_text(raw.data, self.vsn)
            if msg.event == "phx_reply" and msg.ref in self._pending:
                future = self._pending[msg.ref]
                status, response = msg.payload.get("status"), msg.payload.get("response")
                if not future.done():
                    if status == "ok":
                        future.set_result(response)
                    else:
                        future.set_exception(ReplyError(str(status), response))
                continue
            channel = self._channels.get(msg.topic)
            if channel is not None:
                channel._dispatch(msg)
