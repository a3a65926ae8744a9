"""The shard without Ray: journal-before-ack, dedup, ordering, retries, dead letters,
domain events, snapshots and recovery after a crash."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from actors import shard as shard_module
from actors.bot import InstallationActor, on
from actors.runtime_events import (
    DeliveryReceived,
    HandlerFailed,
    HandlerSucceeded,
    Pending,
    Progress,
    decode_runtime,
    evolve_progress,
    stream_name,
)
from actors.shard import ShardCore
from ghbot.client import ClientOptions, GitHub
from ghbot.errors import JournalUnavailable, RateLimited, UsageError
from ghbot.events import Event
from ghbot.journal import FaultyJournal, Journal, NewEvent, open_journal
from ghbot.logs import LogLimiter
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeClock, FakeGitHub
from tests.runtime.conftest import (
    COMMENTER_INSTALLATION,
    COMMENTER_REPO,
    INSTALLATION,
    VSHARDS,
    AlwaysFails,
    Commenter,
    batch,
    commenter_outcomes,
    commenter_records,
    commenter_shard,
    inbound,
    payload,
    shard_of,
    until,
)

ROOT = Path(__file__).resolve().parents[2]


async def _no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


_started: list[ShardCore] = []


def core(journal: Journal, bot: type[InstallationActor], **kwargs: Any) -> ShardCore:
    kwargs.setdefault("sleep", _no_sleep)
    kwargs.setdefault("retry", RetryPolicy(base=0.0, cap=0.0))
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, bot, **kwargs)
    _started.append(shard)
    return shard


@pytest.fixture(autouse=True)
async def _close_shards() -> Any:
    yield
    while _started:
        await _started.pop().close()


async def types_in(journal: Journal, installation_id: int = INSTALLATION) -> list[str]:
    records = await journal.read(stream_name(installation_id), shard=shard_of(installation_id))
    return [r.type for r in records]


class Recorder(InstallationActor):
    seen: list[tuple[str, str]] = []

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        self.seen.append(("opened", event.delivery_id or ""))

    @on("issues")
    async def any_issue(self, event: Event) -> None:
        self.seen.append(("issues", event.delivery_id or ""))


@pytest.fixture(autouse=True)
def _reset() -> None:
    Recorder.seen = []


async def test_ingest_journals_then_runs_every_matching_handler(journal: Journal) -> None:
    shard = core(journal, Recorder)
    await shard.start()
    item = inbound(Recorder, "issues", payload("issues.opened"), delivery_id="d-1")
    assert await shard.ingest(batch(item)) == ["accepted"]
    # Journaled before the answer, whatever the handlers do next.
    assert (await types_in(journal))[0] == "DeliveryReceived"
    await shard.wait_idle()
    assert Recorder.seen == [("opened", "d-1"), ("issues", "d-1")]
    assert await types_in(journal) == [
        "DeliveryReceived",
        "HandlerSucceeded",
        "HandlerSucceeded",
        "DeliveryCompleted",
    ]


async def test_a_duplicate_guid_changes_nothing(journal: Journal) -> None:
    shard = core(journal, Recorder)
    await shard.start()
    item = inbound(Recorder, "issues", payload("issues.opened"), delivery_id="same")
    assert await shard.ingest(batch(item, item)) == ["accepted", "duplicate"]
    assert await shard.ingest(batch(item)) == ["duplicate"]
    await shard.wait_idle()
    assert len(Recorder.seen) == 2
    assert (await types_in(journal)).count("DeliveryReceived") == 1


async def test_events_without_a_handler_are_completed_in_one_write(journal: Journal) -> None:
    shard = core(journal, Recorder)
    await shard.start()
    item = inbound(Recorder, "push", payload("push"))
    assert item.completed
    assert await shard.ingest(batch(item)) == ["accepted"]
    await shard.wait_idle()
    assert await types_in(journal) == ["DeliveryReceived", "DeliveryCompleted"]
    assert Recorder.seen == []


class Ordered(InstallationActor):
    log: list[tuple[str, int, int]] = []
    running = 0
    most = 0

    @on("issue_comment.created")
    async def comment(self, event: Event) -> None:
        cls = type(self)
        cls.running += 1
        cls.most = max(cls.most, cls.running)
        number = event.payload.issue.number
        cls.log.append(("start", number, event.payload.comment.id))
        await asyncio.sleep(0.002)
        cls.log.append(("end", number, event.payload.comment.id))
        cls.running -= 1


def comments(bot: type[Ordered], issues: range, each: int) -> bytes:
    """A batch of `each` comments on every issue of `issues`, interleaved; `bot`'s
    record of what ran starts empty."""
    bot.log, bot.running, bot.most = [], 0, 0
    return batch(
        *(
            inbound(
                bot,
                "issue_comment",
                payload("issue_comment.created", issue__number=issue, comment__id=comment),
            )
            for comment in range(each)
            for issue in issues
        )
    )


async def test_same_key_runs_in_journal_order_different_keys_concurrently(
    journal: Journal,
) -> None:
    shard = core(journal, Ordered)
    await shard.start()
    await shard.ingest(comments(Ordered, range(1, 4), 10))
    await shard.wait_idle()
    for issue in (1, 2, 3):
        order = [c for kind, n, c in Ordered.log if n == issue and kind == "start"]
        assert order == list(range(10)), f"issue {issue} ran out of order: {order}"
        # One at a time per issue: every start is followed by its own end.
        mine = [(kind, c) for kind, n, c in Ordered.log if n == issue]
        assert mine == [(k, c) for c in range(10) for k in ("start", "end")]
    assert Ordered.most > 1, "different issues should have run concurrently"


class TwoAtATime(Ordered):
    max_concurrency = 2


async def test_max_concurrency_bounds_the_keys_of_one_installation_running_at_once(
    journal: Journal,
) -> None:
    shard = core(journal, TwoAtATime)
    await shard.start()
    await shard.ingest(comments(TwoAtATime, range(1, 6), 2))
    await shard.wait_idle()
    assert len(TwoAtATime.log) == 20  # all ten ran
    assert TwoAtATime.most == 2, "five issues, at most two at once"


class Flaky(InstallationActor):
    failures_left = 0
    errors: list[int] = []

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            raise RuntimeError("GitHub was down")

    async def on_error(
        self, event: Event, handler: str, error: BaseException, attempt: int
    ) -> None:
        type(self).errors.append(attempt)


async def test_a_failing_handler_is_retried_then_succeeds(journal: Journal) -> None:
    Flaky.failures_left, Flaky.errors = 2, []
    shard = core(journal, Flaky)
    await shard.start()
    await shard.ingest(batch(inbound(Flaky, "issues", payload("issues.opened"))))
    await shard.wait_idle()
    assert Flaky.errors == [1, 2]
    assert await types_in(journal) == [
        "DeliveryReceived",
        "HandlerFailed",
        "HandlerFailed",
        "HandlerSucceeded",
        "DeliveryCompleted",
    ]


class TwoSteps(InstallationActor):
    """Two handlers of one event: the second waits for `release`."""

    ran: ClassVar[list[str]] = []
    release: ClassVar[asyncio.Event]

    @on("issues.opened")
    async def first(self, event: Event) -> None:
        TwoSteps.ran.append("first")

    @on("issues.opened")
    async def second(self, event: Event) -> None:
        TwoSteps.ran.append("second")
        await TwoSteps.release.wait()


async def test_a_restarted_shard_runs_only_the_handlers_not_journaled_as_done(
    journal: Journal,
) -> None:
    TwoSteps.ran, TwoSteps.release = [], asyncio.Event()
    first = core(journal, TwoSteps)
    await first.start()
    await first.ingest(batch(inbound(TwoSteps, "issues", payload("issues.opened"))))
    await until(lambda: TwoSteps.ran == ["first", "second"])
    await first.close()  # as a process dying with the second handler running
    assert await types_in(journal) == ["DeliveryReceived", "HandlerSucceeded"]

    TwoSteps.release.set()
    second = core(journal, TwoSteps)
    assert await second.start() == 1
    await second.wait_idle()
    assert TwoSteps.ran == ["first", "second", "second"]  # the first ran once
    assert (await types_in(journal))[-1] == "DeliveryCompleted"


async def test_a_dead_letters_log_line_names_the_handlers_error_type_not_its_message(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler's error may carry data: its message goes to the journal's dead letter
    (for `ghbot dead-letters list`), not to the log."""
    shard = core(journal, AlwaysFails)
    await shard.start()
    await shard.ingest(batch(inbound(AlwaysFails, "issues", payload("issues.opened"))))
    await shard.wait_idle()
    [line] = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert line.endswith("after 1 attempts: RuntimeError")
    assert "alice@example.com" not in caplog.text


class CommentsInOneAttempt(Commenter):
    max_attempts = 1


async def test_a_try_github_asked_to_wait_for_is_not_counted_as_an_attempt(
    journal: Journal, fake: FakeGitHub
) -> None:
    """A secondary limit is GitHub's, not the handler's: the handler runs again from
    the start when it ends, in the same attempt, even with one attempt allowed."""
    fake.faults.add(r"/comments$", "secondary", retry_after=1, count=1)
    shard = commenter_shard(journal, fake, CommentsInOneAttempt, max_rate_limit_wait=0)
    _started.append(shard)
    await shard.start()
    body = payload("issues.opened", installation=COMMENTER_INSTALLATION)
    assert await shard.ingest(batch(inbound(CommentsInOneAttempt, "issues", body))) == ["accepted"]
    await shard.wait_idle()
    assert fake.secondary_limits == 1
    outcomes = await commenter_outcomes(journal)
    [succeeded] = [e for e in outcomes if isinstance(e, HandlerSucceeded)]
    assert succeeded.attempt == 1


class CommentsThenLabels(InstallationActor):
    """Comments on issue 1 of `COMMENTER_REPO`, then labels it."""

    max_attempts = 2

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        issue = f"/repos/{COMMENTER_REPO}/issues/1"
        await self.github.request("POST", f"{issue}/comments", json={"body": "thanks"})
        await self.github.request("POST", f"{issue}/labels", json={"labels": ["triage"]})


async def test_a_run_that_wrote_waits_for_the_reset_by_githubs_clock_not_the_nodes(
    journal: Journal, public_pem: bytes
) -> None:
    """This node's clock is 600 s behind GitHub's. GitHub refuses the label, out of
    budget, its window resetting in an hour; the run commented, so its next attempt
    waits for the reset: an hour, on GitHub's clock (the answers' `Date` told the
    client). It compared GitHub's reset with this node's clock: 600 s more."""
    github = FakeClock(1_700_000_000.0)

    def local() -> float:
        return github() - 600

    # Tokens outlast the hour waited; the shard sleeps on GitHub's clock (both move).
    async with FakeGitHub(
        app_id=1, public_key_pem=public_pem, clock=github, token_lifetime=3 * 3600.0
    ) as fake:
        fake.add_installation(COMMENTER_INSTALLATION, "octo-org", ["hello-world"])
        fake.add_issue(COMMENTER_REPO, "Found a bug", "It crashes")
        fake.faults.add(r"/labels$", "primary", count=10)
        token = fake.create_token(COMMENTER_INSTALLATION)
        opts = ClientOptions(base_url=fake.url, clock=local, pace_writes=None)
        shard = core(
            journal,
            CommentsThenLabels,
            github_for=lambda _id: GitHub(token=token, options=opts),
            clock=local,
            sleep=github.sleep,
        )
        await shard.start()
        body = payload("issues.opened", installation=COMMENTER_INSTALLATION)
        await shard.ingest(batch(inbound(CommentsThenLabels, "issues", body)))
        await shard.wait_idle()
        [failed] = await commenter_records(journal, HandlerFailed)
    assert failed.error_type == "RateLimited"
    assert 3600 <= failed.retry_in <= 3601 + 5  # the reset, and at most 5 s drawn


class LimitedTwice(InstallationActor):
    """Told twice by GitHub to wait no time at all (`Retry-After: 0`), then runs."""

    limited = 0

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        if type(self).limited < 2:
            type(self).limited += 1
            raise RateLimited(403, "rate limit", kind="primary", retry_after=0.0)


async def test_a_wait_github_asks_of_no_time_still_yields_before_the_next_try(
    journal: Journal,
) -> None:
    """`Retry-After: 0` gives `retry_after` 0: the next try waits 0.05 s, not 0, so a
    handler GitHub keeps refusing cannot spin the shard's event loop."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    LimitedTwice.limited = 0
    shard = core(journal, LimitedTwice, sleep=sleep)
    await shard.start()
    await shard.ingest(batch(inbound(LimitedTwice, "issues", payload("issues.opened"))))
    await shard.wait_idle()
    assert LimitedTwice.limited == 2
    assert slept == [0.05, 0.05]
    assert (await types_in(journal))[-1] == "DeliveryCompleted"


class LimitedForAMinute(InstallationActor):
    """Told once, before it wrote anything, to wait 60 s; then runs."""

    limited = 0

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        if type(self).limited < 1:
            type(self).limited += 1
            raise RateLimited(403, "rate limit", kind="secondary", retry_after=60.0)


class Highest(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


async def test_a_handler_held_by_github_waits_up_to_a_tenth_more_than_asked(
    journal: Journal,
) -> None:
    """Every handler of an installation held by a pause draws its own extra wait, so
    they do not all run again the instant it ends (the burst that draws the next)."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    LimitedForAMinute.limited = 0
    shard = core(journal, LimitedForAMinute, sleep=sleep, retry=RetryPolicy(rng=Highest()))
    await shard.start()
    await shard.ingest(batch(inbound(LimitedForAMinute, "issues", payload("issues.opened"))))
    await shard.wait_idle()
    assert slept == [65.0]  # 60 s and a tenth of it, at most 5 s
    assert (await types_in(journal))[-1] == "DeliveryCompleted"


async def test_deliveries_waiting_for_an_open_breaker_wait_up_to_a_tenth_more(
    journal: Journal,
) -> None:
    """Deliveries waiting for an installation's open breaker all started the instant it
    half-opened; each draws its own extra wait now."""
    slept: list[float] = []
    waits = [30.0]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    def breaker_wait(_github: Any) -> float:
        return waits.pop() if waits else 0.0

    Recorder.seen = []
    shard = core(
        journal,
        Recorder,
        sleep=sleep,
        breaker_wait=breaker_wait,
        retry=RetryPolicy(rng=Highest()),
    )
    await shard.start()
    await shard.ingest(batch(inbound(Recorder, "issues", payload("issues.opened"))))
    await shard.wait_idle()
    assert slept == [33.0] and Recorder.seen  # waited, then ran


async def test_a_shard_resuming_a_failed_attempt_waits_what_is_left_of_its_backoff(
    journal: Journal,
) -> None:
    """After a restart or a hand-over, the next attempt comes when the journaled
    backoff ends: not at once, not after a new backoff, never after more than it."""
    never = asyncio.Event()

    async def forever(_seconds: float) -> None:  # the first shard stops in the backoff
        await never.wait()

    Flaky.failures_left, Flaky.errors = 1, []
    backoff = RetryPolicy(base=8.0, cap=10.0)  # the first retry waits 4 to 8 s
    first = core(journal, Flaky, clock=lambda: 1000.0, sleep=forever, retry=backoff)
    await first.start()
    await first.ingest(batch(inbound(Flaky, "issues", payload("issues.opened"))))
    for _ in range(100):
        if (await types_in(journal))[-1] == "HandlerFailed":
            break
        await asyncio.sleep(0.01)
    await first.close()
    [*_, record] = await journal.read(stream_name(INSTALLATION), shard=shard_of(INSTALLATION))
    failed = decode_runtime(record.type, record.data)
    assert isinstance(failed, HandlerFailed)
    assert 4.0 <= failed.retry_in <= 8.0
    assert failed.retry_at == pytest.approx(1000.0 + failed.retry_in)

    for now, expected in (
        (1001.0, failed.retry_at - 1001.0),  # 1 s later: the rest of it
        (990.0, failed.retry_in),  # a successor's clock behind: no more than the backoff
    ):
        waits: list[float] = []

        async def recorded(seconds: float, waits: list[float] = waits) -> None:
            waits.append(seconds)
            if len(waits) > 1:  # the resumed attempt's own backoff: stop there
                await never.wait()

        later = core(journal, Flaky, clock=lambda now=now: now, sleep=recorded, retry=backoff)
        Flaky.failures_left = 1  # the resumed attempt fails too: the delivery stays pending
        await later.start()
        for _ in range(100):
            if len(waits) == 2:
                break
            await asyncio.sleep(0.01)
        await later.close()
        assert waits[0] == pytest.approx(expected)
        assert Flaky.errors == [1, 2]  # the resumed attempt counts from the journaled one
        del Flaky.errors[1:]
        # Its own failure journaled a new backoff: put the first one back for the next.
        await journal.append(
            stream_name(INSTALLATION),
            [NewEvent("HandlerFailed", msgspec.msgpack.encode(failed))],
            shard=shard_of(INSTALLATION),
        )


def test_a_failure_journaled_before_retry_at_was_kept_is_retried_at_once() -> None:
    old = msgspec.msgpack.encode(
        {
            "delivery_id": "d1",
            "handler": "opened",
            "attempt": 1,
            "error_type": "RuntimeError",
            "error": "",
            "retry_in": 5.0,
        }
    )
    decoded = decode_runtime("HandlerFailed", old)
    assert isinstance(decoded, HandlerFailed) and decoded.retry_at == 0.0
    received = DeliveryReceived(delivery_id="d1", event="issues", body=b"{}", received_at=0.0)
    progress = Progress(pending={"d1": Pending(received=received)})
    evolve_progress(progress, decoded)
    assert progress.pending["d1"].attempts == {"opened": 1}
    assert progress.pending["d1"].retry_at == {}
    # After a newer record, an older one's (a rollback) leaves none behind either.
    newer = msgspec.structs.replace(decoded, retry_at=1000.0)
    evolve_progress(progress, newer)
    assert progress.pending["d1"].retry_at == {"opened": (1000.0, 5.0)}
    evolve_progress(progress, decoded)
    assert progress.pending["d1"].retry_at == {}


async def test_a_failed_attempt_is_logged_as_a_warning_with_the_delivery(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    Flaky.failures_left, Flaky.errors = 1, []
    shard = core(journal, Flaky)
    await shard.start()
    item = inbound(Flaky, "issues", payload("issues.opened"), delivery_id="d-flaky")
    with caplog.at_level(logging.INFO, logger="ghbot.installation"):
        await shard.ingest(batch(item))
        await shard.wait_idle()
    (line,) = [r for r in caplog.records if "failed attempt" in r.getMessage()]
    assert line.levelno == logging.WARNING  # a retry, as the operations guide says
    assert (getattr(line, "event_id", None), getattr(line, "installation_id", None)) == (
        "d-flaky",
        INSTALLATION,
    )


TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"


class Clones(InstallationActor):
    """A handler whose error quotes a token, as a failed `git clone` URL does."""

    max_attempts = 2

    @on("issues.opened")
    async def clone(self, event: Event) -> None:
        raise RuntimeError(f"git clone https://x-access-token:{TOKEN}@github.com/o/r failed")


async def test_a_handlers_error_is_journaled_and_listed_masked(journal: Journal) -> None:
    shard = core(journal, Clones)
    await shard.start()
    try:
        await shard.ingest(batch(inbound(Clones, "issues", payload("issues.opened"))))
        await shard.wait_idle()
        [dead] = await shard.dead_letters()
        assert TOKEN not in dead["error"] and TOKEN[4:12] not in dead["error"]
    finally:
        await shard.close()
    every = b""
    for stream in await journal.list_streams():
        every += b"".join(e.data for e in await journal.read(stream))
    assert TOKEN.encode() not in every and TOKEN[4:20].encode() not in every


async def test_after_the_last_attempt_it_is_dead_lettered_and_can_be_replayed(
    journal: Journal,
) -> None:
    Flaky.failures_left, Flaky.errors = 3, []
    shard = core(journal, Flaky)
    await shard.start()
    item = inbound(Flaky, "issues", payload("issues.opened"), delivery_id="doomed")
    await shard.ingest(batch(item))
    await shard.wait_idle()
    assert (await types_in(journal))[-2:] == ["DeadLettered", "DeliveryCompleted"]
    dead = await shard.dead_letters()
    assert [(d["delivery_id"], d["handler"], d["attempts"]) for d in dead] == [
        ("doomed", "opened", 3)
    ]
    assert dead[0]["error"] == "GitHub was down"
    assert await shard.replay(INSTALLATION, "doomed", None) == 1
    await shard.wait_idle()
    assert await shard.dead_letters() == []
    assert (await types_in(journal))[-3:] == [
        "DeadLetterReplayed",
        "HandlerSucceeded",
        "DeliveryCompleted",
    ]
    assert await shard.replay(INSTALLATION, "doomed", None) == 0


class Labeled(msgspec.Struct):
    number: int


class Counter(InstallationActor):
    domain_events = (Labeled,)
    state_type = dict[str, int]
    snapshot_every = 5

    def initial_state(self) -> dict[str, int]:
        return {}

    def evolve(self, state: dict[str, int], event: msgspec.Struct) -> dict[str, int]:
        assert isinstance(event, Labeled)
        key = str(event.number)
        return {**state, key: state.get(key, 0) + 1}

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        self.emit(Labeled(number=event.payload.issue.number))


async def test_domain_events_fold_into_state_and_survive_a_restart(
    journal: Journal, tmp_path: Any
) -> None:
    shard = core(journal, Counter)
    await shard.start()
    items = [
        inbound(Counter, "issues", payload("issues.opened", issue__number=n % 3)) for n in range(12)
    ]
    await shard.ingest(batch(*items))
    await shard.wait_idle()
    expected = {"0": 4, "1": 4, "2": 4}
    assert (await shard.host(INSTALLATION)).bot.state == expected
    types = await types_in(journal)
    assert types.count("domain:Labeled") == 12
    await asyncio.sleep(0.05)  # snapshots are taken in the background
    assert shard.counters["snapshots"] >= 1
    snapshot = await journal.load_snapshot(stream_name(INSTALLATION), shard=shard_of())
    assert snapshot is not None and snapshot.seq >= 5
    await shard.close()

    again = core(journal, Counter)
    await again.start()
    host = await again.host(INSTALLATION)
    assert host.bot.state == expected
    assert host.progress.pending == {}


async def test_a_failed_background_snapshot_is_logged_and_the_next_write_tries_again(
    journal: Journal, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal refuses the first snapshot: a WARNING names the installation and the
    error's type (not its message, which may quote the journal's data), and the next
    delivery past `snapshot_every` takes one."""
    shard = core(journal, Counter)
    await shard.start()
    real_save = journal.save_snapshot
    refused: list[int] = []

    async def refusing_once(*args: Any, **kwargs: Any) -> Any:
        if not refused:
            refused.append(1)
            raise JournalUnavailable("snapshot refused: 'secret body text'")
        return await real_save(*args, **kwargs)

    monkeypatch.setattr(journal, "save_snapshot", refusing_once)

    async def deliver(n: int) -> None:
        item = inbound(Counter, "issues", payload("issues.opened", issue__number=n % 3))
        await shard.ingest(batch(item))
        await shard.wait_idle()
        await asyncio.sleep(0.01)  # the snapshot, in the background

    with caplog.at_level(logging.WARNING, logger="ghbot.shard"):
        for n in range(10):
            await deliver(n)
            if refused:
                break
    assert refused and shard.counters["snapshots"] == 0
    [line] = [r for r in caplog.records if "a snapshot failed" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        f"installation {INSTALLATION}: a snapshot failed (JournalUnavailable); "
        "the next write tries again"
    )
    assert "secret body text" not in caplog.text
    await deliver(n + 1)  # past `snapshot_every` again
    assert shard.counters["snapshots"] == 1
    snapshot = await journal.load_snapshot(stream_name(INSTALLATION), shard=shard_of())
    assert snapshot is not None and snapshot.seq >= 5
    await shard.close()


async def test_snapshots_of_a_host_that_holds_its_whole_stream_read_nothing_back(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live host holding exactly events 1..seq is snapshotted as it is: the events and
    their bodies are not read back; a restart from that snapshot has the same state."""
    shard = core(journal, Counter)
    await shard.start()
    await shard.host(INSTALLATION)  # activated (its one read) before counting
    reads: list[int] = []
    real_read = journal.read

    async def counting_read(stream: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return await real_read(stream, *args, **kwargs)

    monkeypatch.setattr(journal, "read", counting_read)
    for n in range(12):  # one at a time: every snapshot sees a settled host
        item = inbound(Counter, "issues", payload("issues.opened", issue__number=n % 3))
        await shard.ingest(batch(item))
        await shard.wait_idle()
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    host = await shard.host(INSTALLATION)
    assert host.exact and shard.counters["snapshots"] >= 3
    assert reads == []  # no snapshot read the journal
    snapshot = await journal.load_snapshot(stream_name(INSTALLATION), shard=shard_of())
    assert snapshot is not None and snapshot.seq == host.snapshot_seq >= 30
    monkeypatch.undo()
    await shard.close()

    again = core(journal, Counter)
    await again.start()
    restored = await again.host(INSTALLATION)
    assert restored.bot.state == {"0": 4, "1": 4, "2": 4} == host.bot.state
    assert restored.last_seq == host.last_seq and restored.exact


async def test_a_host_missing_an_event_is_snapshotted_from_the_journal(journal: Journal) -> None:
    shard = core(journal, Counter)
    await shard.start()
    await shard.ingest(batch(inbound(Counter, "issues", payload("issues.opened"))))
    await shard.wait_idle()
    host = await shard.host(INSTALLATION)
    # An event the host never heard of (a batch journaled whose answer was lost).
    from actors.codecs import runtime_event
    from actors.runtime_events import DeliveryCompleted

    event = runtime_event(DeliveryCompleted(delivery_id="unknown"))
    await journal.append(stream_name(INSTALLATION), [event], shard=shard_of())
    host.last_seq += 1  # the host saw its number go by (a later append), not the event
    assert not host.exact
    seq = await shard.snapshot(INSTALLATION)
    assert seq == host.last_seq  # folded from the journal instead


async def test_emit_refuses_an_undeclared_type() -> None:
    bot = Counter()
    with pytest.raises(UsageError, match="domain_events"):
        bot.emit(msgspec.Struct())
    with pytest.raises(UsageError, match="inside a handler"):
        bot.emit(Labeled(number=1))


class Stuck(InstallationActor):
    gate: asyncio.Event | None = None
    ran: list[str] = []

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        gate = type(self).gate
        if gate is not None:
            await gate.wait()
        type(self).ran.append(event.delivery_id or "")


async def stuck_with_pending(url: str, count: int) -> tuple[ShardCore, Journal]:
    """A shard that acknowledged `count` deliveries (p0, p1, ...) and handled none."""
    Stuck.gate, Stuck.ran = asyncio.Event(), []
    journal = await open_journal(url, shard_count=VSHARDS)
    shard = core(journal, Stuck)
    await shard.start()
    items = [
        inbound(Stuck, "issues", payload("issues.opened", issue__number=n), delivery_id=f"p{n}")
        for n in range(count)
    ]
    assert await shard.ingest(batch(*items)) == ["accepted"] * count
    await asyncio.sleep(0.01)
    assert Stuck.ran == []  # acknowledged, journaled, not yet handled: then the crash
    return shard, journal


async def test_a_new_shard_fences_the_old_one_and_finishes_its_work(tmp_path: Any) -> None:
    url = f"sqlite://{tmp_path}/journal"
    first, first_journal = await stuck_with_pending(url, 3)

    second_journal = await open_journal(url, shard_count=VSHARDS)
    Stuck.gate = None
    second = core(second_journal, Stuck)
    assert await second.start() == 3
    await second.wait_idle()
    assert sorted(Stuck.ran) == ["p0", "p1", "p2"]

    # The zombie wakes up: its writes are refused, nothing is recorded twice.
    from ghbot.errors import Fenced

    with pytest.raises(Fenced):
        await first_journal.append(
            stream_name(INSTALLATION),
            [NewEvent("x", b"")],
            shard=shard_of(),
            epoch=first.epochs[shard_of()],
        )
    statuses = await first.ingest(batch(inbound(Stuck, "issues", payload("issues.opened"))))
    assert statuses == ["refused"]
    types = await types_in(second_journal)
    assert types.count("DeliveryCompleted") == 3
    await first.close()
    await second.close()
    await first_journal.close()
    await second_journal.close()


async def test_a_fenced_shard_starts_none_of_the_deliveries_queued_behind(tmp_path: Any) -> None:
    """Three deliveries of one issue queue behind each other on a shard a successor has
    fenced. The first's outcome is refused (`Fenced`); the two behind it used to start
    anyway, each running its handler (its GitHub calls) before its own write was
    refused, while the successor ran all three: every one of them twice."""
    url = f"sqlite://{tmp_path}/journal"
    gate = asyncio.Event()
    Stuck.gate, Stuck.ran = gate, []
    first_journal = await open_journal(url, shard_count=VSHARDS)
    first = core(first_journal, Stuck)
    await first.start()
    items = [
        inbound(Stuck, "issues", payload("issues.opened", issue__number=1), delivery_id=f"q{n}")
        for n in range(3)
    ]
    assert await first.ingest(batch(*items)) == ["accepted"] * 3
    await asyncio.sleep(0.01)  # q0 waits in its handler; q1 and q2 wait behind it
    second_journal = await open_journal(url, shard_count=VSHARDS)
    second = core(second_journal, Stuck)
    await second.start()  # takes the epochs; its own q0 waits at the same gate
    gate.set()
    await second.wait_idle()
    await first.wait_idle()
    assert sorted(Stuck.ran) == ["q0", "q0", "q1", "q2"]  # the zombie ran q0 only
    assert (await types_in(second_journal)).count("DeliveryCompleted") == 3
    await first_journal.close()
    await second_journal.close()


OTHER = INSTALLATION + VSHARDS  # another installation of the same virtual shard


class Retried(InstallationActor):
    """INSTALLATION's handler waits at `gate`; OTHER's fails its first try, then waits
    out its backoff before the next."""

    gate: ClassVar[asyncio.Event | None] = None
    ran: ClassVar[list[int]] = []

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        type(self).ran.append(self.installation_id)
        gate = type(self).gate
        if self.installation_id == INSTALLATION:
            if gate is not None:
                await gate.wait()
        elif type(self).ran.count(OTHER) == 1:
            raise RuntimeError("the first try fails")


class RetriedElsewhere(Retried):
    """The same bot, on the successor (its runs counted apart, no gate)."""

    gate = None
    ran: ClassVar[list[int]] = []


async def test_a_fenced_write_stops_every_installation_of_its_virtual_shard(
    tmp_path: Any,
) -> None:
    """OTHER waits out a retry's backoff on a shard a successor has fenced. A write of
    INSTALLATION, of the same virtual shard, is fenced meanwhile: OTHER used to run its
    next try anyway (its handler, its GitHub calls) before its own write was refused,
    while the successor ran it too."""
    assert shard_of(OTHER) == shard_of(INSTALLATION)
    url = f"sqlite://{tmp_path}/journal"
    Retried.gate, Retried.ran, RetriedElsewhere.ran = asyncio.Event(), [], []
    first_journal = await open_journal(url, shard_count=VSHARDS)
    first = core(first_journal, Retried, sleep=asyncio.sleep, retry=RetryPolicy(base=20, cap=20))
    await first.start()
    items = [
        inbound(Retried, "issues", payload("issues.opened"), delivery_id="a"),
        inbound(Retried, "issues", payload("issues.opened", installation=OTHER), delivery_id="b"),
    ]
    assert await first.ingest(batch(*items)) == ["accepted"] * 2
    await until(lambda: OTHER in Retried.ran and INSTALLATION in Retried.ran, within=5)
    await asyncio.sleep(0.05)  # OTHER's failed try journaled: it waits 10 to 20 s now
    second_journal = await open_journal(url, shard_count=VSHARDS)
    second = core(second_journal, RetriedElsewhere)
    await second.start()  # takes the epochs and runs both
    await second.wait_idle()
    Retried.gate.set()  # INSTALLATION's outcome on the zombie: fenced
    async with asyncio.timeout(5):  # not the backoff's 10 s: OTHER was stopped in it
        await first.wait_idle()
    assert Retried.ran.count(OTHER) == 1, "its next try ran on the fenced shard"
    assert sorted(RetriedElsewhere.ran) == sorted([INSTALLATION, OTHER, OTHER])
    await first_journal.close()
    await second_journal.close()


async def test_a_delivery_refused_as_fenced_stops_every_installation_of_its_virtual_shard(
    tmp_path: Any,
) -> None:
    """OTHER waits out a retry's backoff on a shard a successor has fenced; the ingress
    can still reach the old shard, and a new delivery's append there is fenced. Only a
    host's own fenced write stopped the virtual shard's hosts: OTHER ran its next try
    (its handler, its GitHub calls) while the successor ran it too."""
    url = f"sqlite://{tmp_path}/journal"
    Retried.gate, Retried.ran, RetriedElsewhere.ran = None, [], []
    first_journal = await open_journal(url, shard_count=VSHARDS)
    first = core(first_journal, Retried, sleep=asyncio.sleep, retry=RetryPolicy(base=20, cap=20))
    await first.start()
    other = inbound(Retried, "issues", payload("issues.opened", installation=OTHER))
    assert await first.ingest(batch(other)) == ["accepted"]
    await until(lambda: OTHER in Retried.ran, within=5)
    await asyncio.sleep(0.05)  # its failed try journaled: it waits 10 to 20 s now
    second_journal = await open_journal(url, shard_count=VSHARDS)
    second = core(second_journal, RetriedElsewhere)
    await second.start()  # takes the epochs and runs OTHER's delivery
    await second.wait_idle()
    late = inbound(Retried, "issues", payload("issues.opened"), delivery_id="late")
    assert await first.ingest(batch(late)) == ["refused"]
    async with asyncio.timeout(5):  # not the backoff's 10 s: OTHER was stopped in it
        await first.wait_idle()
    assert Retried.ran.count(OTHER) == 1, "its next try ran on the fenced shard"
    assert RetriedElsewhere.ran == [OTHER, OTHER]  # its first try fails there too
    await first_journal.close()
    await second_journal.close()


class SlowToList(FaultyJournal):
    """A journal whose stream listing (what recovery starts with) waits for `opened`."""

    def __init__(self, inner: Journal) -> None:
        super().__init__(inner)
        self.opened = asyncio.Event()

    async def list_streams(self, *, shard: int | None = None) -> list[str]:
        await self.opened.wait()
        return await super().list_streams(shard=shard)


async def test_a_restarted_shard_takes_deliveries_while_it_recovers(tmp_path: Any) -> None:
    url = f"sqlite://{tmp_path}/journal"
    first, first_journal = await stuck_with_pending(url, 2)
    await first.close()
    await first_journal.close()

    journal = SlowToList(await open_journal(url, shard_count=VSHARDS))
    Stuck.gate = None
    second = core(journal, Stuck)
    await second.open()  # epochs taken; recovery is held up in `list_streams`
    assert second.recovery is not None and not second.recovery.done()
    other = VSHARDS + INSTALLATION  # same virtual shard, another installation
    news = [
        inbound(Stuck, "issues", payload("issues.opened", installation=other), delivery_id="n1"),
        inbound(Stuck, "issues", payload("issues.opened", issue__number=0), delivery_id="n2"),
    ]
    assert await second.ingest(batch(*news)) == ["accepted"] * 2
    # n2's installation was activated on the spot, so its pending p0 and p1 went first.
    for _ in range(100):
        if len(Stuck.ran) == 4:
            break
        await asyncio.sleep(0.01)
    assert sorted(Stuck.ran) == ["n1", "n2", "p0", "p1"]
    assert Stuck.ran.index("p0") < Stuck.ran.index("n2")
    assert not second.recovery.done()
    for _ in range(500):  # and their outcomes journaled (a loaded machine is slower)
        if not any(host.busy for host in second.hosts.values()):
            break
        await asyncio.sleep(0.01)

    journal.fail_reads(1)  # the first listing fails: recovery tries again
    journal.opened.set()
    assert await second.recovery == 0  # nothing left: everything was resumed already
    await second.wait_idle()
    assert sorted(Stuck.ran) == ["n1", "n2", "p0", "p1"]  # each exactly once
    await second.close()
    await journal.close()


async def test_idle_installations_are_passivated_and_come_back(journal: Journal) -> None:
    now = [1000.0]
    shard = core(journal, Recorder, clock=lambda: now[0], idle_after=60, max_active=2)
    await shard.start()
    for installation in (1, 2, 3):
        body = payload("issues.opened", installation=installation)
        await shard.ingest(batch(inbound(Recorder, "issues", body)))
        # Each done before the next arrives: only an idle host is dropped, and how far
        # the one before got otherwise depends on the machine's load.
        await shard.wait_idle()
    assert list(shard.hosts) == [2, 3]  # the LRU cap: the least recently used went
    now[0] += 61
    assert shard.passivate() >= 1
    assert len(shard.hosts) == 0
    host = await shard.host(1)
    assert host.progress.completed == 1


async def test_idle_installations_are_passivated_in_the_background(journal: Journal) -> None:
    # `open`'s sweep, every `idle_after / 4` seconds but at most once a second (here
    # 0.5 s, so 1 s): no `passivate()` called here, no other activation to trigger one.
    now = [1000.0]
    shard = core(journal, Recorder, clock=lambda: now[0], idle_after=2)
    await shard.start()
    await shard.ingest(batch(inbound(Recorder, "issues", payload("issues.opened"))))
    await shard.wait_idle()
    assert len(shard.hosts) == 1
    now[0] += 3  # idle past `idle_after` by the shard's clock
    await until(lambda: not shard.hosts, within=5.0)  # the next sweep: a second at most
    assert shard.counters["passivations"] == 1


async def test_a_handler_outcome_committed_before_an_ingest_ack_loses_nothing(
    journal: Journal,
) -> None:
    # The ingest of "late" commits first (lower seq) but its answer comes back after
    # the outcome of "early", which has a higher seq: "late" must still run.
    from ghbot.journal import FaultyJournal

    wrapped = FaultyJournal(journal)
    commit = wrapped.append_many

    async def slow_ack(requests: Any) -> Any:
        results = await commit(requests)
        if requests[0].delivery_guid == "late":
            Stuck.gate.set()  # type: ignore[union-attr]
            await asyncio.sleep(0.2)
        return results

    wrapped.append_many = slow_ack  # type: ignore[method-assign]
    Stuck.gate, Stuck.ran = asyncio.Event(), []
    shard = core(wrapped, Stuck)
    await shard.start()
    early = inbound(Stuck, "issues", payload("issues.opened", issue__number=1), delivery_id="early")
    late = inbound(Stuck, "issues", payload("issues.opened", issue__number=2), delivery_id="late")
    assert await shard.ingest(batch(early)) == ["accepted"]
    assert await shard.ingest(batch(late)) == ["accepted"]
    await shard.wait_idle()
    assert sorted(Stuck.ran) == ["early", "late"]


async def test_a_delivery_for_another_shard_is_refused_and_not_written(journal: Journal) -> None:
    other = shard_of() ^ 1
    shard = ShardCore([other], VSHARDS, journal, Recorder, sleep=_no_sleep)
    _started.append(shard)
    await shard.start()
    item = inbound(Recorder, "issues", payload("issues.opened"), delivery_id="lost?")
    assert await shard.ingest(batch(item)) == ["refused"]
    assert await types_in(journal) == []


async def test_refused_deliveries_are_logged_ten_a_minute_the_next_line_counting_the_rest(
    journal: Journal, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fenced shard the ingress still reaches refuses every delivery it is sent: it
    logged an ERROR line for each (the ingress counts them all in
    `ghbot_webhooks_unavailable_total`)."""
    now = [0.0]
    limiter = LogLimiter(burst=10, per=60.0, clock=lambda: now[0])
    monkeypatch.setattr(shard_module, "_REFUSED_LOGGED", limiter)
    shard = ShardCore([shard_of() ^ 1], VSHARDS, journal, Recorder, sleep=_no_sleep)
    _started.append(shard)
    await shard.start()
    body = payload("issues.opened")
    flood = [inbound(Recorder, "issues", body, delivery_id=f"d{n}") for n in range(30)]
    with caplog.at_level(logging.ERROR, logger="ghbot.shard"):
        assert await shard.ingest(batch(*flood)) == ["refused"] * 30
        now[0] = 60.0
        late = inbound(Recorder, "issues", body, delivery_id="late")
        assert await shard.ingest(batch(late)) == ["refused"]
    lines = [r for r in caplog.records if "refused:" in r.getMessage()]
    assert len(lines) == 11
    assert lines[-1].getMessage() == (
        "delivery late refused: not this shard's (20 more not this shard's refusals were "
        "not logged)"
    )
    assert lines[-1].__dict__["suppressed"] == 20


async def test_a_delivery_named_for_a_virtual_shard_not_its_installations_is_refused(
    journal: Journal,
) -> None:
    """An ingress counting another number of virtual shards names one this shard owns,
    but not the installation's: journaled there, it would be in a stream no shard
    reads for the installation."""
    shard = core(journal, Recorder)
    await shard.start()
    item = inbound(Recorder, "issues", payload("issues.opened"), delivery_id="misrouted")
    item = msgspec.structs.replace(item, vshard=shard_of() ^ 1)
    assert await shard.ingest(batch(item)) == ["refused"]
    for vshard in (shard_of(), shard_of() ^ 1):
        assert await journal.read(stream_name(INSTALLATION), shard=vshard) == []


class Silent(InstallationActor):
    """The old code of an upgrade: no handler for what `Recorder` handles."""


async def test_a_delivery_another_version_judged_is_judged_again_by_this_shards_bot(
    journal: Journal,
) -> None:
    # During an upgrade an old ingress replica sends to the new shard: its bot (here
    # without handlers) said "complete at once"; the new shard's bot has handlers.
    shard = core(journal, Recorder, version="v2")
    await shard.start()
    old = inbound(Silent, "issues", payload("issues.opened"), delivery_id="d-old")
    assert old.completed
    stale = msgspec.structs.replace(old, version="v1")
    assert await shard.ingest(batch(stale)) == ["accepted"]
    await shard.wait_idle()
    assert Recorder.seen == [("opened", "d-old"), ("issues", "d-old")]
    # From the shard's own version, what it was sent is taken as it is.
    same = msgspec.structs.replace(old, version="v2", received=_renamed(old, "d-same"))
    assert await shard.ingest(batch(same)) == ["accepted"]
    await shard.wait_idle()
    assert [guid for _, guid in Recorder.seen].count("d-same") == 0


class ByInstallation(InstallationActor):
    """Old code that ordered every delivery of an installation as one."""

    ordering = "installation"


async def test_another_versions_ordering_key_is_taken_again_from_this_shards_bot(
    journal: Journal,
) -> None:
    shard = core(journal, Recorder, version="v2")  # Recorder orders by issue
    await shard.start()
    old = inbound(ByInstallation, "issues", payload("issues.opened"), delivery_id="d-key")
    assert old.received.key == ""
    assert await shard.ingest(batch(msgspec.structs.replace(old, version="v1"))) == ["accepted"]
    await shard.wait_idle()
    records = await journal.read(stream_name(INSTALLATION), shard=shard_of())
    [received] = [decode_runtime(r.type, r.data) for r in records if r.type == "DeliveryReceived"]
    assert isinstance(received, DeliveryReceived) and received.key == "186853002#1"  # repo#issue


def _renamed(item: Any, delivery_id: str) -> Any:
    return msgspec.structs.replace(item.received, delivery_id=delivery_id)


async def test_a_draining_shard_answers_draining_and_writes_nothing(journal: Journal) -> None:
    shard = core(journal, Recorder)
    await shard.start()
    await shard.drain()
    item = inbound(Recorder, "issues", payload("issues.opened"), delivery_id="d-late")
    assert await shard.ingest(batch(item)) == ["draining"]  # held, then 503, at the ingress
    assert await types_in(journal) == []


async def test_a_deployments_failure_lines_say_the_errors_type_alone(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """`ghbot dev` and the harness log a handler's failures with the traceback; a
    deployment's shard (a `ShardCore` as the Ray runtime builds it) keeps one line
    with the error's type: its message may hold payload data. (That the Ray runtime
    builds its `ShardCore` so: `tests/runtime/test_shard_actor.py`.)"""
    shard = core(journal, Clones)
    await shard.start()
    with caplog.at_level(logging.INFO, logger="ghbot.installation"):
        await shard.ingest(batch(inbound(Clones, "issues", payload("issues.opened"))))
        await shard.wait_idle()
    lines = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().rsplit(": ", 1)[-1] for r in lines] == ["RuntimeError"] * 2
    assert not any(r.exc_info for r in lines)
