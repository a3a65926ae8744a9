"""The deployment on a real local Ray: HTTP in, journal, handlers, FakeGitHub out."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import defaultdict
from typing import Any, cast

import aiohttp
import pytest
import ray

from actors.ray.names import shard_name
from actors.ray.process import GC_THRESHOLDS, SWITCH_INTERVAL_S
from actors.runtime_events import stream_name
from ghbot.journal import open_journal
from tests.cluster.conftest import (
    SECRET,
    comments,
    eventually,
    ingress_replica_states,
    install,
    on_fake,
    payload,
    scrape_metrics,
    send,
)


def _bodies(fake: Any, repo: str) -> list[str]:
    """Return the bodies of the comments the fake holds for `repo`, in creation order."""
    return [comment["body"] for comment in comments(fake, repo)]


async def test_signed_real_payloads_are_journaled_acknowledged_and_handled(
    deploy: Any, fake: Any
) -> None:
    install(fake, 1001, "e2e/hello")
    app = deploy("tests.cluster.bots:Greeter")
    data = payload("issues.opened", installation=1001, repo="e2e/hello", issue__number=1)
    guid = str(uuid.uuid4())

    status, answer = await send(app.url, "issues", data, guid=guid)
    assert (status, answer["status"]) == (202, "accepted")
    # A redelivery of the same GUID is acknowledged and changes nothing.
    status, answer = await send(app.url, "issues", data, guid=guid)
    assert (status, answer["status"]) == (200, "duplicate")
    await eventually(lambda: f"hello {guid}" in _bodies(fake, "e2e/hello"))
    await asyncio.sleep(0.5)
    assert _bodies(fake, "e2e/hello").count(f"hello {guid}") == 1

    # The older secret still verifies (rotation); a wrong one is refused, not recorded.
    status, _ = await send(app.url, "issues", data, secret="an-older-secret")
    assert status == 202
    status, answer = await send(app.url, "issues", data, secret="wrong", guid="bad-sig")
    assert status == 401 and "secret" in answer["error"]
    status, _ = await send(app.url, "issues", b"{not json", guid="bad-json")
    assert status == 400
    status, _ = await send(
        app.url, "issues", data, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 415
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{app.url}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{app.url}/readyz") as response:
            assert response.status == 200
            assert len((await response.json())["shards"]) == 2

    journal = await open_journal(app.runtime.settings.journal_url, shard_count=4)
    try:
        records = await journal.read(stream_name(1001), shard=1001 % 4)
    finally:
        await journal.close()
    guids = {r.delivery_guid for r in records if r.type == "DeliveryReceived"}
    assert guid in guids and "bad-sig" not in guids and "bad-json" not in guids


async def test_every_handlers_run_in_a_deployment(deploy: Any, fake: Any) -> None:
    """`@every(1)`: the shard actor's scheduler journals the handler's runs for the
    installation (three within 30 s), each slot's once (its GUID names the slot)."""
    install(fake, 1301, "ticking/repo")
    app = deploy("tests.cluster.bots:Ticker")
    data = payload("issues.opened", installation=1301, repo="ticking/repo", issue__number=1)
    assert (await send(app.url, "issues", data))[0] == 202
    await eventually(lambda: len(_bodies(fake, "ticking/repo")) >= 3)
    ticks = _bodies(fake, "ticking/repo")
    assert all(tick.startswith("tick schedule:tick:1301:") for tick in ticks)
    assert len(set(ticks)) == len(ticks)  # no slot ran twice


@pytest.mark.parametrize("channel", [True, False], ids=["tcp-channel", "ray-calls"])
async def test_each_issue_in_journal_order_many_issues_at_once(
    deploy: Any, fake: Any, channel: bool
) -> None:
    repo, issues, per_issue = f"e2e/ordered-{channel}", 8, 12
    install(fake, 1002, repo, issues=issues)
    app = deploy("tests.cluster.bots:Echo", shard_channel=channel)
    await _comment_on_each_issue_in_turn(app.url, 1002, repo, issues, per_issue)
    await _each_issue_once_in_order(fake, repo, issues, per_issue)


async def _comment_on_each_issue_in_turn(
    url: str, installation: int, repo: str, issues: int, per_issue: int
) -> None:
    """Send `per_issue` comment deliveries on each of `issues` issues, the issues at
    once, each issue's one after another's 202; the comment is "issue:seq"."""

    async def one_issue(session: aiohttp.ClientSession, number: int) -> None:
        for seq in range(per_issue):
            data = payload(
                "issue_comment.created",
                installation=installation,
                repo=repo,
                issue__number=number,
                comment__body=f"{number}:{seq}",
            )
            status, _ = await send(url, "issue_comment", data, session=session)
            assert status == 202

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one_issue(session, n) for n in range(1, issues + 1)))


async def _each_issue_once_in_order(fake: Any, repo: str, issues: int, per_issue: int) -> None:
    """Wait for the Echo bot's comments; check each issue's ran once each, in order."""
    await eventually(lambda: len(_bodies(fake, repo)) == issues * per_issue, within=60)
    by_issue: dict[str, list[int]] = defaultdict(list)
    for body in _bodies(fake, repo):
        number, seq = body.removeprefix("echo ").split(":")
        by_issue[number].append(int(seq))
    assert len(by_issue) == issues
    for number, seqs in by_issue.items():
        assert seqs == list(range(per_issue)), f"issue {number} out of order: {seqs}"


async def test_two_ingress_replicas_share_the_deliveries_and_keep_each_issue_in_order(
    deploy: Any, fake: Any
) -> None:
    """What README asks for in production: with two ingress replicas, both take
    deliveries (each counts its own on Ray's metrics export), and each issue's
    deliveries, sent one after another's 202, still run once each in that order,
    whichever replica took them."""

    def received(scrape: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, float]:
        counts: dict[str, float] = {}
        for labels, value in scrape.get("ray_ghbot_webhooks_received_total", []):
            if labels.get("event") == "issue_comment":
                counts[labels["WorkerId"]] = counts.get(labels["WorkerId"], 0.0) + value
        return counts

    repo, issues, per_issue = "e2e/two-replicas", 6, 10
    install(fake, 1009, repo, issues=issues)
    before = await asyncio.to_thread(scrape_metrics)
    app = deploy("tests.cluster.bots:Echo", ingress_replicas=2)
    states = ingress_replica_states()
    assert states.get("RUNNING") == 2, states

    await _comment_on_each_issue_in_turn(app.url, 1009, repo, issues, per_issue)
    await _each_issue_once_in_order(fake, repo, issues, per_issue)

    # Both replicas took some: two processes' counts grew (a series new since `before`
    # counts from 0; the replicas of earlier tests are gone and count nothing more).
    old = received(before)

    def grown() -> dict[str, float]:
        now = received(scrape_metrics())
        return {w: n - old.get(w, 0.0) for w, n in now.items() if n > old.get(w, 0.0)}

    await eventually(lambda: sum(grown().values()) >= issues * per_issue, within=60, every=2)
    took = grown()
    assert len(took) == 2 and sum(took.values()) == issues * per_issue, took


async def test_failures_are_retried_then_dead_lettered_and_replayed(deploy: Any, fake: Any) -> None:
    repo = "e2e/failing"
    install(fake, 1003, repo)
    app = deploy("tests.cluster.bots:Greeter", max_retries=0)
    fault = on_fake(fake, fake.fake.faults.add, "^/repos/e2e/failing/", "server_error", None)
    guid = str(uuid.uuid4())
    data = payload("issues.opened", installation=1003, repo=repo, issue__number=1)
    assert (await send(app.url, "issues", data, guid=guid))[0] == 202

    from actors.ray.admin import dead_letters, replay

    await eventually(lambda: len(dead_letters(app.runtime.namespace)) == 1, within=30)
    (dead,) = dead_letters(app.runtime.namespace)
    assert dead["delivery_id"] == guid and dead["attempts"] == 3
    assert dead["error_type"] == "ServerError"
    assert fault.hits == 3
    on_fake(fake, fake.fake.faults.clear)

    assert replay(app.runtime.namespace, guid) == 1
    await eventually(lambda: f"hello {guid}" in _bodies(fake, repo))
    await eventually(lambda: dead_letters(app.runtime.namespace) == [])


async def test_an_open_breaker_holds_one_installation_and_not_another(
    deploy: Any, fake: Any, tmp_path: Any
) -> None:
    from actors.ray.admin import stats

    install(fake, 1004, "sick/repo")
    install(fake, 1005, "well/repo")
    common = {
        "max_retries": 3,
        "namespace": f"t-{uuid.uuid4().hex[:8]}",
        "journal_url": f"sqlite://{tmp_path}/breaker-journal",
    }
    app = deploy("tests.cluster.bots:Greeter", **common)
    on_fake(fake, fake.fake.faults.add, "^/repos/sick/", "server_error", None)
    sick = [str(uuid.uuid4()) for _ in range(3)]
    sent_at = time.monotonic()  # the breaker opens after this, for 30 s
    for guid in sick:
        data = payload("issues.opened", installation=1004, repo="sick/repo", issue__number=1)
        assert (await send(app.url, "issues", data, guid=guid))[0] == 202

    def open_breakers() -> int:
        return sum(s["open_breakers"] for s in stats(app.runtime.namespace))

    await eventually(lambda: open_breakers() == 1, within=30)
    old_versions = {s["version"] for s in stats(app.runtime.namespace)}

    def sick_requests() -> int:
        requests = on_fake(fake, list, fake.fake.requests)  # copied on the fake's loop
        return sum(1 for r in requests if r.path.startswith("/repos/sick/"))

    # An upgrade while the breaker is open: the old shard's drain does not wait for it
    # (the sick deliveries only wait), and hands the open breaker over (`ClientHeld`).
    before_upgrade = sick_requests()
    deploy("tests.cluster.bots:GreeterV2", **common)
    new_versions = {s["version"] for s in stats(app.runtime.namespace)}
    assert new_versions.isdisjoint(old_versions)
    assert open_breakers() == 1  # the successor's breaker is the one left open
    await asyncio.sleep(3)  # a successor with its breaker closed would try them now
    if time.monotonic() < sent_at + 30:  # else it may have half-opened meanwhile
        assert sick_requests() == before_upgrade
    well = [str(uuid.uuid4()) for _ in range(5)]
    started = asyncio.get_running_loop().time()
    for guid in well:
        data = payload("issues.opened", installation=1005, repo="well/repo", issue__number=1)
        assert (await send(app.url, "issues", data, guid=guid))[0] == 202
    await eventually(lambda: len(_bodies(fake, "well/repo")) == 5, within=10)
    assert asyncio.get_running_loop().time() - started < 10
    # The sick installation's deliveries wait, journaled; none was dead-lettered.
    from actors.ray.admin import dead_letters

    assert dead_letters(app.runtime.namespace) == []
    on_fake(fake, fake.fake.faults.clear)
    await eventually(lambda: len(_bodies(fake, "sick/repo")) >= 3, within=60)
    assert {f"hello again {g}" for g in sick} <= set(_bodies(fake, "sick/repo"))


async def test_a_killed_shard_loses_nothing_it_acknowledged(deploy: Any, fake: Any) -> None:
    repo = "e2e/crash"
    install(fake, 1006, repo)
    app = deploy("tests.cluster.bots:Greeter")
    on_fake(fake, fake.fake.faults.add, "^/repos/e2e/crash/", "slow", None, delay=0.5)
    guids = [str(uuid.uuid4()) for _ in range(20)]
    async with aiohttp.ClientSession() as session:
        for guid in guids:
            data = payload("issues.opened", installation=1006, repo=repo, issue__number=1)
            assert (await send(app.url, "issues", data, guid=guid, session=session))[0] == 202

    owner = ray.get_actor(shard_name(1006 % 4 % 2), namespace=app.runtime.namespace)
    pid = cast(int, ray.get(owner.pid.remote()))
    os.kill(pid, signal.SIGKILL)
    on_fake(fake, fake.fake.faults.clear)

    await eventually(lambda: {f"hello {g}" for g in guids} <= set(_bodies(fake, repo)), within=90)
    assert ray.get(owner.pid.remote()) != pid  # Ray restarted the shard
    # The ingress finds the restarted shard's channel (a new port and token): the next
    # deliveries are taken at once (a batch that met the broken connection is sent
    # again, `ShardBatcher`), none answered 503.
    later = [str(uuid.uuid4()) for _ in range(3)]
    async with aiohttp.ClientSession() as session:
        for guid in later:
            data = payload("issues.opened", installation=1006, repo=repo, issue__number=1)
            assert (await send(app.url, "issues", data, guid=guid, session=session))[0] == 202
    stats = ray.get(owner.stats.remote())
    assert stats["channel_batches"] >= 1
    # The restarted shard's process was set up as the first (`set_up_process`).
    assert stats["gc_thresholds"] == list(GC_THRESHOLDS)
    assert stats["switch_interval"] == SWITCH_INTERVAL_S
    guids += later
    await eventually(lambda: {f"hello {g}" for g in guids} <= set(_bodies(fake, repo)), within=90)

    journal = await open_journal(app.runtime.settings.journal_url, shard_count=4)
    try:
        records = await journal.read(stream_name(1006), shard=1006 % 4)
    finally:
        await journal.close()
    completed = [r for r in records if r.type == "DeliveryCompleted"]
    assert len({r.delivery_guid for r in records if r.type == "DeliveryReceived"}) == 23
    assert len(completed) == 23


@pytest.mark.parametrize("attempt", [1])
async def test_ingress_answers_503_when_the_shard_cannot_take_it(
    deploy: Any, fake: Any, attempt: int
) -> None:
    install(fake, 1007, "e2e/down")
    app = deploy("tests.cluster.bots:Greeter", journal_url="postgresql://nobody@127.0.0.1:1/none")
    data = payload("issues.opened", installation=1007, repo="e2e/down", issue__number=1)
    status, answer = await send(app.url, "issues", data)
    assert status == 503 and "retry" in answer["error"]
    assert SECRET not in str(answer)


async def test_deliveries_github_failed_to_deliver_are_swept_back(deploy: Any, fake: Any) -> None:
    from actors.ray import admin

    install(fake, 1008, "e2e/swept")
    app = deploy("tests.cluster.bots:Greeter", redeliver_every=1)
    # GitHub redelivers to the deployment, signed with its secret.
    deliveries = fake.fake.deliveries
    deliveries.webhook_url, deliveries.webhook_secret = f"{app.url}/webhooks", SECRET
    try:
        data = payload("issues.opened", installation=1008, repo="e2e/swept", issue__number=1)
        # Never reached the deployment (it was down): GitHub logged a 502.
        on_fake(
            fake,
            deliveries.add,
            "issues",
            data,
            guid="lost-1",
            installation_id=1008,
            status_code=502,
        )
        # Journaled and acknowledged, but too late for GitHub: logged as a timeout.
        status, _ = await send(app.url, "issues", data, guid="late-1")
        assert status == 202
        on_fake(
            fake, deliveries.add, "issues", data, guid="late-1", installation_id=1008, status_code=0
        )

        # The app-auth actor sweeps every second on its own.
        await eventually(lambda: "hello lost-1" in _bodies(fake, "e2e/swept"))
        # The fake logs the attempt once it has read the ingress's answer, which can be
        # after the handler (started by the journal append) has commented.
        await eventually(lambda: bool(fake.fake.redeliveries))
        redelivered = [d["guid"] for d in fake.fake.redeliveries]
        assert redelivered == ["lost-1"]
        assert deliveries.attempts[-1]["status_code"] == 202  # the ingress took it
        await asyncio.sleep(1.5)  # another sweep or two: nothing more to do
        assert sorted(_bodies(fake, "e2e/swept")) == ["hello late-1", "hello lost-1"]

        swept = admin.sweep(app.runtime.namespace)  # what `ghbot redeliver` runs
        assert swept["failed"] == 1 and swept["held"] == 1 and swept["redelivered"] == []
    finally:
        deliveries.webhook_url = deliveries.webhook_secret = None
