"""`make bench`: its script exists, knows every benchmark, and runs the quick ones."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _benchmark(name: str) -> ModuleType:
    """Import `benchmarks/<name>.py` (the benchmarks are scripts, not a package)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def run_all(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "benchmarks/run_all.py", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_bench_target_runs_a_script_that_exists() -> None:
    recipe = re.search(r"^bench:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe is not None
    script = recipe.group(1).split()[1]
    assert (ROOT / script).is_file(), script


def test_it_knows_every_benchmark() -> None:
    listed = run_all("--list")
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0] for line in listed.stdout.splitlines()}
    assert names == {path.stem for path in (ROOT / "benchmarks").glob("bench_*.py")} - {
        "bench_bot"  # the bot bench_e2e deploys, not a benchmark
    }


def test_it_runs_quick_benchmarks_and_sums_up() -> None:
    done = run_all("--only", "bench_events", "bench_core", "bench_metrics")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "=== bench_events: --quick" in done.stdout
    assert re.search(r"^SDK - floor +\d+\.\d+", done.stdout, re.M), done.stdout
    summary = done.stdout.split("=== summary\n", 1)[1].splitlines()
    assert [line.split()[0] for line in summary] == ["bench_events", "bench_core", "bench_metrics"]
    assert all(line.endswith(" ok") for line in summary)
    assert run_all("--only", "bench_nothing").returncode == 2


def test_bench_tokens_estimates_quantiles_as_prometheus_does() -> None:
    quantile = _benchmark("bench_tokens").quantile
    bounds = [0.005, 0.01, 0.025]
    # 10 values in (0.005, 0.01]: the 95th is 9.5/10 of the way through that bucket.
    assert abs(quantile(0.95, bounds, [0, 10, 0, 0]) - 0.00975) < 1e-12
    # In the first bucket, from 0; above every bound, the highest bound.
    assert abs(quantile(0.5, bounds, [4, 0, 0, 0]) - 0.0025) < 1e-12
    assert quantile(0.95, bounds, [1, 0, 0, 19]) == 0.025
    assert quantile(0.95, bounds, [0, 0, 0, 0]) != quantile(0.95, bounds, [0, 0, 0, 0])  # nan


#: The body both floors' tests deliver.
_OPENED = b'{"action": "opened", "issue": {"number": 1}}'


def _stored(journal: Path) -> list[str]:
    """The GUIDs a floor's SQLite file holds, sorted."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(journal)) as db:
        return sorted(row[0] for row in db.execute("SELECT guid FROM deliveries"))


def test_the_durable_floors_commit_each_delivery_once_before_answering(tmp_path: Path) -> None:
    """The durable floor and the durable Serve ceiling answer through `Bot.receive`: a
    delivery is in the SQLite file when it is answered, a redelivery is answered and
    neither written nor handled again, a bad signature is refused and writes nothing."""
    import asyncio
    from typing import Any

    from benchmarks.floor_bot import Bot, Journal
    from ghbot.webhooks import sign

    body = _OPENED
    journal = tmp_path / "j.sqlite"
    handled: list[str] = []

    def headers(guid: str, secret: str) -> dict[str, str]:
        signature = sign(body, secret)
        return {
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": guid,
            "X-Hub-Signature-256": signature,
        }

    async def comment(data: dict[str, Any], guid: str) -> None:
        handled.append(guid)

    async def deliver() -> list[int]:
        bot = Bot("http://127.0.0.1:9", "1", b"", "s3cret", Journal(str(journal)))
        bot.comment = comment  # type: ignore[method-assign]
        first = await bot.receive(body, headers("a", "s3cret"))
        assert _stored(journal) == ["a"]  # on disk when it was answered
        together = await asyncio.gather(
            bot.receive(body, headers("a", "s3cret")),
            bot.receive(body, headers("b", "s3cret")),
            bot.receive(body, headers("c", "another")),
        )
        await asyncio.gather(*bot.tasks)
        return [first, *together]

    assert asyncio.run(deliver()) == [202, 202, 202, 401]
    assert _stored(journal) == ["a", "b"]
    assert handled == ["a", "b"]


def test_the_run_queue_wait_is_read_per_process_and_named() -> None:
    bench = _benchmark("bench_e2e")

    gone = 2**22 + 1  # above Linux's largest pid: no such process
    waited = bench.waited_seconds([os.getpid(), gone])
    assert set(waited) == {os.getpid()} and waited[os.getpid()] >= 0.0
    names = {1: "shard", 2: "ingress", 3: "shard", 4: "gone", 5: "new"}
    before = {1: 1.0, 2: 0.5, 3: 2.0, 4: 0.0}
    after = {1: 1.5, 2: 0.6, 3: 2.25, 5: 0.05}
    by_name = bench._by_name_of(names, before, after, 2.0)
    assert list(by_name) == ["shard", "ingress", "new"]  # most first; "gone" has no after
    assert by_name == {
        "shard": pytest.approx(1.5),
        "ingress": pytest.approx(0.2),
        "new": pytest.approx(0.1),  # started since `before`: all of it counts
    }


def test_the_end_to_end_benchmark_runs_ghbots_default_shards_for_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """README: `python benchmarks/bench_e2e.py` measures ghbot as deployed by default."""
    bench = _benchmark("bench_e2e")

    for cores, shards in ((2, 1), (3, 1), (4, 2), (16, 2)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert bench.parse_arguments([]).shards == shards, cores
    assert bench.parse_arguments(["--shards", "3"]).shards == 3


def test_the_speed_probe_runs_on_every_core_at_once_and_rows_are_told_against_the_first(
    tmp_path: Path,
) -> None:
    bench = _benchmark("bench_e2e")

    # One process a core, each told its index: their mean is what it returns.
    told = "import sys; print(0.1 * (int(sys.argv[1]) + 1))"
    assert bench.probe_seconds(cores=3, script=told, tries=1) == pytest.approx(0.2)
    # The least of the tries: the first after an idle spell can be slow.
    count = tmp_path / "tries"
    tried = (
        f"from pathlib import Path; p = Path({str(count)!r}); n = len(p.read_text()) if"
        " p.exists() else 0; p.write_text('x' * (n + 1)); print([0.3, 0.1, 0.2][n])"
    )
    assert bench.probe_seconds(cores=1, script=tried) == pytest.approx(0.1)
    assert count.read_text() == "xxx"
    assert bench.probe_seconds(cores=1, tries=1) > 0.0  # the real loop, once
    rows = [{"probe_s": [0.2, 0.25]}, {"probe_s": [0.25, 0.2]}, {"probe_s": [0.1, 0.2]}]
    assert bench.speeds(rows) == [
        pytest.approx((1.0, 0.8)),
        pytest.approx((0.8, 1.0)),
        pytest.approx((2.0, 1.0)),
    ]
    assert bench.speeds([]) == []


def test_steal_is_its_share_of_the_ticks_and_a_moving_speed_is_said() -> None:
    bench = _benchmark("bench_e2e")

    # user nice system idle iowait irq softirq steal guest guest_nice
    assert bench.steal_share([50, 0, 20, 20, 0, 0, 0, 10, 40, 0]) == pytest.approx(0.10)
    assert bench.steal_share([0] * 10) == 0.0
    assert bench.speed_warning([(1.0, 1.0), (0.97, 1.04), (0.95, 1.02)]) is None  # within 0.1
    said = bench.speed_warning([(1.0, 1.19), (0.67, 1.23)])
    assert said is not None and "between 0.67 and 1.23" in said and "not a quiet" in said


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_split_ceiling_answers_once_its_journal_process_has_committed(
    loop: str, tmp_path: Path
) -> None:
    """The split Serve ceiling's two sides (`split_floor.py`), over a real connection: a
    delivery is in the journal process's SQLite file when the ingress answers 202, a
    redelivery is answered and not handled again, a bad signature is refused before
    anything is sent, a failed commit is answered 503, and a journal process gone is
    answered 503. On asyncio's loop and on uvloop, the one Serve's replicas run on
    (whose transports are not `asyncio.Transport`s: an `isinstance` check left every
    delivery unsent there)."""
    import asyncio
    from typing import Any

    from benchmarks.floor_bot import Bot, Journal
    from benchmarks.split_floor import SplitIngress, serve_journal
    from ghbot.webhooks import sign

    body = _OPENED
    journal = tmp_path / "j.sqlite"
    handled: list[str] = []

    def headers(guid: str, secret: str = "s3cret", event: str = "issues") -> dict[str, str]:
        return {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": guid,
            "X-Hub-Signature-256": sign(body, secret),
        }

    async def comment(data: dict[str, Any], guid: str) -> None:
        assert data["issue"]["number"] == 1
        handled.append(guid)

    async def deliver() -> list[int]:
        bot = Bot("http://127.0.0.1:9", "1", b"", "", Journal(str(journal)))
        bot.comment = comment  # type: ignore[method-assign]
        server = await serve_journal(bot, 0)
        ingress = SplitIngress("s3cret", server.sockets[0].getsockname()[1])
        first = await ingress.receive(body, headers("a"))
        assert _stored(journal) == ["a"]  # on disk when it was answered
        together = await asyncio.gather(
            ingress.receive(body, headers("a")),
            ingress.receive(body, headers("b")),
            ingress.receive(body, headers("c", "another")),
            ingress.receive(body, headers("d", event="push")),
        )
        await asyncio.gather(*bot.tasks)
        assert bot.journal is not None
        bot.journal.db.execute("PRAGMA query_only = ON")  # the next commit fails
        failed = await ingress.receive(body, headers("e"))
        server.close()
        await server.wait_closed()
        assert ingress.connecting is not None
        ingress.connecting.result()[0].close()
        await asyncio.sleep(0.05)
        gone = await ingress.receive(body, headers("f"))
        return [first, *together, failed, gone]

    factory = pytest.importorskip("uvloop").new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(asyncio.wait_for(deliver(), 10)) == [202, 202, 202, 401, 202, 503, 503]
    assert _stored(journal) == ["a", "b", "d"]
    assert handled == ["a", "b"]  # a push is journaled, not commented on


def test_the_split_ceiling_sends_what_one_turn_of_the_loop_gave_it_in_one_write() -> None:
    import asyncio

    from benchmarks.split_floor import _Client

    class Transport:
        def __init__(self) -> None:
            self.writes: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.writes.append(data)

        def is_closing(self) -> bool:
            return False

    async def send() -> list[bytes]:
        client, transport = _Client(), Transport()
        client.connection_made(transport)  # type: ignore[arg-type]
        client.send("a", "issues", b"{}")
        client.send("b", "issues", b"{}")
        await asyncio.sleep(0)
        client.send("c", "issues", b"{}")
        await asyncio.sleep(0)
        return transport.writes

    writes = asyncio.run(send())
    assert [w.count(b"issues") for w in writes] == [2, 1]
