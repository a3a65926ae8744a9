"""The app-auth actor: the only holder of the app's private key, and the redelivery sweeper."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import ray

from actors.ray.names import shard_name
from actors.ray.process import process_rss, set_up_process
from actors.runtime_events import NO_INSTALLATION
from actors.settings import RuntimeSettings, held_secrets
from actors.wire import shard_of, vshard_of
from ghbot import telemetry
from ghbot.auth import KeyFile
from ghbot.errors import ConfigError

__all__ = ["AppAuthActor"]

log = logging.getLogger("ghbot.runtime")

#: Seconds between two looks at the private key's file (`KeyFile`) for a new key.
KEY_RECHECK = 5.0


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
