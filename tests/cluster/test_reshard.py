"""A fresh deployment over a journal made with other virtual shards does not start its
shards, and `/readyz` says why; `ghbot journal reshard` refuses while they run, and after
`ghbot stop` it reshards (the runbook in docs/operations.md, "Resharding"). That a
shard of the new count reads every stream back is in tests/runtime/test_reshard.py."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from ghbot import cli
from ghbot.journal import open_journal
from tests.cluster.conftest import install, payload, send

pytestmark = pytest.mark.cluster

REPO = "reshard/repo"


async def _readyz(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as answer:
        return answer.status, await answer.json()


async def test_a_journal_of_other_vshards_stops_the_shards_until_resharded(
    deploy: Any, fake: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    install(fake, 1700, REPO)
    url = f"sqlite://{tmp_path}/made-with-2"
    await (await open_journal(url, shard_count=2)).close()
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    settings = {"journal_url": url, "shards": 2, "vshards": 4, "namespace": namespace}
    app = deploy("tests.cluster.bots:Greeter", **settings)

    whys: list[str] = []

    async def refused() -> None:
        status, body = await _readyz(app.url)
        whys[:] = [s["why"] for s in body.get("shards", [])] if status == 503 else []

    for _ in range(100):
        await refused()
        if whys and all("created with 2 virtual shards, but 4" in w for w in whys):
            break
        await asyncio.sleep(0.2)
    assert whys and all("ghbot journal reshard --to 4" in w for w in whys), whys
    data = payload("issues.opened", installation=1700, repo=REPO, issue__number=1)
    assert (await send(app.url, "issues", data))[0] == 503  # not journaled: not taken

    reshard = ["journal", "reshard", "--to", "4", "--journal", url, "--namespace", namespace]
    assert await asyncio.to_thread(cli.main, reshard) == 2
    err = capsys.readouterr().err
    assert "2 shard actor(s) of the deployment run" in err and "Traceback" not in err
    stop = ["stop", "--app", "ghbot", "--namespace", namespace, "--drain-timeout", "1"]
    assert await asyncio.to_thread(cli.main, stop) == 0
    assert await asyncio.to_thread(cli.main, reshard) == 0
    assert "to 4: moved 0 of 0 streams" in capsys.readouterr().out

    journal = await open_journal(url, shard_count=4)  # what the redeploy opens
    assert journal.shard_count == 4
    await journal.close()
