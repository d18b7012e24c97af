"""Slow and greedy clients against a real `hub serve` with small limits: a
request whose headers never finish is cut off, a socket that only answers
pings is closed, and one address cannot hold more than its connections."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from hub import db
from hub.auth import issue_token
from services import users
from tests.conftest import SECRET, HubProcesses

CONNECTIONS = 6


@pytest.fixture
async def slow_hub(dsn: str, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    con = await db.connect(dsn)
    try:
        uid = await users.create_user(con, email=f"{uuid.uuid4().hex[:8]}@slow.example", full_name="S")
    finally:
        await con.close()
    hubs = HubProcesses(dsn, tmp_path)
    [url] = await hubs.start(1, HEADER_TIMEOUT_SECONDS="1", HEARTBEAT_TIMEOUT_SECONDS="1",
                             MAX_CONNECTIONS_PER_IP=str(CONNECTIONS))
    try:
        yield url, issue_token(SECRET, uid)
    finally:
        hubs.stop()


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the hub closes the connection (EOF), failing after `seconds`."""
    started = time.monotonic()
    while await asyncio.wait_for(reader.read(65536), seconds):
        pass
    return time.monotonic() - started


async def test_headers_that_never_finish_are_cut_off(slow_hub: tuple[str, str]) -> None:
    url, _ = slow_hub
    reader, writer = await connect(url)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and then nothing
    assert await closed_within(reader, 5) < 4
    writer.close()
    # On a kept-alive connection, the next request's headers are timed too.
    reader, writer = await connect(url)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
    writer.write(b"GET /health HTTP/1.1\r\n")
    assert await closed_within(reader, 5) < 4
    writer.close()


async def test_a_slow_body_is_not_a_slow_header(slow_hub: tuple[str, str]) -> None:
    """The header timeout ends when the headers do: a body may take its time."""
    url, token = slow_hub
    reader, writer = await connect(url)
    body = json.dumps({"full_name": "Slow Typist"}).encode()
    writer.write(f"PUT /api/profiles/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:5])
    await asyncio.sleep(1.5)  # the point of the test: longer than HEADER_TIMEOUT_SECONDS
    writer.write(body[5:])
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200"), head
    writer.close()


async def test_a_socket_that_sends_nothing_is_closed(slow_hub: tuple[str, str]) -> None:
    url, token = slow_hub
    async with aiohttp.ClientSession() as s:
        ws_url = f"{url}/realtime/v1/websocket?apikey={token}&vsn=2.0.0"
        async with s.ws_connect(ws_url, autoping=True) as silent, s.ws_connect(ws_url) as chatty:
            started = time.monotonic()
            closed = asyncio.create_task(silent.receive())
            ref = 0
            while not closed.done():  # the chatty socket heartbeats; the silent one answers pings only
                assert time.monotonic() - started < 5, "the silent socket was not closed"
                ref += 1
                await chatty.send_str(json.dumps([None, str(ref), "phoenix", "heartbeat", {}]))
                reply = json.loads((await asyncio.wait_for(chatty.receive(), 5)).data)
                assert reply[1] == str(ref)
                await asyncio.wait({closed}, timeout=0.3)
            msg = closed.result()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            assert silent.close_code == 1000
            assert 0.9 < time.monotonic() - started < 4
            assert not chatty.closed


async def test_connections_per_address_are_capped(slow_hub: tuple[str, str]) -> None:
    url, _ = slow_hub
    held = [await connect(url) for _ in range(CONNECTIONS)]
    for reader, writer in held:  # each is served (and kept alive)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
    reader, writer = await connect(url)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 503") and b"application/json" in head
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    body = json.loads(await reader.readexactly(length))
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    writer.close()
    held[0][1].close()
    await closed_within(held[0][0], 5)
    deadline = time.monotonic() + 5
    while True:  # the freed place is given to the next connection
        reader, writer = await connect(url)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        if head.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert head.startswith(b"HTTP/1.1 200"), head
    for _, w in held[1:]:
        w.close()
