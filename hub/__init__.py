"""The hub: configuration, auth, errors, database, migrations, realtime plumbing.

Layout: `hub/` is the core the other packages build on; `actors/` holds the
per-dentist actors; `web/` the HTTP and WebSocket front; `sql/` the schema.
"""
