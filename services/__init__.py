"""Application services: what REST, the socket and MCP share.

Each module is one use case or background duty built on the core (`hub`) and
the dentist actors (`actors`): booking and the waitlist, the feed and the
listener that bring committed events to this process, users, reminders,
webhooks, calendar feeds, the sweeper and the demo clinic. Nothing here
knows HTTP or sockets; `web` calls in, never the other way round.
"""
