"""How a host encodes what it journals, and decodes it again.

Runtime events (`actors.runtime_events`) and a bot's domain events are wrapped for the journal
(`runtime_event`, `domain_event`); a snapshot (`Snapshot`) holds the runtime's progress
and the bot's encoded state; `Codecs` holds a bot class's decoders, built once.
"""

from __future__ import annotations

from typing import Any

import msgspec

from actors.bot import InstallationActor
from actors.runtime_events import DOMAIN_PREFIX, Progress
from ghbot.journal.records import NewEvent, encode

__all__ = ["Codecs", "Snapshot", "domain_event", "runtime_event", "snapshot_decoder"]


class Snapshot(msgspec.Struct, kw_only=True):
    """What a snapshot holds: the runtime's progress and the bot's encoded state."""

    progress: Progress
    state: bytes
    version: int = 1


snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)


def runtime_event(event: msgspec.Struct) -> NewEvent:
    """Wrap a runtime event for the journal."""
    return NewEvent(type(event).__name__, encode(event))


def domain_event(event: msgspec.Struct) -> NewEvent:
    """Wrap a bot's domain event for the journal."""
    return NewEvent(DOMAIN_PREFIX + type(event).__name__, encode(event))


class Codecs:
    """The decoders of one bot class (its domain events and state), built once."""

    _by_class: dict[type[InstallationActor], Codecs] = {}

    def __init__(self, bot_class: type[InstallationActor]) -> None:
        self.domain = {
            cls.__name__: msgspec.msgpack.Decoder(cls) for cls in bot_class.domain_events
        }
        self.state: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(bot_class.state_type)

    @classmethod
    def of(cls, bot_class: type[InstallationActor]) -> Codecs:
        """Return the codecs of `bot_class`, building them on first use."""
        codecs = cls._by_class.get(bot_class)
        if codecs is None:
            codecs = cls._by_class[bot_class] = cls(bot_class)
        return codecs
