"""Every failure is rendered in the seed's format with the right code."""

from __future__ import annotations

import datetime
from typing import Annotated

import msgspec
import pytest
from aiohttp import web

from hub import errors
from tests.conftest import assert_error
from web import create_app


async def test_unknown_route_is_404(api) -> None:
    status, body = await api.get("/api/nothing-here")
    assert_error(status, body, 404, "NOT_FOUND")


async def test_wrong_method_is_405(api) -> None:
    status, body = await api.request("PATCH", "/api/profiles/me")
    assert_error(status, body, 405, "METHOD_NOT_ALLOWED")


async def test_body_over_one_mib_is_413(api) -> None:
    admin = await api.user("admin")
    big = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    status, body = await api.post("/api/dentists", admin, data=big, headers={"Content-Type": "application/json"})
    assert_error(status, body, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize("payload, field", [
    ({"name": 5, "timezone": "UTC"}, "name"),                                  # wrong type
    ({"timezone": "UTC"}, "name"),                                            # missing field
    ({"name": "Dr X", "timezone": "UTC", "slot_minutes": 1}, "slot_minutes"),  # out of range
    ({"name": "Dr X", "timezone": "UTC", "colour": "red"}, "colour"),          # unknown field
    ({"name": "Dr X", "timezone": "Mars/Olympus"}, "timezone"),               # unknown time zone
    ({"name": "Dr X", "timezone": "UTC", "available_times": {"funday": "09:00-10:00"}}, "funday"),
    ({"name": "Dr X", "timezone": "UTC", "available_times": {"monday": "9-5"}}, "monday"),
    ({"name": "Dr X", "timezone": "UTC", "user_id": "not-a-uuid"}, "user_id"),
])
async def test_validation_errors_name_the_field(api, payload, field) -> None:
    admin = await api.user("admin")
    status, body = await api.post("/api/dentists", admin, json=payload)
    error = assert_error(status, body, 400, "VALIDATION_ERROR")
    assert field in error["details"]["field"], error


async def test_unknown_enum_value_names_the_element(api) -> None:
    admin = await api.user("admin")
    target = await api.user()
    status, body = await api.put(f"/api/users/{target.id}/roles", admin, json={"roles": ["patient", "wizard"]})
    error = assert_error(status, body, 400, "VALIDATION_ERROR")
    assert error["details"]["field"] == "roles[1]"


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b"", b"\xff\xfe"])
async def test_malformed_bodies(api, raw: bytes) -> None:
    admin = await api.user("admin")
    status, body = await api.post("/api/dentists", admin, data=raw, headers={"Content-Type": "application/json"})
    assert_error(status, body, 400, "VALIDATION_ERROR")


async def test_non_json_content_type(api) -> None:
    admin = await api.user("admin")
    status, body = await api.post("/api/dentists", admin, data="name=x", headers={"Content-Type": "text/plain"})
    assert_error(status, body, 400, "VALIDATION_ERROR")


async def test_bad_path_id(api) -> None:
    admin = await api.user("admin")
    status, body = await api.put("/api/dentists/not-a-uuid", admin, json={})
    assert assert_error(status, body, 400, "VALIDATION_ERROR")["details"]["field"] == "id"


async def test_unexpected_exception_is_internal_error_without_internals(aiohttp_client, settings, caplog) -> None:
    app = create_app(settings)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail")

    app.router.add_get("/boom", boom)
    client = await aiohttp_client(app)
    resp = await client.get("/boom", headers={"X-Request-Id": "req-123"})
    body = await resp.json()
    error = assert_error(resp.status, body, 500, "INTERNAL_ERROR")
    assert "secret" not in str(body)
    assert error["details"] == {"request_id": "req-123"}
    assert resp.headers["X-Request-Id"] == "req-123"
    logged = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert logged and logged[0].request_id == "req-123" and logged[0].exc_info


def test_naive_datetime_is_a_validation_error() -> None:
    class Body(msgspec.Struct):
        when: Annotated[datetime.datetime, msgspec.Meta(tz=True)]

    with pytest.raises(msgspec.ValidationError) as exc:
        msgspec.json.decode(b'{"when": "2026-01-01T10:00:00"}', type=Body)
    error = errors.from_validation(exc.value)
    assert error.code == errors.ErrorCode.VALIDATION_ERROR
    assert error.details["field"] == "when"
    assert "timezone" in error.message


def test_every_code_has_a_status() -> None:
    for code in errors.ErrorCode:
        assert errors.HTTP_STATUS[code] >= 400


async def test_values_the_database_refuses_are_validation_errors(api) -> None:
    """Found by schemathesis: NUL characters, lone surrogates, huge offsets."""
    me = await api.user()
    for body in ('{"full_name": "a\\u0000b"}', '{"full_name": "\\udb8b"}'):
        status, error = await api.put("/api/profiles/me", me, data=body, headers={"Content-Type": "application/json"})
        assert_error(status, error, 400, "VALIDATION_ERROR")
    status, error = await api.get("/api/appointments?offset=467801145965712375808", me)
    assert_error(status, error, 400, "VALIDATION_ERROR")
    status, profile = await api.get("/api/profiles/me", me)
    assert status == 200 and profile["full_name"] == "Test User"  # nothing half-written
