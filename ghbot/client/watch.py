"""What a runner is told of the GitHub calls made in its context.

`actors.installation` watches each handler's run, to know when cutting it short (to
hand it to another shard) would repeat nothing, and whether running an attempt again
would repeat a write. A client's own work for its credentials (an installation token's
exchange) is not the handler's: it runs without the watcher
(`ghbot.client.tokens.InstallationTokens`).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol

__all__ = ["CallWatcher", "call_watcher"]


class CallWatcher(Protocol):
    """What a runner is told of the client's calls in its context (`call_watcher`)."""

    def waiting(self, waiting: bool) -> None:
        """A wait of the client's own begins (True) or ends (False): for the write
        lane, a pause, a retry's backoff, a rate limit. May raise (before a wait
        begins, or before a request is sent, for `calling`) to stop the caller."""

    def calling(self, writes: bool) -> None:
        """A request is about to be sent; `writes`: a write (a mutating method, a
        GraphQL mutation)."""

    def written(self) -> None:
        """GitHub answered a write with success: sent again, it would be done again."""


#: The watcher of the calls made in this context, where a runner set one.
call_watcher: ContextVar[CallWatcher | None] = ContextVar("ghbot_call_watcher", default=None)
