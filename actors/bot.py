"""What a bot author writes: an `InstallationActor` subclass with `@on(...)` handlers.

```python
class Greeter(InstallationActor):
    permissions = {"issues": "write"}  # `ghbot register` asks for it: the handler comments

    @on("issues.opened")
    async def welcome(self, event: Event[IssuesOpened]) -> None:
        # typed: `IssuesOpened.issue` is an `Issue`; `event.issue()` is its owner,
        # repo and issue_number, as the REST methods take them
        await self.github.rest.issues.create_comment(**event.issue(), body="Hi!")
```

Event names are checked when the class is defined: `@on("issues.opend")` raises
`UnknownEventError` with a suggestion, and a handler annotated `Event[PullRequestOpened]`
under `@on("issues.opened")`, a plain `def`, one that does not take `(self, event)` or
one named as what the runtime uses (`state`, `github`, `config`, `emit`, ...: every
name `InstallationActor` defines or the runtime sets on an instance) raises
`UsageError`. One instance lives per installation,
inside a shard actor; it is activated on its first delivery and rebuilt from the journal.

Deliveries whose sender is this app's own bot user (`Event.is_from_this_app`) reach only
handlers registered with `include_own=True`, so a bot that comments on
`issue_comment.created` cannot answer itself in a loop by default.
"""

from __future__ import annotations

import logging
import time
import typing
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from types import UnionType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, overload

import msgspec

from actors.schedule import SCHEDULE_EVENT, check_handler, interval_of
from ghbot.errors import UsageError
from ghbot.events import Envelope, Event, check_name
from ghbot.logs import LogLimiter

if TYPE_CHECKING:
    from actors.quota import Quota
    from ghbot.client.github_client import GitHub

__all__ = [
    "Handler",
    "InstallationActor",
    "Ordering",
    "UnknownEventWarning",
    "on",
    "ordering_key",
]

Handler = Callable[[Any, Event[Any]], Awaitable[None]]
H = TypeVar("H", bound=Callable[..., Awaitable[None]])
Ordering = Literal["issue", "repository", "installation"] | Callable[[str, Envelope], str]

_MARK = "__ghbot_events__"
_OWN = "__ghbot_include_own__"
# Domain events emitted by the handler running in this task (handlers of one
# installation run concurrently for different ordering keys).
_emitted: ContextVar[list[msgspec.Struct] | None] = ContextVar("ghbot_emitted", default=None)
#: The event the running handler was given (for `InstallationActor.config`).
_handled: ContextVar[Event[Any] | None] = ContextVar("ghbot_handled", default=None)
T = TypeVar("T")

log = logging.getLogger("ghbot.bot")
#: Lines about a broken `ordering` function: one a minute.
_ORDERING_LOGGED = LogLimiter(burst=1, per=60.0)


class UnknownEventWarning(UserWarning):
    """`@on(name, strict=False)` named an event or action the models do not know."""


def on(*names: str, strict: bool = True, include_own: bool = False) -> Callable[[H], H]:
    """Register the decorated coroutine method for one or more event names.

    A name is `"*"` (every event), an event (`"issues"`) or an event and action
    (`"issues.opened"`). Raises `UnknownEventError` at once for a name the models do
    not know, and `UsageError` when no name is given. With `strict=False`, an unknown
    name (an event or action GitHub added after the models were generated) is
    registered with an `UnknownEventWarning`; its deliveries arrive as
    `Event[UnknownPayload]`. Deliveries sent by this app's own bot user reach the
    handler only with `include_own=True`.

    The handler's event annotation is checked when its class is defined (see
    `InstallationActor`).
    """
    if not names or not all(isinstance(name, str) for name in names):
        # `@on` bare, or a list: the handler or the list arrives as the name.
        raise UsageError(
            "@on(...) takes event names as strings, at least one: @on('issues.opened')"
        )
    for name in names:
        if not check_name(name, strict=strict):
            message = f"@on({name!r}): the models do not know this name; its deliveries "
            message += "arrive as Event[UnknownPayload] (regenerate the models to type them)"
            warnings.warn(message, UnknownEventWarning, stacklevel=2)

    def mark(handler: H) -> H:
        check_handler(handler, "@on(...)")
        setattr(handler, _MARK, (*getattr(handler, _MARK, ()), *names))
        if include_own:
            setattr(handler, _OWN, True)
        return handler

    return mark


def _payload_types(name: str) -> tuple[type, ...] | None:
    """Return the payload structs a handler of `name` may receive (None: any)."""
    from ghbot.models import ACTION_TYPES, KNOWN_EVENTS, PAYLOAD_TYPES, UnknownPayload

    if name == "*":
        return None
    event, _, action = name.partition(".")
    if action and event in KNOWN_EVENTS and name in ACTION_TYPES:
        return (ACTION_TYPES[name],)
    if action and event in PAYLOAD_TYPES and not KNOWN_EVENTS[event]:
        return _members(PAYLOAD_TYPES[event])  # an open action (`repository_dispatch.x`)
    if not action and event in PAYLOAD_TYPES:
        return _members(PAYLOAD_TYPES[event])
    return (UnknownPayload,)


def _members(kind: Any) -> tuple[type, ...]:
    """Return the types of a union (`A | B`), or `(kind,)`."""
    if isinstance(kind, UnionType) or typing.get_origin(kind) is typing.Union:
        return tuple(m for m in typing.get_args(kind) if m is not type(None))
    return (kind,)


def _accepted(handler: Callable[..., Any]) -> tuple[type, ...] | None:
    """Return the payload types a handler's `Event[...]` annotation accepts (None: any).

    An annotation that cannot be resolved now (a name imported under `TYPE_CHECKING`,
    a class local to a function) is not checked: None.
    """
    from ghbot.models import Model

    try:
        hints = typing.get_type_hints(handler)
    except Exception:  # NameError and friends: the annotation names what is not there
        return None
    params = [p for p in hints if p != "return"]
    hint = hints[params[0]] if params else None
    if typing.get_origin(hint) is not Event:
        return None  # a bare `Event`, or no annotation
    (arg,) = typing.get_args(hint)
    if arg is Any or arg is Model:
        return None
    return _members(arg)


def _check_handler(owner: str, attr: str, handler: Callable[..., Any]) -> bool:
    """Check a handler's annotation against its names; return whether it takes unknowns.

    Raises `UsageError` when a name may deliver a payload type the annotation lacks.
    """
    from ghbot.models import UnknownPayload

    accepted = _accepted(handler)
    if accepted is None:
        return True
    for name in getattr(handler, _MARK, ()):
        expected = _payload_types(name)
        missing = [t for t in (expected or (object,)) if not _covered(t, accepted)]
        if missing:
            got = " | ".join(t.__name__ for t in accepted)
            need = " | ".join(t.__name__ for t in missing) if expected else "every payload"
            raise UsageError(
                f"{owner}.{attr}: @on({name!r}) delivers {need}, but the handler's event is "
                f"annotated Event[{got}]; annotate it with the payload types of its names "
                "(or a bare Event)"
            )
    return _covered(UnknownPayload, accepted)


def _covered(kind: type, accepted: Iterable[type]) -> bool:
    return any(isinstance(a, type) and issubclass(kind, a) for a in accepted)


class InstallationActor:
    """Base class of a bot: one instance per installation.

    Inside a handler: `self.github` (a client authenticated as this installation),
    `self.installation_id`, `self.state` (the fold of this installation's domain
    events), `self.emit(event)` (record a domain event; it is journaled with the
    handler's success, atomically, and then folded with `evolve`) and `self.quota`
    (leases of this installation's rate-limit budget for work fanned out elsewhere).

    Class settings a subclass may override:
    - `ordering`: deliveries with the same key run one at a time in journal order:
      `"issue"` (repository + issue/PR number, the default), `"repository"`,
      `"installation"`, or a function `(event_name, envelope) -> key`.
    - `max_concurrency`: different keys of one installation running at once.
    - `max_attempts`: tries of a failing handler before its delivery is dead-lettered.
    - `domain_events`: the `msgspec.Struct` types `emit` accepts (decoded on replay).
    - `state_type`: the type of `state`, for decoding snapshots.
    - `snapshot_every`: journal events between snapshots.
    - `permissions`: the App permissions the handlers need beyond reading what they
      subscribe to (`{"issues": "write"}`), for `ghbot register`'s manifest.
    """

    ordering: ClassVar[Ordering] = "issue"
    max_concurrency: ClassVar[int] = 16
    max_attempts: ClassVar[int] = 3
    domain_events: ClassVar[tuple[type[msgspec.Struct], ...]] = ()
    state_type: ClassVar[Any] = Any
    snapshot_every: ClassVar[int] = 200
    permissions: ClassVar[Mapping[str, str]] = {}

    _routes: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Handlers that take deliveries the models do not know, and this app's own ones.
    _takes_unknown: ClassVar[frozenset[str]] = frozenset()
    _takes_own: ClassVar[frozenset[str]] = frozenset()
    # `@every` handlers and their intervals in seconds.
    _schedules: ClassVar[dict[str, float]] = {}

    # Set by the runtime before any handler runs.
    installation_id: int
    github: GitHub
    quota: Quota
    state: Any
    _runtime_clock: Callable[[], float]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        routes: dict[str, list[str]] = {}
        unknown: set[str] = set()
        own: set[str] = set()
        schedules: dict[str, float] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                seconds = interval_of(value)
                if seconds is None and attr in schedules and callable(value):
                    # Overridden without @every: the subclass's method is not scheduled.
                    del schedules[attr]
                    routes.pop(f"{SCHEDULE_EVENT}.{attr}", None)
                    unknown.discard(attr)
                if seconds is not None or bool(getattr(value, _MARK, ())):
                    _check_name(cls.__name__, attr)
                if seconds is not None:
                    # A scheduled run's payload is the schedule's, not a model's.
                    if not _check_handler(cls.__name__, attr, value):
                        raise UsageError(
                            f"{cls.__name__}.{attr}: an @every handler gets the schedule's "
                            "payload, not a webhook's: annotate its event with a bare Event"
                        )
                    schedules[attr] = seconds
                    routes[f"{SCHEDULE_EVENT}.{attr}"] = [attr]
                    unknown.add(attr)
                if not getattr(value, _MARK, ()):
                    continue
                # A subclass's override decides for the name it takes over.
                if attr not in schedules:
                    unknown.discard(attr)
                own.discard(attr)
                if _check_handler(cls.__name__, attr, value):
                    unknown.add(attr)
                if getattr(value, _OWN, False):
                    own.add(attr)
                for name in getattr(value, _MARK, ()):
                    methods = routes.setdefault(name, [])
                    if attr not in methods:
                        methods.append(attr)
        cls._routes = {name: tuple(methods) for name, methods in routes.items()}
        cls._takes_unknown, cls._takes_own = frozenset(unknown), frozenset(own)
        cls._schedules = schedules
        counts = (cls.max_attempts, cls.max_concurrency)
        if not all(type(n) is int and n >= 1 for n in counts):
            raise UsageError(
                f"{cls.__name__}: max_attempts and max_concurrency must be whole numbers ≥ 1"
            )
        if not callable(cls.ordering) and cls.ordering not in (
            "issue",
            "repository",
            "installation",
        ):
            raise UsageError(
                f"{cls.__name__}.ordering={cls.ordering!r}: 'issue', 'repository', "
                "'installation' or a function of (event name, envelope)"
            )

    def __init__(self) -> None:
        self.state = self.initial_state()

    def now(self) -> float:
        """Return the time now, in epoch seconds, on the runtime's clock.

        In a deployment and under `ghbot dev` that is `time.time()`; under the test
        harness it is the harness's `FakeClock`, the fake GitHub's time too, so a
        handler that compares a timestamp GitHub gave (an issue's `updated_at`) with
        now sees `bot.advance(...)` move both.
        """
        clock = getattr(self, "_runtime_clock", None)
        return time.time() if clock is None else clock()

    # --- hooks a bot may override -------------------------------------------------

    def initial_state(self) -> Any:
        """Return the state before any domain event (None unless overridden)."""
        return None

    def evolve(self, state: Any, event: msgspec.Struct) -> Any:
        """Return the state after `event`; must be pure. The default keeps `state`."""
        return state

    async def on_error(
        self, event: Event[Any], handler: str, error: BaseException, attempt: int
    ) -> None:
        """Hear of a handler's failure (each attempt); the default does nothing more."""

    # --- used inside handlers -----------------------------------------------------

    def emit(self, event: msgspec.Struct) -> None:
        """Record a domain event; it is journaled if and when the handler succeeds.

        Raises `UsageError` for a type not listed in `domain_events`, or when called
        outside a handler.
        """
        if type(event) not in self.domain_events:
            raise UsageError(
                f"{type(self).__name__}.emit({type(event).__name__}): "
                "list the type in the class's domain_events"
            )
        emitted = _emitted.get()
        if emitted is None:
            raise UsageError("emit() is only for use inside a handler")
        emitted.append(event)

    # --- used by the runtime ------------------------------------------------------

    @classmethod
    def handlers_for(
        cls, qualified_name: str, name: str, *, known: bool = True, own: bool = False
    ) -> tuple[str, ...]:
        """Return the handler method names for an event, most specific first.

        `known=False` (the payload is `UnknownPayload`) keeps the handlers whose
        annotation takes it (a bare `Event`, `Event[Any]`, `Event[UnknownPayload]`);
        `own=True` (the sender is this app's bot user) keeps those registered with
        `include_own=True`.
        """
        found: list[str] = []
        if name == SCHEDULE_EVENT:  # a scheduled run is for its own handler alone
            return cls._routes.get(qualified_name, ())
        for key in (qualified_name, name, "*"):
            for method in cls._routes.get(key, ()):
                if method in found or (not known and method not in cls._takes_unknown):
                    continue
                if own and method not in cls._takes_own:
                    continue
                found.append(method)
        return tuple(found)

    async def run_handler(self, method: str, event: Event[Any]) -> list[msgspec.Struct]:
        """Run one handler and return the domain events it emitted (dropped if it raised)."""
        emitted: list[msgspec.Struct] = []
        token = _emitted.set(emitted)
        current = _handled.set(event)
        try:
            await getattr(self, method)(event)
        finally:
            _handled.reset(current)
            _emitted.reset(token)
        return emitted

    @overload
    async def config(self, path: str, *, schema: type[T], default: T) -> T: ...

    @overload
    async def config(self, path: str, *, schema: type[T]) -> T | None: ...

    async def config(self, path: str, *, schema: type[T], default: T | None = None) -> T | None:
        """Return `.github/<path>` of the delivery's repository, decoded into `schema`.

        Falls back to the owner's `.github` repository, follows one `_extends`, and
        returns `default` when neither has the file (see `actors.repo_config`). Raises
        `RepositoryConfigError` for a file that is not YAML or not of `schema`'s shape
        (a handler that lets it through is dead-lettered at once, and logged), and
        `UsageError` outside a handler or for a delivery without a repository.
        """
        from actors.repo_config import read_config

        event = _handled.get()
        if event is None or event.repository is None:
            raise UsageError(
                "self.config() reads the repository of the delivery being handled; "
                "call it in a handler of a delivery that has one"
            )
        where = event.repo()
        found = await read_config(self.github, where["owner"], where["repo"], path, schema)
        return default if found is None else found


def _check_name(owner: str, attr: str) -> None:
    """Refuse a handler named as what `InstallationActor` defines or the runtime sets.

    Such a handler would replace a base method (`emit`, `config`, a hook) or be
    replaced on every instance (`state` in `__init__`, `github`, `quota` and
    `installation_id` when the installation starts): every delivery would fail.
    """
    if attr in _RUNTIME_SET:
        raise UsageError(
            f"{owner}.{attr}: a handler may not be named {attr!r}: the runtime sets "
            f"self.{attr} on every instance, which would hide the handler; rename it"
        )
    if attr in _BASE_NAMES:
        raise UsageError(
            f"{owner}.{attr}: a handler may not be named {attr!r}: it would hide "
            f"InstallationActor.{attr}, which the runtime uses; rename it"
        )


#: What the runtime sets on each instance (declared on the class, not defined there).
_RUNTIME_SET: frozenset[str] = frozenset(InstallationActor.__annotations__) - set(
    vars(InstallationActor)
)
#: What `InstallationActor` (and `object`) define: methods, hooks and settings.
_BASE_NAMES: frozenset[str] = frozenset(dir(InstallationActor))


def ordering_key(ordering: Ordering, event_name: str, envelope: Envelope) -> str:
    """Return the key under which a delivery is ordered (see `InstallationActor.ordering`).

    An `ordering` function that raises or returns anything but a string is logged
    (at most once a minute) and the delivery is ordered as by default, under its
    issue's or pull request's key: it is taken, not refused, and runs in order with
    the deliveries given the same key (those of its issue the function failed for
    too, or keyed that way). Keys order only deliveries of the same key.
    """
    if callable(ordering):
        key: object
        try:
            key = ordering(event_name, envelope)
        except Exception as exc:
            key = exc
        if isinstance(key, str):
            return key
        held = _ORDERING_LOGGED.allow("ordering")
        if held is not None:
            kind = type(key).__name__
            did = "raised" if isinstance(key, Exception) else "returned"
            log.warning(
                "the bot's ordering function %s %s for %s%s: ordered by its issue, as by "
                "default (%d such lines held back)",
                did,
                kind,
                event_name,
                "" if isinstance(key, Exception) else ", not a string",
                held,
            )
        return ordering_key("issue", event_name, envelope)
    if ordering == "installation" or envelope.repository is None:
        return ""
    repo = str(envelope.repository.id)
    if ordering == "repository" or envelope.number is None:
        return repo
    return f"{repo}#{envelope.number}"
