"""A shard's hosts stopped, and what they hold handed on: read again, or drained.

`ShardHandover` (a base of `ShardCore`) stops hosts in two cases. After a journal call
that failed, an installation is read again (`_reload_later`): its host is stopped,
dropped once idle, and the host read after it resumes its pending deliveries, with its
client and its queued dead-letter replays. To drain the shard (`drain`, `shut_down`),
its hosts start no more deliveries (or, with `finish`, run what they took to its end),
and what their clients hold is journaled for the next shard.
"""

from __future__ import annotations

import asyncio
import logging
import time

from actors.installation import InstallationHost
from actors.installation_stream import log_replay_not_run
from actors.runtime_events import stream_name
from actors.shard_hosts import ShardHosts
from ghbot.errors import JournalError, JournalUnavailable
from ghbot.retry import describe

__all__ = ["ShardHandover"]

log = logging.getLogger("ghbot.shard")


class ShardHandover(ShardHosts):
    """Stop a shard's hosts to read one again, or to drain the shard (see the module)."""

    # --- reading again ------------------------------------------------------------

    def _reload_later(self, installation_id: int, exc: JournalUnavailable) -> None:
        """Activate the installation again from the journal, in the background.

        Its deliveries may be journaled without its host knowing (the read that
        activates it failed, or the append's answer did): a redelivery is a duplicate
        and would not run them, an activation replays them. An active host is stopped
        at once, as a drain stops it (`_stop_to_read_again`): it starts nothing more,
        and what only waits is cut, so it is soon idle however many deliveries keep
        coming; it is dropped then, and the host read after it resumes every pending
        delivery in journal order, those it had taken included. So per-key order holds
        (but for a delivery of another batch whose append was in flight with the failed
        one and which started before the failure was known). The activation is tried
        with backoff until the journal answers. Not while draining: the shard that
        takes over reads every installation.
        """
        log.warning(
            "installation %d: a journal call failed (%s); %s",
            installation_id,
            describe(exc),
            "the next shard reads it again" if self.draining else "reading it again",
            extra={"installation_id": installation_id, "error_type": type(exc).__name__},
        )
        if self.draining:
            return
        if (host := self.hosts.get(installation_id)) is not None:
            self._stop_to_read_again(host)  # now: a later delivery must not start first
        if installation_id in self._reactivating:
            self._again.add(installation_id)
            return

        async def activate() -> None:
            # A drain cancels it (`drain`): the successor reads every installation.
            while True:
                await self._drop_when_idle(installation_id)
                self._again.discard(installation_id)
                failures = 0
                while True:
                    try:
                        await self.host(installation_id)
                        break
                    except JournalUnavailable:
                        failures += 1
                        await self._sleep(self._retry.backoff(min(failures, 6)))
                if installation_id not in self._again:
                    self._reactivating.pop(installation_id, None)
                    return

        def ended(task: asyncio.Task[None]) -> None:
            # The task takes itself off when it is through; this is for one cancelled
            # or failed (its state would not restore, say: the next activation, by a
            # delivery or a restart, tries again).
            if self._reactivating.get(installation_id) is task:
                self._reactivating.pop(installation_id)
            if not task.cancelled() and (error := task.exception()) is not None:
                text = str(error)
                log.error(
                    "installation %d: not read again (%s: %s)",
                    installation_id,
                    type(error).__name__,
                    text if len(text) <= 500 else text[:497] + "...",
                    extra={"installation_id": installation_id, "error_type": type(error).__name__},
                )

        task = asyncio.get_running_loop().create_task(activate())
        self._reactivating[installation_id] = task
        task.add_done_callback(ended)

    async def _drop_when_idle(self, installation_id: int) -> None:
        """Stop the installation's host (`_stop_to_read_again`), and drop it once its
        running handlers end, for it to be read again (`_reload_later`)."""
        while True:
            if (activating := self._activating.get(installation_id)) is not None:
                # Under way: its read may come before what failed was written.
                await asyncio.wait([activating])
                continue
            if (host := self.hosts.get(installation_id)) is None:
                return
            self._stop_to_read_again(host)  # read since (another call failed)
            await host.wait_idle()
            # Dropped once idle. Its client goes to the host read after it: what it
            # knows of GitHub (a write's interval, a pause, an open breaker) is not in
            # the journal.
            if self.hosts.get(installation_id) is host and host.busy == 0:
                del self.hosts[installation_id]
                if (github := getattr(host.bot, "github", None)) is not None:
                    self._clients_kept[installation_id] = github

    def _stop_to_read_again(self, host: InstallationHost) -> None:
        """Stop `host`, to be dropped and read again (`_reload_later`); the dead-letter
        replays it had queued go to the host read after it."""
        replays = host.take_replays()
        if replays:
            self._replays_kept.setdefault(host.installation_id, []).extend(replays)
        host.stop()

    async def _read_again_now(self, readings: dict[int, asyncio.Task[None]]) -> None:
        """Read each installation whose reading again (`_reload_later`) a drain that
        finishes what the shard took (`drain(finish=True)`) cancelled, once, now, not
        waiting out a backoff; its host runs, though the shard drains. One the journal
        cannot read is left pending, to the next start."""
        await asyncio.gather(*readings.values(), return_exceptions=True)
        for installation_id in readings:
            await self._drop_when_idle(installation_id)
            try:
                await self.host(installation_id)
            except Exception as exc:
                log.warning(
                    "installation %d: not read again before stopping (%s); the next start "
                    "runs what it took",
                    installation_id,
                    type(exc).__name__,
                    extra={"installation_id": installation_id, "error_type": type(exc).__name__},
                )

    def _log_replays_kept(self) -> None:
        """Report the dead-letter replays kept for hosts to be read again, which will
        not run now (a drain, a close); forget them."""
        for installation_id, replays in self._replays_kept.items():
            for delivery_id, handler in replays:
                log_replay_not_run(stream_name(installation_id), delivery_id, handler)
        self._replays_kept.clear()

    # --- draining -----------------------------------------------------------------

    async def drain(self, *, finish: bool = False) -> int:
        """Refuse new deliveries and stop running them; return once none is running.

        What it refused (`Status.DRAINING`) was never journaled: the ingress sends it
        to the shard that takes over, or answers 503 and GitHub (or the redelivery
        sweep) sends it again. What it took stays journaled: a delivery not started, or
        stopped where running it again from its last journaled step repeats no write
        to GitHub (`actors.stopping.Run` says where: between attempts, or before
        an attempt's first write, waiting its turn in the write lane), is left pending
        for the shard that takes over, which resumes every pending delivery in journal
        order; one whose attempt has written runs to its end. So a drain lasts about as
        long as the handlers that are writing, not as long as the installations'
        backlog (with writes paced, a second per queued write). Nor does it wait out
        what the installations' clients hold that the journal does not (a write's
        turn, a secondary-limit pause, an open breaker): that is journaled for the
        successor (`ClientHeld`), whose clients start from it. Return how many
        deliveries were left pending.

        `finish`: run every delivery taken to its end first (`ghbot stop`, when no shard
        takes over), those of installations a recovery under way activates after the
        drain began included.
        """
        if not self.draining:
            self.draining, self.draining_since = True, time.monotonic()
        self._finishing = self._finishing or finish
        # Installations being read again after a failed append (`_reload_later`) are
        # read no more (a host read now would start stopped): the next shard reads
        # every installation, and the hand-over reads those whose client is kept. A
        # reading waiting out its backoff would hold `wait_idle` for it.
        readings = dict(self._reactivating)
        for reading in readings.values():
            reading.cancel()
        if finish:  # but what they took runs too: each is read once, now
            await self._read_again_now(readings)
        self._log_replays_kept()
        if finish:
            await self.wait_idle()
            await self._hand_over_clients()
            return self.pending()
        # Hosts activated from here on (by recovery, by an ingest under way) start
        # stopped (`_new_host`); what an ingest under way journals stays pending.
        cut = sum(host.stop() for host in list(self.hosts.values()))
        await self._wait_ingests()
        await self._wait_hosts()
        await self._hand_over_clients()
        left = self.pending()
        log.info(
            "drained: no delivery running; %d left pending for the next shard (%d of them "
            "stopped while they waited)",
            left,
            cut,
        )
        return left

    async def _hand_over_clients(self, within: float = 5.0) -> int:
        """Journal, for each installation whose client holds a write's turn, a
        secondary-limit pause or an open breaker, what it holds
        (`InstallationHost.hand_over_client`), so the shard that takes it over waits as
        this one would have; return how many. An installation being read again after
        a failed append, its host dropped and its client kept for the next, is read
        for it (`_read_and_hand_over`).

        At most `within` seconds: the journal away, the successor takes over without
        what was not journaled by then (it may write too soon once); what was, counts.
        """
        self._handing_over = True
        hosts = list(self.hosts.values())
        kept = [i for i in self._clients_kept if i not in self.hosts]
        tasks = [asyncio.ensure_future(host.hand_over_client()) for host in hosts]
        tasks += [asyncio.ensure_future(self._read_and_hand_over(i)) for i in kept]
        try:
            if tasks:  # each its own outcome: one slow read costs the others nothing
                await asyncio.wait(tasks, timeout=within)
        finally:
            for task in tasks:
                task.cancel()  # those not done in time (or the drain's own cancellation)
            await asyncio.gather(*tasks, return_exceptions=True)
        outcomes = [
            TimeoutError() if task.cancelled() else task.exception() or task.result()
            for task in tasks
        ]
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        for outcome in failed:
            if not isinstance(outcome, (TimeoutError, JournalError)):  # not away, not fenced
                raise outcome
        if failed:
            log.warning(
                "could not journal what every client holds for the next shard (%s)",
                type(failed[0]).__name__,
            )
        self._handed_over = True
        handed = sum(o is True for o in outcomes)
        if handed:
            log.info("handed over what %d installations' clients hold", handed)
        return handed

    async def _read_and_hand_over(self, installation_id: int) -> bool:
        """Read an installation whose host was dropped to be read again (`_reload_later`),
        which keeps that host's client for the next, and hand that client over
        (`_hand_over_clients`); the host starts stopped, unless the drain finishes what
        the shard took (`drain(finish=True)`). A read that fails (perhaps one under way,
        begun before the drain) is tried once more."""
        try:
            try:
                host = await self.host(installation_id)
            except JournalUnavailable:
                host = await self.host(installation_id)
        except JournalError:
            raise
        except Exception as exc:  # the bot's state would not restore: nothing to hand over
            log.warning(
                "installation %d: not read again to hand its client over (%r)",
                installation_id,
                exc,
                extra={"installation_id": installation_id, "error_type": type(exc).__name__},
            )
            return False
        return await host.hand_over_client()

    async def shut_down(self, within: float) -> bool:
        """Drain (`drain`) for up to `within` seconds, then close the hosts and the journal.

        Return whether the drain ended in time: then no handler was cut short after it
        wrote, and what is left pending the next shard runs from its last journaled
        step. A handler still running then is cancelled and stays pending too: at
        least once, since it may have done part of its work. New deliveries are refused
        from the start.
        """
        try:
            async with asyncio.timeout(within):
                await self.drain()
            drained = True
        except TimeoutError:
            drained = False
        await self.close()
        await self.journal.close()
        return drained

    async def close(self) -> None:
        """Stop every host; what they were doing stays pending in the journal.

        After a drain cut short (`shut_down`, the Ray actor's `drain` out of time), once
        the hosts have stopped, what their clients hold is journaled for the next shard
        (`_hand_over_clients`).
        """
        tasks = [*self._snapshotting.values(), self._sweeper, self._pruner, self._scheduler]
        tasks += self._reactivating.values()
        tasks.append(self.recovery)
        for task in tasks:
            if task is not None:
                task.cancel()
        self._log_replays_kept()
        for host in list(self.hosts.values()):
            await host.close()
        if self.draining and not self._handed_over:  # a drain cut short: nothing runs now
            await self._hand_over_clients()
        self.hosts.clear()

    async def wait_idle(self) -> None:
        """Return once recovery is through, no ingest call is under way, and no
        installation has queued or running work."""
        if self.recovery is not None:
            await asyncio.shield(self.recovery)
        await self._wait_ingests()
        while self._reactivating:  # installations read again after a journal failure
            # Not `gather`: a caller's timeout must not cancel them (`asyncio.wait`
            # leaves them running), or their hosts would stay stopped.
            await asyncio.wait(list(self._reactivating.values()))
        await self._wait_hosts()

    async def _wait_ingests(self) -> None:
        """Return once no ingest call is under way (each hands its batch over next)."""
        while self._ingesting:
            await asyncio.wait(set(self._ingesting))

    async def _wait_hosts(self) -> None:
        """Return once no host has queued or running work."""
        while any(host.busy for host in self.hosts.values()):
            await asyncio.gather(*(host.wait_idle() for host in list(self.hosts.values())))
