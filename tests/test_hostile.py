"""A corpus of hostile requests and socket frames fired at a live hub process:
no 500, every refusal in the JSON error body, no traceback in the log, and
the socket and the service still working afterwards."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import uuid
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import quote

import aiohttp
import pytest

from hub import db
from hub.auth import issue_token
from services import users
from tests.conftest import ALL_DAY, SECRET, HubProcesses, slot_at

DEEP = "[" * 10_000 + "]" * 10_000


class Hub:
    def __init__(self, url: str, log: Path, admin: str, patient: str, appointment: str, dentist: str) -> None:
        self.url, self.log = url, log
        self.admin, self.patient, self.appointment, self.dentist = admin, patient, appointment, dentist
        self.host, self.port = "127.0.0.1", int(url.rsplit(":", 1)[1])


@pytest.fixture
async def hub(dsn: str, tmp_path: Path) -> AsyncIterator[Hub]:
    con = await db.connect(dsn)
    try:
        admin_id = await users.create_user(con, email=f"{uuid.uuid4().hex[:8]}@hostile.example", full_name="A",
                                           roles=("admin",))
        patient_id = await users.create_user(con, email=f"{uuid.uuid4().hex[:8]}@hostile.example", full_name="P")
    finally:
        await con.close()
    hubs = HubProcesses(dsn, tmp_path)
    [url] = await hubs.start(1)
    admin, patient = issue_token(SECRET, admin_id), issue_token(SECRET, patient_id)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/api/dentists", json={"name": "Dr Hostile", "timezone": "UTC",
                                                       "available_times": ALL_DAY},
                          headers={"Authorization": f"Bearer {admin}"}) as r:
            dentist = (await r.json())["id"]
        async with s.post(f"{url}/api/appointments", json={
                "dentist_id": dentist, "appointment_date": slot_at(5, 9), "appointment_type": "checkup"},
                headers={"Authorization": f"Bearer {patient}"}) as r:
            assert r.status == 201, await r.text()
            appointment = (await r.json())["id"]
    try:
        yield Hub(url, tmp_path / f"hub-{url.rsplit(':', 1)[1]}.log", admin, patient, appointment, dentist)
    finally:
        hubs.stop()


async def raw(hub: Hub, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; read the answer until the hub closes or it is complete."""
    reader, writer = await asyncio.open_connection(hub.host, hub.port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
        return status, headers, body
    finally:
        writer.close()


def request(method: str, target: str, hub: Hub, headers: dict[str, str] | None = None, body: bytes = b"",
            token: str | None = None) -> bytes:
    head = {"Host": "x", "Connection": "close", "Content-Length": str(len(body)),
            **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return f"{method} {target} HTTP/1.1\r\n{lines}\r\n".encode("latin-1") + body


def multipart(parts: list[tuple[str, bytes]], boundary: str = "XyZ", close: bool = True) -> bytes:
    out = b"".join(f"--{boundary}\r\n{head}\r\n\r\n".encode("latin-1") + data + b"\r\n" for head, data in parts)
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def http_corpus(hub: Hub) -> list[tuple[str, bytes]]:
    p, a = hub.patient, hub.admin
    appt = f"/api/appointments/{hub.appointment}"
    docs = f"{appt}/documents"
    pdf = "Content-Type: application/pdf"
    mp = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    cases: list[tuple[str, bytes]] = [
        ("long url", request("GET", "/api/appointments?x=" + "a" * 9000, hub, token=p)),
        ("very long url", request("GET", "/" + "a" * 70_000, hub)),
        ("long header", request("GET", "/health", hub, {"X-Big": "b" * 9000})),
        ("long header name", request("GET", "/health", hub, {"X" * 9000: "1"})),
        ("long token", request("GET", "/api/profiles/me", hub, token="t" * 9000)),
        ("many headers", request("GET", "/health", hub, {f"X-H{i}": "1" for i in range(300)})),
        ("garbage line", b"GARBAGE\r\n\r\n"),
        ("tls hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40),
        ("bad version", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("nul in target", b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("space in header name", b"GET /health HTTP/1.1\r\nBad Header: x\r\n\r\n"),
        ("header without colon", b"GET /health HTTP/1.1\r\nNoColon\r\n\r\n"),
        ("lf only", b"GET /health HTTP/1.1\nHost: x\n\n"),
        ("bad content-length", b"POST /api/appointments HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
        ("negative content-length", b"POST /api/appointments HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        ("two content-lengths", b"POST /api/appointments HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                                b"Content-Length: 2\r\n\r\nab"),
        ("bad chunk", b"POST /api/appointments HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        ("bad transfer-encoding", b"POST /api/appointments HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, x\r\n\r\n"),
        ("multipart without boundary", request("POST", docs, hub, {"Content-Type": "multipart/form-data"},
                                               multipart([("Content-Disposition: form-data; name=file", b"x")]),
                                               token=p)),
        ("multipart garbage part header", request("POST", docs, hub, mp,
                                                  b"--XyZ\r\n\x00\x01garbage\r\n\r\nx\r\n--XyZ--\r\n", token=p)),
        ("multipart nul filename", request("POST", docs, hub, mp, multipart(
            [(f'Content-Disposition: form-data; name="file"; filename="a\x00b.pdf"\r\n{pdf}', b"%PDF")]), token=p)),
        ("multipart huge filename", request("POST", docs, hub, mp, multipart(
            [(f'Content-Disposition: form-data; name="file"; filename="{"n" * 10_000}.pdf"\r\n{pdf}', b"%PDF")]),
            token=p)),
        ("multipart unclosed", request("POST", docs, hub, mp, multipart(
            [(f'Content-Disposition: form-data; name="file"; filename="a.pdf"\r\n{pdf}', b"%PDF")], close=False),
            token=p)),
        ("multipart truncated", request("POST", docs, hub, mp, b"--XyZ\r\nContent-Disposition: form-data; name=",
                                        token=p)),
        ("multipart wrong boundary", request("POST", docs, hub, mp, multipart(
            [("Content-Disposition: form-data; name=file", b"x")], boundary="Other"), token=p)),
        ("multipart no name", request("POST", docs, hub, mp, multipart([(pdf, b"%PDF")]), token=p)),
        ("multipart bad disposition", request("POST", docs, hub, mp, multipart(
            [(f'Content-Disposition: ;;;=="\r\n{pdf}', b"%PDF")]), token=p)),
        ("multipart boundary too long", request("POST", docs, hub, {
            "Content-Type": "multipart/form-data; boundary=" + "b" * 200}, b"--" + b"b" * 200 + b"\r\n", token=p)),
        ("upload not multipart", request("POST", docs, hub, {"Content-Type": "text/plain"}, b"hello", token=p)),
        ("deep json", request("POST", "/api/appointments", hub, {"Content-Type": "application/json"},
                              DEEP.encode(), token=p)),
        ("deep json in field", request("POST", "/api/appointments", hub, {"Content-Type": "application/json"},
                                       ('{"notes": ' + DEEP + "}").encode(), token=p)),
        ("invalid utf-8 json", request("POST", "/api/appointments", hub, {"Content-Type": "application/json"},
                                       b'{"notes": "\xff\xfe"}', token=p)),
        ("nul in json string", request("POST", "/api/appointments", hub, {"Content-Type": "application/json"},
                                       json.dumps({"dentist_id": hub.dentist, "appointment_date": slot_at(6),
                                                   "appointment_type": "checkup", "notes": "a\u0000b"}).encode(),
                                       token=p)),
        ("huge number", request("POST", "/api/appointments", hub, {"Content-Type": "application/json"},
                                b'{"dentist_id": 1e400}', token=p)),
        ("far-future booking", request("POST", "/api/appointments", hub, {"Content-Type": "application/json"},
                                       json.dumps({"dentist_id": hub.dentist, "appointment_type": "checkup",
                                                   "appointment_date": "9999-12-31T23:30:00+00:00"}).encode(),
                                       token=p)),
        ("body too large", request("POST", "/api/appointments", hub, {"Content-Type": "application/json"},
                                   b"[" + b"1," * 600_000 + b"1]", token=p)),
        ("alg none token", request("GET", "/api/profiles/me", hub, token="eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")),
        ("empty bearer", request("GET", "/api/profiles/me", hub, {"Authorization": "Bearer "})),
    ]
    for value in ("9999-12-31", "0001-01-01", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59.999999-05:00",
                  "10000-01-01", "2026-13-45", "x", "%00", "%ff", "2026-01-01T00:00:00", "1e99"):
        for name in ("date_from", "date_to"):
            cases.append((f"{name}={value}", request("GET", f"/api/appointments?{name}={value}", hub, token=a)))
    for query in ("limit=-1", "limit=abc", "limit=1e99", "offset=99999999999999999999", "status=bogus",
                  "dentist_id=nope", "patient_id=%00", "status=" + ",".join(["pending"] * 500), "unknown=1",
                  "limit=%ff%fe", "dentist_id=" + "0" * 2000):
        cases.append((query, request("GET", f"/api/appointments?{query}", hub, token=a)))
    for target in ("/api/appointments/%00", "/api/appointments/..%2f..%2fetc%2fpasswd",
                   "/api/appointments/" + "9" * 5000,
                   f"/api/availability/{hub.dentist}/slots?date=2026-02-30", f"/api/availability/{hub.dentist}/slots",
                   f"/api/availability/{hub.dentist}/slots?date=9999-12-31",
                   f"/api/availability/{hub.dentist}/slots?from=9999-12-01&to=9999-12-31",
                   f"/api/availability/{hub.dentist}/slots?from=2026-01-01&to=2027-01-01",
                   f"{docs}/{uuid.uuid4()}", "/api/%ff%fe", "/api/dentists?limit=-5", "/%2e%2e/%2e%2e/etc/passwd"):
        cases.append((target, request("GET", target, hub, token=p)))
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/api/appointments", appt, f"/api/availability/{hub.dentist}", "/api/profiles/me",
                     f"/api/availability/{hub.dentist}/reservations", "/api/dentists"):
            for body in (b"", b"{", b"null", b"[]", b'{"x": 1}', b'"\xff"', DEEP.encode()[:5000]):
                cases.append((f"{method} {path} {body[:10]!r}",
                              request(method, path, hub, {"Content-Type": "application/json"}, body, token=p)))
    for key in ("", "k" * 201, "\t", "a b"):
        cases.append((f"idempotency {key[:5]!r}", request("POST", "/api/appointments", hub, {
            "Content-Type": "application/json", "Idempotency-Key": key}, b"{}", token=p)))
    return cases


def binary_frame(join_ref: bytes, ref: bytes, topic: bytes, event: bytes, meta: bytes, payload: bytes,
                 kind: int = 3, encoding: int = 1) -> bytes:
    return struct.pack("!BBBBBBB", kind, len(join_ref), len(ref), len(topic), len(event), len(meta), encoding) \
        + join_ref + ref + topic + event + meta + payload


def frame_corpus() -> list[str | bytes]:
    def join(payload: str, topic: str = "realtime:x") -> str:
        return f'[null,"1","{topic}","phx_join",{payload}]'

    bindings = ",".join(['{"table":"appointments"}'] * 30)
    text: list[str | bytes] = [
        "not json", "{}", "[]", "[1,2,3,4,5]", "null", '"x"', DEEP, f'[null,"1","t","e",{{"a":{DEEP}}}]',
        '[null,"1","phoenix","nope",{}]', join("[]"), join("{}", "t" * 10_000), join('{"config":[]}'),
        join('{"config":{"postgres_changes":{}}}'), join('{"config":{"postgres_changes":[' + bindings + "]}}"),
        join('{"config":{"postgres_changes":[{"table":"appointments","filter":"x"}]}}'),
        join('{"access_token":5}'), join('{"access_token":"bad"}'), join("{}", "appointments:dentist_id=nope"),
        '[null,"1","never-joined","broadcast",{}]', join('{"config":{"broadcast":"yes","presence":5}}'),
        join('{"versions":{"x":"y"}}'), join('{"versions":' + DEEP + "}"),
        "[null,null,null,null,null]", '["\\ud800","1","t","e",{}]',
    ]
    binary: list[str | bytes] = [
        b"", b"\x03", b"\x01\x00\x00\x00\x00\x00\x00", b"\x03\xff\xff\xff\xff\xff\x01",
        binary_frame(b"", b"1", b"\xff\xfe", b"ev", b"", b"{}"),
        binary_frame(b"\xc3", b"1", b"t", b"ev", b"", b"{}"),
        binary_frame(b"", b"1", b"t", b"\x80", b"", b"{}"),
        binary_frame(b"", b"1", b"t", b"ev", b"\xff", b"{}"),
        binary_frame(b"", b"1", b"t", b"ev", b"{not json", b"{}"),
        binary_frame(b"", b"1", b"t", b"ev", b"", DEEP.encode()),
        binary_frame(b"", b"1", b"t", b"ev", DEEP[:254].encode(), b"{}"),
        binary_frame(b"", b"1", b"t", b"ev", b"", b"\xff", encoding=0),
        binary_frame(b"", b"1", b"t", b"ev", b"", b"{}", kind=9),
    ]
    return text + binary


async def test_hostile_requests_get_json_refusals_and_the_hub_keeps_serving(hub: Hub) -> None:
    answered: dict[int, int] = {}
    for name, data in http_corpus(hub):
        try:
            status, headers, body = await raw(hub, data)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:  # a closed connection is a refusal too
            raise AssertionError(f"{name}: the hub closed the connection without an answer ({exc})") from None
        answered[status] = answered.get(status, 0) + 1
        assert status != 500, f"{name}: {body[:500]!r}"
        if status >= 400:
            assert headers.get("content-type", "").startswith("application/json"), f"{name}: {status} {body[:300]!r}"
            error = json.loads(body)["error"]
            assert error["code"] and error["message"] and error["timestamp"], name
    print(f"\nhostile HTTP corpus: {sum(answered.values())} requests, by status {dict(sorted(answered.items()))}")
    assert answered.get(414) and answered.get(431)
    # The service still books, and the log holds no traceback.
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/api/appointments", json={
                "dentist_id": hub.dentist, "appointment_date": slot_at(5, 11), "appointment_type": "checkup"},
                headers={"Authorization": f"Bearer {hub.patient}"}) as r:
            assert r.status == 201, await r.text()
        async with s.get(f"{hub.url}/health") as r:
            assert r.status == 200
    log = hub.log.read_text()
    assert "Traceback" not in log and '"level":"error"' not in log.lower(), log[-3000:]


async def test_a_file_name_with_cr_lf_is_stored_safely_and_downloads(hub: Hub) -> None:
    name = "evil\r\nSet-Cookie: x=1\r\n..\\..\\ré.pdf"
    # RFC 5987's filename* carries any character, percent-encoded; the hub decodes it.
    form = multipart([(f"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''{quote(name)}\r\n"
                       "Content-Type: application/pdf", b"%PDF-1.4 test")])
    headers = {"Authorization": f"Bearer {hub.patient}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{hub.url}/api/appointments/{hub.appointment}/documents", data=form, headers={
                **headers, "Content-Type": "multipart/form-data; boundary=XyZ"}) as r:
            assert r.status == 201, await r.text()
            doc = await r.json()
        assert not re.search(r'[\x00-\x1f"/\\]', doc["file_name"]), doc["file_name"]
        async with s.get(f"{hub.url}{doc['file_url']}", headers=headers) as r:
            assert r.status == 200 and await r.read() == b"%PDF-1.4 test"
            disposition = r.headers["Content-Disposition"]
            assert "Set-Cookie" not in r.headers and "\r" not in disposition and "\n" not in disposition
            assert "filename*=UTF-8''" in disposition and quote("ré") in disposition


async def test_hostile_frames_get_error_replies_and_the_socket_stays_open(hub: Hub) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{hub.url}/realtime/v1/websocket?apikey={hub.patient}&vsn=2.0.0") as ws:
            for i, frame in enumerate(frame_corpus()):
                if isinstance(frame, str):
                    await ws.send_str(frame)
                else:
                    await ws.send_bytes(frame)
                ref = f"hb{i}"
                await ws.send_str(json.dumps([None, ref, "phoenix", "heartbeat", {}]))
                for _ in range(5):  # the frame's error reply (if any), then the heartbeat's
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    assert msg.type == aiohttp.WSMsgType.TEXT, f"frame {i} {frame[:80]!r}: socket got {msg}"
                    reply = json.loads(msg.data)
                    if reply[1] == ref:
                        break
                else:
                    raise AssertionError(f"frame {i}: no heartbeat reply")
            assert not ws.closed
    log = hub.log.read_text()
    assert "Traceback" not in log, log[-3000:]
