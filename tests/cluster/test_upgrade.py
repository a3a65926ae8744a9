"""Redeploying rolls the new code to every actor, under load, losing nothing.

`serve run` again with a changed bot (here `Greeter` → `GreeterV2`, same namespace and
journal): the new ingress replica replaces each actor that runs another version
(drained first), while deliveries keep coming. Every acknowledged delivery is handled
exactly once, those sent after the switch by the new code, and `ghbot status` shows
the version each shard runs.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from tests.cluster.conftest import comments, eventually, install, payload, send

pytestmark = pytest.mark.cluster

REPO = "upgrade/repo"
INSTALLATION = 1400


async def _deliver(url: str, guids: list[str], acked: list[str]) -> None:
    """Send each delivery until it is acknowledged; a 503 is retried, as GitHub would."""
    async with aiohttp.ClientSession() as session:

        async def one(guid: str, number: int) -> None:
            data = payload(
                "issues.opened", installation=INSTALLATION, repo=REPO, issue__number=number
            )
            for _ in range(200):
                status, _ = await send(url, "issues", data, guid=guid, session=session)
                if status in (200, 202):
                    acked.append(guid)
                    return
                assert status == 503, status
                await asyncio.sleep(0.2)
            raise AssertionError(f"{guid} never acknowledged")

        for start in range(0, len(guids), 4):  # a steady stream, 4 in flight
            batch = guids[start : start + 4]
            await asyncio.gather(*(one(g, 1 + (start + i) % 5) for i, g in enumerate(batch)))


async def test_a_redeploy_reaches_every_shard_under_load(
    deploy: Any, fake: Any, tmp_path: Any
) -> None:
    from actors.ray.admin import stats

    install(fake, INSTALLATION, REPO, issues=5)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    common = {"namespace": namespace, "journal_url": f"sqlite://{tmp_path}/upgrade-journal"}
    first = deploy("tests.cluster.bots:Greeter", **common)
    old_versions = {s["version"] for s in stats(namespace)}

    before = [str(uuid.uuid4()) for _ in range(60)]
    after = [str(uuid.uuid4()) for _ in range(20)]
    acked: list[str] = []
    stream = asyncio.create_task(_deliver(first.url, before, acked))
    await eventually(lambda: len(acked) >= 12, within=60)
    # The redeploy, while the stream goes on: `serve run` returns once the new
    # replica is up, and so once it has replaced the actors.
    await asyncio.to_thread(deploy, "tests.cluster.bots:GreeterV2", **common)
    await stream
    await _deliver(first.url, after, acked)

    versions = {s["version"] for s in stats(namespace)}
    assert len(versions) == 1 and versions.isdisjoint(old_versions) and "" not in versions

    def bodies() -> list[str]:
        return [c["body"] for c in comments(fake, REPO)]

    wanted = set(before + after)
    await eventually(lambda: {b.rsplit(" ", 1)[1] for b in bodies()} >= wanted, within=120)
    found = bodies()
    by_guid: dict[str, list[str]] = {}
    for body in found:
        by_guid.setdefault(body.rsplit(" ", 1)[1], []).append(body)
    assert set(by_guid) == wanted  # nothing handled that was not sent
    assert all(len(handled) == 1 for handled in by_guid.values()), "a delivery ran twice"
    assert all(by_guid[g] == [f"hello again {g}"] for g in after)  # the new code's
