"""The core: configuration, errors, auth, database, migrations, events, wire protocol, metrics.

Layers, each importing only those below it (enforced by `lint-imports`, see
docs/ARCHITECTURE.md): `web` (HTTP, socket, console, MCP) > `services`
(booking, feed, listener, ...) > `actors` (the actor runtime and the dentist's
rules) > `hub`. `hub/cli.py` is the composition root and may import them all.
"""
