"""`hub` / `python -m hub`: serve, migrate, user add, token, demo."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import os
import sys
import uuid
from typing import Any, Awaitable, Callable

import asyncpg

from hub import db, logs, metrics, migrate
from hub.auth import APP_ROLES, JWT_ROLES, issue_token
from hub.config import ConfigError, Settings
from services import demo, users

log = logging.getLogger("hub.cli")


def _database(settings: Settings) -> Settings:
    """Settings with a DSN: DATABASE_URL, or the embedded server under var/."""
    if settings.database_url:
        return settings
    from hub import embedded

    return dataclasses.replace(settings, database_url=embedded.start(settings.var_dir / "pgdata"))


def _with_connection(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        con = await db.connect(settings.direct_url)  # a session: migrations hold an advisory lock
        try:
            return await work(con)
        finally:
            await con.close()

    return asyncio.run(run())


def _migrate(settings: Settings) -> None:
    files = migrate.load(settings.sql_dir)
    done = _with_connection(settings, lambda con: migrate.migrate(con, files))
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in done) or "nothing to apply"
    log.info("migrations: %s", names)


def _demo_once(settings: Settings) -> None:
    """On a database without the demo clinic, create it and tell the user how to get in."""
    async def work(con: Any) -> dict[str, Any] | None:
        if await demo.exists(con):
            return None
        return await demo.create(con, settings.jwt_secret)

    created = _with_connection(settings, work)
    path = settings.var_dir / "demo.json"
    if created is not None:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(created, indent=2) + "\n")
        path.chmod(0o600)
    if not path.exists():
        return
    info = json.loads(path.read_text())
    base = f"http://localhost:{settings.port}"
    print(f"\nDental hub (development) on {base}\n"
          f"  admin console : {base}/admin?token={info['admin']['token']}\n"
          f"  demo ids and tokens (7 days): {path}   (refresh with `hub demo`)\n"
          f"  try: curl -H 'Authorization: Bearer <token>' {base}/api/profiles/me\n", flush=True)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from web import server
    from web.app import create_app

    settings = _database(dataclasses.replace(settings, host=args.host or settings.host,
                                             port=args.port if args.port is not None else settings.port))
    if args.migrate:
        _migrate(settings)
    if args.demo:
        _demo_once(settings)
    if args.workers > 1:
        return _supervise(settings, args.workers)
    log.info("serving on %s:%d", settings.host, settings.port)
    # What is loaded by now lives as long as the process: out of the collector's
    # sight, a full collection scans only what serving made (a pause every
    # request waits for; hub_gc_pause_seconds shows them).
    gc.collect()
    gc.freeze()
    metrics.watch_gc()
    # SIGTERM: stop accepting, tell sockets to reconnect elsewhere (1012), let
    # requests and actor turns finish, close the pool (web/app.py, cleanup order).
    server.serve(create_app(settings), settings, reuse_port=args.reuse_port, shutdown_timeout=5, loop=_event_loop())
    log.info("stopped")
    return 0


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed: the same asyncio API with the loop and its
    socket transports in C (libuv). Where a booking's CPU goes is mostly
    the event loop and socket writes, which it makes about half as dear."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform without its wheels
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _supervise(settings: Settings, workers: int) -> int:
    """N worker processes sharing the port with SO_REUSEPORT; the kernel
    spreads connections, PostgreSQL carries events between them."""
    import os
    import signal
    import subprocess

    # Children are workers, never supervisors: `--workers 1` wins over a WORKERS
    # they would otherwise inherit (and each fork N more, without bound).
    env = {**os.environ, "DATABASE_URL": settings.database_url or "", "JWT_SECRET": settings.jwt_secret}
    env.pop("WORKERS", None)
    command = [sys.executable, "-m", "hub", "serve", "--host", settings.host, "--port", str(settings.port),
               "--reuse-port", "--workers", "1"]
    children = [subprocess.Popen(command, env=env) for _ in range(workers)]
    log.info("started %d workers on %s:%d", workers, settings.host, settings.port)

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    settings = _database(settings)
    try:
        return _migrate_or_dry_run(settings, args)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"hub: migrate: database error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _migrate_or_dry_run(settings: Settings, args: argparse.Namespace) -> int:
    if not args.dry_run:
        _migrate(settings)
        return 0
    files = migrate.load(settings.sql_dir)
    lines, problems = _with_connection(settings, lambda con: migrate.dry_run(con, files))
    print("\n".join(lines) or "nothing to apply")
    if problems:
        print("hub: migrate would fail; nothing was changed:\n  - " + "\n  - ".join(problems), file=sys.stderr)
        return 1
    return 0


def cmd_user_add(settings: Settings, args: argparse.Namespace) -> int:
    settings = _database(settings)
    uid = _with_connection(settings, lambda con: users.create_user(
        con, email=args.email, full_name=args.name, roles=tuple(args.role or ["patient"])))
    print(uid)
    return 0


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    print(issue_token(settings.jwt_secret, args.sub, role=args.role, ttl=args.ttl, email=args.email,
                      issuer=settings.jwt_issuers[0] if settings.jwt_issuers else "dental-hub"))
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    settings = _database(settings)
    print(json.dumps(_with_connection(settings, lambda con: demo.create(con, settings.jwt_secret)), indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Realtime booking hub for dental clinics.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the HTTP API, WebSockets and console")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--migrate", action="store_true", help="apply pending migrations first")
    serve.add_argument("--demo", action="store_true", help="create the demo clinic once on an empty database")
    serve.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1") or 1),
                       help="worker processes sharing the port (default: $WORKERS or 1)")
    serve.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT (set by --workers)")
    serve.set_defaults(run=cmd_serve)

    mig = sub.add_parser("migrate", help="apply pending migrations from sql/ (adopting an existing clinic schema)")
    mig.add_argument("--dry-run", action="store_true", help="print what would change, one line each; change nothing")
    mig.set_defaults(run=cmd_migrate)

    user = sub.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    add = user.add_parser("add", help="create a user and print its id")
    add.add_argument("--email", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--role", action="append", choices=APP_ROLES, help="repeat for several (default: patient)")
    add.set_defaults(run=cmd_user_add)

    token = sub.add_parser("token", help="print a JWT signed with JWT_SECRET")
    token.add_argument("--sub", type=uuid.UUID, help="user id (required unless --role service_role or anon)")
    token.add_argument("--role", default="authenticated", choices=JWT_ROLES)
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    token.add_argument("--email")
    token.set_defaults(run=cmd_token)

    sub.add_parser("demo", help="create the demo clinic (idempotent) and print ids and tokens as JSON"
                   ).set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"hub: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level)
    if args.command == "token" and args.role == "authenticated" and args.sub is None:
        print("hub: token: --sub is required for an authenticated token", file=sys.stderr)
        return 2
    try:
        return args.run(settings, args)
    except migrate.MigrationError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
