"""Decoding what a client pushes on the socket into msgspec structs.

Each handler decodes its payload once, where it handles it: the join
(web/joins.py), a token refresh (web/joins.py), a broadcast (web/relay.py),
presence (web/presence.py) and the booking commands (web/commands.py); the
structs sit beside their handlers. Keys a struct does not name are ignored, as
Supabase Realtime ignores them: realtime-js and realtime-py send some the hub
does not read. The structs are frozen and left out of the garbage collector
(gc=False): decoded JSON holds no reference cycles.

A payload that does not fit its struct is refused with a HubError. Where the
protocol has its own words for a field (`config must be an object`), the
handler's `refusals` say them, keyed by the field's path as msgspec names it,
with list indexes left out (`config.postgres_changes[].event`). Any other
field gets the REST bodies' VALIDATION_ERROR, which names it
(errors.from_validation).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, TypeVar

import msgspec

from hub import errors
from hub.errors import HubError

T = TypeVar("T")

# (the value at fault, None when it is missing; the object holding it) -> the refusal
Refusal = Callable[[Any, Any], HubError]

_AT = re.compile(r" - at `(?:key` in `)?\$([^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `")
_STEP = re.compile(r"\.(\w+)|\[(\d+)\]")


def decode(payload: Any, type_: type[T], refusals: Mapping[str, Refusal]) -> T:
    try:
        return msgspec.convert(payload, type_)
    except msgspec.ValidationError as exc:
        raise refusal(exc, payload, refusals) from None


def refusal(exc: msgspec.ValidationError, payload: Any, refusals: Mapping[str, Refusal]) -> HubError:
    """The HubError for `payload`, which failed to decode with `exc`."""
    text = str(exc)
    if _UNKNOWN.match(text):  # a field the struct does not have: not one of those `refusals` name
        return errors.from_validation(exc, where="payload")
    at = _AT.search(text)
    steps: list[str | int] = [name or int(index) for name, index in _STEP.findall(at.group(1) if at else "")]
    if (missing := _MISSING.match(text)) is not None:  # msgspec names the object; the field is inside it
        steps.append(missing.group(1))
    refuse = refusals.get("".join("[]" if isinstance(s, int) else f".{s}" for s in steps).lstrip("."))
    if refuse is None:
        return errors.from_validation(exc, where="payload")
    holder = _walk(payload, steps[:-1])
    return refuse(_walk(holder, steps[-1:]), holder)


def _walk(value: Any, steps: list[str | int]) -> Any:
    for step in steps:
        if isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict):
            value = value.get(step)
        else:
            return None
    return value


def refusal_alone(type_: Any, value: Any, where: str) -> HubError:
    """The refusal of `value` decoded on its own as `type_` (which it does not
    fit: the enclosing struct said so), so msgspec's paths start at it."""
    try:
        msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        return errors.from_validation(exc, where=where)
    return errors.invalid(f"Invalid {where}", field=where)  # not reached: it failed as a field of this type
