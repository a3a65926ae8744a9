"""Whether a new deployment replaces the running shards, from the layouts they answer
(`actors.ray.lifecycle._reshard`), with Ray's calls faked: a shard that cannot answer
(its node lost, Ray restarting it) is judged by the others, never replaced for that
alone (docs/reliability.md, the raylet kill); tests/cluster/test_reshard.py runs the
real thing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import actors.ray.lifecycle as lifecycle
import actors.ray.names as names
from ghbot.errors import ConfigError


class Unreachable(Exception):
    """What `ray.get` raises for a shard whose node is gone."""


def shard(layout: tuple[int, int] | None) -> SimpleNamespace:
    """A shard actor's handle whose `layout` answers `layout` (None: cannot answer)."""
    return SimpleNamespace(layout=SimpleNamespace(remote=lambda: layout))


@pytest.fixture
def retired(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Fake Ray's calls; return the names of the shards each `retire` replaced."""
    calls: list[list[str]] = []

    def get(answer: tuple[int, int] | None, timeout: float) -> tuple[int, int]:
        if answer is None:
            raise Unreachable
        return answer

    def retire(shards: dict[str, Any], namespace: str, *args: Any, **kwargs: Any) -> int:
        calls.append(sorted(shards))
        return len(shards)

    monkeypatch.setattr(lifecycle, "ray", SimpleNamespace(get=get))
    monkeypatch.setattr(lifecycle, "retire", retire)
    return calls


def deploy(monkeypatch: pytest.MonkeyPatch, running: list[SimpleNamespace], vshards: int) -> None:
    named = {names.shard_name(i): shard for i, shard in enumerate(running)}
    monkeypatch.setattr(lifecycle, "shards_by_name", lambda namespace: named)
    settings = SimpleNamespace(namespace="ghbot", shards=2, vshards=vshards)
    lifecycle._reshard(settings)  # type: ignore[arg-type]


def test_a_shard_that_cannot_answer_is_judged_by_the_others(
    monkeypatch: pytest.MonkeyPatch, retired: list[list[str]]
) -> None:
    deploy(monkeypatch, [shard((2, 4)), shard(None)], vshards=4)
    assert retired == []  # the healthy shard stays; Ray restarts the other as it was


def test_shards_of_another_count_are_replaced(
    monkeypatch: pytest.MonkeyPatch, retired: list[list[str]]
) -> None:
    deploy(monkeypatch, [shard((1, 4))], vshards=4)
    assert retired == [[names.shard_name(0)]]


def test_with_no_shard_answering_they_are_replaced_not_kept_on_a_guess(
    monkeypatch: pytest.MonkeyPatch, retired: list[list[str]]
) -> None:
    deploy(monkeypatch, [shard(None), shard(None)], vshards=4)
    assert retired == [[names.shard_name(0), names.shard_name(1)]]


def test_another_number_of_virtual_shards_is_refused(
    monkeypatch: pytest.MonkeyPatch, retired: list[list[str]]
) -> None:
    with pytest.raises(ConfigError, match="the number of virtual shards is fixed"):
        deploy(monkeypatch, [shard((2, 8)), shard(None)], vshards=4)
    assert retired == []


def test_shards_past_a_gap_in_their_names_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgrade stopped between a shard's stop and its successor's start leaves its
    name free: the shards after it were not found, so `ghbot stop` left them running
    (and with shard 0 the one missing, said no deployment ran)."""
    alive = {"ghbot-shard-1": "one", "ghbot-shard-3": "three"}

    def get_actor(name: str, namespace: str) -> str:
        if name not in alive:
            raise ValueError(name)
        return alive[name]

    monkeypatch.setattr(names, "ray", SimpleNamespace(get_actor=get_actor))
    assert names.shards_by_name("ghbot") == alive
    assert names.running_shards("ghbot") == ["one", "three"]


def test_a_missing_shard_of_the_wanted_layout_stops_no_other(
    monkeypatch: pytest.MonkeyPatch, retired: list[list[str]]
) -> None:
    """Shard 0 missing (an upgrade stopped between its stop and its successor's start),
    shard 1 of the wanted layout running: shard 0 is made again, shard 1 kept. The
    count of those found (one of two) used to stop every running shard."""
    named = {names.shard_name(1): shard((2, 4))}
    monkeypatch.setattr(lifecycle, "shards_by_name", lambda namespace: named)
    lifecycle._reshard(SimpleNamespace(namespace="ghbot", shards=2, vshards=4))  # type: ignore[arg-type]
    assert retired == []
