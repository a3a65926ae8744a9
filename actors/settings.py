"""What a deployment is configured with, resolved once in the driver and passed to actors.

Settings travel to the Ray actors as arguments, not through the environment, so a
cluster's nodes need no variables of their own. `repr` hides the secrets.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any

from actors.bot import InstallationActor
from ghbot.config import Settings
from ghbot.errors import ConfigError
from ghbot.redelivery import GITHUB_WINDOW

__all__ = ["RuntimeSettings", "load_bot"]


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """Everything the ingress, the shards and the app-auth actor need."""

    bot: str
    settings: Settings
    namespace: str = "ghbot"
    shards: int = 2
    vshards: int = 2
    ingress_replicas: int = 1
    batch_inflight: int = 2
    batch_max: int = 256
    pace_writes: float | None = 1.0
    #: Seconds between redelivery sweeps (see `ghbot.redelivery`); 0 turns them off.
    redeliver_every: float = 120.0
    #: Seconds a delivery GUID stays deduplicated before the shards prune it: GitHub's
    #: redelivery window (3 days; 7 on GHES, so set at least that there).
    dedup_window: float = GITHUB_WINDOW
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def for_shards(self) -> RuntimeSettings:
        """Return the settings without the private key and webhook secrets.

        Shards need neither: tokens come from the app-auth actor, the only holder of
        the key, and signatures are checked at the ingress.
        """
        return replace(self, settings=replace(self.settings, private_key=None, webhook_secrets=()))

    def shard_of_vshard(self, vshard: int) -> int:
        """Return the index of the shard actor that hosts `vshard`."""
        return vshard % self.shards

    def vshards_of(self, shard: int) -> list[int]:
        """Return the virtual shards hosted by shard actor `shard`."""
        return [v for v in range(self.vshards) if v % self.shards == shard]


def load_bot(path: str) -> type[InstallationActor]:
    """Import `module:Class` and check it is an `InstallationActor`; `ConfigError` if not."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"bot={path!r} must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"bot={path!r}: cannot import {module_name!r} ({exc})") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, InstallationActor):
        raise ConfigError(f"bot={path!r} is not an InstallationActor subclass")
    return cls
