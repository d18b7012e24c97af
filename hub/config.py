"""Settings, read once from the environment (README lists every variable)."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("hub.config")


class ConfigError(Exception):
    """The environment cannot run the hub; the message says what to set."""


def _int(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    env: str = "development"
    database_url: str | None = None
    jwt_secret: str = ""
    host: str = "0.0.0.0"
    port: int = 8080
    log_level: str = "INFO"
    var_dir: Path = ROOT / "var"
    sql_dir: Path = ROOT / "sql"
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_timeout: float = 5.0
    max_body_bytes: int = 1024 * 1024
    # Booking rules; here so every module reads one object.
    hold_ttl_seconds: int = 300
    hold_max_age_seconds: int = 1800
    max_holds_per_patient: int = 3
    cancellation_window_hours: int = 24
    waitlist_offer_minutes: int = 15
    upload_dir: Path = ROOT / "var" / "uploads"
    metrics_token: str | None = None
    event_retention_hours: int = 24
    # Supabase Auth's asymmetric keys and the accepted `iss` values (docs/SUPABASE.md).
    jwt_jwks_url: str | None = None
    jwt_issuers: tuple[str, ...] = ()
    # A session (not transaction-pooled) connection for LISTEN, migrations and
    # the CLI when DATABASE_URL is a pooler; asyncpg's prepared-statement cache
    # size on pool connections (0 through a transaction pooler).
    database_direct_url: str | None = None
    db_statement_cache: int = 100
    # Abuse limits (docs/LIMITS.md); 0 turns a cap or rate limit off.
    max_future_appointments_per_dentist: int = 10
    max_appointments_per_day: int = 3
    rate_limit_user_per_minute: int = 120
    rate_limit_ip_per_minute: int = 1200
    max_connections_per_ip: int = 256
    header_timeout_seconds: int = 10
    heartbeat_timeout_seconds: int = 60
    # The clinic's day (docs/WEBHOOKS.md, docs/CALENDAR.md, docs/API.md#reminders).
    public_url: str | None = None  # the hub's address as subscribers reach it (calendar feed URLs)
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 10.0
    webhook_concurrency: int = 8
    webhook_backoff_base_seconds: float = 10.0
    webhook_retry_seconds: float = 24 * 3600.0
    webhook_disable_after: int = 3
    webhook_poll_seconds: float = 1.0
    reminder_offsets: tuple[str, ...] = ("1d", "2h")
    reminder_max_late_minutes: int = 60
    reminder_poll_seconds: float = 15.0
    clinic_timezone: str | None = None  # the console's time axis; unset: where most dentists work

    @property
    def direct_url(self) -> str | None:
        """Where session state (LISTEN, session advisory locks) can live."""
        return self.database_direct_url or self.database_url

    @property
    def development(self) -> bool:
        return self.env == "development"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Raises ConfigError with a clear message for a bad or missing value."""
        env = dict(os.environ if env is None else env)
        mode = env.get("HUB_ENV", "development")
        if mode not in ("development", "production", "test"):
            raise ConfigError(f"HUB_ENV must be development, test or production, got {mode!r}")
        var_dir = Path(env.get("HUB_VAR_DIR") or ROOT / "var")
        secret = env.get("JWT_SECRET", "")
        if not secret:
            if mode != "development":
                raise ConfigError(f"JWT_SECRET must be set when HUB_ENV={mode} (only development generates one)")
            secret = _dev_secret(var_dir)
        elif len(secret) < 32:
            raise ConfigError("JWT_SECRET must be at least 32 characters (HS256 needs a 256-bit key)")
        level = env.get("LOG_LEVEL", "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        direct = env.get("DATABASE_DIRECT_URL") or None
        return cls(
            env=mode,
            database_url=env.get("DATABASE_URL") or None,
            jwt_secret=secret,
            host=env.get("HOST", "0.0.0.0"),
            port=_int(env, "PORT", 8080, 0, 65535),
            log_level=level,
            var_dir=var_dir,
            sql_dir=Path(env.get("HUB_SQL_DIR") or ROOT / "sql"),
            db_pool_min=_int(env, "DB_POOL_MIN", 2, 1, 100),
            db_pool_max=_int(env, "DB_POOL_MAX", 10, 1, 200),
            hold_ttl_seconds=_int(env, "HOLD_TTL_SECONDS", 300, 5, 3600),
            hold_max_age_seconds=_int(env, "HOLD_MAX_AGE_SECONDS", 1800, 5, 86400),
            max_holds_per_patient=_int(env, "MAX_HOLDS_PER_PATIENT", 3, 1, 50),
            cancellation_window_hours=_int(env, "CANCELLATION_WINDOW_HOURS", 24, 0, 720),
            waitlist_offer_minutes=_int(env, "WAITLIST_OFFER_MINUTES", 15, 1, 1440),
            upload_dir=Path(env.get("UPLOAD_DIR") or var_dir / "uploads"),
            metrics_token=env.get("METRICS_TOKEN") or None,
            event_retention_hours=_int(env, "EVENT_RETENTION_HOURS", 24, 1, 24 * 90),
            jwt_jwks_url=_jwks_url(env.get("JWT_JWKS_URL") or None),
            jwt_issuers=tuple(i.strip() for i in env.get("JWT_ISSUER", "").split(",") if i.strip()),
            database_direct_url=direct,
            # A separate direct URL means DATABASE_URL is a pooler: no named prepared statements.
            db_statement_cache=_int(env, "DB_STATEMENT_CACHE", 0 if direct else 100, 0, 10_000),
            max_future_appointments_per_dentist=_int(env, "MAX_FUTURE_APPOINTMENTS_PER_DENTIST", 10, 0, 1000),
            max_appointments_per_day=_int(env, "MAX_APPOINTMENTS_PER_DAY", 3, 0, 100),
            rate_limit_user_per_minute=_int(env, "RATE_LIMIT_USER_PER_MINUTE", 120, 0, 1_000_000),
            rate_limit_ip_per_minute=_int(env, "RATE_LIMIT_IP_PER_MINUTE", 1200, 0, 1_000_000),
            max_connections_per_ip=_int(env, "MAX_CONNECTIONS_PER_IP", 256, 0, 1_000_000),
            header_timeout_seconds=_int(env, "HEADER_TIMEOUT_SECONDS", 10, 1, 300),
            heartbeat_timeout_seconds=_int(env, "HEARTBEAT_TIMEOUT_SECONDS", 60, 1, 3600),
            public_url=_public_url(env.get("PUBLIC_URL", "")),
            webhook_allow_private=_bool(env, "WEBHOOK_ALLOW_PRIVATE"),
            webhook_timeout_seconds=_int(env, "WEBHOOK_TIMEOUT_SECONDS", 10, 1, 60),
            webhook_concurrency=_int(env, "WEBHOOK_CONCURRENCY", 8, 1, 100),
            webhook_backoff_base_seconds=_int(env, "WEBHOOK_BACKOFF_BASE_SECONDS", 10, 1, 3600),
            webhook_retry_seconds=_int(env, "WEBHOOK_RETRY_HOURS", 24, 1, 24 * 7) * 3600.0,
            webhook_disable_after=_int(env, "WEBHOOK_DISABLE_AFTER", 3, 1, 1000),
            reminder_offsets=reminder_offsets(env.get("REMINDER_OFFSETS", "1d,2h")),
            reminder_max_late_minutes=_int(env, "REMINDER_MAX_LATE_MINUTES", 60, 1, 24 * 60),
            clinic_timezone=_zone(env.get("CLINIC_TIMEZONE") or None),
        )


def _jwks_url(url: str | None) -> str | None:
    """Keys must come over TLS; plain http only from this machine (tests, a local proxy)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return url
    raise ConfigError(f"JWT_JWKS_URL must be an https:// URL (http only for localhost), got {url!r}")


def _bool(env: dict[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _public_url(raw: str) -> str | None:
    if not raw:
        return None
    if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", raw):
        raise ConfigError(f"PUBLIC_URL must be an http(s) address like https://hub.example.com, got {raw!r}")
    return raw.rstrip("/")


_OFFSET = re.compile(r"^(\d{1,4})([dhm])$")


def reminder_offsets(raw: str) -> tuple[str, ...]:
    """REMINDER_OFFSETS: comma-separated `Nd` (N days before, same local time),
    `Nh` or `Nm` (hours or minutes before); empty turns reminders off."""
    labels = tuple(part.strip() for part in raw.split(",") if part.strip())
    for label in labels:
        match = _OFFSET.match(label)
        if match is None or int(match.group(1)) == 0:
            raise ConfigError(f"REMINDER_OFFSETS entries look like 1d, 2h or 30m, got {label!r}")
        if int(match.group(1)) * {"d": 1440, "h": 60, "m": 1}[match.group(2)] > 365 * 1440:
            raise ConfigError(f"REMINDER_OFFSETS entries reach at most a year back, got {label!r}")
    if len(set(labels)) != len(labels) or len(labels) > 10:
        raise ConfigError("REMINDER_OFFSETS takes at most 10 distinct entries")
    return labels
def _zone(name: str | None) -> str | None:
    if name is not None:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"CLINIC_TIMEZONE must be an IANA time zone like Europe/London, got {name!r}") from None
    return name


def _dev_secret(var_dir: Path) -> str:
    """A per-checkout secret, so development tokens survive restarts but never ship."""
    path = var_dir / "jwt_secret"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    log.warning("JWT_SECRET not set: generated a development secret into %s", path)
    return secret
