"""What a deployment is configured with, resolved once in the driver and passed to actors.

Settings travel to the Ray actors as arguments, not through the environment, so a
cluster's nodes need no variables of their own. `repr` hides the secrets.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sysconfig
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

import actors
import ghbot
from actors.bot import InstallationActor
from ghbot.config import DEFAULT_API_URL, Settings
from ghbot.errors import ConfigError
from ghbot.logs import DEFAULT_RECEIVED_PER_SECOND
from ghbot.redelivery import GHES_WINDOW, GITHUB_WINDOW

__all__ = [
    "APP_AUTH_ONLY",
    "INGRESS_ONLY",
    "MAX_DEDUP_WINDOW",
    "MIN_DEDUP_WINDOW",
    "RUNTIME_PACKAGES",
    "RuntimeSettings",
    "code_version",
    "dedup_window",
    "held_secrets",
    "load_bot",
    "max_concurrent_requests",
    "number_in",
    "pace_writes",
    "whole_in",
]

#: The sweeper asks GitHub to redeliver the failed deliveries of the last 6 hours that
#: the journal lacks: a GUID forgotten sooner would be redelivered and run twice.
MIN_DEDUP_WINDOW: Final = 6 * 3600.0
MAX_DEDUP_WINDOW: Final = 366 * 86400.0


def dedup_window(api_url: str, raw: str = "") -> float:
    """Return the seconds a delivery GUID stays deduplicated: `raw` when set, else
    GitHub's redelivery window for `api_url` (3 days on api.github.com; 7 for any other
    URL, as GitHub Enterprise Server keeps deliveries a week and a GUID forgotten
    sooner could be redelivered from there and run twice).

    Raises `ConfigError`, naming `GHBOT_DEDUP_WINDOW`, unless `raw` is a number of
    seconds from `MIN_DEDUP_WINDOW` to `MAX_DEDUP_WINDOW`.
    """
    if not raw:
        return GITHUB_WINDOW if api_url == DEFAULT_API_URL else GHES_WINDOW
    return number_in("GHBOT_DEDUP_WINDOW", raw, MIN_DEDUP_WINDOW, MAX_DEDUP_WINDOW)


def pace_writes(raw: str, name: str = "GHBOT_PACE_WRITES") -> float | None:
    """Return the seconds between one installation's writes `raw` says: 1 when it is
    empty, None (writes not paced) for 0. Raises `ConfigError`, naming `name`, unless
    `raw` is a number from 0 to 60."""
    if not raw:
        return 1.0
    return number_in(name, raw, 0, 60) or None


def max_concurrent_requests(raw: str, name: str = "GHBOT_MAX_CONCURRENT_REQUESTS") -> int:
    """Return the requests in flight to GitHub at once for the whole app `raw` says:
    100 (GitHub's secondary limit) when it is empty. Raises `ConfigError`, naming
    `name`, unless `raw` is a whole number from 2 to 10000."""
    return whole_in(name, raw, 2, 10_000) if raw else 100


def whole_in(name: str, raw: str, low: int, high: int) -> int:
    """Return `raw` as a whole number from `low` to `high`; `ConfigError`, naming
    `name`, for anything else (1.5 shards, 0.5 log lines a second)."""
    value = number_in(name, raw, low, high)
    if not value.is_integer():
        raise ConfigError(f"{name}={raw!r} must be a whole number from {low} to {high}")
    return int(value)


def number_in(name: str, raw: str, low: float, high: float) -> float:
    """Return `raw` as a number from `low` to `high`; `ConfigError`, naming `name`,
    for anything else."""
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} must be a number from {low:g} to {high:g}")
    return value


#: The settings only the ingress replicas read. A change of them is a new ingress for
#: Serve, and no new version for the actors (`for_shards`): scaling the ingress
#: (`GHBOT_INGRESS_REPLICAS`) replaces no shard and not the app-auth actor.
INGRESS_ONLY: Final = ("ingress_replicas", "batch_inflight", "batch_max", "log_received_per_second")
#: The settings only the app-auth actor reads (its redelivery sweeps): in its version
#: (`app_auth_version`), not in the shards', so a change of them replaces no shard.
APP_AUTH_ONLY: Final = ("redeliver_every",)


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
    #: Batches go from the ingress to a shard over a TCP connection of their own
    #: (`actors.ray.channel`); False: as Ray actor calls (`GHBOT_SHARD_CHANNEL=ray`).
    shard_channel: bool = True
    pace_writes: float | None = 1.0
    #: Seconds between redelivery sweeps (see `ghbot.redelivery`); 0 turns them off.
    redeliver_every: float = 120.0
    #: Seconds a delivery GUID stays deduplicated before the shards prune it: GitHub's
    #: redelivery window (3 days; 7 on GHES, which `build_settings` takes for any API
    #: URL but api.github.com's).
    dedup_window: float = GITHUB_WINDOW
    #: Requests in flight to GitHub at once for the whole app, across every process
    #: (GitHub's secondary limit is 100); split between the app-auth actor and shards.
    max_concurrent_requests: int = 100
    #: Received webhooks each ingress replica logs at INFO per second; 0: none.
    log_received_per_second: int = DEFAULT_RECEIVED_PER_SECOND
    #: The deployment's version, `CODE-SETTINGS` (see `versioned`): an actor running
    #: another is replaced when the deployment starts. "" until `versioned` sets it.
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def versioned(self) -> RuntimeSettings:
        """Return the settings with their `version`: hashes of the code (the bot's and
        ghbot's, `code_version`) and of the settings the shards run with (`for_shards`:
        no secret goes into it, nor what only the ingress or the app-auth actor reads;
        see `app_auth_version`), the journal's URL included though `repr` hides it."""
        shards = replace(self.for_shards(), version="")
        # The journal's URL is out of `repr` (it may hold a password), not out of the
        # version: shards open it at start, so a new one must replace them.
        material = f"{shards!r}\0{shards.settings.journal_url}".encode()
        config = hashlib.sha256(material).hexdigest()[:8]
        return replace(self, version=f"{code_version(self.bot)}-{config}")

    def app_auth_version(self) -> str:
        """Return the app-auth actor's version: the deployment's, the key's hash
        (`key_version`) and a hash of the settings only it reads (`APP_AUTH_ONLY`)."""
        own = repr(tuple(getattr(self, name) for name in APP_AUTH_ONLY)).encode()
        return f"{self.version}-{self.key_version()}-{hashlib.sha256(own).hexdigest()[:8]}"

    def key_version(self) -> str:
        """Return a short hash of the private key (or of its path): what makes the
        app-auth actor's version differ when only the key changed. Not the key."""
        s = self.settings
        material = s.private_key or (s.private_key_path or "").encode()
        return hashlib.sha256(material).hexdigest()[:8]

    def for_shards(self) -> RuntimeSettings:
        """Return the settings without the private key, its path or the webhook secrets,
        and with the settings only the ingress or the app-auth actor reads
        (`INGRESS_ONLY`, `APP_AUTH_ONLY`) at their defaults.

        Shards need none of them: tokens come from the app-auth actor, the only holder
        of the key, which also sweeps for failed deliveries, and signatures are checked
        and batches made at the ingress.
        """
        settings = replace(
            self.settings, private_key=None, private_key_path=None, webhook_secrets=()
        )
        return replace(self, settings=settings, **_NOT_THE_SHARDS)

    def for_app_auth(self) -> RuntimeSettings:
        """Return the settings the app-auth actor needs: the key, no webhook secrets.

        When the key was given as a file, only its path goes: the actor reads the file
        on its own node, so the key is never a Ray argument (nor in Ray's control store,
        which keeps actor arguments for restarts).
        """
        settings = replace(self.settings, webhook_secrets=())
        if settings.private_key_path is not None:
            settings = settings.without_key()
        return replace(self, settings=settings)

    def for_ingress(self) -> RuntimeSettings:
        """Return the settings an ingress replica keeps: the webhook secrets, no key."""
        return replace(self, settings=replace(self.settings, private_key=None))

    @property
    def app_auth_requests(self) -> int:
        """Return how many requests the app-auth actor may have in flight to GitHub.

        Token exchanges and redelivery sweeps are few: a small fixed share, so the
        shards, which make the bot's requests, get the rest.
        """
        return max(1, min(4, self.max_concurrent_requests // (self.shards + 1)))

    @property
    def shard_requests(self) -> int:
        """Return how many requests each shard actor may have in flight to GitHub.

        The shares of every shard and the app-auth actor add up to at most
        `max_concurrent_requests` (as long as there are fewer shards than that).
        """
        left = self.max_concurrent_requests - self.app_auth_requests
        return max(1, left // self.shards)


#: The defaults of `INGRESS_ONLY` and `APP_AUTH_ONLY`, which `for_shards` sets.
_NOT_THE_SHARDS: Final[dict[str, Any]] = {
    f.name: f.default for f in fields(RuntimeSettings) if f.name in INGRESS_ONLY + APP_AUTH_ONLY
}


def held_secrets(settings: RuntimeSettings) -> dict[str, bool]:
    """Tell which secrets `settings` carry (for the checks that only one actor has the key)."""
    s = settings.settings
    return {
        "private_key": s.private_key is not None,
        "private_key_path": s.private_key_path is not None,
        "webhook_secrets": bool(s.webhook_secrets),
    }


def load_bot(path: str) -> type[InstallationActor]:
    """Import `module:Class` and check it is an `InstallationActor`; `ConfigError` if not."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"bot={path!r} must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"bot={path!r}: cannot import {module_name!r}{_where(exc)} ({exc})"
        ) from None
    except Exception as exc:  # a SyntaxError, a mistyped @on(...) raising UsageError
        raise ConfigError(
            f"bot={path!r}: importing {module_name!r} raised {type(exc).__name__}"
            f"{_where(exc)}: {exc}"
        ) from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, InstallationActor):
        raise ConfigError(f"bot={path!r} is not an InstallationActor subclass")
    return cls


def _where(exc: Exception) -> str:
    """Return `" at FILE:LINE"`, where an import raised `exc` in the bot's code: the
    innermost frame of its traceback outside ghbot, importlib, the standard library
    and installed packages (a mistyped `@on` raises in ghbot, a bad pattern in `re`,
    from the bot's line); else the innermost outside ghbot and importlib (a bot
    installed as a package); "" when there is none (a `SyntaxError`'s text names its
    place, a missing module has none)."""
    own = tuple(
        str(Path(package.__file__ or "").parent) + os.sep for package in (actors, ghbot, importlib)
    )
    paths = sysconfig.get_paths()
    libraries = tuple(
        str(Path(paths[key]).resolve()) + os.sep
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
    )
    frames = [
        frame
        for frame in reversed(traceback.extract_tb(exc.__traceback__))
        if not frame.filename.startswith(("<", *own))
    ]
    for frame in frames:
        if not str(Path(frame.filename).resolve()).startswith(libraries):
            return f" at {frame.filename}:{frame.lineno}"
    return f" at {frames[0].filename}:{frames[0].lineno}" if frames else ""


#: The packages of ghbot's own code: in every deployment's version beside the bot's, so
#: that upgrading ghbot alone replaces the actors too (their processes keep the code
#: they imported).
RUNTIME_PACKAGES: Final = ("ghbot", "actors")


def code_version(bot: str, runtime: Sequence[str] = RUNTIME_PACKAGES) -> str:
    """Return a short hash of the code the actors run: every `.py` file of the package
    the bot's module belongs to (the top-level one; the module's own file when it has
    no package), and of the `runtime` packages (ghbot's).
    """
    top = bot.partition(":")[0].split(".")[0]
    digest = hashlib.sha256()
    for name in dict.fromkeys((top, *runtime)):
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise ConfigError(f"bot={bot!r}: cannot find {name!r}")
        digest.update(name.encode() + b"\0")
        if spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                root = Path(location)
                for path in sorted(root.rglob("*.py")):
                    digest.update(path.relative_to(root).as_posix().encode() + b"\0")
                    digest.update(path.read_bytes())
        elif spec.origin:
            digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()[:8]
