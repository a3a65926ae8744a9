"""`ghbot stop`: the Serve application deleted, each shard drained, the actors gone."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from ghbot import cli
from tests.cluster.conftest import comments, install, on_fake, payload, send

pytestmark = pytest.mark.cluster


async def test_stop_finishes_what_was_taken_then_removes_every_actor(
    deploy: Any, fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray
    from ray import serve

    from actors.ray.runtime import APP_AUTH_NAME, shard_name

    repo = "stop/repo"
    install(fake, 1600, repo)
    app = deploy("tests.cluster.bots:Greeter")
    namespace = app.runtime.namespace
    # GitHub is slow: the deliveries are still running when `ghbot stop` comes.
    on_fake(fake, fake.fake.faults.add, "^/repos/stop/repo/", "slow", None, delay=0.3)
    guids = [str(uuid.uuid4()) for _ in range(8)]
    async with aiohttp.ClientSession() as session:
        for guid in guids:
            data = payload("issues.opened", installation=1600, repo=repo, issue__number=1)
            assert (await send(app.url, "issues", data, guid=guid, session=session))[0] == 202

    argv = ["stop", "--app", "ghbot", "--namespace", namespace]
    assert await asyncio.to_thread(cli.main, argv) == 0
    out = capsys.readouterr().out
    assert "deleted the Serve application 'ghbot'" in out
    assert "2 of 2 shards finished their deliveries" in out and "3 actors stopped" in out
    on_fake(fake, fake.fake.faults.clear)

    # Drained: every delivery taken was handled before the shards went.
    assert {c["body"] for c in comments(fake, repo)} == {f"hello {g}" for g in guids}
    assert "ghbot" not in serve.status().applications
    for name in (shard_name(0), shard_name(1), APP_AUTH_NAME):
        with pytest.raises(ValueError):
            ray.get_actor(name, namespace=namespace)
    assert await asyncio.to_thread(cli.main, argv) == 2  # nothing left to stop
