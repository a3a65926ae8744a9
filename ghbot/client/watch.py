"""What a runner is told of the GitHub calls made in its context.

`actors.installation` watches each handler's run (`actors.stopping.Run`), to know when
cutting it short (to hand it to another shard) would repeat nothing, and whether running
an attempt again would repeat a write. A client's own work for its credentials (an
installation token's exchange) is not the handler's: it runs without the watcher
(`ghbot.client.tokens.InstallationTokens`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ghbot.client.call import Call

__all__ = ["CallWatcher", "call_watcher", "note_call", "note_written", "watched_wait"]


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


@contextmanager
def watched_wait() -> Iterator[None]:
    """Tell the call's watcher, if any, that a wait of the client's own begins, then
    ends (it may refuse the wait by raising before it begins)."""
    watcher = call_watcher.get()
    if watcher is None:
        yield
        return
    watcher.waiting(True)
    try:
        yield
    finally:
        watcher.waiting(False)


def note_call(call: Call) -> None:
    """Tell the call's watcher that `call` is about to be sent."""
    if (watcher := call_watcher.get()) is not None:
        watcher.calling(call.writes)


def note_written() -> None:
    """Tell the call's watcher that GitHub did a write."""
    if (watcher := call_watcher.get()) is not None:
        watcher.written()
