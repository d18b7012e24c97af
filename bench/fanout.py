"""Fan-out of one hub process to many realtime subscribers.

    .venv/bin/python bench/fanout.py [--subscribers 1000] [--latency-subscribers 3000] [--rounds 3] [--idle 10000]

Starts `hub serve` (one process) on a scratch database and, in separate
subscriber processes (bench/subscriber.c, built with cc on first use), opens
raw WebSockets that join `availability:dentist_id=<id>` with the Phoenix
protocol and count frames.
  1. latency: REST bookings open-loop at --rate/s spread over --dentists
     dentists, --latency-subscribers subscribers spread over their channels;
     booking sent -> slot_booked received, p50/p99, in --rounds rounds;
  2. throughput: SQL inserts of appointments (each one event -> one frame per
     subscriber, through LISTEN/NOTIFY and the feed) for --seconds; delivered
     frames per second across all subscribers;
  3. memory: the hub's RSS before and after --idle idle joined sockets.
Prints one line per figure (docs/BENCHMARKS.md records them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
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

from booking import SECRET, Usage, drop, paced, pct, setup, start_hub  # noqa: E402

from tests.conftest import free_port  # noqa: E402

from hub import db  # noqa: E402
from hub.auth import issue_token  # noqa: E402

PER_PROCESS = 1000  # sockets per subscriber process


def watcher() -> str:
    """A token for a user the hub has not seen."""
    return issue_token(SECRET, uuid.uuid4(), ttl=3600)


# ---- the subscribers (separate processes) ------------------------------------------

def subscriber_binary() -> Path:
    """bench/subscriber.c, built on first use: Python subscribers cost as much
    CPU per frame as the hub, on the same two cores."""
    source, binary = HERE / "subscriber.c", HERE.parent / "var" / "bench-subscriber"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        binary.parent.mkdir(exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def _as_client() -> None:
    """Real clients run on their own machines; here they share the server's two
    cores, so they yield to it (nice 10). Their reads can only come later for
    it, so the latency they measure is not flattered."""
    raise_fd_limit()
    os.nice(10)


def spawn(url: str, token: str, topic: str, count: int, seconds: float, latency: bool) -> list[subprocess.Popen]:
    """`count` sockets joined to `topic` (several, comma-separated: socket i
    joins topic i % n; "socket.io": speak engine.io v4 instead), in processes of
    PER_PROCESS; returns once every socket has joined."""
    parsed = urlsplit(url)
    path = f"{parsed.path}?{parsed.query}" if topic == "socket.io" else f"{parsed.path}?apikey={token}&vsn=2.0.0"
    binary = subscriber_binary()
    procs = []
    for start in range(0, count, PER_PROCESS):
        procs.append(subprocess.Popen(
            [str(binary), parsed.hostname or "", str(parsed.port), path, str(min(PER_PROCESS, count - start)),
             str(seconds), str(int(latency)), topic], stdout=subprocess.PIPE, text=True, preexec_fn=_as_client))
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
        for key, at in result["seen"]:
            seen.setdefault(key, []).append(at)
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


async def metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics") as resp:
            return await resp.text()


async def full_collections(url: str) -> int:
    """The hub's gen-2 collections so far. Each stalls the hub, the longer
    the more sockets are open (docs/BENCHMARKS.md): a round reports how many
    fell inside it."""
    prefix = 'hub_gc_pause_seconds_count{generation="2"} '
    lines = (await metrics(url)).splitlines()
    return next((int(float(line[len(prefix):])) for line in lines if line.startswith(prefix)), 0)  # none yet


async def hub_counters(url: str) -> str:
    """What the hub says it sent and whom it cut off (from its /metrics)."""
    text = await metrics(url)
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


class Client:
    """Keep-alive HTTP/1.1 connections that put a request on the wire the
    moment it is stamped. aiohttp's client spends its own CPU per request, on
    the cores the hub runs on, between the stamp and the wire: it would count
    as the hub's latency."""

    def __init__(self, url: str) -> None:
        parsed = urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, token: str, body: dict[str, str]) -> int:
        data = json.dumps(body).encode()
        reader, writer = self._idle.pop() if self._idle else await asyncio.open_connection(self.host, self.port)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        self._idle.append((reader, writer))
        return int(head[9:12])

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()


async def latency(hub: int, url: str, ws_url: str, token: str, tokens: list[str], dentists: list[uuid.UUID],
                  n: int, rate: int, seconds: float, round_: int = 0) -> float:
    """Bookings spread over `dentists` (one dentist's actor serializes its own
    bookings); the subscribers are spread over those dentists' channels.
    Each round books its own week of slots; returns the round's p99 (ms)."""
    topics = ",".join(f"availability:dentist_id={d}" for d in dentists)
    procs = spawn(ws_url, token, topics, n, seconds + 5, latency=True)
    start = (datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
             + timedelta(days=200 + 7 * round_))
    sent: dict[str, float] = {}
    answered: list[float] = []
    refused: list[int] = []
    client = Client(url)

    async def book(i: int, when: datetime) -> None:
        dentist = dentists[i % len(dentists)]
        key = f"{dentist}/{when.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        sent[key] = time.time()
        status = await client.post("/api/appointments", tokens[i % len(tokens)], {
            "dentist_id": str(dentist), "appointment_date": when.isoformat(), "appointment_type": "checkup"})
        answered.append((time.time() - sent[key]) * 1000)
        if status != 201:
            refused.append(status)

    # Warm-up: activate each dentist's actor, grow the hub's pool and open connections, as on a running hub.
    await asyncio.gather(*(book(i, start - timedelta(days=100, minutes=-30 * i)) for i in range(len(dentists) * 2)))
    sent.clear()
    answered.clear()
    full_gcs = await full_collections(url)
    usage = Usage(hub)
    await paced(rate, int(rate * seconds), lambda i: book(i, start + timedelta(minutes=30 * (i // len(dentists)))))
    used = usage.stop()
    full_gcs = await full_collections(url) - full_gcs
    client.close()
    if refused:
        print(f"  {len(refused)} bookings refused (statuses {sorted(set(refused))})", flush=True)
    _, seen = collect(procs)
    per_booking = {k: [(t - sent[k]) * 1000 for t in times] for k, times in seen.items() if k in sent}
    lat = [ms for times in per_booking.values() for ms in times]
    expected = len(sent) * n // len(dentists)
    print(f"latency, round {round_ + 1}, at {rate} bookings/s over {len(dentists)} dentists, {n} subscribers "
          f"({n // len(dentists)} per dentist's channel): {len(lat):,} of {expected:,} deliveries seen; "
          f"booking->delivery p50={pct(lat, 50):.1f}ms p99={pct(lat, 99):.1f}ms max={max(lat):.1f}ms; "
          f"the booking's own HTTP answer p50={pct(answered, 50):.1f}ms p99={pct(answered, 99):.1f}ms; "
          f"{used.shares()}; full GC collections during the round: {full_gcs}", flush=True)
    print("  " + tail(per_booking, pct(lat, 99)), flush=True)
    return pct(lat, 99)


def tail(per_booking: dict[str, list[float]], cut: float) -> str:
    """Whose deliveries make the top 1%, and whether they were late before
    their fan-out began (first frame late) or during it (first frame on time)."""
    late = [times for times in per_booking.values() if max(times) >= cut]
    if not late:
        return "tail: none"
    return (f"tail: the top 1% belongs to {len(late)} of {len(per_booking)} bookings; their first frame came after "
            f"{statistics.median(min(t) for t in late):.1f} ms (median), their last after "
            f"{statistics.median(max(t) for t in late):.1f} ms (every booking: "
            f"{statistics.median(min(t) for t in per_booking.values()):.1f} and "
            f"{statistics.median(max(t) for t in per_booking.values()):.1f} ms)")


async def memory(pid: int, ws_url: str, token: str, dentist: uuid.UUID, n: int) -> None:
    before = rss_kb(pid)
    usage = Usage(pid)  # the joins come all at once, as after a restart: a reconnect storm
    procs = spawn(ws_url, token, f"availability:dentist_id={dentist}", n, 3, latency=False)
    joins = usage.stop()
    await asyncio.sleep(1.0)
    after = rss_kb(pid)
    collect(procs)
    print(f"memory: hub RSS {before / 1024:.0f} MiB -> {after / 1024:.0f} MiB with {n:,} idle joined sockets: "
          f"{(after - before) / n:.1f} KB per connection; the joins took {joins.seconds:.1f}s "
          f"({n / joins.seconds:,.0f}/s, hub CPU {joins.cpu / n * 1e6:.0f} us each)", flush=True)


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
    tmp = tempfile.mkdtemp()
    proc, url = await start_hub(dsn, tmp, preexec_fn=raise_fd_limit)
    ws_url = url.replace("http://", "ws://") + "/realtime/v1/websocket"
    try:
        print(f"machine: {os.cpu_count()} cores; hub: 1 process; subscribers: separate processes "
              f"({PER_PROCESS} sockets each)", flush=True)
        # Latency first, on a quiet hub: the throughput run leaves a backlog behind it.
        # Rounds, because one 5 s run on a shared 2-core host says more about its neighbours than about the hub.
        # Each phase's subscribers sign in as a user the hub has not seen (a first visit): one user
        # throughout would rejoin from its catch-up cursor and replay what it missed since the last
        # phase (docs/REALTIME.md) while the next one runs, which measures replay, not delivery.
        p99s = [await latency(proc.pid, url, ws_url, watcher(), tokens, dentists[1:], args.latency_subscribers,
                              args.rate, args.seconds, i) for i in range(args.rounds)]
        print(f"latency p99 of the {args.rounds} rounds: {', '.join(f'{p:.1f}' for p in p99s)} ms "
              f"(median {statistics.median(p99s):.1f} ms)", flush=True)
        print("  hub counters:", await hub_counters(url), flush=True)
        await throughput(dsn, ws_url, watcher(), dentists[0], patients[0], args.subscribers, args.seconds)
        print("  hub counters:", await hub_counters(url), flush=True)
        await memory(proc.pid, ws_url, watcher(), dentists[0], args.idle)
    finally:
        proc.terminate()
        proc.wait(15)
        await drop(server, dsn)
    if not args.no_peers:
        await peers(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--latency-subscribers", type=int, default=3000)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds (one line each, then their p99s)")
    parser.add_argument("--dentists", type=int, default=20, help="dentists the latency bookings spread over")
    parser.add_argument("--peer-messages", type=int, default=3000, help="messages each comparison server emits")
    parser.add_argument("--no-peers", action="store_true", help="skip the socket.io comparison servers")
    parser.add_argument("--only-peers", action="store_true", help="run only the socket.io comparison servers")
    parser.add_argument("--seconds", type=float, default=5.0)
    parsed = parser.parse_args()
    # uvloop, as the hub serves: the load shares the hub's two cores.
    import uvloop
    uvloop.run(main(parsed))
