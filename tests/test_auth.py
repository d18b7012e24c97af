"""Every bad token is a 401 in the seed's format; the authorization helpers refuse correctly."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import jwt
import pytest

from hub import errors
from hub.auth import Claims, Principal, issue_token, require_owner, require_role, verify_token
from hub.keys import Keys
from hub.policy import acting_patient
from services import users
from tests.conftest import SECRET, assert_error


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**over) -> dict:
    base = {"sub": str(uuid.uuid4()), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 600}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


BAD_TOKENS = {
    "missing": None,
    "empty bearer": "",
    "malformed": "not-a-jwt",
    "garbage segments": "aaa.bbb.ccc",
    "expired": jwt.encode(_claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256"),
    "wrong secret": jwt.encode(_claims(), "another-secret-" + "y" * 40, algorithm="HS256"),
    "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
    "wrong algorithm HS512": jwt.encode(_claims(), SECRET + "x" * 20, algorithm="HS512"),
    "no exp": jwt.encode(_claims(exp=None), SECRET, algorithm="HS256"),
    "no role": jwt.encode(_claims(role=None), SECRET, algorithm="HS256"),
    "unknown role": jwt.encode(_claims(role="superuser"), SECRET, algorithm="HS256"),
    "wrong audience": jwt.encode(_claims(aud="someone-else"), SECRET, algorithm="HS256"),
    "no sub": jwt.encode(_claims(sub=None), SECRET, algorithm="HS256"),
    "sub not a uuid": jwt.encode(_claims(sub="admin"), SECRET, algorithm="HS256"),
    "anon": jwt.encode(_claims(role="anon", aud=None, sub=None), SECRET, algorithm="HS256"),
}


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_tokens_are_unauthorized(api, case: str) -> None:
    token = BAD_TOKENS[case]
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    status, body = await api.get("/api/profiles/me", headers=headers)
    assert_error(status, body, 401, "UNAUTHORIZED")


async def test_rs256_token_is_refused_even_with_secret_as_key(api) -> None:
    # alg confusion: a token claiming RS256 must not be verified with the HMAC secret.
    header = _b64({"alg": "RS256", "typ": "JWT"})
    token = f"{header}.{_b64(_claims())}.c2lnbmF0dXJl"
    status, body = await api.get("/api/profiles/me", headers={"Authorization": f"Bearer {token}"})
    assert_error(status, body, 401, "UNAUTHORIZED")


async def test_non_bearer_scheme_is_unauthorized(api) -> None:
    token = issue_token(SECRET, uuid.uuid4())
    status, body = await api.get("/api/profiles/me", headers={"Authorization": f"Basic {token}"})
    assert_error(status, body, 401, "UNAUTHORIZED")


async def test_first_seen_user_becomes_a_patient(api) -> None:
    uid = uuid.uuid4()
    token = issue_token(SECRET, uid, email="new@test.example")
    status, body = await api.get("/api/profiles/me", headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body
    assert body["id"] == str(uid)
    assert body["email"] == "new@test.example"
    assert body["roles"] == ["patient"]


def test_verify_accepts_service_role_without_subject() -> None:
    claims = verify_token(SECRET, issue_token(SECRET, None, role="service_role"))
    assert claims.role == "service_role" and claims.sub is None


def test_a_verified_token_is_remembered_until_it_expires() -> None:
    keys = Keys(SECRET)
    token = issue_token(SECRET, uuid.uuid4(), ttl=1)
    claims = verify_token(keys, token)
    assert token in keys.verified
    time.sleep(max(0.0, claims.exp - time.time()) + 0.01)
    with pytest.raises(errors.HubError) as exc:
        verify_token(keys, token)
    assert exc.value.code == errors.ErrorCode.UNAUTHORIZED and "expired" in exc.value.message


def test_remembered_tokens_are_bounded() -> None:
    keys = Keys(SECRET, verified_max=3)
    tokens = [issue_token(SECRET, uuid.uuid4()) for _ in range(10)]
    for token in tokens:
        verify_token(keys, token)
    assert len(keys.verified) == 3 and set(keys.verified) == set(tokens[-3:])
    assert verify_token(keys, tokens[0]).sub is not None  # forgotten, so verified again
    assert tokens[0] in keys.verified and len(keys.verified) == 3


def _who(*roles: str, role: str = "authenticated", sub: uuid.UUID | None = None) -> Principal:
    return Principal(Claims(role=role, sub=sub or (uuid.uuid4() if role == "authenticated" else None), exp=0),
                     frozenset(roles))


def test_require_role() -> None:
    require_role(_who("admin"), "admin")
    require_role(_who("dentist", "patient"), "admin", "dentist")
    require_role(_who(role="service_role"), "service_role")
    for who, roles in ((_who("patient"), ("admin",)), (_who(role="service_role"), ("admin",)),
                       (_who(), ("patient",))):
        with pytest.raises(errors.HubError) as exc:
            require_role(who, *roles)
        assert exc.value.code == errors.ErrorCode.FORBIDDEN


def test_require_owner() -> None:
    me = _who("patient")
    require_owner(me, [me.user_id])
    require_owner(_who("admin"), [uuid.uuid4()])
    require_owner(_who("dentist"), [uuid.uuid4()], staff=("dentist",))
    with pytest.raises(errors.HubError) as exc:
        require_owner(me, [uuid.uuid4(), None])
    assert exc.value.code == errors.ErrorCode.FORBIDDEN
    with pytest.raises(errors.HubError):
        require_owner(_who(role="service_role"), [None])


def test_acting_patient() -> None:
    me = _who("patient")
    other = uuid.uuid4()
    assert acting_patient(me, None) == me.user_id
    assert acting_patient(me, me.user_id) == me.user_id
    with pytest.raises(errors.HubError) as exc:
        acting_patient(me, other)
    assert exc.value.code == errors.ErrorCode.FORBIDDEN
    assert acting_patient(_who(role="service_role"), other) == other
    with pytest.raises(errors.HubError) as exc:
        acting_patient(_who(role="service_role"), None)
    assert exc.value.code == errors.ErrorCode.VALIDATION_ERROR
    assert acting_patient(_who("admin"), other) == other


async def test_principals_remember_roles_for_ttl_and_at_most_size_users(api) -> None:
    principals = users.Principals(api.pool, ttl=0.5, size=2)
    a, b, c = (Claims(role="authenticated", sub=uuid.uuid4(), exp=int(time.time()) + 600) for _ in range(3))

    async def promote(who: Claims, role: str) -> None:
        await api.pool.execute("UPDATE public.user_roles SET role = $2::text::public.app_role WHERE user_id = $1",
                               who.sub, role)

    assert (await principals.get(a)).roles == {"patient"}  # signed up on first sight
    await promote(a, "admin")
    assert (await principals.get(a)).roles == {"patient"}  # remembered
    principals.forget(a.sub)
    assert (await principals.get(a)).roles == {"admin"}

    await promote(a, "dentist")
    deadline = time.monotonic() + 5
    while (await principals.get(a)).roles != {"dentist"}:  # read again once the ttl has passed
        assert time.monotonic() < deadline, "roles were never read again"
        await asyncio.sleep(0.05)

    principals = users.Principals(api.pool, ttl=600, size=2)
    await principals.get(a)
    await promote(a, "admin")
    await principals.get(b)
    await principals.get(c)  # a, the least recently seen, is forgotten
    assert (await principals.get(a)).roles == {"admin"}
