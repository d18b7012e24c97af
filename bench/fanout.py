"""Fan-out of one hub process to many realtime subscribers.

    .venv/bin/python bench/fanout.py [--subscribers 1000] [--latency-subscribers 3000] [--idle 10000]

Starts `hub serve` (one process) on a scratch database and, in separate
subscriber processes, opens raw WebSockets that join
`availability:dentist_id=<id>` with the Phoenix protocol and count frames.
  1. latency: REST bookings open-loop at --rate/s spread over --dentists
     dentists, --latency-subscribers subscribers spread over their channels;
     booking sent -> slot_booked received, p50/p99;
  2. throughput: SQL inserts of appointments (each one event -> one frame per
     subscriber, through LISTEN/NOTIFY and the feed) for --seconds; delivered
     frames per second across all subscribers;
  3. memory: the hub's RSS before and after --idle idle joined sockets.
Prints one line per figure (docs/BENCHMARKS.md records them).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import msgspec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from booking import SECRET, drop, pct, setup, start_hub  # noqa: E402

from hub import db  # noqa: E402
from hub.auth import issue_token  # noqa: E402

PER_PROCESS = 500  # sockets per subscriber process


# ---- the subscriber role (a separate process) -----------------------------------

class _Subscriber(asyncio.Protocol):
    """A raw WebSocket client: upgrade, join, then count frames by walking
    their headers. Every frame really crosses the socket; skipping aiohttp's
    per-message objects keeps the subscriber processes from being the
    bottleneck on a 2-core machine."""

    def __init__(self, host: str, path: str, join: bytes, latency: bool, seen: dict, ready: asyncio.Event) -> None:
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.join, self.latency, self.seen, self.ready = join, latency, seen, ready
        self.buffer = bytearray()
        self.upgraded = False
        self.frames = -1  # the join reply is not counted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            del self.buffer[:end + 4]
            self.upgraded = True
            mask = os.urandom(4)
            body = bytes(b ^ mask[i % 4] for i, b in enumerate(self.join))
            self.transport.write(bytes([0x81, 0x80 | len(body)]) + mask + body)  # type: ignore[attr-defined]
        buf, i, n = self.buffer, 0, len(self.buffer)
        while i + 2 <= n:
            length, head = buf[i + 1] & 0x7F, 2
            if length == 126:
                if i + 4 > n:
                    break
                length, head = int.from_bytes(buf[i + 2:i + 4], "big"), 4
            elif length == 127:
                if i + 10 > n:
                    break
                length, head = int.from_bytes(buf[i + 2:i + 10], "big"), 10
            if i + head + length > n:
                break
            self.frames += 1
            if self.frames == 0:
                self.ready.set()
            elif self.latency:
                payload = bytes(buf[i + head:i + head + length])
                if b'"slot_booked"' in payload:
                    body = msgspec.json.decode(payload)
                    if body[3] == "broadcast" and body[4]["event"] == "slot_booked":
                        inner = body[4]["payload"]
                        self.seen.setdefault(f"{inner['dentist_id']}/{inner['new']['start']}", []).append(time.time())
            i += head + length
        del buf[:i]


async def subscribe(url: str, token: str, topic: str, count: int, seconds: float, latency: bool) -> dict:
    parsed = urlsplit(url)
    path = f"{parsed.path}?apikey={token}&vsn=2.0.0"
    topics = topic.split(",")  # several: subscriber i joins topics[i % len(topics)]
    seen: dict[str, list[float]] = {}
    loop = asyncio.get_running_loop()
    subscribers = []
    for i in range(count):
        ready = asyncio.Event()
        join = json.dumps(["1", "1", topics[i % len(topics)], "phx_join", {"config": {}}]).encode()
        _, sub = await loop.create_connection(
            lambda r=ready, j=join: _Subscriber(parsed.netloc, path, j, latency, seen, r), parsed.hostname,
            parsed.port)
        subscribers.append(sub)
        await ready.wait()
    print(json.dumps({"ready": count}), flush=True)
    await asyncio.sleep(seconds)
    for sub in subscribers:
        sub.transport.close()
    return {"frames": sum(max(s.frames, 0) for s in subscribers), "seen": seen}


def spawn(url: str, token: str, topic: str, count: int, seconds: float, latency: bool) -> list[subprocess.Popen]:
    procs = []
    for start in range(0, count, PER_PROCESS):
        n = min(PER_PROCESS, count - start)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--role", "subscribe", "--url", url, "--token", token, "--topic", topic,
             "--count", str(n), "--seconds", str(seconds)] + (["--latency"] if latency else []),
            stdout=subprocess.PIPE, text=True))
    for proc in procs:
        assert json.loads(proc.stdout.readline())["ready"]  # type: ignore[union-attr]
    return procs


def collect(procs: list[subprocess.Popen]) -> tuple[int, dict[str, list[float]]]:
    frames, seen = 0, {}
    for proc in procs:
        result = json.loads(proc.stdout.read())  # type: ignore[union-attr]
        proc.wait()
        frames += result["frames"]
        for key, times in result["seen"].items():
            seen.setdefault(key, []).extend(times)
    return frames, seen


# ---- the bench --------------------------------------------------------------------

def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def hub_counters(url: str) -> str:
    """What the hub says it sent and whom it cut off (from its /metrics)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics") as resp:
            text = await resp.text()
    keep = ("hub_realtime_messages_sent_total ", 'hub_session_disconnects_total{code="4008"}',
            "hub_realtime_broadcast_latency_seconds_count")
    return "; ".join(line for line in text.splitlines() if line.startswith(keep))


async def throughput(dsn: str, ws_url: str, token: str, dentist: uuid.UUID, patient: uuid.UUID, n: int,
                     seconds: float) -> None:
    procs = spawn(ws_url, token, f"availability:dentist_id={dentist}", n, seconds + 3, latency=False)
    con = await db.connect(dsn)
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    made = 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        await con.execute(
            "INSERT INTO appointments (patient_id, dentist_id, appointment_date, appointment_type) "
            "SELECT $1, $2, $3::timestamptz + g * interval '30 minutes', 'checkup' FROM generate_series($4::int, $5::int) g",
            patient, dentist, start, made, made + 19)
        made += 20
        await asyncio.sleep(0.01)
    await con.close()
    frames, _ = collect(procs)
    elapsed = seconds + 3
    print(f"throughput: {made} events to {n} subscribers in {seconds:.0f}s (+3s drain): {frames} frames delivered "
          f"= {frames / elapsed:,.0f} msg/s delivered ({frames / (made * n) * 100:.0f}% of {made * n:,})", flush=True)


async def latency(url: str, ws_url: str, token: str, tokens: list[str], dentists: list[uuid.UUID], n: int,
                  rate: int, seconds: float) -> None:
    """Bookings spread over `dentists` (one dentist's actor serializes its own
    bookings); the subscribers are spread over those dentists' channels."""
    topics = ",".join(f"availability:dentist_id={d}" for d in dentists)
    procs = spawn(ws_url, token, topics, n, seconds + 5, latency=True)
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=200)
    sent: dict[str, float] = {}
    answered: list[float] = []
    async with aiohttp.ClientSession() as session:
        async def book(i: int) -> None:
            dentist = dentists[i % len(dentists)]
            when = start + timedelta(minutes=30 * (i // len(dentists)))
            key = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            sent[f"{dentist}/{key}"] = time.time()
            async with session.post(f"{url}/api/appointments", headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
                                    json={"dentist_id": str(dentist), "appointment_date": when.isoformat(),
                                          "appointment_type": "checkup"}) as resp:
                await resp.read()
                answered.append((time.time() - sent[f"{dentist}/{key}"]) * 1000)
        tasks = []
        began = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = began + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(book(i)))
        await asyncio.gather(*tasks)
    _, seen = collect(procs)
    lat = [(t - sent[k]) * 1000 for k, times in seen.items() if k in sent for t in times]
    expected = len(sent) * n // len(dentists)
    print(f"latency at {rate} bookings/s over {len(dentists)} dentists, {n} subscribers "
          f"({n // len(dentists)} per dentist's channel): {len(lat):,} of {expected:,} deliveries seen; "
          f"booking->delivery p50={pct(lat, 50):.1f}ms p99={pct(lat, 99):.1f}ms max={max(lat):.1f}ms; "
          f"the booking's own HTTP answer p50={pct(answered, 50):.1f}ms p99={pct(answered, 99):.1f}ms", flush=True)


async def memory(pid: int, ws_url: str, token: str, dentist: uuid.UUID, n: int) -> None:
    before = rss_kb(pid)
    procs = spawn(ws_url, token, f"availability:dentist_id={dentist}", n, 3, latency=False)
    await asyncio.sleep(1.0)
    after = rss_kb(pid)
    collect(procs)
    print(f"memory: hub RSS {before / 1024:.0f} MiB -> {after / 1024:.0f} MiB with {n:,} idle joined sockets: "
          f"{(after - before) / n:.1f} KB per connection", flush=True)


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    server = os.environ.get("DATABASE_URL")
    if not server:
        from hub import embedded

        server = embedded.start(HERE.parent / "var" / "bench-pgdata")
    dsn, dentists, patients = await setup(server, 1 + args.dentists, 50)
    con = await db.connect(dsn)
    await con.execute("UPDATE dentists SET horizon_days = 730, min_notice_minutes = 0")
    await con.close()
    tokens = [issue_token(SECRET, p, ttl=3600) for p in patients]
    watcher = issue_token(SECRET, uuid.uuid4(), ttl=3600)
    tmp = tempfile.mkdtemp()
    proc, url = await start_hub(dsn, tmp, preexec_fn=raise_fd_limit)
    ws_url = url.replace("http://", "ws://") + "/realtime/v1/websocket"
    try:
        print(f"machine: {os.cpu_count()} cores; hub: 1 process; subscribers: separate processes "
              f"({PER_PROCESS} sockets each)", flush=True)
        # Latency first, on a quiet hub: the throughput run leaves a backlog behind it.
        await latency(url, ws_url, watcher, tokens, dentists[1:], args.latency_subscribers, args.rate, args.seconds)
        await throughput(dsn, ws_url, watcher, dentists[0], patients[0], args.subscribers, args.seconds)
        print("  hub counters:", await hub_counters(url), flush=True)
        await memory(proc.pid, ws_url, watcher, dentists[0], args.idle)
    finally:
        proc.terminate()
        proc.wait(15)
        await drop(server, dsn)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", default="bench", choices=["bench", "subscribe"])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--latency-subscribers", type=int, default=3000)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--dentists", type=int, default=20, help="dentists the latency bookings spread over")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--topic")
    parser.add_argument("--count", type=int)
    parser.add_argument("--latency", action="store_true")
    parsed = parser.parse_args()
    if parsed.role == "subscribe":
        raise_fd_limit()
        result = asyncio.run(subscribe(parsed.url, parsed.token, parsed.topic, parsed.count, parsed.seconds,
                                       parsed.latency))
        print(json.dumps(result), flush=True)
    else:
        asyncio.run(main(parsed))
