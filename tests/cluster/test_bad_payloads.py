"""Signed deliveries the handlers cannot take end dead-lettered at once, on a real Ray."""

from __future__ import annotations

import uuid
from typing import Any

from actors.runtime_events import stream_name
from ghbot.journal import open_journal
from tests.cluster.conftest import comments, eventually, payload, send


async def _types(app: Any, installation_id: int) -> list[str]:
    journal = await open_journal(app.runtime.settings.journal_url, shard_count=4)
    try:
        records = await journal.read(stream_name(installation_id), shard=installation_id % 4)
    finally:
        await journal.close()
    return [r.type for r in records]


async def test_a_body_that_does_not_fit_its_model_is_dead_lettered(deploy: Any, fake: Any) -> None:
    from actors.ray.admin import dead_letters

    app = deploy("tests.cluster.bots:Greeter")
    guid = str(uuid.uuid4())
    # The envelope (installation, repository, issue number) is fine; the title is not.
    data = payload(
        "issues.opened", installation=1011, repo="bad/body", issue__number=1, issue__title=7
    )
    assert (await send(app.url, "issues", data, guid=guid))[0] == 202

    await eventually(lambda: len(dead_letters(app.runtime.namespace)) == 1, within=30)
    (dead,) = dead_letters(app.runtime.namespace)
    assert (dead["delivery_id"], dead["handler"], dead["attempts"]) == (guid, "welcome", 1)
    assert dead["error_type"] == "MalformedPayload" and "$.issue.title" in dead["error"]
    assert await _types(app, 1011) == ["DeliveryReceived", "DeadLettered", "DeliveryCompleted"]
    assert comments(fake, "bad/body") == []


async def test_a_delivery_without_installation_is_dead_lettered_clearly(
    deploy: Any, fake: Any
) -> None:
    from actors.ray.admin import dead_letters, stats

    app = deploy("tests.cluster.bots:Greeter")
    guid = str(uuid.uuid4())
    # A repository webhook pointed at the App's URL: no `installation` in the body.
    data = payload("issues.opened", installation=0, repo="repo/hook", issue__number=1)
    del data["installation"]
    assert (await send(app.url, "issues", data, guid=guid))[0] == 202

    await eventually(lambda: len(dead_letters(app.runtime.namespace)) == 1, within=30)
    (dead,) = dead_letters(app.runtime.namespace)
    assert (dead["installation_id"], dead["attempts"], dead["error_type"]) == (
        0,
        1,
        "NoInstallation",
    )
    assert dead["error"].startswith(f"delivery {guid} (event issues) carries no installation")
    assert await _types(app, 0) == ["DeliveryReceived", "DeadLettered", "DeliveryCompleted"]
    assert sum(s["open_breakers"] for s in stats(app.runtime.namespace)) == 0
