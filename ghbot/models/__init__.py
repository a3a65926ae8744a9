"""Typed models of GitHub webhook payloads, generated from GitHub's JSON Schema.

One `<Event>Payload` struct per webhook event (`IssuesPayload`, `PushPayload`, ...),
the shared objects they reference (`Repository`, `User`, `Issue`, `PullRequest`, ...),
`KNOWN_EVENTS` (each event name and its actions) and `PAYLOAD_TYPES` (each event's
struct). `_generated.py` is written by `scripts/gen_models.py`; never edit it by hand.

https://docs.github.com/en/webhooks/webhook-events-and-payloads
"""

from __future__ import annotations

from ghbot.models import _generated
from ghbot.models._base import Change, Model
from ghbot.models._generated import *  # noqa: F403

__all__ = ["Change", "Model"]
__all__ += _generated.__all__
