"""MCP at /mcp: the booking tools (web/mcp_tools.py) for AI agents.

The Streamable HTTP transport of the Model Context Protocol: each POST carries
one JSON-RPC message and a request is answered with one `application/json`
response; notifications and responses get 202. There is no server-to-client
stream (GET answers 405), since no tool needs one. Two eras are served:

- 2026-07-28, the current revision: stateless. No handshake; each request
  names its revision in `params._meta`, and `server/discover` says which
  revisions and capabilities we have.
- the handshake revisions 2024-11-05 to 2025-11-25: `initialize` gives an
  `Mcp-Session-Id`. It is signed with the hub's secret and names the revision
  and the caller it was issued to, so it needs no server state and any hub
  process serves any request; another caller's, or a forged, one gets 404
  (start over), as the spec says for an unknown session.

Every request carries the caller's JWT as `Authorization: Bearer`, checked as
REST checks it. Tool failures come back as tool results with `isError: true`
and the hub's error body, so the model can read and correct them; protocol
faults are JSON-RPC errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from hub import db, errors, metrics
from hub.auth import Principal
from hub.errors import HubError
from web._http import SETTINGS, principal
from web.mcp_tools import TOOLS

log = logging.getLogger("hub.mcp")
routes = web.RouteTableDef()

VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")  # the handshake revisions, newest first
MODERN = ("2026-07-28",)  # stateless revisions: no initialize, the revision in every request's _meta
SERVER_INFO = {"name": "dental-hub", "title": "Dental clinic booking hub", "version": "0.1.0"}
INSTRUCTIONS = ("Book dental appointments for a patient: find_slots, then hold_slot and book (with the hold's id "
                "as reservation_id); my_appointments, reschedule and cancel for existing ones; join_waitlist when "
                "nothing suitable is free. Times are ISO 8601 with an offset. A failed call returns isError with "
                "the hub's error code (SLOT_UNAVAILABLE, VALIDATION_ERROR with details.field, ...).")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
HEADER_MISMATCH, UNSUPPORTED_VERSION = -32020, -32022
SESSION = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
METHOD_HEADER = "Mcp-Method"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"

_encode = msgspec.json.Encoder().encode


class _Message(msgspec.Struct, forbid_unknown_fields=False):
    """One JSON-RPC 2.0 message as a client sends it."""
    jsonrpc: str
    method: str | msgspec.UnsetType = msgspec.UNSET
    id: int | str | None | msgspec.UnsetType = msgspec.UNSET
    params: dict[str, Any] | None = None


_decode = msgspec.json.Decoder(_Message).decode


class _Fault(Exception):
    """A JSON-RPC error answering a request."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def _rpc(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_encode({"jsonrpc": "2.0", **body}), headers=headers,
                        content_type="application/json")


def _fault(ident: Any, code: int, message: str, status: int = 200, data: Any = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _rpc(status, {"id": ident, "error": error})


# ---- sessions: signed, so every process knows them -------------------------------


def _key(request: web.Request) -> bytes:
    return hmac.new(request.app[SETTINGS].jwt_secret.encode(), b"mcp-session", hashlib.sha256).digest()


def _caller(who: Principal) -> str:
    return f"{who.claims.role}:{who.user_id or ''}"


def _sign(request: web.Request, version: str, who: Principal) -> str:
    body = f"{version}.{secrets.token_urlsafe(12)}"
    mac = hmac.new(_key(request), f"{body}.{_caller(who)}".encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(mac[:18]).decode()}"


def _session_version(request: web.Request, session: str, who: Principal) -> str | None:
    """The protocol revision of a session this caller was given, else None."""
    version, _, rest = session.partition(".")
    nonce, _, mac = rest.partition(".")
    if version not in VERSIONS or not nonce or not mac:
        return None
    expected = hmac.new(_key(request), f"{version}.{nonce}.{_caller(who)}".encode(), hashlib.sha256).digest()
    return version if hmac.compare_digest(base64.urlsafe_b64encode(expected[:18]).decode(), mac) else None


# ---- HTTP -------------------------------------------------------------------------------


def _origin_ok(request: web.Request) -> bool:
    """Browsers send Origin: only the hub's own pages may call (DNS rebinding)."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


async def _authenticate(request: web.Request) -> Principal | web.Response:
    try:
        return await principal(request)
    except HubError as exc:
        if exc.code != errors.ErrorCode.UNAUTHORIZED:
            raise
        return web.Response(status=401, body=_encode(exc.body()), content_type="application/json",
                            headers={"WWW-Authenticate": f'Bearer error="invalid_token", '
                                                         f'error_description="{exc.message}"'})


@routes.post("/mcp")
async def post(request: web.Request) -> web.StreamResponse:
    if not _origin_ok(request):
        return _fault(None, INVALID_REQUEST, "Origin not allowed", status=403)
    who = await _authenticate(request)
    if isinstance(who, web.Response):
        return who
    accept = request.headers.get("Accept", "*/*")
    if not any(t in accept for t in ("application/json", "*/*", "application/*")):
        return _fault(None, INVALID_REQUEST, "Accept must include application/json", status=406)
    try:
        msg = _decode(await request.read())
    except msgspec.ValidationError as exc:
        return _fault(None, INVALID_REQUEST, f"Not a JSON-RPC 2.0 message: {exc}", status=400)
    except msgspec.DecodeError as exc:
        return _fault(None, PARSE_ERROR, f"Malformed JSON: {exc}", status=400)
    ident = None if msg.id is msgspec.UNSET else msg.id
    if msg.jsonrpc != "2.0":
        return _fault(ident, INVALID_REQUEST, 'jsonrpc must be "2.0"', status=400)
    if msg.method is msgspec.UNSET:
        return web.Response(status=202)  # a response to a server request; we send none
    params = msg.params or {}
    meta = params.get("_meta")
    stamped = meta.get(META_VERSION) if isinstance(meta, dict) else None
    if stamped is not None or msg.method == "server/discover":
        return await _stateless(request, who, msg, ident, stamped or request.headers.get(VERSION_HEADER))
    if msg.method == "initialize":
        return _initialize(request, who, ident, params)
    if msg.id is not msgspec.UNSET and msg.method not in _METHODS:
        return _fault(ident, METHOD_NOT_FOUND, f"Method not found: {msg.method}")
    session = request.headers.get(SESSION)
    if session is None:
        if msg.id is msgspec.UNSET:
            return web.Response(status=202)
        return _fault(ident, INVALID_REQUEST, f"Missing {SESSION}: call initialize first", status=400)
    version = _session_version(request, session, who)
    if version is None:
        return _fault(ident, INVALID_REQUEST, "Unknown session: initialize again", status=404)
    stated = request.headers.get(VERSION_HEADER)
    if stated is not None and stated != version:
        return _fault(ident, INVALID_REQUEST, f"{VERSION_HEADER} {stated!r} is not this session's {version}",
                      status=400)
    if msg.id is msgspec.UNSET:
        return web.Response(status=202)  # notifications/initialized, cancelled, ...: nothing to do
    return await _reply(request, who, ident, msg.method, params)


async def _stateless(request: web.Request, who: Principal, msg: _Message, ident: Any,
                     version: str | None) -> web.Response:
    """The 2026-07-28 revision: no handshake, no session; each request names
    its revision in `_meta` (server/discover tells a client which we serve)."""
    if version not in MODERN:
        return _fault(ident, UNSUPPORTED_VERSION, f"Unsupported protocol version {version!r}", status=400,
                      data={"supported": [*MODERN, *VERSIONS], "requested": version})
    named = request.headers.get(METHOD_HEADER)
    if named is not None and named != msg.method:
        return _fault(ident, HEADER_MISMATCH, f"{METHOD_HEADER} {named!r} does not match the body's method",
                      status=400)
    if msg.id is msgspec.UNSET:
        return web.Response(status=202)
    cached = {"cacheScope": "public", "ttlMs": 3_600_000}  # the same for every caller, fixed per release
    if msg.method == "server/discover":
        return _rpc(200, {"id": ident, "result": {
            "supportedVersions": [*MODERN, *VERSIONS], "capabilities": {"tools": {"listChanged": False}},
            "instructions": INSTRUCTIONS, "_meta": {SERVER_INFO_META: SERVER_INFO}, "resultType": "complete",
            **cached}})
    if msg.method not in _METHODS:
        return _fault(ident, METHOD_NOT_FOUND, f"Method not found: {msg.method}")
    return await _reply(request, who, ident, msg.method, msg.params or {}, resultType="complete",
                        **(cached if msg.method == "tools/list" else {}))


async def _reply(request: web.Request, who: Principal, ident: Any, method: str, params: dict[str, Any],
                 **extra: Any) -> web.Response:
    try:
        result = await _call(request, who, method, params)
    except _Fault as fault:
        return _fault(ident, fault.code, fault.message, data=fault.data)
    return _rpc(200, {"id": ident, "result": {**result, **extra}})


@routes.get("/mcp")
async def get(request: web.Request) -> web.Response:
    """No server-initiated messages: the spec's answer is 405."""
    return web.Response(status=405, headers={"Allow": "POST, DELETE"})


@routes.delete("/mcp")
async def delete(request: web.Request) -> web.Response:
    """Sessions hold no state on the server, so ending one is only acknowledged."""
    who = await _authenticate(request)
    if isinstance(who, web.Response):
        return who
    session = request.headers.get(SESSION)
    if session is None or _session_version(request, session, who) is None:
        return _fault(None, INVALID_REQUEST, "Unknown session", status=404)
    return web.Response(status=204)


def _initialize(request: web.Request, who: Principal, ident: Any, params: dict[str, Any]) -> web.Response:
    if ident is None:
        return _fault(None, INVALID_REQUEST, "initialize is a request: give it an id", status=400)
    asked = params.get("protocolVersion")
    version = asked if asked in VERSIONS else VERSIONS[0]
    result = {"protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
              "serverInfo": SERVER_INFO, "instructions": INSTRUCTIONS}
    return _rpc(200, {"id": ident, "result": result}, headers={SESSION: _sign(request, version, who)})


_METHODS = ("ping", "tools/list", "tools/call")


async def _call(request: web.Request, who: Principal, method: str, params: dict[str, Any]) -> Any:
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": _definitions()}
    if method == "tools/call":
        name = params.get("name")
        tool = TOOLS.get(name) if isinstance(name, str) else None
        if tool is None:
            raise _Fault(INVALID_PARAMS, f"Unknown tool: {name!r}", {"tools": sorted(TOOLS)})
        return await _run(request, who, tool.name, params.get("arguments"))
    raise AssertionError(method)


_DEFINITIONS: list[dict[str, Any]] = []


def _definitions() -> list[dict[str, Any]]:
    if not _DEFINITIONS:
        _DEFINITIONS.extend(t.definition() for t in TOOLS.values())
    return _DEFINITIONS


async def _run(request: web.Request, who: Principal, name: str, arguments: Any) -> dict[str, Any]:
    """A tool call's result; a refusal is a result too, with isError and the hub's error body."""
    tool = TOOLS[name]
    try:
        answer = await tool.run(request.app, who, tool.decode(arguments))
    except HubError as exc:
        failure = exc
    except db.DATA_ERRORS as exc:
        failure = db.data_error(exc)
    except Exception:
        log.exception("tool %s failed", name)
        failure = HubError(errors.ErrorCode.INTERNAL_ERROR, "An unexpected error occurred")
    else:
        metrics.MCP_CALLS.labels(name, "ok").inc()
        text = _encode(answer)
        return {"content": [{"type": "text", "text": text.decode()}], "structuredContent": msgspec.json.decode(text),
                "isError": False}
    metrics.MCP_CALLS.labels(name, failure.code.value).inc()
    body = failure.body()
    return {"content": [{"type": "text", "text": f"{failure.code.value}: {failure.message}"
                         + (f" {_encode(failure.details).decode()}" if failure.details else "")}],
            "structuredContent": body, "isError": True}
