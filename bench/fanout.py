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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from booking import SECRET, drop, paced, pct, setup, start_hub  # noqa: E402

from tests.conftest import free_port  # noqa: E402

from hub import db  # noqa: E402
from hub.auth import issue_token  # noqa: E402

PER_PROCESS = 500  # sockets per subscriber process


# ---- the subscriber role (a separate process) -----------------------------------

def _field(payload: bytes, name: bytes) -> str:
    """The string value of the first `"name":"..."` in a JSON frame."""
    at = payload.index(b'"' + name + b'":"') + len(name) + 4
    return payload[at:payload.index(b'"', at)].decode()


class _Subscriber(asyncio.Protocol):
    """A raw WebSocket client: upgrade, join, then count frames by walking
    their headers. Every frame really crosses the socket; skipping aiohttp's
    per-message objects keeps the subscriber processes from being the
    bottleneck on a 2-core machine."""

    def __init__(self, host: str, path: str, join: bytes | None, latency: bool, seen: dict,
                 ready: asyncio.Event) -> None:
        """`join` is the Phoenix join to send; None speaks socket.io (engine.io v4) instead."""
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.join, self.latency, self.seen, self.ready = join, latency, seen, ready
        self.buffer = bytearray()
        self.upgraded = False
        self.frames = -1  # the join reply (socket.io: the namespace connect) is not counted
        self.first = self.last = 0.0  # when the first and last counted frames arrived

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
            if self.join is not None:
                self._send(self.join)
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
            if self.join is None:  # socket.io: open -> connect, ping -> pong, count "42" events
                kind = buf[i + head:i + head + 2]
                i += head + length
                if kind[:1] == b"0":
                    self._send(b"40")
                elif kind[:1] == b"2":
                    self._send(b"3")
                elif kind == b"40":
                    self.frames = 0
                    self.ready.set()
                elif kind == b"42":
                    self._count()
                continue
            if self.frames < 0:  # the join reply
                self.frames = 0
                self.ready.set()
            else:
                self._count()
                if self.latency:  # key the frame by dentist and slot without decoding all of it
                    payload = bytes(buf[i + head:i + head + length])
                    if b'"slot_booked"' in payload:
                        key = f"{_field(payload, b'dentist_id')}/{_field(payload, b'start')}"
                        self.seen.setdefault(key, []).append(time.time())
            i += head + length
        del buf[:i]

    def _count(self) -> None:
        self.frames += 1
        self.last = time.time()
        if not self.first:
            self.first = self.last

    def _send(self, text: bytes) -> None:
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
        self.transport.write(bytes([0x81, 0x80 | len(body)]) + mask + body)  # type: ignore[attr-defined]


async def subscribe(url: str, token: str, topic: str, count: int, seconds: float, latency: bool) -> dict:
    parsed = urlsplit(url)
    path = f"{parsed.path}?apikey={token}&vsn=2.0.0" if topic != "socket.io" else f"{parsed.path}?{parsed.query}"
    topics = topic.split(",")  # several: subscriber i joins topics[i % len(topics)]
    seen: dict[str, list[float]] = {}
    loop = asyncio.get_running_loop()
    subscribers = []
    for i in range(count):
        ready = asyncio.Event()
        join = None if topic == "socket.io" else \
            json.dumps(["1", "1", topics[i % len(topics)], "phx_join", {"config": {}}]).encode()
        _, sub = await loop.create_connection(
            lambda r=ready, j=join: _Subscriber(parsed.netloc, path, j, latency, seen, r), parsed.hostname,
            parsed.port)
        subscribers.append(sub)
        await ready.wait()
    print(json.dumps({"ready": count}), flush=True)
    await asyncio.sleep(seconds)
    for sub in subscribers:
        sub.transport.close()
    counted = [s for s in subscribers if s.frames > 0]
    return {"frames": sum(max(s.frames, 0) for s in subscribers), "seen": seen,
            "first": min((s.first for s in counted), default=0), "last": max((s.last for s in counted), default=0)}


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


SPAN: list[float] = [0.0, 0.0]  # first and last frame times of the latest collect()


def collect(procs: list[subprocess.Popen]) -> tuple[int, dict[str, list[float]]]:
    frames, seen, firsts, lasts = 0, {}, [], []
    for proc in procs:
        result = json.loads(proc.stdout.read())  # type: ignore[union-attr]
        proc.wait()
        frames += result["frames"]
        if result["frames"]:
            firsts.append(result["first"])
            lasts.append(result["last"])
        SPAN[:] = [min(firsts, default=0.0), max(lasts, default=0.0)]
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
            "hub_realtime_broadcast_latency_seconds_count", "hub_gc_pause_seconds_sum", "hub_gc_pause_seconds_count")
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
    span = max(SPAN[1] - SPAN[0], 1e-9)
    print(f"throughput: {made} events to {n} subscribers in {seconds:.0f}s (+3s drain): {frames:,} frames delivered "
          f"({frames / (made * n) * 100:.0f}% of {made * n:,}) at {frames / span:,.0f} msg/s "
          f"(first to last frame received, {span:.1f}s)", flush=True)


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
        # Warm-up: activate each dentist's actor and grow the hub's pool, as a running hub would be.
        warm = start - timedelta(days=100)
        await asyncio.gather(*(session.post(
            f"{url}/api/appointments", headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
            json={"dentist_id": str(d), "appointment_date": (warm + timedelta(minutes=30 * i)).isoformat(),
                  "appointment_type": "checkup"}) for i, d in enumerate(dentists * 2)))

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
        await paced(rate, int(rate * seconds), book)
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


async def peers(args: argparse.Namespace) -> None:
    """The same fan-out and memory figures for a python-socketio and a Node
    socket.io server, each told to emit to one room as fast as it can."""
    peer_dir = HERE / "fanout_peers"
    try:
        import socketio  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "python-socketio>=5,<6"], check=True)
    if not (peer_dir / "node_modules" / "socket.io").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=peer_dir, check=True)
    for name, command in (("python-socketio", [sys.executable, str(peer_dir / "pysio_server.py")]),
                          ("Node socket.io", ["node", str(peer_dir / "node_server.js")])):
        port = free_port()
        server = subprocess.Popen(command + [str(port)], stdout=subprocess.PIPE, text=True, preexec_fn=raise_fd_limit)
        try:
            assert server.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
            url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
            seconds = args.seconds + 3
            procs = spawn(url, "-", "socket.io", args.subscribers, seconds, latency=False)
            async with aiohttp.ClientSession() as session:
                async with session.post(f"http://127.0.0.1:{port}/publish?n={args.peer_messages}&size=300",
                                        timeout=aiohttp.ClientTimeout(total=seconds + 60)) as resp:
                    await resp.read()  # the server has emitted everything
                frames, _ = await asyncio.get_running_loop().run_in_executor(None, collect, procs)
            span = max(SPAN[1] - SPAN[0], 1e-9)
            print(f"{name}: {frames:,} of {args.peer_messages * args.subscribers:,} messages delivered to "
                  f"{args.subscribers} sockets at {frames / span:,.0f} msg/s (first to last frame received, "
                  f"{span:.1f}s)", flush=True)
            before = rss_kb(server.pid)
            procs = spawn(url, "-", "socket.io", args.idle, 3, latency=False)
            await asyncio.sleep(1.0)
            after = rss_kb(server.pid)
            collect(procs)
            print(f"{name}: {(after - before) / args.idle:.1f} KB per idle connection ({args.idle:,})", flush=True)
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:  # still busy emitting: it has had its chance
                server.kill()
                server.wait()


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    if args.only_peers:
        await peers(args)
        return
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
        print("  hub counters:", await hub_counters(url), flush=True)
        await throughput(dsn, ws_url, watcher, dentists[0], patients[0], args.subscribers, args.seconds)
        print("  hub counters:", await hub_counters(url), flush=True)
        await memory(proc.pid, ws_url, watcher, dentists[0], args.idle)
    finally:
        proc.terminate()
        proc.wait(15)
        await drop(server, dsn)
    if not args.no_peers:
        await peers(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", default="bench", choices=["bench", "subscribe"])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--latency-subscribers", type=int, default=3000)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--dentists", type=int, default=20, help="dentists the latency bookings spread over")
    parser.add_argument("--peer-messages", type=int, default=3000, help="messages each comparison server emits")
    parser.add_argument("--no-peers", action="store_true", help="skip the socket.io comparison servers")
    parser.add_argument("--only-peers", action="store_true", help="run only the socket.io comparison servers")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--topic")
    parser.add_argument("--count", type=int)
    parser.add_argument("--latency", action="store_true")
    parsed = parser.parse_args()
    # uvloop, as the hub serves: the subscribers and the load share the hub's two
    # cores, so the cheaper they are, the less they stand in its way.
    import uvloop
    if parsed.role == "subscribe":
        raise_fd_limit()
        result = uvloop.run(subscribe(parsed.url, parsed.token, parsed.topic, parsed.count, parsed.seconds,
                                      parsed.latency))
        os.set_blocking(sys.stdout.fileno(), True)  # the loop may leave it non-blocking: a big result would tear
        print(json.dumps(result), flush=True)
    else:
        uvloop.run(main(parsed))
