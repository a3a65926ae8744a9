"""A quota lease's Ray task whose token GitHub refuses: within 5 s of the token's
minting it is GitHub's propagation delay, and the task sends the same token again
after a short wait; later, the task gets another token from the app-auth actor,
through the lease (`actors.ray.lease_sources.AppAuthTokens`). Either way its write goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.cluster.conftest import comments, eventually, install, on_fake, payload, send

pytestmark = pytest.mark.cluster


async def _refused_then_written(app: Any, fake: Any, repo: str, issue: int) -> tuple[Any, Any]:
    """Deliver issue `issue`'s opening with the first comment on it refused (401); return
    the refused request and the one that sent the same comment again."""
    path = f"/repos/{repo}/issues/{issue}/comments"
    on_fake(fake, fake.fake.faults.add, f"^{path}$", "unauthorized", 1, method="POST")
    data = payload("issues.opened", installation=9300, repo=repo, issue__number=issue)
    guid = f"lease-{issue}"
    assert (await send(app.url, "issues", data, guid=guid))[0] == 202

    def mine() -> list[str]:
        return sorted(c["body"].split()[0] for c in comments(fake, repo) if guid in c["body"])

    await eventually(lambda: len(mine()) >= 3, within=60.0, every=0.25)
    refused, *rest = on_fake(fake, fake.fake.requests_to, path, "POST")
    assert refused.json["body"].startswith("task ")  # the tasks write before the handler
    [again] = [p for p in rest if p.json == refused.json]
    assert mine() == ["own", "task", "task"]
    return refused, again


async def test_a_lease_s_ray_task_refused_its_token_gets_another_and_writes(
    deploy: Any, fake: Any
) -> None:
    repo = "leased/repo"
    install(fake, 9300, repo, issues=2)
    app = deploy("tests.cluster.bots:FansOut")  # writes not paced: a retry is not refused
    # A token minted seconds ago: its 401 is propagation, the same token goes again.
    refused, again = await _refused_then_written(app, fake, repo, 1)
    assert again.headers["Authorization"] == refused.headers["Authorization"]
    # Over 5 s old, the same token refused is bad: the task asks for another.
    await asyncio.sleep(6)
    refused, again = await _refused_then_written(app, fake, repo, 2)
    assert again.headers["Authorization"] != refused.headers["Authorization"]
