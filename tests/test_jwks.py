"""Supabase Auth's asymmetric tokens: keys from a JWKS served by a real HTTP
server on 127.0.0.1, key rotation, the refetch rate limit, issuer, expiry,
alg confusion; and the hub accepting such tokens over HTTP, with anonymous
sign-ins kept to a patient's own data."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from typing import Any, AsyncIterator

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub import errors
from hub.auth import verify_token
from hub.config import ConfigError, Settings
from hub.keys import Keys
from tests.conftest import SECRET, Api, Clinic, assert_error, slot_at

ISSUER = "https://project.supabase.co/auth/v1"


@dataclasses.dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @property
    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.ECAlgorithm if self.alg == "ES256" else jwt.algorithms.RSAAlgorithm
        return {**algo.to_jwk(self.private.public_key(), as_dict=True), "kid": self.kid, "alg": self.alg,
                "use": "sig"}

    def sign(self, **over: Any) -> str:
        return jwt.encode(_claims(**over), self.private, algorithm=self.alg, headers={"kid": self.kid})


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": str(uuid.uuid4()), "role": "authenticated", "aud": "authenticated", "iat": now,
            "exp": now + 600, "iss": ISSUER, "email": "someone@test.example", "phone": "",
            "app_metadata": {"provider": "email", "providers": ["email"]}, "user_metadata": {"name": "Ann"},
            "aal": "aal1", "amr": [{"method": "password", "timestamp": now}], "session_id": str(uuid.uuid4()),
            "is_anonymous": False}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


class JwksServer:
    """A real HTTP server publishing whatever keys the test lists."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.extra: list[dict[str, Any]] = []
        self.status = 200
        self.hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        return web.json_response({"keys": [k.jwk for k in self.keys] + self.extra})


@pytest.fixture
async def jwks(aiohttp_server: Any) -> JwksServer:
    server = JwksServer()
    app = web.Application()
    app.router.add_get("/auth/v1/.well-known/jwks.json", server.handle)
    running = await aiohttp_server(app, host="127.0.0.1")
    server.url = str(running.make_url("/auth/v1/.well-known/jwks.json"))
    return server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def keys(jwks: JwksServer) -> AsyncIterator[tuple[Keys, Clock]]:
    clock = Clock()
    k = Keys(SECRET, jwks_url=jwks.url, clock=clock)
    yield k, clock
    await k.aclose()


def _refused(keys: Keys, token: str, message: str) -> None:
    with pytest.raises(errors.HubError) as exc:
        verify_token(keys, token)
    assert exc.value.code == errors.ErrorCode.UNAUTHORIZED
    assert message in exc.value.message, exc.value.message


async def test_es256_rs256_and_hs256_are_valid_together(jwks: JwksServer, keys) -> None:
    k, _ = keys
    es, rs = ec_key("ec-1"), rsa_key("rsa-1")
    jwks.keys = [es, rs]
    await k.start()
    assert k.kids == ["ec-1", "rsa-1"] and jwks.hits == 1
    sub = uuid.uuid4()
    for token in (es.sign(sub=str(sub)), rs.sign(sub=str(sub)), jwt.encode(_claims(sub=str(sub)), SECRET)):
        claims = verify_token(k, token)
        assert claims.sub == sub and claims.role == "authenticated" and not claims.is_anonymous
        assert claims.raw["aal"] == "aal1" and claims.raw["app_metadata"]["provider"] == "email"
    assert jwks.hits == 1  # verifying never fetches


async def test_rotation_new_kid_fetched_old_kept_while_listed_then_retired(jwks: JwksServer, keys) -> None:
    k, clock = keys
    old, new = ec_key("old"), ec_key("new")
    jwks.keys = [old]
    await k.start()
    old_token = old.sign()
    assert verify_token(k, old_token).role == "authenticated"

    jwks.keys = [old, new]  # Supabase publishes the next key, then signs with it
    new_token = new.sign()
    await k.ready_for(new_token)  # what the HTTP layer awaits before verify_token
    assert jwks.hits == 2
    assert verify_token(k, new_token).role == "authenticated"
    assert verify_token(k, old_token).role == "authenticated"  # still listed: still valid

    jwks.keys = [new]  # the old key is revoked
    clock.now += 31
    await k.ready_for(ec_key("someone-elses").sign())  # an unknown kid triggers the refetch
    assert jwks.hits == 3 and k.kids == ["new"]
    _refused(k, old_token, "key the project does not publish")  # even though it verified before
    assert verify_token(k, new_token).role == "authenticated"


async def test_unknown_kid_flood_fetches_at_most_once_per_interval(jwks: JwksServer, keys) -> None:
    k, clock = keys
    jwks.keys = [ec_key("a")]
    await k.start()
    stranger = ec_key("stranger")
    for _ in range(50):
        token = stranger.sign()
        await k.ready_for(token)
        _refused(k, token, "key the project does not publish")
    assert jwks.hits == 2  # startup + one refetch, not fifty
    clock.now += 29
    await k.ready_for(stranger.sign())
    assert jwks.hits == 2
    clock.now += 2
    await k.ready_for(stranger.sign())
    assert jwks.hits == 3


async def test_a_failed_fetch_keeps_the_keys_we_had(jwks: JwksServer, keys) -> None:
    k, clock = keys
    key = rsa_key("r")
    jwks.keys = [key]
    await k.start()
    jwks.status = 503
    await k.refresh()
    jwks.status = 200
    jwks.keys, jwks.extra = [], [{"kty": "RSA", "kid": "broken", "n": "AQAB", "e": "AQAB", "alg": "RS256"}]
    jwks.extra.append({"kty": "oct", "kid": "hmac", "k": base64.urlsafe_b64encode(b"x" * 32).decode(), "alg": "HS256"})
    assert verify_token(k, key.sign()).role == "authenticated"
    await k.refresh()  # a JWKS without usable keys is a fetched answer: nothing is valid any more
    assert k.kids == []
    _refused(k, key.sign(), "key the project does not publish")


async def test_issuer_expiry_and_anonymous_claims(jwks: JwksServer) -> None:
    key = ec_key("e")
    jwks.keys = [key]
    k = Keys(SECRET, jwks_url=jwks.url, issuers=(ISSUER, "supabase"))
    await k.start()
    try:
        assert verify_token(k, key.sign()).role == "authenticated"
        _refused(k, key.sign(iss="https://evil.example/auth/v1"), "issuer")
        _refused(k, key.sign(iss=None), "'iss'")
        _refused(k, jwt.encode(_claims(iss="dental-hub"), SECRET), "issuer")
        service = jwt.encode({"iss": "supabase", "role": "service_role", "exp": int(time.time()) + 60}, SECRET)
        assert verify_token(k, service).role == "service_role"
        _refused(k, key.sign(exp=int(time.time()) - 5), "expired")
        anon = verify_token(k, key.sign(is_anonymous=True, email="", app_metadata={"provider": "anonymous"}))
        assert anon.is_anonymous and anon.email is None
        _refused(k, key.sign(is_anonymous="yes"), "is_anonymous")
    finally:
        await k.aclose()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_alg_confusion_and_mismatched_keys_are_refused(jwks: JwksServer, keys) -> None:
    k, _ = keys
    es, rs = ec_key("ec"), rsa_key("rsa")
    jwks.keys = [es, rs]
    await k.start()
    for public in (rs.private.public_key(), es.private.public_key()):
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        # HS256 with the public key as the HMAC secret, naming a published kid.
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa"}).encode())
        body = _b64(json.dumps(_claims()).encode())
        sig = _b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
        _refused(k, f"{head}.{body}.{sig}", "signature is invalid")
    # An RS256 header naming the EC key, and `none`.
    _refused(k, jwt.encode(_claims(), rs.private, algorithm="RS256", headers={"kid": "ec"}), "algorithm")
    none = f"{_b64(json.dumps({'alg': 'none', 'kid': 'ec'}).encode())}.{_b64(json.dumps(_claims()).encode())}."
    _refused(k, none, "algorithm not allowed")
    # Signed by a key that is not the one its kid names.
    _refused(k, jwt.encode(_claims(), ec_key("x").private, algorithm="ES256", headers={"kid": "ec"}),
             "signature is invalid")
    _refused(k, jwt.encode(_claims(), es.private, algorithm="ES256"), "no key id")
    # Without a JWKS URL asymmetric tokens are not accepted at all.
    _refused(Keys(SECRET), es.sign(), "algorithm not allowed")


def test_settings_validate_jwks_url_issuer_and_pooler() -> None:
    env = {"HUB_ENV": "test", "JWT_SECRET": SECRET}
    s = Settings.from_env({**env, "JWT_JWKS_URL": "https://p.supabase.co/auth/v1/.well-known/jwks.json",
                           "JWT_ISSUER": f"{ISSUER}, supabase"})
    assert s.jwt_issuers == (ISSUER, "supabase") and s.jwt_jwks_url.startswith("https://")
    for bad in ("http://p.supabase.co/jwks.json", "ftp://x/y", "jwks.json"):
        with pytest.raises(ConfigError, match="JWT_JWKS_URL"):
            Settings.from_env({**env, "JWT_JWKS_URL": bad})
    assert Settings.from_env({**env, "JWT_JWKS_URL": "http://127.0.0.1:9/jwks"}).jwt_jwks_url
    plain = Settings.from_env({**env, "DATABASE_URL": "postgresql://db/x"})
    assert plain.db_statement_cache == 100 and plain.direct_url == "postgresql://db/x"
    pooled = Settings.from_env({**env, "DATABASE_URL": "postgresql://pooler:6543/x",
                                "DATABASE_DIRECT_URL": "postgresql://db:5432/x"})
    assert pooled.db_statement_cache == 0 and pooled.direct_url == "postgresql://db:5432/x"
    assert Settings.from_env({**env, "DATABASE_DIRECT_URL": "postgresql://db/x",
                              "DB_STATEMENT_CACHE": "50"}).db_statement_cache == 50


def test_hub_token_signs_hs256_with_the_first_issuer() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "JWT_SECRET": SECRET, "HUB_ENV": "test", "JWT_ISSUER": f"{ISSUER},supabase"}
    sub = uuid.uuid4()
    out = subprocess.run([sys.executable, "-m", "hub", "token", "--sub", str(sub)], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = verify_token(Keys(SECRET, issuers=(ISSUER, "supabase")), token)
    assert claims.sub == sub and claims.raw["iss"] == ISSUER


# ---- over HTTP -------------------------------------------------------------


@pytest.fixture
async def supabase_api(aiohttp_client: Any, settings: Settings, jwks: JwksServer) -> tuple[Api, SigningKey]:
    from web import create_app

    key = ec_key("project-key")
    jwks.keys = [key]
    app = create_app(dataclasses.replace(settings, jwt_jwks_url=jwks.url))
    return Api(await aiohttp_client(app)), key


async def test_hub_serves_supabase_tokens_and_a_rotated_key_at_once(supabase_api, jwks: JwksServer) -> None:
    api, key = supabase_api
    sub = uuid.uuid4()
    status, body = await api.get("/api/profiles/me", headers={"Authorization": f"Bearer {key.sign(sub=str(sub))}"})
    assert status == 200, body
    assert body["id"] == str(sub) and body["roles"] == ["patient"]
    async with api.client.ws_connect(f"/realtime/v1/websocket?vsn=1.0.0&apikey={key.sign(sub=str(sub))}") as ws:
        await ws.send_json({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "1"})
        assert (await ws.receive_json(timeout=5))["payload"]["status"] == "ok"
    hits = jwks.hits
    rotated = rsa_key("next-key")
    jwks.keys = [key, rotated]
    status, body = await api.get("/api/profiles/me", headers={"Authorization": f"Bearer {rotated.sign(sub=str(sub))}"})
    assert status == 200, body  # the first request with the new key waits for the refetch
    assert jwks.hits == hits + 1
    stranger = ec_key("stranger")
    for _ in range(20):
        status, body = await api.get("/api/profiles/me",
                                     headers={"Authorization": f"Bearer {stranger.sign(sub=str(sub))}"})
        assert_error(status, body, 401, "UNAUTHORIZED")
    assert jwks.hits == hits + 1  # inside the rate limit: no fetch per request


async def test_anonymous_sign_in_is_a_patient_and_nothing_more(supabase_api, clinic: Clinic) -> None:
    api, key = supabase_api
    anon_id = uuid.uuid4()
    token = key.sign(sub=str(anon_id), is_anonymous=True, email="", app_metadata={"provider": "anonymous"})
    anon = {"Authorization": f"Bearer {token}"}
    status, body = await api.get("/api/profiles/me", headers=anon)
    assert status == 200 and body["roles"] == ["patient"], body
    # Even if someone grants the anonymous account a staff role, it stays a patient.
    status, body = await api.put(f"/api/users/{anon_id}/roles", clinic.admin, json={"roles": ["admin", "patient"]})
    assert status == 200, body
    status, body = await api.get("/api/appointments", headers=anon)
    assert status == 200 and body["data"] == [], body
    status, booked = await api.post("/api/appointments", clinic.other_patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=5, hour=9), "appointment_type": "checkup"})
    assert status == 201, booked
    status, body = await api.get(f"/api/appointments/{booked['id']}", headers=anon)
    assert status in (403, 404), body
    status, body = await api.post("/api/appointments", headers=anon, json={
        "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=5, hour=11), "appointment_type": "checkup",
        "patient_id": str(clinic.patient.id)})
    assert_error(status, body, 403, "FORBIDDEN")
