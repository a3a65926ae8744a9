"""The soak's judgements (benchmarks/soak_judge.py) fail on what they are there to catch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import soak_judge as judge
finally:
    sys.path.remove(str(ROOT / "benchmarks"))

LIMITS = judge.Limits(mib_per_minute=6.0, latency_factor=4.0, latency_floor_ms=150.0)
JITTER = (0.0, 0.4, -0.3, 0.2, -0.4, 0.3, 0.0, -0.2, 0.4, -0.1, 0.1)


def series(leak_per_minute: float) -> list[dict[str, Any]]:
    """Samples of a 30-s run every 3 s: 150 MiB plus noise plus a leak, and a journal."""
    return [
        {
            "t": 3.0 * i,
            "shard 0": 150 + JITTER[i] + leak_per_minute * 3.0 * i / 60,
            "journal_bytes": 1_000_000 + 30_000 * i * 40,
            "received": 40 * i,
            "wal_bytes_max": 4 * judge.MIB,
        }
        for i in range(11)
    ]


def test_a_leak_of_a_few_mib_a_minute_fails_and_noise_does_not() -> None:
    (flat,) = judge.memory(series(0.0), ["shard 0"], LIMITS)
    assert flat.ok, flat.detail
    (leaking,) = judge.memory(series(10.0), ["shard 0"], LIMITS)
    assert not leaking.ok and "+9.6" in leaking.detail
    assert abs(judge.slope([(0, 1), (1, 3), (2, 5)]) - 2.0) < 1e-12


def test_p99_growing_past_the_factor_fails() -> None:
    steady = [[0.05] * 99 + [0.2], [0.05] * 99 + [0.3]]
    assert judge.latency(steady, LIMITS).ok
    growing = [[0.05] * 99 + [0.2], [0.05] * 90 + [1.0] * 10]
    assert not judge.latency(growing, LIMITS).ok
    assert not judge.latency([[0.05], []], LIMITS).ok  # nothing handled at the end
    points = [(0.5, 1.0), (1.5, 2.0), (9.9, 3.0), (10.0, 4.0)]
    assert judge.windows(points, 0.0, 10.0, 2) == [[1.0, 2.0], [3.0]]


def test_journal_growth_per_delivery_walls_snapshots_and_guids() -> None:
    final = {"delivery_rows": 400, "journaled": 400, "most_snapshots": 3, "keep_snapshots": 3}
    final["snapshots"] = 12
    assert all(v.ok for v in judge.journal(series(0.0), final, LIMITS))
    growing = series(0.0)
    for row in growing[6:]:
        row["journal_bytes"] *= 2
    assert not judge.journal(growing, final, LIMITS)[0].ok
    walls = series(0.0)
    walls[-1]["wal_bytes_max"] = 40 * judge.MIB
    assert not judge.journal(walls, final, LIMITS)[1].ok
    kept = {**final, "most_snapshots": 9}
    assert not judge.journal(series(0.0), kept, LIMITS)[2].ok
    pruned = {**final, "delivery_rows": 350}
    assert not judge.journal(series(0.0), pruned, LIMITS)[3].ok


def test_a_lost_delivery_a_dead_letter_or_a_503_fails() -> None:
    good = {"ok": True, "figures": {"acknowledged": 10}}
    assert all(v.ok for v in judge.deliveries(good, 0, {"202": 10, "200": 1}))
    lost = {"ok": False, "problems": "acknowledged but not journaled (1)"}
    assert [v.ok for v in judge.deliveries(lost, 0, {"202": 10})] == [False, True, True]
    assert [v.ok for v in judge.deliveries(good, 1, {"202": 10})] == [True, False, True]
    assert [v.ok for v in judge.deliveries(good, 0, {"503": 1})] == [True, True, False]
    assert judge.tokens(120, 0, 200, 10, 30).ok and not judge.tokens(20, 0, 200, 10, 30).ok
    # Tokens live 360 s: a 10-minute run must see some expire at the fake.
    assert judge.tokens(2000, 150, 200, 60, 600).ok and not judge.tokens(2000, 0, 200, 60, 600).ok


def test_sqlite_memory_used_counts_what_a_connection_caches() -> None:
    import sqlite3

    from actors.ray.process import sqlite_memory_used

    before = sqlite_memory_used()
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (x BLOB)")
        conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 4000,)] * 1000)
        assert sqlite_memory_used() - before > 3_000_000
    finally:
        conn.close()
    assert sqlite_memory_used() - before < 1_000_000
