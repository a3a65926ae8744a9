"""Example webhook payloads that ship with ghbot, for tests of bots.

```python
from ghbot.testing import example_payload

body = example_payload("issues.opened", issue__number=7, repository__full_name="o/r")
```

The payloads are GitHub's own (`@octokit/webhooks-examples`, MIT), one per event and
action, in `ghbot/testing/examples/`. Most come from repository webhooks and so carry
no `installation`; `example_payload` adds one, or sets the ID of the one an installation
event carries (`installation=None` leaves the payload as it is). A known event and
action without an example of its own (`issues.closed`) gets a sibling's, the same
event's first example with `action` replaced (`sibling_example` says which).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from ghbot.errors import UsageError

__all__ = ["EXAMPLES", "change", "example_names", "example_payload", "sibling_example"]

#: The directory of the example payloads (`EVENT[.ACTION].json`).
EXAMPLES: Final = Path(__file__).with_name("examples")


def example_names() -> list[str]:
    """Return the name of every example payload (`"issues.opened"`, `"push"`, ...)."""
    return sorted(path.stem for path in EXAMPLES.glob("*.json"))


def sibling_example(name: str) -> str | None:
    """Return the example that stands in for `name` (`"issues.closed"`): the first, by
    name, of the same event's examples, when `name` is an event and action GitHub
    describes (`ghbot.models.KNOWN_EVENTS`) without an example of its own; else None.
    """
    event, _, action = name.partition(".")
    if (EXAMPLES / f"{name}.json").is_file() or not action:
        return None
    from ghbot.models import KNOWN_EVENTS

    if action not in KNOWN_EVENTS.get(event, ()):
        return None
    siblings = [other for other in example_names() if other.partition(".")[0] == event]
    return siblings[0] if siblings else None


def example_payload(name: str, *, installation: int | None = 1, **changes: Any) -> dict[str, Any]:
    """Return GitHub's example payload for `name` with `changes` applied.

    An event and action without an example gets its sibling's (`sibling_example`)
    with `action` replaced, and nothing else. `changes` are paths with `__` between
    keys: `issue__number=7` sets `payload["issue"]["number"]`. Raises `UsageError`
    naming the examples there are when `name` has neither, and when a path does not
    lead to an object's key.
    """
    path, sibling = EXAMPLES / f"{name}.json", sibling_example(name)
    if sibling is not None:
        path = EXAMPLES / f"{sibling}.json"
    elif not path.is_file():
        known = ", ".join(example_names())
        raise UsageError(f"no example payload {name!r}; there are: {known}")
    data: dict[str, Any] = json.loads(path.read_text())
    if sibling is not None:
        data["action"] = name.partition(".")[2]
    if installation is not None:
        found = data.get("installation")
        if isinstance(found, dict):  # an installation event's full object: keep it
            found["id"] = installation
        else:
            node_id = f"MDIzOkludGVncmF0aW9u{installation}"
            data["installation"] = {"id": installation, "node_id": node_id}
    for dotted, value in changes.items():
        change(data, dotted, value)
    return data


def change(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `data` at the path `dotted` (`"issue__number"`), which must exist already.

    Raises `UsageError` for a path the payload lacks (a typo such as `issue__numbr`
    would otherwise add a key no handler reads).
    """
    *parents, last = dotted.split("__")
    node: Any = data
    for key in parents:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            raise UsageError(f"{dotted}: the payload has no object at {key!r}")
        node = node[key]
    if last not in node:
        raise UsageError(f"{dotted}: the payload has no {last!r} there")
    node[last] = value
