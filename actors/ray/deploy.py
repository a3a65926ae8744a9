"""`serve run ghbot.deploy bot=mymodule:Greeter`: build the Serve application.

Arguments (`key=value` on the command line) override the environment:
`bot` (or `GHBOT_BOT`), `shards` (`GHBOT_SHARDS`, shard actors; default
`default_shards()`: 1 on a machine with fewer than 4 cores, where a second shard
process costs CPU and memory for a few percent more webhooks a second
(`benchmarks/RESULTS.md`), else 2),
`vshards` (`GHBOT_VSHARDS`, virtual shards, fixed for a journal's life unless
`ghbot journal reshard` changes it with the deployment stopped; default: as
many as shards, since the SQLite journal commits once per virtual shard's file — more
only pays with PostgreSQL, to add shard actors later),
`replicas` (`GHBOT_INGRESS_REPLICAS`, default 1), `pace_writes` (`GHBOT_PACE_WRITES`,
seconds between one installation's mutating requests, default 1; 0 turns it off),
`redeliver_every` (`GHBOT_REDELIVER_EVERY`, seconds between sweeps for deliveries
GitHub failed to deliver, default 120, at least 1; 0 turns them off),
`dedup_window` (`GHBOT_DEDUP_WINDOW`, seconds a delivery GUID is remembered as
journaled, default 259200: GitHub's 3-day redelivery window; 604800 with another
`GITHUB_API_URL` (GHES keeps deliveries 7 days); at least 21600, the sweeper's
look-back),
`max_concurrent_requests` (`GHBOT_MAX_CONCURRENT_REQUESTS`, requests in flight to
GitHub for the whole app, split between the shards and the app-auth actor; default
100, GitHub's limit), `log_received_per_second` (`GHBOT_LOG_RECEIVED_PER_SECOND`,
received webhooks each ingress replica logs at INFO a second, default 10; 0 turns
them off), `shard_channel` (`GHBOT_SHARD_CHANNEL`: `tcp`, the default, sends batches
from the ingress to a shard over a TCP connection between their event loops,
`actors.ray.channel`; `ray` sends them as Ray actor calls, for nodes that reach each
other only on Ray's ports), `namespace` (`GHBOT_NAMESPACE`, default `ghbot`). GitHub settings
come from the environment (see `ghbot.config`), validated here, every problem listed
at once.

When `GITHUB_PRIVATE_KEY` names a file, the key is read here only to check it: what
goes to Ray is the path, and the app-auth actor reads the file on its own node, so the
key is in no Ray argument. PEM text in the variable has to travel to it instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from actors.settings import (
    MAX_DEDUP_WINDOW,
    MIN_DEDUP_WINDOW,
    RuntimeSettings,
    dedup_window,
    load_bot,
    max_concurrent_requests,
    number_in,
    pace_writes,
    whole_in,
)
from ghbot.config import Settings
from ghbot.errors import ConfigError
from ghbot.logs import DEFAULT_RECEIVED_PER_SECOND

T = TypeVar("T")
N = TypeVar("N", int, float)
#: A reading of a number within bounds: `number_in` or `whole_in`.
Ranged = Callable[[str, str, N, N], N]

__all__ = [
    "application",
    "build_settings",
    "default_shards",
    "deploy",
    "serve_environment",
]


def default_shards(cores: int | None = None) -> int:
    """Return the default number of shard actors for a machine with `cores` (this one's).

    Measured on 2 cores: with Ray calls one shard handled more webhooks a second than
    two; over the shards' channels two handle 3-6 % more than one but spend 17 % more
    CPU per delivery (smaller batches, a second process's fixed cost), CPU a 2-core
    machine's handlers need more; from 4 cores two shards run side by side. Set
    `GHBOT_SHARDS` and `GHBOT_VSHARDS` for a cluster: the default looks only at the
    machine that builds the application (`serve run`'s, or under `serve deploy`
    whichever node Ray runs Serve's build task on), and the virtual shards, which
    default to the shards, are fixed for a journal's life.
    """
    if cores is None:
        cores = os.cpu_count() or 1
    return 1 if cores < 4 else 2


def serve_environment(cores: int | None = None) -> dict[str, str]:
    """Return the Serve settings ghbot runs with on a node of `cores` (this one's).

    Serve reads them from the environment its processes start with, so they must be
    set before Ray starts (`ghbot serve-env` prints them as shell exports; cluster.yaml
    sets them on every node, each by its own cores). Measured on 2 cores
    (`benchmarks/RESULTS.md`), against Serve's defaults:

    - `RAY_SERVE_ENABLE_HA_PROXY=1`, `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`: Serve's
      high-throughput ingress (HAProxy in front, user code on the replica's own loop);
    - `RAY_SERVE_HAPROXY_NBTHREAD`: half the cores, 1 to 4 (Serve starts 4 threads
      on any machine);
    - `RAY_SERVE_HAPROXY_METRICS_ENABLED=0`: HAProxy's per-request metrics off.

    Serve's controller keeps its own pace (a pass every 0.1 s). A pass every 0.5 s
    spent 0.02 ms less CPU a delivery, but Serve then replaced a killed ingress
    replica about 1 s later: with one replica and Serve's health check every 10 s
    (before the ingress asked for one every 2 s), at GitHub's 10 s limit
    (`benchmarks/bench_replica_loss.py`).
    """
    if cores is None:
        cores = os.cpu_count() or 1
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_HAPROXY_NBTHREAD": str(max(1, min(4, cores // 2))),
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    }


def build_settings(
    args: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> RuntimeSettings:
    """Resolve and validate the deployment's settings; one `ConfigError` lists every problem.

    An argument given in `args` wins over the environment whatever its value: Serve
    passes a config file's `args` with their YAML types, so `pace_writes: 0` is the
    integer 0, which turns pacing off as `pace_writes=0` does on the command line. Only
    a missing argument, an empty one (`pace_writes=`) or a YAML null (`pace_writes:`
    with no value) falls back to the environment, then to the default.
    """
    env = os.environ if env is None else env

    def given(name: str, var: str, default: str = "") -> str:
        """The argument `name` as text if given, else the variable `var`, else `default`."""
        value = args.get(name)
        if value is not None and value != "":
            return str(value)
        return env.get(var) or default

    def said(name: str, var: str) -> str:
        """What an error calls the setting: the argument if given, else the variable."""
        value = args.get(name)
        return name if value is not None and value != "" else var

    problems: list[str] = []
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        problems.extend(exc.problems)
        # The rest is still checked, on settings that need nothing the environment
        # lacks, or, when a value there is malformed too, on the defaults.
        try:
            settings = Settings.from_env(env, require_app=False, require_webhooks=False)
        except ConfigError:
            settings = Settings(app_id=None, private_key=None, webhook_secrets=())

    def ranged(parse: Ranged[N], name: str, var: str, default: N, low: N, high: N) -> N:
        """`parse` the argument `name` or the variable `var` within `low`–`high`
        (`number_in`, `whole_in`); `default` when it is not given or wrong."""
        raw = given(name, var)
        if not raw:
            return default
        try:
            return parse(said(name, var), raw, low, high)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return default

    def read(parse: Callable[[str, str], T], name: str, var: str) -> T:
        """`parse` the argument `name` or the variable `var`; its default if wrong."""
        try:
            return parse(given(name, var), said(name, var))
        except ConfigError as exc:
            problems.extend(exc.problems)
            return parse("", var)

    bot = given("bot", "GHBOT_BOT")
    if not bot:
        problems.append("bot is not set: serve run ghbot.deploy bot=package.module:ClassName")
    else:
        try:
            load_bot(bot)
        except ConfigError as exc:
            problems.extend(exc.problems)
    shards = ranged(whole_in, "shards", "GHBOT_SHARDS", default_shards(), 1, 64)
    if settings.private_key_path is not None:
        settings = settings.without_key()
    channel = given("shard_channel", "GHBOT_SHARD_CHANNEL", "tcp").lower()
    if channel not in ("tcp", "ray"):
        problems.append(
            f"{said('shard_channel', 'GHBOT_SHARD_CHANNEL')}={channel!r} must be tcp or ray"
        )
    namespace = given("namespace", "GHBOT_NAMESPACE", "ghbot")
    if not namespace.strip():
        problems.append(
            f"{said('namespace', 'GHBOT_NAMESPACE')}={namespace!r} must name a Ray namespace"
        )
        namespace = "ghbot"
    runtime = RuntimeSettings(
        bot=bot,
        settings=settings,
        namespace=namespace,
        shard_channel=channel != "ray",
        shards=shards,
        vshards=ranged(whole_in, "vshards", "GHBOT_VSHARDS", shards, 1, 4096),
        ingress_replicas=ranged(whole_in, "replicas", "GHBOT_INGRESS_REPLICAS", 1, 1, 64),
        pace_writes=read(pace_writes, "pace_writes", "GHBOT_PACE_WRITES"),
        redeliver_every=ranged(
            number_in, "redeliver_every", "GHBOT_REDELIVER_EVERY", 120.0, 0, 86400
        ),
        dedup_window=ranged(
            number_in,
            "dedup_window",
            "GHBOT_DEDUP_WINDOW",
            dedup_window(settings.api_url),  # GitHub's window for the API's URL
            MIN_DEDUP_WINDOW,
            MAX_DEDUP_WINDOW,
        ),
        max_concurrent_requests=read(
            max_concurrent_requests, "max_concurrent_requests", "GHBOT_MAX_CONCURRENT_REQUESTS"
        ),
        log_received_per_second=ranged(
            whole_in,
            "log_received_per_second",
            "GHBOT_LOG_RECEIVED_PER_SECOND",
            DEFAULT_RECEIVED_PER_SECOND,
            0,
            100_000,
        ),
    )
    if 0 < runtime.redeliver_every < 1:
        problems.append(
            f"redeliver_every={runtime.redeliver_every:g} must be 0 (no sweeps) or at least "
            "1: each sweep lists the app's deliveries with its JWT"
        )
    if runtime.vshards < runtime.shards:
        problems.append(f"vshards ({runtime.vshards}) must be at least shards ({runtime.shards})")
    if runtime.max_concurrent_requests <= runtime.shards:
        problems.append(
            f"max_concurrent_requests ({runtime.max_concurrent_requests}) must be more than "
            f"shards ({runtime.shards}): each shard and the app-auth actor need one at least"
        )
    if problems:
        raise ConfigError(problems)
    # The version every replica and actor compares (see `get_or_create_actors`): the
    # bot's and ghbot's code as this process sees it, which is the code the deployment
    # ships.
    return runtime.versioned()


def application(runtime: RuntimeSettings, **options: Any) -> Any:
    """Return the Serve application of `runtime`: its ingress, `ingress_replicas` of it.

    `options` are more of Serve's deployment options, over ghbot's (the benchmarks
    compare `health_check_period_s` values).
    """
    from actors.ray.ingress import WebhookDeployment

    replicas = WebhookDeployment.options(num_replicas=runtime.ingress_replicas, **options)
    return replicas.bind(runtime)


def deploy(args: Mapping[str, Any] | None = None) -> Any:
    """Return the Serve application for `serve run ghbot.deploy key=value ...`."""
    return application(build_settings(args or {}))
