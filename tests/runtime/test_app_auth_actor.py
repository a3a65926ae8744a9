"""The app-auth actor's own loops, run in-process without Ray (its process set-up, which
installs Ray's metrics and ghbot's logging, is skipped): what a rotated key file logs,
as docs/operations.md says, and when the redelivery sweeps run, as
docs/architecture.md says. `tests/cluster/test_secrets.py` rotates a key under a
deployment; this checks the lines an operator reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from actors.github import TokenMinter
from actors.ray import app_auth_actor, names
from actors.ray.app_auth_actor import AppAuthActor
from actors.settings import RuntimeSettings
from ghbot.config import Settings
from ghbot.errors import ConfigError
from ghbot.redelivery import Failed, Sweep
from ghbot.testing import FakeGitHub, app_key_pair
from tests.runtime.conftest import until

NOT_A_KEY = b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"


def app_auth(key_path: Path) -> AppAuthActor:
    settings = Settings(
        app_id=1, private_key=None, webhook_secrets=(), private_key_path=str(key_path)
    )
    return AppAuthActor(
        RuntimeSettings(bot="examples.greeter:Greeter", settings=settings, redeliver_every=0)
    )


def fingerprint(public_pem: bytes) -> str:
    return hashlib.sha256(public_pem).hexdigest()[:16]


def replace_file(path: Path, content: bytes) -> None:
    """Replace `path` the way a secret manager does: write beside it, then rename."""
    staged = path.with_suffix(".staged")
    staged.write_bytes(content)
    os.replace(staged, path)


async def test_a_rotated_key_file_is_logged_and_a_bad_one_keeps_the_old_key(
    bare_process: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(app_auth_actor, "KEY_RECHECK", 0.01)
    first, first_public = app_key_pair()
    second, second_public = app_key_pair()
    path = tmp_path / "app.pem"
    path.write_bytes(first)
    caplog.set_level(logging.INFO, logger="ghbot.runtime")
    actor = app_auth(path)
    watching = actor._watching
    assert watching is not None  # a key given as a file is watched
    try:
        assert actor.key_fingerprint() == fingerprint(first_public)

        replace_file(path, second)
        await until(lambda: actor.key_fingerprint() == fingerprint(second_public))
        [rotated] = [r for r in caplog.records if r.name == "ghbot.runtime"]
        assert (rotated.levelname, rotated.getMessage()) == (
            "WARNING",
            f"{path} changed: signing with the new key",
        )

        caplog.clear()
        replace_file(path, NOT_A_KEY)
        await until(lambda: any(r.levelname == "ERROR" for r in caplog.records))
        [refused] = [r for r in caplog.records if r.name == "ghbot.runtime"]
        message = refused.getMessage()
        assert message.startswith(f"{path} changed but cannot be used (")
        assert message.endswith("); still signing with the old key")
        assert b"not a key" not in message.encode()  # the file's content is never logged
        assert actor.key_fingerprint() == fingerprint(second_public)  # kept
    finally:
        watching.cancel()


def _not_watching(tmp_path: Path) -> AppAuthActor:
    """An app-auth actor on a new key file, its key file watcher stopped."""
    key, _ = app_key_pair()
    (tmp_path / "app.pem").write_bytes(key)
    actor = app_auth(tmp_path / "app.pem")
    assert actor._watching is not None
    actor._watching.cancel()
    return actor


async def test_a_sweep_asked_for_by_hand_sweeps_again_and_the_scheduled_ones_do_not(
    bare_process: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ghbot redeliver` (the actor's `sweep`) looks back the whole lookback and asks for
    what the scheduled sweeps gave up on; the scheduled ones keep their bounds."""
    actor = _not_watching(tmp_path)
    asked: list[bool] = []
    looked: list[float | None] = []

    async def sweep(*, again: bool = False, lookback: float | None = None) -> Sweep:
        asked.append(again)
        looked.append(lookback)
        return Sweep(listed=1)

    class Stop(Exception):
        pass

    async def sleep(seconds: float) -> None:
        if asked:
            raise Stop

    actor._sweeper = SimpleNamespace(sweep=sweep)  # type: ignore[assignment]
    monkeypatch.setattr(app_auth_actor, "asyncio", SimpleNamespace(sleep=sleep))
    with pytest.raises(Stop):
        await actor._sweep_forever(120.0)
    assert (await actor.sweep())["listed"] == 1
    assert (await actor.sweep(86400.0))["listed"] == 1  # `ghbot redeliver --since 1d`
    assert asked == [False, True, True] and looked == [None, None, 86400.0]


async def test_the_first_sweep_comes_within_30_s_of_a_start_then_one_every_interval(
    bare_process: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    actor = _not_watching(tmp_path)

    slept: list[float] = []
    sweeps: list[int] = []

    async def sweep() -> None:
        sweeps.append(len(slept))
        if len(sweeps) == 1:
            raise RuntimeError("GitHub answered 502")  # a failed sweep: the loop goes on

    class Stop(Exception):
        pass

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 4:
            raise Stop

    actor._sweeper = SimpleNamespace(sweep=sweep)  # type: ignore[assignment]
    monkeypatch.setattr(app_auth_actor, "asyncio", SimpleNamespace(sleep=sleep))
    caplog.set_level(logging.WARNING, logger="ghbot.runtime")

    with pytest.raises(Stop):
        await actor._sweep_forever(120.0)
    assert slept == [30.0, 120.0, 120.0, 120.0]  # the first 30 s after the start
    assert sweeps == [1, 2, 3]  # one after each wait
    assert [r.getMessage() for r in caplog.records] == [
        "redelivery sweep failed (RuntimeError); next in 120 s"
    ]

    slept.clear()
    with pytest.raises(Stop):
        await actor._sweep_forever(10.0)  # an interval under 30 s: the first comes sooner
    assert slept[0] == 10.0


def test_a_key_path_missing_at_start_stops_the_actor_with_a_config_error(
    bare_process: None, tmp_path: Path
) -> None:
    """Not counted as `invalid_key` (docs/operations.md, GhbotJwtGenerationFailing): the
    actor does not start, and its error names the path, which Ray shows."""
    missing = tmp_path / "missing.pem"
    with pytest.raises(
        ConfigError, match=re.escape(f"private key file {str(missing)!r} is not here")
    ):
        app_auth(missing)


async def test_each_failed_delivery_is_asked_of_the_shard_that_owns_its_installation(
    bare_process: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep has GitHub redeliver only what no shard journaled: each shard is asked
    for its own installations' deliveries (one without an installation belongs with
    installation 0), and what any shard holds is left out."""
    actor = _not_watching(tmp_path)
    actor._settings = dataclasses.replace(actor._settings, shards=2, vshards=4)
    asked: dict[str, list[tuple[int, str]]] = {}

    def get_actor(name: str, namespace: str) -> SimpleNamespace:
        async def delivered(wanted: list[tuple[int, str]]) -> list[str]:
            asked[name] = wanted
            return [guid for _, guid in wanted if guid in {"g8", "g-none"}]

        return SimpleNamespace(delivered=SimpleNamespace(remote=delivered))

    monkeypatch.setattr(app_auth_actor, "ray", SimpleNamespace(get_actor=get_actor))
    failed = [
        Failed(guid=guid, attempt_id=1, event="issues", installation_id=i, attempts=1, first_at=0)
        for guid, i in [("g5", 5), ("g6", 6), ("g8", 8), ("g-none", None)]
    ]
    assert await actor._held(failed) == {"g8", "g-none"}
    # Installation i is in virtual shard i % 4, which shard actor (i % 4) % 2 hosts.
    assert asked == {
        names.shard_name(0): [(6, "g6"), (8, "g8"), (0, "g-none")],
        names.shard_name(1): [(5, "g5")],
    }


async def test_the_apps_redelivery_requests_are_paced_by_the_deployments_setting(
    fake: FakeGitHub, pem_pkcs8: bytes
) -> None:
    """The README: redeliveries are "paced like every write" (`GHBOT_PACE_WRITES`), here
    through the app-auth actor's own client, as the deployment makes it."""
    settings = Settings(app_id=1, private_key=pem_pkcs8, webhook_secrets=(), api_url=fake.url)
    minter = TokenMinter(
        RuntimeSettings(bot="examples.greeter:Greeter", settings=settings, pace_writes=0.5)
    )
    ids = [fake.add_delivery("issues", {"action": "opened"}, status_code=503)["id"] for _ in "ab"]
    pool = minter.app.options.pool
    assert pool is not None  # the actor's own share of the requests in flight
    try:
        started = time.monotonic()
        await asyncio.gather(*(minter.app.redeliver(i) for i in ids))
        assert len(fake.redeliveries) == 2
        assert time.monotonic() - started >= 0.45  # the second waited for the first's 0.5 s
    finally:
        await pool.close()  # its connections, not left for a later test's log
