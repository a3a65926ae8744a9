"""Turns per installation: a shard hands journaled deliveries to their hosts in the
order it sent them to the journal.

A shard's `ingest` calls run concurrently: each appends its batch (the journal gives
the deliveries of a stream their order, `seq`) and then hands each delivery to its
installation's host, which runs deliveries with the same ordering key in the order it
is handed them. The appends come back in an order of their own (SQLite commits each
shard file apart, so a batch over two files returns after a later batch over one), and
a call may wait for an installation's activation meanwhile. Without turns, a delivery
journaled second could be handed over, and run, first
(tests/runtime/test_journal_order.py).

Each call takes its turn for its installations just before it sends its appends (the
journal assigns `seq` in the order appends are sent: the shard's `AppendGroup` sends
groups in order, SQLite's writer per file and PostgreSQL's flusher take them in order)
and waits, before handing a delivery to an installation's host, until the calls that
took a turn for that installation before it are done.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable

__all__ = ["Turn", "Turns"]


class Turn:
    """One `ingest` call's turn for its installations; `release` it on every exit."""

    def __init__(
        self, previous: dict[int, asyncio.Future[None]], mine: dict[int, asyncio.Future[None]]
    ) -> None:
        self._previous = previous
        self._mine = mine

    async def wait(self, installation_id: int) -> None:
        """Wait until the calls before this one are done with `installation_id`."""
        previous = self._previous.get(installation_id)
        if previous is not None:
            await asyncio.shield(previous)

    def release(self) -> None:
        """Let the next call for each installation go on, once the calls before are done."""
        for installation_id, future in self._mine.items():
            previous = self._previous.pop(installation_id, None)
            if previous is None or previous.done():
                _resolve(future)
            else:  # not waited for (nothing handed over): still after the one before
                previous.add_done_callback(functools.partial(_resolve_after, future))
        self._mine = {}


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resolve_after(future: asyncio.Future[None], _previous: asyncio.Future[None]) -> None:
    _resolve(future)


class Turns:
    """The latest turn taken per installation (see the module)."""

    def __init__(self) -> None:
        self._last: dict[int, asyncio.Future[None]] = {}

    def take(self, installation_ids: Iterable[int]) -> Turn:
        """Take a turn for each installation, after every turn taken before."""
        loop = asyncio.get_running_loop()
        previous: dict[int, asyncio.Future[None]] = {}
        mine: dict[int, asyncio.Future[None]] = {}
        for installation_id in set(installation_ids):
            before = self._last.get(installation_id)
            if before is not None:
                previous[installation_id] = before
            future: asyncio.Future[None] = loop.create_future()
            future.add_done_callback(functools.partial(self._forget, installation_id))
            mine[installation_id] = self._last[installation_id] = future
        return Turn(previous, mine)

    def _forget(self, installation_id: int, future: asyncio.Future[None]) -> None:
        """Forget a finished turn if it is still the installation's latest."""
        if self._last.get(installation_id) is future:
            del self._last[installation_id]

    def __len__(self) -> int:
        return len(self._last)
