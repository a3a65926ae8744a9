"""`ghbot stop`: the Serve application deleted, each shard drained, the actors gone."""

from __future__ import annotations

import asyncio
import logging
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

    from actors.ray.names import APP_AUTH_NAME, shard_name

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

    # A wrong --app would leave the ingress taking deliveries: refused, nothing stopped.
    wrong = ["stop", "--app", "default", "--namespace", namespace]
    assert await asyncio.to_thread(cli.main, wrong) == 2
    err = capsys.readouterr().err
    assert "no Serve application 'default'; ghbot's ingress runs as 'ghbot'" in err, err
    assert "ghbot" in serve.status().applications
    ray.get_actor(shard_name(0), namespace=namespace)  # still there

    # No --app: the application running ghbot's ingress, whatever its name.
    argv = ["stop", "--namespace", namespace]
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


async def test_a_drain_cut_by_its_timeout_leaves_the_deliveries_to_the_next_deployment(
    deploy: Any,
    fake: Any,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The shard actor's drain timed out (`ShardActor.drain` returned False): it closed
    # its core, which cut the handlers still running, and `ghbot stop` killed it. What
    # it cut stays pending in the journal, and the next deployment runs it, once.
    repo = "cut/repo"
    install(fake, 1610, repo, issues=4)
    journal = f"sqlite://{tmp_path}/kept"
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    app = deploy("tests.cluster.bots:Hesitant", journal_url=journal, namespace=namespace)
    # The read before the comment never answers in time: every handler is still in it.
    on_fake(fake, fake.fake.faults.add, "^/repos/cut/repo$", "slow", None, delay=20.0)
    guids = [str(uuid.uuid4()) for _ in range(4)]
    async with aiohttp.ClientSession() as session:
        for n, guid in enumerate(guids, 1):
            data = payload("issues.opened", installation=1610, repo=repo, issue__number=n)
            assert (await send(app.url, "issues", data, guid=guid, session=session))[0] == 202

    argv = ["stop", "--app", "ghbot", "--namespace", namespace, "--drain-timeout", "1"]
    with caplog.at_level(logging.WARNING, logger="ghbot.runtime"):
        assert await asyncio.to_thread(cli.main, argv) == 0
    # The shard answered that it did not drain (its own timeout), not Ray's wait for it.
    warned = [r.getMessage() for r in caplog.records if r.name == "ghbot.runtime"]
    assert "1 shard(s) did not drain: successors resume the rest" in warned, warned
    assert not [w for w in warned if " did not drain: " in w and "shard(s)" not in w], warned
    out = capsys.readouterr().out
    assert "1 of 2 shards finished their deliveries" in out, out  # the other has none
    assert comments(fake, repo) == []
    on_fake(fake, fake.fake.faults.clear)

    deploy("tests.cluster.bots:Hesitant", journal_url=journal, namespace=namespace)
    wanted = {f"hello {g}" for g in guids}
    for _ in range(300):
        if {c["body"] for c in comments(fake, repo)} >= wanted:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # time for a second comment, were a delivery run twice
    assert sorted(c["body"] for c in comments(fake, repo)) == sorted(wanted)
