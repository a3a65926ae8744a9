"""The journal's conformance suite, run against every backend (after Akka's TCK)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from ghbot.errors import Conflict, Fenced, JournalUnavailable, UsageError
from ghbot.journal import (
    CONFLICT,
    DUPLICATE,
    FENCED,
    OK,
    AppendRequest,
    AppendResult,
    Journal,
    NewEvent,
)
from ghbot.journal.base import PRUNE_BATCH

if TYPE_CHECKING:
    from conftest import Backend


def events(*names: str) -> list[NewEvent]:
    return [NewEvent(name, name.encode()) for name in names]


def request(stream: str, *names: str, **kw: object) -> AppendRequest:
    return AppendRequest(stream, tuple(events(*names)), **kw)  # type: ignore[arg-type]


async def seqs(journal: Journal, stream: str) -> list[int]:
    return [e.seq for e in await journal.read(stream)]


# --- appends and sequence numbers -----------------------------------------------------


async def test_append_assigns_gap_free_seqs_from_one(journal: Journal) -> None:
    first = await journal.append("inst-1", events("a", "b"), expected_seq=0)
    second = await journal.append("inst-1", events("c"), expected_seq=2)
    assert (first.status, first.first_seq, first.last_seq) == (OK, 1, 2)
    assert (second.first_seq, second.last_seq) == (3, 3)
    records = await journal.read("inst-1")
    assert [(e.seq, e.type, e.data) for e in records] == [
        (1, "a", b"a"),
        (2, "b", b"b"),
        (3, "c", b"c"),
    ]
    assert all(e.stream == "inst-1" and e.version == 1 for e in records)
    assert await journal.last_seq("inst-1") == 3


async def test_append_without_expected_seq_goes_to_the_end(journal: Journal) -> None:
    await journal.append("s", events("a"))
    result = await journal.append("s", events("b", "c"))
    assert (result.first_seq, result.last_seq) == (2, 3)


async def test_concurrent_appends_keep_seqs_gap_free_and_batches_contiguous(
    journal: Journal,
) -> None:
    results = await asyncio.gather(
        *(journal.append("s", events(f"{i}-a", f"{i}-b")) for i in range(40))
    )
    assert sorted(r.first_seq for r in results) == list(range(1, 81, 2))
    records = await journal.read("s")
    assert [e.seq for e in records] == list(range(1, 81))
    for result in results:
        batch = records[result.first_seq - 1 : result.last_seq]
        assert len({e.type.split("-")[0] for e in batch}) == 1


async def test_appends_from_one_caller_keep_submission_order(journal: Journal) -> None:
    tasks = [asyncio.ensure_future(journal.append("s", events(str(i)))) for i in range(30)]
    await asyncio.gather(*tasks)
    assert [e.type for e in await journal.read("s")] == [str(i) for i in range(30)]


async def test_expected_seq_conflict_raises_and_writes_nothing(journal: Journal) -> None:
    await journal.append("s", events("a", "b"), expected_seq=0)
    with pytest.raises(Conflict) as info:
        await journal.append("s", events("c"), expected_seq=1, delivery_guid="g")
    assert (info.value.stream, info.value.expected, info.value.actual) == ("s", 1, 2)
    with pytest.raises(Conflict):
        await journal.append("new", events("x"), expected_seq=3)
    assert await seqs(journal, "s") == [1, 2]
    assert await journal.read("new") == []
    # the conflicting append did not claim its delivery GUID
    assert (await journal.append("s", events("c"), expected_seq=2, delivery_guid="g")).ok


async def test_invalid_appends_are_usage_errors(journal: Journal) -> None:
    with pytest.raises(UsageError):
        await journal.append("s", [])
    with pytest.raises(UsageError):
        await journal.append("s", events("a"), expected_seq=-1)
    with pytest.raises(UsageError):
        await journal.append("s", events("a"), shard=-2)
    with pytest.raises(UsageError):
        await journal.append("s", events("a"), shard=-1)
    with pytest.raises(UsageError):  # a bool is an int to Python, not a shard
        await journal.append("s", events("a"), shard=True)
    assert await journal.list_streams() == []


# --- delivery deduplication -----------------------------------------------------------


async def test_duplicate_delivery_writes_nothing_and_reports_the_original(
    journal: Journal,
) -> None:
    first = await journal.append("s", events("a", "b"), delivery_guid="guid-1")
    again = await journal.append("s", events("other"), delivery_guid="guid-1")
    assert again == AppendResult(DUPLICATE, first.first_seq, first.last_seq)
    assert [e.delivery_guid for e in await journal.read("s")] == ["guid-1", "guid-1"]
    # the same GUID is a different delivery on another stream
    assert (await journal.append("t", events("a"), delivery_guid="guid-1")).ok


async def test_duplicate_wins_over_a_stale_expected_seq(journal: Journal) -> None:
    await journal.append("s", events("a"), expected_seq=0, delivery_guid="g")
    await journal.append("s", events("b"), expected_seq=1)
    retried = await journal.append("s", events("a"), expected_seq=0, delivery_guid="g")
    assert retried.status == DUPLICATE


async def test_fifty_concurrent_appends_of_one_delivery_write_once(journal: Journal) -> None:
    results = await asyncio.gather(
        *(journal.append("s", events(f"e{i}"), delivery_guid="dup") for i in range(50))
    )
    assert [r.status for r in results].count(OK) == 1
    assert {(r.first_seq, r.last_seq) for r in results} == {(1, 1)}
    assert await seqs(journal, "s") == [1]


async def test_concurrent_duplicates_from_two_journal_objects_write_once(
    backend: Backend, journal: Journal
) -> None:
    other = await backend.open()
    calls = [
        j.append("s", events(f"e{i}"), delivery_guid="dup")
        for i in range(25)
        for j in (journal, other)
    ]
    results = await asyncio.gather(*calls)
    assert [r.status for r in results].count(OK) == 1
    assert await seqs(journal, "s") == [1]


# --- append_many ----------------------------------------------------------------------


async def test_append_many_mixes_ok_duplicate_and_conflict_independently(
    journal: Journal,
) -> None:
    await journal.append("a", events("a1"), delivery_guid="seen")
    results = await journal.append_many(
        [
            request("a", "a2", expected_seq=1, delivery_guid="g-a2"),
            request("a", "again", delivery_guid="seen"),
            request("b", "b1", expected_seq=5),
            request("c", "c1", "c2", expected_seq=0, delivery_guid="g-c"),
            request("a", "a3", expected_seq=2),
            request("c", "c-dup", delivery_guid="g-c"),
        ]
    )
    assert results == [
        AppendResult(OK, 2, 2),
        AppendResult(DUPLICATE, 1, 1),
        AppendResult(CONFLICT, last_seq=0),
        AppendResult(OK, 1, 2),
        AppendResult(OK, 3, 3),
        AppendResult(DUPLICATE, 1, 2),
    ]
    assert [e.type for e in await journal.read("a")] == ["a1", "a2", "a3"]
    assert await journal.read("b") == []
    assert [e.type for e in await journal.read("c")] == ["c1", "c2"]


async def test_append_many_across_shards_and_many_streams(journal: Journal) -> None:
    requests = [
        request(f"inst-{i}", "DeliveryReceived", delivery_guid=f"g{i}", shard=i % 4)
        for i in range(300)
    ]
    results = await journal.append_many(requests)
    assert all(r == AppendResult(OK, 1, 1) for r in results)
    assert await journal.append_many([]) == []
    assert len(await journal.list_streams()) == 300
    assert await journal.list_streams(shard=1) == sorted(f"inst-{i}" for i in range(1, 300, 4))
    assert [e.seq for e in await journal.read("inst-7", shard=3)] == [1]


async def test_two_writers_on_overlapping_streams_stay_gap_free(
    backend: Backend, journal: Journal
) -> None:
    other = await backend.open()
    names = [f"s{i}" for i in range(8)]

    async def burst(j: Journal, n: int) -> None:
        order = names[n % 8 :] + names[: n % 8]
        if n % 2:
            order.reverse()
        await j.append_many([request(name, f"{n}-{name}", shard=0) for name in order])

    await asyncio.gather(*(burst(j, n) for n in range(20) for j in (journal, other)))
    for name in names:
        assert [e.seq for e in await journal.read(name, shard=0)] == list(range(1, 41))


# --- replay ---------------------------------------------------------------------------


async def test_read_honours_from_to_and_limit(journal: Journal) -> None:
    await journal.append("s", events(*(f"e{i}" for i in range(1, 11))))
    assert [e.seq for e in await journal.read("s", 4)] == list(range(4, 11))
    assert [e.seq for e in await journal.read("s", 4, 6)] == [4, 5, 6]
    assert [e.seq for e in await journal.read("s", 2, limit=3)] == [2, 3, 4]
    assert [e.seq for e in await journal.read("s", 9, 100, limit=5)] == [9, 10]
    assert await journal.read("s", 11) == []
    assert await journal.read("s", 6, 5) == []
    assert await journal.read("s", limit=0) == []
    assert await journal.read("unknown") == []
    assert await journal.last_seq("unknown") == 0
    with pytest.raises(UsageError):
        await journal.read("s", 0)


# --- snapshots ------------------------------------------------------------------------


async def test_snapshots_keep_the_last_n_and_load_by_max_seq(journal: Journal) -> None:
    await journal.append("s", events(*(f"e{i}" for i in range(10))))
    assert await journal.load_snapshot("s") is None
    for seq in (2, 4, 6, 8, 10):
        await journal.save_snapshot("s", seq, f"state@{seq}".encode(), keep=3)
    latest = await journal.load_snapshot("s")
    assert latest is not None and (latest.seq, latest.data) == (10, b"state@10")
    older = await journal.load_snapshot("s", max_seq=7)
    assert older is not None and older.seq == 6
    at = await journal.load_snapshot("s", max_seq=8)  # one saved at max_seq itself
    assert at is not None and at.seq == 8
    assert await journal.load_snapshot("s", max_seq=5) is None  # 2 and 4 were dropped
    await journal.save_snapshot("s", 10, b"replaced", version=2)
    replaced = await journal.load_snapshot("s")
    assert replaced is not None and (replaced.data, replaced.version) == (b"replaced", 2)


async def test_snapshot_past_the_head_is_refused(journal: Journal) -> None:
    await journal.append("s", events("a"))
    with pytest.raises(UsageError):
        await journal.save_snapshot("s", 2, b"")
    with pytest.raises(UsageError):
        await journal.save_snapshot("s", 1, b"", keep=0)
    await journal.save_snapshot("empty", 0, b"initial")
    snapshot = await journal.load_snapshot("empty")
    assert snapshot is not None and snapshot.seq == 0


# --- fencing --------------------------------------------------------------------------


async def test_stale_epoch_is_fenced(backend: Backend, journal: Journal) -> None:
    assert await journal.current_epoch(5) == 0
    old = await journal.acquire_epoch(5)
    assert (await journal.append("s", events("a"), shard=5, epoch=old)).ok
    successor = await backend.open()
    new = await successor.acquire_epoch(5)
    assert new == old + 1 and await journal.current_epoch(5) == new
    with pytest.raises(Fenced) as info:
        await journal.append("s", events("zombie"), shard=5, epoch=old)
    assert (info.value.shard, info.value.epoch, info.value.current) == (5, old, new)
    with pytest.raises(Fenced):
        await journal.save_snapshot("s", 1, b"", shard=5, epoch=old)
    assert (await successor.append("s", events("b"), shard=5, epoch=new)).ok
    assert [e.type for e in await successor.read("s", shard=5)] == ["a", "b"]


async def test_fencing_in_append_many_fails_only_the_stale_requests(journal: Journal) -> None:
    epoch = await journal.acquire_epoch(1)
    await journal.acquire_epoch(1)
    results = await journal.append_many(
        [
            request("x", "a", shard=1, epoch=epoch),
            request("y", "b", shard=1, epoch=epoch + 1),
            request("z", "c", shard=1),
            request("w", "d", shard=2, epoch=7),  # never granted
        ]
    )
    assert [r.status for r in results] == [FENCED, OK, OK, FENCED]
    assert results[0].epoch == epoch + 1 and results[3].epoch == 0
    assert await journal.list_streams() == ["y", "z"]
    assert await journal.list_streams(shard=1) == ["y", "z"]  # not the fenced "x"
    assert await journal.list_streams(shard=2) == []


# --- pruning, listing, close ----------------------------------------------------------


async def test_prune_forgets_old_deliveries_but_keeps_events(journal: Journal) -> None:
    await journal.append("s", events("a"), delivery_guid="old")
    await asyncio.sleep(0.02)
    between = time.time()
    await asyncio.sleep(0.02)
    await journal.append("s", events("b"), delivery_guid="young")
    assert await journal.prune_deliveries() == 0  # both younger than 8 days
    assert await journal.prune_deliveries(retention=0, now=between) == 1
    again = await journal.append("s", events("a"), delivery_guid="old")
    assert again.ok and again.first_seq == 3
    assert (await journal.append("s", events("b"), delivery_guid="young")).status == DUPLICATE
    assert await journal.prune_deliveries(retention=3600, now=10**10) == 2
    assert await seqs(journal, "s") == [1, 2, 3]


async def test_a_delivery_recorded_exactly_retention_before_now_is_kept(
    journal: Journal,
) -> None:
    """Forgotten are those recorded *more* than `retention` seconds before `now`."""
    await journal.append("s", events("a"), delivery_guid="g")
    [event] = await journal.read("s")
    assert await journal.prune_deliveries(retention=0, now=event.recorded_at) == 0
    assert await journal.delivered("s", ["g"]) == {"g"}
    assert await journal.prune_deliveries(retention=0, now=event.recorded_at + 1) == 1


async def test_prune_of_one_shard_leaves_the_others_alone(journal: Journal) -> None:
    await journal.append("a", events("x"), delivery_guid="g", shard=0)
    await journal.append("b", events("x"), delivery_guid="g", shard=1)
    assert await journal.prune_deliveries(retention=0, now=10**10, shard=0) == 1
    assert await journal.delivered("a", ["g"], shard=0) == set()
    assert await journal.delivered("b", ["g"], shard=1) == {"g"}
    assert (await journal.append("b", events("y"), delivery_guid="g", shard=1)).status == DUPLICATE
    assert (await journal.append("a", events("y"), delivery_guid="g", shard=0)).ok
    assert [e.seq for e in await journal.read("a", shard=0)] == [1, 2]


async def test_prune_goes_through_more_than_one_batch(journal: Journal) -> None:
    many = PRUNE_BATCH * 2 + 7
    await journal.append_many(
        [request("s", "x", delivery_guid=f"g{i}", shard=3) for i in range(many)]
    )
    await asyncio.sleep(0.02)
    cutoff = time.time()
    await asyncio.sleep(0.02)
    await journal.append("s", events("y"), delivery_guid="young", shard=3)
    assert await journal.prune_deliveries(retention=0, now=cutoff, shard=3) == many
    assert await journal.delivered("s", ["g0", f"g{many - 1}", "young"], shard=3) == {"young"}
    assert await journal.prune_deliveries(retention=0, now=cutoff) == 0


async def test_delivered_tells_which_guids_a_stream_holds(journal: Journal) -> None:
    await journal.append("inst-1", events("a"), delivery_guid="g1")
    await journal.append("inst-1", events("b"), delivery_guid="g2")
    await journal.append("inst-2", events("c"), delivery_guid="g3")
    await journal.append("inst-1", events("d"))  # no delivery
    assert await journal.delivered("inst-1", ["g1", "g3", "g9", "g2"]) == {"g1", "g2"}
    assert await journal.delivered("inst-2", ["g3"]) == {"g3"}
    assert await journal.delivered("never", ["g1"]) == set()
    assert await journal.delivered("inst-1", []) == set()
    await journal.prune_deliveries(retention=0, now=10**10)
    assert await journal.delivered("inst-1", ["g1", "g2"]) == set()


async def test_list_streams_is_sorted_and_skips_empty_ones(journal: Journal) -> None:
    assert await journal.list_streams() == []
    for name in ("b", "a", "c"):
        await journal.append(name, events("x"))
    with pytest.raises(Conflict):
        await journal.append("never", events("x"), expected_seq=4)
    assert await journal.list_streams() == ["a", "b", "c"]


async def test_reopen_after_close_keeps_everything(backend: Backend, journal: Journal) -> None:
    pending = [journal.append("s", events(str(i)), delivery_guid=f"g{i}") for i in range(20)]
    tasks = [asyncio.ensure_future(p) for p in pending]
    await asyncio.sleep(0)
    epoch = await journal.acquire_epoch(0)
    await asyncio.gather(*tasks)
    await journal.save_snapshot("s", 20, b"state")
    await journal.close()
    await journal.close()  # idempotent
    assert journal.closed
    with pytest.raises(JournalUnavailable):
        await journal.append("s", events("late"))
    with pytest.raises(JournalUnavailable):
        await journal.read("s")
    reopened = await backend.open()
    assert await seqs(reopened, "s") == list(range(1, 21))
    assert (await reopened.append("s", events("again"), delivery_guid="g3")).status == DUPLICATE
    snapshot = await reopened.load_snapshot("s")
    assert snapshot is not None and snapshot.data == b"state"
    assert await reopened.current_epoch(0) == epoch
    async with reopened:
        assert (await reopened.append("s", events("next"), expected_seq=20)).first_seq == 21
    assert reopened.closed


async def test_a_cancelled_close_still_answers_the_appends_and_closes(
    backend: Backend, journal: Journal
) -> None:
    appends = [
        asyncio.ensure_future(journal.append("s", events(str(i)), delivery_guid=f"g{i}"))
        for i in range(20)
    ]
    for _ in range(3):  # the first batch is committing
        await asyncio.sleep(0)
    closing = asyncio.ensure_future(journal.close())
    await asyncio.sleep(0)
    closing.cancel()
    results = await asyncio.wait_for(asyncio.gather(*appends), timeout=10)
    assert [r.status for r in results] == [OK] * 20
    await asyncio.wait_for(journal.close(), timeout=10)  # waits for the first to end
    assert journal.closed
    reopened = await backend.open()
    assert await seqs(reopened, "s") == list(range(1, 21))
    await reopened.close()


async def test_every_call_after_close_is_refused_even_with_nothing_to_do(
    journal: Journal,
) -> None:
    await journal.append("s", events("a"), delivery_guid="g1")
    await journal.close()
    calls = {
        "append": journal.append("s", events("late")),
        "append_many([])": journal.append_many([]),
        "read": journal.read("s"),
        "last_seq": journal.last_seq("s"),
        "delivered": journal.delivered("s", ["g1"]),
        "delivered([])": journal.delivered("s", []),
        "save_snapshot": journal.save_snapshot("s", 1, b"x"),
        "load_snapshot": journal.load_snapshot("s"),
        "acquire_epoch": journal.acquire_epoch(0),
        "current_epoch": journal.current_epoch(0),
        "list_streams": journal.list_streams(),
        "prune_deliveries": journal.prune_deliveries(),
    }
    answered = []
    for name, call in calls.items():
        try:
            await call
        except JournalUnavailable:
            continue
        answered.append(name)
    assert answered == []
