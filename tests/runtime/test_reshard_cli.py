"""`ghbot journal reshard --to N` without Ray: the move, and its refusals as one line.

The refusal while a deployment's shards run is checked on a live one in
tests/cluster/test_reshard.py; here the connection and `admin.shards` are fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.ray import cli as cluster_cli
from actors.runtime_events import stream_name
from actors.wire import vshard_of
from ghbot import cli
from ghbot.journal import NewEvent, open_journal, shard_for

INSTALLATIONS = [0, 1, 2, 3, 5, 7, 12]


async def _journal(tmp_path: Path, vshards: int) -> str:
    url = f"sqlite://{tmp_path}/journal"
    journal = await open_journal(url, shard_count=vshards)
    for installation_id in INSTALLATIONS:
        stream, vshard = stream_name(installation_id), vshard_of(installation_id, vshards)
        event = NewEvent("t", str(installation_id).encode())
        await journal.append(stream, [event], shard=vshard, delivery_guid=f"g{installation_id}")
    await journal.close()
    return url


async def _placed(url: str, vshards: int) -> dict[int, list[str]]:
    journal = await open_journal(url, shard_count=vshards)
    try:
        return {v: await journal.list_streams(shard=v) for v in range(vshards)}
    finally:
        await journal.close()


def _expected(vshards: int) -> dict[int, list[str]]:
    return {
        v: sorted(stream_name(i) for i in INSTALLATIONS if vshard_of(i, vshards) == v)
        for v in range(vshards)
    }


async def _split(url: str) -> None:
    journal = await open_journal(url, shard_count=4)
    await journal.append(stream_name(1), [NewEvent("t", b"")], shard=3)  # a split history
    await journal.close()


def _one_line_error(err: str, message: str) -> None:
    assert err.startswith("ghbot: error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1


def test_reshard_moves_streams_to_their_installations_vshards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = asyncio.run(_journal(tmp_path, 4))
    argv = ["journal", "reshard", "--to", "8", "--journal", url, "--offline"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "from 4 virtual shards to 8: moved 3 of 7 streams" in out
    assert "now deploy with GHBOT_VSHARDS=8" in out
    assert asyncio.run(_placed(url, 8)) == _expected(8)
    assert cli.main(argv) == 0  # again: nothing left to move
    assert "moved 0 of 7 streams" in capsys.readouterr().out
    monkeypatch.setenv("GHBOT_JOURNAL_URL", url)  # the deployment's setting, by default
    assert cli.main(["journal", "reshard", "--to", "3", "--offline"]) == 0
    assert asyncio.run(_placed(url, 3)) == _expected(3)


def test_a_stream_of_no_installation_goes_where_the_journal_puts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stream named like an installation's but not one (`inst-x`: a journal shared with
    something else) is moved as the journal places any stream of no installation; the
    command crashed on it with a `ValueError` before."""

    async def odd(url: str) -> None:
        journal = await open_journal(url, shard_count=4)
        await journal.append("inst-x", [NewEvent("t", b"")], shard=shard_for("inst-x", 4) ^ 1)
        await journal.close()

    url = asyncio.run(_journal(tmp_path, 4))
    asyncio.run(odd(url))
    argv = ["journal", "reshard", "--to", "8", "--journal", url, "--offline"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "from 4 virtual shards to 8: moved" in capsys.readouterr().out
    placed = asyncio.run(_placed(url, 8))
    expected = _expected(8)
    expected[shard_for("inst-x", 8)] = sorted([*expected[shard_for("inst-x", 8)], "inst-x"])
    assert placed == expected


def test_no_cluster_answering_is_refused_and_says_to_pass_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = asyncio.run(_journal(tmp_path, 4))
    argv = ["journal", "reshard", "--to", "8", "--journal", url, "--address", "127.0.0.1:1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    _one_line_error(err, "no Ray cluster answers at 127.0.0.1:1")
    assert err.rstrip().endswith("pass --offline")
    assert asyncio.run(_placed(url, 4)) == _expected(4)  # untouched


def test_running_shards_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import actors.ray.admin

    url = asyncio.run(_journal(tmp_path, 4))

    @contextlib.contextmanager
    def connected(_args: Any) -> Iterator[None]:
        yield

    monkeypatch.setattr(cluster_cli, "connected", connected)
    monkeypatch.setattr(actors.ray.admin, "shards", lambda namespace: ["shard-0", "shard-1"])
    argv = ["journal", "reshard", "--to", "8", "--journal", url, "--namespace", "prod"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    _one_line_error(err, "2 shard actor(s) of the deployment run in Ray namespace 'prod'")
    assert "ghbot stop --namespace prod" in err
    assert asyncio.run(_placed(url, 4)) == _expected(4)
    monkeypatch.setattr(actors.ray.admin, "shards", lambda namespace: [])
    assert cli.main(argv) == 0  # stopped: it goes ahead
    assert asyncio.run(_placed(url, 8)) == _expected(8)


def test_a_journal_that_cannot_be_resharded_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = asyncio.run(_journal(tmp_path, 4))
    asyncio.run(_split(url))
    assert cli.main(["journal", "reshard", "--to", "2", "--journal", url, "--offline"]) == 2
    _one_line_error(capsys.readouterr().err, "history is split")
    missing = f"sqlite://{tmp_path}/nowhere"
    assert cli.main(["journal", "reshard", "--to", "2", "--journal", missing, "--offline"]) == 2
    _one_line_error(capsys.readouterr().err, "no journal at")
    bad_port = "postgresql://ghbot@db.example:54x2/ghbot"  # asyncpg's ValueError, unwrapped
    assert cli.main(["journal", "reshard", "--to", "2", "--journal", bad_port, "--offline"]) == 2
    _one_line_error(capsys.readouterr().err, "a port is not a number from 0 to 65535")


@pytest.mark.parametrize("to", ["0", "x", "5000"])
def test_a_bad_count_is_a_usage_error(to: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["journal", "reshard", "--to", to, "--offline"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage: ghbot journal reshard" in err and "Traceback" not in err
