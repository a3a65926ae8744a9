"""The shard actor: the Ray actor around `actors.shard.ShardCore`.

It is restarted with `max_restarts=-1` (`actors.ray.lifecycle`): a shard killed with
`kill -9` comes back, takes new epochs (its predecessor is fenced) and resumes its
pending deliveries. On SIGTERM it drains, closes its journal and exits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from typing import Any, Final

import ray

from actors.ray.channel import ChannelAddress, ChannelServer
from actors.ray.lease_sources import AppAuthTokens, ShardTurns
from actors.ray.names import APP_AUTH_NAME
from actors.ray.process import process_rss, set_up_process, sqlite_memory_used
from actors.ray.sigterm import ExitAfter
from actors.settings import RuntimeSettings, held_secrets, load_bot
from actors.shard import Answer, ShardCore
from actors.wire import Status, vshards_of
from ghbot.errors import UsageError
from ghbot.journal import open_journal
from ghbot.retry import RetryPolicy

__all__ = ["DRAIN_TIMEOUT", "ShardActor"]

log = logging.getLogger("ghbot.runtime")

#: Seconds a shard being replaced gets to drain (`ShardCore.drain`: the handlers that
#: wrote end; `ghbot stop`: every delivery it took); what is still running then is cut
#: short and resumed by its successor from the journal (at least once).
DRAIN_TIMEOUT = 30.0
#: The backoff between a shard's starts that fail (the journal down): 0.5–1 s after
#: the first, growing to 15–30 s.
_START_RETRY: Final = RetryPolicy()


class ShardActor:
    """A Ray actor around `ShardCore`; starts in the background, so `__init__` never
    blocks a restart."""

    def __init__(self, index: int, settings: RuntimeSettings) -> None:
        if any(held_secrets(settings).values()):
            # A shard holds no key and no webhook secret (`RuntimeSettings.for_shards`).
            raise UsageError("a shard was given the app's private key or webhook secrets")
        set_up_process(settings)
        self.index = index
        self.settings = settings
        #: When this process's shard was made, and when it took its epochs (epoch
        #: seconds; an upgrade starts the next shard's successor after the latter).
        self.created_at, self.started_at = time.time(), 0.0
        self._core: ShardCore | None = None
        self._starting: asyncio.Task[ShardCore] | None = None
        self._channel: ChannelServer | None = None
        self._opening: asyncio.Lock | None = None
        #: Starts that failed in a row (`_start_ended` backs off by it).
        self._start_failures = 0
        #: On SIGTERM: drain, close the journal, then exit (and Ray restarts the shard).
        self.sigterm: ExitAfter | None = None
        # Ray runs an async actor's __init__ on its event loop: start at once, so a
        # restarted shard resumes its pending work without waiting for a caller.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._start_soon()
        self.sigterm = ExitAfter(loop, self._exit_drained)
        self.sigterm.install()

    async def _ready(self) -> ShardCore:
        if self._core is not None:
            return self._core
        if self._starting is None or (self._starting.done() and self._starting.exception()):
            self._start_soon()
        assert self._starting is not None
        self._core = await asyncio.shield(self._starting)
        return self._core

    def _start_soon(self) -> None:
        """Start in the background; a start that fails is tried again by itself."""
        self._starting = asyncio.get_running_loop().create_task(self._start())
        self._starting.add_done_callback(self._start_ended)

    def _start_ended(self, task: asyncio.Task[ShardCore]) -> None:
        """After a failed start (the journal down as Ray restarted the shard), try again
        after a backoff: the pending deliveries and schedules it resumes must not wait
        for some call to reach the shard (`_ready` also tries again at once)."""
        failed = None if task.cancelled() else task.exception()
        if failed is None:
            self._start_failures = 0
            return
        if isinstance(failed, UsageError):  # its settings: trying again cannot help
            return
        self._start_failures += 1
        wait = _START_RETRY.backoff(min(self._start_failures, 6))
        log.warning(
            "shard %d could not start (%s); trying again in %.1f s",
            self.index,
            type(failed).__name__,
            wait,
            extra={"error_type": type(failed).__name__},
        )

        def again() -> None:
            if self._starting is task and self._core is None:  # no call started it since
                self._start_soon()

        task.get_loop().call_later(wait, again)

    async def _start(self) -> ShardCore:
        from actors.github import installation_clients

        s = self.settings
        journal = await open_journal(s.settings.journal_url, shard_count=s.vshards)
        try:
            clients = installation_clients(
                s, lambda: ray.get_actor(APP_AUTH_NAME, namespace=s.namespace)
            )
            core = ShardCore(
                vshards_of(self.index, s.shards, s.vshards),
                s.vshards,
                journal,
                load_bot(s.bot),
                github_for=clients.for_installation,
                breaker_wait=clients.breaker_wait,
                retry=clients.retry,
                dedup_window=s.dedup_window,
                version=s.version,
                write_turns=ShardTurns(s.namespace, s.shards, s.vshards),
                lease_tokens=AppAuthTokens(s.namespace),
            )
            await core.open()
        except BaseException:
            await journal.close()  # the next try opens its own
            raise
        self.started_at = time.time()
        log.info("shard %d took epochs %s; resuming pending work", self.index, core.epochs)
        assert core.recovery is not None
        core.recovery.add_done_callback(self._recovered)
        return core

    async def _exit_drained(self, within: float = DRAIN_TIMEOUT) -> None:
        """Before the process exits on SIGTERM: drain for up to `within` s, then close."""
        log.warning("shard %d got SIGTERM: draining (up to %g s), then exiting", self.index, within)
        started = time.monotonic()
        try:
            async with asyncio.timeout(within):
                core = await self._ready()
        except Exception as exc:
            log.warning("shard %d exits unstarted (%s)", self.index, type(exc).__name__)
            return
        left = max(within - (time.monotonic() - started), 0.0)
        if await core.shut_down(left):
            log.warning(
                "shard %d drained: nothing running; its restart resumes what is pending; exiting",
                self.index,
            )
        else:
            log.warning(
                "shard %d did not drain within %g s: its successor resumes the rest; exiting",
                self.index,
                within,
            )

    def _recovered(self, task: asyncio.Task[int]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            # Not the journal (retried) nor one installation's state (logged, skipped):
            # the installations left are resumed when their next delivery activates
            # them, or at the next restart.
            log.error("shard %d: recovery failed: %r", self.index, task.exception())
            return
        log.info("shard %d resumed %d pending deliveries", self.index, task.result())

    async def ingest(self, *parts: bytes) -> list[Status]:
        """Journal and queue a batch of deliveries, in parts (see `ShardCore.ingest`)."""
        return await (await self._ready()).ingest(*parts)

    async def channel(self) -> ChannelAddress | None:
        """Where the ingress sends batches (`actors.ray.channel`), opening it the first
        time; None when the deployment sends them as Ray calls."""
        if not self.settings.shard_channel:
            return None
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._channel is None:
                host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
                self._channel = await ChannelServer.start(self._ingest_answering, host)
                log.info(
                    "shard %d takes batches on %s:%d", self.index, host, self._channel.address.port
                )
        return self._channel.address

    async def _ingest_answering(self, parts: list[bytes], answer: Answer) -> list[Status]:
        """`ingest` for the channel: `answer` as soon as the statuses are known."""
        return await (await self._ready()).ingest(*parts, answer=answer)

    async def stats(self) -> dict[str, Any]:
        """Return the shard's counters, and its process's collector thresholds and GIL
        switch interval (`set_up_process`); starting the shard if it has not started yet."""
        stats = (await self._ready()).stats()
        channel = self._channel.batches if self._channel is not None else 0
        return {
            "index": self.index,
            "version": self.settings.version,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "channel_batches": channel,
            "gc_thresholds": list(gc.get_threshold()),
            "switch_interval": sys.getswitchinterval(),
            **stats,
        }

    async def ready(self) -> dict[str, Any]:
        """Tell whether this shard takes deliveries now: started, journal answering.

        A shard starting or draining says for how many seconds (`for`): the ingress
        holds what arrives for it meanwhile, and `/readyz` counts it ready for as long
        as that hold (`actors.ray.ingress.counts_as_ready`). A start that failed says
        so: for its settings (`UsageError`: a journal recorded with another number of
        virtual shards) why, else while it tries again (the journal down).
        """
        if self._core is None:
            started = self._starting is not None and self._starting.done()
            failed = self._starting.exception() if started and self._starting else None
            if isinstance(failed, UsageError):  # a journal of another layout: say so
                return {"index": self.index, "ready": False, "why": f"cannot start: {failed}"}
            if failed is not None or self._start_failures:  # the log says why
                return {"index": self.index, "ready": False, "why": "could not start; trying again"}
            if not started:
                starting = round(time.time() - self.created_at, 1)
                return {"index": self.index, "ready": False, "why": "starting", "for": starting}
            await self._ready()
        assert self._core is not None
        if self._core.draining:
            draining = round(time.monotonic() - self._core.draining_since, 1)
            return {"index": self.index, "ready": False, "why": "draining", "for": draining}
        why = await self._core.check_journal()
        return {"index": self.index, "ready": why is None, "why": why}

    def layout(self) -> tuple[int, int]:
        """Return the shard actors and virtual shards of the deployment it belongs to."""
        return self.settings.shards, self.settings.vshards

    def version(self) -> str:
        """Return the deployment version this shard runs (`RuntimeSettings.version`)."""
        return self.settings.version

    async def drain(self, within: float = DRAIN_TIMEOUT, finish: bool = False) -> bool:
        """Refuse new deliveries and stop running them (`ShardCore.drain`; `finish`: run
        every one taken first); False if that took over `within` seconds: then what
        still runs is stopped (`ShardCore.close`; its successor runs it again from the
        journal) and what the clients hold is journaled for the successor."""
        core = await self._ready()
        try:
            async with asyncio.timeout(within):
                await core.drain(finish=finish)
        except TimeoutError:
            await core.close()
            return False
        return True

    async def grant_write(self, installation_id: int) -> None:
        """Give a quota lease's task its write's turn (`ShardCore.grant_write`)."""
        await (await self._ready()).grant_write(installation_id)

    async def dead_letters(self) -> list[dict[str, Any]]:
        """List this shard's dead letters, each marked with the shard's index."""
        found = await (await self._ready()).dead_letters()
        return [{**dead, "shard": self.index} for dead in found]

    async def replay(self, installation_id: int, delivery_id: str, handler: str | None) -> int:
        """Run a dead letter's handlers again (see `ShardCore.replay`)."""
        return await (await self._ready()).replay(installation_id, delivery_id, handler)

    async def delivered(self, wanted: list[tuple[int, str]]) -> list[str]:
        """Return the GUIDs among `(installation, GUID)` pairs this shard journaled."""
        return await (await self._ready()).delivered(wanted)

    async def wait_idle(self, within: float = 60.0) -> bool:
        """Wait until no work is queued or running; False if that took over `within` s."""
        core = await self._ready()
        try:
            async with asyncio.timeout(within):
                await core.wait_idle()
        except TimeoutError:
            return False
        return True

    def rss(self) -> int:
        """Return the process's resident memory in bytes (for the memory benchmarks)."""
        return process_rss()

    def sqlite_memory(self) -> int:
        """Return the bytes SQLite holds in this process (its page caches, for the most
        part), for the soak: RSS less this is what it holds flat."""
        return sqlite_memory_used()

    def secrets_held(self) -> dict[str, bool]:
        """Tell which secrets this shard's settings hold (none, by construction)."""
        return held_secrets(self.settings)

    def node_id(self) -> str:
        """Return the id of the Ray node this shard runs on."""
        return str(ray.get_runtime_context().get_node_id())

    def pid(self) -> int:
        """Return the actor's process id (tests kill it to prove recovery)."""
        return os.getpid()
