"""Actors: one per dentist, each serializing that dentist's writes.

`_base` is the mailbox and turn loop, `directory` gives virtual-actor
lifetime, `dentist` is the booking actor, `schedule` the pure slot logic.
"""

from actors._base import Actor, ActorDeadError, StopReason
from actors.directory import ActorUnavailable, Directory

__all__ = ["Actor", "ActorDeadError", "ActorUnavailable", "Directory", "StopReason"]
