"""Deployment settings: validation at `serve run`, and no secret where it is not needed."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from actors.ray.deploy import application, build_settings
from actors.ray.ingress import GRACEFUL_WAIT_LOOP_S, HEALTH_CHECK_PERIOD_S, MAX_SURGE_PERCENT
from actors.ray.process import GC_THRESHOLDS, SWITCH_INTERVAL_S
from actors.settings import INGRESS_ONLY, RuntimeSettings, load_bot
from ghbot.config import Settings
from ghbot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _env(pem: bytes) -> dict[str, str]:
    return {
        "GITHUB_APP_ID": "1",
        "GITHUB_PRIVATE_KEY": pem.decode(),
        "GITHUB_WEBHOOK_SECRET": "topsecret",
        "GITHUB_API_URL": "http://127.0.0.1:9",
    }


def test_the_default_number_of_shards_follows_the_cores(pem_pkcs8: bytes) -> None:
    from actors.ray.deploy import default_shards

    assert [default_shards(n) for n in (1, 2, 3, 4, 16)] == [1, 1, 1, 2, 2]
    runtime = build_settings({"bot": "examples.greeter:Greeter"}, _env(pem_pkcs8))
    assert runtime.shards == runtime.vshards == default_shards()
    assert runtime.max_concurrent_requests == 100  # docs/operations.md's default
    env = {**_env(pem_pkcs8), "GHBOT_SHARDS": "3", "GHBOT_MAX_CONCURRENT_REQUESTS": "40"}
    scaled = build_settings({"bot": "examples.greeter:Greeter"}, env)
    # GHBOT_VSHARDS follows GHBOT_SHARDS unless set (docs/operations.md, "Scaling").
    assert (scaled.shards, scaled.vshards, scaled.max_concurrent_requests) == (3, 3, 40)
    # Versioned where the deployment is built: the code's hash, then the settings'.
    code, _, config = runtime.version.partition("-")
    assert len(code) == len(config) == 8
    other = build_settings({"bot": "examples.greeter:Greeter", "shards": "3"}, _env(pem_pkcs8))
    assert other.version.partition("-")[0] == code and other.version != runtime.version


def test_the_code_version_covers_ghbot_s_code_as_well_as_the_bot_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pem_pkcs8: bytes
) -> None:
    """An upgrade of ghbot alone (the bot's code unchanged) is a new version too: the
    shards and the app-auth actor, which keep the code they imported, are replaced."""
    from actors.settings import RUNTIME_PACKAGES, code_version

    assert RUNTIME_PACKAGES == ("ghbot", "actors")
    for package in ("v_bot", "v_runtime"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    bot = "v_bot.bot:Bot"
    before = code_version(bot, runtime=("v_runtime",))
    assert code_version(bot, runtime=("v_runtime",)) == before  # the same code
    (tmp_path / "v_runtime" / "__init__.py").write_text("X = 2\n")  # the runtime's alone
    after = code_version(bot, runtime=("v_runtime",))
    assert after != before
    (tmp_path / "v_bot" / "__init__.py").write_text("X = 2\n")  # the bot's alone
    assert code_version(bot, runtime=("v_runtime",)) not in (before, after)
    # By default the runtime is ghbot's own packages, hashed where they are installed.
    greeter = "examples.greeter:Greeter"
    assert code_version(greeter) != code_version(greeter, runtime=())
    runtime = build_settings({"bot": greeter}, _env(pem_pkcs8))
    assert runtime.version.partition("-")[0] == code_version(greeter)


def test_the_ingress_settings_leave_the_actors_version_alone(pem_pkcs8: bytes) -> None:
    """Scaling the ingress (or its batching, or its log rate) is a new ingress for Serve,
    not a new version for the shards and the app-auth actor; the shards' settings are."""
    base = {"bot": "examples.greeter:Greeter"}
    runtime = build_settings(base, _env(pem_pkcs8))
    # Through `serve run`'s arguments, for the two it takes...
    for name, value in [("replicas", "3"), ("log_received_per_second", "0")]:
        other = build_settings({**base, name: value}, _env(pem_pkcs8))
        assert other != runtime and other.version == runtime.version, name
    # ...and every one of INGRESS_ONLY, so that one added later is checked too.
    for field in INGRESS_ONLY:
        changed = replace(runtime, **{field: getattr(runtime, field) + 1})
        assert changed.versioned().version == runtime.version, field
        assert getattr(changed.for_shards(), field) == getattr(runtime.for_shards(), field)
    for name, value in [("pace_writes", "0"), ("dedup_window", "259200")]:
        other = build_settings({**base, name: value}, _env(pem_pkcs8))
        assert other.version != runtime.version, name


def test_every_setting_the_shards_read_is_in_their_version(pem_pkcs8: bytes) -> None:
    """A shard keeps running while its version matches: each of `Settings`' fields but
    the secrets changes it, `journal_url` too although `repr` leaves it out (it may hold
    a password), and the version does not show it."""
    runtime = build_settings({"bot": "examples.greeter:Greeter"}, _env(pem_pkcs8))
    secrets = {"private_key", "private_key_path", "webhook_secrets"}
    changes: dict[str, Any] = {
        "app_id": 2,
        "api_url": "http://127.0.0.1:10",
        "rate_limit_margin": 0.2,
        "token_cache_ttl": 3000.0,
        "max_retries": 4,
        "request_timeout": 20.0,
        "log_level": "DEBUG",
        "journal_url": "postgresql://ghbot:pg-password@db.example/ghbot",
        "log_format": "text",
    }
    assert {f.name for f in dataclasses.fields(Settings)} - secrets == set(changes)
    for name, value in changes.items():
        changed = replace(runtime, settings=replace(runtime.settings, **{name: value}))
        assert changed.versioned().version != runtime.version, name
    url = str(changes["journal_url"])
    moved = replace(runtime, settings=replace(runtime.settings, journal_url=url))
    assert "pg-password" not in moved.versioned().version


def test_the_sweep_interval_is_in_the_app_auth_actors_version_alone(pem_pkcs8: bytes) -> None:
    """Only the app-auth actor sweeps for failed deliveries: a new interval is a new
    version for it, not for the shards; the shards' settings are new for both, the
    ingress's for neither."""
    base = {"bot": "examples.greeter:Greeter"}
    runtime = build_settings(base, _env(pem_pkcs8))

    def app_auth(args: dict[str, str]) -> str:
        return build_settings({**base, **args}, _env(pem_pkcs8)).for_app_auth().app_auth_version()

    swept = build_settings({**base, "redeliver_every": "600"}, _env(pem_pkcs8))
    assert swept.version == runtime.version and swept.for_shards() == runtime.for_shards()
    assert app_auth({"redeliver_every": "600"}) != app_auth({})
    assert app_auth({"pace_writes": "0"}) != app_auth({})
    assert app_auth({"replicas": "2"}) == app_auth({})


def test_a_new_key_is_a_new_app_auth_version_and_a_key_files_is_its_path(
    pem_pkcs8: bytes, tmp_path: Path
) -> None:
    """docs/operations.md: the app-auth actor's version covers the private key (a key
    given as a file: its path; a new file at that path is read without a restart)."""
    from ghbot.testing import app_key_pair

    base = {"bot": "examples.greeter:Greeter"}
    old = build_settings(base, _env(pem_pkcs8))
    new = build_settings(base, _env(app_key_pair()[0]))
    assert new.for_app_auth().app_auth_version() != old.for_app_auth().app_auth_version()
    assert new.version == old.version and new.for_shards() == old.for_shards()
    key = tmp_path / "app.pem"
    key.write_bytes(pem_pkcs8)
    as_file = {**_env(pem_pkcs8), "GITHUB_PRIVATE_KEY": str(key)}
    first = build_settings(base, as_file).for_app_auth().app_auth_version()
    key.write_bytes(app_key_pair()[0])
    assert build_settings(base, as_file).for_app_auth().app_auth_version() == first


def test_shards_get_neither_the_key_nor_the_webhook_secrets(pem_pkcs8: bytes) -> None:
    runtime = build_settings({"bot": "examples.greeter:Greeter"}, _env(pem_pkcs8))
    assert runtime.settings.private_key and runtime.settings.webhook_secrets
    shards = runtime.for_shards()
    assert shards.settings.private_key is None
    assert shards.settings.webhook_secrets == ()
    assert shards.settings.api_url == runtime.settings.api_url
    assert "topsecret" not in repr(runtime) and "PRIVATE" not in repr(runtime)


def test_defaults_and_arguments(pem_pkcs8: bytes) -> None:
    runtime = build_settings({"bot": "examples.greeter:Greeter", "shards": "3"}, _env(pem_pkcs8))
    assert (runtime.shards, runtime.vshards) == (3, 3)
    assert runtime.pace_writes == 1.0
    off = build_settings({"bot": "examples.greeter:Greeter", "pace_writes": "0"}, _env(pem_pkcs8))
    assert off.pace_writes is None
    assert runtime.redeliver_every == 120.0
    args = {"bot": "examples.greeter:Greeter", "redeliver_every": "0"}
    assert build_settings(args, _env(pem_pkcs8)).redeliver_every == 0
    # A sweep lists the app's deliveries: not ten times a second (a typo for 0.1 h).
    with pytest.raises(ConfigError, match=r"redeliver_every=0.1 must be 0 \(no sweeps\)"):
        build_settings({**args, "redeliver_every": "0.1"}, _env(pem_pkcs8))


def test_serve_yaml_args_win_over_the_environment_with_their_yaml_types(
    pem_pkcs8: bytes,
) -> None:
    """`serve deploy` hands deploy/serve.yaml's `args` to `ghbot.deploy` with their YAML
    types: `pace_writes: 0` is the integer 0. Read with `or`, a 0 fell through to the
    environment (or the default): pacing, sweeps and received lines stayed on, a
    `shards: 0` was silently the environment's count instead of refused."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    text = (ROOT / "deploy" / "serve.yaml").read_text()
    zeros = (
        "{bot: examples.greeter:Greeter, pace_writes: 0, redeliver_every: 0,"
        " log_received_per_second: 0}"
    )
    assert "args: {}" in text
    config = ServeDeploySchema.model_validate(
        yaml.safe_load(text.replace("args: {}", f"args: {zeros}"))
    )
    (app,) = config.applications
    assert app.args["pace_writes"] == 0 and type(app.args["pace_writes"]) is int
    env = {
        **_env(pem_pkcs8),
        "GHBOT_PACE_WRITES": "2",
        "GHBOT_REDELIVER_EVERY": "600",
        "GHBOT_LOG_RECEIVED_PER_SECOND": "20",
        "GHBOT_SHARDS": "2",
        "GHBOT_DEDUP_WINDOW": "90000",
        "GHBOT_SHARD_CHANNEL": "tcp",
        "GHBOT_NAMESPACE": "from-env",
    }
    for environment in (env, _env(pem_pkcs8)):  # over the environment's values, and the defaults
        off = build_settings(app.args, environment)
        assert off.pace_writes is None  # 0: no pacing
        assert off.redeliver_every == 0  # 0: no sweeps
        assert off.log_received_per_second == 0  # 0: no received lines
    # Integers other than 0, and a float, are taken as their text would be.
    ints = {
        "bot": "examples.greeter:Greeter",
        "shards": 3,
        "vshards": 8,
        "replicas": 2,
        "pace_writes": 0.5,
        "redeliver_every": 300,
        "dedup_window": 86400,
        "max_concurrent_requests": 50,
        "log_received_per_second": 5,
    }
    runtime = build_settings(ints, env)
    assert (runtime.shards, runtime.vshards, runtime.ingress_replicas) == (3, 8, 2)
    assert (runtime.pace_writes, runtime.redeliver_every, runtime.dedup_window) == (0.5, 300, 86400)
    assert (runtime.max_concurrent_requests, runtime.log_received_per_second) == (50, 5)
    # The text arguments too, over the environment.
    texts = build_settings({**ints, "shard_channel": "ray", "namespace": "from-args"}, env)
    assert (texts.shard_channel, texts.namespace) == (False, "from-args")
    # A 0 given where 0 is not allowed is refused, not replaced by the environment's value.
    with pytest.raises(ConfigError) as caught:
        build_settings({**ints, "shards": 0, "dedup_window": 0, "namespace": " "}, env)
    text = "\n".join(caught.value.problems)
    assert "shards='0' must be" in text and "dedup_window='0' must be" in text
    assert "namespace=' ' must name a Ray namespace" in text
    # Only a missing argument, an empty one (`pace_writes=`) or a YAML null leaves it
    # to the environment.
    unset = build_settings({**ints, "pace_writes": None, "shards": None, "namespace": ""}, env)
    assert (unset.pace_writes, unset.shards, unset.namespace) == (2.0, 2, "from-env")
    assert build_settings({**ints, "pace_writes": ""}, env).pace_writes == 2.0


def test_the_application_has_as_many_ingress_replicas_as_asked(
    pem_pkcs8: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`replicas=` (or GHBOT_INGRESS_REPLICAS) reaches Serve as the ingress's replica
    count, through `serve run ghbot.deploy` and `application()` alike."""
    from actors.ray.deploy import deploy

    bot = {"bot": "examples.greeter:Greeter"}
    assert application(build_settings(bot, _env(pem_pkcs8)))._bound_deployment.num_replicas == 1
    two = application(build_settings({**bot, "replicas": "2"}, _env(pem_pkcs8)))
    assert two._bound_deployment.num_replicas == 2
    for name, value in {**_env(pem_pkcs8), "GHBOT_INGRESS_REPLICAS": "3"}.items():
        monkeypatch.setenv(name, value)
    assert deploy(bot)._bound_deployment.num_replicas == 3
    # Serve checks each replica every HEALTH_CHECK_PERIOD_S, not its default 10 s: a
    # replica whose process died is replaced that much sooner (bench_replica_loss.py).
    config = deploy(bot)._bound_deployment._deployment_config
    assert config.health_check_period_s == HEALTH_CHECK_PERIOD_S < 10
    # A redeploy starts a new replica before it stops an old one: the old one answers
    # meanwhile (bench_replica_loss.py --event upgrade|redeploy --surges 0,25).
    assert config.max_surge_percent == MAX_SURGE_PERCENT == 25
    # A stopping replica checks every half second, not Serve's 2 s, that what it holds
    # is answered (the cluster tests' replicas, each stopped at its test's end, too).
    assert config.graceful_shutdown_wait_loop_s == GRACEFUL_WAIT_LOOP_S < 2


def test_received_lines_per_second_are_a_validated_setting(pem_pkcs8: bytes) -> None:
    bot = {"bot": "examples.greeter:Greeter"}
    assert build_settings(bot, _env(pem_pkcs8)).log_received_per_second == 10
    env = {**_env(pem_pkcs8), "GHBOT_LOG_RECEIVED_PER_SECOND": "0"}
    assert build_settings(bot, env).log_received_per_second == 0
    args = {**bot, "log_received_per_second": "50"}
    assert build_settings(args, env).log_received_per_second == 50
    for wrong in ("many", "-1"):
        env = {**_env(pem_pkcs8), "GHBOT_LOG_RECEIVED_PER_SECOND": wrong}
        with pytest.raises(ConfigError, match=f"GHBOT_LOG_RECEIVED_PER_SECOND='{wrong}'"):
            build_settings(bot, env)


def test_the_shard_channel_is_tcp_unless_set_to_ray(pem_pkcs8: bytes) -> None:
    bot = {"bot": "examples.greeter:Greeter"}
    assert build_settings(bot, _env(pem_pkcs8)).shard_channel is True
    env = {**_env(pem_pkcs8), "GHBOT_SHARD_CHANNEL": "RAY"}
    assert build_settings(bot, env).shard_channel is False
    assert build_settings({**bot, "shard_channel": "tcp"}, env).shard_channel is True
    env = {**_env(pem_pkcs8), "GHBOT_SHARD_CHANNEL": "udp"}
    with pytest.raises(ConfigError, match="GHBOT_SHARD_CHANNEL='udp' must be tcp or ray"):
        build_settings(bot, env)
    with pytest.raises(ConfigError, match=r"^shard_channel='udp' must be tcp or ray"):
        build_settings({**bot, "shard_channel": "udp"}, _env(pem_pkcs8))


def test_a_bad_value_is_named_as_it_was_given(pem_pkcs8: bytes) -> None:
    """An operator who set only the variable is told the variable, and one who gave
    `serve run` the argument the argument."""
    bot = {"bot": "examples.greeter:Greeter"}
    env = {**_env(pem_pkcs8), "GHBOT_LOG_RECEIVED_PER_SECOND": "x", "GHBOT_SHARDS": "1.5"}
    with pytest.raises(ConfigError) as caught:
        build_settings(bot, env)
    assert list(caught.value.problems) == [
        "GHBOT_SHARDS='1.5' must be a whole number from 1 to 64",
        "GHBOT_LOG_RECEIVED_PER_SECOND='x' must be a number from 0 to 100000",
    ]
    with pytest.raises(ConfigError) as caught:
        build_settings({**bot, "shards": "1.5"}, env)
    assert caught.value.problems[0] == "shards='1.5' must be a whole number from 1 to 64"


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings({"bot": "nowhere:Bot", "shards": "0", "vshards": "x"}, {})
    text = "\n".join(caught.value.problems)
    for expected in ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "GITHUB_WEBHOOK_SECRET", "nowhere"):
        assert expected in text
    assert "shards='0'" in text and "vshards='x'" in text


def test_a_malformed_environment_value_does_not_hide_the_other_problems() -> None:
    env = {"GITHUB_APP_ID": "abc", "RATE_LIMIT_MARGIN": "2"}
    with pytest.raises(ConfigError) as caught:
        build_settings({"bot": "nowhere:Bot", "shards": "0"}, env)
    text = "\n".join(caught.value.problems)
    for expected in ("GITHUB_APP_ID", "RATE_LIMIT_MARGIN", "nowhere", "shards='0'"):
        assert expected in text


@pytest.mark.parametrize(
    ("name", "value"),
    [("shards", "1.5"), ("log_received_per_second", "0.5"), ("replicas", "2.5")],
)
def test_a_count_that_is_not_whole_is_refused_not_cut(
    name: str, value: str, pem_pkcs8: bytes
) -> None:
    """`int()` cut 1.5 shards to 1 and 0.5 log lines a second to 0 (none) unsaid."""
    with pytest.raises(ConfigError, match=f"{name}='{value}' must be a whole number"):
        build_settings({"bot": "examples.greeter:Greeter", name: value}, _env(pem_pkcs8))


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("examples.greeter", "must look like"),
        ("examples.greeter:Greeted", "not an InstallationActor"),
    ],
)
def test_a_bot_path_that_is_not_a_bot_is_refused(path: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        load_bot(path)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("def broken(:\n", "raised SyntaxError"),
        (
            "from actors import InstallationActor, on\n"
            "class Bot(InstallationActor):\n"
            "    @on('isues.opened')\n"
            "    async def typo(self, event): ...\n",
            "raised UnknownEventError",
        ),
    ],
)
def test_a_bot_module_that_fails_to_import_is_one_problem_among_the_others(
    source: str,
    reason: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pem_pkcs8: bytes,
) -> None:
    """A syntax error or a mistyped event in the bot's module was a traceback out of
    `serve run`, and the other problems went unsaid."""
    (tmp_path / "broken_bot.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {**_env(pem_pkcs8), "RATE_LIMIT_MARGIN": "2"}
    with pytest.raises(ConfigError) as caught:
        build_settings({"bot": "broken_bot:Bot"}, env)
    text = "\n".join(caught.value.problems)
    assert reason in text and "RATE_LIMIT_MARGIN" in text


def _with_key_file(pem: bytes, key_file: Path) -> RuntimeSettings:
    """Build the settings of `serve run` with GITHUB_PRIVATE_KEY naming `key_file`."""
    key_file.write_bytes(pem)
    env = {**_env(pem), "GITHUB_PRIVATE_KEY": str(key_file)}
    return build_settings({"bot": "examples.greeter:Greeter"}, env)


def test_a_key_file_travels_as_its_path_and_only_to_the_app_auth_actor(
    pem_pkcs8: bytes, tmp_path: Path
) -> None:
    key_file = tmp_path / "app.pem"
    runtime = _with_key_file(pem_pkcs8, key_file)
    # What `serve run` binds to the ingress (and so Serve stores) has no key bytes.
    assert runtime.settings.private_key is None
    assert runtime.settings.private_key_path == str(key_file)
    app_auth = runtime.for_app_auth()
    assert app_auth.settings.private_key is None and app_auth.settings.webhook_secrets == ()
    assert app_auth.settings.load_key().private_key == pem_pkcs8
    shards = runtime.for_shards()
    assert shards.settings.private_key_path is None
    assert runtime.for_ingress().settings.webhook_secrets == ("topsecret",)


def test_pem_text_goes_to_the_app_auth_actor_and_out_of_the_ingress_settings(
    pem_pkcs8: bytes,
) -> None:
    """The ingress's own settings drop it; Serve keeps the deployment's arguments, PEM
    text included, which is why the docs say to give a path."""
    runtime = build_settings({"bot": "examples.greeter:Greeter"}, _env(pem_pkcs8))
    assert runtime.settings.private_key_path is None
    assert runtime.for_app_auth().settings.private_key == pem_pkcs8
    assert runtime.for_ingress().settings.private_key is None


def test_a_key_file_gone_by_the_time_the_actor_reads_it_is_a_clear_error(
    pem_pkcs8: bytes, tmp_path: Path
) -> None:
    key_file = tmp_path / "app.pem"
    runtime = _with_key_file(pem_pkcs8, key_file)
    key_file.unlink()
    with pytest.raises(ConfigError, match=re.escape(f"private key file '{key_file}' is not here")):
        runtime.for_app_auth().settings.load_key()


@pytest.mark.parametrize("shards", [1, 2, 3, 7, 16, 64])
@pytest.mark.parametrize("limit", [100, 65, 10])
def test_the_app_wide_request_limit_is_split_between_processes(shards: int, limit: int) -> None:
    if limit <= shards:
        return
    runtime = RuntimeSettings(
        bot="examples.greeter:Greeter",
        settings=Settings(app_id=1, private_key=None, webhook_secrets=()),
        shards=shards,
        max_concurrent_requests=limit,
    )
    assert runtime.shard_requests >= 1 and 1 <= runtime.app_auth_requests <= 4
    assert runtime.shard_requests * shards + runtime.app_auth_requests <= limit
    # Most of the limit goes to the shards, which make the bot's requests.
    assert runtime.shard_requests * shards >= limit - runtime.app_auth_requests - shards


def test_githubs_100_requests_in_flight_go_4_to_the_app_auth_actor_and_the_rest_to_shards() -> None:
    runtime = RuntimeSettings(
        bot="examples.greeter:Greeter",
        settings=Settings(app_id=1, private_key=None, webhook_secrets=()),
        shards=2,
    )
    assert runtime.max_concurrent_requests == 100  # GitHub's limit, the default
    assert (runtime.app_auth_requests, runtime.shard_requests) == (4, 48)


def test_a_request_limit_below_the_process_count_is_refused(pem_pkcs8: bytes) -> None:
    args = {"bot": "examples.greeter:Greeter", "shards": "4", "max_concurrent_requests": "4"}
    with pytest.raises(ConfigError, match="must be more than shards"):
        build_settings(args, _env(pem_pkcs8))


@pytest.mark.parametrize("leak", ["private_key", "private_key_path", "webhook_secrets"])
def test_a_shard_refuses_settings_that_carry_a_secret(pem_pkcs8: bytes, leak: str) -> None:
    from actors.ray.shard_actor import ShardActor
    from ghbot.errors import UsageError

    shards = build_settings({"bot": "examples.greeter:Greeter"}, _env(pem_pkcs8)).for_shards()
    secret: object = {"private_key": pem_pkcs8, "private_key_path": "/k.pem"}.get(leak, ("s",))
    changes: dict[str, Any] = {leak: secret}
    leaked = replace(shards, settings=replace(shards.settings, **changes))
    with pytest.raises(UsageError, match="private key or webhook secrets"):
        ShardActor(0, leaked)


def test_a_ray_process_set_up_freezes_its_start_collects_less_often_and_switches_sooner() -> None:
    """`set_up_process`, as each ingress replica, shard and app-auth actor runs it, in a
    process of its own (it changes the interpreter's collector)."""
    script = """
import gc, json, sys
from actors.ray.process import set_up_process
from actors.settings import RuntimeSettings
from ghbot.config import Settings
before = gc.get_threshold()
settings = Settings.from_env({}, require_app=False, require_webhooks=False)
set_up_process(RuntimeSettings(bot="examples.greeter:Greeter", settings=settings))
print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count(), sys.getswitchinterval()]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, after, frozen, switch = json.loads(done.stdout.strip().splitlines()[-1])
    assert before == [700, 10, 10]
    assert after == list(GC_THRESHOLDS)
    assert frozen > 10_000  # the modules and objects of a set-up process
    assert switch == SWITCH_INTERVAL_S != 0.005
