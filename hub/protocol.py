"""The Phoenix channel wire format, as @supabase/realtime-js speaks it.

`vsn=1.0.0` text frames are JSON objects `{join_ref, ref, topic, event, payload}`;
`vsn=2.0.0` text frames are JSON arrays `[join_ref, ref, topic, event, payload]`,
and a client broadcast arrives as a binary frame (kind 3). The server always
answers with text frames, which both versions accept.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

V1, V2 = "1.0.0", "2.0.0"
VERSIONS = (V1, V2)

# Binary frame kinds of realtime-js's serializer.
_USER_BROADCAST_PUSH = 3
_HEADER = struct.Struct("!BBBBBBB")
_LEN1, _LEN2, _LEN3 = struct.Struct("!BB"), struct.Struct("!BBH"), struct.Struct("!BBQ")  # kind, len(join_ref), len(ref), len(topic), len(event), len(meta), encoding


class ProtocolError(ValueError):
    """A frame that is not a Phoenix message; the message says why."""


class Message(msgspec.Struct, frozen=True, array_like=False):
    topic: str
    event: str
    payload: dict[str, Any]
    ref: str | None = None
    join_ref: str | None = None


_v1 = msgspec.json.Decoder(Message)
_v2 = msgspec.json.Decoder(tuple[str | None, str | None, str, str, dict[str, Any]])
_encode = msgspec.json.Encoder().encode


def decode_text(data: str | bytes, vsn: str) -> Message:
    """Raises ProtocolError for anything but a well-formed message."""
    try:
        if vsn == V1:
            return _v1.decode(data)
        join_ref, ref, topic, event, payload = _v2.decode(data)
    except RecursionError:
        raise ProtocolError("message nested deeper than the decoder allows") from None
    except msgspec.DecodeError as exc:
        shape = "[join_ref, ref, topic, event, payload]" if vsn == V2 else "{join_ref, ref, topic, event, payload}"
        raise ProtocolError(f"expected a JSON message {shape}: {exc}") from None
    return Message(topic, event, payload, ref, join_ref)


def decode_binary(data: bytes) -> Message:
    """A client broadcast push (kind 3): header, strings, then the payload."""
    if len(data) < _HEADER.size:
        raise ProtocolError("binary frame too short")
    kind, jl, rl, tl, el, ml, encoding = _HEADER.unpack_from(data)
    if kind != _USER_BROADCAST_PUSH:
        raise ProtocolError(f"unsupported binary frame kind {kind}")
    offset = _HEADER.size
    parts = []
    for name, length in zip(("join_ref", "ref", "topic", "event", "metadata"), (jl, rl, tl, el, ml)):
        chunk = data[offset:offset + length]
        if len(chunk) != length:
            raise ProtocolError("binary frame truncated")
        try:
            parts.append(chunk.decode("utf-8", errors="strict"))
        except UnicodeDecodeError:
            raise ProtocolError(f"binary frame {name} is not UTF-8") from None
        offset += length
    join_ref, ref, topic, event, meta = parts
    body = data[offset:]
    try:
        inner: Any = msgspec.json.decode(body) if encoding == 1 else body.decode("utf-8")
        extra = msgspec.json.decode(meta) if meta else {}
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"binary broadcast payload is not valid: {exc}") from None
    payload = {"type": "broadcast", "event": event, "payload": inner}
    if isinstance(extra, dict):
        payload.update({k: v for k, v in extra.items() if k not in payload})
    return Message(topic, "broadcast", payload, ref or None, join_ref or None)


def encode(vsn: str, topic: str, event: str, payload: Any, ref: str | None = None,
           join_ref: str | None = None) -> bytes:
    """One text frame; the same bytes serve every subscriber of that version."""
    if vsn == V1:
        return _encode({"join_ref": join_ref, "ref": ref, "topic": topic, "event": event, "payload": payload})
    return _encode([join_ref, ref, topic, event, payload])


def wire(data: bytes) -> bytes:
    """`data` as a server-to-client WebSocket text frame (RFC 6455: FIN, text
    opcode, no mask). Server frames are the same bytes for every socket, so the
    fan-out writes them straight to each transport."""
    n = len(data)
    if n < 126:
        header = _LEN1.pack(0x81, n)
    elif n < 65536:
        header = _LEN2.pack(0x81, 126, n)
    else:
        header = _LEN3.pack(0x81, 127, n)
    return header + data


def reply(vsn: str, msg: Message, status: str, response: Any) -> bytes:
    return encode(vsn, msg.topic, "phx_reply", {"status": status, "response": response}, msg.ref, msg.join_ref)
