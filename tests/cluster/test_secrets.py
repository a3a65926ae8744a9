"""What the deployed actors hold: the key in the app-auth actor alone, and GitHub's
limit on requests in flight split across every process that calls GitHub."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import ray
from ray import serve

from actors.ray.runtime import APP_AUTH_NAME, shard_name
from tests.cluster.conftest import comments, eventually, install, on_fake, payload, send

NO_SECRET = {"private_key": False, "private_key_path": False, "webhook_secrets": False}


async def _held(app: Any) -> dict[str, dict[str, bool]]:
    """Ask every deployed actor (and the ingress replica) which secrets it holds."""
    namespace = app.runtime.namespace
    held = {}
    for name in [APP_AUTH_NAME, *(shard_name(i) for i in range(app.runtime.shards))]:
        held[name] = await ray.get_actor(name, namespace=namespace).secrets_held.remote()
    held["ingress"] = await serve.get_app_handle("ghbot").secrets_held.remote()
    return held


async def test_only_the_app_auth_actor_holds_the_key(
    deploy: Any, fake: Any, pem_pkcs8: bytes, tmp_path: Path
) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_bytes(pem_pkcs8)
    install(fake, 3001, "keys/file")
    app = deploy("tests.cluster.bots:Greeter", key_file=key_file)

    data = payload("issues.opened", installation=3001, repo="keys/file", issue__number=1)
    assert (await send(app.url, "issues", data))[0] == 202
    # The comment needs a token, minted with the key the app-auth actor read from the file.
    await eventually(lambda: len(comments(fake, "keys/file")) == 1)

    held = await _held(app)
    for i in range(app.runtime.shards):
        assert held[shard_name(i)] == NO_SECRET
    assert held[APP_AUTH_NAME] == {
        "private_key": True,
        "private_key_path": True,
        "webhook_secrets": False,
    }
    assert held["ingress"] == {
        "private_key": False,
        "private_key_path": True,
        "webhook_secrets": True,
    }


async def test_pem_text_reaches_the_app_auth_actor_and_no_shard(deploy: Any, fake: Any) -> None:
    app = deploy("tests.cluster.bots:Greeter")
    held = await _held(app)
    assert held[APP_AUTH_NAME]["private_key"] and not held[APP_AUTH_NAME]["webhook_secrets"]
    assert held["ingress"] == {**NO_SECRET, "webhook_secrets": True}
    assert all(held[shard_name(i)] == NO_SECRET for i in range(app.runtime.shards))


async def test_requests_in_flight_stay_within_the_app_wide_limit(deploy: Any, fake: Any) -> None:
    installations = range(3101, 3111)
    for installation in installations:
        install(fake, installation, f"gate/r{installation}")
    # 2 shards and the app-auth actor share 5: 1 for the app-auth actor, 2 per shard.
    app = deploy("tests.cluster.bots:Greeter", max_concurrent_requests=5)
    on_fake(fake, fake.fake.faults.add, "^/repos/gate/", "slow", None, delay=0.3)
    fake.fake.max_inflight = 0
    try:
        async with aiohttp.ClientSession() as session:
            sends = [
                send(
                    app.url,
                    "issues",
                    payload("issues.opened", installation=i, repo=f"gate/r{i}", issue__number=1),
                    session=session,
                )
                for i in installations
                for _ in range(3)
            ]
            assert {status for status, _ in await asyncio.gather(*sends)} == {202}
        total = lambda: sum(len(comments(fake, f"gate/r{i}")) for i in installations)  # noqa: E731
        await eventually(lambda: total() == 30, within=60)
    finally:
        on_fake(fake, fake.fake.faults.clear)
    # 30 slow comments from 10 installations could have all been in flight at once.
    assert 2 <= fake.fake.max_inflight <= 5
