"""A runner's view of the GitHub calls made in its context, for tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ghbot.client.watch import call_watcher


class Heard:
    """A `CallWatcher` that notes what it is told: waits begun and ended, writes done."""

    def __init__(self) -> None:
        self.waits: list[bool] = []
        self.writes = 0

    def waiting(self, waiting: bool) -> None:
        self.waits.append(waiting)

    def calling(self, writes: bool) -> None:
        pass

    def written(self) -> None:
        self.writes += 1


@contextmanager
def watching() -> Iterator[Heard]:
    """Watch the calls made in this context until the block ends."""
    heard = Heard()
    token = call_watcher.set(heard)
    try:
        yield heard
    finally:
        call_watcher.reset(token)
