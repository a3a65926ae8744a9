"""Scheduled handlers: `@every("1h")` runs a handler for each installation, spread out.

```python
class Stale(InstallationActor):
    @every("1d")
    async def sweep(self, event: Event) -> None:   # once a day per installation
        ...
```

The shard that owns an installation's journal stream schedules it, so each run happens
once for the whole cluster. A run is a delivery like any other, journaled before it
runs, retried, ordered and dead-lettered the same way: its event is `ghbot_schedule`
(no GitHub event has that name; one sent to the ingress with it runs nothing), its
action the handler's name, and its GUID is `schedule:<handler>:<installation>:<slot>`,
so the journal keeps one run per slot even when two shards race through a handover.

Spread: an installation's runs are offset within the interval by a hash of its ID and
the handler's name, so a thousand installations of a `@every("1h")` handler run at a
thousand moments of the hour, not at the top of it. A shard that starts (or first
sees an installation) waits for the next boundary; a run due while no shard was up is
skipped, not made up. The installations scheduled are those with a journal stream,
that is every installation that ever sent a delivery (`installation.created` included),
but for those whose `installation.deleted` or `suspend` the shard journaled since it
started, and those whose token GitHub refused to a run because the App is not installed
there or the installation is suspended (`InstallationUnavailable`): such a run ends
without a dead letter. `created` and `unsuspend` put them back. So a shard started after
an installation was removed (a restart, an upgrade) runs it once more, which ends so.
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

import msgspec

from ghbot.config import parse_duration
from ghbot.errors import UsageError

__all__ = [
    "SCHEDULE_EVENT",
    "check_handler",
    "every",
    "interval_of",
    "run_body",
    "run_guid",
    "slot_of",
    "tick_of",
]

#: The event name of a scheduled run (GitHub sends no event of that name).
SCHEDULE_EVENT: Final = "ghbot_schedule"
_EVERY: Final = "__ghbot_every__"
#: The shortest interval: a run costs a journal write and usually GitHub requests.
MIN_INTERVAL: Final = 1.0

H = TypeVar("H", bound=Callable[..., Any])


def every(interval: str | float) -> Callable[[H], H]:
    """Run the decorated handler for each installation every `interval` (`"1h"`, `"1d"`,
    90).

    Raises `UsageError` for an interval that is not a duration of at least a second.
    """
    try:
        seconds = parse_duration(interval) if isinstance(interval, str) else float(interval)
    except (ValueError, TypeError):
        raise UsageError(f"@every({interval!r}): expected seconds or 30s, 15m, 1h, 1d") from None
    if not seconds >= MIN_INTERVAL or seconds == float("inf"):
        raise UsageError(f"@every({interval!r}): the interval must be at least 1 s")

    def mark(handler: H) -> H:
        check_handler(handler, "@every(...)")
        setattr(handler, _EVERY, seconds)
        return handler

    return mark


def check_handler(handler: Any, decorator: str) -> None:
    """Raise `UsageError` unless `handler` is an `async def` taking (self, event)."""
    name = getattr(handler, "__name__", repr(handler))
    is_async: bool = inspect.iscoroutinefunction(handler)  # a bool: no narrowing
    if not is_async:
        # Called and awaited, a plain function fails after its side effects, and its
        # retries repeat them.
        raise UsageError(f"{decorator} handler {name} must be an async def")
    try:
        inspect.signature(handler).bind(None, None)
    except TypeError:
        # Else it fails on every delivery, retried, then dead-lettered.
        raise UsageError(f"{decorator} handler {name} must take (self, event)") from None


def interval_of(handler: Any) -> float | None:
    """Return the `@every` interval of a handler, or None."""
    value = getattr(handler, _EVERY, None)
    return float(value) if value is not None else None


def tick_of(intervals: Iterable[float]) -> float:
    """Return the seconds between a shard's looks for runs due, for a bot whose `@every`
    handlers have `intervals` (at least one): a quarter of the shortest, at least half
    a second and at most a minute."""
    return min(60.0, max(0.5, min(intervals) / 4))


def slot_of(installation_id: int, handler: str, interval: float, now: float) -> int:
    """Return the run slot `now` falls in, for this installation and handler.

    Slots are `interval` long and offset per installation and handler (a stable hash),
    so the boundaries of different installations fall at different moments.
    """
    offset = zlib.crc32(f"{installation_id}:{handler}".encode()) % max(int(interval), 1)
    return int((now - offset) // interval)


def run_guid(handler: str, installation_id: int, slot: int) -> str:
    return f"schedule:{handler}:{installation_id}:{slot}"


def run_body(handler: str, installation_id: int, interval: float, slot: int) -> bytes:
    """Return the body of a scheduled run: its handler's `event.raw`.

    (`event.payload` is an `UnknownPayload`: the handler's name as its action, and the
    installation.)
    """
    return msgspec.json.encode(
        {
            "action": handler,
            "installation": {"id": installation_id},
            "schedule": {"handler": handler, "every": interval, "slot": slot},
        }
    )
