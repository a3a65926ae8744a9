"""The Ray actors: shards that host installations, and the app-auth actor.

Every Ray call of ghbot is in this package. Actors are named and detached in the
`namespace` of the deployment, so every ingress replica (and the CLI) finds the same
ones, and restarted with `max_restarts=-1`: a shard killed with `kill -9` comes back,
takes new epochs (its predecessor is fenced) and resumes its pending deliveries.

Each actor runs one version of the deployment (`RuntimeSettings.version`: the bot's
code and the settings the actors run with, not the ingress's own). An ingress replica
that starts with another version replaces the actors one by one
(`get_or_create_actors`): a shard is drained (it refuses new deliveries, which the
ingress holds for a few seconds, `actors.ray.ingress.ShardBatcher`, and finishes what
it took), then killed, and a new one of the same name takes its epochs, resumes its
pending work, and is sent what was held.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Final

import ray
from ray.exceptions import RayActorError

from actors.ray.channel import ChannelAddress, ChannelServer
from actors.ray.metrics import install_ray_metrics
from actors.ray.sigterm import ExitAfter
from actors.runtime_events import NO_INSTALLATION
from actors.settings import RuntimeSettings, load_bot
from actors.shard import Answer, ShardCore
from actors.tracing import install_tracing
from actors.wire import Status, shard_of, vshard_of, vshards_of
from ghbot import telemetry
from ghbot.auth import KeyFile
from ghbot.errors import ConfigError, ShardDraining, UsageError
from ghbot.journal import open_journal
from ghbot.journal.layout import reshard_command
from ghbot.logs import configure as configure_logging
from ghbot.retry import RetryPolicy

__all__ = [
    "APP_AUTH_NAME",
    "DRAIN_TIMEOUT",
    "AppAuthActor",
    "ShardActor",
    "find_shard",
    "get_or_create_actors",
    "held_secrets",
    "kill_actors",
    "retire",
    "running_shards",
    "set_up_process",
    "shard_name",
    "shards_by_name",
]

log = logging.getLogger("ghbot.runtime")
APP_AUTH_NAME = "ghbot-app-auth"

#: Seconds between two looks at the private key's file (`KeyFile`) for a new key.
KEY_RECHECK = 5.0

#: Seconds an ingress replica replacing the shards waits for one's successor to start
#: before it replaces the next (`get_or_create_actors`).
SUCCESSOR_START = 30.0

#: The most shard actors a deployment may have (`GHBOT_SHARDS`).
MAX_SHARDS = 64

#: Seconds a shard being replaced gets to drain (`ShardCore.drain`: the handlers that
#: wrote end; `ghbot stop`: every delivery it took); what is still running then is cut
#: short and resumed by its successor from the journal (at least once).
DRAIN_TIMEOUT = 30.0
#: The backoff between a shard's starts that fail (the journal down): 0.5–1 s after
#: the first, growing to 15–30 s.
_START_RETRY: Final = RetryPolicy()


#: The garbage collector's thresholds in ghbot's Ray processes (Python's are 700, 10,
#: 10): see `tune_gc`.
GC_THRESHOLDS: Final = (20_000, 50, 50)
#: Seconds a thread holds the GIL while another waits for it, in ghbot's Ray processes
#: (Python's is 0.005): see `tune_gil`.
SWITCH_INTERVAL_S: Final = 0.001


def set_up_process(settings: RuntimeSettings) -> None:
    """Set up a ghbot Ray process at start: its logging, metrics, traces and collector.

    Logs as `LOG_LEVEL` and `LOG_FORMAT` say; metrics into Ray's metrics export; spans
    to the exporter the `OTEL_*` variables name, if any; garbage collection tuned
    (`tune_gc`). Calling it again is harmless: logging replaces its own handler,
    metrics and traces are installed once a process. Also shortens the GIL's switch
    interval (`tune_gil`).
    """
    configure_logging(settings.settings.log_level, settings.settings.log_format)
    install_ray_metrics()
    install_tracing()
    tune_gc()
    tune_gil()


def tune_gc() -> None:
    """Keep Python's cycle collector from stalling the event loop.

    What exists once the process is set up (Ray, Serve, the bot's and ghbot's modules)
    lives as long as the process: `gc.freeze` takes it out of every later collection's
    scan. Cycles are then collected less often (`GC_THRESHOLDS`): the objects of a
    delivery are mostly freed by reference counting, and each collection of the old
    generations walked the whole heap while deliveries waited. In `bench_e2e.py` this
    took 8-10 % more webhooks a second and the acknowledgement's p99 from 53-61 ms to
    33 ms (`benchmarks/RESULTS.md`).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def tune_gil() -> None:
    """Let a thread waiting for the GIL take it within 1 ms, not 5 (`SWITCH_INTERVAL_S`).

    A shard's SQLite writer thread gives the GIL up for each call into SQLite and must
    take it back from the event loop's thread, which holds it while it runs handlers:
    five or six times a transaction, while deliveries wait for the commit. In
    `bench_e2e.py` the wait for ``BEGIN`` halved, that for the statement after it fell
    by a third or more, and webhooks/s rose 7-9 % in two interleaved pairs
    (`benchmarks/RESULTS.md`).
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def shard_name(index: int) -> str:
    """Return the Ray name of shard actor `index`."""
    return f"ghbot-shard-{index}"


@dataclass(frozen=True)
class ShardTurns:
    """Where a quota lease's task asks for its writes' turns (`actors.quota.TurnSource`):
    the shard actor holding the installation, found by name, so a shard replaced
    meanwhile is not asked, its successor is. Picklable (it travels in the lease)."""

    namespace: str
    shards: int
    vshards: int
    #: Seconds to keep asking while the shard is being replaced (refused or gone).
    within: float = 60.0

    async def __call__(self, installation_id: int) -> None:
        name = shard_name(shard_of(vshard_of(installation_id, self.vshards), self.shards))
        deadline = time.monotonic() + self.within
        while True:
            try:
                actor = await asyncio.to_thread(ray.get_actor, name, namespace=self.namespace)
                await actor.grant_write.remote(installation_id)
                return
            # Not found (its successor starting), gone, or draining (Ray's RayTaskError,
            # made an instance of its cause): ask again.
            except (RayActorError, ValueError, ShardDraining):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)


@dataclass(frozen=True)
class AppAuthTokens:
    """Where a quota lease's task gets its installation's next token
    (`actors.quota.LeaseTokens`): the app-auth actor, found by name, so one replaced
    meanwhile is not asked, its successor is. Picklable (it travels in the lease)."""

    namespace: str

    async def __call__(self, installation_id: int, force: bool) -> Any:
        actor = await asyncio.to_thread(ray.get_actor, APP_AUTH_NAME, namespace=self.namespace)
        return await actor.lease_token.remote(
            installation_id, force=force, traceparent=telemetry.current_traceparent()
        )


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


class AppAuthActor:
    """The only holder of the app's private key: signs JWTs and mints installation tokens.

    It also runs the redelivery sweeper (`ghbot.redelivery`), which needs the app's
    JWT: every `redeliver_every` seconds it lists the app's failed deliveries, asks
    the owning shards which of them are journaled anyway, and has GitHub redeliver
    the others.

    A key given as a file is read again when the file changes (every `KEY_RECHECK`
    seconds it looks): JWTs are signed with the new key from then on, without a
    restart, and the installation tokens the shards hold stay until they expire.
    """

    def __init__(self, settings: RuntimeSettings) -> None:
        from actors.github import TokenMinter
        from ghbot.redelivery import RedeliverySweeper

        set_up_process(settings)
        self._version = settings.app_auth_version()
        # The key comes as bytes, or as a path read here, on this actor's own node.
        settings = replace(settings, settings=settings.settings.load_key())
        self._settings = settings
        self._minter = TokenMinter(settings)
        self._sweeper = RedeliverySweeper(self._minter.app, self._held)
        self._sweeping: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if settings.redeliver_every > 0:
            self._sweeping = loop.create_task(self._sweep_forever(settings.redeliver_every))
        path = settings.settings.private_key_path
        if path is not None:
            self._watching = loop.create_task(self._watch_key(KeyFile(path)))

    def version(self) -> str:
        """Return the version it runs (`RuntimeSettings.app_auth_version`)."""
        return self._version

    def key_fingerprint(self) -> str:
        """Return a SHA-256 of the public key of the key it signs with (public data)."""
        import hashlib

        return hashlib.sha256(self._minter.app.auth.public_key_pem()).hexdigest()[:16]

    async def _watch_key(self, key_file: KeyFile) -> None:
        while True:
            await asyncio.sleep(KEY_RECHECK)
            pem = key_file.changed()
            if pem is None:
                continue
            try:
                self._minter.app.auth.use_key(pem)
            except ConfigError as exc:  # its message never holds the key
                log.error(
                    "%s changed but cannot be used (%s); still signing with the old key",
                    key_file.path,
                    exc,
                )
                continue
            log.warning("%s changed: signing with the new key", key_file.path)

    def secrets_held(self) -> dict[str, bool]:
        """Tell which secrets this actor holds: the key, and no webhook secret."""
        return held_secrets(self._settings)

    async def token(self, installation_id: int, force: bool = False, traceparent: str = "") -> Any:
        """Return a token for the installation (cached until 5 minutes before expiry);
        its spans (the JWT signed, the exchange) join the trace `traceparent` names."""
        with telemetry.joined(traceparent):
            return await self._minter.token(installation_id, force=force)

    async def lease_token(
        self, installation_id: int, force: bool = False, traceparent: str = ""
    ) -> Any:
        """Return the installation's token for a quota lease's task (`AppAuthTokens`):
        cached, one exchange at a time however many tasks ask."""
        with telemetry.joined(traceparent):
            return await self._minter.cached_token(installation_id, force=force)

    async def app_get(self, path: str) -> Any:
        """GET an app-level (JWT) endpoint (for the CLI)."""
        return await self._minter.app_get(path)

    def rss(self) -> int:
        """Return the process's resident memory in bytes (for the memory benchmarks)."""
        return process_rss()

    async def sweep(self, lookback: float | None = None) -> dict[str, Any]:
        """Sweep for failed deliveries now, over the whole lookback (or `lookback`
        seconds), given-up ones included (`RedeliverySweeper.sweep(again=True)`);
        return what it found and did."""
        import msgspec

        swept = await self._sweeper.sweep(again=True, lookback=lookback)
        result: dict[str, Any] = msgspec.to_builtins(swept)
        return result

    async def _sweep_forever(self, every: float) -> None:
        # The first sweep comes soon after a (re)start: that is when an outage ends.
        await asyncio.sleep(min(every, 30.0))
        while True:
            try:
                await self._sweeper.sweep()
            except Exception as exc:
                log.warning("redelivery sweep failed (%s); next in %g s", type(exc).__name__, every)
            await asyncio.sleep(every)

    async def _held(self, failed: list[Any]) -> set[str]:
        """Ask each owning shard which of the `failed` deliveries it journaled."""
        s = self._settings
        by_shard: dict[int, list[tuple[int, str]]] = {}
        for item in failed:
            installation_id = item.installation_id or NO_INSTALLATION
            shard = shard_of(vshard_of(installation_id, s.vshards), s.shards)
            by_shard.setdefault(shard, []).append((installation_id, item.guid))
        calls = [
            ray.get_actor(shard_name(shard), namespace=s.namespace).delivered.remote(wanted)
            for shard, wanted in by_shard.items()
        ]
        answers: list[list[str]] = await asyncio.gather(*calls)
        return {guid for held in answers for guid in held}


def sqlite_memory_used() -> int:
    """Return the bytes SQLite's allocator holds in this process (0 when the library
    `sqlite3` is linked to does not say): ``sqlite3_memory_used()``."""
    import _sqlite3
    import ctypes

    try:
        used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (OSError, AttributeError):
        return 0
    used.restype = ctypes.c_int64
    return int(used())


def process_rss() -> int:
    """Return this process's resident memory in bytes, after a garbage collection."""
    import gc

    gc.collect()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# Ray's decorators are untyped; the classes above stay plain so mypy checks their bodies.
RemoteShard: Any = ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)(ShardActor)
RemoteAppAuth: Any = ray.remote(max_restarts=-1, num_cpus=0)(AppAuthActor)


def held_secrets(settings: RuntimeSettings) -> dict[str, bool]:
    """Tell which secrets `settings` carry (for the checks that only one actor has the key)."""
    s = settings.settings
    return {
        "private_key": s.private_key is not None,
        "private_key_path": s.private_key_path is not None,
        "webhook_secrets": bool(s.webhook_secrets),
    }


def get_or_create_actors(settings: RuntimeSettings) -> list[Any]:
    """Return handles to the shard actors, creating them and the app-auth actor if absent.

    An actor that runs another version than `settings.version` is replaced (see the
    module), once a change of layout is checked (one refused replaces nothing; one
    allowed stops the running shards first), the app-auth actor, then each shard in
    turn, the next once the
    previous one's successor has started (up to `SUCCESSOR_START`). The version is set
    once, where the deployment is built (`build_settings`), so every replica and
    driver compares the same one; settings without one ("") replace nothing. When the number of
    shard actors changes, virtual shards move between them: then every running shard
    is drained and stopped before the new ones start, so that no two shards hold a
    virtual shard at once (a few seconds of 503s for what an ingress replica still
    routing by the old number sends, which GitHub delivers again).
    The number of virtual shards is fixed for a journal's life: a change is refused
    (`ghbot journal reshard` changes it, the deployment stopped).

    Of the actors started here, only the app-auth actor is given the private key (or
    the path to read it from); shards get neither the key, its path, nor the webhook
    secrets. Ray keeps actor arguments for restarts, so what an actor is not passed is
    in none of its arguments. The ingress replicas, Serve's, keep the webhook secrets
    and the key's path, not the key; a key given as PEM text reaches them, and Serve's
    control store, in the deployment's arguments (`docs/architecture.md`).
    """
    _reshard(settings)  # first: a layout it refuses replaces nothing, this actor neither
    app_auth = settings.for_app_auth()
    _current(
        RemoteAppAuth,
        APP_AUTH_NAME,
        (app_auth,),
        app_auth.app_auth_version() if settings.version else "",
        settings.namespace,
        drain=False,
        max_concurrency=1000,
    )
    shards = settings.for_shards()
    return [
        _current(
            RemoteShard,
            shard_name(i),
            (i, shards),
            settings.version,
            settings.namespace,
            drain=True,
            max_concurrency=10_000,
        )
        for i in range(settings.shards)
    ]


def _reshard(settings: RuntimeSettings) -> None:
    """Stop every running shard first when the deployment's layout changes (see above)."""
    named = shards_by_name(settings.namespace)
    running = list(named.values())
    if not running:
        return
    wanted = (settings.shards, settings.vshards)
    layouts = _layouts(running)
    # At least one shard must have answered: with none (all restarting), the layout is
    # unknown, and the shards are replaced rather than kept on a guess.
    # A shard missing from the wanted names (an upgrade stopped between a shard's stop
    # and its successor's start) is made by `_current`: no reason to stop the others.
    wanted_names = {shard_name(i) for i in range(settings.shards)}
    if layouts and layouts <= {wanted} and set(named) <= wanted_names:
        return
    layouts = layouts or set()
    if any(vshards != settings.vshards for _, vshards in layouts):
        raise ConfigError(
            f"vshards={settings.vshards}, but the running shards use "
            f"{sorted(v for _, v in layouts)}: the number of virtual shards is fixed for a "
            "journal's life (its streams are partitioned by it); deploy with the old value, "
            f"or stop the deployment (ghbot stop) and run `{reshard_command(settings.vshards)}`"
        )
    log.warning(
        "resharding to %d shard actors: draining and stopping the %d running first",
        settings.shards,
        len(running),
    )
    retire(named, settings.namespace)


def _layouts(running: list[Any]) -> set[tuple[int, int]] | None:
    """Return the layouts (shards, virtual shards) the running shards answer with.

    A shard that cannot answer now (dead, or restarting: its node was lost) is left out;
    Ray restarts it with the settings it had, so it is judged by the others, never
    replaced for that alone (a replica starting during a node's loss used to stop every
    shard). None when a shard is older than layouts: then they are all replaced.
    """
    layouts: set[tuple[int, int]] = set()
    for shard in running:
        try:
            call = shard.layout
        except AttributeError:  # a shard of a version before `layout`
            return None
        try:
            shards, vshards = ray.get(call.remote(), timeout=60)
        except Exception as exc:
            log.warning("a shard did not say its layout (%s)", type(exc).__name__)
            continue
        layouts.add((int(shards), int(vshards)))
    return layouts


def running_shards(namespace: str) -> list[Any]:
    """Return handles to the deployment's shard actors there, in index order."""
    return list(shards_by_name(namespace).values())


def shards_by_name(namespace: str) -> dict[str, Any]:
    """Return the deployment's shard actors there by name, in index order: every index
    up to `MAX_SHARDS`, as an upgrade stopped between a shard's stop and its
    successor's start leaves a gap, and the shards past it run all the same."""
    found = {}
    for index in range(MAX_SHARDS):
        name = shard_name(index)
        try:
            found[name] = ray.get_actor(name, namespace=namespace)
        except ValueError:
            continue
    return found


def retire(
    shards: dict[str, Any], namespace: str, within: float = DRAIN_TIMEOUT, *, finish: bool = False
) -> int:
    """Drain the shard actors (by name) at once, up to `within` seconds, stop them, and
    wait until their names no longer name them (`_wait_gone`); return how many drained.
    What they left pending, their successors resume from the journal (`finish`: each
    runs every delivery it took first, for `ghbot stop`)."""
    # `finish` only when asked: a shard of an older version takes `within` alone.
    args = (within, True) if finish else (within,)
    refs = {name: shard.drain.remote(*args) for name, shard in shards.items()}
    drained = 0
    for name, ref in refs.items():
        try:
            drained += bool(ray.get(ref, timeout=within + 10))
        except Exception as exc:
            log.warning("%s did not drain: %s", name, type(exc).__name__)
    if drained < len(shards):
        log.warning("%d shard(s) did not drain: successors resume the rest", len(shards) - drained)
    for name, shard in shards.items():
        ray.kill(shard, no_restart=True)
        _wait_gone(name, namespace, shard)
    return drained


def _wait_gone(name: str, namespace: str, killed: Any, within: float = 30.0) -> bool:
    """Wait until `name` no longer names the actor `killed` (a killed actor frees its
    name a moment later): no actor holds it, or another does, the replacement that
    another ingress replica, replacing the same actor at the same time, has started.
    Return False if `killed` still held it after `within` seconds (logged)."""
    deadline = time.monotonic() + within
    while True:
        try:
            holder = ray.get_actor(name, namespace=namespace)
        except ValueError:
            return True
        if holder._actor_id != killed._actor_id:
            return True
        if time.monotonic() > deadline:
            log.warning("%s still holds its name %.0f s after it was killed", name, within)
            return False
        time.sleep(0.1)


def _current(
    remote: Any,
    name: str,
    args: tuple[Any, ...],
    version: str,
    namespace: str,
    *,
    drain: bool,
    **options: Any,
) -> Any:
    """Return the named actor running `version`: the one there, or its replacement
    (after draining the old one, if `drain`)."""
    options |= {"name": name, "namespace": namespace, "lifetime": "detached"}
    handle = remote.options(get_if_exists=True, **options).remote(*args)
    if not version:
        return handle
    try:
        running = ray.get(handle.version.remote(), timeout=60)
    except Exception:  # dead, or older than versions: replace it
        running = None
    if running == version:
        return handle
    log.warning("replacing %s: it runs version %s, the deployment %s", name, running, version)
    if drain:
        retire({name: handle}, namespace)
    else:
        ray.kill(handle, no_restart=True)
        _wait_gone(name, namespace, handle)
    successor = remote.options(get_if_exists=True, **options).remote(*args)
    if drain:
        # Replace the next shard once this one's successor has started: processes that
        # start at once share the cores, and each successor must be up within the hold
        # of what the ingress keeps for it (`actors.ray.ingress.HOLD_FOR`).
        try:
            ray.get(successor.stats.remote(), timeout=SUCCESSOR_START)
        except Exception as exc:
            log.warning("%s: not started within %g s (%r)", name, SUCCESSOR_START, exc)
    return successor


async def find_shard(index: int, namespace: str) -> Any:
    """Return a handle to the actor named as shard `index` now (its successor, once a
    shard is replaced); raise `ValueError` while none is."""
    return await asyncio.to_thread(ray.get_actor, shard_name(index), namespace=namespace)


def kill_actors(namespace: str = "ghbot", shards: int = 64) -> int:
    """Kill the deployment's detached actors (they outlive `serve.shutdown()`); return how many."""
    killed = 0
    for name in [APP_AUTH_NAME, *(shard_name(i) for i in range(shards))]:
        try:
            handle = ray.get_actor(name, namespace=namespace)
        except ValueError:
            continue
        ray.kill(handle, no_restart=True)
        killed += 1
    return killed


def wait_ready(shards: list[Any], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Block until every shard has started (taken its epochs; the recovery of its
    installations goes on in the background)."""
    deadline = time.monotonic() + timeout
    refs = [shard.stats.remote() for shard in shards]
    return list(ray.get(refs, timeout=max(deadline - time.monotonic(), 1.0)))
