"""The batch planner: a batch decides exactly as the same appends made one by one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ghbot.journal import DUPLICATE, OK, AppendRequest, NewEvent, shard_for
from ghbot.journal.plan import Plan, plan_batch

requests_st = st.lists(
    st.builds(
        AppendRequest,
        stream=st.sampled_from(["a", "b", "c"]),
        events=st.lists(
            st.builds(NewEvent, type=st.just("t"), data=st.binary(max_size=3)),
            min_size=1,
            max_size=3,
        ).map(tuple),
        expected_seq=st.none() | st.integers(0, 6),
        delivery_guid=st.none() | st.sampled_from(["g1", "g2", "g3"]),
        shard=st.just(0),
        epoch=st.none() | st.integers(0, 2),
    ),
    max_size=12,
)
EPOCHS = {0: 1}


def apply(plan: Plan, heads: dict[str, int], seen: dict[tuple[str, str], tuple[int, int]]) -> None:
    heads.update(plan.heads)
    for stream, guid, first, last, _ in plan.deliveries:
        seen[(stream, guid)] = (first, last)


@given(requests_st)
def test_a_batch_decides_like_sequential_appends(requests: list[AppendRequest]) -> None:
    shards = [0] * len(requests)
    batch = plan_batch(requests, shards, heads={}, epochs=EPOCHS, seen={}, now=1.0)

    heads: dict[str, int] = {}
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    one_by_one = []
    rows = []
    for req in requests:
        plan = plan_batch([req], [0], heads=heads, epochs=EPOCHS, seen=seen, now=1.0)
        apply(plan, heads, seen)
        one_by_one += plan.results
        rows += plan.events
    assert batch.results == one_by_one
    assert batch.events == rows
    assert {k: v for k, v in heads.items() if k in batch.heads} == batch.heads


@given(requests_st)
def test_written_seqs_are_gap_free_and_match_results(requests: list[AppendRequest]) -> None:
    plan = plan_batch(
        requests, [0] * len(requests), heads={"a": 2}, epochs=EPOCHS, seen={}, now=1.0
    )
    for stream in ("a", "b", "c"):
        seqs = [row[1] for row in plan.events if row[0] == stream]
        start = 3 if stream == "a" else 1
        assert seqs == list(range(start, start + len(seqs)))
        if seqs:
            assert plan.heads[stream] == seqs[-1]
    written = sum(r.last_seq - r.first_seq + 1 for r in plan.results if r.status == OK)
    assert written == len(plan.events)
    guids = [(row[0], row[1]) for row in plan.deliveries]
    assert len(guids) == len(set(guids))


def test_a_recorded_delivery_is_a_duplicate_before_any_other_check() -> None:
    req = AppendRequest("a", (NewEvent("t", b""),), expected_seq=9, delivery_guid="g")
    plan = plan_batch([req], [0], heads={"a": 4}, epochs={}, seen={("a", "g"): (2, 3)}, now=0)
    assert [(r.status, r.first_seq, r.last_seq) for r in plan.results] == [(DUPLICATE, 2, 3)]
    assert plan.events == [] and plan.heads == {}


def test_shard_for_is_stable_crc32() -> None:
    assert shard_for("installation-1", 16) == shard_for("installation-1", 16)
    assert shard_for("installation-1", 16) == 1620329263 % 16  # zlib.crc32, fixed forever
    assert {shard_for(f"i{n}", 8) for n in range(200)} == set(range(8))
