"""The soak's judgements (`soak.py`), as pure functions over its samples and figures.

Each returns `Verdict`s; the soak passes when every one is ok. Kept apart from the
driver so that tests can hold them against made-up samples (a leak, a lost delivery).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ghbot.auth import TOKEN_REFRESH_MARGIN

MIB = 2**20


@dataclass(frozen=True)
class Limits:
    """What the soak tolerates."""

    #: Least-squares RSS slope of any judged actor over the run's second half.
    mib_per_minute: float
    #: The last latency window's p99 may be at most this many times the first's ...
    latency_factor: float
    #: ... taking the first's as at least this (a quiet first window is not a baseline).
    latency_floor_ms: float
    #: Journal bytes per journaled delivery, second half over first half, at most.
    journal_growth: float = 1.5
    #: Each SQLite WAL file at most (checkpointed every 1,000 pages, 4 MiB, and reused).
    wal_mib: float = 16.0


@dataclass(frozen=True)
class Verdict:
    what: str
    ok: bool
    detail: str


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Return the least-squares slope of (x, y) points (0 for fewer than two x)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n if n else 0.0
    mean_y = sum(y for _, y in points) / n if n else 0.0
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if n < 2 or spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def memory(
    samples: Sequence[dict[str, Any]], actors: Sequence[str], limits: Limits
) -> list[Verdict]:
    """Judge each actor's RSS (MiB, sampled at `t` seconds) by its slope over the run's
    second half: the first half is warm-up (caches, pools and the allocator filling)."""
    end = samples[-1]["t"]
    late = [s for s in samples if s["t"] >= end / 2]
    verdicts = []
    for actor in actors:
        per_minute = slope([(s["t"] / 60, s[actor]) for s in late])
        ok = per_minute <= limits.mib_per_minute
        detail = f"{per_minute:+.2f} MiB/min over the second half (limit {limits.mib_per_minute})"
        verdicts.append(Verdict(f"memory: {actor}", ok, detail))
    return verdicts


def windows(
    points: Sequence[tuple[float, float]], start: float, end: float, count: int
) -> list[list[float]]:
    """Split (time, value) points into `count` equal windows of [start, end)."""
    width = (end - start) / count
    split: list[list[float]] = [[] for _ in range(count)]
    for at, value in points:
        if start <= at < end:
            split[min(int((at - start) / width), count - 1)].append(value)
    return split


def latency(split: Sequence[Sequence[float]], limits: Limits) -> Verdict:
    """Judge the last window's p99 (seconds in, ms out) against the first window's."""
    first, last = (percentile(split[i], 0.99) * 1000 for i in (0, -1))
    bound = limits.latency_factor * max(first, limits.latency_floor_ms)
    ok = bool(split[0]) and bool(split[-1]) and last <= bound
    detail = f"p99 first window {first:.0f} ms, last {last:.0f} ms (at most {bound:.0f})"
    return Verdict("latency: p99 steady", ok, detail)


def journal(
    samples: Sequence[dict[str, Any]], final: dict[str, Any], limits: Limits
) -> list[Verdict]:
    """Judge the journal's growth: linear in deliveries (nothing is deleted within the
    dedup window), WAL files bounded, snapshots trimmed, every GUID remembered."""
    first, middle, last = samples[0], samples[len(samples) // 2], samples[-1]

    def per_delivery(a: dict[str, Any], b: dict[str, Any]) -> float:
        added = float(b["journal_bytes"] - a["journal_bytes"])
        return added / max(int(b["received"] - a["received"]), 1)

    early, late = per_delivery(first, middle), per_delivery(middle, last)
    wal = max(s["wal_bytes_max"] for s in samples) / MIB
    rows, journaled = final["delivery_rows"], final["journaled"]
    return [
        Verdict(
            "journal: linear in deliveries",
            0 < late <= limits.journal_growth * early,
            f"{early:.0f} B a delivery in the first half, {late:.0f} in the second"
            f" (at most {limits.journal_growth}x)",
        ),
        Verdict(
            "journal: WAL bounded",
            wal <= limits.wal_mib,
            f"largest WAL file {wal:.1f} MiB (at most {limits.wal_mib})",
        ),
        Verdict(
            "journal: snapshots trimmed",
            final["most_snapshots"] <= final["keep_snapshots"],
            f"at most {final['most_snapshots']} snapshots a stream (keep"
            f" {final['keep_snapshots']}), {final['snapshots']} in all",
        ),
        Verdict(
            "journal: every GUID remembered",
            rows == journaled,
            f"{rows} delivery GUIDs for {journaled} journaled deliveries (none is past"
            " the dedup window)",
        ),
    ]


def deliveries(
    checked: dict[str, Any], dead_letters: int, statuses: dict[str, int]
) -> list[Verdict]:
    """Judge delivery: exactly once (the history checker), no dead letter, only 2xx."""
    others = {s: n for s, n in statuses.items() if s not in ("200", "202")}
    return [
        Verdict(
            "deliveries: exactly once, in order",
            bool(checked["ok"]),
            str(checked.get("figures") or checked.get("problems")),
        ),
        Verdict("deliveries: no dead letter", dead_letters == 0, f"{dead_letters} dead letters"),
        Verdict("deliveries: answered 2xx", not others, f"answers {statuses}"),
    ]


def tokens(
    minted: int, expired: int, installations: int, usable_s: float, seconds: float
) -> Verdict:
    """Judge that tokens were replaced inside the run: at least one new token for every
    two installations (each is replaced every `usable_s` s while it gets deliveries),
    and, in a run longer than a token's lifetime (`usable_s` + the 300-s refresh
    margin), some expired at the fake."""
    lifetime = usable_s + TOKEN_REFRESH_MARGIN
    ok = minted >= installations / 2 and (expired > 0 or seconds <= lifetime)
    detail = (
        f"{minted} tokens minted during the run for {installations} installations"
        f" (each usable {usable_s:.0f} s of the run's {seconds:.0f} s), {expired} expired"
        f" at the fake"
    )
    return Verdict("tokens: replaced inside the run", ok, detail)
