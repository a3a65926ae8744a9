"""What `self.github` and `self.quota` are for deliveries without an installation.

A delivery that carries no installation (`actors.runtime_events.NO_INSTALLATION`: a repository
or organization webhook pointed at the App's URL, or an app-level event) runs with a
client that raises `NoInstallation` on use, naming the delivery (`current_delivery`).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ghbot.errors import NoInstallation

if TYPE_CHECKING:
    from actors.bot import InstallationActor

__all__ = ["NoInstallationClient", "current_delivery", "without_installation"]

#: The delivery (GUID, event name) whose handlers run in this task, for error messages.
current_delivery: ContextVar[tuple[str, str] | None] = ContextVar("ghbot_delivery", default=None)


class NoInstallationClient:
    """What `self.github` and `self.quota` are for deliveries without an installation.

    Any use raises `NoInstallation`, naming the delivery being handled: a clear error,
    dead-lettered at once, rather than an `AttributeError` on None retried
    `max_attempts` times. A handler that does not touch it runs as usual.
    """

    __slots__ = ("_attribute",)

    #: Reads as a client without a circuit breaker: the shard's `stats` asks every
    #: host's client for one.
    breaker = None

    def __init__(self, attribute: str) -> None:
        self._attribute = attribute

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # copy, pickle and the like probe for protocols
        delivery_id, event = current_delivery.get() or (None, None)
        raise NoInstallation(delivery_id, event, self._attribute)

    def __repr__(self) -> str:
        return f"<no installation: self.{self._attribute} is unavailable>"


def without_installation(bot: InstallationActor) -> None:
    """Give a bot of installation-less deliveries a `github` and `quota` that say so."""
    for attribute in ("github", "quota"):
        if getattr(bot, attribute, None) is None:
            setattr(bot, attribute, NoInstallationClient(attribute))
