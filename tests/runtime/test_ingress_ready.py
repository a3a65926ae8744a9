"""`GET /readyz` on an ingress replica (without Ray): what it answers for each shard's
answer, as docs/operations.md ("Readiness") says. A cluster test stops PostgreSQL
under a deployment (`tests/cluster/test_readiness.py`); this covers the other answers.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from ray.exceptions import RayActorError

from actors.ray.batcher import HOLD_FOR, ShardBatcher
from tests.runtime.conftest import bare_ingress


def shard(answer: dict[str, Any] | Exception | None) -> SimpleNamespace:
    """A batcher whose shard actor answers `ready` with `answer` (or raises it; None:
    never answers)."""

    async def ready() -> dict[str, Any]:
        if answer is None:
            await asyncio.Event().wait()
        if isinstance(answer, Exception):
            raise answer
        assert answer is not None
        return answer

    return SimpleNamespace(actor=SimpleNamespace(ready=SimpleNamespace(remote=ready)))


async def readyz(*answers: dict[str, Any] | Exception | None) -> tuple[int, dict[str, Any]]:
    replica = bare_ingress()
    replica.batchers = [shard(answer) for answer in answers]  # type: ignore[misc]
    response = await replica.ready()
    return response.status_code, json.loads(bytes(response.body))


async def test_ready_when_every_shard_is() -> None:
    first = {"index": 0, "ready": True, "why": None}
    second = {"index": 1, "ready": True, "why": None}
    assert await readyz(first, second) == (200, {"status": "ready", "shards": [first, second]})


async def test_a_shard_draining_or_starting_within_the_hold_leaves_it_ready() -> None:
    """An upgrade replaces the shards one after another and every replica asks the same
    ones: counted not ready, every replica answered 503 for all of it (and a load
    balancer took them all out), while the ingress held what arrived and answered it."""
    ready = {"index": 0, "ready": True, "why": None}
    draining = {"index": 1, "ready": False, "why": "draining", "for": 2.0}
    starting = {"index": 2, "ready": False, "why": "starting", "for": HOLD_FOR}
    assert await readyz(ready, draining, starting) == (
        200,
        {"status": "ready", "shards": [ready, draining, starting]},
    )


@pytest.mark.parametrize("why", ["draining", "starting"])
async def test_a_shard_draining_or_starting_past_the_hold_turns_it_503(why: str) -> None:
    ready = {"index": 0, "ready": True, "why": None}
    stuck = {"index": 1, "ready": False, "why": why, "for": HOLD_FOR + 0.1}
    assert await readyz(ready, stuck) == (503, {"status": "not ready", "shards": [ready, stuck]})


@pytest.mark.parametrize(
    "answer",
    [
        {"index": 1, "ready": False, "why": "could not start; trying again"},
        {"index": 1, "ready": False, "why": "cannot start: 8 virtual shards, not 64"},
        {"index": 1, "ready": False, "why": "the journal did not answer: TimeoutError"},
        {"index": 1, "ready": False, "why": "draining"},  # a shard of a version before `for`
    ],
)
async def test_a_failed_start_the_journal_or_an_older_draining_shard_turns_it_503(
    answer: dict[str, Any],
) -> None:
    ready = {"index": 0, "ready": True, "why": None}
    assert await readyz(ready, answer) == (503, {"status": "not ready", "shards": [ready, answer]})


async def test_a_shard_that_fails_to_answer_gives_only_the_errors_type() -> None:
    ready = {"index": 0, "ready": True, "why": None}
    assert await readyz(ready, RuntimeError("the journal's password is hunter2")) == (
        503,
        {"status": "not ready", "error": "RuntimeError"},  # the type, never the message
    )


@pytest.mark.looptime  # the 5 s pass on the loop's clock, not the wall's
async def test_a_shard_that_does_not_answer_within_5_s_turns_it_503() -> None:
    loop = asyncio.get_running_loop()
    ready = {"index": 0, "ready": True, "why": None}
    started = loop.time()
    assert await readyz(ready, None) == (503, {"status": "not ready", "error": "TimeoutError"})
    assert loop.time() - started == pytest.approx(5.0)


async def test_a_shard_gone_is_looked_up_by_name_and_its_successor_answers() -> None:
    """A shard replaced (its actor gone: Ray raises `RayActorError`) is found again by
    name, as a held batch finds it, and its successor answers; deliveries go there
    from then on."""
    successor = {"index": 0, "ready": True, "why": None}
    found = shard(successor).actor

    async def resolve() -> Any:
        return found

    batcher = ShardBatcher(shard(RayActorError()).actor, limit=8, resolve=resolve)
    replica = bare_ingress()
    replica.batchers = [batcher]
    response = await replica.ready()
    assert response.status_code == 200
    assert json.loads(bytes(response.body)) == {"status": "ready", "shards": [successor]}
    assert batcher.actor is found


async def test_a_shard_gone_with_no_way_to_look_it_up_is_not_ready() -> None:
    replica = bare_ingress()
    replica.batchers = [ShardBatcher(shard(RayActorError()).actor, limit=8)]
    response = await replica.ready()
    assert response.status_code == 503
    assert json.loads(bytes(response.body)) == {"status": "not ready", "error": "RayActorError"}
