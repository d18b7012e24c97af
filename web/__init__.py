"""The HTTP and WebSocket front: controllers, sessions, console."""

from web.app import create_app

__all__ = ["create_app"]
