"""What a bot author writes: an `InstallationActor` subclass with `@on(...)` handlers.

```python
class Greeter(InstallationActor):
    @on("issues.opened")
    async def welcome(self, event):
        await self.github.request("POST", f"/repos/{event.repository.full_name}/issues/"
                                  f"{event.payload.issue.number}/comments", json={"body": "Hi!"})
```

Event names are checked when the class is defined: `@on("issues.opend")` raises
`UnknownEventError` with a suggestion. One instance lives per installation, inside a shard
actor; it is activated on its first delivery and rebuilt from the journal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, ClassVar, Literal, TypeVar

import msgspec

from ghbot.errors import UsageError
from ghbot.events import Envelope, Event, check_name

__all__ = ["Handler", "InstallationActor", "Ordering", "on", "ordering_key"]

Handler = Callable[[Any, Event], Awaitable[None]]
H = TypeVar("H", bound=Callable[..., Awaitable[None]])
Ordering = Literal["issue", "repository", "installation"] | Callable[[str, Envelope], str]

_MARK = "__ghbot_events__"
# Domain events emitted by the handler running in this task (handlers of one
# installation run concurrently for different ordering keys).
_emitted: ContextVar[list[msgspec.Struct] | None] = ContextVar("ghbot_emitted", default=None)


def on(*names: str) -> Callable[[H], H]:
    """Register the decorated coroutine method for one or more event names.

    A name is `"*"` (every event), an event (`"issues"`) or an event and action
    (`"issues.opened"`). Raises `UnknownEventError` at once for a name GitHub never
    sends, and `UsageError` when no name is given.
    """
    if not names:
        raise UsageError("@on() needs at least one event name, such as 'issues.opened'")
    for name in names:
        check_name(name)

    def mark(handler: H) -> H:
        setattr(handler, _MARK, (*getattr(handler, _MARK, ()), *names))
        return handler

    return mark


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
    """

    ordering: ClassVar[Ordering] = "issue"
    max_concurrency: ClassVar[int] = 16
    max_attempts: ClassVar[int] = 3
    domain_events: ClassVar[tuple[type[msgspec.Struct], ...]] = ()
    state_type: ClassVar[Any] = Any
    snapshot_every: ClassVar[int] = 200

    _routes: ClassVar[dict[str, tuple[str, ...]]] = {}

    # Set by the runtime before any handler runs.
    installation_id: int
    github: Any
    quota: Any
    state: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        routes: dict[str, list[str]] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for name in getattr(value, _MARK, ()):
                    methods = routes.setdefault(name, [])
                    if attr not in methods:
                        methods.append(attr)
        cls._routes = {name: tuple(methods) for name, methods in routes.items()}
        if cls.max_attempts < 1 or cls.max_concurrency < 1:
            raise UsageError(f"{cls.__name__}: max_attempts and max_concurrency must be ≥ 1")

    def __init__(self) -> None:
        self.state = self.initial_state()

    # --- hooks a bot may override -------------------------------------------------

    def initial_state(self) -> Any:
        """Return the state before any domain event (None unless overridden)."""
        return None

    def evolve(self, state: Any, event: msgspec.Struct) -> Any:
        """Return the state after `event`; must be pure. The default keeps `state`."""
        return state

    async def on_error(
        self, event: Event, handler: str, error: BaseException, attempt: int
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
    def handlers_for(cls, qualified_name: str, name: str) -> tuple[str, ...]:
        """Return the handler method names for an event, most specific first."""
        found: list[str] = []
        for key in (qualified_name, name, "*"):
            for method in cls._routes.get(key, ()):
                if method not in found:
                    found.append(method)
        return tuple(found)

    async def run_handler(self, method: str, event: Event) -> list[msgspec.Struct]:
        """Run one handler and return the domain events it emitted (dropped if it raised)."""
        emitted: list[msgspec.Struct] = []
        token = _emitted.set(emitted)
        try:
            await getattr(self, method)(event)
        finally:
            _emitted.reset(token)
        return emitted


def ordering_key(ordering: Ordering, event_name: str, envelope: Envelope) -> str:
    """Return the key under which a delivery is ordered (see `InstallationActor.ordering`)."""
    if callable(ordering):
        return ordering(event_name, envelope)
    if ordering == "installation" or envelope.repository is None:
        return ""
    repo = str(envelope.repository.id)
    if ordering == "repository" or envelope.number is None:
        return repo
    return f"{repo}#{envelope.number}"
