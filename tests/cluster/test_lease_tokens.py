"""A quota lease's Ray task whose token GitHub refuses gets another from the app-auth
actor, through the lease (`actors.ray.runtime.AppAuthTokens`), and its write goes on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.conftest import comments, eventually, install, on_fake, payload, send

pytestmark = pytest.mark.cluster


async def test_a_lease_s_ray_task_refused_its_token_gets_another_and_writes(
    deploy: Any, fake: Any
) -> None:
    repo = "leased/repo"
    install(fake, 9300, repo)
    app = deploy("tests.cluster.bots:FansOut")  # writes not paced: a retry is not refused
    path = f"/repos/{repo}/issues/1/comments"
    on_fake(fake, fake.fake.faults.add, f"^{path}$", "unauthorized", 1, method="POST")
    data = payload("issues.opened", installation=9300, repo=repo, issue__number=1)
    assert (await send(app.url, "issues", data))[0] == 202
    await eventually(lambda: len(comments(fake, repo)) >= 3, within=60.0, every=0.25)
    posts = on_fake(fake, fake.fake.requests_to, path, "POST")
    refused, *rest = posts
    assert refused.json["body"].startswith("task ")  # the tasks write before the handler
    [again] = [p for p in rest if p.json == refused.json]
    assert again.headers["Authorization"] != refused.headers["Authorization"]
    assert sorted(c["body"].split()[0] for c in comments(fake, repo)) == ["own", "task", "task"]
