"""Fixtures: a real PostgreSQL (DATABASE_URL, or the embedded one), a fresh
database per test session, and the hub over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import re
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from hub import db, migrate
from hub.auth import issue_token
from hub.config import ROOT, Settings
from services import users
from web import create_app
from web._http import POOL

SECRET = "test-secret-" + "x" * 40
T = TypeVar("T")


async def eventually(check: Callable[[], T | Awaitable[T]], *, timeout: float = 5.0, interval: float = 0.02,
                     what: str = "the condition") -> T:
    """Poll `check` (a function, or a coroutine function) until it returns
    something truthy, and return that; fail once `timeout` seconds have passed.
    Tests wait with this (or on an event), never with a bare sleep."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s (last: {result!r})")
        await asyncio.sleep(interval)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample from a /metrics page (labels in their declared order); 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if wanted else "") + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def running_actor_tasks() -> list[str]:
    """Actor tasks (actors/directory.py names them `actor:<key>`) still running in this loop."""
    return sorted(t.get_name() for t in asyncio.all_tasks()
                  if t.get_name().startswith("actor:") and not t.done())


@pytest.fixture(autouse=True)
async def no_leaked_actors() -> AsyncIterator[None]:
    """Fails a test whose actors outlive it: torn down after every other
    fixture of the test (the app, its directory), so anything left is a leak."""
    yield
    if leaked := running_actor_tasks():
        for task in asyncio.all_tasks():
            if task.get_name() in leaked:
                task.cancel()
        pytest.fail(f"actor tasks still running after the test and its app were torn down: {leaked}")


# Most tests book and write freely as one user from 127.0.0.1; tests/test_limits.py turns these on.
NO_ABUSE_LIMITS = {"max_future_appointments_per_dentist": 0, "max_appointments_per_day": 0,
                   "rate_limit_user_per_minute": 0, "rate_limit_ip_per_minute": 0, "max_connections_per_ip": 0}


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def needs(missing: bool, reason: str) -> pytest.MarkDecorator:
    """Skip (loudly, `-rs` lists it) when an installable tool is missing; in CI
    (CI=true) a missing tool fails every test that needs it instead."""
    return pytest.mark.missing_in_ci(reason) if missing and IN_CI else pytest.mark.skipif(missing, reason=reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "missing_in_ci(reason): an installable tool is missing and CI=true")


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("missing_in_ci")
    if marker is not None:
        pytest.fail(f"CI=true: {marker.args[0]}", pytrace=False)


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def server_dsn() -> str:
    """The server the suite runs on: DATABASE_URL when set, else the embedded one."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from hub import embedded

    return embedded.start(ROOT / "var" / "test-pgdata")


class Databases:
    """Creates throwaway databases on the server and drops them at the end."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.names: list[str] = []

    def create(self, *, migrated: bool = True) -> str:
        name = f"hub_test_{uuid.uuid4().hex[:12]}"
        dsn = with_database(self.server_dsn, name)

        async def work() -> None:
            admin = await asyncpg.connect(self.server_dsn)
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            if migrated:
                con = await db.connect(dsn)
                try:
                    await migrate.migrate(con, migrate.load(ROOT / "sql"))
                finally:
                    await con.close()

        asyncio.run(work())
        self.names.append(name)
        return dsn

    async def drop_async(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        admin = await asyncpg.connect(self.server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    def drop(self, dsn: str) -> None:
        asyncio.run(self.drop_async(dsn))

    def drop_all(self) -> None:
        for name in self.names:
            self.drop(with_database(self.server_dsn, name))


@pytest.fixture(scope="session")
def databases(server_dsn: str) -> Iterator[Databases]:
    dbs = Databases(server_dsn)
    yield dbs
    dbs.drop_all()


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A PostgreSQL server of the test's own (tests/pgcluster.py), which it may restart or kill."""
    from tests.pgcluster import Cluster

    server = Cluster()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def scratch_dsn(databases: Databases) -> Iterator[str]:
    """A migrated database of the test's own, for tests that break or drop it."""
    dsn = databases.create()
    yield dsn
    databases.drop(dsn)


@pytest.fixture(scope="session")
def dsn(databases: Databases) -> str:
    """One migrated database shared by the session; tests make their own users and dentists."""
    return databases.create()


@pytest.fixture
def settings(dsn: str, tmp_path: Path) -> Settings:
    return Settings(env="test", database_url=dsn, jwt_secret=SECRET, var_dir=tmp_path,
                    upload_dir=tmp_path / "uploads", db_pool_min=1, db_pool_max=10, **NO_ABUSE_LIMITS)


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(dsn, min_size=1, max_size=4)
    yield p
    await p.close()


@dataclasses.dataclass
class User:
    id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    """The hub over real HTTP, with helpers to make callers."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pool: asyncpg.Pool = client.app[POOL]

    async def user(self, *roles: str, email: str | None = None) -> User:
        async with self.pool.acquire() as con:
            uid = await users.create_user(con, email=email or f"{uuid.uuid4().hex[:8]}@test.example",
                                          full_name="Test User", roles=roles or ("patient",))
        return User(uid, issue_token(SECRET, uid))

    @staticmethod
    def service(sub: uuid.UUID | None = None) -> User:
        return User(sub or uuid.uuid4(), issue_token(SECRET, sub, role="service_role"))

    async def request(self, method: str, path: str, who: User | None = None, **kw: Any) -> tuple[int, Any]:
        headers = {**(who.headers if who else {}), **kw.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, **kw) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body

    async def get(self, path: str, who: User | None = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, who, **kw)

    async def post(self, path: str, who: User | None = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, who, **kw)

    async def put(self, path: str, who: User | None = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, who, **kw)

    async def delete(self, path: str, who: User | None = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, who, **kw)


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> Api:
    return Api(await aiohttp_client(create_app(settings)))


def assert_error(status: int, body: Any, expected_status: int, code: str) -> dict[str, Any]:
    """The seed's error body, with the expected code; returns its `error` object."""
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["timestamp"].endswith("Z")
    return error


ALL_DAY = {d: "00:00-24:00" for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")}


@dataclasses.dataclass
class Clinic:
    admin: User
    dentist: User          # the login of `dentist_id`
    other_dentist: User    # a dentist, but not of `dentist_id`
    patient: User
    other_patient: User
    dentist_id: str
    other_dentist_id: str


async def make_dentist(api: Api, admin: User, login: User | None = None, **fields: Any) -> str:
    body = {"name": "Dr Test", "timezone": "UTC", "available_times": ALL_DAY, **fields}
    if login is not None:
        body["user_id"] = str(login.id)
    status, created = await api.post("/api/dentists", admin, json=body)
    assert status == 201, created
    return created["id"]


@pytest.fixture
async def clinic(api: Api) -> Clinic:
    """Two dentists open around the clock in UTC, two patients, an admin."""
    admin = await api.user("admin")
    dentist, other_dentist = await api.user(), await api.user()
    dentist_id = await make_dentist(api, admin, dentist, name="Dr One")
    other_id = await make_dentist(api, admin, other_dentist, name="Dr Two")
    return Clinic(admin, dentist, other_dentist, await api.user(), await api.user(), dentist_id, other_id)


def slot_at(days: int = 3, hour: int = 10, minute: int = 0) -> str:
    """An ISO time `days` ahead on the 30-minute grid, in UTC."""
    from datetime import datetime, timedelta, timezone

    day = datetime.now(timezone.utc).replace(hour=hour, minute=minute, second=0, microsecond=0) + timedelta(days=days)
    return day.isoformat()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HubProcesses:
    """Real `hub serve` processes on one database, as a deployment runs them."""

    def __init__(self, dsn: str, tmp: Path) -> None:
        self.dsn, self.tmp = dsn, tmp
        self.procs: list[Any] = []
        self.urls: list[str] = []

    async def start(self, count: int = 1, *, port: int | None = None, **env: str) -> list[str]:
        """`count` new processes; `port` (with count 1) serves again where a stopped one did."""
        import subprocess
        import sys

        import aiohttp

        started = []
        for _ in range(count):
            at = port or free_port()
            log = open(self.tmp / f"hub-{at}.log", "a")  # a restart on the same port appends
            proc = subprocess.Popen(
                [sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(at)],
                env={**os.environ, "DATABASE_URL": self.dsn, "JWT_SECRET": SECRET, "HUB_ENV": "test",
                     "LOG_LEVEL": "WARNING", "HUB_VAR_DIR": str(self.tmp),
                     **{k.upper(): str(v) for k, v in NO_ABUSE_LIMITS.items()}, **env},
                stdout=log, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            started.append(f"http://127.0.0.1:{at}")
        async with aiohttp.ClientSession() as session:
            for url, proc in zip(started, self.procs[-count:]):
                for _ in range(200):
                    assert proc.poll() is None, (self.tmp / f"hub-{url.rsplit(':', 1)[1]}.log").read_text()
                    try:
                        async with session.get(url + "/health") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(f"hub at {url} did not become healthy")
        self.urls += started
        return started

    def stop_one(self, url: str) -> None:
        """Stop the process serving `url` as a deploy does (SIGTERM), and wait until it is gone."""
        proc = self.procs[self.urls.index(url)]
        proc.terminate()
        proc.wait(15)
        self.urls[self.urls.index(url)] = "stopped"

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except Exception:
                proc.kill()


@pytest.fixture
async def hubs(dsn: str, tmp_path: Path) -> AsyncIterator[HubProcesses]:
    procs = HubProcesses(dsn, tmp_path)
    yield procs
    procs.stop()
