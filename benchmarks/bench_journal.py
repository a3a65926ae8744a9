"""Journal append throughput and latency against the bare-database floor.

    python benchmarks/bench_journal.py [--quick] [--postgres URL] [--seconds S]

For each backend: appends/s and p50/p99 latency of `Journal.append` (one
DeliveryReceived-sized event, a delivery GUID, one stream per writer, all in shard 0
as one shard actor would) with 1, 16 and 256 concurrent writers, then `append_many`
with batches of 256 requests (the ingress hot path). The floor is the same kind of
durable single-row commit without the journal: a bare sqlite3 INSERT+COMMIT loop
with the same pragmas (WAL, synchronous=FULL), a bare asyncpg INSERT loop.
``×floor`` is appends/s divided by the floor's. PostgreSQL runs when ``--postgres``
or GHBOT_TEST_POSTGRES_URL is given, in a scratch schema dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from ghbot.journal import AppendRequest, Journal, NewEvent, open_journal

PAYLOAD = b"x" * 200
EVENT = (NewEvent("DeliveryReceived", PAYLOAD),)
BATCH = 256


class Result:
    def __init__(self, name: str, count: int, elapsed: float, latencies: list[float]) -> None:
        self.name = name
        self.rate = count / elapsed
        latencies.sort()
        self.p50 = latencies[len(latencies) // 2] * 1e3 if latencies else 0.0
        self.p99 = latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else 0.0


async def timed_loop(
    op: Callable[[int], Awaitable[object]], writers: int, seconds: float
) -> tuple[int, float, list[float]]:
    """Run `op` in `writers` concurrent loops for `seconds`; return count, time, latencies."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(w: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await op(w * 10_000_000 + n)
            latencies.append(time.perf_counter() - start)
            n += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(writers)))
    return len(latencies), time.perf_counter() - start, latencies


async def bench_journal(journal: Journal, label: str, seconds: float) -> list[Result]:
    results = []
    for writers in (1, 16, 256):
        run = uuid.uuid4().hex[:6]

        async def append(i: int, run: str = run, writers: int = writers) -> None:
            stream = f"inst-{run}-{i // 10_000_000}"
            await journal.append(stream, EVENT, delivery_guid=f"{run}-{i}", shard=0)

        count, elapsed, lat = await timed_loop(append, writers, seconds)
        results.append(Result(f"{label} append, {writers} writers", count, elapsed, lat))

    run = uuid.uuid4().hex[:6]

    async def append_many(i: int) -> None:
        await journal.append_many(
            [
                AppendRequest(f"inst-{run}-{k}", EVENT, None, f"{run}-{i}-{k}", 0)
                for k in range(BATCH)
            ]
        )

    count, elapsed, lat = await timed_loop(append_many, 1, seconds)
    results.append(Result(f"{label} append_many({BATCH})", count * BATCH, elapsed, lat))
    return results


def sqlite_floor(directory: Path, seconds: float) -> Result:
    conn = sqlite3.connect(directory / "floor.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (stream TEXT, seq INTEGER, data BLOB, PRIMARY KEY (stream, seq))")
    latencies = []
    deadline = time.perf_counter() + seconds
    begin = time.perf_counter()
    n = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES ('s', ?, ?)", (n, PAYLOAD))
        conn.execute("COMMIT")
        latencies.append(time.perf_counter() - start)
        n += 1
    conn.close()
    return Result("floor: bare sqlite3 INSERT+COMMIT", n, time.perf_counter() - begin, latencies)


async def postgres_floor(url: str, schema: str, seconds: float) -> Result:
    conn = await asyncpg.connect(url)
    await conn.execute(f'CREATE TABLE "{schema}".floor (stream text, seq bigint, data bytea)')
    insert = f'INSERT INTO "{schema}".floor VALUES ($1, $2, $3)'  # noqa: S608

    async def op(i: int) -> None:
        await conn.execute(insert, "s", i, PAYLOAD)

    count, elapsed, lat = await timed_loop(op, 1, seconds)
    await conn.close()
    return Result("floor: bare asyncpg INSERT", count, elapsed, lat)


def report(floor: Result, results: list[Result]) -> None:
    print(f"{'case':44} {'appends/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'×floor':>7}")
    for r in [floor, *results]:
        ratio = r.rate / floor.rate
        print(f"{r.name:44} {r.rate:10.0f} {r.p50:8.2f} {r.p99:8.2f} {ratio:7.1f}")
    print()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per case instead of 5")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--postgres", default=os.environ.get("GHBOT_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 5.0)

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMPDIR")) as tmp:
        floor = await asyncio.to_thread(sqlite_floor, Path(tmp), seconds)
        journal = await open_journal(f"sqlite://{tmp}/journal")
        results = await bench_journal(journal, "sqlite", seconds)
        await journal.close()
        report(floor, results)

    if args.postgres:
        schema = f"ghbot_bench_{uuid.uuid4().hex[:8]}"
        sep = "&" if "?" in args.postgres else "?"
        journal = await open_journal(f"{args.postgres}{sep}schema={schema}")
        try:
            floor = await postgres_floor(args.postgres, schema, seconds)
            results = await bench_journal(journal, "postgres", seconds)
            report(floor, results)
        finally:
            await journal.close()
            conn = await asyncpg.connect(args.postgres)
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
