"""Test a bot in-process: its deliveries through ghbot's runtime, without Ray.

```python
from actors.testing import BotHarness

async def test_welcome() -> None:
    async with BotHarness(Greeter) as bot:
        done = await bot.deliver("issues.opened", issue__number=3)
        [comment] = done.requests_to("/repos/Codertocat/Hello-World/issues/3/comments")
        assert "Thanks" in comment.json["body"]
        assert done.domain_events == [Greeted(repository="Codertocat/Hello-World", number=3)]
```

A harness runs the same code as a deployment's shard actor, only not in an actor: the
installation host (ordering, retries, dead letters, domain events and state), a
SQLite journal in a temporary directory, and the real GitHub client (tokens, budgets,
breaker, retries) against a `FakeGitHub`, a real HTTP server on 127.0.0.1 that records
every request. `deliver` journals a delivery as the ingress would after checking its
signature, then waits until every handler is done.

Payloads come from GitHub's examples that ship with ghbot (`deliver("issues.opened")`,
fields changed with `issue__number=3`, see `ghbot.testing.example_payload`), from a
`dict`, from `bytes`, or from a JSON file (a `Path`). The harness installs the app on
its repository (`Codertocat/Hello-World`, the examples', and installation 1 unless
told); an example is made about that repository (its `repository` and the URLs naming
it) unless the delivery names its repository itself (`repository__full_name`,
`repository__name`, `repository__owner__login`). It creates the issue or pull
request a delivery is about when the fake lacks it, as the payload describes it, and
updates one it made when a later delivery describes it (unless the bot changed it
since), so the bot's calls about it find it and read what the delivery said.

Time: nothing waits. The harness's `clock` (a `FakeClock`) is the time of the
runtime, the GitHub client and the fake GitHub it starts: a handler's retry backoff,
write pacing (on, one second, as in a deployment), a rate limit's `retry-after`, an
open circuit breaker and token expiry each advance it instead of sleeping, and each
wait is recorded in `clock.sleeps`.
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import msgspec

from actors.bot import InstallationActor
from actors.codecs import Codecs
from actors.local import LocalShard
from actors.runtime_events import DOMAIN_PREFIX, stream_name
from actors.schedule import SCHEDULE_EVENT
from actors.shard import ShardCore
from actors.wire import encode_batch, to_inbound, vshard_of
from ghbot.client import close_pool
from ghbot.config import Settings
from ghbot.errors import UsageError
from ghbot.events import Envelope
from ghbot.journal import Journal, open_journal
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeClock, FakeGitHub, RecordedRequest, app_key_pair
from ghbot.testing.payloads import change, example_payload
from ghbot.testing.state import Repo
from ghbot.testing.subjects import seed_issue, seed_pull, seeded
from ghbot.webhooks import parse_delivery, sign

__all__ = ["BotHarness", "Delivered"]

VSHARDS = 1
APP_ID = 1
REPOSITORY = "Codertocat/Hello-World"
SECRET = "harness"  # noqa: S105 - the webhook secret of a test harness, not a real one


@dataclass
class Delivered:
    """What one delivery did: its journal status, its requests, its outcomes."""

    delivery_id: str
    #: "accepted", or "duplicate" for a GUID the journal holds already.
    status: str
    #: The requests the bot sent GitHub while handling it, in order (token exchanges
    #: are left out), of those the fake still holds (its last `max_recorded`).
    requests: list[RecordedRequest] = field(default_factory=list)
    #: The domain events its handlers emitted, decoded.
    domain_events: list[msgspec.Struct] = field(default_factory=list)
    #: Its dead letters: `{"handler", "attempts", "error_type", "error", ...}` each.
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Return the requests to `path` (exact), of `method` if given."""
        return [
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        ]


class BotHarness:
    """One bot class, run in-process against a fake GitHub; an async context manager."""

    def __init__(
        self,
        bot: type[InstallationActor],
        *,
        installation_id: int = 1,
        repository: str = REPOSITORY,
        fake: FakeGitHub | None = None,
        private_key: bytes | None = None,
        retry: RetryPolicy | None = None,
        pace_writes: float | None = 1.0,
    ) -> None:
        if not (isinstance(bot, type) and issubclass(bot, InstallationActor)):
            raise UsageError(f"{bot!r} is not an InstallationActor subclass")
        if "/" not in repository:
            raise UsageError(f"repository {repository!r} is not OWNER/NAME")
        if fake is not None and private_key is None:
            raise UsageError(
                "a harness on a given fake needs the app's private_key (the fake holds "
                "only the public one): BotHarness(..., fake=h.fake, private_key=h.private_key)"
            )
        self.bot = bot
        self.installation_id = installation_id
        self.repository = repository
        # One time for the runtime, the client and the fake: a harness on another's fake
        # shares that harness's clock.
        shared = getattr(fake, "clock", None)
        self.clock = shared if isinstance(shared, FakeClock) else FakeClock()
        #: The app's private key (PKCS#8 PEM) the harness signs its JWTs with.
        self.private_key = private_key or b""
        self._fake = fake
        self._own_fake = fake is None
        self._retry = retry or RetryPolicy(max_retries=bot.max_attempts)
        self._pace_writes = pace_writes
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._journal: Journal | None = None
        #: Placeholders: the issues `deliver` made to reach a delivery's number that no
        #: delivery has described since, by repository.
        self._fillers: dict[str, set[int]] = {}
        #: The issues and pull requests `deliver` described, by repository and number:
        #: what it set (`subjects.seeded`), to tell whether the bot changed them since.
        self._described: dict[str, dict[int, dict[str, Any]]] = {}
        self._shard: ShardCore | None = None
        self._local: LocalShard | None = None

    @property
    def fake(self) -> FakeGitHub:
        """The fake GitHub the bot talks to (its requests, its store, its faults)."""
        if self._fake is None:
            raise UsageError("the harness is not started: use `async with BotHarness(...)`")
        return self._fake

    @property
    def shard(self) -> ShardCore:
        if self._shard is None:
            raise UsageError("the harness is not started: use `async with BotHarness(...)`")
        return self._shard

    async def __aenter__(self) -> BotHarness:
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise

    async def _start(self) -> BotHarness:
        if self._fake is None:
            self.private_key, public = app_key_pair()
            self._fake = await FakeGitHub(
                app_id=APP_ID, public_key_pem=public, clock=self.clock
            ).start()
        fake = self._fake
        owner, _, name = self.repository.partition("/")
        if fake.store.repo(owner, name) is None:
            fake.add_installation(self.installation_id, owner, [name])
        self._tmp = tempfile.TemporaryDirectory(prefix="ghbot-harness-")
        settings = Settings(
            app_id=fake.app_id,
            private_key=self.private_key,
            webhook_secrets=(SECRET,),
            api_url=fake.url,
            journal_url=f"sqlite://{self._tmp.name}/journal",
        )
        self._journal = await open_journal(settings.journal_url, shard_count=VSHARDS)
        self._local = LocalShard(
            self.bot,
            settings,
            self._journal,
            vshards=VSHARDS,
            pace_writes=self._pace_writes,
            retry=self._retry,
            clock=self.clock,
            sleep=self.clock.sleep,
            schedule=False,  # `advance` drives the @every handlers, on the harness clock
            tracebacks=True,  # a handler's failure is logged with where it failed
        )
        self._shard = self._local.shard
        await self._local.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._local is not None:
                await self._local.close()
            if self._journal is not None:
                await self._journal.close()
            if self._own_fake and self._fake is not None:
                await self._fake.stop()
            await close_pool()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()

    async def deliver(
        self,
        event: str,
        payload: Mapping[str, Any] | bytes | Path | None = None,
        *,
        delivery_id: str | None = None,
        **changes: Any,
    ) -> Delivered:
        """Journal a delivery of `event` and return once every handler is done.

        `event` is the `X-GitHub-Event` header (`"issues"`) or, to use the shipped
        example, the event and action (`"issues.opened"`). `changes` edit the payload
        (`issue__number=3`). Raises `UsageError` for a payload that is not a JSON
        object or an example that does not exist.
        """
        name = event.partition(".")[0]
        data = self._payload(event, payload)
        if payload is None and not _IDENTITY.intersection(changes):
            _move_example(data, self.repository)
        for dotted, value in changes.items():
            change(data, dotted, value)
        body = json.dumps(data).encode()
        guid = delivery_id or str(uuid.uuid4())
        # Signed and checked as the ingress checks it: a body it would refuse fails here.
        headers = {
            "content-type": "application/json",
            "x-github-event": name,
            "x-github-delivery": guid,
            "x-hub-signature-256": sign(body, SECRET),
            "x-github-hook-installation-target-type": "integration",
            "x-github-hook-installation-target-id": str(self.fake.app_id),
        }
        delivery = parse_delivery(headers, body, (SECRET,))
        self._check_known(delivery.envelope)
        self._ensure_subject(delivery.envelope.number, data)
        inbound = to_inbound(self.bot, delivery, VSHARDS, received_at=self.clock())
        installation_id = inbound.installation_id
        seen = self.fake.recorded
        stream, vshard = stream_name(installation_id), vshard_of(installation_id, VSHARDS)
        journal = self._journal
        assert journal is not None
        first = (await journal.last_seq(stream, shard=vshard)) + 1
        [status] = await self.shard.ingest(encode_batch([inbound]))
        await self.shard.wait_idle()
        self._raise_evolve_failure()
        self._raise_not_activated(installation_id)
        requests = [r for r in self.fake.requests_since(seen) if "/access_tokens" not in r.path]
        return Delivered(
            delivery_id=guid,
            status=status,
            requests=requests,
            domain_events=await self._domain_events(stream, vshard, first),
            dead_letters=[
                d for d in await self.shard.dead_letters() if d.get("delivery_id") == guid
            ],
        )

    async def advance(self, seconds: float) -> Delivered:
        """Move the clock on by `seconds` and run the `@every` handlers that came due.

        An installation is scheduled once it has had a delivery (in a deployment,
        `installation.created` is its first). Returns what the runs did, together.
        """
        start = self.fake.recorded
        before = {(d["delivery_id"], d["handler"]) for d in await self.shard.dead_letters()}
        await self.shard.schedule_due()  # a first look only notes the current slots
        self.clock.advance(seconds)
        runs = await self.shard.schedule_due()
        await self.shard.wait_idle()
        self._raise_evolve_failure()
        self._raise_not_activated(self.installation_id)
        requests = [r for r in self.fake.requests_since(start) if "/access_tokens" not in r.path]
        dead = [
            d
            for d in await self.shard.dead_letters()
            if d["event"] == SCHEDULE_EVENT and (d["delivery_id"], d["handler"]) not in before
        ]
        return Delivered(
            delivery_id="",
            status=f"{runs} run(s)",
            requests=requests,
            dead_letters=dead,
        )

    async def state(self, installation_id: int | None = None) -> Any:
        """Return the bot's state (the fold of its domain events) for the installation."""
        host = await self.shard.host(installation_id or self.installation_id)
        return host.bot.state

    def _raise_evolve_failure(self) -> None:
        """Raise `UsageError` for the bot's `evolve` having raised on a domain event a
        handler emitted: the event is journaled, the state lacks it, and an
        installation whose events `evolve` cannot fold is not activated again. (A
        handler that raised is a dead letter; this is not a handler's failure.)"""
        failed = [
            (host.installation_id, error)
            for host in self.shard.hosts.values()
            if (error := host.take_evolve_error()) is not None
        ]
        if not failed:
            return
        which = ", ".join(f"{type(e).__name__} ({e}) for installation {i}" for i, e in failed)
        raise UsageError(
            f"{self.bot.__name__}.evolve raised {which} on a domain event a handler "
            "emitted: the event is journaled but not in the state, and the installation "
            "will not be activated again until evolve folds it (its deliveries stay pending)"
        ) from failed[0][1]

    def _raise_not_activated(self, installation_id: int) -> None:
        """Raise `UsageError` when the installation could not be activated (its
        journal's events do not fold or decode with this code): what was delivered is
        journaled and pending, and nothing of it ran."""
        if self.shard.activation_failed(installation_id):
            raise UsageError(
                f"installation {installation_id} could not be activated: its journal holds "
                "what this code cannot fold or read back (the ERROR line logged for it "
                "says what); the delivery is journaled and pending, and did not run"
            )

    def _payload(
        self, event: str, payload: Mapping[str, Any] | bytes | Path | None
    ) -> dict[str, Any]:
        if payload is None:
            return example_payload(event, installation=self.installation_id)
        if isinstance(payload, Path):
            payload = payload.read_bytes()
        if isinstance(payload, bytes):
            try:
                payload = json.loads(payload)
            except ValueError as exc:
                raise UsageError(f"the payload is not JSON: {exc}") from None
        if not isinstance(payload, Mapping):
            raise UsageError("a webhook payload is a JSON object")
        return dict(payload)

    def _check_known(self, envelope: Envelope) -> None:
        """Raise `UsageError` for a payload of an installation or repository the fake
        lacks (a saved delivery): its token exchange and API calls would answer 404,
        and the handlers be dead-lettered for it."""
        installation, repository = envelope.installation_id, envelope.repository
        where = f"installation_id={installation}"
        if repository is not None:
            where += f", repository={repository.full_name!r}"
        fix = f"pass BotHarness({self.bot.__name__}, {where}) to install the app there"
        if installation is not None and installation not in self.fake.store.installations:
            raise UsageError(
                f"the payload is installation {installation}, not the harness's: {fix}"
            )
        if repository is not None and installation == self.installation_id:
            owner, _, name = repository.full_name.partition("/")
            if self.fake.store.repo(owner, name) is None:
                mine, _, named = self.repository.partition("/")
                raise UsageError(
                    f"the payload is repository {repository.full_name!r}, which the "
                    "harness's installation does not have: set the payload's repository "
                    f"(repository__full_name={self.repository!r}, repository__name={named!r}, "
                    f"repository__owner__login={mine!r}) or the harness's "
                    f"(BotHarness({self.bot.__name__}, repository={repository.full_name!r}))"
                )

    def _ensure_subject(self, number: int | None, data: Mapping[str, Any]) -> None:
        """Make issue (or pull request) `number` what the payload describes: create it
        if the fake lacks it, with placeholder issues below it to reach its number, or
        update one the harness made (a placeholder, or described by an earlier
        delivery) unless the bot has changed it since. The test's own is left."""
        repository = data.get("repository")
        if number is None or not isinstance(repository, Mapping):
            return
        owner, _, name = str(repository.get("full_name", "")).partition("/")
        store = self.fake.store
        repo = store.repo(owner, name)
        if repo is None:
            return
        fillers = self._fillers.setdefault(repo.full_name, set())
        described = self._described.setdefault(repo.full_name, {})
        if number in described:
            if described[number] != seeded(store, repo, number):
                return  # the bot changed it: its change stands
        elif number in repo.issues and number not in fillers:
            return  # the test's own
        while repo.next_number <= number:
            fillers.add(repo.next_number)
            self.fake.add_issue(f"{owner}/{name}", f"issue {repo.next_number}")
        fillers.discard(number)
        self._describe(repo, repo.issues[number], data)
        described[number] = seeded(store, repo, number)

    def _describe(self, repo: Repo, made: dict[str, Any], data: Mapping[str, Any]) -> None:
        """Set `made` from the payload's `issue` or `pull_request`."""
        store = self.fake.store
        issue, pull = data.get("issue"), data.get("pull_request")
        described = issue if isinstance(issue, Mapping) else pull
        if isinstance(described, Mapping):
            seed_issue(store, repo, made, described)
        # A pull request's own events carry `pull_request`; an `issue_comment` on one
        # carries an `issue` whose `pull_request` says so.
        is_pull = isinstance(pull, Mapping) or (
            isinstance(issue, Mapping) and isinstance(issue.get("pull_request"), Mapping)
        )
        if not is_pull:
            return
        found = store.pull(repo, made["number"]) or store.pull_of(repo, made)
        if isinstance(pull, Mapping):
            seed_pull(repo, found, pull)

    async def _domain_events(self, stream: str, vshard: int, first: int) -> list[msgspec.Struct]:
        journal = self._journal
        assert journal is not None
        decoders = Codecs.of(self.bot).domain
        found: list[msgspec.Struct] = []
        for record in await journal.read(stream, first, shard=vshard):
            if record.type.startswith(DOMAIN_PREFIX):
                decoder = decoders.get(record.type[len(DOMAIN_PREFIX) :])
                if decoder is not None:
                    found.append(decoder.decode(record.data))
        return found


#: The changes of a delivery that say which repository it is about: an example given
#: one is not moved to the harness's (`_move_example`); `repository__private=True` is.
_IDENTITY: Final = frozenset(
    {"repository__full_name", "repository__name", "repository__owner__login"}
)


def _move_example(data: dict[str, Any], repository: str) -> None:
    """Make a shipped example (about `Codertocat/Hello-World`, mostly) be about `repository`.

    Its repository objects (`repository`, and a pull request's `base.repo` and `head.repo`
    when they are the same) take the name, full name and owner's login of `repository`,
    and the URLs naming the example's repository name `repository` instead. A payload
    without a repository is left as it is.
    """
    found = data.get("repository")
    old = found.get("full_name") if isinstance(found, dict) else None
    if not isinstance(old, str) or old == repository:
        return
    owner, _, name = repository.partition("/")
    # The old full name in a URL (`/repos/OLD/issues/1`, `github.com:OLD.git`), whole.
    in_url = re.compile(rf"(?<=[/:]){re.escape(old)}(?=[/.{{?]|$)")

    def move(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("full_name") == old:
                node["full_name"], node["name"] = repository, name
                if isinstance(node.get("owner"), dict):
                    node["owner"]["login"] = owner
            elif node.get("name") == old:  # a `status` payload names its repository so
                node["name"] = repository
            for key, value in node.items():
                node[key] = move(value)
        elif isinstance(node, list):
            return [move(value) for value in node]
        elif isinstance(node, str):
            return in_url.sub(repository, node)
        return node

    move(data)
